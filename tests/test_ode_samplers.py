"""Deterministic samplers: fixed-step PF-ODE (Euler, Heun, RK4), adaptive Dormand-Prince, EDM's
Heun sampler, DPM-Solver++(2M), and the sigma~ -> time inverse they share.

Exactness first: on a single Gaussian N(m, s^2 I) the probability-flow ODE has the closed form

    x_t = alpha_t m + sqrt(v_t / v_T) (x_T - alpha_T m),   v_t = alpha_t^2 s^2 + sigma_t^2,

(u = x - alpha m obeys du/dt = (f + g^2 / (2 v)) u and v' = 2 f v + g^2, so u / sqrt(v) is
constant), which measures convergence orders and the adaptive solver's tolerance. Then the
statistical check on the 2-D mixture against exact samples, and NumPy-vs-torch-vs-JAX replays.
"""

from __future__ import annotations

import numpy as np
import pytest

import diffcore
from diffcore import GaussianDiffusion, VESDE, VPSDE, get_named_beta_schedule, subVPSDE
from diffcore.analytic import GaussianMixture
from diffcore.backends import StepBudgetExceeded
from diffcore.samplers import SAMPLERS, build, sample
from diffcore.samplers._base import plan_to
from diffcore.samplers.ode import FACTORIES, pf_ode_drift, time_from_sigma_ratio
from diffcore.samplers.solvers import dopri5

from conftest import load_namespace, to_np
from sampler_utils import NO_WEIGHTS, energy_distance, mixture_target, two_gaussians_2d

SAMPLERS.update(FACTORIES)

NP = load_namespace("numpy")
M = np.array([0.7, -0.3, 0.2])
S = 0.3
BATCH = 16


# ------------------------------------------------------------------------ the closed form


def _coef(process, t):
    t = np.asarray(t, dtype=np.int64 if isinstance(process, GaussianDiffusion) else np.float64)
    return float(np.asarray(process.alpha(t))), float(np.asarray(process.sigma(t)))


def _flow(process, x_T, t0, t1):
    """The exact PF-ODE map of data N(M, S^2 I) from time t0 to t1."""
    a0, s0 = _coef(process, t0)
    a1, s1 = _coef(process, t1)
    v0, v1 = a0**2 * S**2 + s0**2, a1**2 * S**2 + s1**2
    return a1 * M + np.sqrt(v1 / v0) * (x_T - a0 * M)


def _tweedie(process, x, t):
    """E[x_0 | x_t = x] for data N(M, S^2 I)."""
    a, s = _coef(process, t)
    v = a**2 * S**2 + s**2
    return M + a * S**2 / v * (x - a * M)


def _gaussian():
    return GaussianMixture(np.array([1.0]), M[None], np.array([S]))


def _x_T(process, seed=0, n=BATCH):
    return np.random.default_rng(seed).standard_normal((n, M.shape[0])) * process.prior_std


def _run(sampler, x_T, xp=NP):
    """Run a built sampler (its own driver if it has one) on the NumPy backend."""
    bk = diffcore.backend("numpy")
    plan = plan_to(sampler.plan, xp, x_T.dtype, "cpu")
    if sampler.drive is not None:
        state = sampler.drive(sampler.step, sampler.init(x_T), plan, backend=bk, key=bk.key(0), noise_shape=None, args=NO_WEIGHTS)
    else:
        state = bk.loop(sampler.step, sampler.init(x_T), plan, key=bk.key(0), noise_shape=None, args=NO_WEIGHTS)
    return sampler.result(state)


def _reference(name, sampler, process):
    """The exact output the sampler approximates, as a function of x_T."""
    if name.startswith("ode_"):
        t1 = sampler.plan.t_next[-1]
        return lambda xT: _flow(process, xT, process.T, t1)
    if name == "dpmpp_2m":  # last point of the grid, then its x_0 prediction
        t0, t1 = sampler.times[0], sampler.times[-1]
        return lambda xT: _tweedie(process, _flow(process, xT, t0, t1), t1)
    # edm_heun: the trajectory reaches sigma~_min (time of the last row), then D(x; sigma~_min)
    t0 = sampler.times[0]
    t1 = float(time_from_sigma_ratio(process, sampler.plan.s_hat[-1:])[0])
    return lambda xT: _tweedie(process, _flow(process, xT, t0, t1), t1)


def _errors(name, process, steps, mutate=None, **options):
    model = _gaussian().as_model(process, "eps")
    xT = _x_T(process)
    out = []
    for n in steps:
        s = build(name, model, process, steps=n, **options)
        ref = _reference(name, s, process)(xT)
        if mutate is not None:
            s = s._replace(plan=mutate(s.plan))
        out.append(np.max(np.abs(_run(s, xT) - ref)))
    return np.array(out)


