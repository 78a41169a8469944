"""The sampling loop's overhead: diffcore's DDPM against hand-written loops, side by side (issue 9).

    PYTHONPATH=.:backends/diffcore_torch:backends/diffcore_jax \\
        .venv/bin/python bench/bench_loop_overhead.py [--steps 1000] [--repeats 9] [--batch 16 ...] [--no-jax] [--no-diffusers]
            [--decompose] [--processes K]

DDPM ancestral sampling of a (16, 3, 32, 32) float32 batch (``--batch``: other sizes) with a trivial model (x -> 0.1 x) on
linear betas, on the CPU with one thread (the model costs next to nothing, so what is measured is
the sampler's own arithmetic, its noise and its loop):

- torch: ``diffcore.sample("ddpm", ..., backend="torch")`` under ``torch.no_grad()``; a
  hand-written loop with the coefficients precomputed as Python floats and ``torch.randn`` from
  one generator; diffusers' ``DDPMScheduler`` (``clip_sample=False``, fixed_small variance: the
  same math) calling ``scheduler.step(model_output, t, sample, generator=g)``.
- JAX: ``diffcore.sample(..., backend="jax")``; a hand-written jitted ``lax.scan`` with the same
  math and the same per-step keys (``fold_in(key, i)``).

Each run includes the prior draw and ends with the result on the host side (JAX: blocked until
ready). Measurement: paired rounds. In each round every contender of a framework runs once, back
to back, the order reversed every other round (so that neither always runs first, after the
other's caches and allocations); other processes' load then affects the runs of one round alike.
For each contender the table gives its best wall and best CPU time of a run (CPU: this process's
time, all its threads, which leaves out the time other processes held the cores: on a shared,
loaded machine it is the steadier of the two) and its ratios to the hand-written loop of the same
framework: ``med CPU x`` and ``med wall x`` are the medians over rounds of the ratio of the two
runs of one round (the headline numbers), ``spread`` the range of the middle half of the
per-round CPU ratios (25th-75th percentile), ``best CPU x`` the ratio of the best CPU times.
Threads: torch runs on one (``torch.set_num_threads(1)``), XLA is told to use one; both are
printed. ``--batch`` takes several batch sizes (the issue's is 16); each gets its own table rows.
``--processes K`` runs the whole bench in K fresh processes one after another and ends with each
contender's K per-process medians and their median: the memory layout of one process moves these
ratios by several per cent here, more than the spread of rounds inside one run.
Before timing, the hand-written torch loop is checked against diffcore's with diffcore's noise fed
to it (same math: outputs agree to float32 rounding). JAX compiles once, in the warm-up, outside
the timings. Nothing is asserted beyond that check.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

# one thread for XLA too (set before jax is imported; torch is pinned below)
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "backends" / "diffcore_torch", ROOT / "backends" / "diffcore_jax"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import diffcore  # noqa: E402
from diffcore import GaussianDiffusion  # noqa: E402
from diffcore.schedules import get_named_beta_schedule  # noqa: E402

SHAPE = (16, 3, 32, 32)  # the issue's; main() sets the batch size of each table


def trivial_model(x: Any, t: Any) -> Any:
    return 0.1 * x


jax_model = diffcore.Model(lambda params, x, t: trivial_model(x, t), ())


def coefficients(d: GaussianDiffusion) -> list[tuple[int, float, float, float, float, float]]:
    """(t, sqrt(abar), sqrt(1 - abar), coef1, coef2, std) per step, t = T-1 .. 0, as Python floats:
    the same DDPM step as diffcore's (eps prediction, fixed_small clipped log-variance, no noise at t = 0)."""
    t = np.arange(d.num_timesteps - 1, -1, -1)
    std = np.exp(0.5 * d.posterior_log_variance_clipped[t]) * (t > 0)
    cols = (t, d.sqrt_alphas_cumprod[t], d.sqrt_one_minus_alphas_cumprod[t], d.posterior_mean_coef1[t],
            d.posterior_mean_coef2[t], std)
    return list(zip(*(c.tolist() for c in cols)))


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each contender's runs: one run of each per round, back to back, the
    order reversed every other round."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            w0, c0 = time.perf_counter(), time.process_time()
            contenders[name]()
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))
    return times


# ------------------------------------------------------------------------------------------ torch


