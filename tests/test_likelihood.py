"""Likelihoods: the probability-flow ODE NLL and the discrete VLB, against exact values.

- ODE: on a Gaussian mixture with its exact score every quantity is known: -log p_eps(x) in closed
  form (``marginal_log_prob`` at t = eps), the exact p_T for the far end, and the exact score
  divergence (``marginal_score_divergence``) for NumPy, which has no autodiff. The exact trace
  (torch, JAX) and the analytic divergence (NumPy) must reach the closed form within 1e-3 bits/dim
  (measured: ~1e-5); Hutchinson must be unbiased within 4 standard errors, and biased probes (the
  mutants) must fall outside. Torch and JAX replay NumPy's numbers, and with the same probes each
  other's. Results do not depend on the batch.
- Dequantisation of a very narrow density: the expected bits/dim is >= 0 (and equals the exact
  expectation), single draws dip below 0, and without dequantisation the "bits/dim" is negative.
- VLB: ``vlb_bpd`` with the exact posterior-mean model on Gaussian data, averaged over many noise
  draws, equals the closed-form E_q[VLB] of tests/test_vlb.py (>= the exact NLL; with the true
  posterior variance, the exact NLL plus the prior mismatch); the strided estimate has the same mean.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pytest

import diffcore
from diffcore import GaussianDiffusion, VESDE, VPSDE, subVPSDE
from diffcore.analytic import GaussianMixture
from diffcore.backends import StepBudgetExceeded
from diffcore.likelihood import (
    DEQUANT_OFFSET_BITS,
    bits_per_dim,
    dequantize,
    nll,
    ode_likelihood,
    vlb_bpd,
)

from conftest import load_namespace, to_np
from test_vlb import D as VLB_D
from test_vlb import exact_nll as chain_nll
from test_vlb import expected_vlb, make_diffusion, model_log_var, optimal_gap, q_reverse, tables

LN2 = math.log(2.0)
EPS = 1e-5
D, B = 8, 6
NP = load_namespace("numpy")

# ----------------------------------------------------------------------------- the analytic case
# One mixture, one model and one p_T callable per process, built once: JAX reuses a compiled solve
# only for the same objects (and shapes).
_rng = np.random.default_rng(1)
MIX = GaussianMixture([0.2, 0.3, 0.5], _rng.uniform(-1.0, 1.0, (3, D)), _rng.uniform(0.2, 0.6, (3, D)))
PROCESSES = {"VP": VPSDE(), "subVP": subVPSDE(), "VE": VESDE()}
MODELS = {k: MIX.as_model(p, "score") for k, p in PROCESSES.items()}


def _prior(name):
    sde = PROCESSES[name]
    return lambda z: MIX.marginal_log_prob(z, 1.0, sde)


PRIORS = {k: _prior(k) for k in PROCESSES}


def _points() -> np.ndarray:
    """B points: mixture samples, a component mean, one 3 std off a mean, the origin."""
    rng = np.random.default_rng(2)
    samples = np.asarray(MIX.sample(rng.standard_normal((3, D)), rng.uniform(0.0, 1.0, 3)))
    return np.concatenate(
        [samples, MIX.means[1:2], MIX.means[2:3] + 3.0 * MIX.stds[2:3] * np.sign(rng.standard_normal((1, D))), np.zeros((1, D))]
    )


X = _points()


def exact_nll(x: np.ndarray, name: str) -> np.ndarray:
    return -np.asarray(MIX.marginal_log_prob(x, np.asarray(EPS), PROCESSES[name]))


def analytic_divergence(name: str, scale: float = 1.0):
    sde = PROCESSES[name]
    return lambda z, t: scale * MIX.marginal_score_divergence(z, t, sde)


def run_ode(xp_name: str, x: np.ndarray, name: str = "VP", **options):
    """ode_likelihood on backend ``xp_name`` with the exact model and p_T; results as NumPy."""
    bk = diffcore.backend(xp_name)
    if xp_name == "numpy":
        options.setdefault("divergence", analytic_divergence(name))
    if "probes" in options:
        options["probes"] = bk.xp.asarray(options["probes"])
    r = ode_likelihood(MODELS[name], PROCESSES[name], bk.xp.asarray(x), backend=bk, prior_logp=PRIORS[name], **options)
    return type(r)(*(to_np(v) if v is not None and not isinstance(v, int) else v for v in r))


def bpd_error(nll: np.ndarray, exact: np.ndarray, dims: int = D) -> np.ndarray:
    return np.abs(nll - exact) / (dims * LN2)


# ---------------------------------------------------------------------- exact divergence


@pytest.mark.parametrize("name", ["VP", "subVP", "VE"])
def test_analytic_divergence_reaches_the_exact_nll(name):
    """NumPy with the exact score divergence: -log p_eps(x) within 1e-3 bits/dim (measured <= 1.5e-4, VE);
    a 1% error in the divergence (the mutant) is caught by that tolerance."""
    exact = exact_nll(X, name)
    r = run_ode("numpy", X, name)
    err = bpd_error(r.nll, exact)
    assert np.all(err < 1e-3), err
    np.testing.assert_allclose(r.bpd, bits_per_dim(r.nll, D), rtol=1e-12)
    np.testing.assert_allclose(r.nll, -(r.prior_logp + r.delta_logp), rtol=1e-12)
    assert r.nfe.shape == (B,) and np.all(r.nfe > 10)
    mutant = run_ode("numpy", X, name, divergence=analytic_divergence(name, scale=1.01))
    assert np.all(bpd_error(mutant.nll, exact) > 1e-3)


@pytest.mark.parametrize("xp_name", ["torch", "jax"])
def test_exact_trace_matches_numpy_and_the_exact_nll(xp_name):
    """divergence='exact' (autodiff) on torch / JAX equals NumPy's analytic-divergence solve to
    round-off (same ODE, same steps) and -log p_eps within 1e-3 bits/dim."""
    pytest.importorskip(xp_name)
    ref = run_ode("numpy", X)
    r = run_ode(xp_name, X, divergence="exact")
    assert np.all(bpd_error(r.nll, exact_nll(X, "VP")) < 1e-3)
    np.testing.assert_allclose(r.nll, ref.nll, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(r.nfe, ref.nfe)


def test_torch_and_jax_agree_with_the_same_probes():
    """NumPy-made probes (K = 2) into torch and JAX: the same NLL (the same solve, to round-off)."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    probes = np.random.default_rng(3).choice([-1.0, 1.0], (2, B, D))
    a = run_ode("torch", X, probes=probes)
    b = run_ode("jax", X, probes=probes)
    np.testing.assert_allclose(a.nll, b.nll, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(a.nfe, b.nfe)
    # and the probes matter: other probes give another estimate
    c = run_ode("torch", X, probes=-probes[:, ::-1])
    assert np.max(np.abs(c.nll - a.nll)) > 1e-3


def test_jax_float32_with_x64_off():
    """The path JAX users run (x64 off, float32): the same solve as torch's float64 one, to float32
    round-off, with float32 results."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from conftest import jax_x64

    probes = np.random.default_rng(3).choice([-1.0, 1.0], (2, B, D))
    ref = run_ode("torch", X, probes=probes)
    with jax_x64(False):
        import jax.numpy as jnp

        r = ode_likelihood(
            MODELS["VP"], PROCESSES["VP"], jnp.asarray(X, dtype=jnp.float32), backend="jax",
            probes=jnp.asarray(probes, dtype=jnp.float32), prior_logp=PRIORS["VP"],
        )
        assert r.nll.dtype == jnp.float32 and r.bpd.dtype == jnp.float32
        np.testing.assert_allclose(to_np(r.nll), ref.nll, rtol=0, atol=1e-3)


# --------------------------------------------------------------------------- Hutchinson


N_MC = 150  # independent estimates per point (rows with their own sample_ids, hence probes)
X_MC = X[[0, 4]]


def _estimates(**options) -> np.ndarray:
    """(2, N_MC) Hutchinson NLL estimates on torch for the two points of X_MC."""
    rows = np.repeat(X_MC, N_MC, axis=0)
    return run_ode("torch", rows, **options).nll.reshape(2, N_MC)


def _z_scores(est: np.ndarray) -> np.ndarray:
    se = est.std(axis=1, ddof=1) / math.sqrt(est.shape[1])
    return (est.mean(axis=1) - exact_nll(X_MC, "VP")) / se


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """The mean of independent Hutchinson estimates is the exact NLL within 4 standard errors."""
    pytest.importorskip("torch")
    z = _z_scores(_estimates(probe=probe))
    assert np.all(np.abs(z) < 4.0), z


def test_more_probes_reduce_the_variance():
    """K probes per solve: still unbiased, variance ~1/K of one probe's."""
    pytest.importorskip("torch")
    one = _estimates()
    four = _estimates(num_probes=4, seed=1)
    assert np.all(np.abs(_z_scores(four)) < 4.0)
    ratio = four.var(axis=1, ddof=1) / one.var(axis=1, ddof=1)
    assert np.all((0.1 < ratio) & (ratio < 0.5)), ratio


@pytest.mark.parametrize("mutant", ["biased_coin", "variance_1.3"])
def test_biased_probes_fall_outside(mutant):
    """Mutants: probes without identity covariance (signs from a coin with P(+1) = 0.85, so
    E[v_i v_j] = 0.49 off the diagonal; Rademacher scaled to variance 1.3) give a biased estimate,
    > 4 SE from the exact NLL."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n = 2 * N_MC
    if mutant == "biased_coin":
        probes = np.where(rng.uniform(size=(1, n, D)) < 0.85, 1.0, -1.0)
    else:
        probes = math.sqrt(1.3) * rng.choice([-1.0, 1.0], (1, n, D))
    z = _z_scores(_estimates(probes=probes))
    assert np.all(np.abs(z) > 4.0), z


# --------------------------------------------------------------------------- batch independence


def test_results_do_not_depend_on_the_batch():
    """Each example is its own solve: a sub-batch (with its sample_ids) reproduces the full batch's
    values, for the analytic divergence (NumPy) and for drawn Hutchinson probes (torch)."""
    full = run_ode("numpy", X)
    for i in range(B):
        alone = run_ode("numpy", X[i : i + 1])
        np.testing.assert_allclose(alone.nll, full.nll[i : i + 1], rtol=1e-12, atol=1e-12)
        assert alone.nfe[0] == full.nfe[i]
    pytest.importorskip("torch")
    import torch

    full = run_ode("torch", X, num_probes=2, seed=7)
    sub = [4, 1, 3]
    part = run_ode("torch", X[sub], num_probes=2, seed=7, sample_ids=torch.tensor(sub))
    np.testing.assert_allclose(part.nll, full.nll[sub], rtol=1e-12, atol=1e-12)
    # without sample_ids the probes follow the batch position: another estimate
    moved = run_ode("torch", X[sub], num_probes=2, seed=7)
    assert np.max(np.abs(moved.nll - full.nll[sub])) > 1e-6


# --------------------------------------------------------------------------- dequantisation

DQ_D, DQ_N, DQ_STD = 16, 64, 2e-3
_k = np.random.default_rng(6).integers(0, 255, (2, DQ_D))
# components centred on 8-bit bins ([k/128 - 1, (k+1)/128 - 1) after dequantisation), std far below the bin width 2/256
NARROW = GaussianMixture([0.5, 0.5], (_k + 0.5) / 128.0 - 1.0, [DQ_STD, DQ_STD])
NARROW_MODEL = NARROW.as_model(PROCESSES["VP"], "score")
X_8BIT = np.repeat(_k[:1] / 127.5 - 1.0, DQ_N, axis=0)  # pixel / 127.5 - 1


def _narrow(x, **options):
    sde = PROCESSES["VP"]
    return ode_likelihood(
        NARROW_MODEL, sde, x, backend="numpy",
        divergence=lambda z, t: NARROW.marginal_score_divergence(z, t, sde),
        prior_logp=lambda z: NARROW.marginal_log_prob(z, 1.0, sde), **options,
    )


def test_dequantized_bits_per_dim_is_nonnegative_in_expectation():
    """A density much narrower than a bin: E_u[bits/dim] >= 0 (and equals the exact expectation of
    -log2 p_eps over the dequantisation noise, + 7); single draws dip below 0; the continuous
    "bits/dim" at the bin centres without dequantisation (the known defect) is negative."""
    r = _narrow(X_8BIT, dequantize_8bit=True)
    bpd = r.bpd
    mean, se = bpd.mean(), bpd.std(ddof=1) / math.sqrt(DQ_N)
    assert mean - 4 * se > 0.0, (mean, se)
    assert bpd.min() < 0.0  # a single draw can dip below 0 for so narrow a density
    # the exact expectation over u, by Monte Carlo on the closed-form density
    rng = np.random.default_rng(8)
    u = rng.uniform(0.0, 1.0, (20000, DQ_D))
    y = dequantize(np.repeat(X_8BIT[:1], u.shape[0], axis=0), u)
    exact = -np.asarray(NARROW.marginal_log_prob(y, np.asarray(EPS), PROCESSES["VP"])) / (DQ_D * LN2) + DEQUANT_OFFSET_BITS
    se_both = math.hypot(se, exact.std(ddof=1) / math.sqrt(exact.shape[0]))
    assert abs(mean - exact.mean()) < 4 * se_both, (mean, exact.mean(), se_both)
    # the mutant: no dequantisation noise (the bin centre), the +7 offset kept
    centre = dequantize(X_8BIT[:4], np.full((4, DQ_D), 0.5))
    assert np.all(_narrow(centre).bpd + DEQUANT_OFFSET_BITS < -0.3)


def test_dequantisation_draws_are_averaged():
    """num_dequant draws: the same mean, the per-example variance ~1/n; NFE add up."""
    one = _narrow(X_8BIT, dequantize_8bit=True)
    four = _narrow(X_8BIT, dequantize_8bit=True, num_dequant=4)
    ratio = four.bpd.var(ddof=1) / one.bpd.var(ddof=1)
    assert 0.1 < ratio < 0.5, ratio
    (m1, se1), (m4, se4) = _mean_se(one.bpd), _mean_se(four.bpd)
    assert abs(m4 - m1) < 4 * math.hypot(se1, se4), (m1, m4)
    two = _narrow(X_8BIT[:8], dequantize_8bit=True, num_dequant=2)
    assert np.all(two.nfe > one.nfe[:8])
    assert not np.allclose(two.bpd, one.bpd[:8])


# ------------------------------------------------------------------------------------- VLB

VLB_T, VLB_N = 50, 400


def _gaussian_case(seed: int = 11):
    rng = np.random.default_rng(seed)
    m = rng.uniform(-1.0, 1.0, VLB_D)
    s = rng.uniform(0.3, 1.0, VLB_D)
    x0 = (m + s * np.array([1.5, -0.5, 2.0]))[None]
    return m, s, x0


class _WithVariance:
    """The exact eps model plus learned_range channels v(t) from a table (T, D)."""

    def __init__(self, model, diffusion, v):
        self.model, self.diffusion, self.v = model, diffusion, v

    def __call__(self, x, t_in, cond=None):
        t = self.diffusion.time_from_model_time(t_in)
        v = NP.take(NP.asarray(self.v), t, axis=0)
        return NP.concat([self.model(x, t_in), v], axis=1)


class VlbCase(NamedTuple):
    diff: GaussianDiffusion
    model: Any
    x0: np.ndarray  # (1, D)
    A: np.ndarray  # the model's reverse mean A_t x_t + B_t (T, D): the exact posterior mean
    B: np.ndarray
    log_V: np.ndarray  # the model's log-variance (T, D)
    closed: float  # E_q[VLB] in nats (test_vlb's closed form)
    nll: float  # the model's exact -log p_theta(x0) in nats
    gap: float  # the optimal model's prior mismatch KL(q(x_T | x_0) || p_theta(x_T | x_0))
    terms: np.ndarray  # E_q[L_t] per step (L_0 first), nats
    prior: float  # L_T in nats


def _vlb_case(var_type: str, true_variance: bool = False) -> VlbCase:
    m, s, x0 = _gaussian_case()
    diff = make_diffusion("linear", VLB_T, "learned_range" if true_variance else var_type)
    model = GaussianMixture([1.0], m[None], s[None]).as_model(diff, "eps")
    a, b, c = q_reverse(diff, m, s)
    if true_variance:  # learned_range output v with log V = log c exactly
        lo = np.log(np.append(diff.posterior_variance[1], diff.posterior_variance[1:]))[:, None]
        hi = np.log(diff.betas)[:, None]
        v = 2.0 * (np.log(c) - lo) / (hi - lo) - 1.0
        model = _WithVariance(model, diff, v)
        log_V = model_log_var(NP, diff, "learned_range", v)
        np.testing.assert_allclose(log_V, np.log(c), rtol=1e-10, atol=1e-10)
    elif var_type == "learned_range":
        v = np.random.default_rng(12).uniform(-1.0, 1.0, (VLB_T, VLB_D))
        model = _WithVariance(model, diff, v)
        log_V = model_log_var(NP, diff, var_type, v)
    else:
        log_V = model_log_var(NP, diff, var_type, np.zeros((VLB_T, VLB_D)))
    closed = expected_vlb(NP, diff, x0, a, b, log_V)[0]
    terms = _expected_terms(diff, x0, a, b, log_V)
    prior = float(to_np(diff.prior_bpd(x0))[0]) * VLB_D * LN2
    assert abs(terms.sum() + prior - closed) < 1e-9 * (1 + abs(closed))
    nll = chain_nll(x0, a, b, np.exp(log_V))[0]
    return VlbCase(diff, model, x0, a, b, log_V, closed, nll, optimal_gap(diff, m, s, x0)[0], terms, prior)


def _expected_terms(diff, x0, A, B_, log_V) -> np.ndarray:
    """E_q[L_t] in nats for each step t (L_0 first): test_vlb's closed form, term by term."""
    _, abar, _, _, coef2 = tables(diff)
    xt_mean = np.sqrt(abar) * x0
    bits = diff.vb_terms(
        np.repeat(x0, VLB_T, axis=0), xt_mean, np.arange(VLB_T),
        model_mean=A * xt_mean + B_, model_log_variance=log_V, decoder="gaussian",
    )
    return to_np(bits) * VLB_D * LN2 + 0.5 * np.sum((coef2 - A) ** 2 * (1.0 - abar) / np.exp(log_V), axis=-1)


def _vlb_rows(diff, model, x0, n=VLB_N, xp_name="numpy", **options) -> np.ndarray:
    bk = diffcore.backend(xp_name)
    rows = bk.xp.asarray(np.repeat(x0, n, axis=0))
    r = vlb_bpd(model, diff, rows, backend=bk, decoder="gaussian", **options)
    nll = to_np(r.nll)
    np.testing.assert_allclose(nll, to_np(r.bpd) * VLB_D * LN2, rtol=1e-12)
    return nll


def _mean_se(a: np.ndarray) -> tuple[float, float]:
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.shape[0]))


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned_range", "true_posterior"])
def test_vlb_averages_to_the_closed_form_and_bounds_the_nll(var_type):
    """vlb_bpd over many noise draws: its mean is the closed-form E_q[VLB] within 4 SE and >= the
    model's exact NLL; with the true posterior variance it is the exact NLL + the prior mismatch.
    The closed form without the 1/2 Var term (a mutant) is many SE away."""
    true_var = var_type == "true_posterior"
    case = _vlb_case("learned_range" if true_var else var_type, true_var)
    mean, se = _mean_se(_vlb_rows(case.diff, case.model, case.x0))
    assert abs(mean - case.closed) < 4 * se, (mean, case.closed, se)
    assert mean > case.nll - 4 * se and case.closed >= case.nll - 1e-9, (mean, case.nll, se)
    if true_var:
        assert abs(mean - (case.nll + case.gap)) < 4 * se and case.gap < 1e-3, (mean, case.nll, case.gap, se)
    dropped = expected_vlb(NP, case.diff, case.x0, case.A, case.B, case.log_V, mutant="drop_var")[0]
    assert abs(mean - dropped) > 4 * se, (mean, dropped, se)