def _order(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


# --------------------------------------------------------------------- convergence orders

# (sampler, options, step counts in the asymptotic range, expected order)
ORDER_CASES = [
    ("ode_euler", {}, (40, 80, 160, 320), 1.0),
    ("ode_heun", {}, (20, 40, 80, 160), 2.0),
    ("ode_rk4", {}, (20, 40, 80, 160), 4.0),
    ("edm_heun", {}, (10, 20, 40, 80), 2.0),
    # time-uniform DPM-Solver on VP is pre-asymptotic longer: lambda races near eps
    ("dpmpp_2m", {}, (40, 80, 160, 320), 2.0),
    ("dpmpp_2m", {"spacing": "logsnr"}, (20, 40, 80, 160), 2.0),
]


@pytest.mark.parametrize("process", [VPSDE(), VESDE()], ids=["VP", "VE"])
@pytest.mark.parametrize("name, options, steps, order", ORDER_CASES, ids=[f"{c[0]}{'-' + c[1].get('spacing', '') if c[1] else ''}" for c in ORDER_CASES])
def test_convergence_order_on_a_single_gaussian(process, name, options, steps, order):
    errors = _errors(name, process, steps, **options)
    measured = _order(steps, errors)
    print(f"\n{name} {options} on {type(process).__name__}: errors {np.array2string(errors, precision=2)}, order {measured:.2f}")
    assert np.all(np.diff(errors) < 0)
    assert abs(measured - order) < 0.3


def test_convergence_order_on_sub_vp():
    p = subVPSDE()
    for name, steps, order in (("ode_heun", (40, 80, 160, 320), 2.0), ("edm_heun", (10, 20, 40, 80), 2.0)):
        assert abs(_order(steps, _errors(name, p, steps)) - order) < 0.3


def _stage_to_start(plan):
    """Heun mutant: the corrector evaluated at the step's start time instead of its end."""
    return plan._replace(**{f"{k}_1": getattr(plan, f"{k}_0") for k in ("t_in", "alpha", "sigma", "d_alpha", "d_sigma")})


@pytest.mark.parametrize(
    "name, options, mutate, steps, expect",
    [
        ("ode_heun", {}, _stage_to_start, (40, 80, 160, 320), "order1"),
        ("ode_heun", {}, lambda p: p._replace(b_0=p.dt, b_1=p.dt), (20, 40, 80, 160), "fails"),  # dropped 1/2
        ("ode_rk4", {}, lambda p: p._replace(a_3_2=p.a_3_2 / 2), (20, 40, 80, 160), "order1"),  # last stage input off its time
        ("ode_euler", {}, lambda p: p._replace(d_sigma_0=2 * p.d_sigma_0), (40, 80, 160, 320), "fails"),  # sigma' doubled
        ("edm_heun", {}, lambda p: p._replace(w_corr=2 * p.w_corr), (10, 20, 40, 80), "fails"),  # dropped 1/2
        ("edm_heun", {}, lambda p: p._replace(t_in_corr=p.t_in_hat, alpha_corr=p.alpha_hat, s_corr=p.s_hat), (20, 40, 80, 160), "order1"),
        ("dpmpp_2m", {"spacing": "logsnr"}, lambda p: p._replace(w_cur=np.ones_like(p.w_cur), w_prev=np.zeros_like(p.w_prev)), (20, 40, 80, 160), "order1"),
    ],
    ids=["heun-corrector-time", "heun-no-half", "rk4-stage-input", "euler-no-half", "edm-no-half", "edm-corrector-sigma", "dpm-first-order"],
)
def test_mutants_lose_the_order(name, options, mutate, steps, expect):
    p = VPSDE()
    errors = _errors(name, p, steps, mutate=mutate, **options)
    good = _errors(name, p, steps[-1:], **options)[0]
    if expect == "order1":
        assert abs(_order(steps, errors) - 1.0) < 0.3
    else:  # no convergence at all
        assert errors[-1] > 0.5 * errors[0]
    assert errors[-1] > 5 * good


# ----------------------------------------------------------------------------- dopri5


def test_dopri5_meets_its_tolerance():
    for process in (VPSDE(), VESDE()):
        model = _gaussian().as_model(process, "eps")
        xT = _x_T(process)
        nfes = []
        for tol in (1e-3, 1e-5, 1e-7):
            r = sample("ode_dopri5", model, process, xT.shape, x_T=xT, rtol=tol, atol=tol)
            err = np.max(np.abs(r.x - _flow(process, xT, process.T, 1e-3 if process.zero_noise_at_start else 1e-5)))
            print(f"\ndopri5 {type(process).__name__} rtol=atol={tol:g}: max error {err:.2e} = {err / tol:.1f} rtol, NFE {r.nfe}")
            assert err < 20 * tol
            nfes.append(r.nfe)
        assert nfes[0] < nfes[1] < nfes[2]


def test_dopri5_matches_scipy_rk45_example_by_example():
    """Same method, controller and starting step as scipy's RK45: same NFE, same numbers."""
    solve_ivp = pytest.importorskip("scipy.integrate").solve_ivp
    p = VPSDE()
    fn = pf_ode_drift(_gaussian().as_model(p, "eps"), p, "eps")
    xT = _x_T(p, n=4)
    for tol in (1e-3, 1e-6):
        r = dopri5(diffcore.backend("numpy"), fn, xT, 1.0, 1e-3, rtol=tol, atol=tol)
        for i in range(xT.shape[0]):
            ref = solve_ivp(lambda t, y: fn(np.array([t]), y[None])[0], (1.0, 1e-3), xT[i], rtol=tol, atol=tol)
            assert r.nfe[i] == ref.nfev
            assert r.accepted[i] == ref.t.shape[0] - 1
            np.testing.assert_allclose(r.y[i], ref.y[:, -1], rtol=0, atol=1e-13)
        assert r.t.tolist() == [1e-3] * xT.shape[0]
        assert int(r.nfe_total) == int(r.nfe.max())  # the batch runs until its slowest example is done


def test_dopri5_solves_are_independent_of_the_batch():
    p = VESDE()
    fn = pf_ode_drift(_gaussian().as_model(p, "eps"), p, "eps")
    xT = _x_T(p, seed=3, n=8)
    full = dopri5(diffcore.backend("numpy"), fn, xT, 1.0, 1e-5, rtol=1e-6, atol=1e-6)
    assert len(set(full.nfe.tolist())) > 1  # the examples really took different paths
    for i in (0, 3, 7):
        one = dopri5(diffcore.backend("numpy"), fn, xT[i : i + 1], 1.0, 1e-5, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(one.y[0], full.y[i])
        assert one.nfe[0] == full.nfe[i] and one.steps[0] == full.steps[i]


def test_dopri5_on_a_tuple_state_per_example_times():
    """y = (x, z): x' = -k x, z' = sum(x); times per example, both directions."""
    k = np.array([0.5, 2.0, 4.0])
    x0 = np.ones((3, 2))
    z0 = np.zeros(3)
    t1 = np.array([1.0, 0.5, -0.25])

    def fn(t, y):
        x, z = y
        return (-k[:, None] * x, np.sum(x, axis=1))

    for h0 in (None, 0.01):
        r = dopri5(diffcore.backend("numpy"), fn, (x0, z0), 0.0, t1, rtol=1e-9, atol=1e-9, h0=h0)
        x, z = r.y
        np.testing.assert_allclose(x, np.exp(-k * t1)[:, None] * x0, rtol=1e-7)
        np.testing.assert_allclose(z, 2.0 * (1.0 - np.exp(-k * t1)) / k, rtol=1e-7)
        np.testing.assert_array_equal(r.t, t1)
        # NFE: f(t0), Hairer's probe unless h0 is given, then 6 per attempt
        np.testing.assert_array_equal(r.nfe, (1 if h0 else 2) + 6 * r.steps)


def test_dopri5_step_budget():
    p = VPSDE()
    model = _gaussian().as_model(p, "eps")
    fn = pf_ode_drift(model, p, "eps")
    with pytest.raises(StepBudgetExceeded, match=r"3 steps taken \(max_steps=3\).*times reached per example") as info:
        dopri5(diffcore.backend("numpy"), fn, _x_T(p, n=4), 1.0, 1e-3, rtol=1e-6, atol=1e-6, max_steps=3)
    assert info.value.steps == 3
    assert info.value.times.shape == (4,) and np.all(info.value.times < 1.0) and np.all(info.value.times > 1e-3)
    with pytest.raises(StepBudgetExceeded, match="max_steps=2"):
        sample("ode_dopri5", model, p, (4, 3), x_T=_x_T(p, n=4), max_steps=2)


def test_dopri5_nonfinite_fails_loudly():
    def fn(t, y):
        return np.where(t[:, None] < 0.5, np.nan, -y)

    with pytest.raises(FloatingPointError, match=r"example\(s\) \[0, 1\]"):
        dopri5(diffcore.backend("numpy"), fn, np.ones((2, 2)), 1.0, 0.0, rtol=1e-5, atol=1e-5)
    r = dopri5(diffcore.backend("numpy"), fn, np.ones((2, 2)), 1.0, 0.0, rtol=1e-5, atol=1e-5, raise_on_failure=False)
    assert r.failed.tolist() == [True, True] and np.all(r.t >= 0.5) and np.all(np.isfinite(r.y))


def test_dopri5_on_jax_and_torch():
    pytest.importorskip("diffcore_torch")
    pytest.importorskip("diffcore_jax")
    p = VPSDE()
    xT = _x_T(p, n=5)
    model = _gaussian().as_model(p, "eps")
    ref = dopri5(diffcore.backend("numpy"), pf_ode_drift(model, p, "eps"), xT, 1.0, 1e-3, rtol=1e-6, atol=1e-6)
    ref_s = sample("ode_dopri5", model, p, xT.shape, x_T=xT, rtol=1e-5, atol=1e-5, denoise=True)
    # the solver on torch: same per-example NFE and numbers (JAX inside the caller's jit: the x64-off test)
    bk = diffcore.backend("torch")
    got = dopri5(bk, pf_ode_drift(model, p, "eps"), bk.xp.asarray(xT), 1.0, 1e-3, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_np(got.y), ref.y, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(to_np(got.nfe), ref.nfe)
    # the sampler through the one-call API (JAX: the backend's lax.while_loop under jit)
    for bk in (diffcore.backend("torch"), diffcore.backend("jax")):
        r = sample("ode_dopri5", model, p, xT.shape, backend=bk, x_T=bk.xp.asarray(xT), rtol=1e-5, atol=1e-5, denoise=True)
        np.testing.assert_allclose(to_np(r.x), ref_s.x, rtol=1e-9, atol=1e-11)
        assert r.nfe == ref_s.nfe


# -------------------------------------------------------------------- plans, NFE, inverse


def _counting(model):
    calls = []

    def counted(x, t_in, cond=None):
        calls.append(1)
        return model(x, t_in)

    return counted, calls


@pytest.mark.parametrize(
    "name, options, nfe",
    [
        ("ode_euler", {"steps": 7}, 7),
        ("ode_heun", {"steps": 7}, 14),
        ("ode_rk4", {"steps": 7}, 28),
        ("ode_euler", {"steps": 7, "denoise": True}, 8),
        ("ode_heun", {"steps": 7, "denoise": True}, 15),
        ("ode_rk4", {"steps": 7, "denoise": True}, 29),
        ("edm_heun", {"steps": 7}, 13),
        ("edm_heun", {"steps": 1}, 1),
        ("dpmpp_2m", {"steps": 7}, 7),
    ],
)
def test_nfe_is_what_the_model_sees(name, options, nfe):
    p = VPSDE()
    model, calls = _counting(_gaussian().as_model(p, "eps"))
    r = sample(name, model, p, (4, 3), x_T=_x_T(p, n=4), **options)
    assert r.nfe == nfe == len(calls)


def test_plans_end_where_they_say():
    p = VPSDE()
    model = _gaussian().as_model(p, "eps")
    s = build("ode_heun", model, p, steps=10, spacing="linspace")
    np.testing.assert_allclose(s.plan.t, np.linspace(1.0, 1e-3, 11)[:-1])
    assert s.plan.t_next[-1] == 1e-3
    assert s.plan.alpha_next[-1] == _coef(p, 1e-3)[0] and s.plan.sigma_next[-1] == _coef(p, 1e-3)[1]
    d = build("ode_heun", model, p, steps=10, denoise=True, spacing="linspace")
    assert d.plan.alpha_next[-1] == 1.0 and d.plan.sigma_next[-1] == 0.0
    xT = _x_T(p)
    # denoise = Tweedie's x_0 at eps of the ODE's end point; the driver and a plain loop agree
    np.testing.assert_allclose(_run(d, xT), _tweedie(p, _run(s, xT), 1e-3), rtol=1e-12, atol=1e-13)
    plain = diffcore.backend("numpy").loop(d.step, d.init(xT), plan_to(d.plan, NP, np.float64, "cpu"), args=NO_WEIGHTS)
    np.testing.assert_array_equal(plain.x, _run(d, xT))
    e = build("edm_heun", model, p, steps=10)
    assert e.plan.alpha_next[-1] == 1.0 and e.plan.sigma_next[-1] == 0.0
    plain = diffcore.backend("numpy").loop(e.step, e.init(xT), plan_to(e.plan, NP, np.float64, "cpu"), args=NO_WEIGHTS)
    np.testing.assert_array_equal(plain.x, _run(e, xT))
    # EDM on VP: sigma~ from the process's own ends, sigma~(eps) .. sigma~(T)
    a_e, s_e = _coef(p, 1e-3)
    a_T, s_T = _coef(p, 1.0)
    np.testing.assert_allclose([e.plan.s_hat[-1], e.plan.s_hat[0]], [s_e / a_e, s_T / a_T], rtol=1e-12)
    np.testing.assert_allclose(e.times[[0, -1]], [1.0, 1e-3], rtol=1e-9)


@pytest.mark.parametrize("process", [VPSDE(), subVPSDE(), VESDE(), VPSDE(beta_min=1e-9, beta_max=10.0)], ids=["VP", "subVP", "VE", "VP-tiny-b0"])
def test_time_from_sigma_ratio_inverts_the_process(process):
    t = np.concatenate([[0.0 if not process.zero_noise_at_start else 1e-5], np.linspace(1e-3, 1.0, 50)])
    s = np.asarray(process.sigma(t)) / np.asarray(process.alpha(t))
    np.testing.assert_allclose(time_from_sigma_ratio(process, s), t, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="must lie in"):
        time_from_sigma_ratio(process, np.array([s[-1] * 2]))


def test_time_from_sigma_ratio_on_a_discrete_chain_is_the_nearest_step():
    d = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 200))
    log_s = 0.5 * (np.log(d.one_minus_alphas_cumprod) - np.log(d.alphas_cumprod))
    steps = np.arange(200)
    np.testing.assert_array_equal(time_from_sigma_ratio(d, np.exp(log_s)), steps)
    mid = np.exp(0.5 * (log_s[:-1] + log_s[1:]))
    nudged = time_from_sigma_ratio(d, np.concatenate([mid * 0.999, mid * 1.001]))
    np.testing.assert_array_equal(nudged, np.concatenate([steps[:-1], steps[1:]]))
    np.testing.assert_array_equal(time_from_sigma_ratio(d, np.array([1e-9, 1e9])), [0, 199])  # clamped


# ------------------------------------------------------------------ the 2-D mixture target

N = 2000


@pytest.fixture(scope="module")
def target():
    return mixture_target(N)


def _distance(target, name, process, **options):
    mix, ref, floor, z = target
    out = sample(name, mix.as_model(process, "eps"), process, (N, 2), x_T=process.prior_sample(z), **options)
    return energy_distance(out.x, ref) / floor


_GD = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))

