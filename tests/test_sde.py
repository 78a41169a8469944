"""Score SDEs: moment equations, reverse drifts, discretisations, the process interface, namespaces."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from diffcore import VESDE, VPSDE, subVPSDE, get_named_beta_schedule, ncsn_sigmas
from diffcore.process import Process

from conftest import load_namespace, n_examples, to_np, to_xp


@st.composite
def sdes(draw):
    kind = draw(st.sampled_from(["vp", "subvp", "ve"]))
    N = draw(st.integers(2, 2000))
    if kind == "ve":
        smin = draw(st.floats(1e-3, 1.0))
        return VESDE(sigma_min=smin, sigma_max=smin * draw(st.floats(2.0, 1e4)), N=N)
    bmin = draw(st.floats(0.01, 1.0))
    cls = VPSDE if kind == "vp" else subVPSDE
    return cls(beta_min=bmin, beta_max=bmin + draw(st.floats(0.5, 30.0)), N=N)


def test_every_sde_speaks_the_process_interface():
    for sde in (VPSDE(), subVPSDE(), VESDE()):
        assert isinstance(sde, Process)


def test_moment_equations(xp):
    """d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2 (the SDE's moment ODEs), for t > 0."""

    @settings(max_examples=n_examples(xp))
    @given(sde=sdes(), t=st.lists(st.floats(0.02, 0.98), min_size=3, max_size=3))
    def inner(sde, t):
        t = np.asarray(t)
        h = 1e-6
        X = lambda a: to_xp(a, xp)
        alpha = lambda s: to_np(sde.alpha(X(s)))
        var = lambda s: to_np(sde.sigma(X(s))) ** 2
        x = np.ones((3, 1))
        drift, g = sde.sde(X(x), X(t))
        f = to_np(drift)[:, 0]
        g2 = to_np(g) ** 2
        np.testing.assert_allclose((alpha(t + h) - alpha(t - h)) / (2 * h), f * alpha(t), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose((var(t + h) - var(t - h)) / (2 * h), 2 * f * var(t) + g2, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(to_np(sde.diffusion_squared(X(t))), g2, rtol=1e-12)
        mean, std = sde.marginal_prob(X(x * 3.0), X(t))
        np.testing.assert_allclose(to_np(mean)[:, 0], 3.0 * alpha(t), rtol=1e-12)
        np.testing.assert_allclose(to_np(std), np.sqrt(var(t)), rtol=1e-12)
        np.testing.assert_allclose(to_np(sde.log_snr(X(t))), np.log(alpha(t) ** 2 / var(t)), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(to_np(sde.time_from_model_time(sde.model_time(X(t)))), t, rtol=1e-10)

    inner()


def test_reverse_drifts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    t = np.array([0.1, 0.4, 0.7, 1.0])
    score = lambda x, t: np.tanh(x) * (1 + t[:, None])
    for sde in (VPSDE(), subVPSDE(), VESDE()):
        f, g = sde.sde(x, t)
        rf, rg = sde.reverse(score).sde(x, t)
        np.testing.assert_allclose(rf, f - g[:, None] ** 2 * score(x, t), rtol=1e-13)
        np.testing.assert_allclose(rg, g)
        pf, pg = sde.reverse(score, probability_flow=True).sde(x, t)
        np.testing.assert_allclose(pf, f - 0.5 * g[:, None] ** 2 * score(x, t), rtol=1e-13)
        np.testing.assert_array_equal(pg, 0.0)
        df, dG = sde.discretize(x, t)
        rdf, rdG = sde.reverse(score).discretize(x, t)
        np.testing.assert_allclose(rdf, df - dG[:, None] ** 2 * score(x, t), rtol=1e-13)


def test_discretisations_are_ddpm_and_ncsn():
    vp = VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
    np.testing.assert_allclose(vp.discrete_betas, get_named_beta_schedule("linear", 1000), rtol=1e-14)
    # the same betas, not the same marginals (docs/sde.md)
    assert vp.alphas_cumprod[-1] == pytest.approx(4.04e-5, rel=2e-3)
    assert float(vp.alpha(np.array(1.0))) ** 2 == pytest.approx(4.32e-5, rel=2e-3)
    t = np.array([0.0, 0.5, 0.9995, 1.0])
    idx = np.floor(t * 999).astype(int)  # score_sde's integer truncation
    x = np.ones((4, 2))
    f, G = vp.discretize(x, t)
    np.testing.assert_allclose(G, np.sqrt(vp.discrete_betas[idx]), rtol=1e-14)
    np.testing.assert_allclose(f[:, 0], np.sqrt(1 - vp.discrete_betas[idx]) - 1, rtol=1e-12)
    ve = VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    np.testing.assert_allclose(ve.discrete_sigmas[::-1], ncsn_sigmas(50.0, 0.01, 1000), rtol=1e-14)
    f, G = ve.discretize(x, t)
    prev = np.where(idx == 0, 0.0, ve.discrete_sigmas[np.maximum(idx - 1, 0)])
    np.testing.assert_allclose(G**2, ve.discrete_sigmas[idx] ** 2 - prev**2, rtol=1e-12)
    assert G[0] == pytest.approx(0.01)  # the first VE step adds sigma_min
    np.testing.assert_array_equal(f, 0.0)
    # VE convention: std(0) = sigma_min, mean = x
    mean, std = ve.marginal_prob(x, np.zeros(4))
    np.testing.assert_allclose(std, 0.01, rtol=1e-14)
    np.testing.assert_array_equal(mean, x)
    # sub-VP's std lies below VP's
    tt = np.linspace(0.01, 1, 50)
    assert np.all(subVPSDE().sigma(tt) < VPSDE().sigma(tt))


def test_prior():
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 2, 4))
    for sde, std in ((VPSDE(), 1.0), (subVPSDE(), 1.0), (VESDE(sigma_max=50.0), 50.0)):
        zz = sde.prior_sample(z)
        np.testing.assert_allclose(zz, z * std)
        np.testing.assert_allclose(sde.prior_logp(zz), norm.logpdf(zz, scale=std).sum(axis=(1, 2)), rtol=1e-12)


def test_same_numbers_on_every_namespace(xp):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 2, 2))
    t = np.array([1e-3, 0.5, 1.0])
    ref_xp = load_namespace("numpy")
    for sde in (VPSDE(), subVPSDE(), VESDE()):
        def run(ns):
            X, T = to_xp(x, ns), to_xp(t, ns)
            out = list(sde.sde(X, T)) + list(sde.marginal_prob(X, T)) + list(sde.discretize(X, T))
            out += [sde.alpha(T), sde.sigma(T), sde.log_snr(T), sde.model_time(T), sde.prior_logp(X)]
            out += list(sde.reverse(lambda a, b: -a, probability_flow=True).sde(X, T))
            return out

        for got, want in zip(run(xp), run(ref_xp)):
            np.testing.assert_allclose(to_np(got), to_np(want), rtol=1e-12, atol=1e-300)


