"""Wall time per training step at 1 and 2 torch processes (torchrun, gloo, DDP) on CPU.

    .venv/bin/python bench/bench_scaling.py [--steps 30] [--warmup 5] [--models unet,mlp]

The demo's networks (``diffcore.run.DEFAULTS``): the tiny U-Net (channels 32, 64, attention) on
the 8x8 digits, global batch 64, and the 2-D MLP (hidden 128, 3 layers) on two moons, global batch
256; DDPM L_simple, clipping, AdamW, EMA, no checkpoints. Each configuration runs in fresh
processes through the public loop (``diffcore.training.train``); a step's time is the interval
between consecutive ``progress`` calls on rank 0 (forward, backward, DDP's all-reduce, the
optimizer, the EMA and the loop's gathers), the median over ``--steps`` steps after ``--warmup``:

- 1 process, 1 thread (``OMP_NUM_THREADS=1``);
- 1 process, 2 threads;
- 2 processes (``torchrun --standalone --nproc_per_node=2``, which sets ``OMP_NUM_THREADS=1``),
  the same global batch split in two.

The threads per process are printed as torch reports them (``torch.get_num_threads()``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _setup(model: str):
    from diffcore import data as ddata
    from diffcore import run as recipes

    config = recipes.resolve(recipes.DEFAULTS, {"data": {"name": "digits" if model == "unet" else "two_moons"}})
    ds = ddata.load_dataset("digits") if model == "unet" else ddata.load_dataset("two_moons", n=10000)
    process = recipes.build_process(config, tuple(ds.shape))
    net_config = recipes.build_network_config(config, tuple(ds.shape), process)
    objective = recipes.build_objective(config, process)
    batch = 64 if model == "unet" else 256
    return ds, net_config, objective, recipes.optimizer_config(config), batch


def worker(model: str, steps: int, warmup: int, out: str) -> None:
    import torch

    import diffcore
    from diffcore.training import TrainConfig, train

    bk = diffcore.backend("torch")
    world = bk.world(device="cpu")
    ds, net_config, objective, opt, batch = _setup(model)
    trainer = bk.trainer(bk.network(net_config, seed=0), opt, world=world)
    stamps: list[float] = []
    config = TrainConfig(steps=warmup + steps + 1, batch_size=batch, seed=0, ema_decay=0.999, clip_norm=1.0, log_every=1000)
    train(trainer, objective, ds, config, None, progress=lambda *a: stamps.append(time.perf_counter()))
    step_times = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :])]
    if world.rank == 0:
        with open(out, "w") as f:
            json.dump({"model": model, "processes": world.size, "threads": torch.get_num_threads(),
                       "batch": batch, "per_rank": batch // world.size, "median_s": statistics.median(step_times),
                       "min_s": min(step_times), "steps": len(step_times)}, f)


def _env(threads: int | None) -> dict:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "backends" / "diffcore_torch")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--models", default="unet,mlp")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], args.steps, args.warmup, args.worker[1])
        return
    me = [str(Path(__file__).resolve()), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    runs = [
        ("1 process", 1, [sys.executable]),
        ("1 process", 2, [sys.executable]),
        ("2 processes (torchrun)", None, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for label, threads, launcher in runs:
                out = os.path.join(tmp, "result.json")
                t0 = time.perf_counter()
                proc = subprocess.run(launcher + me + ["--worker", model, out], env=_env(threads), capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{label} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
                r = json.load(open(out))
                r.update(label=label, wall=time.perf_counter() - t0)
                rows.append(r)
    print(f"CPU: {os.cpu_count()} cores; torch {__import__('torch').__version__}; median of {args.steps} steps after {args.warmup}")
    print(f"{'model':6} {'run':24} {'threads/proc':>12} {'batch/rank':>10} {'ms/step':>8} {'min ms':>7} {'vs 1x1':>7}")
    base = {}
    for r in rows:
        if r["processes"] == 1 and r["threads"] == 1:
            base[r["model"]] = r["median_s"]
        speed = base.get(r["model"], r["median_s"]) / r["median_s"]
        print(f"{r['model']:6} {r['label']:24} {r['threads']:>12} {r['per_rank']:>10} {1e3 * r['median_s']:8.1f} "
              f"{1e3 * r['min_s']:7.1f} {speed:6.2f}x")


if __name__ == "__main__":
    main()
