"""The open process interface: processes written here, as a user would, run every generic sampler
and the exact likelihood to the same targets as the built-in processes.

- EDM's process (alpha = 1, sigma = t, t in [0.002, 80]; Karras et al. 2022),
- a continuous-time cosine VP schedule (alpha = cos(pi/2 c t), sigma = sin(pi/2 c t), c chosen so
  that the log-SNR at t = 1 is -15: truncated before alpha = 0),
- the rectified-flow interpolant x_t = (1 - t) x_0 + t eps (alpha' = -1, sigma' = 1; alpha(1) = 0).

None of them gives a log-SNR inverse: the samplers use diffcore.process's float64 bisection. None
subclasses anything from diffcore. Targets and tolerances are those of tests/test_ode_samplers.py
(energy distance to exact samples of the 2-D mixture, in units of the distance between two exact
sets: < 3) and tests/test_likelihood.py (exact NLL within 1e-3 bits/dim).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, strategies as st

import diffcore
from diffcore import GaussianDiffusion, VPSDE, get_named_beta_schedule, rescale_zero_terminal_snr
from diffcore import parametrization as param
from diffcore.process import START_LOG_SNR, bisect_time_from_log_snr, drift_coefficients, time_from_log_snr
from diffcore.samplers import build, sample

from conftest import to_np
from sampler_utils import energy_distance, mixture_target, two_gaussians_2d

_LOG_2PI = math.log(2.0 * math.pi)


def _ns(t):
    return array_api_compat.array_namespace(t)


class _UserProcess:
    """What a user writes: the marginal's alpha and sigma, their derivatives, the range, the network
    time and the prior. ``_a``, ``_s``, ``_da``, ``_ds`` are elementwise in t (any namespace)."""

    prior_std = 1.0

    def _out(self, v, t, dtype):
        xp = _ns(t)
        if isinstance(v, float):  # constants take t's shape and dtype
            v = xp.full_like(t, v)
        return v if dtype is None or v.dtype == dtype else xp.astype(v, dtype)

    def alpha(self, t, dtype=None):
        return self._out(self._a(t), t, dtype)

    def sigma(self, t, dtype=None):
        return self._out(self._s(t), t, dtype)

    def alpha_prime(self, t, dtype=None):
        return self._out(self._da(t), t, dtype)

    def sigma_prime(self, t, dtype=None):
        return self._out(self._ds(t), t, dtype)

    def model_time(self, t):
        return t

    def time_from_model_time(self, t_in):
        return t_in

    def prior_sample(self, noise):
        return noise * self.prior_std

    def prior_logp(self, z):
        xp = _ns(z)
        v = self.prior_std**2
        terms = -0.5 * (_LOG_2PI + math.log(v) + z * z / v)
        return xp.sum(xp.reshape(terms, (z.shape[0], -1)), axis=1)


class EDMProcess(_UserProcess):
    T, t_min, prior_std = 80.0, 0.002, 80.0

    def _a(self, t):
        return 1.0

    def _s(self, t):
        return t

    def _da(self, t):
        return 0.0

    def _ds(self, t):
        return 1.0


class CosineVP(_UserProcess):
    T, t_min = 1.0, 0.0
    k = math.atan(math.exp(-0.5 * START_LOG_SNR))  # pi/2 c: log-SNR(1) = 2 log cot(k) = -15

    def _a(self, t):
        return _ns(t).cos(self.k * t)

    def _s(self, t):
        return _ns(t).sin(self.k * t)

    def _da(self, t):
        return -self.k * _ns(t).sin(self.k * t)

    def _ds(self, t):
        return self.k * _ns(t).cos(self.k * t)


class RectifiedFlow(_UserProcess):
    T, t_min = 1.0, 0.0

    def _a(self, t):
        return 1.0 - t

    def _s(self, t):
        return t

    def _da(self, t):
        return -1.0

    def _ds(self, t):
        return 1.0


EDM, COS, RF = EDMProcess(), CosineVP(), RectifiedFlow()
USER = {"edm": EDM, "cosine": COS, "rf": RF}

# ---------------------------------------------------------------------------------- the target

N = 2000


@pytest.fixture(scope="module")
def target():
    return mixture_target(N)


def _distance(target, name, process, prediction="eps", **options):
    mix, ref, floor, z = target
    out = sample(name, mix.as_model(process, prediction), process, (N, 2), x_T=process.prior_sample(z), **options)
    return energy_distance(out.x, ref) / floor


# EDM's process is linear in sigma: uniform-in-t grids waste their steps at high noise, so every
# sampler there runs on the log-SNR grid (EDM's own sampler has its Karras grid).
_LOG = {"spacing": "logsnr"}
CASES = [
    # (sampler, options (EDM's process), options (others))
    ("ddim", dict(steps=50, **_LOG), dict(steps=50)),
    ("ode_euler", dict(steps=100, **_LOG), dict(steps=100)),
    ("ode_heun", dict(steps=25, **_LOG), dict(steps=25)),
    ("ode_rk4", dict(steps=10, **_LOG), dict(steps=10)),
    ("ode_dopri5", dict(rtol=1e-4, atol=1e-4), dict(rtol=1e-4, atol=1e-4)),
    ("edm_heun", dict(steps=30), dict(steps=30)),
    ("dpmpp_2m", dict(steps=30, **_LOG), dict(steps=30, **_LOG)),
    ("euler_maruyama", dict(steps=200, corrector=None, **_LOG), dict(steps=200, corrector=None)),
    ("pc", dict(steps=100, predictor="euler_maruyama", norm="batch_mean", **_LOG),
     dict(steps=100, predictor="euler_maruyama", norm="batch_mean")),
]


@pytest.mark.parametrize("proc", sorted(USER))
@pytest.mark.parametrize("name, edm_options, options", CASES, ids=[c[0] for c in CASES])
def test_generic_samplers_reach_the_mixture_on_user_processes(target, proc, name, edm_options, options):
    process = USER[proc]
    opts = dict(edm_options if proc == "edm" else options)
    prediction = "score" if name in ("euler_maruyama", "pc") else "eps"
    d = _distance(target, name, process, prediction, **opts)
    print(f"\n{name} on {proc}: distance/floor {d:.2f}")
    assert d < 3.0


@pytest.mark.parametrize("name, options", [("ddim", dict(steps=50)), ("ode_heun", dict(steps=25)), ("ode_dopri5", dict(rtol=1e-4, atol=1e-4)), ("dpmpp_2m", dict(steps=30))])
def test_u_prediction_starts_at_alpha_zero(target, name, options):
    """With u = eps - x_0 the rectified flow's samplers start at t = 1 itself (alpha = 0, the exact
    prior) and reach the target; an eps model must start below (log-SNR -15)."""
    mix = target[0]
    s_u = build(name, mix.as_model(RF, "u"), RF, **options)
    s_eps = build(name, mix.as_model(RF, "eps"), RF, **options)
    assert s_u.times[0] == 1.0
    assert s_eps.times[0] < 1.0
    np.testing.assert_allclose(float(np.asarray(RF.alpha(np.asarray(s_eps.times[0])))), math.exp(0.5 * START_LOG_SNR) * float(np.asarray(RF.sigma(np.asarray(s_eps.times[0])))), rtol=1e-9)
    assert _distance(target, name, RF, "u", **options) < 3.0


def test_a_wrong_derivative_misses_the_target(target):
    """Mutant: sigma' of the rectified flow off by 20 % sends the ODE samplers off the target."""

    class Wrong(RectifiedFlow):
        def _ds(self, t):
            return 1.2

    assert _distance(target, "ode_heun", Wrong(), "eps", steps=25) > 3.0