def test_strided_vlb_is_unbiased():
    """stride k = 4 with a random offset per example: its mean over offsets and noise equals the full
    bound's (closed form and Monte Carlo) within 4 SE, with ~T/k model calls; estimators that drop
    the weight k or draw the offset from 0..k-1 (visiting L_0 twice) are biased beyond 4 SE."""
    case = _vlb_case("fixed_large")
    k, n = 4, 1200
    strided = _vlb_rows(case.diff, case.model, case.x0, n=n, stride=k, seed=3)
    full = _vlb_rows(case.diff, case.model, case.x0, seed=3)
    m_s, se_s = _mean_se(strided)
    m_f, se_f = _mean_se(full)
    assert abs(m_s - case.closed) < 4 * se_s, (m_s, case.closed, se_s)
    assert abs(m_s - m_f) < 4 * math.hypot(se_s, se_f), (m_s, m_f)
    assert se_s > se_f  # the price of fewer calls
    unweighted = case.prior + case.terms[0] + case.terms[1:].sum() / k
    zero_offset = case.closed + case.terms[0]
    for mutant in (unweighted, zero_offset):
        assert abs(m_s - mutant) > 4 * se_s, (m_s, mutant, se_s)
    rows = np.repeat(case.x0, 2, axis=0)
    assert vlb_bpd(case.model, case.diff, rows, stride=k, decoder="gaussian").nfe == 1 + math.ceil((VLB_T - 1) / k)
    assert vlb_bpd(case.model, case.diff, rows, decoder="gaussian").nfe == VLB_T


