"""The variational bound is a bound: VLB(x_0) >= -log p_theta(x_0), exactly, for Gaussian data.

For data x_0 ~ N(m, s^2) per dimension (D independent dims) every piece of DDPM is linear-Gaussian:
q(x_t) = N(sqrt(abar_t) m, abar_t s^2 + 1 - abar_t), the true reverse conditionals
q(x_{t-1} | x_t) = N(a_t x_t + b_t, c_t) are linear-Gaussian, and so is any reverse model
p(x_{t-1} | x_t) = N(A_t x_t + B_t, V_t) with a N(0, I) prior at the last step. Hence

- the model's exact NLL -log p_theta(x_0) follows by propagating mean and variance down the chain;
- the expected VLB E_{q(x_{1:T}|x_0)}[L_T + sum_t L_{t-1}] is available in closed form: each term is
  quadratic in a mean difference d that is linear in x_t ~ q(x_t | x_0) = N(mu, sigma^2), so
  E[term] = term(x_t = mu) + 1/2 Var(d) / V_t. The first part is computed by the library itself
  (``GaussianDiffusion.vb_terms`` with x_t at its mean, decoder "gaussian"; ``prior_bpd``).

Checked: VLB >= NLL for every x_0 drawn (far from the mean too), every variance type and perturbed
means; for the optimal model (A, B, V) = (a, b, c) the gap is exactly the prior mismatch
KL(q(x_T | x_0) || p_theta(x_T | x_0)), tiny when abar_T <= 1e-3, while perturbed means open a
clearly positive gap. Mutants (a dropped 1/2 Var term, the notes' abar-typo weight) are caught.
Index convention as in the library: steps 0..T-1, abar before step 0 is 1, "x_{-1}" is x_0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_namespace, n_examples, to_np, to_xp
from diffcore import GaussianDiffusion, get_named_beta_schedule

D = 3  # data dimensions
LN2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
OPT_GAP_PER_DIM = 1e-3  # bound on the optimal model's gap (nats per dim) when abar_T <= 1e-3
SMALL_ABAR_T = 1e-3


# --------------------------------------------------------------------------- closed-form Gaussian pieces


def tables(diff: GaussianDiffusion):
    """(alpha, abar, abar_prev, coef1, coef2), each (T, 1), recomputed from the betas alone."""
    beta = np.asarray(diff.betas, dtype=np.float64)[:, None]
    alpha = 1.0 - beta
    abar = np.cumprod(alpha, axis=0)
    abar_prev = np.concatenate([np.ones((1, 1)), abar[:-1]])
    coef1 = beta * np.sqrt(abar_prev) / (1.0 - abar)
    coef2 = (1.0 - abar_prev) * np.sqrt(alpha) / (1.0 - abar)
    return alpha, abar, abar_prev, coef1, coef2


def q_reverse(diff: GaussianDiffusion, m: np.ndarray, s: np.ndarray):
    """(a, b, c), each (T, D): q(x_{t-1} | x_t) = N(a_t x_t + b_t, c_t) for data N(m, s^2).

    From the joint Gaussian of (x_{t-1}, x_t): x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z, so
    Cov = sqrt(alpha_t) Var(x_{t-1}), a = Cov / Var(x_t), c = Var(x_{t-1}) - a Cov.
    """
    alpha, abar, abar_prev, _, _ = tables(diff)
    var_t = abar * s**2 + 1.0 - abar
    var_prev = abar_prev * s**2 + 1.0 - abar_prev
    mean_t = np.sqrt(abar) * m
    mean_prev = np.sqrt(abar_prev) * m
    cov = np.sqrt(alpha) * var_prev
    a = cov / var_t
    b = mean_prev - a * mean_t
    c = var_prev - a * cov
    return a, b, c


def exact_nll(x0: np.ndarray, A: np.ndarray, B: np.ndarray, V: np.ndarray) -> np.ndarray:
    """-log p_theta(x_0) in nats summed over dims, x0 (K, D); A, B, V (T, D).

    x_{T-1} ~ N(0, 1); x_{t-1} = A_t x_t + B_t + sqrt(V_t) z down to t = 0 gives p_theta(x_0) = N(M, S)
    with M = sum_t P_t B_t, S = P_T^2 + sum_t P_t^2 V_t, P_t = prod_{u<t} A_u (vectorised over t).
    """
    P = np.concatenate([np.ones((1, A.shape[1])), np.cumprod(A, axis=0)], axis=0)
    M = np.sum(P[:-1] * B, axis=0)
    S = P[-1] ** 2 + np.sum(P[:-1] ** 2 * V, axis=0)
    return np.sum(0.5 * (LOG_2PI + np.log(S) + (x0 - M) ** 2 / S), axis=-1)


def exact_nll_loop(x0, A, B, V):
    """The same marginalisation as a plain loop over the chain (independent check)."""
    M, S = np.zeros(A.shape[1]), np.ones(A.shape[1])
    for t in range(A.shape[0] - 1, -1, -1):
        M, S = A[t] * M + B[t], A[t] ** 2 * S + V[t]
    return np.sum(0.5 * (LOG_2PI + np.log(S) + (x0 - M) ** 2 / S), axis=-1)


def optimal_marginals(diff, m, s):
    """For the optimal model: q(x_0 | x_T) = N(m + k (x_T - mu_T), r); p_theta(x_0) = N(m - k mu_T, k^2 + r)."""
    abar_T = tables(diff)[1][-1, 0]
    mu_T = math.sqrt(abar_T) * m
    v_T = abar_T * s**2 + 1.0 - abar_T
    k = math.sqrt(abar_T) * s**2 / v_T
    r = s**2 - abar_T * s**4 / v_T
    return mu_T, k, r


def optimal_nll(diff, m, s, x0):
    """-log integral N(x_T; 0, 1) q(x_0 | x_T) dx_T, in closed form (no chain)."""
    mu_T, k, r = optimal_marginals(diff, m, s)
    mean, var = m - k * mu_T, k**2 + r
    return np.sum(0.5 * (LOG_2PI + np.log(var) + (x0 - mean) ** 2 / var), axis=-1)


def optimal_gap(diff, m, s, x0):
    """VLB - NLL of the optimal model = KL(q(x_T | x_0) || p_theta(x_T | x_0)), summed over dims.

    Only the prior differs from q, so KL(q(x_{1:T}|x_0) || p(x_{1:T}|x_0)) reduces to the x_T posteriors:
    p_theta(x_T | x_0) is proportional to N(x_T; 0, 1) q(x_0 | x_T).
    """
    abar_T = tables(diff)[1][-1, 0]
    mu_T, k, r = optimal_marginals(diff, m, s)
    prec = 1.0 + k**2 / r
    p_mean = (k / r) * (x0 - m + k * mu_T) / prec
    p_var = 1.0 / prec
    q_mean, q_var = math.sqrt(abar_T) * x0, 1.0 - abar_T
    kl = 0.5 * (np.log(p_var / q_var) + q_var / p_var + (q_mean - p_mean) ** 2 / p_var - 1.0)
    return np.sum(kl, axis=-1)


PAD_ROWS = 5000  # every batch (K x T <= 5 x 1000) is padded to one shape, so JAX compiles each op once


def _pad(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` padded to PAD_ROWS with copies of row 0 (results of the padding are dropped)."""
    extra = PAD_ROWS - a.shape[0]
    return a if extra <= 0 else np.concatenate([a, np.repeat(a[:1], extra, axis=0)])


