"""Discrete Gaussian diffusion: forward marginals, posteriors, parametrisations, variance types,
cross-namespace equality, jit, low-precision dtypes and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from diffcore import GaussianDiffusion, get_named_beta_schedule
from diffcore import parametrization as param

from conftest import load_namespace, n_examples, to_np, to_xp, xp_name, jax_x64

SCHEDULES = ("linear", "cosine", "scaled_linear", "sigmoid")


@st.composite
def diffusions(draw, xp, mean_types=("eps", "x0", "v"), var_types=("fixed_small", "fixed_large", "learned_range")):
    name = draw(st.sampled_from(SCHEDULES))
    # eager JAX compiles per shape: torch and jax draw from a fixed pool of sizes
    full = xp_name(xp) in ("numpy", "array_api_strict")
    T = draw(st.integers(21, 100) if full else st.just(40))
    betas = get_named_beta_schedule(name, T)
    return GaussianDiffusion(
        betas=betas,
        model_mean_type=draw(st.sampled_from(mean_types)),
        model_var_type=draw(st.sampled_from(var_types)),
    )


def _batch(draw, d, xp, channels=2, size=3):
    B = draw(st.integers(1, 4)) if xp_name(xp) in ("numpy", "array_api_strict") else 3
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, size=(B, channels, size))
    t = rng.integers(0, d.num_timesteps, size=B)
    t[0] = draw(st.sampled_from([0, d.num_timesteps - 1, int(t[0])]))
    return rng, x0, t


# ---------------------------------------------------------------------------------- reference


def test_reference_numbers():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    assert d.alphas_cumprod[-1] == pytest.approx(4.04e-5, rel=2e-3)
    assert d.alphas_cumprod[-1] == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 1000)), rel=1e-12)
    assert d.posterior_variance[1] == pytest.approx(5.45e-5, rel=2e-3)
    assert np.exp(d.posterior_log_variance_clipped[0]) == pytest.approx(d.posterior_variance[1], rel=1e-14)
    assert get_named_beta_schedule("cosine", 1000)[0] == pytest.approx(4.13e-5, rel=2e-3)
    np.testing.assert_allclose(d.fixed_large_variance[1:], d.betas[1:], rtol=0)
    assert d.fixed_large_variance[0] == d.posterior_variance[1]


def test_import_loads_no_framework():
    code = "import sys, diffcore; bad = [m for m in ('torch', 'jax', 'flax', 'optax') if m in sys.modules]; print(bad); assert not bad"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ the math


def test_marginals_iterate_one_step_moments(xp):
    """Composing q(x_t | x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t) step by step gives q(x_t | x_0)."""

    @settings(max_examples=n_examples(xp))
    @given(d=diffusions(xp), data=st.data())
    def inner(d, data):
        rng, x0, _ = _batch(data.draw, d, xp)
        T = d.num_timesteps
        mean_coef, var = 1.0, 0.0
        means, variances = [], []
        for beta in d.betas:
            mean_coef = np.sqrt(1.0 - beta) * mean_coef
            var = (1.0 - beta) * var + beta
            means.append(mean_coef)
            variances.append(var)
        t = np.arange(T)
        x = np.broadcast_to(x0[:1], (T,) + x0.shape[1:])
        mean, variance, log_variance = d.q_mean_variance(to_xp(x, xp), to_xp(t, xp))
        np.testing.assert_allclose(to_np(mean), np.asarray(means)[:, None, None] * x, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(to_np(variance).reshape(-1), variances, rtol=1e-10)
        np.testing.assert_allclose(to_np(log_variance).reshape(-1), np.log(variances), rtol=1e-10, atol=1e-12)

    inner()


def test_posterior_is_normalised_product(xp):
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0); total expectation and variance."""

    @settings(max_examples=n_examples(xp))
    @given(d=diffusions(xp), data=st.data())
    def inner(d, data):
        rng, x0, _ = _batch(data.draw, d, xp)
        T = d.num_timesteps
        t = np.arange(1, T)  # t = 0 is the delta at x_0, checked below
        x0_t = np.broadcast_to(x0[:1], (T - 1,) + x0.shape[1:])
        x_t = rng.normal(size=x0_t.shape)
        mean, var, _ = d.q_posterior_mean_variance(to_xp(x0_t, xp), to_xp(x_t, xp), to_xp(t, xp))
        beta, abar_prev = d.betas[t], d.alphas_cumprod_prev[t]
        precision = (1.0 - beta) / beta + 1.0 / (1.0 - abar_prev)
        expected_mean = (
            np.sqrt(1.0 - beta)[:, None, None] / beta[:, None, None] * x_t
            + (np.sqrt(abar_prev) / (1.0 - abar_prev))[:, None, None] * x0_t
        ) / precision[:, None, None]
        np.testing.assert_allclose(to_np(var).reshape(-1), 1.0 / precision, rtol=1e-9)
        np.testing.assert_allclose(to_np(mean), expected_mean, rtol=1e-8, atol=1e-10)
        # laws of total variance and expectation over x_t ~ q(x_t | x_0)
        c1, c2 = d.posterior_mean_coef1, d.posterior_mean_coef2
        np.testing.assert_allclose(d.posterior_variance + c2**2 * (1 - d.alphas_cumprod), 1 - d.alphas_cumprod_prev, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(c1 + c2 * np.sqrt(d.alphas_cumprod), np.sqrt(d.alphas_cumprod_prev), rtol=1e-10)
        # first step: the posterior is the point mass at x_0
        t0 = np.zeros(x0.shape[0], dtype=np.int64)
        m0, v0, _ = d.q_posterior_mean_variance(to_xp(x0, xp), to_xp(rng.normal(size=x0.shape), xp), to_xp(t0, xp))
        np.testing.assert_allclose(to_np(m0), x0, rtol=1e-12, atol=1e-14)
        assert np.all(to_np(v0) == 0)

    inner()


def test_parametrisation_round_trips(xp):
    @settings(max_examples=n_examples(xp))
    @given(d=diffusions(xp, var_types=("fixed_small",)), data=st.data())
    def inner(d, data):
        rng, x0, t = _batch(data.draw, d, xp)
        eps = rng.normal(size=x0.shape)
        X = lambda a: to_xp(a, xp)
        x_t = d.q_sample(X(x0), X(t), noise=X(eps))
        alpha = np.sqrt(d.alphas_cumprod[t])[:, None, None]
        sigma = np.sqrt(1 - d.alphas_cumprod[t])[:, None, None]
        v = alpha * eps - sigma * x0
        outputs = {"eps": eps, "x0": x0, "v": v}
        for kind, out in outputs.items():
            dk = GaussianDiffusion(betas=d.betas, model_mean_type=kind)
            np.testing.assert_allclose(to_np(dk.predict_xstart(X(out), x_t, X(t))), x0, rtol=1e-7, atol=1e-7)
            np.testing.assert_allclose(to_np(dk.predict_eps(X(out), x_t, X(t))), eps, rtol=1e-7, atol=1e-7)
            np.testing.assert_allclose(to_np(dk.score(X(out), x_t, X(t))), -eps / sigma, rtol=1e-7, atol=1e-7)
        A, S, XT = X(alpha), X(sigma), x_t
        for kind, out in outputs.items():
            for target in ("eps", "x0", "v", "score"):
                got = getattr(param, f"to_{target}")(X(out), kind, XT, A, S)
                want = {"eps": eps, "x0": x0, "v": v, "score": -eps / sigma}[target]
                np.testing.assert_allclose(to_np(got), want, rtol=1e-7, atol=1e-7)
        # the general v inverse also holds when alpha^2 + sigma^2 != 1 (VE-like scales)
        a2, s2 = np.full_like(alpha, 1.0), sigma * 7.0
        xt2 = a2 * x0 + s2 * eps
        v2 = a2 * eps - s2 * x0
        np.testing.assert_allclose(to_np(param.x0_from_v(X(xt2), X(v2), X(a2), X(s2))), x0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(to_np(param.eps_from_v(X(xt2), X(v2), X(a2), X(s2))), eps, rtol=1e-9, atol=1e-9)

    inner()


def test_learned_range_endpoints_are_the_fixed_types(xp):
    @settings(max_examples=n_examples(xp))
    @given(d=diffusions(xp, var_types=("learned_range",)), data=st.data())
    def inner(d, data):
        rng, x0, t = _batch(data.draw, d, xp)
        X = lambda a: to_xp(a, xp)
        x_t = rng.normal(size=x0.shape)
        mean_out = rng.normal(size=x0.shape)
        small = GaussianDiffusion(betas=d.betas, model_mean_type=d.model_mean_type, model_var_type="fixed_small")
        large = GaussianDiffusion(betas=d.betas, model_mean_type=d.model_mean_type, model_var_type="fixed_large")
        ref_small = small.p_mean_variance(X(mean_out), X(x_t), X(t))
        ref_large = large.p_mean_variance(X(mean_out), X(x_t), X(t))
        for v, ref in ((-1.0, ref_small), (1.0, ref_large)):
            out = d.p_mean_variance(X(np.concatenate([mean_out, np.full_like(mean_out, v)], axis=1)), X(x_t), X(t))
            np.testing.assert_allclose(to_np(out.mean), to_np(ref.mean), rtol=1e-12, atol=1e-14)
            got = to_np(out.log_variance)
            want = np.broadcast_to(to_np(ref.log_variance), got.shape)
            rows = slice(None) if v < 0 else (t >= 1)  # fixed_large uses beta~ of the next step at t = 0
            np.testing.assert_allclose(got[rows], want[rows], rtol=1e-12)
        # learned_range at t = 0, v = +1 is log beta_1, not fixed_large's log beta~_2
        t0 = np.zeros_like(t)
        out = d.p_mean_variance(X(np.concatenate([mean_out, np.ones_like(mean_out)], axis=1)), X(x_t), X(t0))
        np.testing.assert_allclose(to_np(out.log_variance), np.log(d.betas[0]), rtol=1e-12)

    inner()


def test_p_mean_is_ddpm_eps_formula():
    """mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) (Ho et al. 2020, eq. 11)."""
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    rng = np.random.default_rng(1)
    t = np.array([0, 1, 17, 500, 999])
    x_t, eps = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    out = d.p_mean_variance(eps, x_t, t)
    beta, abar = d.betas[t][:, None], d.alphas_cumprod[t][:, None]
    want = (x_t - beta / np.sqrt(1 - abar) * eps) / np.sqrt(1 - beta)
    np.testing.assert_allclose(out.mean, want, rtol=1e-9, atol=1e-12)
    # the lecture notes' typo (1/alpha_t and sqrt(1 - alpha_t)) is measurably different
    typo = (x_t - beta / np.sqrt(beta) * eps) / (1 - beta)
    assert np.max(np.abs(out.mean - typo)) > 1e-2


def test_discretized_decoder_is_a_distribution_over_256_bins():
    """Bins telescope: the probabilities of all 256 values of an 8-bit pixel sum to 1."""
    from diffcore.losses import discretized_gaussian_log_likelihood

    values = np.arange(256) / 127.5 - 1.0
    for mean, log_scale in ((0.0, np.log(0.3)), (0.97, np.log(0.01)), (-0.5, np.log(2.0))):
        logp = discretized_gaussian_log_likelihood(values, means=np.full(256, mean), log_scales=np.full(256, log_scale))
        assert np.sum(np.exp(logp)) == pytest.approx(1.0, abs=1e-9)
        # edge bins collect the tails: a mean far below -1 puts nearly all mass on value -1
    logp = discretized_gaussian_log_likelihood(values, means=np.full(256, -3.0), log_scales=np.full(256, np.log(0.1)))
    assert np.exp(logp[0]) > 0.999


# ----------------------------------------------------------------------- losses and terms


def _loss_inputs(d, rng, B=3, C=2, L=4, learned=False):
    x0 = np.round((rng.uniform(-1, 1, size=(B, C, L)) + 1) * 127.5) / 127.5 - 1
    t = rng.integers(0, d.num_timesteps, size=B)
    t[0] = 0
    noise = rng.normal(size=x0.shape)
    out = rng.normal(size=(B, 2 * C if learned else C, L))
    if learned:
        out[:, C:] = np.tanh(out[:, C:])
    return x0, t, noise, out


def test_loss_targets_and_hybrid_units():
    rng = np.random.default_rng(3)
    betas = get_named_beta_schedule("cosine", 50)
    for kind in ("eps", "x0", "v"):
        d = GaussianDiffusion(betas=betas, model_mean_type=kind, model_var_type="learned_range")
        x0, t, noise, out = _loss_inputs(d, rng, learned=True)
        x_t = d.q_sample(x0, t, noise=noise)
        alpha = np.sqrt(d.alphas_cumprod[t])[:, None, None]
        sigma = np.sqrt(1 - d.alphas_cumprod[t])[:, None, None]
        target = {"eps": noise, "x0": x0, "v": alpha * noise - sigma * x0}[kind]
        exact = np.concatenate([target, out[:, 2:]], axis=1)
        terms = d.loss_terms(exact, x0, x_t, t, noise=noise, loss_type="hybrid")
        np.testing.assert_allclose(terms["mse"], 0.0, atol=1e-20)
        vb, _ = d.vb_terms_bpd(exact, x0, x_t, t)
        np.testing.assert_allclose(terms["vb"], vb * 0.001 * 50, rtol=1e-12)
        np.testing.assert_allclose(terms["loss"], terms["mse"] + terms["vb"], rtol=1e-12)
        simple = d.loss_terms(out, x0, x_t, t, noise=noise, loss_type="simple")
        np.testing.assert_allclose(simple["loss"], np.mean((out[:, :2] - target) ** 2, axis=(1, 2)), rtol=1e-12)
        vlb = d.loss_terms(out, x0, x_t, t, noise=noise, loss_type="vlb")
        rescaled = d.loss_terms(out, x0, x_t, t, noise=noise, loss_type="rescaled_vlb")
        np.testing.assert_allclose(rescaled["loss"], 50 * vlb["loss"], rtol=1e-12)


def test_hybrid_vlb_term_trains_only_the_variance():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffcore_torch")
    rng = np.random.default_rng(4)
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 40), model_var_type="learned_range")
    x0, t, noise, out = _loss_inputs(d, rng, learned=True)
    x0, noise, out_t = (torch.tensor(a) for a in (x0, noise, out))
    t = torch.tensor(t)
    out_t.requires_grad_(True)
    x_t = d.q_sample(x0, t, noise=noise)
    terms = d.loss_terms(out_t, x0, x_t, t, noise=noise, loss_type="hybrid")
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out_t)
    assert torch.all(grad[:, :2] == 0)  # the mean channels get no gradient from L_vlb
    assert torch.any(grad[:, 2:] != 0)