MIXTURE_CASES = [
    # (sampler, process, options, coarse steps where discretisation dominates, generous steps)
    ("ode_euler", VPSDE(), {}, 5, 50),
    ("ode_heun", VPSDE(), {"denoise": True}, 5, 50),
    ("ode_heun", VESDE(), {}, 5, 50),
    ("ode_rk4", VPSDE(), {}, 2, 20),
    ("edm_heun", VPSDE(), {}, 5, 50),
    ("edm_heun", VESDE(), {}, 5, 50),
    ("edm_heun", _GD, {}, 5, 50),
    ("dpmpp_2m", _GD, {}, 5, 50),
    ("dpmpp_2m", VPSDE(), {"spacing": "logsnr"}, 5, 50),
    ("dpmpp_2m", _GD, {"spacing": "logsnr"}, 5, 50),
    ("dpmpp_2m", VESDE(), {}, 5, 50),
]


@pytest.mark.parametrize(
    "name, process, options, coarse_steps, steps",
    MIXTURE_CASES,
    ids=[f"{c[0]}-{type(c[1]).__name__}{'-' + '-'.join(map(str, c[2].values())) if c[2] else ''}" for c in MIXTURE_CASES],
)
def test_samplers_reach_the_mixture(target, name, process, options, coarse_steps, steps):
    """Distances in units of the two-exact-sets floor: < 3 at generous steps, falling from coarse."""
    fine = _distance(target, name, process, steps=steps, **options)
    coarse = _distance(target, name, process, steps=coarse_steps, **options)
    print(f"\n{name} {type(process).__name__} {options}: distance/floor {coarse:.2f} at {coarse_steps} steps, "
          f"{fine:.2f} at {steps}")
    assert fine < 3.0
    assert fine < coarse / 2