# --------------------------------------------------------------------------------- likelihood

_MIX = two_gaussians_2d()
_X = np.array([[-1.5, 0.5], [1.0, -0.5], [0.3, 0.1], [2.0, 1.0]])
EPS = 1e-3


@pytest.mark.parametrize("proc, prediction", [("edm", "score"), ("cosine", "score"), ("rf", "score"), ("rf", "u")])
def test_exact_likelihood_on_user_processes(proc, prediction):
    process = USER[proc]
    torch = pytest.importorskip("torch")
    eps = EPS if proc != "edm" else process.t_min
    t_end = diffcore.process.start_time(process, "ode_likelihood", prediction)
    if proc == "rf":  # alpha(1) = 0: only u gives x_0 there; a score model's solve ends at log-SNR -15
        assert (t_end == 1.0) == (prediction == "u")
    x = torch.asarray(_X, dtype=torch.float64)
    end = torch.asarray(t_end, dtype=torch.float64)
    r = diffcore.nll(
        _MIX.as_model(process, prediction), process, x, backend="torch", divergence="exact", eps=eps,
        prior_logp=lambda z: _MIX.marginal_log_prob(z, end, process),
    )
    exact = -np.asarray(_MIX.marginal_log_prob(_X, np.asarray(eps), process))
    err = np.abs(to_np(r.nll) - exact) / (2 * math.log(2.0))
    print(f"\n{proc} {prediction}: bits/dim error {err.max():.2e}, t_end {t_end}")
    assert err.max() < 1e-3


