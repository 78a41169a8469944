"""Probability-flow ODE likelihood: diffcore on torch and JAX against score_sde's SciPy loop.

The data are an analytic Gaussian mixture in D = 3 x 32 x 32 = 3072 dimensions (diagonal
components), the model its exact marginal score (``GaussianMixture.as_model``), the process VP
(beta 0.1 -> 20), the batch 8 exact samples. Every method integrates the same ODE from eps = 1e-5
to T = 1 at rtol = atol = 1e-5 with the same Hutchinson Rademacher probes (drawn once in NumPy,
passed to diffcore with ``probes=``) and the exact p_T at the far end, in float64:

- ``scipy RK45 + torch``: score_sde's ``likelihood.py`` -- the batch flattened into one state
  vector, ``scipy.integrate.solve_ivp(method="RK45")``, every evaluation a device -> host round
  trip; the drift and the Hutchinson term from separate torch calls (one forward for the drift,
  one forward + backward for eps^T J eps, as score_sde's ``drift_fn`` and ``div_fn``). One step
  size for the whole batch (an example's result depends on its batch).
- ``diffcore torch``: :func:`diffcore.likelihood.ode_likelihood` on the torch backend (eager
  Python while-loop, one ``torch.func.vjp`` per evaluation giving drift and divergence together).
- ``diffcore jax``: the same call on the JAX backend: the whole solve compiled (``lax.while_loop``
  inside ``lax.scan`` under ``jax.jit``). The first call pays tracing + XLA compilation; later calls
  with the same model, process and options reuse it. Both are reported; "run" is the best of the
  repeats after the first call, "compile" = first call - run.

Errors are in bits/dim against the exact -log p_eps(x) (``mixture.marginal_log_prob``), as the
mean over the batch of |error|; they include the Hutchinson estimator's error, which is the same
for every method (same probes). "vs ref" is the error against a tight solve (rtol = atol = 1e-10, diffcore
on JAX) with the same probes: the solver error alone. Wall times: "first" is the first call (for
JAX: tracing + compilation + run), "run" the best of the later calls (SciPy: best of
1 + ``--scipy-repeats`` calls).

    .venv/bin/python bench/bench_likelihood.py [--dim 3072] [--batch 8] [--repeats 3]

Nothing is asserted; the target (issue "Likelihood") is the same error at no more than half the
wall time of the SciPy loop on JAX.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffcore  # noqa: E402
from diffcore.analytic import GaussianMixture  # noqa: E402
from diffcore.likelihood import ode_likelihood  # noqa: E402

EPS, T = 1e-5, 1.0
LN2 = math.log(2.0)


def make_problem(dim: int, batch: int, components: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(components, 5.0))
    means = rng.uniform(-0.8, 0.8, (components, dim))
    stds = rng.uniform(0.05, 0.4, (components, dim))
    mixture = GaussianMixture(weights, means, stds)
    noise = rng.standard_normal((batch, dim))
    u = rng.uniform(0.0, 1.0, batch)
    x = np.asarray(mixture.sample(noise, u))
    probes = rng.choice([-1.0, 1.0], (1, batch, dim))
    return mixture, x, probes


def exact_nll(mixture, sde, x):
    return -np.asarray(mixture.marginal_log_prob(x, np.asarray(EPS), sde))


def scipy_rk45(mixture, sde, x, probes, rtol, atol):
    """score_sde's likelihood.py (get_likelihood_fn) with torch autograd and SciPy RK45, float64."""
    import torch
    from scipy import integrate

    model = mixture.as_model(sde, "score")
    shape = x.shape
    B = shape[0]
    epsilon = torch.as_tensor(probes[0])

    def drift_fn(sample, vec_t):
        # the probability-flow drift f - 1/2 g^2 s (score_sde: rsde.sde with probability_flow)
        f, g = sde.sde(sample, vec_t)
        score = model(sample, sde.model_time(vec_t))
        return f - 0.5 * (g * g)[:, None] * score

    def div_fn(sample, vec_t, eps):
        with torch.enable_grad():
            sample = sample.detach().requires_grad_(True)
            fn_eps = torch.sum(drift_fn(sample, vec_t) * eps)
            grad = torch.autograd.grad(fn_eps, sample)[0]
        return torch.sum(grad * eps, dim=tuple(range(1, len(sample.shape))))

    def ode_func(t, y):
        sample = torch.as_tensor(y[:-B].reshape(shape))
        vec_t = torch.ones(B, dtype=torch.float64) * t
        with torch.no_grad():
            drift = drift_fn(sample, vec_t).numpy().reshape(-1)
        logp_grad = div_fn(sample, vec_t, epsilon).detach().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.reshape(-1), np.zeros(B)])
    sol = integrate.solve_ivp(ode_func, (EPS, T), init, rtol=rtol, atol=atol, method="RK45")
    zp = sol.y[:, -1]
    z = torch.as_tensor(zp[:-B].reshape(shape))
    delta = zp[-B:]
    prior = np.asarray(mixture.marginal_log_prob(z, torch.tensor(T, dtype=torch.float64), sde))
    return -(prior + delta), np.full(B, sol.nfev)


