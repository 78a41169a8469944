"""Training checkpoints (diffcore.checkpoints): round trips, retention, verification, crashes.

NumPy only, except the one test that loads a saved U-Net with diffusers' UNet2DModel.from_pretrained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import diffcore
from diffcore import checkpoints as ck
from diffcore.checkpoints import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from diffcore.networks import MLPConfig, UNetConfig, WeightsError, layout

TINY_UNET = UNetConfig(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    layers_per_block=1,
    attention_head_dim=None,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)
TINY_MLP = MLPConfig(data_dim=2, hidden_dim=16, num_layers=2, time_embed_dim=8, num_class_embeds=3)
RUN_CONFIG = {
    "process": {"name": "gaussian_diffusion", "steps": 10},
    "schedule": "cosine",
    "loss": {"name": "hybrid", "weight": 0.001},
    "optimizer": {"name": "adamw", "lr": 2e-4, "betas": [0.9, 0.999]},
    "data": {"name": "two_moons", "batch": 8},
    "seed": 0,
}


def weights(config, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {e.name: rng.standard_normal(e.shape).astype(np.float32) for e in layout(config)}


def parts(config, seed: int = 0) -> dict:
    """Every argument of save_checkpoint but run_dir and step, with distinct random contents."""
    params, ema = weights(config, seed), weights(config, seed + 1)
    optimizer = {"step": np.array(7, dtype=np.int64)}
    for slot, s in (("exp_avg", seed + 2), ("exp_avg_sq", seed + 3)):
        optimizer.update({f"{slot}/{k}": v for k, v in weights(config, s).items()})
    sampler = diffcore.LossSecondMomentResampler(10, history_per_term=3)
    rng = np.random.default_rng(seed + 4)
    sampler.update_with_losses(rng.integers(0, 10, 40), rng.uniform(0.1, 2.0, 40))
    return dict(
        config=RUN_CONFIG,
        network_config=config,
        params=params,
        ema=ema,
        optimizer=optimizer,
        optimizer_meta={"name": "adamw", "lr": 2e-4, "betas": [0.9, 0.999], "eps": 1e-8},
        state={"step": 7, "examples": 56, "epoch": 2, "loss_ema": 0.1 + seed, "finished": False},
        history=sampler.state_dict(),
    )


def same_arrays(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("config", [TINY_UNET, TINY_MLP], ids=["unet", "mlp"])
def test_round_trip_of_every_part(tmp_path, config):
    p = parts(config)
    path = save_checkpoint(tmp_path, 7, **p)
    dirs = ("unet", "unet_ema") if isinstance(config, UNetConfig) else ("net", "net_ema")
    assert path == tmp_path / "checkpoints" / "step_000000007"
    assert sorted(x.name for x in path.iterdir()) == sorted(
        [*dirs, "config.json", "optimizer.safetensors", "trainer_state.safetensors", "timestep_sampler.safetensors"]
    )
    doc = json.loads((path / "config.json").read_text())
    assert (doc["format"], doc["format_version"], doc["step"]) == ("diffcore-checkpoint", 1, 7)
    assert doc["network"] == config.to_dict() and doc["config"] == RUN_CONFIG
    every_file = sorted(x.relative_to(path).as_posix() for x in path.rglob("*") if x.is_file())
    assert sorted(doc["files"]) == [f for f in every_file if f != "config.json"]
    assert {"python", "numpy", "diffcore"} <= set(doc["versions"])

    for where in (tmp_path, path):  # a run folder means its latest checkpoint
        c = load_checkpoint(where, expect_config=RUN_CONFIG, expect_network=config)
        assert c.path == path and c.step == 7 and c.config == RUN_CONFIG and c.network_config == config
        same_arrays(c.params, p["params"])
        same_arrays(c.ema, p["ema"])
        same_arrays(c.optimizer, p["optimizer"])
        assert c.optimizer_meta == p["optimizer_meta"]
        assert c.state == p["state"]
        assert [type(v) for v in c.state.values()] == [int, int, int, float, bool]
        assert list(c.history) == list(p["history"])
        for k, v in p["history"].items():
            np.testing.assert_array_equal(c.history[k], v)
            assert type(c.history[k]) is type(v), k
        assert c.versions == doc["versions"]
    # tuples and lists are the same JSON; the network may be given as its dict
    tupled = {**RUN_CONFIG, "optimizer": {**RUN_CONFIG["optimizer"], "betas": (0.9, 0.999)}}
    as_dict = {k: tuple(v) if isinstance(v, list) else v for k, v in config.to_dict().items()}
    assert load_checkpoint(path, expect_config=tupled, expect_network=as_dict).step == 7
    # what the sampler's load_state_dict needs, exactly
    sampler = diffcore.LossSecondMomentResampler(10, history_per_term=3)
    sampler.load_state_dict(c.history)
    assert sampler.state_dict()["loss_counts"].tolist() == p["history"]["loss_counts"].tolist()


def test_optional_parts_and_replacing_a_step(tmp_path):
    p = parts(TINY_MLP)
    save_checkpoint(tmp_path, 3, **{**p, "ema": None, "history": None, "optimizer_meta": None})
    c = load_checkpoint(tmp_path)
    assert c.ema is None and c.history is None and c.optimizer_meta is None
    # the same step again: replaced, nothing left over
    q = parts(TINY_MLP, seed=10)
    save_checkpoint(tmp_path, 3, **q)
    same_arrays(load_checkpoint(tmp_path).params, q["params"])
    assert sorted(x.name for x in (tmp_path / "checkpoints").iterdir()) == ["step_000000003"]


def test_versions_never_import_a_framework():
    code = (
        "import sys, diffcore.checkpoints as c; v = c.versions(); "
        "assert not {'torch', 'jax', 'flax', 'optax'} & set(sys.modules), sorted(sys.modules); print(v)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr


def test_keep_leaves_the_newest(tmp_path):
    p = parts(TINY_MLP)
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, **p, keep=2)
    assert [x.name for x in list_checkpoints(tmp_path)] == ["step_000000030", "step_000000040"]
    assert sorted(x.name for x in (tmp_path / "checkpoints").iterdir()) == ["step_000000030", "step_000000040"]
    # a rewound run: the checkpoint just written is never the one deleted
    save_checkpoint(tmp_path, 35, **p, keep=1)
    assert [x.name for x in list_checkpoints(tmp_path)] == ["step_000000035", "step_000000040"]
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 50, **p, keep=0)


def test_latest_ignores_work_folders_and_incomplete_ones(tmp_path):
    assert latest_checkpoint(tmp_path) is None and list_checkpoints(tmp_path) == []
    save_checkpoint(tmp_path, 5, **parts(TINY_MLP))
    folder = tmp_path / "checkpoints"
    (folder / f".tmp-step_000000009-{os.getpid()}-abc").mkdir()
    (folder / "step_000000008").mkdir()  # no config.json
    (folder / "step_000000007").mkdir()
    (folder / "step_000000007" / "notes.txt").write_text("x")
    (folder / "step_12").mkdir()  # not 9 digits
    assert latest_checkpoint(tmp_path) == folder / "step_000000005"
    assert load_checkpoint(tmp_path).step == 5


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_work_folders_of_dead_writers_are_cleaned(tmp_path):
    p = parts(TINY_MLP)
    save_checkpoint(tmp_path, 5, **p)
    folder = tmp_path / "checkpoints"
    dead, alive = _dead_pid(), os.getpid()
    (folder / f".tmp-step_000000006-{dead}-x1").mkdir()
    (folder / f".tmp-step_000000006-{alive}-x2").mkdir()  # a live writer's: kept
    # a dead writer moved step 5 aside to replace it and never put the new one in: restored
    (folder / "step_000000005").rename(folder / f".old-step_000000005-{dead}-x3")
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 6, **p)
    assert sorted(x.name for x in folder.iterdir()) == [
        f".tmp-step_000000006-{alive}-x2", "step_000000005", "step_000000006"]
    assert load_checkpoint(folder / "step_000000005").step == 5


# --------------------------------------------------------------------------------------------
# Verification: every damage is an error naming the file or key
# --------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    f = path / "optimizer.safetensors"
    f.write_bytes(f.read_bytes()[:-5])


def _flip(path: Path) -> None:
    f = path / "net" / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[-3] ^= 0x10
    f.write_bytes(bytes(b))


def _rewrite_doc(path: Path, change) -> None:
    doc = json.loads((path / "config.json").read_text())
    change(doc)
    (path / "config.json").write_text(json.dumps(doc))


def _bad_header(path: Path) -> None:
    """A header that does not parse, recorded with its true size and checksum (written corrupt)."""
    f = path / "trainer_state.safetensors"
    b = bytearray(f.read_bytes())
    b[8] = ord("!")
    f.write_bytes(bytes(b))
    _rewrite_doc(path, lambda d: d["files"].update({f.name: {"bytes": len(b), "sha256": ck._sha256(f)}}))


def _misshapen(path: Path) -> None:
    """A weights file of another layout with a valid checksum: the layout check must catch it."""
    from diffcore.networks import write_safetensors

    w = weights(TINY_MLP, 0)
    w["input.weight"] = np.zeros((3, 3), np.float32)
    del w["output.bias"]
    w["extra.weight"] = np.zeros(2, np.float32)
    f = path / "net_ema" / "model.safetensors"
    write_safetensors(f, w)
    _rewrite_doc(path, lambda d: d["files"].update({"net_ema/model.safetensors": {
        "bytes": f.stat().st_size, "sha256": ck._sha256(f)}}))


DAMAGE = {
    "truncated": (_truncate, {}, r"optimizer\.safetensors: size \d+ bytes, expected \d+"),
    "flipped_byte": (_flip, {}, r"net/model\.safetensors: checksum mismatch"),
    "missing_file": (lambda p: (p / "trainer_state.safetensors").unlink(), {}, r"trainer_state\.safetensors: missing"),
    "unlisted_file": (lambda p: _rewrite_doc(p, lambda d: d["files"].pop("optimizer.safetensors")), {},
                      r"optimizer\.safetensors: not listed"),
    "bad_header": (_bad_header, {}, r"trainer_state\.safetensors.*not a valid safetensors file: header"),
    "misshapen": (_misshapen, {}, r"net_ema.*missing 1 weight.*output\.bias.*unexpected 1.*extra\.weight"
                                  r".*input\.weight: expected shape \(16, 2\), found \(3, 3\)"),
    "format_version_2": (lambda p: _rewrite_doc(p, lambda d: d.update(format_version=2)), {},
                         r"format_version 2; this diffcore \(.*\) reads format_version 1 .*upgrade"),
    "other_format": (lambda p: _rewrite_doc(p, lambda d: d.update(format="other")), {}, r"'other' is not a diffcore"),
    "other_network": (lambda p: None, {"expect_network": MLPConfig(**{**vars(TINY_MLP), "hidden_dim": 32})},
                      r"network differs.*hidden_dim: stored 16, expected 32"),
    "other_run_config": (lambda p: None, {"expect_config": {**RUN_CONFIG, "loss": {"name": "simple"}, "seed": 1}},
                         r"run config differs.*loss\.name: stored 'hybrid', expected 'simple'.*"
                         r"loss\.weight: stored 0\.001, expected '<absent>'.*seed: stored 0, expected 1"),
    "renamed_folder": (lambda p: p.rename(p.parent / "step_000000099"), {}, r"records step 3 but the folder is step_000000099"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damage_is_named(tmp_path, name):
    damage, kwargs, message = DAMAGE[name]
    path = save_checkpoint(tmp_path, 3, **parts(TINY_MLP))
    assert load_checkpoint(path).step == 3
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path, **kwargs)


def test_save_validates_before_writing(tmp_path):
    p = parts(TINY_UNET)
    bad = {k: v for k, v in p["params"].items() if k != "conv_in.weight"}
    with pytest.raises(WeightsError, match="params.*missing 1 weight.*conv_in.weight"):
        save_checkpoint(tmp_path, 1, **{**p, "params": bad})
    opt = {**p["optimizer"], "exp_avg/conv_in.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightsError, match=r"optimizer 'exp_avg/\*'.*conv_in\.weight: expected shape"):
        save_checkpoint(tmp_path, 1, **{**p, "optimizer": opt})
    with pytest.raises(TypeError, match=r"state\['note'\]='x' \(str\).*allowed: int, float or bool"):
        save_checkpoint(tmp_path, 1, **{**p, "state": {"note": "x"}})
    with pytest.raises(TypeError, match="config must be JSON-able"):
        save_checkpoint(tmp_path, 1, **{**p, "config": {"f": object()}})
    with pytest.raises(TypeError, match="network_config must be one of"):
        save_checkpoint(tmp_path, 1, **{**p, "network_config": TINY_UNET.to_dict()})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, -1, **p)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


# --------------------------------------------------------------------------------------------
# Crashes during a save
# --------------------------------------------------------------------------------------------


def _fail_writer(monkeypatch):
    real = ck.write_safetensors

    def write(path, tensors, metadata=None):
        if Path(path).name == "trainer_state.safetensors":
            raise OSError("disk full (simulated)")
        real(path, tensors, metadata)

    monkeypatch.setattr(ck, "write_safetensors", write)


def _fail_final_rename(monkeypatch):
    real = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".tmp-step_") and Path(dst).name.startswith("step_"):
            raise OSError("power cut (simulated)")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("fail", [_fail_writer, _fail_final_rename], ids=["writer", "final_rename"])
@pytest.mark.parametrize("same_step", [False, True], ids=["new_step", "same_step"])
def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fail, same_step):
    p, q = parts(TINY_UNET), parts(TINY_UNET, seed=5)
    save_checkpoint(tmp_path, 1, **p)
    fail(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, 1 if same_step else 2, **q)
    monkeypatch.undo()
    assert sorted(x.name for x in (tmp_path / "checkpoints").iterdir()) == ["step_000000001"]
    c = load_checkpoint(tmp_path)
    assert c.step == 1
    same_arrays(c.params, p["params"])


_KILLED_SAVE = """
import os, sys
from pathlib import Path
sys.path[:0] = [{tests!r}]
import test_checkpoints as t
from diffcore import checkpoints as ck
real = os.replace
def replace(src, dst):
    aside = Path(src).name == "step_000000001"  # about to move the old step 1 aside
    swap = Path(src).name.startswith(".tmp-") and Path(dst).name == "step_000000001"  # old one moved aside
    if {{"aside": aside, "swap": swap}}[{moment!r}]:
        os._exit(9)  # killed: no cleanup runs
    real(src, dst)
