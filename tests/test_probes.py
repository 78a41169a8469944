"""Issue 9: bad input and silent wrong results found by probing the public API as a new user would.

Each test here failed on the code before its fix: a silent wrong value (NaN bits/dim, a string read
as True, alpha 0 in an integer dtype, a NaN uniform mapped to the last step, a (4, 2.7) shape
becoming (4, 2)), or an AttributeError / deep framework message instead of an error that names the
argument, the value received and what is allowed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from conftest import load_namespace, to_np

import diffcore
from diffcore import GaussianDiffusion, LossSecondMomentResampler, UniformSampler, VESDE, VPSDE, subVPSDE
from diffcore.likelihood import vlb_bpd
from diffcore.losses import discretized_gaussian_log_likelihood, normal_kl, standard_normal_logp
from diffcore.schedules import get_named_beta_schedule, respace_betas, respaced_timesteps, space_timesteps
from diffcore.score_matching import denoising_score_matching_loss, ncsn_loss, score_fn_from_model

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

T = 20
BETAS = get_named_beta_schedule("cosine", T)
RNG = np.random.default_rng(9)
X = np.clip(RNG.standard_normal((4, 3)), -1.0, 1.0)
NOISE = RNG.standard_normal((4, 3))
STEPS = np.array([0, 5, 10, 19])


def diffusion(**kw):
    return GaussianDiffusion(betas=BETAS, **kw)


def raises(exc, *fragments):
    """pytest.raises(exc) whose message contains every fragment (literally, in order)."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


def zero_model(x, t_in, *cond):
    return x * 0.0


# ------------------------------------------------------------------------- 1. vlb_bpd


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_vlb_nan_model_raises_naming_the_step(name):
    xp = load_namespace(name)
    x = xp.asarray(X)

    def nan_at_step_7(x_t, t_in):  # finite everywhere but at step 7
        bad = xp.reshape(t_in == 7, (-1, 1))
        return xp.where(bad, xp.full_like(x_t, math.nan), x_t * 0.0)

    with raises(FloatingPointError, "model output was non-finite", "step t=[7, 7, 7, 7]", "example(s) [0, 1, 2, 3]"):
        vlb_bpd(nan_at_step_7, diffusion(), x)
    with raises(FloatingPointError, "model output was non-finite"):
        vlb_bpd(lambda x_t, t_in: x_t * math.nan, diffusion(), x, stride=3)


