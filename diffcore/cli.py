"""The ``diffcore`` command: train, sample, nll, import, demo, info.

Every run writes a directory: ``config.json`` (the resolved configuration), ``checkpoints/``,
``metrics.jsonl``, ``pictures/`` and ``summary.json``. An existing run directory is resumed, never
overwritten without ``--force``. Configuration: defaults (:data:`diffcore.run.DEFAULTS`), then a
TOML file (``--config``), then flags: ``--section.key value`` sets any key, and the common ones have
short forms (``--steps``, ``--data``, ``--model``...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import run as recipes

__all__ = ["main"]

COMMANDS = ("train", "sample", "nll", "import", "demo", "info")


class UsageError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------ configuration
def _parse_value(text: str, default: Any, key: str) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is list:
            return [int(v) if v.strip().lstrip("-").isdigit() else float(v) for v in text.split(",") if v.strip()]
        if kind is dict:
            if text.strip().startswith("{"):
                return json.loads(text)
            out: dict[str, Any] = {}
            for item in filter(None, (s.strip() for s in text.split(","))):
                k, _, v = item.partition("=")
                try:
                    out[k.strip()] = json.loads(v)
                except json.JSONDecodeError:
                    out[k.strip()] = v
            return out
        return text
    except ValueError:
        raise UsageError(f"--{key}: expected {recipes._type_name(default)}, got {text!r}") from None


def _flat_keys(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k != "options":
            out += _flat_keys(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _set(layer: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        layer = layer.setdefault(p, {})
    layer[parts[-1]] = value


#: short flags per command -> the key they set
ALIASES = {
    "train": {"steps": "train.steps", "batch-size": "train.batch_size", "lr": "optimizer.lr", "data": "data.name",
              "model": "model.family", "loss": "model.loss", "time-budget": "train.time_budget",
              "checkpoint-every": "train.checkpoint_every", "network": "network.type"},
    "sample": {"steps": "sample.steps", "sampler": "sample.sampler", "n": "sample.n"},
    "nll": {"examples": "nll.examples", "method": "nll.method", "trace": "nll.trace"},
    "demo": {"steps": "train.steps", "time-budget": "train.time_budget", "data": "data.name", "model": "model.family"},
}


def _load_toml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config: no such file {path!r}")
    if p.suffix.lower() == ".json":
        return json.loads(p.read_text())
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(p.read_text())
    except Exception as e:  # tomllib.TOMLDecodeError
        raise UsageError(f"--config {path}: not valid TOML: {e}") from None


def _config_layers(args: argparse.Namespace, command: str) -> list[dict]:
    layers = []
    if getattr(args, "config", None):
        layers.append(_load_toml(args.config))
    flags: dict = {}
    for key, default in _flat_keys(recipes.DEFAULTS):
        v = getattr(args, "key_" + key.replace(".", "__"), None)
        if v is not None:
            _set(flags, key, _parse_value(v, default, key))
    for short, key in ALIASES.get(command, {}).items():
        v = getattr(args, "alias_" + short.replace("-", "_"), None)
        if v is not None:
            default = dict(_flat_keys(recipes.DEFAULTS))[key]
            _set(flags, key, _parse_value(v, default, short))
    for name in ("backend", "device", "seed"):
        v = getattr(args, name, None)
        if v is not None:
            flags[name] = int(v) if name == "seed" else v
    layers.append(flags)
    return layers


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--run", help="the run directory (default: runs/<family>-<data>-<backend>)")
    p.add_argument("--config", help="a TOML file of configuration keys (flags override it)")
    p.add_argument("--backend", choices=("torch", "jax"), help="the framework (default: torch)")
    p.add_argument("--device", help="a device of the backend (e.g. cpu, cuda:0)")
    p.add_argument("--seed", type=int, help="the run's seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    for short, key in ALIASES.get(command, {}).items():
        p.add_argument(f"--{short}", dest="alias_" + short.replace("-", "_"), metavar="V", help=f"sets {key}")
    for key, default in _flat_keys(recipes.DEFAULTS):
        if "." in key:
            p.add_argument(f"--{key}", dest="key_" + key.replace(".", "__"), metavar="V", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffcore",
        description="Train, sample and evaluate diffusion and score-based models. Any configuration key "
        "can be set as --section.key VALUE (e.g. --train.ema_decay 0.9999); see `diffcore info --keys`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("train", help="train a model (resumes an existing run directory)")
    _add_common(p, "train")
    p.add_argument("--force", action="store_true", help="delete an existing run directory and start afresh")
    p = sub.add_parser("sample", help="sample a trained run with any sampler")
    _add_common(p, "sample")
    p.add_argument("--option", action="append", default=[], metavar="K=V", help="a sampler option (repeatable)")
    p.add_argument("--inpaint", choices=("left", "right", "top", "bottom", "center"), help="inpaint a held-out image with this half/centre masked")
    p.add_argument("--colorize", action="store_true", help="colorize held-out images from their grey levels (RGB data)")
    p.add_argument("--trajectory", action="store_true", help="also draw x_t at 8 times for 8 samples (pictures/trajectory.png)")
    p.add_argument("--label", type=int, help="class label for a class-conditional model")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight")
    p = sub.add_parser("nll", help="bits/dim on held-out data")
    _add_common(p, "nll")
    p = sub.add_parser("import", help="import a diffusers UNet2DModel directory as a run")
    p.add_argument("path", help="a diffusers model directory (config.json + diffusion_pytorch_model.safetensors), or a pipeline directory with unet/ and scheduler/")
    _add_common(p, "import")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("demo", help="train on the digits for about a minute, sample, measure, draw")
    _add_common(p, "demo")
    p.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("info", help="versions, backends, devices")
    p.add_argument("--keys", action="store_true", help="list every configuration key with its default")
    return parser


# ------------------------------------------------------------------------------ output
class Console:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars = not quiet and sys.stderr.isatty()

    def say(self, *parts: Any) -> None:
        if not self.quiet:
            print(*parts, flush=True)

    def bar(self, total: int, desc: str) -> Any:
        if not self.bars:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)

    def table(self, title: str, rows: list[Mapping[str, Any]]) -> None:
        if self.quiet or not rows:
            return
        cols = list(rows[0])
        cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        print(f"\n{title}")
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        print("  ".join("-" * w for w in widths))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ runs
class Run:
    """A run directory and what it builds."""

    def __init__(self, path: Path, config: dict) -> None:
        self.path = path
        self.config = config
        self._dataset = None

    @property
    def pictures(self) -> Path:
        p = self.path / "pictures"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def dataset(self) -> Any:
        if self._dataset is None:
            from .data import load_dataset

            d = self.config["data"]
            name = d["name"]
            options: dict[str, Any] = {}
            if name in recipes._TWO_D:
                options["n"] = d["examples"]
            if d["held_out"]:
                options["held_out"] = d["held_out"]
            try:
                self._dataset = load_dataset(name, **options)
            except (FileNotFoundError, ValueError) as e:
                raise UsageError(f"data.name: {e}") from None
            if self._dataset.held_out is None:
                from .data import split_held_out

                self._dataset = split_held_out(self._dataset, max(1, min(1000, len(self._dataset) // 10)))
        return self._dataset

    def process(self) -> Any:
        return recipes.build_process(self.config, self.dataset().shape)

    def network_config(self) -> Any:
        ds = self.dataset()
        classes = None if ds.labels is None else int(ds.labels.max()) + 1
        return recipes.build_network_config(self.config, ds.shape, self.process(), classes)


def _default_run_dir(config: Mapping[str, Any]) -> Path:
    data = Path(config["data"]["name"]).name.replace(".", "_") or "data"
    return Path("runs") / f"{config['model']['family']}-{data}-{config['backend']}"


def _open_run(args: argparse.Namespace, command: str, *, create: bool) -> Run:
    layers = _config_layers(args, command)
    stored = None
    if args.run and not (command == "train" and getattr(args, "force", False)):  # --force: start afresh
        path = Path(args.run)
        if (path / "config.json").is_file():
            stored = json.loads((path / "config.json").read_text())
    if stored is not None:
        config = recipes.resolve(stored, *layers)
        changed = [k for k in ("data", "model", "network") if config[k] != stored[k]]
        if changed and not getattr(args, "force", False):
            diffs = [f"{s}.{k}: run has {stored[s].get(k)!r}, flags give {config[s].get(k)!r}"
                     for s in changed for k in config[s] if config[s][k] != stored[s].get(k)]
            raise UsageError(
                f"run directory {args.run} holds a model of another configuration ({'; '.join(diffs)}); "
                "use another --run, or --force to start afresh (train)"
            )
    else:
        try:
            config = recipes.resolve(*layers)
        except ValueError as e:
            raise UsageError(str(e)) from None
    path = Path(args.run) if args.run else _default_run_dir(config)
    if not create and not (path / "config.json").is_file():
        raise UsageError(f"--run {path}: not a run directory (no config.json); train one first with `diffcore train --run {path}`")
    return Run(path, config)


def _make_backend(config: Mapping[str, Any]) -> Any:
    from .backends import backend

    try:
        return backend(config["backend"])
    except ImportError as e:
        raise UsageError(f"backend {config['backend']!r} is not installed: {e}") from None


def _device(bk: Any, config: Mapping[str, Any], world: Any = None) -> Any:
    """The configured device; in a torchrun job without one, the rank's own (cuda:LOCAL_RANK)."""
    if not config["device"] and getattr(world, "device", None) is not None:
        return world.device
    return bk.device(config["device"] or None)