def test_zero_terminal_snr_tables_finite_in_low_precision():
    torch = pytest.importorskip("torch")
    betas = get_named_beta_schedule("linear", 1000, rescale_zero_terminal_snr=True)
    assert betas[-1] == 1.0
    d = GaussianDiffusion(betas=betas, model_mean_type="v")
    assert d.log_snr_table[-1] == -np.inf
    t = torch.arange(1000)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for name in ("alpha", "sigma"):
            assert torch.all(torch.isfinite(getattr(d, name)(t, dtype=dtype))), (name, dtype)
        x = torch.zeros((1000, 1), dtype=dtype)
        mean, var, log_var = d.q_posterior_mean_variance(x + 0.5, x - 0.25, t)
        for a in (mean, var, log_var):
            assert a.dtype == dtype and torch.all(torch.isfinite(a)), dtype
        assert d.sigma(t, dtype=dtype)[-1] == 1 and d.alpha(t, dtype=dtype)[-1] == 0
        # the sampling path: v-prediction to x_0 and the posterior mean at the last step stay finite
        out = d.p_mean_variance(x + 0.1, x + 0.3, t)
        assert torch.all(torch.isfinite(out.mean)) and torch.all(torch.isfinite(out.pred_xstart))
    # low-precision tables cast after deriving: 1 - abar in fp16 would round to 0 at t = 0
    assert d.sigma(torch.tensor([0]), dtype=torch.float16)[0] > 0


