"""diffcore.metrics: the two-sample distances and the digits judge separate data from noise, are ~0
(within their noise) for two samples of one distribution, match closed forms, and refuse bad input."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from diffcore import metrics
from diffcore.metrics import (
    DigitsJudge,
    energy_distance,
    kernel_distance,
    median_bandwidth,
    mmd_rbf,
    pixel_kernel_distance,
    reference_distance,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------- distances
def test_energy_distance_of_a_shift_matches_the_gaussian_closed_form():
    # X ~ N(0, 1), Y ~ N(mu, 1): E = 2 E|N(mu, 2)| - 2 E|N(0, 2)|, with
    # E|N(m, s^2)| = s sqrt(2/pi) exp(-m^2 / (2 s^2)) + m (1 - 2 Phi(-m / s)).
    mu, s = 1.0, math.sqrt(2.0)
    phi = 0.5 * (1.0 + math.erf(-mu / s / math.sqrt(2.0)))
    e_abs = s * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * s * s)) + mu * (1 - 2 * phi)
    exact = 2 * e_abs - 2 * s * math.sqrt(2 / math.pi)  # 0.5418
    r = _rng(1)
    x, y = r.normal(size=(2000, 1)), r.normal(size=(2000, 1)) + mu
    # the U-statistic's standard deviation at n = 2000 is about 0.028
    assert energy_distance(x, y, unbiased=True) == pytest.approx(exact, abs=0.1)
    # the V-statistic exceeds it by about (1/N + 1/M) E|X - X'| = 0.001 on average
    assert energy_distance(x, y) == pytest.approx(exact, abs=0.1)


def test_energy_distance_v_statistic_floor_for_one_distribution():
    r = _rng(2)
    n, D = 500, 3
    vals = [energy_distance(r.normal(size=(n, D)), r.normal(size=(n, D))) for _ in range(5)]
    # E|X - X'| for N(0, I_3) is sqrt(2) E chi_3 = 4 / sqrt(pi); the V floor is (2 / n) of it
    floor = 2 / n * 4 / math.sqrt(math.pi)
    assert all(v >= 0 for v in vals)
    assert np.mean(vals) == pytest.approx(floor, rel=0.35)


@pytest.mark.parametrize("fn", [energy_distance, mmd_rbf, kernel_distance])
def test_distances_separate_data_from_noise_and_vanish_on_halves(fn):
    from diffcore.data import load_dataset

    data = load_dataset("two_moons", n=1200, seed=0).data
    a, b = data[:600], data[600:]
    noise = _rng(3).uniform(-3, 3, size=(600, 2))
    kw = {} if fn is kernel_distance else {"unbiased": True}
    same, apart = fn(a, b, **kw), fn(a, noise, **kw)
    assert apart > 0
    assert abs(same) < 0.05 * apart, (same, apart)


def test_v_statistics_are_nonnegative_and_unbiased_ones_straddle_zero():
    r = _rng(4)
    us = []
    for _ in range(6):
        x, y = r.normal(size=(60, 2)), r.normal(size=(60, 2))
        assert energy_distance(x, y) >= 0 and mmd_rbf(x, y) >= 0
        us.append(mmd_rbf(x, y, bandwidth=1.0, unbiased=True))
    assert min(us) < 0 < max(us)


def test_mmd_rbf_identical_samples_and_bandwidth():
    x = _rng(5).normal(size=(50, 3))
    assert mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)  # V-statistic of one sample against itself
    # the median heuristic is what is used when no bandwidth is given
    y = x + 0.5
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(x, y, bandwidth=median_bandwidth(x, y)))
    assert mmd_rbf(x, y, bandwidth=1e3) < 1e-6  # a very wide kernel sees nothing


def test_reference_distance_is_the_distance_of_two_disjoint_subsets():
    data = _rng(6).normal(size=(400, 2))
    perm = np.random.default_rng(np.random.SeedSequence(7)).permutation(400)
    expected = energy_distance(data[perm[:100]], data[perm[100:200]])
    assert reference_distance(data, 100, seed=7) == pytest.approx(expected)
    bw = median_bandwidth(data)
    assert reference_distance(data, 100, seed=7, distance="mmd_rbf", bandwidth=bw) >= 0
    # the yardstick: samples of the data distribution sit near it, shifted samples far above
    samples = _rng(8).normal(size=(100, 2))
    ref = reference_distance(data, 100, seed=0)
    assert energy_distance(samples, data[:100]) < 4 * ref
    assert energy_distance(samples + 1.0, data[:100]) > 10 * ref


def test_pixel_kernel_distance_images_and_pooling():
    from diffcore.data import digits

    ds = digits()
    real, held = ds.data, ds.held_out.data
    noise = _rng(9).uniform(-1, 1, size=held.shape)
    same, apart = pixel_kernel_distance(held, real), pixel_kernel_distance(noise, real)
    assert abs(same) < 0.05 * apart, (same, apart)
    # 64x64 (nearest-neighbour upscaled digits) pool back to 32x32, then 8x8-like content: same verdict
    up = lambda a: np.repeat(np.repeat(a, 8, axis=2), 8, axis=3)  # noqa: E731
    big_same = pixel_kernel_distance(up(held[:100]), up(real[:300]))
    big_apart = pixel_kernel_distance(up(noise[:100]), up(real[:300]))
    assert abs(big_same) < 0.1 * big_apart
    assert metrics._pool_images(up(held[:2]), 32).shape == (2, 1, 32, 32)
    # (N, D) points work too; max_points subsamples
    assert pixel_kernel_distance(held.reshape(len(held), -1), real.reshape(len(real), -1), max_points=100) < 0.05 * apart


@pytest.mark.parametrize(
    "x, y, error, match",
    [
        (np.zeros(10), np.zeros((10, 1)), ValueError, "x must be a 2-D array"),
        (np.zeros((10, 2)), np.zeros((10, 3)), ValueError, "same dimension D"),
        (np.zeros((1, 2)), np.zeros((10, 2)), ValueError, "at least 2 points"),
        ([[0.0, 1.0], [1.0, 2.0]], np.zeros((10, 2)), TypeError, "x must be an array"),
        (np.full((5, 2), np.nan), np.zeros((10, 2)), ValueError, "x must be finite"),
        (np.zeros((5, 2), dtype=complex), np.zeros((10, 2)), TypeError, "real numbers"),
    ],
)
@pytest.mark.parametrize("fn", [energy_distance, mmd_rbf, kernel_distance])
def test_distance_errors(fn, x, y, error, match):
    with pytest.raises(error, match=match):
        fn(x, y)


def test_argument_errors():
    x = _rng(10).normal(size=(20, 2))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(x, x, bandwidth=0.0)
    with pytest.raises(TypeError, match="unbiased must be a bool"):
        energy_distance(x, x, unbiased="yes")
    with pytest.raises(ValueError, match=r"n must be at most N // 2 = 10"):
        reference_distance(x, 11)
    with pytest.raises(ValueError, match="distance must be one of"):
        reference_distance(x, 5, distance="fid")
    with pytest.raises(ValueError, match="one example shape"):
        pixel_kernel_distance(np.zeros((4, 1, 8, 8)), np.zeros((4, 1, 8, 9)))
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\) or both points"):
        pixel_kernel_distance(np.zeros((4, 1, 8)), np.zeros((4, 1, 8)))
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        mmd_rbf(np.zeros((5, 2)), np.zeros((5, 2)))


# -------------------------------------------------------------------------------- judge
@pytest.fixture(scope="module")
def judge():
    pytest.importorskip("sklearn")
    return DigitsJudge()


def test_digits_judge_reference_values(judge):
    ref = judge.reference_values()
    real, noise, train = ref["real"], ref["noise"], ref["train"]
    assert judge.accuracy > 0.95
    assert real["confidence"] > 0.93 and noise["confidence"] < 0.75
    assert real["coverage"] == 1.0 and noise["coverage"] < 1.0
    assert real["inception_score"] > 8.0 and noise["inception_score"] < 4.0
    assert abs(real["kernel_distance"]) < 0.05 * noise["kernel_distance"]
    # copies: training images are copies by definition, held-out digits about copy_quantile, noise none
    assert train["copy_fraction"] == 1.0 and noise["copy_fraction"] == 0.0
    assert real["copy_fraction"] < 3 * judge.copy_quantile


def test_digits_judge_scores_on_batches(judge):
    from diffcore.data import digits

    held = digits().held_out
    scores = judge.evaluate(held.data)  # against itself as KID reference: only the others are meaningful
    assert set(scores) == {"confidence", "coverage", "inception_score", "kernel_distance", "copy_fraction"}
    # a batch of one class: confident, covers 1/10, inception score near 1
    ones = held.data[held.labels == 1]
    s1 = judge.evaluate(ones)
    assert s1["coverage"] == 0.1 and s1["inception_score"] < 1.5 and s1["confidence"] > 0.85
    p = judge.probabilities(ones)
    assert p.shape == (len(ones), 10) and np.allclose(p.sum(1), 1.0)
    assert judge.features(ones).shape == (len(ones), judge.hidden)
    # values outside [-1, 1] are clipped: a doubled image scores as its clip
    assert judge.evaluate(2 * ones)["confidence"] == pytest.approx(judge.evaluate(np.clip(2 * ones, -1, 1))["confidence"])
    # the classifier is trained once per process and settings
    assert DigitsJudge()._fitted() is judge._fitted()


def test_digits_judge_errors(judge):
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        judge.evaluate(np.zeros((4, 64)))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        judge.evaluate(np.zeros((4, 3, 8, 8)))
    with pytest.raises(ValueError, match="samples must be finite"):
        judge.evaluate(np.full((4, 1, 8, 8), np.nan))
    with pytest.raises(ValueError, match="copy_quantile"):
        DigitsJudge(copy_quantile=1.5)
    with pytest.raises(TypeError, match="hidden must be an integer"):
        DigitsJudge(hidden=3.5)


def test_digits_judge_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    with pytest.raises(ImportError, match=r"diffcore\[data\]"):
        DigitsJudge(seed=987654)._fitted()  # settings not cached, so it must train
