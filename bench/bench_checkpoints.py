"""Time of save_checkpoint and load_checkpoint (with verification) for a real-size network.

Random weights for the given preset; params, EMA and two Adam slots (float32), as a trainer
would hand them over. Printed per repeat: checkpoint size, save seconds, load seconds. Nothing is
asserted. The first repeat writes a new step; later ones also delete the previous (keep=1).

    .venv/bin/python bench/bench_checkpoints.py [--network ddpm_cifar10|mlp] [--repeats 2] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffcore.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from diffcore.networks import MLPConfig, UNetConfig, layout, parameter_count  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", choices=["ddpm_cifar10", "mlp"], default="ddpm_cifar10")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", default=None, help="folder for the temporary run (default: the system temp folder)")
    args = ap.parse_args()
    config = UNetConfig.ddpm_cifar10() if args.network == "ddpm_cifar10" else MLPConfig()
    rng = np.random.default_rng(0)
    w = {e.name: rng.standard_normal(e.shape, dtype=np.float32) for e in layout(config)}
    opt = {"step": np.array(1, np.int64)}
    opt.update({f"exp_avg/{k}": v for k, v in w.items()})
    opt.update({f"exp_avg_sq/{k}": v for k, v in w.items()})
    run = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        for i in range(args.repeats):
            t = time.perf_counter()
            path = save_checkpoint(run, 1000 + i, config={}, network_config=config, params=w, ema=w,
                                   optimizer=opt, state={"step": 1000 + i}, keep=1)
            saved = time.perf_counter() - t
            t = time.perf_counter()
            load_checkpoint(run)
            loaded = time.perf_counter() - t
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            print(f"{args.network} ({parameter_count(config):,} params): checkpoint {size / 1e6:.0f} MB, "
                  f"save {saved:.2f} s, load+verify {loaded:.2f} s")
    finally:
        shutil.rmtree(run)


if __name__ == "__main__":
    main()