def test_zero_terminal_snr_refuses_eps():
    betas = get_named_beta_schedule("cosine", 100, rescale_zero_terminal_snr=True)
    with pytest.raises(ValueError, match="model_mean_type='eps'.*zero-terminal.*'v' or 'x0'"):
        GaussianDiffusion(betas=betas, model_mean_type="eps")
    GaussianDiffusion(betas=betas, model_mean_type="x0")


# ------------------------------------------------------------------- namespaces and jit


def _run_everything(d, xp, inputs):
    X = lambda a: to_xp(a, xp)
    x0, t, noise, out = (X(a) for a in inputs)
    x_t = d.q_sample(x0, t, noise=noise)
    res = {"x_t": x_t}
    res["q_mean"], res["q_var"], _ = d.q_mean_variance(x0, t)
    res["post_mean"], res["post_var"], res["post_logvar"] = d.q_posterior_mean_variance(x0, x_t, t)
    pmv = d.p_mean_variance(out, x_t, t, clip_denoised=True)
    res.update(p_mean=pmv.mean, p_logvar=pmv.log_variance, p_x0=pmv.pred_xstart)
    res["vb"], _ = d.vb_terms_bpd(out, x0, x_t, t)
    res["vb_gauss"], _ = d.vb_terms_bpd(out, x0, x_t, t, decoder="gaussian")
    res["prior"] = d.prior_bpd(x0)
    for lt in ("simple", "vlb", "hybrid"):
        res[f"loss_{lt}"] = d.loss_terms(out, x0, x_t, t, noise=noise, loss_type=lt, stop_gradient=lambda a: a)["loss"]
    res["alpha"], res["sigma"], res["log_snr"] = d.alpha(t, dtype=x0.dtype), d.sigma(t, dtype=x0.dtype), d.log_snr(t, dtype=x0.dtype)
    res["model_time"] = d.model_time(t)
    return res