# -------------------------------------------------------------- the interface's derived parts


@pytest.mark.parametrize("proc", sorted(USER))
def test_derived_f_and_g2_obey_the_moment_equations(proc):
    """d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2, with f, g^2 derived by diffcore."""
    p = USER[proc]
    lo, hi = p.t_min, p.T if proc != "rf" else 0.9
    t = np.linspace(lo + 0.1 * (hi - lo), hi, 7)
    f, g2 = drift_coefficients(p, t)
    h = 1e-6 * (hi - lo)
    a, s = (lambda u: np.asarray(p.alpha(u))), (lambda u: np.asarray(p.sigma(u)))
    np.testing.assert_allclose((a(t + h) - a(t - h)) / (2 * h), f * a(t), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose((s(t + h) ** 2 - s(t - h) ** 2) / (2 * h), 2 * f * s(t) ** 2 + g2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("process", [VPSDE(), diffcore.subVPSDE(), diffcore.VESDE(), COS, EDM], ids=["VP", "subVP", "VE", "cos", "edm"])
def test_time_from_log_snr_inverts_the_log_snr(process):
    """The closed forms (VP, sub-VP, VE) and the generic bisection agree and invert the log-SNR."""
    lo, hi = process.t_min, process.T
    t = np.linspace(lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo), 40)
    with np.errstate(divide="ignore"):
        lam = 2 * (np.log(np.asarray(process.alpha(t))) - np.log(np.asarray(process.sigma(t))))
    np.testing.assert_allclose(time_from_log_snr(process, lam), t, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bisect_time_from_log_snr(process, lam), t, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="log-SNR values must lie in"):  # noisier than the noisy end
        time_from_log_snr(process, np.array([lam.min() - 50.0]))


def test_capabilities_are_asked_for_by_name():
    model = two_gaussians_2d().as_model(RF, "eps")
    with pytest.raises(TypeError, match=r"'ddpm' sampler needs a process with the capability 'discrete_chain'; RectifiedFlow declares none"):
        sample("ddpm", model, RF, (2, 2))
    with pytest.raises(TypeError, match=r"'reverse_diffusion' sampler needs a process with the capability 'discretize'; RectifiedFlow"):
        sample("reverse_diffusion", model, RF, (2, 2), steps=10)
    with pytest.raises(TypeError, match=r"'pc' sampler needs a process with the capability 'ancestral'; RectifiedFlow"):
        sample("pc", model, RF, (2, 2), steps=10, predictor="ancestral")
    with pytest.raises(TypeError, match=r"'pc' sampler needs steps: RectifiedFlow has no N"):
        sample("pc", model, RF, (2, 2), predictor="euler_maruyama")
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50))
    with pytest.raises(TypeError, match=r"'ode_heun' sampler integrates in continuous time .*discrete process GaussianDiffusion"):
        sample("ode_heun", two_gaussians_2d().as_model(d, "eps"), d, (2, 2))


def test_no_sampler_or_likelihood_tests_a_concrete_class():
    """Samplers and the ODE likelihood ask the interface, never isinstance on a process class, nor
    a private member of one (vlb_bpd, the discrete chain's own bound, is the exception)."""
    root = Path(diffcore.__file__).parent
    files = list((root / "samplers").glob("*.py")) + [root / "likelihood.py"]
    concrete = re.compile(r"isinstance\([^)]*(GaussianDiffusion|VPSDE|subVPSDE|VESDE|SDE)\b")
    private = re.compile(r"\b(sde|process|chain)\._[a-z]")
    for f in files:
        text = f.read_text()
        if f.name == "likelihood.py":  # vlb_bpd checks its diffusion: the VLB is the discrete chain's own
            text = text.replace("if not isinstance(diffusion, GaussianDiffusion):", "")
        assert not concrete.search(text), (f.name, concrete.search(text).group(0))
        assert not private.search(text), (f.name, private.search(text).group(0))


