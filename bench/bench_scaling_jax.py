"""Data-parallel scaling of the JAX trainer on CPU: 1 device, a 2-device mesh in one process, and
2 processes with jax.distributed (one device each), timing the steady-state training step.

    PYTHONPATH=.:backends/diffcore_jax python bench/bench_scaling_jax.py [--steps 30] [--batch 256] [--hidden 256]

Each configuration runs tests/jax_dist_worker.py in fresh processes (so each gets its own XLA
device setup): the loop's step times after the first (compile) step are read from its ``TIME
step`` lines. Host devices split the machine's cores: with fewer cores than devices x threads,
the "parallel" runs compete for the same cores, so the printed thread settings matter.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "jax_dist_worker.py"


def env(devices: int) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends" / "diffcore_jax"), e.get("PYTHONPATH", "")])
    e["XLA_FLAGS"] = (e.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    e["JAX_PLATFORMS"] = "cpu"
    return e


def step_times(log: str) -> list[float]:
    t = [float(m.group(1)) for m in re.finditer(r"^TIME step \d+ ([0-9.]+)", log, re.M)]
    return [b - a for a, b in zip(t[1:], t[2:])]  # from step 2 on: no compilation


def run(label: str, cmds: list[tuple[list[str], int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        procs = [subprocess.Popen([sys.executable, str(WORKER), str(Path(d) / "out.npz"), *args], env=env(dev),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for args, dev in cmds]
        logs = [p.communicate(timeout=900)[0] for p in procs]
    if any(p.returncode for p in procs):
        print(f"{label}: failed\n{logs[0][-2000:]}")
        return
    dts = step_times(logs[0])
    dts.sort()
    med = dts[len(dts) // 2]
    print(f"{label:34s} median step {med * 1e3:8.1f} ms  (min {dts[0] * 1e3:.1f}, {len(dts)} steps)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    a = ap.parse_args()
    print(f"CPU cores {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), load {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}; batch {a.batch} (one micro-batch), MLP hidden {a.hidden}, "
          f"{a.steps} steps; XLA's CPU thread pool per process = the cores it sees", flush=True)
    common = ["--steps", str(a.steps), "--batch", str(a.batch), "--micro", str(a.batch), "--hidden", str(a.hidden),
              "--no-eval", "--full-opt", "--data-n", str(max(4 * a.batch, 64))]
    run("1 process, 1 device", [(common + ["--mesh", "none"], 1)])
    run("1 process, 2-device mesh", [(common + ["--mesh", "auto"], 2)])
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    run("2 processes (jax.distributed)", [(common + ["--procs", "2", "--rank", str(r), "--port", str(port)], 1)
                                          for r in (0, 1)])


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t:.1f} s")