def test_same_numbers_on_every_namespace(xp):
    rng = np.random.default_rng(7)
    for kind in ("eps", "v"):
        d = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 60), model_mean_type=kind, model_var_type="learned_range")
        inputs = _loss_inputs(d, rng, learned=True)
        inputs = (inputs[0], inputs[1], inputs[2], inputs[3])
        ref = _run_everything(d, load_namespace("numpy"), inputs)
        got = _run_everything(d, xp, inputs)
        for key in ref:
            g = got[key]
            assert type(g).__module__.split(".")[0] == type(to_xp(np.zeros(1), xp)).__module__.split(".")[0], key
            np.testing.assert_allclose(to_np(g), to_np(ref[key]), rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("x64", [True, False])
def test_under_jax_jit(x64):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(8)
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50), model_var_type="learned_range")
    x0, t, noise, out = _loss_inputs(d, rng, learned=True)
    with jax_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        args = tuple(jnp.asarray(a, dtype=dtype) for a in (x0, noise, out)) + (jnp.asarray(t),)

        def f(x0, noise, out, t):
            x_t = d.q_sample(x0, t, noise=noise)
            loss = d.loss_terms(out, x0, x_t, t, noise=noise, loss_type="hybrid", stop_gradient=jax.lax.stop_gradient)
            pmv = d.p_mean_variance(out, x_t, t)
            return loss["loss"], pmv.mean, d.prior_bpd(x0), d.model_time(t)

        eager = f(*args)
        jitted = jax.jit(f)(*args)
        for e, j in zip(eager, jitted):
            assert e.dtype == j.dtype
            np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-12 if x64 else 2e-5, atol=1e-6 if not x64 else 1e-14)
        assert jitted[1].dtype == dtype
        # gradient through the loss under jit
        g = jax.jit(jax.grad(lambda o: f(args[0], args[1], o, args[3])[0].sum()))(args[2])
        assert bool(jnp.all(jnp.isfinite(g)))