def diffcore_solve(name, mixture, sde, x, probes, rtol, atol):
    bk = diffcore.backend(name)
    xp = bk.xp
    model = mixture.as_model(sde, "score")
    t_end = xp.asarray(T, dtype=xp.float64)
    prior = lambda z: mixture.marginal_log_prob(z, t_end, sde)  # noqa: E731 - one object: reused compilation
    xs, ps = xp.asarray(x), xp.asarray(probes)

    def run():
        r = ode_likelihood(model, sde, xs, backend=bk, probes=ps, prior_logp=prior, rtol=rtol, atol=atol)
        return np.asarray(r.nll), np.asarray(r.nfe)  # host copies: the work is finished

    return run


def timed(fn, repeats):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = first
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=3072)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-repeats", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)  # the bench's choice (float64 everywhere); diffcore never sets it
    import torch

    load_before = os.getloadavg()[0]  # timings on a shared machine: say how busy it was
    sde = diffcore.VPSDE()
    mixture, x, probes = make_problem(args.dim, args.batch)
    D = args.dim
    exact = exact_nll(mixture, sde, x)

    rows = []
    (nll, nfe), first, best = timed(lambda: scipy_rk45(mixture, sde, x, probes, args.tol, args.tol), args.scipy_repeats)
    rows.append(("scipy RK45 + torch (score_sde)", nll, nfe, first, best))
    for name in ("torch", "jax"):
        (nll, nfe), first, best = timed(diffcore_solve(name, mixture, sde, x, probes, args.tol, args.tol), args.repeats)
        rows.append((f"diffcore {name}", nll, nfe, first, best))
    # the tight reference with the same probes, after the timed runs (so the first JAX call above
    # paid every compilation itself)
    ref_nll, _ = diffcore_solve("jax", mixture, sde, x, probes, 1e-10, 1e-10)()

    print(f"# PF-ODE likelihood, Gaussian mixture D={D}, batch {args.batch}, VP, rtol=atol={args.tol:g}, float64, "
          f"Hutchinson (1 Rademacher probe, shared)")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (load average before / after: "
          f"{load_before:.2f} / {os.getloadavg()[0]:.2f}); torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"jax {jax.__version__} ({jax.devices()[0].platform})")
    print(f"# exact NLL: mean {np.mean(exact / (D * LN2)):.4f} bits/dim")
    header = f"{'method':34s} {'NFE/ex (mean)':>13s} {'wall first s':>12s} {'wall run s':>10s} {'|err| bpd':>10s} {'|err vs ref| bpd':>16s}"
    print(header)
    base = rows[0][4]  # the SciPy loop's best run (it compiles nothing)
    for label, nll, nfe, first, run in rows:
        err = np.mean(np.abs(nll - exact)) / (D * LN2)
        err_ref = np.mean(np.abs(nll - ref_nll)) / (D * LN2)
        print(f"{label:34s} {np.mean(nfe):13.1f} {first:12.3f} {run:10.3f} {err:10.2e} {err_ref:16.2e}")
    for label, _, _, first, run in rows[1:]:
        what = "tracing + compilation" if label.endswith("jax") else "first-call overhead (torch.func warm-up)"
        print(f"# {label}: run / scipy = {run / base:.3f}; first call / scipy = {first / base:.3f}; "
              f"{what} ~ {first - run:.2f} s")


if __name__ == "__main__":
    main()
