"""Training checkpoints: one folder per step, written atomically, verified before use -- NumPy only.

A checkpoint of step s is the folder ``<run_dir>/checkpoints/step_<s as 9 digits>/``::

    config.json                   format name and version, step, the run's configuration, the network,
                                  library versions, and the size and sha256 of every other file
    unet/  unet_ema/              (UNetConfig) diffusers UNet2DModel folders: config.json +
                                  diffusion_pytorch_model.safetensors (UNet2DModel.from_pretrained loads them)
    net/   net_ema/               (MLPConfig) config.json (MLPConfig.to_json) + model.safetensors
    optimizer.safetensors         the optimizer's arrays; metadata "meta": the caller's JSON (optimizer_meta)
    trainer_state.safetensors     the loop's scalars as 0-d int64 / float64 / bool arrays
    timestep_sampler.safetensors  (optional) the importance sampler's state; non-array entries in metadata

:func:`save_checkpoint` writes all of it into ``checkpoints/.tmp-step_<s>-<pid>-<random>/``, fsyncs
every file and folder, and renames that folder into place: a crash at any point leaves the earlier
checkpoints as they were. :func:`load_checkpoint` checks every file's size and checksum, the format
version, the weights against the network's layout and, when asked, the configuration, before it
returns anything. No pickle is read or written; no framework is imported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .checks import check_int
from .networks import (
    MLPConfig,
    SafetensorsError,
    UNetConfig,
    WeightsError,
    check_weights,
    config_from_dict,
    load_diffusers,
    read_safetensors,
    save_diffusers,
    write_safetensors,
)
from .networks._io import atomic_write_bytes, fsync_dir
from .networks.diffusers_io import CONFIG_NAME, WEIGHTS_NAME

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "step_dir",
    "versions",
]

#: The ``format`` of a checkpoint's config.json, and the version this code writes and reads.
FORMAT = "diffcore-checkpoint"
FORMAT_VERSION = 1

CHECKPOINTS_DIR = "checkpoints"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.safetensors"
HISTORY_FILE = "timestep_sampler.safetensors"
#: Frameworks whose versions are recorded when installed (never imported to find out).
FRAMEWORKS = ("torch", "jax", "flax", "optax")

_STEP_DIR = re.compile(r"^step_(\d{9,})$")
# Work folders: .tmp-<step dir>-<pid>-<random> (being written), .old-... (a step being replaced),
# .del-... (a step being deleted).
_WORK_DIR = re.compile(r"^\.(tmp|old|del)-(step_\d{9,})-(\d+)-[A-Za-z0-9_]+$")


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupted, of a newer format, or not the one expected."""


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` returns; every part has been verified.

    ``params`` / ``ema``: name -> array in the network's layout (``ema`` is None when none was
    saved); ``optimizer``: name -> array as saved; ``state``: the loop's scalars with their Python
    types; ``history``: the timestep sampler's state dict (arrays and plain values) or None.
    """

    path: Path
    step: int
    config: Any
    network_config: UNetConfig | MLPConfig
    params: dict[str, np.ndarray]
    ema: dict[str, np.ndarray] | None
    optimizer: dict[str, np.ndarray]
    optimizer_meta: Any
    state: dict[str, int | float | bool]
    history: dict[str, Any] | None
    versions: dict[str, str]


# ------------------------------------------------------------------------------------------------
# The network folders: one table, one code path
# ------------------------------------------------------------------------------------------------


def _write_mlp(folder: str | os.PathLike, config: MLPConfig, weights: Mapping[str, Any]) -> None:
    checked = check_weights(config, weights)
    os.makedirs(folder, exist_ok=True)
    config.to_json(os.path.join(folder, "config.json"))
    write_safetensors(os.path.join(folder, "model.safetensors"), checked, {"format": "pt"})


def _read_mlp(folder: str | os.PathLike) -> tuple[MLPConfig, dict[str, np.ndarray]]:
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path, encoding="utf-8") as fh:
        try:
            config = MLPConfig.from_dict(json.load(fh))
        except json.JSONDecodeError as err:
            raise ValueError(f"{cfg_path}: not valid JSON ({err})") from None
    w_path = os.path.join(folder, "model.safetensors")
    tensors, _ = read_safetensors(w_path)
    return config, check_weights(config, tensors, source=w_path)


@dataclass(frozen=True)
class _NetworkFiles:
    """Where a network type's weights live in a checkpoint and how they are written and read."""

    dirs: tuple[str, str]  # (params, ema)
    files: tuple[str, str]  # inside each: (config, weights)
    write: Callable[[Any, Any, Mapping[str, Any]], None]
    read: Callable[[Any], tuple[Any, dict[str, np.ndarray]]]


_NETWORKS: dict[type, _NetworkFiles] = {
    UNetConfig: _NetworkFiles(("unet", "unet_ema"), (CONFIG_NAME, WEIGHTS_NAME), save_diffusers, load_diffusers),
    MLPConfig: _NetworkFiles(("net", "net_ema"), ("config.json", "model.safetensors"), _write_mlp, _read_mlp),
}


def _network_files(network_config: Any) -> _NetworkFiles:
    kind = _NETWORKS.get(type(network_config))
    if kind is None:
        raise TypeError(
            f"network_config must be one of {[t.__name__ for t in _NETWORKS]}; got {type(network_config).__name__}"
        )
    return kind


# ------------------------------------------------------------------------------------------------
# Encoding the parts
# ------------------------------------------------------------------------------------------------


def _json_value(value: Any, name: str) -> Any:
    """``value`` as plain JSON data (tuples become lists); an error naming ``name`` if it is not JSON-able."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be JSON-able (dicts with str keys, lists, str, finite numbers, bool, None): {err}"
        ) from None


def _arrays(value: Any, name: str) -> dict[str, np.ndarray]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of name -> array; got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError(f"{name}: keys must be str; got {k!r}")
        out[k] = np.asarray(v)
    return out


def _check_optimizer(config: Any, arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Per-parameter optimizer arrays (``"<slot>/<layout name>"``, e.g. ``exp_avg/conv_in.weight``):
    for each slot, every layout name with its shape, nothing else (:func:`check_weights`)."""
    slots: dict[str, dict[str, np.ndarray]] = {}
    for key, a in arrays.items():
        if "/" in key:
            slot, name = key.split("/", 1)
            slots.setdefault(slot, {})[name] = a
    for slot, weights in slots.items():
        check_weights(config, weights, source=f"{source} '{slot}/*' arrays")


def _encode_state(state: Any) -> dict[str, np.ndarray]:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict of name -> int, float or bool; got {type(state).__name__}")
    out = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise TypeError(f"state: keys must be str; got {k!r}")
        if isinstance(v, (bool, np.bool_)):
            out[k] = np.array(bool(v))
        elif isinstance(v, (int, np.integer)):
            if not -(2**63) <= int(v) < 2**63:
                raise ValueError(f"state[{k!r}]={v} does not fit in int64")
            out[k] = np.array(int(v), dtype=np.int64)
        elif isinstance(v, (float, np.floating)):
            out[k] = np.array(float(v), dtype=np.float64)
        else:
            raise TypeError(f"state[{k!r}]={v!r} ({type(v).__name__}) is not allowed; allowed: int, float or bool")
    return out


def _decode_state(tensors: Mapping[str, np.ndarray], source: str) -> dict[str, int | float | bool]:
    out: dict[str, int | float | bool] = {}
    for k, a in tensors.items():
        if a.shape != ():
            raise CheckpointError(f"{source}: {k!r} has shape {a.shape}; trainer state entries are 0-d")
        kind = {"b": bool, "i": int, "f": float}.get(a.dtype.kind)
        if kind is None:
            raise CheckpointError(f"{source}: {k!r} has dtype {a.dtype}; expected bool, int64 or float64")
        out[k] = kind(a.item())
    return out


def _encode_history(history: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays as tensors; every other entry as JSON in the metadata; the key order kept."""
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a dict (a timestep sampler's state_dict()); got {type(history).__name__}")
    arrays, values = {}, {}
    for k, v in history.items():
        if not isinstance(k, str):
            raise TypeError(f"history: keys must be str; got {k!r}")
        if isinstance(v, (np.ndarray, np.generic)):
            arrays[k] = np.asarray(v)
        else:
            values[k] = _json_value(v, f"history[{k!r}]")
    meta = {"values": json.dumps(values), "order": json.dumps(list(history))}
    return arrays, meta


def _decode_history(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str], source: str) -> dict[str, Any]:
    try:
        values = json.loads(meta.get("values", "{}"))
        order = json.loads(meta.get("order", "[]"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{source}: metadata is not valid JSON ({err})") from None
    merged = {**tensors, **values}
    return {k: merged[k] for k in order if k in merged} | {k: v for k, v in merged.items() if k not in order}


def versions() -> dict[str, str]:
    """python, numpy, diffcore and, when installed, torch / jax / flax / optax (read from the loaded
    module if it is imported, else from the installed package's metadata -- never imported here)."""
    from . import __version__

    out = {"python": platform.python_version(), "numpy": np.__version__, "diffcore": __version__}
    for name in FRAMEWORKS:
        module = sys.modules.get(name)
        v = getattr(module, "__version__", None) if module is not None else None
        if v is None:
            try:
                v = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        out[name] = str(v)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"bytes", "sha256"}} of every file under ``folder`` but its config.json."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != CONFIG_NAME:
            out[rel] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    return out


# ------------------------------------------------------------------------------------------------
# Folders: listing, work folders of dead writers, pruning
# ------------------------------------------------------------------------------------------------


def _step_of(path: Path) -> int | None:
    m = _STEP_DIR.match(path.name)
    return int(m.group(1)) if m else None


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """The folder of step ``step``'s checkpoint in ``run_dir`` (whether it exists or not)."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{check_int(step, 'step', 0):09d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of ``run_dir`` (``checkpoints/step_<9 digits>/`` folders holding a
    config.json), oldest step first. Work folders (``.tmp-*``, ``.old-*``, ``.del-*``) are not listed."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _step_of(p) is not None and (p / CONFIG_NAME).is_file()]
    return sorted(found, key=_step_of)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint of ``run_dir`` with the highest step, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # pragma: no cover - on Windows os.kill(pid, 0) would stop the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _clean_work_dirs(folder: Path) -> None:
    """Remove the work folders of writers that are gone; a step folder a dead writer had moved
    aside to replace it (``.old-*``) and not put back is restored."""
    for p in folder.iterdir():
        m = _WORK_DIR.match(p.name)
        if m is None or not p.is_dir():
            continue
        kind, step_name, pid = m.group(1), m.group(2), int(m.group(3))
        if kind != "del" and _pid_alive(pid):
            continue
        if kind == "old" and not (folder / step_name).exists():
            os.replace(p, folder / step_name)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _remove_step(path: Path) -> None:
    """Rename a step folder out of the listing first, so a crash mid-delete leaves no half folder."""
    doomed = path.parent / f".del-{path.name}-{os.getpid()}-{secrets.token_hex(4)}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.parent / f".old-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Save
# ------------------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    config: Any,
    network_config: UNetConfig | MLPConfig,
    params: Mapping[str, Any],
    ema: Mapping[str, Any] | None,
    optimizer: Mapping[str, Any],
    optimizer_meta: Any = None,
    state: Mapping[str, int | float | bool],
    history: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write the checkpoint of ``step`` to ``<run_dir>/checkpoints/step_<9 digits>/`` and return it.

    ``config``: the run's configuration (JSON-able); ``params`` / ``ema``: the network's weights in
    its layout (checked first); ``optimizer``: name -> array (per-parameter slots as
    ``"<slot>/<layout name>"`` are checked against the layout); ``optimizer_meta``: JSON-able;
    ``state``: name -> int / float / bool; ``history``: a timestep sampler's ``state_dict()``.
    Everything is validated, written into a temporary folder, fsynced and renamed into place; a
    checkpoint of the same step is replaced (moved aside, the new one moved in, the old deleted).
    Work folders of writers that died are removed. ``keep=K`` then deletes all but the K
    checkpoints of highest step -- never the one just written.
    """
    step = check_int(step, "step", 0)
    if keep is not None:
        keep = check_int(keep, "keep", 1)
    net = _network_files(network_config)
    # Everything is validated and encoded before the disk is touched.
    run_config = _json_value(config, "config")
    params = check_weights(network_config, params, source="params")
    ema = None if ema is None else check_weights(network_config, ema, source="ema")
    opt_arrays = _arrays(optimizer, "optimizer")
    _check_optimizer(network_config, opt_arrays, "optimizer")
    opt_meta = {"meta": json.dumps(_json_value(optimizer_meta, "optimizer_meta"))}
    state_arrays = _encode_state(state)
    encoded_history = None if history is None else _encode_history(history)

    folder = Path(run_dir) / CHECKPOINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _clean_work_dirs(folder)
    final = step_dir(run_dir, step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-{os.getpid()}-", dir=folder))
    try:
        net.write(tmp / net.dirs[0], network_config, params)
        if ema is not None:
            net.write(tmp / net.dirs[1], network_config, ema)
        write_safetensors(tmp / OPTIMIZER_FILE, opt_arrays, opt_meta)
        write_safetensors(tmp / STATE_FILE, state_arrays)
        if encoded_history is not None:
            write_safetensors(tmp / HISTORY_FILE, *encoded_history)
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "step": step,
            "config": run_config,
            "network": network_config.to_dict(),
            "versions": versions(),
            "files": _file_records(tmp),
        }
        atomic_write_bytes(tmp / CONFIG_NAME, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
        for sub in net.dirs:
            if (tmp / sub).is_dir():
                fsync_dir(tmp / sub)
        fsync_dir(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder)
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            if old.name != final.name:
                _remove_step(old)
        fsync_dir(folder)
    return final


# ------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "(top level)": d}


_ABSENT = "<absent>"


def _differences(stored: Any, expected: Any) -> list[str]:
    a, b = _flat(stored), _flat(expected)
    return [
        f"{k}: stored {a.get(k, _ABSENT)!r}, expected {b.get(k, _ABSENT)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


def _resolve(path: Path) -> Path:
    if (path / CHECKPOINTS_DIR).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{path}: no complete checkpoint in {path / CHECKPOINTS_DIR}")
        return latest
    if (path / CONFIG_NAME).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    raise CheckpointError(
        f"{path} is neither a run folder (holding {CHECKPOINTS_DIR}/) nor a checkpoint folder (holding {CONFIG_NAME})"
    )


def _read_doc(ckpt: Path) -> dict[str, Any]:
    cfg_path = ckpt / CONFIG_NAME
    try:
        doc = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{cfg_path}: unreadable ({err})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object; got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: format {doc.get('format')!r} is not a diffcore checkpoint ({FORMAT!r})")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{cfg_path}: format_version {version!r} is not a positive int")
    if version > FORMAT_VERSION:
        from . import __version__

        raise CheckpointError(
            f"{cfg_path}: the checkpoint has format_version {version}; this diffcore ({__version__}) reads "
            f"format_version {FORMAT_VERSION} and older -- upgrade diffcore to load it"
        )
    missing = [k for k in ("step", "config", "network", "versions", "files") if k not in doc]
    if missing:
        raise CheckpointError(f"{cfg_path}: missing key(s) {missing}")
    step = doc["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{cfg_path}: step {step!r} is not an int >= 0")
    folder_step = _step_of(ckpt)
    if folder_step is not None and folder_step != step:
        raise CheckpointError(f"{cfg_path}: records step {step} but the folder is {ckpt.name}")
    if not isinstance(doc["files"], dict):
        raise CheckpointError(f"{cfg_path}: 'files' must map file names to {{bytes, sha256}}")
    return doc


def _verify_files(ckpt: Path, files: Mapping[str, Any], required: list[str]) -> None:
    """Every listed file exists with its recorded size and sha256; every required file is listed."""
    problems = [f"{name}: not listed in {CONFIG_NAME}" for name in required if name not in files]
    for name, record in files.items():
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or not isinstance(record, dict):
            problems.append(f"{name!r}: not a valid entry ({record!r})")
            continue
        p = ckpt.joinpath(*parts)
        if not p.is_file():
            problems.append(f"{name}: missing")
            continue
        size, want = p.stat().st_size, record.get("bytes")
        if size != want:
            problems.append(f"{name}: size {size} bytes, expected {want} (truncated or overwritten)")
            continue
        digest = _sha256(p)
        if digest != record.get("sha256"):
            problems.append(f"{name}: checksum mismatch (sha256 {digest}, recorded {record.get('sha256')}): corrupted")
    if problems:
        raise CheckpointError(f"checkpoint {ckpt} failed verification: " + "; ".join(problems))


def _read_part(ckpt: Path, name: str, reader: Callable[[Path], Any]) -> Any:
    try:
        return reader(ckpt / name)
    except CheckpointError:
        raise
    except (SafetensorsError, WeightsError, ValueError, TypeError, OSError) as err:
        raise CheckpointError(f"checkpoint {ckpt}: {name}: {err}") from None


def load_checkpoint(
    path: str | os.PathLike,
    *,
    expect_config: Any = None,
    expect_network: UNetConfig | MLPConfig | Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Read and verify a checkpoint: ``path`` is a step folder, or a run folder (its latest checkpoint).

    Before anything is returned: the format name and version (a newer version is an error saying
    which version the file has and which this code reads), every listed file's size and sha256,
    every safetensors header, the weights (and per-parameter optimizer arrays) against the
    network's layout (every missing / unexpected / misshapen tensor listed), and, when given, that
    ``expect_config`` (the run configuration) and ``expect_network`` equal what is stored (every
    differing key with both values). Any failure is a :class:`CheckpointError`.
    """
    ckpt = _resolve(Path(path))
    doc = _read_doc(ckpt)
    where = ckpt / CONFIG_NAME
    if expect_config is not None:
        diff = _differences(doc["config"], _json_value(expect_config, "expect_config"))
        if diff:
            raise CheckpointError(f"{where}: the checkpoint's run config differs from the expected one: " + "; ".join(diff))
    try:
        network_config = config_from_dict(doc["network"])
    except (ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{where}: 'network' is not a network configuration: {err}") from None
    if expect_network is not None:
        expected = expect_network.to_dict() if hasattr(expect_network, "to_dict") else expect_network
        diff = _differences(network_config.to_dict(), _json_value(expected, "expect_network"))
        if diff:
            raise CheckpointError(f"{where}: the checkpoint's network differs from the expected one: " + "; ".join(diff))

    net = _network_files(network_config)
    files = doc["files"]
    required = [f"{net.dirs[0]}/{f}" for f in net.files] + [OPTIMIZER_FILE, STATE_FILE]
    _verify_files(ckpt, files, required)

    def network(sub: str) -> dict[str, np.ndarray]:
        stored, weights = _read_part(ckpt, sub, net.read)
        if stored != network_config:
            diff = _differences(stored.to_dict(), network_config.to_dict())
            raise CheckpointError(
                f"checkpoint {ckpt}: {sub}/{net.files[0]} describes another network than {CONFIG_NAME}: " + "; ".join(diff)
            )
        return weights

    params = network(net.dirs[0])
    ema = network(net.dirs[1]) if f"{net.dirs[1]}/{net.files[1]}" in files else None

    optimizer, meta = _read_part(ckpt, OPTIMIZER_FILE, read_safetensors)
    try:
        _check_optimizer(network_config, optimizer, OPTIMIZER_FILE)
    except WeightsError as err:
        raise CheckpointError(f"checkpoint {ckpt}: {err}") from None
    try:
        optimizer_meta = json.loads(meta.get("meta", "null"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {ckpt}: {OPTIMIZER_FILE}: metadata 'meta' is not JSON ({err})") from None

    state_tensors, _ = _read_part(ckpt, STATE_FILE, read_safetensors)
    state = _decode_state(state_tensors, f"checkpoint {ckpt}: {STATE_FILE}")

    history = None
    if HISTORY_FILE in files:
        tensors, hmeta = _read_part(ckpt, HISTORY_FILE, read_safetensors)
        history = _decode_history(tensors, hmeta, f"checkpoint {ckpt}: {HISTORY_FILE}")

    return Checkpoint(
        path=ckpt,
        step=doc["step"],
        config=doc["config"],
        network_config=network_config,
        params=params,
        ema=ema,
        optimizer=optimizer,
        optimizer_meta=optimizer_meta,
        state=state,
        history=history,
        versions=dict(doc["versions"]),
    )