def test_dtype_and_device_follow_the_input():
    torch = pytest.importorskip("torch")
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.ones((2, 3), dtype=dtype)
        t = torch.tensor([0, 99])
        assert d.q_sample(x, t, noise=x).dtype == dtype
        assert d.p_mean_variance(x, x, t).mean.dtype == dtype
        assert d.prior_bpd(x).dtype == dtype
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        x = torch.ones((2, 3), device="cuda")
        assert d.q_sample(x, torch.tensor([0, 1], device="cuda"), noise=x).device == x.device


# --------------------------------------------------------------------------------- respacing


def test_respacing_keeps_marginals_and_maps_steps():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    for spacing in ("linspace", "leading", "trailing"):
        r = d.respace(25, spacing)
        np.testing.assert_allclose(r.alphas_cumprod, d.alphas_cumprod[r.timestep_map], rtol=1e-12)
        assert r.num_timesteps == 25 and r.original_num_timesteps == 1000
        np.testing.assert_array_equal(r.model_time(np.arange(25)), r.timestep_map)
    r = d.respace("ddim50")
    assert r.timestep_map[-1] == 980 and r.timestep_map[1] == 20
    assert d.respace(10, "trailing").timestep_map[-1] == 999
    # respacing twice composes the maps to original steps
    rr = d.respace(100, "linspace").respace(10, "linspace")
    np.testing.assert_allclose(rr.alphas_cumprod, d.alphas_cumprod[rr.timestep_map], rtol=1e-12)
    rescaled = GaussianDiffusion(betas=d.betas, rescale_timesteps=True).respace(4, "trailing")
    np.testing.assert_allclose(rescaled.model_time(np.arange(4)), np.array([249, 499, 749, 999]) * 1000 / 1000)