_WORLDS: dict[str, Any] = {}


def _world(bk: Any, config: Mapping[str, Any]) -> Any:
    """This process's :class:`diffcore.distributed.World`, joined once per process: the torchrun or
    ``jax.distributed`` job it was launched in (from the launcher's environment), else one process."""
    from .distributed import LOCAL

    if bk.name not in _WORLDS:
        make = getattr(bk, "world", None)
        _WORLDS[bk.name] = LOCAL if make is None else make(device=bk.device(config["device"] or None) if config["device"] else None)
    return _WORLDS[bk.name]


# ------------------------------------------------------------------------------ train
def cmd_train(args: argparse.Namespace, console: Console, run: Run | None = None) -> dict:
    from . import checkpoints
    from .training import train

    if run is None:
        run = _open_run(args, "train", create=True)
    config = run.config
    bk = _make_backend(config)
    world = _world(bk, config)
    if world.rank != 0:  # rank 0 alone reports and writes
        console = Console(quiet=True)
    if world.rank == 0:
        if getattr(args, "force", False) and run.path.exists():
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
    world.barrier()
    ds = run.dataset()
    process = run.process()
    net_config = run.network_config()
    try:
        objective = recipes.build_objective(config, process)
        tcfg = recipes.train_config(config)
        ocfg = recipes.optimizer_config(config)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    device = _device(bk, config, world)
    net = bk.network(net_config, seed=config["seed"], device=device)
    # several processes: torch reduces gradients with DDP over the world; JAX builds global arrays
    # over every process's devices (and, in one process with several devices, shards the batch
    # over them: a device mesh)
    if world.size > 1 and bk.name == "torch":
        trainer = bk.trainer(net, ocfg, world=world)
    elif bk.name == "jax" and not config["device"] and len(bk.devices()) > 1:
        trainer = bk.trainer(net, ocfg, mesh="auto")
    else:
        trainer = bk.trainer(net, ocfg)
    if world.rank == 0:
        _write_json(run.path / "config.json", config)
    resumed = checkpoints.latest_checkpoint(run.path)
    console.say(
        f"diffcore train: {config['model']['family']} ({recipes.loss_of(config)}) on {ds.name} {ds.shape} x {len(ds)}, "
        f"{type(net_config).__name__} ({_param_count(net_config):,} parameters), backend {config['backend']}, "
        f"run {run.path}" + (f" (resuming {resumed.name})" if resumed else "")
        + (f", {world.size} processes" if world.size > 1 else "")
    )
    budget = config["train"]["time_budget"]
    t0 = time.perf_counter()
    bar = console.bar(tcfg.steps, "train")

    def progress(done: int, total: int, info: Mapping[str, Any]) -> None:
        if bar is not None:
            if bar.n == 0 and done > 1:
                bar.update(done - 1)
            bar.update(1)
            bar.set_postfix(loss=f"{info['loss']:.4g}")

    stop = (lambda: time.perf_counter() - t0 > budget) if budget > 0 else None
    try:
        result = train(trainer, objective, ds, tcfg, run.path, run_config=recipes.math_sections(config),
                       progress=progress, stop=stop)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    summary = {"steps": result.step, "interrupted": result.interrupted, "seconds": seconds,
               "checkpoint": str(result.checkpoint), "final_loss": result.losses[-1] if result.losses else None}
    if world.rank != 0:
        return summary
    pictures = {}
    try:
        from . import plots

        pictures["loss_curve"] = str(plots.loss_curve(run.path / "metrics.jsonl", run.pictures / "loss.png"))
    except Exception as e:  # a picture must never lose a trained model
        console.say(f"(no loss picture: {e})")
    summary["pictures"] = pictures
    _write_json(run.path / "summary.json", summary)
    if result.interrupted:
        console.say(f"interrupted at step {result.step}: checkpoint {result.checkpoint}; run the same command to resume")
    else:
        console.say(f"trained to step {result.step} in {seconds:.1f} s; checkpoint {result.checkpoint}")
    return summary