# ------------------------------------------------------------------------- alpha = 0 and u


def test_mixture_models_are_finite_at_alpha_zero():
    """x0, v and u models give their limits where alpha = 0: x0 = E[x_0], u = eps - E[x_0]."""
    mix = two_gaussians_2d()
    x = np.random.default_rng(3).standard_normal((5, 2))
    mean = mix.mean()
    betas = rescale_zero_terminal_snr(get_named_beta_schedule("linear", 100))
    zt = GaussianDiffusion(betas=betas, model_mean_type="v")
    for process, t_in in ((zt, np.full(5, 99.0)), (RF, np.full(5, 1.0))):
        out = {k: np.asarray(mix.as_model(process, k)(x, t_in)) for k in ("x0", "v", "u", "eps", "score")}
        for k, v in out.items():
            assert np.all(np.isfinite(v)), (type(process).__name__, k)
        np.testing.assert_allclose(out["x0"], np.broadcast_to(mean, x.shape), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["eps"], x, rtol=1e-12, atol=1e-12)  # sigma = 1: x_t = eps
        np.testing.assert_allclose(out["u"], x - mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["v"], -mean + 0 * x, rtol=1e-12, atol=1e-12)  # v = alpha eps - sigma x0
        # and u converts back to x_0 exactly there
        np.testing.assert_allclose(param.to_x0(out["u"], "u", x, 0.0, 1.0), out["x0"], atol=1e-12)


_floats = st.floats(-3.0, 3.0)


@given(
    x0=st.lists(_floats, min_size=3, max_size=3),
    eps=st.lists(_floats, min_size=3, max_size=3),
    alpha=st.floats(0.0, 2.0),
    sigma=st.floats(0.05, 2.0),
)
def test_u_conversions_are_exact(x0, eps, alpha, sigma):
    x0, eps = np.asarray(x0), np.asarray(eps)
    x = alpha * x0 + sigma * eps
    u = eps - x0
    v = alpha * eps - sigma * x0
    tol = dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(param.to_x0(u, "u", x, alpha, sigma), x0, **tol)
    np.testing.assert_allclose(param.to_eps(u, "u", x, alpha, sigma), eps, **tol)
    np.testing.assert_allclose(param.to_v(u, "u", x, alpha, sigma), v, **tol)
    np.testing.assert_allclose(param.to_score(u, "u", x, alpha, sigma), -eps / sigma, **tol)
    for kind, out in (("eps", eps), ("v", v), ("score", -eps / sigma)):
        if alpha > 0.05 or kind == "v":  # eps and scores give x_0 only through 1 / alpha
            np.testing.assert_allclose(param.to_u(out, kind, x, alpha, sigma), u, **tol)
    np.testing.assert_allclose(param.to_u(x0, "x0", x, alpha, sigma), u, **tol)


def test_public_rectified_flow_is_the_user_one(target):
    """diffcore.RectifiedFlow equals the test's own and reaches the target with a u model; its
    closed-form log-SNR inverse agrees with the bisection."""
    pub = diffcore.RectifiedFlow()
    t = np.linspace(0.01, 0.99, 9)
    for m in ("alpha", "sigma", "alpha_prime", "sigma_prime"):
        np.testing.assert_array_equal(np.asarray(getattr(pub, m)(t)), np.asarray(getattr(RF, m)(t)), err_msg=m)
    lam = np.asarray(pub.log_snr(t))
    np.testing.assert_allclose(time_from_log_snr(pub, lam), t, rtol=1e-12)
    np.testing.assert_allclose(bisect_time_from_log_snr(RF, lam), t, rtol=1e-9)
    assert _distance(target, "ode_heun", pub, "u", steps=25) < 3.0
    scaled = diffcore.RectifiedFlow(time_scale=1000.0)
    np.testing.assert_allclose(np.asarray(scaled.time_from_model_time(scaled.model_time(t))), t)
    with pytest.raises(ValueError, match="time_scale must be a positive number; got 0"):
        diffcore.RectifiedFlow(time_scale=0)