# --------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 99\].*100"):
        d.q_sample(x, np.array([0, 100]), noise=x)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 99\].*-1"):
        d.q_sample(x, np.array([-1, 0]), noise=x)
    with pytest.raises(TypeError, match="t must be an integer array.*float"):
        d.q_sample(x, np.array([0.0, 1.0]), noise=x)
    with pytest.raises(ValueError, match="t has 3 entries but the batch has 2"):
        d.q_sample(x, np.array([0, 1, 2]), noise=x)
    with pytest.raises(ValueError, match="x_start and noise must have the same shape"):
        d.q_sample(x, np.array([0, 1]), noise=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="noise is required"):
        d.q_sample(x, np.array([0, 1]), noise=None)
    with pytest.raises(TypeError, match="x_start must be a real floating-point array"):
        d.q_sample(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]), noise=x)
    with pytest.raises(ValueError, match="model_mean_type must be one of 'eps', 'x0', 'v'; got 'epsilon'"):
        GaussianDiffusion(betas=d.betas, model_mean_type="epsilon")
    with pytest.raises(ValueError, match="model_var_type must be one of"):
        GaussianDiffusion(betas=d.betas, model_var_type="fixed")
    with pytest.raises(ValueError, match="loss_type must be one of"):
        d.loss_terms(x, x, x, np.array([0, 1]), noise=x, loss_type="mse")
    with pytest.raises(ValueError, match="decoder must be one of"):
        d.vb_terms_bpd(x, x, x, np.array([0, 1]), decoder="bernoulli")
    with pytest.raises(ValueError, match="loss_type='hybrid' trains a learned variance"):
        d.loss_terms(x, x, x, np.array([0, 1]), noise=x, loss_type="hybrid")
    learned = GaussianDiffusion(betas=d.betas, model_var_type="learned_range")
    with pytest.raises(ValueError, match="model_output must have 2\\*C = 6 channels"):
        learned.p_mean_variance(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.array([0, 1]))
    for bad in (np.array([0.1, 1.5, 0.2]), np.array([0.1, np.nan, 0.2]), np.array([0.1, 0.0, 0.2]), np.array([1.0, 0.1, 0.2]), np.zeros((2, 2)) + 0.1):
        with pytest.raises(ValueError, match="betas"):
            GaussianDiffusion(betas=bad)
    with pytest.raises(ValueError, match="timestep_map"):
        GaussianDiffusion(betas=d.betas, timestep_map=np.arange(99))


def test_traced_steps_skip_value_checks_but_not_shape_checks():
    jax = pytest.importorskip("jax")
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    x = jax.numpy.zeros((2, 3))
    # under jit the range check would need the values: it is skipped, the shape check is not
    jax.jit(lambda t: d.q_sample(x, t, noise=x))(jax.numpy.asarray([0, 5]))
    with pytest.raises(ValueError, match="t has 3 entries"):
        jax.jit(lambda t: d.q_sample(x, t, noise=x))(jax.numpy.asarray([0, 5, 6]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 99\]"):
        d.q_sample(x, jax.numpy.asarray([0, 500]), noise=x)  # eager JAX arrays are checked


def test_more_bad_input_names_the_argument():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="noise is required"):
        d.loss_terms(x, x, x, np.array([0, 1]), noise=None)
    with pytest.raises(TypeError, match="model_log_variance must be"):
        d.vb_terms(x, x, np.array([0, 1]), model_mean=x, model_log_variance=None)
    with pytest.raises(ValueError, match="original_num_timesteps must be an integer >= 100"):
        GaussianDiffusion(betas=d.betas, original_num_timesteps=50)
    with pytest.raises(ValueError, match="original_num_timesteps"):
        GaussianDiffusion(betas=d.betas, original_num_timesteps=0)