def test_dopri5_and_edm_churn_reach_the_mixture(target):
    p = VPSDE()
    loose, tight = _distance(target, "ode_dopri5", p, rtol=1e-1, atol=1e-1), _distance(target, "ode_dopri5", p, rtol=1e-4, atol=1e-4)
    assert tight < 3.0 < loose
    assert _distance(target, "edm_heun", p, steps=50, S_churn=40.0) < 3.0


# ------------------------------------------------------------------- other namespaces


def _short_cases():
    d = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 100))
    return [
        ("ode_euler", VPSDE(), {"steps": 4}),
        ("ode_heun", VESDE(), {"steps": 4, "denoise": True}),
        ("ode_rk4", subVPSDE(), {"steps": 3}),
        ("edm_heun", VPSDE(), {"steps": 4}),
        ("edm_heun", d, {"steps": 4}),
        ("dpmpp_2m", d, {"steps": 5}),
        ("dpmpp_2m", VPSDE(), {"steps": 5, "spacing": "logsnr"}),
    ]


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_short_trajectories_match_numpy(backend_name):
    """torch: every case, eps and x_0 models; JAX (a compile per sampler): one case per sampler."""
    pytest.importorskip(f"diffcore_{backend_name}")
    bk = diffcore.backend(backend_name)
    mix = two_gaussians_2d()
    xT = np.random.default_rng(5).standard_normal((6, 2))
    cases = _short_cases()
    if backend_name == "jax":
        cases = [cases[i] for i in (1, 4, 6)]
    for name, process, options in cases:
        for prediction in ("eps", "x0") if backend_name == "torch" else ("eps",):
            model = mix.as_model(process, prediction)
            x_T = process.prior_sample(xT)
            ref = sample(name, model, process, (6, 2), x_T=x_T, prediction=prediction, **options)
            got = sample(name, model, process, (6, 2), backend=bk, x_T=bk.xp.asarray(x_T), prediction=prediction, **options)
            np.testing.assert_allclose(to_np(got.x), ref.x, rtol=1e-9, atol=1e-11, err_msg=f"{name} {options}")
            assert got.nfe == ref.nfe