@pytest.mark.parametrize("xp_name", ["torch", "jax"])
def test_vlb_on_torch_and_jax(xp_name):
    """The VLB through torch's loop and JAX's lax.scan: the same closed-form mean within 4 SE."""
    pytest.importorskip(xp_name)
    case = _vlb_case("fixed_small")
    mean, se = _mean_se(_vlb_rows(case.diff, case.model, case.x0, n=300, xp_name=xp_name, stride=2))
    assert abs(mean - case.closed) < 4 * se, (mean, case.closed, se)


# --------------------------------------------------------------------------------- one call


def test_likelihood_dispatches_on_the_process():
    case = _vlb_case("fixed_small")
    rows = np.repeat(case.x0, 3, axis=0)
    a = nll(case.model, case.diff, rows, backend="numpy", decoder="gaussian", seed=4)
    b = vlb_bpd(case.model, case.diff, rows, backend="numpy", decoder="gaussian", seed=4)
    np.testing.assert_array_equal(a.bpd, b.bpd)
    c = nll(MODELS["VP"], PROCESSES["VP"], X, divergence=analytic_divergence("VP"), prior_logp=PRIORS["VP"])
    np.testing.assert_array_equal(c.nll, run_ode("numpy", X).nll)  # backend from x's namespace


# -------------------------------------------------------------------------------- bad input


