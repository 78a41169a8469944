"""Overhead of one (nearly) empty loop-driver step on each backend, side by side in one process.

For every backend the same step, ``x <- x + plan_i``, runs T times through ``backend.loop`` and
through a plain Python for-loop that calls the step itself (and, with noise, draws it itself from
``fold_in(key, i)``). Printed: microseconds per step and the ratio driver / plain loop. Nothing
is asserted; timings are the best of a few repeats after a warm-up (which includes compilation:
reported separately).

    .venv/bin/python bench/bench_driver_overhead.py [--steps 2000] [--no-inductor]

torch.compile with inductor needs a C++ compiler and takes ~15 s to compile on a small CPU;
``--no-inductor`` skips it (torch.compile's "eager" backend, dynamo's guards only, still runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffcore  # noqa: E402


class State(NamedTuple):
    x: Any


def empty_step(state: State, plan_i: tuple, noise_i: Any) -> State:
    return State(state.x + plan_i[0])


def noisy_step(state: State, plan_i: tuple, noise_i: Any) -> State:
    return State(state.x + plan_i[0] * noise_i)


def best_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def plain_loop(bk, step, state, plan, key, noise_shape, sync):
    def run():
        s = state
        for i in range(plan[0].shape[0]):
            noise = None
            if noise_shape is not None:
                noise = bk.normal(bk.fold_in(key, i), noise_shape, s.x.dtype)
            s = step(s, (plan[0][i],), noise)
        return sync(s)

    return run


def measure(label, bk, steps, sync, noise, loop_kwargs=None, plain_step=None):
    xp = bk.xp
    state = State(xp.zeros((4, 2), dtype=xp.float32))
    plan = (xp.asarray(np.full(steps, 1e-3), dtype=xp.float32),)
    key = bk.key(0)
    step = noisy_step if noise else empty_step
    noise_shape = (4, 2) if noise else None
    kwargs = dict(key=key, noise_shape=noise_shape, **(loop_kwargs or {}))

    def driver():
        return sync(bk.loop(step, state, plan, **kwargs))

    t0 = time.perf_counter()
    driver()  # warm-up: compilation where there is any
    warm = time.perf_counter() - t0
    t_driver = best_time(driver)
    t_plain = best_time(plain_loop(bk, plain_step or step, state, plan, key, noise_shape, sync))
    per, per_plain = 1e6 * t_driver / steps, 1e6 * t_plain / steps
    print(
        f"{label:<31} {'noise' if noise else 'none':<6} {per:>12.2f} {per_plain:>14.2f} {t_driver / t_plain:>8.3g}"
        f" {warm:>10.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--no-inductor", action="store_true", help="skip torch.compile with inductor")
    args = parser.parse_args()
    steps = args.steps

    print(f"driver overhead, T={steps} steps, state (4, 2) float32; plain = Python for-loop calling the same step")
    print(f"{'backend':<31} {'noise':<6} {'driver us/st':>12} {'plain us/step':>14} {'ratio':>8} {'warm-up s':>10}")

    bk = diffcore.backend("numpy")
    for noise in (False, True):
        measure("numpy", bk, steps, lambda s: s, noise)

    try:
        import torch

        tb = diffcore.backend("torch")
    except ImportError as exc:
        print(f"torch: skipped ({exc})")
    else:
        for noise in (False, True):
            measure("torch eager", tb, steps, lambda s: s, noise)
        for noise in (False, True):
            measure("torch.compile(eager)", tb, steps, lambda s: s, noise, {"compile": {"backend": "eager"}},
                    plain_step=torch.compile(noisy_step if noise else empty_step, backend="eager"))
        if not args.no_inductor:
            try:
                measure("torch.compile(inductor)", tb, steps, lambda s: s, False, {"compile": True},
                        plain_step=torch.compile(empty_step))
            except Exception as exc:  # no C++ compiler, unsupported platform
                print(f"torch.compile(inductor): skipped ({type(exc).__name__}: {str(exc)[:80]})")

    try:
        import jax

        jb = diffcore.backend("jax")
    except ImportError as exc:
        print(f"jax: skipped ({exc})")
    else:
        sync = lambda s: jax.block_until_ready(s)  # noqa: E731
        for noise in (False, True):
            measure("jax lax.scan (plain: eager)", jb, steps, sync, noise)
        jitted = {False: jax.jit(empty_step), True: jax.jit(noisy_step)}
        for noise in (False, True):
            measure("jax lax.scan (plain: jit step)", jb, steps, sync, noise, plain_step=jitted[noise])


if __name__ == "__main__":
    main()
