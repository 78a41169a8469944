"""Error versus model evaluations (NFE) for every sampler, on an analytic 2-D mixture with the exact score.

    .venv/bin/python bench/bench_samplers.py [--n 4000] [--quick]

Error: the energy distance between n samples and n exact samples of the target (the floor is the
distance between two exact sample sets), and for deterministic samplers also the RMS distance to
the exact probability-flow map (dopri5 at rtol = atol = 1e-10 from the same x_T). Printed as a
markdown table; nothing is asserted. The last lines answer: how many NFE do the best ODE solvers
need to reach the error of 1000-step ancestral sampling?
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import diffcore  # noqa: E402
from diffcore.samplers import SAMPLERS, sample  # noqa: E402
from sampler_utils import energy_distance, exact_samples, two_gaussians_2d  # noqa: E402

STEPS = (5, 10, 20, 50, 100, 200, 500, 1000)


def configs(discrete, vp, ve):
    """(label, sampler, process, prediction, options(steps) -> dict, deterministic)."""
    c = [
        ("ddpm ancestral", "ddpm", discrete, "eps", lambda n: {"steps": n}, False),
        ("ddim eta=0", "ddim", discrete, "eps", lambda n: {"steps": n}, True),
        ("ddim eta=1", "ddim", discrete, "eps", lambda n: {"steps": n, "eta": 1.0}, False),
        ("ddim eta=0 (VP SDE)", "ddim", vp, "eps", lambda n: {"steps": n, "spacing": "linspace"}, True),
        ("ddim eta=0 (VP SDE) logsnr", "ddim", vp, "eps", lambda n: {"steps": n, "spacing": "logsnr"}, True),
        ("euler_maruyama (VP)", "euler_maruyama", vp, "score", lambda n: {"steps": n}, False),
        ("reverse_diffusion (VP)", "reverse_diffusion", vp, "score", lambda n: {"steps": n}, False),
        ("ancestral (VP)", "ancestral", vp, "score", lambda n: {"steps": n}, False),
        ("pc rd+langevin (VP)", "pc", vp, "score", lambda n: {"steps": n // 2}, False),
        ("pc rd+langevin (VP), per-sample norms", "pc", vp, "score", lambda n: {"steps": n // 2, "norm": "per_sample"}, False),
        ("pc rd+langevin (VP), batch-mean norms", "pc", vp, "score", lambda n: {"steps": n // 2, "norm": "batch_mean"}, False),
        ("pc rd+langevin (VE)", "pc", ve, "score", lambda n: {"steps": n // 2}, False),
        ("pc rd+langevin (VE), per-sample norms", "pc", ve, "score", lambda n: {"steps": n // 2, "norm": "per_sample"}, False),
        ("pc rd+langevin (VE), batch-mean norms", "pc", ve, "score", lambda n: {"steps": n // 2, "norm": "batch_mean"}, False),
        ("annealed_langevin (VE)", "annealed_langevin", ve, "score", lambda n: {"num_scales": max(2, n // 5), "steps_per_level": 5}, False),
        ("ode_euler (VP)", "ode_euler", vp, "score", lambda n: {"steps": n}, True),
        ("ode_heun (VP)", "ode_heun", vp, "score", lambda n: {"steps": max(1, n // 2), "spacing": "linspace"}, True),
        ("ode_heun (VP) logsnr", "ode_heun", vp, "score", lambda n: {"steps": max(1, n // 2), "spacing": "logsnr"}, True),
        ("ode_rk4 (VP)", "ode_rk4", vp, "score", lambda n: {"steps": max(1, n // 4)}, True),
        ("edm_heun (VP)", "edm_heun", vp, "eps", lambda n: {"steps": max(2, (n + 1) // 2)}, True),
        ("edm_heun (VE)", "edm_heun", ve, "eps", lambda n: {"steps": max(2, (n + 1) // 2)}, True),
        ("dpmpp_2m (discrete)", "dpmpp_2m", discrete, "eps", lambda n: {"steps": n}, True),
        ("dpmpp_2m (VP)", "dpmpp_2m", vp, "eps", lambda n: {"steps": n, "spacing": "linspace"}, True),
        ("dpmpp_2m (VP) logsnr", "dpmpp_2m", vp, "eps", lambda n: {"steps": n, "spacing": "logsnr"}, True),
    ]
    return [x for x in c if x[1] in SAMPLERS]


def exact_flow_map(mix, vp, x_T, eps):
    """The exact probability-flow map x_T -> x_eps (dopri5, rtol = atol = 1e-10), then Tweedie's x_0 at eps."""
    model = mix.as_model(vp, "x0")
    r = sample("ode_dopri5", model, vp, x_T.shape, x_T=x_T, prediction="x0", rtol=1e-10, atol=1e-10, eps=eps, denoise=True)
    return np.asarray(r.x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer step counts")
    args = ap.parse_args()
    n = args.n
    steps = (5, 10, 20, 50, 100) if args.quick else STEPS
    mix = two_gaussians_2d()
    discrete = diffcore.GaussianDiffusion(betas=diffcore.get_named_beta_schedule("linear", 1000))
    vp, ve = diffcore.VPSDE(), diffcore.VESDE(sigma_min=0.01, sigma_max=50.0)
    seeds = range(args.seeds)
    refs = [exact_samples(mix, n, 100 + s) for s in seeds]
    floor = np.mean([energy_distance(exact_samples(mix, n, 200 + s), refs[s]) for s in seeds])
    noises = [np.random.default_rng(s).standard_normal((n, 2)) for s in seeds]
    started = time.perf_counter()

    print(f"target: 2-D mixture of 2 Gaussians with the exact score; n = {n} samples, mean over {args.seeds} seeds")
    print(f"energy-distance floor (two exact sample sets): {floor:.2e}\n")
    print("Energy distance to exact samples (mean over seeds) @ NFE:\n")
    print("| sampler | " + " | ".join(f"~{s} NFE" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    rows = {}
    for label, name, proc, pred, opts, _det in configs(discrete, vp, ve):
        cells = []
        for s in steps:
            try:
                dists, nfe = [], None
                for k in seeds:
                    r = sample(name, mix.as_model(proc, pred), proc, (n, 2), seed=k, x_T=proc.prior_sample(noises[k]),
                               prediction=pred, **opts(s))
                    dists.append(energy_distance(np.asarray(r.x), refs[k]))
                    nfe = r.nfe
            except ValueError as exc:  # a configuration the sampler refuses is shown, not hidden
                cells.append("refused" if "too few" in str(exc) else "error")
                continue
            d = float(np.mean(dists))
            rows.setdefault(label, []).append((nfe, d))
            cells.append(f"{d:.1e} @{nfe}")
        print(f"| {label} | " + " | ".join(cells) + " |")
        sys.stdout.flush()

    # deterministic samplers on the VP SDE: error against the exact probability-flow map
    eps = 1e-3
    x_T = noises[0][:500]
    exact = exact_flow_map(mix, vp, x_T, eps)
    print("\nRMS error against the exact probability-flow map (VP SDE, 500 samples, x_T fixed; dopri5 at 1e-10 + Tweedie at eps = 1e-3):\n")
    det = [
        ("ddim eta=0", "ddim", lambda k: {"steps": k, "spacing": "linspace"}),
        ("ddim eta=0 logsnr", "ddim", lambda k: {"steps": k, "spacing": "logsnr"}),
        ("ode_euler + denoise", "ode_euler", lambda k: {"steps": max(1, k - 1), "denoise": True}),
        ("ode_heun + denoise", "ode_heun", lambda k: {"steps": max(1, (k - 1) // 2), "denoise": True, "spacing": "linspace"}),
        ("ode_heun + denoise logsnr", "ode_heun", lambda k: {"steps": max(1, (k - 1) // 2), "denoise": True, "spacing": "logsnr"}),
        ("ode_rk4 + denoise", "ode_rk4", lambda k: {"steps": max(1, (k - 1) // 4), "denoise": True, "spacing": "linspace"}),
        ("ode_rk4 + denoise logsnr", "ode_rk4", lambda k: {"steps": max(1, (k - 1) // 4), "denoise": True, "spacing": "logsnr"}),
        ("edm_heun", "edm_heun", lambda k: {"steps": max(2, (k + 1) // 2)}),
        ("dpmpp_2m", "dpmpp_2m", lambda k: {"steps": k, "spacing": "linspace"}),
        ("dpmpp_2m logsnr", "dpmpp_2m", lambda k: {"steps": k, "spacing": "logsnr"}),
    ]
    print("| sampler | " + " | ".join(f"~{s} NFE" for s in steps[:-1]) + " |")
    print("|---|" + "---|" * (len(steps) - 1))
    for label, name, opts in det:
        if name not in SAMPLERS:
            continue
        cells = []
        for s in steps[:-1]:
            try:
                r = sample(name, mix.as_model(vp, "x0"), vp, x_T.shape, x_T=x_T, prediction="x0", eps=eps, **opts(s))
            except ValueError:
                cells.append("error")
                continue
            err = float(np.sqrt(np.mean((np.asarray(r.x) - exact) ** 2)))
            cells.append(f"{err:.1e} @{r.nfe}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for tol in (1e-2, 1e-3, 1e-4):
        r = sample("ode_dopri5", mix.as_model(vp, "x0"), vp, x_T.shape, x_T=x_T, prediction="x0", rtol=tol, atol=tol, eps=eps, denoise=True)
        err = float(np.sqrt(np.mean((np.asarray(r.x) - exact) ** 2)))
        print(f"| ode_dopri5 rtol=atol={tol:g} | {err:.1e} @{r.nfe} (batch total) |")

    # the exact probability-flow map of the same x_T: what a deterministic sampler converges to
    flow = float(np.mean([energy_distance(exact_flow_map(mix, vp, proc_noise, 1e-3), refs[k])
                          for k, proc_noise in enumerate(noises)]))
    anc = dict(rows.get("ddpm ancestral", []))
    if 1000 in anc:
        # 1000-step ancestral sampling is at the statistical floor (its distance is that of two exact
        # sets up to sampling noise); a deterministic solver has reached the floor when its distance
        # is within 10% of the floor level, taken as the larger of that and the exact flow map's
        target = 1.1 * max(anc[1000], floor, flow)
        print(f"\n1000-step ancestral sampling: energy distance {anc[1000]:.2e}; two exact sets: {floor:.2e}; "
              f"exact probability-flow map of the same x_T: {flow:.2e}.")
        print(f"NFE the deterministic solvers need to reach that floor (distance <= {target:.2e}):")
        for label, pts in rows.items():
            if label.split()[0] not in ("ddim", "ode_euler", "ode_heun", "ode_rk4", "edm_heun", "dpmpp_2m") or "eta=1" in label:
                continue
            hit = [nfe for nfe, d in pts if d <= target]
            print(f"  {label}: {min(hit) if hit else 'not within ' + str(pts[-1][0])} NFE")
    print(f"\n(bench ran {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
