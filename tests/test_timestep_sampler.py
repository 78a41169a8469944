"""Timestep samplers: inverse-CDF sampling, unbiasing weights, history, state round trips."""

from __future__ import annotations

import numpy as np
import pytest

from diffcore import LossSecondMomentResampler, UniformSampler, create_named_schedule_sampler

from conftest import to_np, to_xp


def _grid(n=200_000):
    return (np.arange(n) + 0.5) / n


def _warm(sampler, rng, scale):
    T = sampler.num_timesteps
    for _ in range(sampler.history_per_term):
        t = np.arange(T)
        sampler.update_with_losses(t, scale[t] * (1 + 0.1 * rng.standard_normal(T)))


def test_uniform_maps_u_to_equal_bins(xp):
    s = UniformSampler(7)
    u = np.array([0.0, 0.1429, 0.5, 0.999999, 1 / 7 - 1e-9, 1 / 7 + 1e-9])
    steps, w = s.sample(to_xp(u, xp))
    np.testing.assert_array_equal(to_np(steps), np.floor(u * 7).astype(int))
    np.testing.assert_array_equal(to_np(w), np.ones(6))


def test_importance_sampler_is_uniform_until_every_step_has_full_history():
    rng = np.random.default_rng(0)
    s = LossSecondMomentResampler(5, history_per_term=3)
    s.update_with_losses(np.array([0, 1, 2, 3, 4, 0, 1, 2, 3]), rng.uniform(1, 2, size=9))
    assert not s.warmed_up()
    np.testing.assert_array_equal(s.weights(), np.ones(5))
    for _ in range(3):
        s.update_with_losses(np.arange(5), np.array([1.0, 1.0, 1.0, 1.0, 9.0]))
    assert s.warmed_up()
    # rolling window: only the last 3 values per step count
    np.testing.assert_array_equal(s.state_dict()["loss_history"][4], [9.0, 9.0, 9.0])
    w = s.weights()
    expected = np.array([1, 1, 1, 1, 9.0]) / 13 * (1 - 0.001) + 0.001 / 5
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_importance_sampler_frequencies_and_unbiased_weights():
    rng = np.random.default_rng(1)
    T = 20
    s = LossSecondMomentResampler(T)
    losses = np.linspace(0.1, 3.0, T) ** 2
    _warm(s, rng, losses)
    p = s.weights() / s.weights().sum()
    steps, w = s.sample(_grid())
    freq = np.bincount(steps, minlength=T) / steps.shape[0]
    np.testing.assert_allclose(freq, p, atol=2e-5)
    # E_p[w_t L_t] = (1/T) sum_t L_t: the weights unbias the estimate of the mean term
    assert np.mean(w * losses[steps]) == pytest.approx(losses.mean(), rel=1e-3)
    # a biased mutant (forgetting the weights) is far off
    assert abs(np.mean(losses[steps]) - losses.mean()) > 0.1 * losses.mean()
    # Monte Carlo: within 4 standard errors at a fixed seed
    u = np.random.default_rng(2).random(4000)
    st, wt = s.sample(u)
    est = wt * losses[st]
    assert abs(est.mean() - losses.mean()) < 4 * est.std(ddof=1) / np.sqrt(est.size)
    # and it reduces the variance of the estimate compared with uniform sampling
    su, wu = UniformSampler(T).sample(u)
    assert est.std() < (wu * losses[su]).std()


def test_state_round_trip_and_namespaces(xp):
    rng = np.random.default_rng(3)
    s = LossSecondMomentResampler(12)
    _warm(s, rng, np.arange(1, 13, dtype=float))
    restored = LossSecondMomentResampler(12)
    restored.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(restored.weights(), s.weights())
    u = rng.random(16)
    ref_steps, ref_w = s.sample(u)
    steps, w = restored.sample(to_xp(u, xp))
    np.testing.assert_array_equal(to_np(steps), ref_steps)
    np.testing.assert_allclose(to_np(w), ref_w, rtol=1e-12)


def test_bad_input():
    s = LossSecondMomentResampler(4)
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\)"):
        s.sample(np.array([0.2, 1.0]))
    with pytest.raises(ValueError, match="u must be a 1-D floating array"):
        s.sample(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="steps and losses must have the same length"):
        s.update_with_losses(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"steps must lie in \[0, 3\]"):
        s.update_with_losses(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="losses must be finite"):
        s.update_with_losses(np.array([1]), np.array([np.nan]))
    with pytest.raises(ValueError, match="state does not fit"):
        s.load_state_dict(LossSecondMomentResampler(5).state_dict())
    with pytest.raises(ValueError, match="num_timesteps must be an integer >= 1"):
        UniformSampler(0)
    with pytest.raises(ValueError, match="name must be one of 'uniform', 'loss-second-moment'"):
        create_named_schedule_sampler("importance", 10)


def test_arguments_accept_numpy_ints_and_name_bad_values():
    assert UniformSampler(np.int64(10)).num_timesteps == 10
    with pytest.raises(TypeError, match="uniform_prob must be a real number"):
        LossSecondMomentResampler(10, uniform_prob="a")
    with pytest.raises(ValueError, match="uniform_prob"):
        LossSecondMomentResampler(10, uniform_prob=0.0)