def torch_contenders(d: GaussianDiffusion, steps: int, use_diffusers: bool, decompose: bool = False) -> dict[str, Callable[[], Any]]:
    import torch

    shape = SHAPE  # this table's batch size, fixed for the contenders' lifetime
    coefs = coefficients(d)
    t_vecs = [torch.full((shape[0],), float(c[0])) for c in coefs]  # the model's time input, precomputed too

    def hand(noise: Callable[[int, Any], Any] | None = None, x_T: Any = None, probe: bool = False) -> Any:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=g) if x_T is None else x_T
            for i, ((_, a, s, c1, c2, std), t_in) in enumerate(zip(coefs, t_vecs)):
                eps = trivial_model(x, t_in)
                x0 = (x - s * eps) / a
                z = torch.randn(shape, generator=g) if noise is None else noise(i, x)
                x = c1 * x0 + c2 * x + std * z
                if probe:  # diffcore's non-finite probe, kept aside as diffcore keeps it
                    x.aminmax()
            return x

    def ours() -> Any:
        with torch.no_grad():
            return diffcore.sample("ddpm", trivial_model, d, shape, backend="torch", seed=0).x

    # same math: diffcore's result from the hand-written loop fed diffcore's own noise
    bk = diffcore.backend("torch")
    key = bk.key(0)
    loop_key = bk.fold_in(key, 1)
    x_T = bk.normal(bk.fold_in(key, 0), shape, torch.float32)
    want = hand(lambda i, x: bk.normal(bk.fold_in(loop_key, i), (shape[0], 1) + shape[1:], x.dtype)[:, 0], x_T)
    got = ours()
    err = float((got - want).abs().max() / want.abs().max())
    if not err < 1e-4:
        raise AssertionError(f"the hand-written torch loop does not compute diffcore's DDPM (relative error {err:.3g})")

    contenders = {"diffcore (torch)": ours, "hand-written torch loop": hand}
    if decompose:  # the hand-written loop with one of diffcore's costs each
        bk0 = diffcore.backend("torch")
        draws = bk0.step_noise(bk0.fold_in(bk0.key(0), 1), (shape[0], 1) + shape[1:], torch.float32)
        contenders["hand + keyed draw"] = lambda: hand(lambda i, x: draws(i)[:, 0])
        contenders["hand + non-finite probe"] = lambda: hand(probe=True)
    if use_diffusers:
        try:
            from diffusers import DDPMScheduler
        except ImportError as exc:  # pragma: no cover - optional
            print(f"diffusers: skipped ({exc})")
        else:
            scheduler = DDPMScheduler(
                num_train_timesteps=steps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                variance_type="fixed_small", clip_sample=False, prediction_type="epsilon",
            )
            scheduler.set_timesteps(steps)

            def diffusers_loop() -> Any:
                with torch.no_grad():
                    g = torch.Generator().manual_seed(0)
                    x = torch.randn(shape, generator=g)
                    for t in scheduler.timesteps:
                        x = scheduler.step(trivial_model(x, t), t, x, generator=g).prev_sample
                    return x

            contenders["diffusers DDPMScheduler"] = diffusers_loop
    return contenders


# -------------------------------------------------------------------------------------------- JAX


def jax_contenders(d: GaussianDiffusion) -> dict[str, Callable[[], Any]]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    shape = SHAPE  # this table's batch size, fixed for the contenders' lifetime
    coefs = np.asarray(coefficients(d), dtype=np.float32).T  # (6, T)

    @jax.jit
    def hand_jit(key, coefs):
        x = jax.random.normal(jax.random.fold_in(key, 0), shape, jnp.float32)
        loop_key = jax.random.fold_in(key, 1)

        def body(x, c):
            i, t, a, s, c1, c2, std = c
            eps = trivial_model(x, jnp.broadcast_to(t, (shape[0],)))
            x0 = (x - s * eps) / a
            z = jax.random.normal(jax.random.fold_in(loop_key, i), shape, jnp.float32)
            return c1 * x0 + c2 * x + std * z, None

        x, _ = lax.scan(body, x, (jnp.arange(coefs.shape[1]),) + tuple(coefs))
        return x

    key = jax.random.key(0)
    coefs_j = jnp.asarray(coefs)

    def hand() -> Any:
        return jax.block_until_ready(hand_jit(key, coefs_j))

    def ours() -> Any:
        # a diffcore.Model: its weights (none here) are loop arguments, so the compiled loop is reused
        # across calls; a plain callable would be traced and compiled afresh on every call
        return jax.block_until_ready(diffcore.sample("ddpm", jax_model, d, shape, backend="jax", seed=0).x)

    return {"diffcore (jax)": ours, "hand-written jitted lax.scan": hand}


# ------------------------------------------------------------------------------------------- main


def report(framework: str, batch: int, times: dict[str, list[tuple[float, float]]], reference: str, steps: int) -> dict[str, float]:
    """One row per contender: best wall and CPU time of a run, CPU per step, and the ratios to the
    reference: medians over rounds of the per-round CPU and wall ratios (the two runs of a round
    ran back to back, under about the same load), the middle half of the per-round CPU ratios,
    and the ratio of the best CPU times."""
    ref = times[reference]
    medians = {}
    for name, runs in times.items():
        wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
        cpu_ratios = np.array([c / rc for (_, c), (_, rc) in zip(runs, ref)])
        wall_ratios = np.array([w / rw for (w, _), (rw, _) in zip(runs, ref)])
        q1, q3 = np.percentile(cpu_ratios, [25, 75])
        print(
            f"| {framework:<5} | {batch:>5} | {name:<28} | {1e3 * wall:>8.1f} | {1e3 * cpu:>8.1f} | {1e6 * cpu / steps:>9.1f} |"
            f" {np.median(cpu_ratios):>9.2f} | {np.median(wall_ratios):>10.2f} | {q1:>4.2f}-{q3:<4.2f} |"
            f" {cpu / min(c for _, c in ref):>10.2f} |"
        )
        medians[f"{framework} | {batch} | {name}"] = float(np.median(cpu_ratios))
    return medians