def _param_count(net_config: Any) -> int:
    from .networks import parameter_count

    return parameter_count(net_config)


# ------------------------------------------------------------------------------ sample
def _load_model(run: Run, *, ema: bool = True) -> tuple[Any, Any, Any]:
    from . import checkpoints

    ckpt_path = checkpoints.latest_checkpoint(run.path)
    if ckpt_path is None:
        raise UsageError(f"run {run.path} has no checkpoint yet: train it first")
    ckpt = checkpoints.load_checkpoint(ckpt_path)
    bk = _make_backend(run.config)
    weights = ckpt.ema if ema and ckpt.ema is not None else ckpt.params
    net = bk.network(ckpt.network_config, seed=run.config["seed"], weights=weights,
                     device=_device(bk, run.config, _world(bk, run.config)))
    if run.config["backend"] == "torch":
        net.eval()
    return bk, net, ckpt


def _to_numpy(x: Any) -> np.ndarray:
    from ._array import to_numpy

    return np.asarray(to_numpy(x), dtype=np.float64)


def _quality(run: Run, samples: np.ndarray) -> dict[str, Any]:
    """The sample-quality figures that apply to the run's data (no network: no FID)."""
    from . import metrics

    ds = run.dataset()
    ref = ds.held_out if ds.held_out is not None else ds
    out: dict[str, Any] = {}
    if len(ds.shape) == 3:  # images live in [-1, 1]: measured as they are shown (a stray 1e3 would rule a kernel)
        samples = np.clip(samples, -1.0, 1.0)
    if len(ds.shape) == 1:
        n = min(len(samples), len(ref))
        out["energy_distance"] = float(metrics.energy_distance(samples[:n], ref.data[:n]))
        out["data_vs_data"] = float(metrics.reference_distance(ds.data, n, seed=0))
    elif ds.name.startswith("digits"):
        out.update(metrics.DigitsJudge().evaluate(samples))
    else:
        out["pixel_kid"] = float(metrics.pixel_kernel_distance(samples, ref.data[: max(len(samples), 100)]))
    return out


