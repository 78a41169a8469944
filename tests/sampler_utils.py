"""Distances between sample sets, for the statistical tests of samplers (docs/conventions.md).

A sampler's samples are compared with exact samples of the target through a distance, and that
distance with the distance between two exact sample sets of the same size (the noise floor).
"""

from __future__ import annotations

import numpy as np

from diffcore.samplers._base import ModelArgs

#: the loop arguments of a model without weights (an analytic model or a plain callable), for
#: tests that drive a sampler's steps themselves
NO_WEIGHTS = ModelArgs((), None)


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Szekely's energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic), >= 0, 0 iff equal laws."""
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1)

    def mean_dist(u, v):
        d2 = np.sum(u * u, 1)[:, None] + np.sum(v * v, 1)[None, :] - 2.0 * u @ v.T
        return float(np.mean(np.sqrt(np.clip(d2, 0.0, None))))

    return 2.0 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_projections: int = 128, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance over random directions (equal sample counts)."""
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1)
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs sample sets of equal shape; got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(a.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def two_gaussians_2d():
    """A well-separated 2-D mixture (two modes) whose exact score is known: the standard target."""
    from diffcore.analytic import GaussianMixture

    return GaussianMixture(
        weights=np.array([0.3, 0.7]),
        means=np.array([[-1.5, 0.5], [1.0, -0.5]]),
        stds=np.array([[0.35, 0.25], [0.3, 0.4]]),
    )


def exact_samples(mixture, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    D = mixture.means.shape[1] if hasattr(mixture, "means") else 2
    return np.asarray(mixture.sample(rng.standard_normal((n, D)), rng.random(n)))


def mixture_target(n: int):
    """(the 2-D mixture, n exact samples, the noise floor, n standard normal x_T): the target of the
    statistical sampler tests. The floor is the largest distance between the reference set and three
    more exact sets of the same size."""
    mix = two_gaussians_2d()
    refs = [exact_samples(mix, n, seed) for seed in range(1, 5)]
    floor = max(energy_distance(refs[0], r) for r in refs[1:])
    z = np.random.default_rng(0).standard_normal((n, 2))
    return mix, refs[0], floor, z