def test_bad_input_is_named():
    div = analytic_divergence("VP")
    sde, model = PROCESSES["VP"], MODELS["VP"]
    x_img = np.linspace(-1.0, 1.0, B * D).reshape(B, D)
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\].*1\.5"):
        ode_likelihood(model, sde, x_img * 1.5, divergence=div, dequantize_8bit=True)
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\]"):
        dequantize(x_img * 1.5, np.zeros_like(x_img))
    with pytest.raises(ValueError, match=r"u must hold uniform draws in \[0, 1\); got values from 0 to 5"):
        dequantize(x_img, np.full_like(x_img, 5.0) * (np.arange(x_img.size).reshape(x_img.shape) > 0))
    with pytest.raises(ValueError, match="x and u must have the same shape"):
        dequantize(x_img, np.zeros((1, 1)))
    for name in ("rtol", "atol"):
        for bad in (0.0, -1e-5):
            with pytest.raises(ValueError, match=name):
                ode_likelihood(model, sde, X, divergence=div, **{name: bad})
    with pytest.raises(ValueError, match="num_probes"):
        ode_likelihood(model, sde, X, num_probes=0)
    with pytest.raises(ValueError, match="at least one probe"):
        ode_likelihood(model, sde, X, probes=np.zeros((0, B, D)))
    with pytest.raises(ValueError, match=r"probes must have shape"):
        ode_likelihood(model, sde, X, probes=np.zeros((1, B + 1, D)))
    with pytest.raises(ValueError, match="need divergence='hutchinson'"):
        ode_likelihood(model, sde, X, divergence="exact", probes=np.ones((1, B, D)))
    with pytest.raises(ValueError, match="probe must be one of"):
        ode_likelihood(model, sde, X, probe="uniform")
    with pytest.raises(ValueError, match="divergence must be one of"):
        ode_likelihood(model, sde, X, divergence="trace")
    with pytest.raises(ValueError, match="hutchinson"):
        ode_likelihood(model, sde, np.zeros((2, 65)), divergence="exact")
    with pytest.raises(ValueError, match="eps must lie in"):
        ode_likelihood(model, sde, X, divergence=div, eps=1.0)
    if getattr(sde, "zero_noise_at_start", False):  # sigma(0) = 0 on VP / sub-VP: the score is singular
        with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\).*singular"):
            ode_likelihood(model, sde, X, divergence=div, eps=0.0)
    with pytest.raises(ValueError, match="x must be a batch"):
        ode_likelihood(model, sde, X[0], divergence=div)
    diff = make_diffusion("linear", VLB_T)
    with pytest.raises(TypeError, match="'vlb_bpd' .*capability 'discrete_chain'; VPSDE declares"):
        vlb_bpd(model, sde, X)
    with pytest.raises(ValueError, match="stride must be smaller"):
        vlb_bpd(model, diff, X, stride=VLB_T)
    with pytest.raises(ValueError, match="decoder must be one of"):
        vlb_bpd(model, diff, X, decoder="logistic")