def _sampler_options(run: Run, args: argparse.Namespace | None) -> tuple[str, dict]:
    s = run.config["sample"]
    name = recipes.default_sampler(run.config)
    options = dict(s["options"])
    for item in getattr(args, "option", []) or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise UsageError(f"--option takes K=V; got {item!r}")
        try:
            options[k] = json.loads(v)
        except json.JSONDecodeError:
            options[k] = v
    if s["steps"]:
        key = "num_scales" if name == "annealed_langevin" else "steps"
        options.setdefault(key, s["steps"])
    return name, options


def draw_samples(run: Run, bk: Any, net: Any, name: str, options: Mapping[str, Any], n: int, *, seed: int = 0,
                 console: Console | None = None, mask: Any = None, known: Any = None, basis: Any = None,
                 cond: Any = None, trajectory: int = 0) -> tuple[np.ndarray, int, float, Any]:
    """(samples, NFE, seconds, trajectory): ``trajectory`` T > 0 keeps x at T numbers of steps
    evenly spaced from x_T to the samples (:class:`diffcore.samplers.Trajectory`, NumPy), else None.

    Sample i is drawn with ``sample_ids`` i, so it is the same however many processes drew the n:
    in a torchrun / jax.distributed job each rank draws its block (:func:`diffcore.distributed.shard`)
    and the blocks are gathered in order after the loop (no collective inside it); the trajectory
    is the first rank's."""
    from .distributed import gather_rows, shard
    from .samplers import build, sample

    process = run.process()
    world = _world(bk, run.config)
    if n < world.size:
        raise UsageError(f"sample.n = {n} is smaller than the number of processes ({world.size})")
    ids = shard(n, world)
    rows_of = slice(ids.start, ids.stop)
    # per-example inputs (a leading axis of n) are split; broadcast ones (e.g. a (1, C, 1, 1) mask) are not
    mask, known, cond = (a[rows_of] if a is not None and a.shape[0] == n and a.ndim > 0 else a for a in (mask, known, cond))
    shape = (len(ids), *run.dataset().shape)
    device = _device(bk, run.config, world)
    sample_ids = bk.xp.asarray(np.arange(ids.start, ids.stop, dtype=np.int64), device=device)
    opts = dict(options)
    opts.setdefault("prediction", recipes.prediction_of(run.config))
    keep = None
    if trajectory:
        try:
            rows = len(build(name, net, process, backend=bk, **opts).plan[0])
        except TypeError as e:
            raise UsageError(str(e)) from None
        keep = sorted({int(round(v)) for v in np.linspace(0, rows, trajectory)})
    bar = console.bar(1, f"sample {name}") if console is not None else None
    t0 = time.perf_counter()

    def progress(i: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = i
            bar.refresh()

    try:
        with bk.inference():
            out = sample(name, net, process, shape, backend=bk, seed=seed, mask=mask, known=known, basis=basis,
                         cond=cond, progress=progress, keep=keep, device=device, sample_ids=sample_ids, **opts)
    except TypeError as e:
        raise UsageError(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    kept = None
    if out.trajectory is not None:
        kept = out.trajectory._replace(x=_to_numpy(out.trajectory.x))
    return gather_rows(world, _to_numpy(out.x), n), int(out.nfe), seconds, kept


def _picture(run: Run, samples: np.ndarray, stem: str) -> str:
    from . import plots

    ds = run.dataset()
    if len(ds.shape) == 1:
        density = None
        if ds.mixture is not None:
            density = lambda pts: np.asarray(ds.mixture.log_prob(pts))  # noqa: E731
        return str(plots.scatter_2d(samples, run.pictures / f"{stem}.png", data=ds.data[: len(samples) * 2], density=density))
    return str(plots.image_grid(np.clip(samples, -1, 1), run.pictures / f"{stem}.png", levels=ds.levels))


def cmd_sample(args: argparse.Namespace, console: Console, run: Run | None = None) -> dict:
    run = run or _open_run(args, "sample", create=False)
    s = run.config["sample"]
    n = s["n"]
    mask = known = basis = cond = None
    colorize = getattr(args, "colorize", False)
    if colorize and getattr(args, "inpaint", None):
        raise UsageError("--colorize and --inpaint both choose the known part of the samples: give one of them")
    if colorize:  # before loading the model: a wrong kind of data is a mistake of the command line
        mask, known, basis, grey = _colorize_inputs(run, n)
    bk, net, ckpt = _load_model(run, ema=s["ema"])
    name, options = _sampler_options(run, args)
    if getattr(args, "inpaint", None):
        mask, known = _inpaint_inputs(run, args.inpaint, n, bk)
    label = getattr(args, "label", None)
    if label is None and s["label"] >= 0:
        label = s["label"]
    guidance = getattr(args, "guidance", None)
    guidance = s["guidance"] if guidance is None else guidance
    classes = getattr(ckpt.network_config, "num_class_embeds", None)
    if classes is not None:  # class-conditional: the asked class, or every class in turn
        labels = np.full(n, label) if label is not None else np.arange(n) % (classes - 1)
        cond = bk.xp.asarray(labels.astype(np.int64))
        if guidance:
            from .samplers.control import classifier_free_guidance

            net = classifier_free_guidance(net, guidance, learned_variance=recipes.learned_variance(run.process()))
    elif label is not None or guidance:
        raise UsageError("--label and --guidance need a class-conditional model (train with --network.class_conditional true)")
    x, nfe, seconds, kept = draw_samples(run, bk, net, name, options, n, seed=run.config["seed"], console=console,
                                         mask=mask, known=known, basis=basis, cond=cond,
                                         trajectory=8 if getattr(args, "trajectory", False) else 0)
    if _world(bk, run.config).rank != 0:  # rank 0 alone measures, draws and writes
        return {"sampler": name, "NFE": nfe, "seconds": seconds}
    if classes is not None and guidance:
        nfe *= 2  # the guided model calls the network twice (conditional and unconditional)
    stem = f"samples-{name}" + (f"-inpaint-{args.inpaint}" if getattr(args, "inpaint", None) else "")
    stem += "-colorize" if colorize else ""
    row = {"sampler": name, "NFE": nfe, "seconds": seconds, **_quality(run, x), "picture": _picture(run, x, stem)}
    if colorize:
        row["comparison"] = _colorize_picture(run, grey, x, stem)
    if kept is not None:
        row["trajectory"] = _trajectory_picture(run, kept)
    if len(run.dataset().shape) == 1 and run.dataset().shape[0] == 2:
        _score_picture(run, bk, net)
    np.save(run.pictures / f"{stem}.npy", x)
    summary_path = run.path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("samples", {})[stem] = row
    _write_json(summary_path, summary)
    console.table(f"sampled {n} from {run.path} (step {ckpt.step}, {'EMA' if s['ema'] else 'raw'} weights)", [row])
    return row


def _score_picture(run: Run, bk: Any, net: Any) -> str:
    """The learned score field of a 2-D model at a small noise level, over the data."""
    from . import plots
    from .parametrization import to_score
    from .process import is_discrete, time_range

    process = run.process()
    lo, hi = (float(v) for v in time_range(process))
    t = lo + 0.05 * (hi - lo)
    if is_discrete(process):
        t = float(round(t))
    xp = bk.xp
    prediction = recipes.prediction_of(run.config)

    def score(points: np.ndarray) -> np.ndarray:
        tt = np.full(len(points), t)
        if is_discrete(process):
            tt = tt.astype(np.int64)
        a, s = (np.asarray(f(tt), dtype=np.float64).reshape(-1, 1) for f in (process.alpha, process.sigma))
        t_in = np.asarray(process.model_time(tt), dtype=np.float32)
        with bk.inference():
            out = _to_numpy(net(xp.asarray(points.astype(np.float32)), xp.asarray(t_in)))[:, :2]
        return np.asarray(to_score(out, prediction, points, a, s))

    data = run.dataset().data
    lo_x, hi_x = np.quantile(data, [0.005, 0.995], axis=0)
    pad = 0.15 * (hi_x - lo_x)
    extent = (lo_x[0] - pad[0], hi_x[0] + pad[0], lo_x[1] - pad[1], hi_x[1] + pad[1])
    return str(plots.score_field(score, run.pictures / "score_field.png", extent, data=data[:500],
                                 title=f"learned score at t = {t:g}"))


def _held_out_images(run: Run, n: int) -> np.ndarray:
    """``n`` held-out examples (the first one repeated when there are fewer)."""
    ds = run.dataset()
    ref = ds.held_out if ds.held_out is not None else ds
    return np.repeat(ref.data[:1], n, axis=0) if len(ref) < n else ref.data[:n]


def _colorize_inputs(run: Run, n: int) -> tuple[Any, Any, Any, np.ndarray]:
    """(mask, known, basis, grey images) to colorize ``n`` held-out colour images from their grey
    levels (score_sde's colorizer: the grey channel of an orthogonal colour basis is known)."""
    from .samplers.control import colorization_inputs

    ds = run.dataset()
    if len(ds.shape) != 3 or ds.shape[0] != 3:
        what = "vectors" if len(ds.shape) != 3 else f"{ds.shape[0]}-channel images"
        raise UsageError(
            f"--colorize needs colour images (3 channels, data of shape (3, H, W)); data {ds.name!r} holds {what} "
            f"of shape {tuple(ds.shape)}: train on a folder of RGB images or an (N, 3, H, W) .npy/.npz (--data PATH)"
        )
    images = _held_out_images(run, n)
    mask, known, basis = colorization_inputs(images)
    grey = np.repeat(images.mean(axis=1, keepdims=True), 3, axis=1)
    return mask.astype(np.float32), known.astype(np.float32), basis, grey


def _colorize_picture(run: Run, grey: np.ndarray, x: np.ndarray, stem: str) -> str:
    """Up to 8 columns: the grey input, the colorization and the original, one row each."""
    from . import plots

    k = min(8, len(x))
    original = _held_out_images(run, len(x))[:k]
    rows = np.concatenate([grey[:k], np.clip(x[:k], -1, 1), original])
    return str(plots.image_grid(rows, run.pictures / f"{stem}-comparison.png", nrow=k, levels=run.dataset().levels))


def _trajectory_picture(run: Run, kept: Any) -> str:
    """x after the kept numbers of steps, one column each, for up to 8 samples (pictures/trajectory.png)."""
    from . import plots
    from .process import time_range

    times = np.asarray(kept.times, dtype=np.float64)
    times = np.where(np.isnan(times), float(time_range(run.process())[0]), times)  # the samples: the clean end
    xs = kept.x if kept.x.ndim != 5 else np.clip(kept.x, -1, 1)
    return str(plots.trajectory_strip(xs, times, run.pictures / "trajectory.png", levels=run.dataset().levels))


def _inpaint_inputs(run: Run, where: str, n: int, bk: Any) -> tuple[Any, Any]:
    ds = run.dataset()
    if len(ds.shape) != 3:
        raise UsageError("--inpaint takes image data")
    known = _held_out_images(run, n)
    C, H, W = ds.shape
    mask = np.ones((n, C, H, W))
    if where == "left":
        mask[..., : W // 2] = 0
    elif where == "right":
        mask[..., W // 2 :] = 0
    elif where == "top":
        mask[..., : H // 2, :] = 0
    elif where == "bottom":
        mask[..., H // 2 :, :] = 0
    else:
        mask[..., H // 4 : 3 * H // 4, W // 4 : 3 * W // 4] = 0
    xp = bk.xp
    return xp.asarray(mask.astype(np.float32)), xp.asarray(known.astype(np.float32))


# ------------------------------------------------------------------------------ nll
def cmd_nll(args: argparse.Namespace, console: Console, run: Run | None = None, loaded: tuple | None = None) -> dict:
    from .data import bits_per_dim_offset, dequantize
    from .likelihood import ode_likelihood, vlb_bpd

    run = run or _open_run(args, "nll", create=False)
    c = run.config["nll"]
    bk, net, ckpt = loaded or _load_model(run, ema=run.config["sample"]["ema"])
    ds = run.dataset()
    ref = ds.held_out if ds.held_out is not None else ds
    x = ref.data[: c["examples"]]
    process = run.process()
    xp = bk.xp
    rng = np.random.default_rng(np.random.SeedSequence((run.config["seed"], 0x6E6C6C)))
    offset = 0.0
    if ds.levels is not None:
        x = np.asarray(dequantize(x, rng.random(x.shape), ds.levels))
        offset = bits_per_dim_offset(ds.levels)
    from .distributed import gather_rows, shard

    world = _world(bk, run.config)
    if len(x) < world.size:
        raise UsageError(f"nll.examples = {len(x)} is smaller than the number of processes ({world.size})")
    ids = shard(len(x), world)  # each rank its block; probes keyed by the global example: any rank count
    device = _device(bk, run.config, world)
    xb = xp.asarray(x[ids.start : ids.stop].astype(np.float32), device=device)
    sample_ids = xp.asarray(np.arange(ids.start, ids.stop, dtype=np.int64), device=device)
    if world.rank != 0:
        console = Console(quiet=True)
    method = c["method"]
    bar = console.bar(1, f"nll {method}")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if bar is not None:
            stack.callback(bar.close)
        if method == "vlb":  # the ODE's trace differentiates
            stack.enter_context(bk.inference())
        if method == "vlb":
            if not getattr(process, "discrete", False):
                raise UsageError(f"nll.method 'vlb' needs a discrete family (ddpm, iddpm); this run is {run.config['model']['family']!r}")
            res = vlb_bpd(net, process, xb, backend=bk, seed=run.config["seed"], decoder="gaussian", progress=progress,
                          sample_ids=sample_ids)
        else:
            if getattr(process, "discrete", False):
                raise UsageError(
                    f"nll.method 'ode' needs a continuous-time family (vp, subvp, ve, flow); this run is "
                    f"{run.config['model']['family']!r}: use --method vlb"
                )
            res = ode_likelihood(net, process, xb, backend=bk, prediction=recipes.prediction_of(run.config),
                                 divergence=c["trace"], seed=run.config["seed"], rtol=c["rtol"], atol=c["atol"],
                                 progress=progress, sample_ids=sample_ids)
    seconds = time.perf_counter() - t0
    bpd = gather_rows(world, _to_numpy(res.bpd).reshape(-1), len(x)) + offset
    nfe = np.asarray(_to_numpy(res.nfe), dtype=np.float64).reshape(-1)
    if nfe.size != len(ids):  # a count for the whole batch (the VLB): the same for each example
        nfe = np.full(len(ids), nfe.mean())
    nfe = gather_rows(world, nfe, len(x)).mean()  # every rank gathers: a collective all must join
    row = {"method": method, "examples": int(x.shape[0]), "bits/dim": float(bpd.mean()),
           "stderr": float(bpd.std(ddof=1) / math.sqrt(len(bpd))) if len(bpd) > 1 else None,
           "levels": ds.levels, "NFE": float(nfe), "seconds": seconds}
    if world.rank != 0:
        return row
    summary_path = run.path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("nll", {})[method] = row
    _write_json(summary_path, summary)
    note = f" ({ds.levels}-level data: bits of {ds.levels}-level pixels, offset log2({ds.levels}/2) included)" if ds.levels else ""
    console.table(f"likelihood of {ref.name} (step {ckpt.step}){note}", [row])
    return row


# ------------------------------------------------------------------------------ import
def cmd_import(args: argparse.Namespace, console: Console) -> dict:
    from . import checkpoints
    from .networks import SafetensorsError, WeightsError, load_diffusers

    src = Path(args.path)
    unet_dir = src / "unet" if (src / "unet").is_dir() else src
    try:
        net_config, weights = load_diffusers(unet_dir)
    except (SafetensorsError, WeightsError, ValueError, FileNotFoundError) as e:
        raise UsageError(f"{args.path}: {e}") from None
    layers = _config_layers(args, "import")
    scheduler = _read_scheduler(src)
    base: dict = {"model": {"family": "ddpm", "timesteps": scheduler.get("num_train_timesteps", 1000)}}
    if scheduler.get("beta_schedule") == "squaredcos_cap_v2":
        base["model"]["schedule"] = "cosine"
    if scheduler.get("prediction_type") == "v_prediction":
        base["model"]["prediction"] = "v"
    config = recipes.resolve(base, *layers)
    path = Path(args.run) if args.run else Path("runs") / f"import-{src.name}"
    if path.exists() and not args.force:
        raise UsageError(f"--run {path} exists; pass --force to replace it")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    _write_json(path / "config.json", config)
    ck = checkpoints.save_checkpoint(path, 0, config={"imported_from": str(src), "run": recipes.math_sections(config)},
                                     network_config=net_config, params=weights, ema=weights, optimizer={},
                                     state={"step": 0, "examples": 0})
    console.say(f"imported {src} ({net_config.sample_size} px, {len(weights)} tensors) into {path} ({ck})")
    return {"run": str(path), "checkpoint": str(ck)}


def _read_scheduler(src: Path) -> dict:
    for p in (src / "scheduler" / "scheduler_config.json", src.parent / "scheduler" / "scheduler_config.json"):
        if p.is_file():
            return json.loads(p.read_text())
    return {}


# ------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace, console: Console) -> dict:
    """Train a small VP-SDE model on the digits for about a minute, sample it four ways (ancestral,
    DDIM, predictor-corrector, probability-flow ODE), measure bits/dim, draw the pictures."""
    demo_defaults = {
        "data": {"name": "digits"},
        "model": {"family": "vp"},
        "train": {"steps": 100000, "time_budget": 55.0, "batch_size": 64, "ema_decay": 0.995, "log_every": 20},
        "optimizer": {"lr": 2e-3},
        "sample": {"n": 64},
        "nll": {"examples": 32, "rtol": 1e-3, "atol": 1e-3},
    }
    layers = _config_layers(args, "demo")
    config = recipes.resolve(demo_defaults, *layers)
    path = Path(args.run) if args.run else Path("runs") / f"demo-{config['backend']}"
    if path.exists():
        shutil.rmtree(path)  # the demo always starts afresh
    run = Run(path, config)
    t_start = time.perf_counter()
    cmd_train(args, console, run)
    rows = []
    bk, net, ckpt = _load_model(run, ema=True)
    plans = [("ancestral", {"steps": 100}), ("ddim", {"steps": 50}), ("pc", {"steps": 50}), ("ode_heun", {"steps": 50})]
    for name, opts in plans:
        x, nfe, seconds, _ = draw_samples(run, bk, net, name, opts, config["sample"]["n"], seed=config["seed"], console=console)
        stem = f"samples-{name}-{nfe}"
        rows.append({"sampler": name, "NFE": nfe, "seconds": seconds, **_quality(run, x), "picture": _picture(run, x, stem)})
    nll_row = cmd_nll(args, console, run, loaded=(bk, net, ckpt))  # the EMA model already loaded
    summary = {"samples": rows, "nll": nll_row, "seconds": time.perf_counter() - t_start}
    _write_json(path / "demo.json", summary)
    console.table("demo: samples of the digits", rows)
    console.say(f"\npictures in {run.pictures}/ ; everything in {path}/ (total {summary['seconds']:.0f} s)")
    return summary


# ------------------------------------------------------------------------------ info
def cmd_info(args: argparse.Namespace, console: Console) -> dict:
    import importlib.metadata as md
    import platform

    from . import __version__
    from .backends import available_backends

    versions = {"python": platform.python_version(), "diffcore": __version__}
    for dist in ("numpy", "array-api-compat", "torch", "jax", "flax", "optax", "scikit-learn", "matplotlib", "tqdm", "diffusers"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    info: dict[str, Any] = {"versions": versions, "backends": {}}
    for name in available_backends():
        try:
            from .backends import backend

            info["backends"][name] = [str(d) for d in backend(name).devices()]
        except Exception as e:  # a broken install is reported, not raised
            info["backends"][name] = f"unavailable: {e}"
    if getattr(args, "keys", False):
        for key, default in _flat_keys(recipes.DEFAULTS):
            print(f"{key} = {json.dumps(default)}")
        return info
    for k, v in versions.items():
        print(f"{k:18s} {v}")
    for k, v in info["backends"].items():
        print(f"backend {k:10s} {v}")
    return info


# ------------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # a launcher's separator passed through (torchrun ... -m diffcore -- train ...)
        argv = argv[1:]
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    console = Console(getattr(args, "quiet", False))
    handlers = {"train": cmd_train, "sample": cmd_sample, "nll": cmd_nll, "import": cmd_import, "demo": cmd_demo, "info": cmd_info}
    try:
        handlers[args.command](args, console)
    except UsageError as e:
        print(f"diffcore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"diffcore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffcore {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