def over_processes(k: int, argv: list[str]) -> None:
    """Run this bench in ``k`` fresh processes one after another (their tables printed as they
    come) and summarise each contender's per-process median CPU ratio: a process's memory layout
    moves these ratios by several per cent on this machine, beyond the spread inside one run."""
    import json
    import subprocess
    import tempfile

    found: dict[str, list[float]] = {}
    for i in range(k):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "medians.json"
            print(f"\n## process {i + 1} of {k}", flush=True)
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--medians-json", str(out)], check=True)
            for name, ratio in json.loads(out.read_text()).items():
                found.setdefault(name, []).append(ratio)
    print(f"\n## med CPU x of each contender in {k} processes (and their median)\n")
    print(f"| {'fw | batch | contender':<44} | per process | median |")
    print("|----------------------------------------------|-------------|-------:|")
    for name, ratios in found.items():
        print(f"| {name:<44} | {', '.join(f'{r:.2f}' for r in ratios)} | {np.median(ratios):.2f} |")


def main() -> None:
    global SHAPE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="DDPM steps (= the schedule's T; default 1000)")
    parser.add_argument("--repeats", type=int, default=9, help="paired rounds: runs of each contender (default 9)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16], help="batch sizes of (B, 3, 32, 32) (default 16)")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX contenders")
    parser.add_argument("--no-diffusers", action="store_true", help="skip diffusers' DDPMScheduler")
    parser.add_argument("--decompose", action="store_true",
                        help="torch: also the hand-written loop with diffcore's keyed draw, and with its non-finite probe")
    parser.add_argument("--processes", type=int, default=1,
                        help="run the whole bench in this many fresh processes, then summarise their medians (default 1)")
    parser.add_argument("--medians-json", default=None, help=argparse.SUPPRESS)  # a child of --processes writes here
    args = parser.parse_args()
    if args.processes > 1:
        argv, skip = [], False
        for a in sys.argv[1:]:  # the same options, less --processes
            if skip:
                skip = False
            elif a == "--processes":
                skip = True
            elif not a.startswith("--processes="):
                argv.append(a)
        return over_processes(args.processes, argv)
    steps, repeats = args.steps, args.repeats
    medians: dict[str, float] = {}

    import torch

    torch.set_num_threads(1)
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", steps))
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}", f"torch {torch.__version__}"]
    try:
        import diffusers

        versions.append(f"diffusers {diffusers.__version__}")
    except ImportError:
        pass
    jax = None
    if not args.no_jax:
        try:
            import jax

            versions.append(f"jax {jax.__version__}")
        except ImportError as exc:
            print(f"jax: skipped ({exc})")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"DDPM, {steps} steps, batch (B, 3, 32, 32) float32, model x -> 0.1 x, CPU; {repeats} paired rounds")
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}); "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; {platform.machine()}, {os.cpu_count()} CPUs visible"
          + (f"; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}" if load else ""))
    print("versions: " + ", ".join(versions) + f"; diffcore from {Path(diffcore.__file__).parent}")
    print("command: " + " ".join([Path(sys.executable).name] + sys.argv))
    print()
    print(
        f"| {'fw':<5} | {'batch':>5} | {'contender':<28} | {'wall ms':>8} | {'CPU ms':>8} | {'CPU us/st':>9} |"
        f" {'med CPU x':>9} | {'med wall x':>10} | {'spread':<9} | {'best CPU x':>10} |"
    )
    print("|-------|------:|------------------------------|---------:|---------:|----------:|----------:|-----------:|-----------|-----------:|")

    for batch in args.batch:
        SHAPE = (batch,) + SHAPE[1:]
        t_contenders = torch_contenders(d, steps, not args.no_diffusers, args.decompose)
        for run in t_contenders.values():  # warm-up
            run()
        medians.update(report("torch", batch, interleaved(t_contenders, repeats), "hand-written torch loop", steps))

        if jax is not None:
            j_contenders = jax_contenders(d)
            for run in j_contenders.values():  # warm-up: compiles
                run()
            medians.update(report("jax", batch, interleaved(j_contenders, repeats), "hand-written jitted lax.scan", steps))
    if load:
        load = os.getloadavg()
        print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if args.medians_json:
        import json

        Path(args.medians_json).write_text(json.dumps(medians))


if __name__ == "__main__":
    main()