def test_float32_with_jax_x64_off():
    """The path users run: JAX in float32 (x64 off): a split-driver sampler, and the adaptive
    solver inside the caller's jit (int32 counters, float32 times)."""
    pytest.importorskip("diffcore_jax")
    from conftest import jax_x64

    p = VPSDE()
    model = two_gaussians_2d().as_model(p, "eps")
    xT = np.random.default_rng(7).standard_normal((6, 2))
    ref = sample("edm_heun", model, p, (6, 2), x_T=xT, steps=5)
    ref_ode = dopri5(diffcore.backend("numpy"), pf_ode_drift(model, p, "eps"), xT, 1.0, 1e-3, rtol=1e-3, atol=1e-3)
    with jax_x64(False):
        import jax
        import jax.numpy as jnp

        x32 = jnp.asarray(xT, dtype=jnp.float32)
        got = sample("edm_heun", model, p, (6, 2), backend="jax", x_T=x32, steps=5)
        solve = jax.jit(lambda y: dopri5(diffcore.backend("jax"), pf_ode_drift(model, p, "eps"), y, 1.0, 1e-3, rtol=1e-3, atol=1e-3).y)
        got_ode = solve(x32)
        assert got.x.dtype == jnp.float32 and got_ode.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got.x), ref.x, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got_ode), ref_ode.y, atol=3e-3)