os.replace = replace
ck.save_checkpoint({run!r}, 1, **t.parts(t.TINY_MLP, seed=5))
"""


@pytest.mark.parametrize("moment", ["aside", "swap"], ids=["before_renames", "between_renames"])
def test_killed_writer_leaves_loadable_checkpoints(tmp_path, moment):
    """A process killed while replacing step 1 (before the new folder is renamed in, or after the
    old one was moved aside): step 0 (and 1) still load, and the next save cleans up."""
    p = parts(TINY_MLP)
    save_checkpoint(tmp_path, 0, **p)
    save_checkpoint(tmp_path, 1, **p)
    code = _KILLED_SAVE.format(tests=str(Path(__file__).parent), run=str(tmp_path), moment=moment)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 9, proc.stderr
    folder = tmp_path / "checkpoints"
    leftovers = [x.name for x in folder.iterdir() if x.name.startswith(".")]
    assert leftovers, "the killed writer should have left its work folder"
    latest = latest_checkpoint(tmp_path)
    assert latest.name == ("step_000000001" if moment == "aside" else "step_000000000")
    load_checkpoint(latest)
    save_checkpoint(tmp_path, 2, **p)  # cleans up; a step moved aside is put back
    assert sorted(x.name for x in folder.iterdir()) == ["step_000000000", "step_000000001", "step_000000002"]
    same_arrays(load_checkpoint(folder / "step_000000001").params, p["params"])


# --------------------------------------------------------------------------------------------
# diffusers loads the U-Net folders
# --------------------------------------------------------------------------------------------


def test_unet_folder_loads_in_diffusers(tmp_path, torch_one_thread):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    p = parts(TINY_UNET)
    path = save_checkpoint(tmp_path, 1, **p)
    for sub, want in (("unet", p["params"]), ("unet_ema", p["ema"])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = diffusers.UNet2DModel.from_pretrained(
                str(path / sub), output_loading_info=True, low_cpu_mem_usage=False
            )
        assert all(not info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
        got = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        same_arrays(got, want)