@pytest.mark.parametrize("name, dtype", [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16")])
def test_vlb_in_half_precision_is_finite_and_close_to_float64(name, dtype):
    """float16: the decoder's 1e-12 floor is 0 (log -inf) and the KL terms overflow; the per-step terms
    (~1e-3 bits/dim) vanish in a float16 sum. Terms and sum are float32 now, the model still sees float16.

    The reference draws the same noise: NumPy draws in float64 and rounds; torch draws half
    precision in float32 and rounds (its float64 stream is another one), so torch's reference is
    the float32 run (its sums are float32 as well)."""
    xp = load_namespace(name)
    seen = []

    def model(x_t, t_in):  # a poor eps model: large KL terms, tiny decoder probabilities
        seen.append(x_t.dtype)
        return x_t * 3.0

    ref_dtype = xp.float32 if name == "torch" else xp.float64
    ref = to_np(vlb_bpd(model, diffusion(), xp.asarray(X, dtype=ref_dtype)).bpd)
    low = vlb_bpd(model, diffusion(), xp.asarray(X, dtype=getattr(xp, dtype))).bpd
    assert all(d == getattr(xp, dtype) for d in seen[len(seen) // 2:])
    low = to_np(low).astype(np.float64)
    assert np.all(np.isfinite(low))
    # bfloat16 rounding of x_t: 0.6-1.3 % off depending on the draws (before: inf in float16, 2.2 % in bfloat16)
    np.testing.assert_allclose(low, ref, rtol=0.015)


def test_discretized_decoder_is_float32_for_float16_input():
    out = discretized_gaussian_log_likelihood(
        np.float16([0.5]), means=np.float16([-0.9]), log_scales=np.float16([-5.0])
    )
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert float(out[0]) == pytest.approx(math.log(1e-12), rel=1e-2)


def test_vlb_discretized_refuses_data_outside_minus_one_one():
    with raises(ValueError, "x must lie in [-1, 1]", "decoder='discretized'", "from -50 to 50", "scale the data to [-1, 1]"):
        vlb_bpd(zero_model, diffusion(), np.linspace(-50.0, 50.0, 12).reshape(4, 3))
    with raises(ValueError, "x must lie in [-1, 1]", "nan"):
        vlb_bpd(zero_model, diffusion(), np.full((4, 3), np.nan))
    big = np.linspace(-5.0, 5.0, 12).reshape(4, 3)
    assert np.isfinite(vlb_bpd(zero_model, diffusion(), big, decoder="gaussian").bpd).all()  # real-valued data


def test_vlb_options_are_checked():
    with raises(TypeError, "clip_denoised must be a bool", "'yes'"):
        vlb_bpd(zero_model, diffusion(), X, clip_denoised="yes")
    with raises(TypeError, "model must be callable", "None"):
        vlb_bpd(None, diffusion(), X)
    with raises(TypeError, "stride must be an integer", "2.5"):
        vlb_bpd(zero_model, diffusion(), X, stride=2.5)


# ------------------------------------------------------------------------- 2. bool options


def test_bool_options_must_be_real_bools():
    with raises(TypeError, "rescale_timesteps must be a bool", "'False'"):
        diffusion(rescale_timesteps="False")
    with raises(TypeError, "clip_denoised must be a bool", "'no'"):
        diffusion().p_mean_variance(X, X, STEPS, clip_denoised="no")
    with raises(TypeError, "probability_flow must be a bool", "'no'"):
        VPSDE().reverse(lambda x, t: x, probability_flow="no")
    t = np.full(4, 0.5)
    for option in ("likelihood_weighting", "reduce_mean"):
        with raises(TypeError, f"{option} must be a bool", "'no'"):
            denoising_score_matching_loss(VPSDE(), X, NOISE, t, **{option: "no"})
    assert diffusion(rescale_timesteps=np.bool_(True)).rescale_timesteps is True


# ------------------------------------------------------------------------- 3. dtype of alpha / sigma


@pytest.mark.parametrize("process", ["diffusion", "VP", "subVP", "VE"])
def test_coefficients_refuse_non_floating_dtypes(process):
    proc = {"diffusion": diffusion(), "VP": VPSDE(), "subVP": subVPSDE(), "VE": VESDE()}[process]
    t = STEPS if process == "diffusion" else np.array([0.1, 0.5])
    for method in ("alpha", "sigma", "log_snr"):
        for dtype in (np.int64, np.bool_):
            with raises(TypeError, "dtype must be a real floating dtype", "int" if dtype is np.int64 else "bool"):
                getattr(proc, method)(t, dtype=dtype)
    with raises(TypeError, "dtype must be a real floating dtype of", "torch.float32"):
        proc.alpha(t, dtype=torch.float32)  # another framework's dtype
    assert proc.alpha(t, dtype=np.float32).dtype == np.float32


# ------------------------------------------------------------------------- 4. timestep samplers


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_uniform_sampler_refuses_nan_draws(name):
    xp = load_namespace(name)
    for sampler in (UniformSampler(10), LossSecondMomentResampler(10)):
        with raises(ValueError, "u must lie in [0, 1)", "nan"):
            sampler.sample(xp.asarray([0.5, math.nan]))
    if name == "jax":  # under jit the values are not read: no error, no sync
        import jax

        steps, _ = jax.jit(UniformSampler(10).sample)(xp.asarray([0.05, 0.95]))
        assert to_np(steps).tolist() == [0, 9]


def test_timestep_sampler_bad_arguments_are_named():
    s = LossSecondMomentResampler(4, history_per_term=1)
    with raises(TypeError, "u must be a 1-D floating array", "list"):
        s.sample([0.1, 0.2])
    with raises(TypeError, "u must be a 1-D floating array", "NoneType"):
        s.sample(None)
    with raises(TypeError, "steps must be integer steps", "float64"):
        s.update_with_losses(np.array([0.5, 1.5]), np.array([1.0, 2.0]))
    with raises(TypeError, "losses must be real numbers", "<U1"):
        s.update_with_losses(np.array([1]), ["a"])
    with raises(ValueError, "state is missing ['loss_history', 'loss_counts']"):
        s.load_state_dict({})
    with raises(TypeError, "uniform_prob must be a real number", "'x'"):
        s.load_state_dict({**s.state_dict(), "uniform_prob": "x"})


# ------------------------------------------------------------------------- 5. ncsn_loss


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_ncsn_loss_refuses_non_positive_sigma(bad):
    sigma = np.array([1.0, 0.5, bad, 0.1])
    with raises(ValueError, "sigma", "must be finite and > 0", "singular"):
        ncsn_loss(X, NOISE, sigma)


def test_ncsn_and_dsm_bad_arguments_are_named():
    sigma = np.ones(4)
    with raises(TypeError, "noise is required", "None"):
        ncsn_loss(X, None, sigma)
    with raises(TypeError, "sigma is a torch array but score is a numpy array"):
        ncsn_loss(X, NOISE, torch.ones(4, dtype=torch.float64))
    with raises(TypeError, "anneal_power must be a real number", "'2'"):
        ncsn_loss(X, NOISE, sigma, anneal_power="2")
    t = np.full(4, 0.5)
    with raises(TypeError, "noise is required"):
        denoising_score_matching_loss(VPSDE(), X, None, t)
    with raises(TypeError, "noise is a torch array but score is a numpy array"):
        denoising_score_matching_loss(VPSDE(), X, torch.tensor(NOISE), t)
    with raises(TypeError, "sde must be a continuous-time SDE", "GaussianDiffusion", "training_losses"):
        denoising_score_matching_loss(diffusion(), X, NOISE, t)


# ------------------------------------------------------------------------- 6. score at sigma = 0


@pytest.mark.parametrize("sde", [VPSDE(), subVPSDE()], ids=["VP", "subVP"])
def test_score_fn_refuses_t_where_sigma_is_zero(sde):
    score_fn = score_fn_from_model(sde, zero_model)
    with raises(ValueError, "t must lie in (0, 1]", "singular"):
        score_fn(X, np.array([0.5, 0.0, 0.5, 0.5]))
    with raises(ValueError, "t must lie in (0, 1]", "singular"):
        score_fn(X, 0)
    assert np.isfinite(score_fn(X, 0.5)).all()  # a Python float is one time for the batch
    assert np.isfinite(score_fn_from_model(VESDE(), zero_model)(X, np.zeros(4))).all()  # sigma(0) = sigma_min > 0


def test_score_fn_bad_arguments_are_named():
    with raises(ValueError, "prediction must be one of", "'noise'"):
        score_fn_from_model(VPSDE(), zero_model, "noise")  # at construction, not at the first call
    with raises(TypeError, "model must be callable", "None"):
        score_fn_from_model(VPSDE(), None)
    with raises(TypeError, "model must return an array like x", "NoneType"):
        score_fn_from_model(VPSDE(), lambda x, t: None)(X, np.full(4, 0.5))


# ------------------------------------------------------------------------- 7. shapes


def test_check_shape_refuses_non_integers():
    from diffcore.checks import check_shape

    with raises(TypeError, "shape must be a tuple of non-negative integers", "shape[1] is 2.7", "never rounded"):
        check_shape((4, 2.7))
    with raises(TypeError, "noise_shape", "noise_shape[0] is True"):
        check_shape((True, 2), "noise_shape")
    with raises(TypeError, "shape[1] is '2'"):
        check_shape((4, "2"))
    with raises(TypeError, "shape must be a tuple of non-negative integers", "'42'"):
        check_shape("42")
    with raises(TypeError, "shape must be a tuple", "4 of type int"):
        check_shape(4)
    with raises(ValueError, "shape[0] is -1"):
        check_shape((-1, 2))
    assert check_shape((4, 2.0)) == (4, 2)
    assert check_shape([np.int64(3), 1]) == (3, 1)
    assert check_shape(torch.Size([2, 5])) == (2, 5)
    assert check_shape(()) == ()


# ------------------------------------------------------------------------- 8. one module of checks


def test_checks_module_helpers():
    from diffcore import checks

    assert checks.check_int(np.int32(3), "n", 1) == 3
    with raises(TypeError, "n must be an integer", "3.0"):
        checks.check_int(3.0, "n")
    with raises(TypeError, "n must be an integer", "True"):
        checks.check_int(True, "n")
    with raises(ValueError, "n must be an integer >= 1; got 0"):
        checks.check_int(0, "n", minimum=1)
    with raises(ValueError, "n must be an integer in [1, 5]; got 6"):
        checks.check_int(6, "n", 1, 5)
    with raises(ValueError, "mode must be one of 'a', 'b'; got 'c'"):
        checks.check_choice("c", ("a", "b"), "mode")
    with raises(TypeError, "mode must be a str, one of 'a', 'b'", "None"):
        checks.check_choice(None, ("a", "b"), "mode")
    assert checks.check_choice(None, (None, "a"), "corrector") is None
    with raises(TypeError, "flag must be a bool", "'False'"):
        checks.check_bool("False", "flag")
    with raises(TypeError, "rtol must be a positive number; got '1e-5'"):
        checks.check_positive("1e-5", "rtol")
    for bad in (0, -1.0, math.nan, math.inf):
        with raises(ValueError, "rtol must be a positive number"):
            checks.check_positive(bad, "rtol")
    assert checks.check_nonnegative(0, "churn") == 0.0
    with raises(ValueError, "churn must be a non-negative number; got -1"):
        checks.check_nonnegative(-1, "churn")
    with raises(ValueError, "prediction must be one of 'eps', 'x0', 'v', 'score', 'scaled_score', 'u'; got 'epsilon'"):
        checks.check_prediction("epsilon")
    assert diffcore.parametrization.check_prediction is checks.check_prediction  # one definition
    xp = load_namespace("numpy")
    assert checks.check_dtype_floating(xp.float32, xp) == xp.float32
    with raises(TypeError, "dtype must be a real floating dtype", "(a str)"):
        checks.check_dtype_floating("float32", xp)


def test_my_modules_use_the_shared_messages():
    """The schedules, SDEs and timestep samplers report integers and choices like the samplers do."""
    with raises(ValueError, "num_timesteps must be an integer >= 1; got 0"):
        UniformSampler(0)
    with raises(ValueError, "N must be an integer >= 1; got 0"):
        VPSDE(N=0)
    with raises(ValueError, "spacing must be one of 'linspace', 'leading', 'trailing'; got 'uniform'"):
        respaced_timesteps(100, 10, "uniform")
    with raises(TypeError, "model_mean_type must be a str", "None"):
        diffusion(model_mean_type=None)


# ------------------------------------------------------------------------- 9. discrete diffusion probes


def test_q_sample_refuses_mixed_frameworks_and_dtypes():
    d = diffusion()
    tx, tt = torch.tensor(X), torch.tensor(STEPS)
    with raises(TypeError, "noise is a numpy array but x_start is a torch array"):
        d.q_sample(tx, tt, noise=NOISE)  # used to return a torch tensor silently
    with raises(TypeError, "noise is a torch array but x_start is a numpy array"):
        d.q_sample(X, STEPS, noise=torch.tensor(NOISE))
    with raises(TypeError, "t is a numpy array but x_start is a torch array"):
        d.q_sample(tx, STEPS, noise=torch.tensor(NOISE))
    with raises(TypeError, "noise must have the dtype of x_start (float16); got float64"):
        d.q_sample(X.astype(np.float16), STEPS, noise=NOISE)  # used to promote to float64


def test_posterior_and_model_output_arguments_are_named():
    d = diffusion()
    for bad in (None, X.tolist()):
        with raises(TypeError, "x_t must be an array"):
            d.q_posterior_mean_variance(X, bad, STEPS)
    with raises(TypeError, "x_t must be a real floating-point array", "int64"):
        d.q_posterior_mean_variance(X, X.astype(np.int64), STEPS)
    with raises(TypeError, "model_output is None"):
        d.p_mean_variance(None, X, STEPS)
    with raises(TypeError, "model_output must be an array", "list"):
        d.p_mean_variance(X.tolist(), X, STEPS)
    with raises(TypeError, "model_output is a torch array but x_t is a numpy array"):
        d.p_mean_variance(torch.tensor(X), X, STEPS)
    with raises(FloatingPointError, "model_output must be finite", "NaN or infinity"):
        d.p_mean_variance(X * np.nan, X, STEPS)
    with raises(TypeError, "denoised_fn must be callable", "3"):
        d.p_mean_variance(X, X, STEPS, denoised_fn=3)


def test_training_losses_arguments_are_named():
    d = diffusion()
    with raises(TypeError, "model must be callable", "3"):
        d.training_losses(3, X, STEPS, noise=NOISE)
    with raises(TypeError, "model_output is None"):
        d.training_losses(lambda x, t: None, X, STEPS, noise=NOISE)
    with raises(TypeError, "model_output is a numpy array but x_t is a torch array"):
        d.training_losses(lambda x, t: x.numpy(), torch.tensor(X), torch.tensor(STEPS), noise=torch.tensor(NOISE))
    with raises(TypeError, "lambda_vlb must be a non-negative number; got 'a'"):
        d.training_losses(zero_model, X, STEPS, noise=NOISE, lambda_vlb="a")
    with raises(FloatingPointError, "model_output must be finite"):
        d.training_losses(lambda x, t: x * np.nan, X, STEPS, noise=NOISE)


def test_respace_with_explicit_timesteps():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    kept = [0, 10, 35, 99]
    r = d.respace(timesteps=kept)
    assert r.timestep_map.tolist() == kept
    ref_betas, _ = respace_betas(d.betas, np.array(kept))
    np.testing.assert_array_equal(r.betas, ref_betas)
    np.testing.assert_allclose(r.alphas_cumprod, d.alphas_cumprod[kept], rtol=1e-12)
    # the same chain as the existing respacings when given their steps
    for steps in (10, "ddim25", "10,15"):
        by_count = d.respace(steps)
        again = d.respace(timesteps=by_count.timestep_map.tolist())
        np.testing.assert_array_equal(again.betas, by_count.betas)
        np.testing.assert_array_equal(again.timestep_map, by_count.timestep_map)
    # a list as steps keeps improved-diffusion's meaning: counts per section
    np.testing.assert_array_equal(d.respace([10, 15]).timestep_map, d.respace("10,15").timestep_map)
    np.testing.assert_array_equal(space_timesteps(100, timesteps=np.array(kept)), kept)
    np.testing.assert_array_equal(space_timesteps(100, [10, 15]), space_timesteps(100, "10,15"))


@pytest.mark.parametrize(
    "timesteps, exc, fragments",
    [
        ([0, 10, 10], ValueError, ("timesteps must be strictly increasing", "timesteps[2] = 10")),
        ([10, 5], ValueError, ("timesteps must be strictly increasing",)),
        ([0, 100], ValueError, ("timesteps must lie in [0, 99]", "timesteps[1] = 100")),
        ([-1, 5], ValueError, ("timesteps must lie in [0, 99]", "timesteps[0] = -1")),
        ([0.0, 5.5], TypeError, ("timesteps must be a 1-D array of ints", "float64")),
        ([True, False], TypeError, ("timesteps must be a 1-D array of ints", "bool")),
        (5, TypeError, ("timesteps must be a 1-D array of ints", "5")),
        ("0,5", TypeError, ("timesteps must be a 1-D array of ints", "'0,5'")),
    ],
)
def test_respace_timesteps_are_validated(timesteps, exc, fragments):
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    with raises(exc, *fragments):
        d.respace(timesteps=timesteps)
    with raises(exc, *fragments):
        space_timesteps(100, timesteps=timesteps)


def test_respace_refuses_steps_and_timesteps_together():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    with raises(TypeError, "either steps", "not both"):
        d.respace(10, timesteps=[0, 5])
    with raises(TypeError, "respace needs steps", "timesteps=[...]"):
        d.respace()
    with raises(TypeError, "either section_counts", "not both"):
        space_timesteps(100, "ddim10", timesteps=[0, 5])


# ------------------------------------------------------------------------- 9. SDE and loss probes


def test_sde_marginal_prob_arguments_are_named():
    sde = VPSDE()
    with raises(TypeError, "t must be a real time in [0, 1]", "True"):
        sde.marginal_prob(X, True)  # used to be read as t = 1.0
    with raises(TypeError, "t is a numpy array but x is a torch array"):
        sde.marginal_prob(torch.tensor(X), np.full(4, 0.5))
    with raises(TypeError, "t is a torch array but x is a numpy array"):
        sde.marginal_prob(X, torch.full((4,), 0.5, dtype=torch.float64))
    with raises(ValueError, "x must have a batch axis"):
        sde.marginal_prob(np.float64(1.0), np.full(4, 0.5))


def test_losses_arguments_are_named():
    with raises(TypeError, "logvar1 must be an array (or a Python number); got NoneType"):
        normal_kl(X, None, X, X)
    with raises(TypeError, "mean1 must be an array (or a Python number); got list"):
        normal_kl([0.0], X, X, X)
    with raises(TypeError, "logvar1 is a numpy array but mean1 is a torch array"):
        normal_kl(torch.tensor(X), X, X, X)
    with raises(TypeError, "z must be an array (or a Python number); got list"):
        standard_normal_logp([1.0])
    assert np.allclose(normal_kl(X, 0.0, 0.0, 0.0), 0.5 * (X**2))  # Python numbers beside an array still work


def test_vlb_backend_must_match_the_data():
    with raises(TypeError, "x is a numpy array but the backend is 'torch'", "backend='numpy'"):
        vlb_bpd(zero_model, diffusion(), X, backend="torch")  # a deep torch.randn TypeError before


def test_inverse_time_maps_and_helpers_name_their_arguments():
    d = diffusion()
    with raises(ValueError, "t_in must be network times of this chain", "from 100 to 100"):
        d.time_from_model_time(np.array([100]))  # was step 20 of a 20-step chain
    with raises(ValueError, "t_in must be network times of this chain", "1.5"):
        d.time_from_model_time(np.array([1.5]))  # was truncated to step 1
    assert d.respace(timesteps=[0, 7, 19]).time_from_model_time(np.array([7, 19])).tolist() == [1, 2]
    with raises(TypeError, "t_in must be an array", "list"):
        d.time_from_model_time([1, 2])
    with raises(ValueError, "t_in must be noise levels sigma > 0", "from 0 to 0"):
        VESDE().time_from_model_time(np.array([0.0]))  # was -inf
    with raises(TypeError, "t_in must be an array", "list"):
        VPSDE().time_from_model_time([0.5])
    with raises(ValueError, "x_start must have a batch axis"):
        d.prior_bpd(np.float64(1.0))  # IndexError before
    with raises(TypeError, "noise must be callable noise(i)"):
        d.calc_bpd_loop(zero_model, X, noise=np.zeros_like(X))
    with raises(ValueError, "timesteps must keep at least 2 steps"):
        d.respace(timesteps=[5])
    with raises(TypeError, "forward must be an SDE", "NoneType"):
        diffcore.sde.ReverseSDE(None, lambda x, t: x)  # AttributeError 'N' before


@pytest.mark.parametrize("name, dtype", [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16")])
def test_uniform_sampler_compares_half_precision_draws_in_float32(name, dtype):
    """A half-precision CDF rounds its edges k/T: float16 rounds 0.3 down to 0.2998, so the draw
    0.2998 (< 0.3, step 2) went to step 3. The edges are the draws most at risk: each goes to its own step."""
    xp = load_namespace(name)
    exact = np.arange(1, 10) / 10
    edges = xp.astype(xp.asarray(exact.astype(np.float32)), getattr(xp, dtype))
    e = to_np(edges).astype(np.float64)
    assert (e < exact).any()  # some edges round down in this dtype
    expected = [k - 1 if e[k - 1] < exact[k - 1] else k for k in range(1, 10)]
    steps, weights = UniformSampler(10).sample(edges)
    assert to_np(steps).tolist() == expected
    assert weights.dtype == edges.dtype


def test_betas_for_alpha_bar_names_the_time_where_alpha_bar_fails():
    from diffcore.schedules import betas_for_alpha_bar

    with raises(ValueError, "alpha_bar raised ZeroDivisionError at t = 0.5", "both ends included"):
        betas_for_alpha_bar(10, lambda t: 1.0 / (t - 0.5))  # a bare ZeroDivisionError before
