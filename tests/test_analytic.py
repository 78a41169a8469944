"""Gaussian-mixture data (diffcore.analytic): densities against scipy, scores against finite
differences and autodiff, divergences against Jacobian traces, exact samples and marginals against
moments, the exact model under every process, namespaces, jit and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats
from scipy.special import logsumexp, softmax

from diffcore import GaussianDiffusion, get_named_beta_schedule
from diffcore import parametrization as param
from diffcore._array import array_namespace
from diffcore.analytic import GaussianMixture

from conftest import jax_x64, load_namespace, n_examples, to_np, to_xp, xp_name

from diffcore import sde as _sde


# ----------------------------------------------------------------------------------- processes


class ExpProcess:
    """A stand-in continuous process: alpha(t) = e^{-t}, sigma(t) = sqrt(1 - e^{-2t}) (OU from rest),
    network time 1000 t."""

    def _cast(self, out, dtype):
        xp = array_namespace(out)
        return out if dtype is None else xp.astype(out, dtype)

    def alpha(self, t, dtype=None):
        return self._cast(array_namespace(t).exp(-t), dtype)

    def sigma(self, t, dtype=None):
        xp = array_namespace(t)
        return self._cast(xp.sqrt(-xp.expm1(-2.0 * t)), dtype)

    def log_snr(self, t, dtype=None):
        xp = array_namespace(t)
        return self._cast(-2.0 * t - xp.log(-xp.expm1(-2.0 * t)), dtype)

    def model_time(self, t):
        return t * 1000.0

    def time_from_model_time(self, t_in):
        return t_in / 1000.0

    def prior_sample(self, noise):
        return noise

    def prior_logp(self, z):
        return -0.5 * np.sum(z**2 + np.log(2 * np.pi), axis=1)


_DDPM = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50))


def _processes():
    procs = {
        "ddpm": _DDPM,
        "ddpm_respaced": _DDPM.respace(10),
        "ddpm_rescaled": GaussianDiffusion(betas=_DDPM.betas, rescale_timesteps=True).respace(7, "trailing"),
        "exp": ExpProcess(),
    }
    procs.update(vp=_sde.VPSDE(), subvp=_sde.subVPSDE(), ve=_sde.VESDE())
    return procs


PROCESSES = _processes()
DISCRETE = {name for name, p in PROCESSES.items() if isinstance(p, GaussianDiffusion)}


def _times(name, rng, B):
    """One time per example for process ``name``, with the ends of its range included."""
    p = PROCESSES[name]
    if name in DISCRETE:
        t = rng.integers(0, p.num_timesteps, size=B)
        t[0] = 0
        t[-1] = p.num_timesteps - 1
        return t
    lo = 1e-3  # VP / sub-VP sampling end time (sigma(0) = 0 there)
    t = rng.uniform(lo, 1.0, size=B)
    t[0] = lo
    t[-1] = 1.0
    return t


def _t_xp(t, xp, dtype=None):
    return to_xp(t, xp, dtype=dtype if t.dtype.kind == "f" else None)


def _coeffs_np(name, t):
    p = PROCESSES[name]
    return np.asarray(p.alpha(np.asarray(t), dtype=np.float64)), np.asarray(p.sigma(np.asarray(t), dtype=np.float64))


# ------------------------------------------------------------------------------------ mixtures


def _random_mixture(rng, K, D, isotropic, zero_weight=False):
    w = rng.dirichlet(np.ones(K))
    if zero_weight and K > 1:
        w[rng.integers(K)] = 0.0
        w = w / w.sum()
    means = rng.normal(scale=2.0, size=(K, D))
    stds = rng.uniform(0.3, 1.5, size=(K,) if isotropic else (K, D))
    return GaussianMixture(w, means, stds)


@st.composite
def mixtures(draw, full=True):
    """A random mixture; torch / jax draw from a fixed pool of shapes (eager JAX compiles per shape)."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if full:
        K, D = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    else:
        K, D = 3, 2
    g = _random_mixture(rng, K, D, draw(st.booleans()), zero_weight=draw(st.booleans()))
    return g, rng