def _padded(xp, arrays):
    return [to_xp(_pad(a), xp) for a in arrays]


def expected_vlb(xp, diff, x0, A, B, log_V, *, mutant=None):
    """E_{q(x_{1:T}|x_0)}[VLB] in nats (summed over dims), per x_0 (K, D), vectorised over all T steps.

    One library call covers every (x_0, t) pair: ``vb_terms`` with x_t at its mean under q(x_t | x_0)
    gives each term at E[d]; the 1/2 Var(d) / V_t completes the expectation. ``mutant`` injects a
    known mistake ("drop_var": no 1/2 Var term; "typo": the notes' weight with abar_t for alpha_t).
    """
    K, T = x0.shape[0], diff.num_timesteps
    t = np.tile(np.arange(T), K)
    _, abar, abar_prev, coef1, coef2 = tables(diff)
    xt_mean = np.sqrt(abar) * x0[:, None, :]  # (K, T, D)
    model_mean = A * xt_mean + B
    log_V = np.broadcast_to(log_V, (K, T, D))
    x_start, x_t, t_xp, mean_xp, log_var_xp = _padded(
        xp,
        [np.repeat(x0, T, axis=0), xt_mean.reshape(K * T, D), t, model_mean.reshape(K * T, D), log_V.reshape(K * T, D)],
    )
    bits = diff.vb_terms(x_start, x_t, t_xp, model_mean=mean_xp, model_log_variance=log_var_xp, decoder="gaussian")
    terms = to_np(bits)[: K * T].reshape(K, T) * (D * LN2)
    # d = coef1 x_0 + coef2 x_t - (A x_t + B) (t >= 1) or x_0 - (A x_t + B) (t = 0): slope in x_t is
    # coef2 - A, and coef2 = 0 at t = 0 (abar_prev = 1), so one formula covers the decoder too.
    slope = coef2 - A
    var_term = 0.5 * np.sum(slope**2 * (1.0 - abar) / np.exp(log_V[0]), axis=-1)  # (T,)
    if mutant != "drop_var":
        terms = terms + var_term
    if mutant == "typo":  # eps-form weight beta^2 / (2 sigma^2 abar_t (1 - abar_t)): KL mean part x 1/abar_{t-1}
        true_mean = coef1 * x0[:, None, :] + coef2 * xt_mean
        mean_part = 0.5 * np.sum((true_mean - model_mean) ** 2 / np.exp(log_V), axis=-1) + var_term
        scale = 1.0 / abar_prev[:, 0] - 1.0
        scale[0] = 0.0
        terms = terms + scale * mean_part
    prior = to_np(diff.prior_bpd(to_xp(x0, xp))) * (D * LN2)
    return np.sum(terms, axis=1) + prior