@pytest.mark.parametrize("xp_name", ["numpy", "torch", "jax"])
def test_step_budget_names_the_times_reached(xp_name):
    """A solve past max_steps raises StepBudgetExceeded with the time each unfinished example reached
    (the same on every backend; under JAX from outside the compiled solve, which is reused)."""
    pytest.importorskip(xp_name)
    options = {} if xp_name == "numpy" else {"divergence": "exact"}
    with pytest.raises(StepBudgetExceeded, match=r"max_steps=4.*times reached") as info:
        run_ode(xp_name, X, max_steps=4, **options)
    times = np.asarray(info.value.times)
    assert times.shape == (B,) and np.all((times > EPS) & (times < 1.0))


def test_progress_reports_the_ode_solve_and_the_vlb_terms():
    """ode_likelihood: thousandths of [eps, T] reached by the slowest example, after every solver
    step on an eager backend; vlb_bpd: one report per term. Neither changes the result."""
    calls = []
    r = run_ode("numpy", X, rtol=1e-3, atol=1e-3, progress=lambda done, total: calls.append((done, total)))
    plain = run_ode("numpy", X, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(r.nll, plain.nll)
    done = [d for d, _ in calls]
    assert len(calls) > 5 and {t for _, t in calls} == {1000} and done[-1] == 1000
    assert done == sorted(done) and 0 <= done[0] < 500
    d = GaussianDiffusion(betas=diffcore.get_named_beta_schedule("cosine", 20))
    calls = []
    vlb_bpd(lambda x, t: 0.0 * x, d, X, decoder="gaussian", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 20) for i in range(1, 21)]