def _ref_components(g, x, alpha=1.0, sigma=0.0):
    """log w_k + log N(x; alpha mu_k, alpha^2 s_k^2 + sigma^2) with scipy, (B, K)."""
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (x.shape[0],))
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (x.shape[0],))
    out = np.empty((x.shape[0], g.num_components))
    for b in range(x.shape[0]):
        for k in range(g.num_components):
            cov = np.diag(alpha[b] ** 2 * g.stds[k] ** 2 + sigma[b] ** 2)
            with np.errstate(divide="ignore"):
                out[b, k] = np.log(g.weights[k]) + stats.multivariate_normal(alpha[b] * g.means[k], cov).logpdf(x[b])
    return out


# ------------------------------------------------------------------------------------ the math


def test_log_prob_matches_scipy():
    @settings(max_examples=n_examples(load_namespace("numpy")))
    @given(gm=mixtures(), name=st.sampled_from(sorted(PROCESSES)))
    def inner(gm, name):
        g, rng = gm
        x = rng.normal(scale=3.0, size=(4, g.dim))
        np.testing.assert_allclose(g.log_prob(x), logsumexp(_ref_components(g, x), axis=1), rtol=1e-12, atol=1e-12)
        # the marginal at per-example times, and as a host-side mixture at one time
        t = _times(name, rng, 4)
        alpha, sigma = _coeffs_np(name, t)
        want = logsumexp(_ref_components(g, x, alpha, sigma), axis=1)
        np.testing.assert_allclose(g.marginal_log_prob(x, t, PROCESSES[name]), want, rtol=1e-12, atol=1e-12)
        t1 = t[1].item()
        np.testing.assert_allclose(
            g.marginal_mixture(PROCESSES[name], t1).log_prob(x),
            g.marginal_log_prob(x, np.asarray(t[1]), PROCESSES[name]),
            rtol=1e-12,
            atol=1e-12,
        )

    inner()


def _fd_grad(f, x, h=1e-5):
    """Central differences of a per-example scalar f: (B, D) -> (B,)."""
    grad = np.empty_like(x)
    for d in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, d] = h
        grad[:, d] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def _fd_divergence(f, x, h=1e-5):
    """Central-difference trace of the Jacobian of a per-example field f: (B, D) -> (B, D)."""
    div = np.zeros(x.shape[0])
    for d in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, d] = h
        div += (f(x + e)[:, d] - f(x - e)[:, d]) / (2 * h)
    return div


