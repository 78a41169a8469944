"""Per-draw cost of the torch backend's CPU draws: mt19937 keyed by 64 bits vs torch.Generator reseeding.

    .venv/bin/python bench/bench_keys.py [--reps 5]

"keyed": ``TorchBackend().normal / uniform(key, shape, float32)`` (torch's CPU generator, its
mt19937 state filled from a splitmix64 hash of all 64 bits of the key, then torch's own fill, with the
backend's checks). "manual_seed": a kept ``torch.Generator`` with ``manual_seed(state)`` then
``torch.randn / torch.rand`` (mt19937 seeded from 32 bits: cheaper, but keys s and s + 2**32 draw
alike). Best of ``--reps`` repeats of a timed loop, process CPU time, one
torch thread (pinned and printed). The ratio is keyed / manual_seed (above 1: the keyed path costs more).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from diffcore_torch import TorchBackend

SHAPES = [(6,), (64, 1, 8, 8), (8, 3, 32, 32), (128, 3, 32, 32)]


def _per_call_us(fn, reps: int) -> float:
    fn()
    n = 1
    while True:  # calls per timed loop: about 0.1 s of work
        t0 = time.process_time()
        for _ in range(n):
            fn()
        if time.process_time() - t0 > 0.1 or n >= 100_000:
            break
        n *= 4
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bk = TorchBackend()
    key = bk.fold_in(bk.key(0), 1)
    gen = torch.Generator()
    print(f"torch {torch.__version__}, torch threads = {torch.get_num_threads()}, float32, CPU")
    print()
    print("| shape | draw | keyed us | manual_seed us | keyed / manual_seed |")
    print("|---|---|---:|---:|---:|")
    for shape in SHAPES:
        for name, new, old in (
            ("normal", lambda: bk.normal(key, shape, torch.float32),
             lambda: torch.randn(shape, generator=gen.manual_seed(key.state))),
            ("uniform", lambda: bk.uniform(key, shape, torch.float32),
             lambda: torch.rand(shape, generator=gen.manual_seed(key.state))),
        ):
            t_new, t_old = _per_call_us(new, args.reps), _per_call_us(old, args.reps)
            print(f"| {shape} | {name} | {t_new:.1f} | {t_old:.1f} | {t_new / t_old:.2f}x |")
    ids = torch.arange(8)
    shape = (8, 3, 32, 32)
    t_rows = _per_call_us(lambda: bk.normal(key, shape, torch.float32, sample_ids=ids), args.reps)
    t_one = _per_call_us(lambda: bk.normal(key, shape, torch.float32), args.reps)
    print(f"\nnormal {shape} with sample_ids (8 rows, one reset each): {t_rows:.1f} us; one draw: {t_one:.1f} us")
    print(f"\n(best of {args.reps}; command: {' '.join([os.path.basename(sys.executable)] + sys.argv)})")


if __name__ == "__main__":
    main()