# --------------------------------------------------------------------------- models


def make_diffusion(schedule, T, var_type="fixed_small"):
    return GaussianDiffusion(betas=get_named_beta_schedule(schedule, T), model_var_type=var_type)


def model_log_var(xp, diff, var_type, v):
    """log V_t (T, D) of the library's variance type (v: the learned_range output in [-1, 1])."""
    T = diff.num_timesteps
    d = GaussianDiffusion(betas=diff.betas, model_var_type=var_type)
    x_t, t, v = _padded(xp, [np.zeros((T, D)), np.arange(T), v])
    out = d.model_log_variance(v if var_type == "learned_range" else None, x_t, t)
    return np.broadcast_to(to_np(out)[:T], (T, D)).copy()


def draw_case(seed, T, far=6.0):
    """Data moments, a few x_0 (one at the mean, some up to `far` std away), model perturbations."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(-1.0, 1.0, D)
    s = rng.uniform(0.3, 2.0, D)
    z = np.concatenate([np.zeros((1, D)), rng.uniform(-far, far, (3, D)), np.full((1, D), far)])
    x0 = m + s * z
    v = rng.uniform(-1.0, 1.0, (T, D))
    dA = rng.uniform(-0.2, 0.2, (T, D))
    dB = rng.choice([-1.0, 1.0], (T, D)) * rng.uniform(0.2, 0.5, (T, D))
    return m, s, x0, v, dA, dB


def check_all(xp, schedule, T, seed):
    """Every assertion for one (schedule, T, draw); returns the measured gaps."""
    diff = make_diffusion(schedule, T)
    m, s, x0, v, dA, dB = draw_case(seed, T)
    a, b, c = q_reverse(diff, m, s)
    small = tables(diff)[1][-1, 0] <= SMALL_ABAR_T

    def gap(A, B, log_V):
        vlb = expected_vlb(xp, diff, x0, A, B, log_V)
        nll = exact_nll(x0, A, B, np.exp(log_V))
        assert np.all(np.isfinite(vlb)) and np.all(np.isfinite(nll))
        tol = 1e-9 * (1.0 + np.abs(nll) + np.abs(vlb))
        assert np.all(vlb >= nll - tol), (schedule, T, vlb - nll)
        return vlb - nll

    # (i) the optimal model: the gap is exactly the prior mismatch, ~0 when abar_T is small
    g_opt = gap(a, b, np.log(c))
    np.testing.assert_allclose(exact_nll(x0, a, b, c), optimal_nll(diff, m, s, x0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g_opt, optimal_gap(diff, m, s, x0), rtol=1e-6, atol=1e-9)
    if small:
        assert np.all(g_opt <= OPT_GAP_PER_DIM * D), g_opt
    # (ii) every variance type with the optimal mean
    for var_type in VAR_TYPES:
        gap(a, b, model_log_var(xp, diff, var_type, v))
    # (iii) perturbed means, with the optimal and with a library variance: a clearly positive gap
    g_pert = gap(a * (1.0 + dA), b + dB, np.log(c))
    gap(a * (1.0 + dA), b + dB, model_log_var(xp, diff, "learned_range", v))
    if T >= 4:  # (at T = 2 one wide reverse step absorbs much of the perturbation; the gap stays > 0)
        assert np.all(g_pert >= 10.0 * OPT_GAP_PER_DIM * D), g_pert
    return g_opt, g_pert


# --------------------------------------------------------------------------- tests


def test_vlb_bounds_exact_nll(xp):
    """Hypothesis over schedule, T <= 100 and draws: VLB >= NLL; optimal gap = prior mismatch."""

    @settings(max_examples=n_examples(xp))
    @given(
        # the rescaled linear schedule needs T >= 21 (betas < 1); cosine is valid from T = 2
        case=st.sampled_from(["linear", "cosine"]).flatmap(
            lambda name: st.tuples(st.just(name), st.integers(21 if name == "linear" else 2, 100))
        ),
        seed=st.integers(0, 2**32 - 1),
    )
    def inner(case, seed):
        check_all(xp, *case, seed)

    inner()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vlb_bounds_exact_nll_T1000(xp, schedule):
    """The published setting, T = 1000: optimal gap ~0 (abar_T ~ 4e-5), perturbed mean clearly positive."""
    g_opt, g_pert = check_all(xp, schedule, 1000, seed=1234)
    assert np.all(g_opt < 1e-4 * D) and np.all(g_pert > 1.0)


def test_closed_form_expectation_matches_monte_carlo():
    """The closed-form E_q[VLB] equals a Monte Carlo average of the library's terms at sampled x_t
    (within 4 standard errors), and the exact NLL matches ancestral sampling of the reverse chain."""
    xp = load_namespace("numpy")
    rng = np.random.default_rng(0)
    T, N = 25, 20000
    diff = make_diffusion("linear", T)
    m, s, x0, v, dA, dB = draw_case(7, T, far=3.0)
    x0 = x0[2:3]  # one x_0, 3 std away from the mean in some dims
    a, b, c = q_reverse(diff, m, s)
    for A, B, log_V in [
        (a, b, model_log_var(xp, diff, "learned_range", v)),
        (a * (1.0 + dA), b + dB, model_log_var(xp, diff, "fixed_large", v)),
    ]:
        closed = expected_vlb(xp, diff, x0, A, B, log_V)[0]
        # MC: an independent x_t ~ q(x_t | x_0) per (sample, t); the bound is a sum of per-t expectations.
        t = np.tile(np.arange(T), N)
        eps = rng.standard_normal((N * T, D))
        xs = np.repeat(x0, N * T, axis=0)
        x_t = to_np(diff.q_sample(to_xp(xs, xp), to_xp(t, xp), noise=to_xp(eps, xp)))
        bits = diff.vb_terms(
            to_xp(xs, xp),
            to_xp(x_t, xp),
            to_xp(t, xp),
            model_mean=to_xp(A[t] * x_t + B[t], xp),
            model_log_variance=to_xp(log_V[t], xp),
            decoder="gaussian",
        )
        per_sample = to_np(bits).reshape(N, T).sum(axis=1) * (D * LN2)
        per_sample = per_sample + to_np(diff.prior_bpd(to_xp(x0, xp)))[0] * D * LN2
        se = per_sample.std(ddof=1) / math.sqrt(N)
        assert abs(per_sample.mean() - closed) < 4 * se, (per_sample.mean(), closed, se)
        # the dropped-variance mutant is many standard errors off: the MC check has power
        assert abs(per_sample.mean() - expected_vlb(xp, diff, x0, A, B, log_V, mutant="drop_var")[0]) > 10 * se

        # exact NLL: vectorised marginalisation == loop, and == moments of ancestral samples
        V = np.exp(log_V)
        np.testing.assert_allclose(exact_nll(x0, A, B, V), exact_nll_loop(x0, A, B, V), rtol=1e-12)
        x = rng.standard_normal((N, D))
        for step in range(T - 1, -1, -1):
            x = A[step] * x + B[step] + np.sqrt(V[step]) * rng.standard_normal((N, D))
        M, S = x.mean(axis=0), x.var(axis=0, ddof=1)
        nll_fit = np.sum(0.5 * (LOG_2PI + np.log(S) + (x0[0] - M) ** 2 / S))
        P = np.concatenate([np.ones((1, D)), np.cumprod(A, axis=0)])
        M_exact = np.sum(P[:-1] * B, axis=0)
        S_exact = P[-1] ** 2 + np.sum(P[:-1] ** 2 * V, axis=0)
        assert np.all(np.abs(M - M_exact) < 4 * np.sqrt(S_exact / N))
        assert np.all(np.abs(S / S_exact - 1.0) < 4 * math.sqrt(2.0 / N))
        assert abs(nll_fit - exact_nll(x0, A, B, V)[0]) < 0.05


def test_mutants_are_detected(xp):
    """Wrong math fails the checks: without the 1/2 Var term the 'bound' falls below the exact NLL;
    the notes' typo weight (abar_t for alpha_t) blows up the optimal model's gap; a perturbed mean
    opens a clearly positive gap."""
    diff = make_diffusion("linear", 1000)
    m, s, x0, v, dA, dB = draw_case(99, 1000)
    a, b, c = q_reverse(diff, m, s)
    nll = exact_nll(x0, a, b, c)
    for log_V in (np.log(c), model_log_var(xp, diff, "fixed_small", v)):
        dropped = expected_vlb(xp, diff, x0, a, b, log_V, mutant="drop_var")
        nll_V = exact_nll(x0, a, b, np.exp(log_V))
        assert np.all(dropped < nll_V - 0.1), dropped - nll_V
    typo = expected_vlb(xp, diff, x0, a, b, np.log(c), mutant="typo")
    assert np.all(typo - nll > 100 * OPT_GAP_PER_DIM * D)
    good = expected_vlb(xp, diff, x0, a, b, np.log(c)) - nll
    assert np.all(good <= OPT_GAP_PER_DIM * D)
    perturbed = expected_vlb(xp, diff, x0, a, b + 0.01, np.log(c)) - exact_nll(x0, a, b + 0.01, c)
    assert np.all(perturbed > 10 * OPT_GAP_PER_DIM * D)