def test_score_and_divergence_match_finite_differences():
    @settings(max_examples=n_examples(load_namespace("numpy")))
    @given(gm=mixtures(), name=st.sampled_from(sorted(PROCESSES)))
    def inner(gm, name):
        g, rng = gm
        p = PROCESSES[name]
        x = rng.normal(scale=2.0, size=(5, g.dim))
        t = _times(name, rng, 5)
        cases = [
            (g.log_prob, g.score, g.score_divergence),
            (
                lambda z: g.marginal_log_prob(z, t, p),
                lambda z: g.marginal_score(z, t, p),
                lambda z: g.marginal_score_divergence(z, t, p),
            ),
        ]
        for log_prob, score, div in cases:
            s = score(x)
            scale = 1.0 + np.abs(s)
            np.testing.assert_allclose(s / scale, _fd_grad(log_prob, x) / scale, rtol=0, atol=1e-6)
            dv = div(x)
            np.testing.assert_allclose(dv, _fd_divergence(score, x), rtol=1e-6, atol=1e-6 * (1 + np.abs(dv).max()))
        # the score is the responsibility-weighted component score (independent numpy formula)
        alpha, sigma = _coeffs_np(name, t)
        r = softmax(_ref_components(g, x, alpha, sigma), axis=1)
        var = alpha[:, None, None] ** 2 * g.stds[None] ** 2 + sigma[:, None, None] ** 2
        want = np.sum(r[:, :, None] * (alpha[:, None, None] * g.means[None] - x[:, None, :]) / var, axis=1)
        np.testing.assert_allclose(g.marginal_score(x, t, p), want, rtol=1e-10, atol=1e-12)

    inner()


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_score_is_autodiff_of_log_prob_torch(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p = PROCESSES[name]
    for isotropic in (True, False):
        g = _random_mixture(rng, 3, 2, isotropic, zero_weight=isotropic)
        x = torch.tensor(rng.normal(scale=2.0, size=(6, 2)), dtype=torch.float64, requires_grad=True)
        t = torch.asarray(_times(name, rng, 6))
        (grad,) = torch.autograd.grad(g.marginal_log_prob(x, t, p).sum(), x)
        np.testing.assert_allclose(to_np(g.marginal_score(x, t, p)), to_np(grad), rtol=1e-10, atol=1e-12)
        (grad0,) = torch.autograd.grad(g.log_prob(x).sum(), x)
        np.testing.assert_allclose(to_np(g.score(x)), to_np(grad0), rtol=1e-10, atol=1e-12)


def test_score_and_divergence_are_autodiff_jax():
    """jax.grad of the log-density and the trace of jax.jacfwd of the score (one jit)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(4)
    # one of each kind of process (every process is checked against torch autodiff); each costs a compile
    names = [n for n in ("ddpm_respaced", "ddpm_rescaled", "exp", "vp", "ve") if n in PROCESSES]
    cases = [(name, _random_mixture(rng, 3, 2, isotropic=i % 2 == 0, zero_weight=i % 2 == 0)) for i, name in enumerate(names)]
    x = jnp.asarray(rng.normal(scale=2.0, size=(4, 2)))
    ts = [jnp.asarray(_times(name, rng, 4)) for name in names]

    def f(x, ts):
        out = []
        for (name, g), t in zip(cases, ts):
            p = PROCESSES[name]
            out.append((
                jax.grad(lambda z: g.marginal_log_prob(z, t, p).sum())(x),
                jax.jacfwd(lambda z: g.marginal_score(z, t, p))(x),
                g.marginal_score(x, t, p),
                g.marginal_score_divergence(x, t, p),
            ))
        g0 = cases[0][1]
        out.append((jax.grad(lambda z: g0.log_prob(z).sum())(x), jax.jacfwd(g0.score)(x), g0.score(x), g0.score_divergence(x)))
        return out

    for label, (grad, jac, score, div) in zip(names + ["t=0"], jax.jit(f)(x, ts)):
        np.testing.assert_allclose(np.asarray(score), np.asarray(grad), rtol=1e-10, atol=1e-12, err_msg=label)
        jac = np.asarray(jac)  # (B, D, B, D)
        np.testing.assert_allclose(np.asarray(div), np.einsum("bdbd->b", jac), rtol=1e-10, atol=1e-12, err_msg=label)
        off = jac.copy()  # the examples are independent: no cross-example Jacobian blocks
        for b in range(jac.shape[0]):
            off[b, :, b, :] = 0
        assert np.all(off == 0), label


# ----------------------------------------------------------------------------------- sampling


def _moment_z(samples, mean, cov):
    """Largest |z|-score of the sample mean and covariance entries against the true ones."""
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    c = samples - mean
    prods = c[:, :, None] * c[:, None, :]
    z_cov = (prods.mean(0) - cov) / (prods.std(0) / np.sqrt(n))
    return max(np.max(np.abs(z_mean)), np.max(np.abs(z_cov)))


def test_exact_samples_have_the_mixture_moments():
    rng = np.random.default_rng(2024)
    n = 20000
    g = GaussianMixture([0.5, 0.0, 0.3, 0.2], [[0.0, 1.0, -1.0], [9.0, 9.0, 9.0], [2.0, -1.0, 0.5], [-2.0, 0.0, 3.0]],
                        [[0.5, 1.0, 0.7], [1.0, 1.0, 1.0], [1.2, 0.4, 0.9], [0.3, 0.8, 1.1]])
    noise, u = rng.normal(size=(n, 3)), rng.uniform(size=n)
    x = g.sample(noise, u)
    assert x.shape == (n, 3) and x.dtype == np.float64
    assert _moment_z(x, g.mean(), g.covariance()) < 4
    # mutant: the weights reversed -- the same check must fail
    wrong = GaussianMixture(g.weights[::-1], g.means, g.stds)
    assert _moment_z(x, wrong.mean(), wrong.covariance()) > 4
    # component frequencies: with zero noise a sample is its component's mean
    picked = g.sample(np.zeros((n, 3)), u)
    k = np.argmin(np.abs(picked[:, None, :] - g.means[None]).sum(-1), axis=1)
    counts = np.bincount(k, minlength=4)
    assert counts[1] == 0  # a zero-weight component is never drawn
    se = np.sqrt(n * g.weights * (1 - g.weights)) + 1e-12
    assert np.max(np.abs(counts - n * g.weights) / se) < 4
    # inverse-CDF edges: u just below a cumulative weight picks the earlier component, at it the later
    edge = np.array([0.0, np.nextafter(0.5, 0), 0.5, np.nextafter(0.8, 0), 0.8, np.nextafter(1.0, 0)])
    got = g.sample(np.zeros((6, 3)), edge)
    np.testing.assert_array_equal(got, g.means[[0, 0, 2, 2, 3, 3]])


def test_trailing_zero_weight_is_never_drawn():
    g = GaussianMixture([0.6, 0.4, 0.0], [[0.0], [1.0], [2.0]], [1.0, 1.0, 1.0])
    u = np.array([0.0, 0.3, 0.6, 0.9, np.nextafter(1.0, 0)])
    np.testing.assert_array_equal(g.sample(np.zeros((5, 1)), u)[:, 0], [0, 0, 1, 1, 1])


@pytest.mark.parametrize("name,t", [("ddpm", 20), ("ddpm_respaced", 4), ("exp", 0.6), ("vp", 0.3), ("subvp", 0.4), ("ve", 0.1), ("ve", 0.0)])
def test_marginal_matches_forward_samples(name, t):
    rng = np.random.default_rng(11)
    n = 20000
    p = PROCESSES[name]
    g = GaussianMixture([0.3, 0.7], [[1.5, -0.5], [-1.0, 0.5]], [[0.8, 1.5], [1.2, 0.6]])
    x0 = g.sample(rng.normal(size=(n, 2)), rng.uniform(size=n))
    tt = np.full(n, t, dtype=np.int64 if isinstance(t, int) else np.float64)
    alpha, sigma = _coeffs_np(name, tt)
    x_t = alpha[:, None] * x0 + sigma[:, None] * rng.normal(size=(n, 2))
    m = g.marginal_mixture(p, t)
    assert _moment_z(x_t, m.mean(), m.covariance()) < 4
    # and the marginal's own exact samples agree with the forward-process ones
    assert _moment_z(m.sample(rng.normal(size=(n, 2)), rng.uniform(size=n)), m.mean(), m.covariance()) < 4
    # mutant: variances alpha s^2 + sigma^2 (alpha not squared) or means not scaled -- must fail where they differ
    a, s = alpha[0], sigma[0]
    if abs(a - 1) > 0.05:
        bad = GaussianMixture(g.weights, a * g.means, np.sqrt(a * g.variances + s**2))
        assert _moment_z(x_t, bad.mean(), bad.covariance()) > 4
        bad = GaussianMixture(g.weights, g.means, m.stds)
        assert _moment_z(x_t, bad.mean(), bad.covariance()) > 4
    if name == "ve":  # VE's std(0) = sigma_min: the data convolved with N(0, sigma_min^2)
        np.testing.assert_allclose(m.variances, g.variances + (p.sigma_min * (p.sigma_max / p.sigma_min) ** t) ** 2, rtol=1e-12)
        np.testing.assert_allclose(m.means, g.means, rtol=0)


# ----------------------------------------------------------------------------------- as_model


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_as_model_is_the_exact_denoiser(name):
    p = PROCESSES[name]
    rng = np.random.default_rng(5)
    g = _random_mixture(rng, 3, 2, isotropic=False)
    x = rng.normal(size=(6, 2))
    t = _times(name, rng, 6)
    t_in = np.asarray(p.model_time(t))
    score = g.marginal_score(x, t, p)
    alpha, sigma = (c[:, None] for c in _coeffs_np(name, t))
    out = {kind: g.as_model(p, kind)(x, t_in) for kind in param.PREDICTIONS}
    for kind, value in out.items():  # every output converts back to the exact score
        # x0 (the posterior mean, computed directly) back to the score divides by sigma^2: round-off grows at small sigma
        tol_back = 1e-7 if kind == "x0" else 1e-8
        np.testing.assert_allclose(param.to_score(value, kind, x, alpha, sigma), score, rtol=tol_back, atol=tol_back, err_msg=kind)
    tol = dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["score"], score, **tol)
    np.testing.assert_allclose(out["eps"], -sigma * score, **tol)
    if "scaled_score" in out:
        np.testing.assert_allclose(out["scaled_score"], sigma * score, **tol)
    np.testing.assert_allclose(out["v"], alpha * out["eps"] - sigma * out["x0"], **tol)
    # Tweedie: x0 = E[x_0 | x_t] = sum_k r_k (mu_k + alpha s_k^2 / var_k (x - alpha mu_k)), computed independently
    r = softmax(_ref_components(g, x, alpha[:, 0], sigma[:, 0]), axis=1)
    var = alpha[:, :, None] ** 2 * g.variances[None] + sigma[:, :, None] ** 2
    post = g.means[None] + alpha[:, :, None] * g.variances[None] / var * (x[:, None, :] - alpha[:, :, None] * g.means[None])
    np.testing.assert_allclose(out["x0"], np.sum(r[:, :, None] * post, axis=1), rtol=1e-8, atol=1e-8)
    # cond is accepted and ignored
    np.testing.assert_allclose(g.as_model(p)(x, t_in, None), out["eps"], **tol)
    if name in ("ddpm_respaced", "ddpm_rescaled"):
        # mutant: reading t_in as the step index (no time_from_model_time) gives a different model
        assert not np.array_equal(t_in, t)
        wrong = -sigma * g.marginal_score(x, np.clip(np.round(t_in).astype(np.int64), 0, p.num_timesteps - 1), p)
        assert np.max(np.abs(wrong - out["eps"])) > 1e-3


# -------------------------------------------------------------------- namespaces and jit


def _everything(g, name, xp, x, t, noise, u, dtype=None):
    X = lambda a: to_xp(a, xp, dtype=dtype)
    p = PROCESSES[name]
    xx, tt = X(x), _t_xp(t, xp, dtype)
    res = {
        "log_prob": g.log_prob(xx),
        "score": g.score(xx),
        "div": g.score_divergence(xx),
        "m_log_prob": g.marginal_log_prob(xx, tt, p),
        "m_score": g.marginal_score(xx, tt, p),
        "m_div": g.marginal_score_divergence(xx, tt, p),
        "sample": g.sample(X(noise), X(u)),
    }
    if xp_name(xp) != "jax":  # more shapes: more eager JAX compiles, for code paths the others cover
        res["m_score_0d"] = g.marginal_score(xx, tt[1], p)
        res["score_3d"] = g.score(xp.reshape(xx, (xx.shape[0], 1, g.dim)))
    if xp_name(xp) != "jax":  # eager JAX: see test_under_jax_jit
        res["model_v"] = g.as_model(p, "v")(xx, p.model_time(tt))
    return res


def test_same_numbers_on_every_namespace(xp):
    full = xp_name(xp) in ("numpy", "array_api_strict")
    # eager JAX compiles every op per shape and dtype: one process there (the SDEs under JAX are in
    # test_under_jax_jit and test_score_and_divergence_are_autodiff_jax)
    names = sorted(PROCESSES) if full else ["ddpm_respaced"] + (["vp" if "vp" in PROCESSES else "exp"] if xp_name(xp) == "torch" else [])

    @settings(max_examples=n_examples(xp))
    @given(gm=mixtures(full=full), name=st.sampled_from(names))
    def inner(gm, name):
        g, rng = gm
        B = 3
        x, t = rng.normal(scale=2.0, size=(B, g.dim)), _times(name, rng, B)
        noise, u = rng.normal(size=(B, g.dim)), rng.uniform(size=B)
        ref = _everything(g, name, load_namespace("numpy"), x, t, noise, u)
        got = _everything(g, name, xp, x, t, noise, u)
        module = type(to_xp(np.zeros(1), xp)).__module__.split(".")[0]
        for key in got:
            assert type(got[key]).__module__.split(".")[0] == module, key
            assert got[key].dtype == to_xp(np.zeros(1), xp).dtype, key
            np.testing.assert_allclose(to_np(got[key]), to_np(ref[key]), rtol=1e-12, atol=1e-12, err_msg=key)
        if xp_name(xp) == "jax":  # eager JAX compiles per dtype; float32 JAX is test_under_jax_jit[False]
            return
        # float32 in, float32 out, close to the float64 numbers
        got32 = _everything(g, name, xp, x, t, noise, u, dtype=xp.float32)
        for key in got32:
            assert got32[key].dtype == xp.float32, key
            np.testing.assert_allclose(to_np(got32[key]), to_np(ref[key]), rtol=2e-4, atol=2e-4, err_msg=key)

    inner()


@pytest.mark.parametrize("x64", [True, False])
def test_under_jax_jit(x64):
    """Everything traces under jax.jit (no Python branches on values, no boolean masks); the numbers
    are NumPy's. x64 off is the float32 path users run."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(9)
    g = _random_mixture(rng, 3, 2, isotropic=False, zero_weight=True)
    names = ["ddpm_respaced", "vp" if "vp" in PROCESSES else "exp"]
    x, noise, u = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng.uniform(size=4)
    ts = [_times(name, rng, 4) for name in names]

    def f(x, ts, noise, u, xp):
        out = [g.log_prob(x), g.score(x), g.score_divergence(x), g.sample(noise, u)]
        for name, t in zip(names, ts):
            p = PROCESSES[name]
            out += [g.marginal_log_prob(x, t, p), g.marginal_score(x, t, p), g.marginal_score_divergence(x, t, p),
                    g.as_model(p, "x0")(x, p.model_time(t))]
        return out

    ref = f(x, ts, noise, u, np)
    with jax_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        J = lambda a: jnp.asarray(a, dtype=dtype if a.dtype.kind == "f" else None)
        jitted = jax.jit(lambda *a: f(*a, jnp))(J(x), [J(t) for t in ts], J(noise), J(u))
        for i, (r, j) in enumerate(zip(ref, jitted)):
            assert j.dtype == dtype, i
            np.testing.assert_allclose(np.asarray(j), r, rtol=1e-12 if x64 else 1e-4, atol=1e-12 if x64 else 1e-4, err_msg=str(i))


def test_import_loads_no_framework():
    code = "import sys, diffcore.analytic; bad = [m for m in ('torch', 'jax') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument():
    w, mu, s = [0.4, 0.6], [[0.0, 1.0], [1.0, 0.0]], [1.0, 2.0]
    with pytest.raises(ValueError, match=r"weights must sum to 1.*0\.9"):
        GaussianMixture([0.4, 0.5], mu, s)
    with pytest.raises(ValueError, match=r"weights must be finite and non-negative.*-0\.2"):
        GaussianMixture([1.2, -0.2], mu, s)
    with pytest.raises(ValueError, match="weights must be a 1-D array"):
        GaussianMixture([[0.4, 0.6]], mu, s)
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\) with K = 2.*\(3, 2\)"):
        GaussianMixture(w, [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], s)
    with pytest.raises(ValueError, match=r"means must have shape \(K, D\)"):
        GaussianMixture(w, [0.0, 1.0], s)
    with pytest.raises(ValueError, match=r"stds must be finite and > 0; got 0\.0"):
        GaussianMixture(w, mu, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"stds must be finite and > 0; got -0\.5"):
        GaussianMixture(w, mu, [[1.0, 1.0], [-0.5, 1.0]])
    with pytest.raises(ValueError, match=r"stds must have shape \(K,\) = \(2,\).*\(2, 3\)"):
        GaussianMixture(w, mu, np.ones((2, 3)))
    g = GaussianMixture(w, mu, s)
    d = _DDPM
    with pytest.raises(ValueError, match=r"x must have shape \(B, D\) with D = 2.*\(3, 3\)"):
        g.log_prob(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, D\).*\(2,\)"):
        g.score(np.zeros(2))
    with pytest.raises(TypeError, match="x must be a real floating-point array"):
        g.score(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"x must have shape \(B, D\)"):
        g.marginal_score(np.zeros((3, 3)), np.array([0, 1, 2]), d)
    with pytest.raises(ValueError, match=r"t must be 0-D or 1-D with one entry per example \(3\); got shape \(4,\)"):
        g.marginal_score(np.zeros((3, 2)), np.array([0, 1, 2, 3]), d)
    with pytest.raises(ValueError, match="t must lie in"):  # the process checks its own range
        g.marginal_log_prob(np.zeros((2, 2)), np.array([0, 50]), d)
    with pytest.raises(ValueError, match=r"noise must have shape \(B, D\) with D = 2"):
        g.sample(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"component_u must have shape \(B,\) = \(3,\)"):
        g.sample(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"component_u must lie in \[0, 1\); got values from 0\.0 to 1\.0"):
        g.sample(np.zeros((3, 2)), np.array([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"component_u must lie in \[0, 1\)"):
        g.sample(np.zeros((2, 2)), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="prediction must be one of 'eps', 'x0', 'v', 'score'.*; got 'epsilon'"):
        g.as_model(d, "epsilon")
    class NoInverse:  # a process without a way back from the network's time input
        alpha, sigma = ExpProcess.alpha, ExpProcess.sigma

    with pytest.raises(TypeError, match="process must implement.*time_from_model_time.*NoInverse"):
        g.as_model(NoInverse())
    with pytest.raises(TypeError, match="t must be a Python int"):
        g.marginal_mixture(d, np.array([1, 2]))


def test_traced_values_skip_value_checks_but_not_shape_checks():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    g = GaussianMixture([0.4, 0.6], [[0.0, 1.0], [1.0, 0.0]], [1.0, 2.0])
    noise = jnp.zeros((3, 2))
    jax.jit(lambda u: g.sample(noise, u))(jnp.asarray([0.0, 0.5, 0.9]))
    with pytest.raises(ValueError, match="component_u must have shape"):
        jax.jit(lambda u: g.sample(noise, u))(jnp.zeros(4))
    with pytest.raises(ValueError, match=r"component_u must lie in \[0, 1\)"):
        g.sample(noise, jnp.asarray([0.0, 0.5, 1.5]))  # eager JAX arrays are checked
