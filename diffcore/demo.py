"""A tour of the core on real arrays: ``python -m diffcore.demo``.

Schedules and their reference numbers; samplers on a 2-D Gaussian mixture whose exact score is
known (distance to exact samples and model evaluations, on every installed backend); the
variational bound of the optimal model on Gaussian data, whose exact likelihood is known.
"""

from __future__ import annotations

import math
import time

import numpy as np

import diffcore
from diffcore.analytic import GaussianMixture


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """2 E|X-Y| - E|X-X'| - E|Y-Y'|: 0 for identical laws."""

    def mean_dist(u, v):
        return float(np.mean(np.linalg.norm(u[:, None, :] - v[None, :, :], axis=-1)))

    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def _installed_backends() -> list[str]:
    names = []
    for name in ("numpy", "torch", "jax"):
        try:
            diffcore.backend(name)
            names.append(name)
        except ImportError:
            print(f"  ({name} backend not installed: skipped)")
    return names


def schedules() -> diffcore.GaussianDiffusion:
    print("Schedules (float64):")
    linear = diffcore.get_named_beta_schedule("linear", 1000)
    d = diffcore.GaussianDiffusion(betas=linear)
    print(f"  linear T=1000: abar_T = {d.alphas_cumprod[-1]:.4e}  (reference 4.04e-5)")
    print(f"  linear T=1000: beta~ at the second step = {d.posterior_variance[1]:.4e}  (reference 5.45e-5)")
    print(f"  cosine T=1000: beta_1 = {diffcore.get_named_beta_schedule('cosine', 1000)[0]:.4e}  (reference 4.13e-5)")
    print(f"  VP SDE: continuous alpha(1)^2 = {float(diffcore.VPSDE().alpha(np.array(1.0))) ** 2:.4e}  (reference 4.32e-5)")
    zt = diffcore.get_named_beta_schedule("linear", 1000, rescale_zero_terminal_snr=True)
    dz = diffcore.GaussianDiffusion(betas=zt, model_mean_type="v")
    print(f"  zero-terminal SNR: beta_T = {zt[-1]}, log-SNR at the last step = {dz.log_snr_table[-1]}")
    print(f"  respaced to 10 'trailing' steps: the network receives {d.respace(10, 'trailing').timestep_map.tolist()}\n")
    return d


def samplers(d: diffcore.GaussianDiffusion) -> None:
    mix = GaussianMixture(np.array([0.3, 0.7]), np.array([[-1.5, 0.5], [1.0, -0.5]]), np.array([[0.35, 0.25], [0.3, 0.4]]))
    rng = np.random.default_rng(0)
    n = 1000
    exact = np.asarray(mix.sample(rng.standard_normal((n, 2)), rng.random(n)))
    floor = energy_distance(np.asarray(mix.sample(rng.standard_normal((n, 2)), rng.random(n))), exact)
    vp = diffcore.VPSDE()
    runs = [
        ("ddpm", d, "eps", {"steps": 100}),
        ("ddim", d, "eps", {"steps": 25}),
        ("dpmpp_2m", d, "eps", {"steps": 15}),
        ("pc", vp, "score", {"steps": 100, "norm": "batch_mean"}),
        ("edm_heun", vp, "eps", {"steps": 12}),
        ("ode_dopri5", vp, "score", {"rtol": 1e-4, "atol": 1e-4}),
    ]
    print(f"Samplers on a 2-D Gaussian mixture with the exact score ({n} samples; two exact sets differ by {floor:.1e}):")
    for bk in _installed_backends():
        for name, process, prediction, options in runs:
            start = time.perf_counter()
            r = diffcore.sample(name, mix.as_model(process, prediction), process, (n, 2), backend=bk, seed=1,
                                prediction=prediction, **options)
            dist = energy_distance(np.asarray(r.x, dtype=np.float64), exact)
            print(f"  {bk:>5} {name:>10}: energy distance {dist:.1e} with {r.nfe:>5} model calls "
                  f"({time.perf_counter() - start:.2f} s)")
    print()


def variational_bound() -> None:
    print("Variational bound of the optimal model on Gaussian data (T=1000, D=16, std 0.5):")
    linear = diffcore.get_named_beta_schedule("linear", 1000)
    rng = np.random.default_rng(0)
    std, B, D = 0.5, 8, 16
    x0 = rng.normal(0.0, std, size=(B, D))
    exact_nll = (0.5 * np.sum(x0**2, axis=1) / std**2 + 0.5 * D * math.log(2 * math.pi * std**2)) / (D * math.log(2))
    noise = [rng.standard_normal((B, D)) for _ in range(1000)]
    print(f"  exact NLL of the data: {exact_nll.mean():.4f} bits/dim")
    for var_type in ("fixed_small", "fixed_large"):
        dv = diffcore.GaussianDiffusion(betas=linear, model_var_type=var_type)
        mix = GaussianMixture(np.array([1.0]), np.zeros((1, D)), np.array([std]))
        out = dv.calc_bpd_loop(mix.as_model(dv, "eps"), x0, noise=lambda i: noise[i], decoder="gaussian")
        print(f"  {var_type:>11}: VLB = {float(np.mean(out['total_bpd'])):.4f} bits/dim (1000 model calls)")
    print("  (the bound exceeds the NLL: fixed variances are not the true reverse variances of this data)")


def main() -> None:
    t0 = time.perf_counter()
    print("diffcore", diffcore.__version__, "-- the core on real arrays\n")
    d = schedules()
    samplers(d)
    variational_bound()
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