def test_under_jit_and_float32():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.ones((2, 3), dtype=jnp.float32)
    t = jnp.asarray([0.25, 1.0], dtype=jnp.float32)
    for sde in (VPSDE(), subVPSDE(), VESDE()):
        f = lambda x, t: (sde.sde(x, t), sde.marginal_prob(x, t), sde.discretize(x, t), sde.log_snr(t))
        eager, jitted = f(x, t), jax.jit(f)(x, t)
        for e, j in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
            assert e.dtype == j.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]; got values from -0.1"):
        VPSDE().marginal_prob(np.ones((2, 1)), np.array([-0.1, 0.5]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\].*1.5"):
        VESDE().sde(np.ones((2, 1)), np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="t has 3 entries but the batch has 2"):
        VPSDE().sde(np.ones((2, 1)), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(TypeError, match="t must be a real floating-point array"):
        VPSDE().alpha(np.array([0, 1]))
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match="sigma_max must be greater than sigma_min"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="beta_max must be greater than beta_min"):
        VPSDE(beta_min=1.0, beta_max=1.0)
    with pytest.raises(ValueError, match="beta_min"):
        subVPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="N must be an integer >= 1"):
        VPSDE(N=0)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        VPSDE().reverse(None)


def test_noise_ladders():
    from diffcore import karras_sigmas

    s = ncsn_sigmas(1.0, 0.01, 10)
    assert s[0] == pytest.approx(1.0) and s[-1] == pytest.approx(0.01)
    np.testing.assert_allclose(s[1:] / s[:-1], (0.01) ** (1 / 9), rtol=1e-12)  # geometric
    k = karras_sigmas(18, 0.002, 80.0, rho=7.0)
    assert k[0] == pytest.approx(80.0) and k[-1] == pytest.approx(0.002)
    np.testing.assert_allclose(np.diff(k ** (1 / 7)), (0.002 ** (1 / 7) - 80 ** (1 / 7)) / 17, rtol=1e-10)  # linear in sigma^(1/rho)
    assert np.all(np.diff(k) < 0)
    with pytest.raises(ValueError, match="sigma_max must be greater than sigma_min"):
        karras_sigmas(10, 1.0, 0.5)
    with pytest.raises(ValueError, match="num_scales"):
        ncsn_sigmas(1.0, 0.01, 1)


def test_vp_discretisation_with_too_few_steps_is_refused():
    sde = VPSDE(N=10)  # the continuous SDE is valid; only its 10-step chain is not
    assert np.all(np.isfinite(sde.sde(np.ones((1, 2)), np.array([0.5]))[0]))
    with pytest.raises(ValueError, match="needs N > beta_max.*N=10, beta_max=20"):
        sde.discretize(np.ones((1, 2)), np.array([0.5]))


def test_chain_index_on_grids_ending_at_zero_and_in_low_precision():
    torch = pytest.importorskip("torch")
    ve = VESDE()
    # on linspace(1, 0, N) plain floor(t (N-1)) truncates 173 of 1000 grid points one step low
    np.testing.assert_array_equal(VPSDE._step_index(ve, np.linspace(1, 0, 1000)), np.arange(999, -1, -1))
    t = np.array([0.0, 0.002, 0.5, 1.0])
    for sde in (VPSDE(), VESDE()):
        f64, G64 = sde.discretize(np.ones((4, 1)), t)
        for dtype in (torch.float16, torch.bfloat16):
            f, G = sde.discretize(torch.ones((4, 1), dtype=dtype), torch.tensor(t, dtype=dtype))
            # derived in float64 and cast once: within the dtype's rounding (bf16: 2^-8), not 0 or 55% off
            np.testing.assert_allclose(G.double().numpy(), G64, rtol=4e-3)
            np.testing.assert_allclose(f.double().numpy(), f64, rtol=4e-3, atol=1e-30)