def test_edm_churn_is_seeded():
    """Churn noise comes from the backend's generator: seeded, fresh per seed, finite on torch."""
    p = VPSDE()
    model = two_gaussians_2d().as_model(p, "eps")
    a = sample("edm_heun", model, p, (5, 2), seed=1, steps=6, S_churn=10.0)
    b = sample("edm_heun", model, p, (5, 2), seed=1, steps=6, S_churn=10.0)
    c = sample("edm_heun", model, p, (5, 2), seed=2, steps=6, S_churn=10.0)
    np.testing.assert_array_equal(a.x, b.x)
    assert np.all(a.x != c.x)
    pytest.importorskip("diffcore_torch")  # (JAX draws step noise the same way for every sampler)
    r = sample("edm_heun", model, p, (5, 2), backend="torch", seed=1, steps=3, S_churn=10.0)
    assert np.all(np.isfinite(to_np(r.x))) and r.nfe == 5


def test_every_sampler_runs_on_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    mix = two_gaussians_2d()
    xT = np.random.default_rng(6).standard_normal((3, 2))
    for name, process, options in _short_cases() + [("ode_dopri5", VPSDE(), {"rtol": 1e-4, "atol": 1e-4})]:
        model = mix.as_model(process, "eps")
        ref = sample(name, model, process, (3, 2), x_T=process.prior_sample(xT), **options).x
        got = sample(name, model, process, (3, 2), x_T=strict.asarray(process.prior_sample(xT)), **options).x
        np.testing.assert_allclose(to_np(got), ref, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------- inpainting


def test_fixed_step_samplers_inpaint_and_dopri5_refuses():
    p = VPSDE()
    model = two_gaussians_2d().as_model(p, "eps")
    mask, known = np.array([[1.0, 0.0]]), np.array([[0.4, 0.0]])
    for name in ("ode_heun", "edm_heun", "dpmpp_2m"):
        x = sample(name, model, p, (4, 2), seed=0, steps=6, mask=mask, known=known).x
        np.testing.assert_array_equal(x[:, 0], 0.4)
    with pytest.raises(ValueError, match="cannot inpaint"):
        sample("ode_dopri5", model, p, (4, 2), mask=mask, known=known)


# -------------------------------------------------------------------------------- bad input


def test_nonfinite_output_names_step_and_time():
    p = VPSDE()

    def blows_up(x, t_in):
        return np.where(t_in[:, None] < 500, np.nan, 0.0 * x)

    with pytest.raises(FloatingPointError, match=r"state became non-finite at step 6 \(time 0.46 .*may have returned NaN"):
        sample("ode_euler", blows_up, p, (3, 2), steps=10, eps=0.1 + 1e-12)


def test_bad_input():
    p, d = VPSDE(), GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    model = lambda x, t: x
    for name in ("ode_euler", "ode_heun", "ode_rk4", "edm_heun", "dpmpp_2m"):
        with pytest.raises(ValueError, match="steps must be an integer >= 1; got 0"):
            build(name, model, p, steps=0)
    with pytest.raises(TypeError, match="steps must be an integer; got 2.5"):
        build("ode_heun", model, p, steps=2.5)
    for arg in ("rtol", "atol"):
        for bad in (0.0, -1e-3):
            with pytest.raises(ValueError, match=f"{arg} must be a positive number; got {bad}"):
                build("ode_dopri5", model, p, **{arg: bad})
            with pytest.raises(ValueError, match=f"{arg} must be a positive number"):
                dopri5(diffcore.backend("numpy"), lambda t, y: y, np.ones((2, 1)), 0.0, 1.0, **{"rtol": 1e-3, "atol": 1e-3, arg: bad})
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1; got 0"):
        build("ode_dopri5", model, p, max_steps=0)
    with pytest.raises(ValueError, match=r"t1 must be 0-D or have one entry per example \(2\)"):
        dopri5(diffcore.backend("numpy"), lambda t, y: y, np.ones((2, 1)), 0.0, np.ones(3), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"spacing must be one of 'linspace', 'logsnr'; got 'quadratic'"):
        build("dpmpp_2m", model, p, spacing="quadratic")
    with pytest.raises(ValueError, match=r"spacing must be one of .*'trailing'; got 'cosine'"):
        build("dpmpp_2m", model, d, spacing="cosine")
    with pytest.raises(TypeError, match="integrates the probability-flow ODE of an SDE.*GaussianDiffusion"):
        build("ode_heun", model, d)
    with pytest.raises(ValueError, match=r"eps must lie in \(0, 1\)"):
        build("ode_heun", model, p, eps=0.0)
    with pytest.raises(ValueError, match=r"eps must lie in \[0, 1\)"):
        build("ode_heun", model, VESDE(), eps=1.0)
    with pytest.raises(ValueError, match="sigma_min must be smaller than sigma_max"):
        build("edm_heun", model, VESDE(), sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match=r"sigma_max must lie in the process's range \[0.01, 50\]"):
        build("edm_heun", model, VESDE(), sigma_max=80.0)
    with pytest.raises(ValueError, match="S_churn must be a non-negative number; got -1"):
        build("edm_heun", model, p, S_churn=-1)
    with pytest.raises(ValueError, match="rho must be a positive number"):
        build("edm_heun", model, p, rho=0)
    with pytest.raises(ValueError, match="pass a finite sigma_max"):
        zt = GaussianDiffusion(betas=diffcore.rescale_zero_terminal_snr(get_named_beta_schedule("linear", 100)), model_mean_type="v")
        build("edm_heun", model, zt)
    with pytest.raises(ValueError, match="s \\(sigma / alpha\\) must be finite and >= 0"):
        time_from_sigma_ratio(p, np.array([-1.0]))


def test_edm_starts_from_noise_at_its_own_sigma_max():
    """A user sigma_max below the process's: the prior draw is rescaled to pure noise at sigma_max."""
    data = GaussianMixture(np.array([1.0]), np.zeros((1, 1)), np.array([1.0]))
    for process in (diffcore.VESDE(), diffcore.VPSDE()):
        x = diffcore.sample("edm_heun", data.as_model(process, "eps"), process, (4000, 1), steps=30,
                            prediction="eps", sigma_max=10.0).x
        # from pure noise at sigma~ = 10 the data std 1 is reached up to 1/sqrt(1 + 1/100) and sampling noise
        assert abs(np.std(x) - 1.0) < 0.05, (type(process).__name__, np.std(x))


# ------------------------------------------------------------------------------- faults

def _counting_nan(model, nan_at_start=False):
    calls = []

    def counted(x, t_in, cond=None):
        calls.append(1)
        out = model(x, t_in)
        return out * np.nan if nan_at_start else out

    return counted, calls


def test_dopri5_stops_at_once_on_a_nonfinite_start():
    """A NaN x_T, a model that returns NaN from its first call, or float16 stop ode_dopri5 and
    ode_likelihood at once (< 100 model calls; 60,002 before), naming the cause."""
    p = VPSDE()
    exact = _gaussian().as_model(p, "eps")
    x_T = _x_T(p, n=4)
    bad = x_T.copy()
    bad[1, 2] = np.nan
    model, calls = _counting_nan(exact)
    with pytest.raises(FloatingPointError, match="x_T holds non-finite values"):
        sample("ode_dopri5", model, p, (4, 3), x_T=bad)
    assert len(calls) == 0
    model, calls = _counting_nan(exact, nan_at_start=True)
    with pytest.raises(FloatingPointError, match=r"the model\) returned non-finite values at the start time t0 = 1"):
        sample("ode_dopri5", model, p, (4, 3), x_T=x_T)
    assert len(calls) < 100
    model, calls = _counting_nan(exact)
    with pytest.raises(TypeError, match="float16 is not supported by the adaptive Dormand-Prince solver.*use float32"):
        sample("ode_dopri5", model, p, (4, 3), x_T=x_T.astype(np.float16))
    assert len(calls) < 100
    # the likelihood: NaN input, NaN model, float16
    score = _gaussian().as_model(p, "score")
    div = lambda z, t: _gaussian().marginal_score_divergence(z, t, p)  # noqa: E731
    model, calls = _counting_nan(score)
    with pytest.raises(FloatingPointError, match="non-finite input x"):
        diffcore.ode_likelihood(model, p, bad, divergence=div)
    with pytest.raises(TypeError, match="float16 is not supported by ode_likelihood's adaptive solver"):
        diffcore.ode_likelihood(model, p, x_T.astype(np.float16), divergence=div)
    assert len(calls) == 0
    model, calls = _counting_nan(score, nan_at_start=True)
    with pytest.raises(FloatingPointError, match=r"returned non-finite values at the start time t0 = 1e-05"):
        diffcore.ode_likelihood(model, p, x_T, divergence=div)
    assert len(calls) < 100


def test_dopri5_nan_start_under_jit_fails_fast():
    """Inside jax.jit no value can be read: the solve marks the examples failed on its first attempt
    (a non-finite slope, state or step size cannot be cured by a smaller step) instead of running on."""
    jax = pytest.importorskip("jax")
    bk = diffcore.backend("jax")
    xp = bk.xp

    def solve(y):
        r = dopri5(bk, lambda t, v: v * xp.nan, y, 1.0, 0.0, rtol=1e-5, atol=1e-5, raise_on_failure=False)
        return r.failed, r.nfe_total

    failed, evals = jax.jit(solve)(xp.ones((2, 2)))
    assert np.asarray(failed).tolist() == [True, True]
    assert int(evals) < 100


# ------------------------------------------------------------------------ explicit grids


def test_explicit_grids_reproduce_the_built_in_ones():
    """times= / sigmas= in place of steps give exactly the samplers' own grids (another library's
    schedule can be copied this way)."""
    p = VPSDE()
    model = _gaussian().as_model(p, "eps")
    x_T = _x_T(p)
    lin = np.linspace(1.0, 1e-3, 11)
    for name, opts, explicit in [
        ("ode_heun", dict(steps=10, spacing="linspace"), dict(times=lin)),
        ("ode_rk4", dict(steps=10, spacing="linspace"), dict(times=lin)),
        ("ddim", dict(steps=11, spacing="linspace"), dict(times=lin)),
        ("dpmpp_2m", dict(steps=11, spacing="linspace"), dict(times=lin)),
        ("edm_heun", dict(steps=8), dict(sigmas=np.append(diffcore.karras_sigmas(8, build("edm_heun", model, p, steps=8).plan.s_hat[-1], build("edm_heun", model, p, steps=8).plan.s_hat[0]), 0.0))),
    ]:
        a = sample(name, model, p, x_T.shape, x_T=x_T, **opts).x
        b = sample(name, model, p, x_T.shape, x_T=x_T, **explicit).x
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12, err_msg=name)
    # a different grid gives different samples (the option is not ignored)
    other = sample("ode_heun", model, p, x_T.shape, x_T=x_T, times=lin ** 2 * 0.999 + 1e-3).x
    assert np.max(np.abs(other - sample("ode_heun", model, p, x_T.shape, x_T=x_T, times=lin).x)) > 1e-4
    # a GaussianDiffusion takes kept original steps, ascending or descending
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    md = _gaussian().as_model(d, "eps")
    kept = [0, 10, 30, 60, 99]
    up = sample("ddim", md, d, x_T.shape, x_T=x_T, times=kept)
    down = sample("ddim", md, d, x_T.shape, x_T=x_T, times=kept[::-1])
    np.testing.assert_array_equal(up.x, down.x)
    assert up.nfe == 5
    np.testing.assert_array_equal(build("ddim", md, d, times=kept).times, kept[::-1])
    # the predictor-corrector family takes times with Euler-Maruyama
    pm = _gaussian().as_model(p, "score")
    ts = np.linspace(1.0, 1e-3, 30)
    a = sample("euler_maruyama", pm, p, x_T.shape, x_T=x_T, steps=30, seed=1).x
    b = sample("euler_maruyama", pm, p, x_T.shape, x_T=x_T, times=ts, seed=1).x
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_explicit_grids_are_validated():
    p = VPSDE()
    model = _gaussian().as_model(p, "eps")
    cases = [
        ("ode_heun", dict(times=[1.0, 0.5, 0.7, 0.1]), ValueError, "times must be strictly decreasing"),
        ("ddim", dict(times=[1.2, 0.5, 0.1]), ValueError, r"times must lie in \[0, 1\] for VPSDE; got values from 0.1 to 1.2"),
        ("dpmpp_2m", dict(times=[1.0, 0.5, 0.0]), ValueError, "times must end above t_min = 0 for VPSDE"),
        ("ode_euler", dict(times=[1.0, float("nan")]), ValueError, "times must be finite"),
        ("ode_euler", dict(times=[0.5]), ValueError, "times must hold at least 2 times"),
        ("edm_heun", dict(sigmas=[1.0, 2.0, 0.0]), ValueError, "sigmas must hold at least 2 finite values > 0 in strictly decreasing order"),
        ("edm_heun", dict(sigmas=[1e5, 1.0]), ValueError, r"sigma_max must lie in the process's range"),
        ("pc", dict(times=[1.0, 0.5, 0.1]), ValueError, "times= needs predictor='euler_maruyama'"),
    ]
    for name, opts, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            build(name, model, p, **opts)
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    with pytest.raises(ValueError, match="times of a GaussianDiffusion must be integer steps"):
        build("ddim", _gaussian().as_model(d, "eps"), d, times=[99, 50.5, 0])
    with pytest.raises(ValueError, match=r"times must lie in \[0, 99\]"):
        build("ddim", _gaussian().as_model(d, "eps"), d, times=[100, 50, 0])
