"""DDPM ancestral and DDIM samplers, inpainting, guidance, the one-call API and its errors.

Statistical tests on NumPy at fixed seeds against exact samples of an analytic mixture; other
namespaces replay short trajectories with the same NumPy-made noise (docs/conventions.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import diffcore
from diffcore import GaussianDiffusion, get_named_beta_schedule
from diffcore.analytic import GaussianMixture
from diffcore.samplers import build, sample
from diffcore.samplers._base import plan_to

from conftest import load_namespace, to_np, to_xp
from sampler_utils import NO_WEIGHTS, energy_distance, exact_samples, two_gaussians_2d

N = 2000


@pytest.fixture(scope="module")
def setup():
    mix = two_gaussians_2d()
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    refs = [exact_samples(mix, N, seed) for seed in range(1, 5)]
    floor = max(energy_distance(refs[0], r) for r in refs[1:])
    return mix, d, refs[0], floor


def _dist(setup, name, model=None, process=None, seed=0, **options):
    mix, d, ref, _ = setup
    process = process or d
    model = model or mix.as_model(process, "eps")
    return energy_distance(sample(name, model, process, (N, 2), seed=seed, **options).x, ref)


@pytest.mark.parametrize(
    "name, options",
    [("ddpm", {}), ("ddpm", {"steps": 100}), ("ddim", {"steps": 100}), ("ddim", {"steps": 100, "eta": 1.0})],
)
def test_samplers_reach_the_target(setup, name, options):
    floor = setup[3]
    assert _dist(setup, name, **options) < 3 * floor


@pytest.mark.parametrize("name, options", [("ddpm", {}), ("ddim", {}), ("ddim", {"eta": 1.0})])
def test_distance_falls_with_steps(setup, name, options):
    coarse = _dist(setup, name, steps=5, **options)
    fine = _dist(setup, name, steps=50, **options)
    assert fine < coarse / 5


def test_mutants_fail(setup):
    """An off-by-one time input and a dropped noise term are visible at 20 steps."""
    mix, d, ref, floor = setup
    exact = mix.as_model(d, "eps")
    good = _dist(setup, "ddpm", steps=20)

    def off_by_one(x, t_in):
        return exact(x, np.minimum(t_in + 50, 999))  # the network sees the step after the kept one

    assert _dist(setup, "ddpm", model=off_by_one, steps=20) > 3 * good
    sampler = build("ddpm", exact, d, steps=20)
    no_noise = sampler._replace(step=lambda s, p, z, a: sampler.step(s, p, 0.0 * z, a))
    x = diffcore.backend("numpy").loop(
        no_noise.step, no_noise.init(np.random.default_rng(0).standard_normal((N, 2))),
        plan_to(no_noise.plan, load_namespace("numpy"), np.float64, "cpu"),
        key=diffcore.backend("numpy").key(0), noise_shape=(N, 1, 2), args=NO_WEIGHTS,
    ).x
    assert energy_distance(x, ref) > 10 * max(good, floor)


def _single_gaussian(d, m=0.7, s=0.4):
    """Exact eps-model of data N(m, s^2) and the PF-ODE's closed-form map x_T -> x_0."""

    def model(x, t_in):
        t = d.time_from_model_time(t_in)
        a = d.sqrt_alphas_cumprod[t][:, None]
        sg = d.sqrt_one_minus_alphas_cumprod[t][:, None]
        return sg * (x - a * m) / (a**2 * s**2 + sg**2)

    aT, sT = d.sqrt_alphas_cumprod[-1], d.sqrt_one_minus_alphas_cumprod[-1]
    flow = lambda xT: m + s / np.sqrt(aT**2 * s**2 + sT**2) * (xT - aT * m)
    return model, flow


def test_ddim_eta0_is_the_probability_flow_map():
    d = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 1000))
    model, flow = _single_gaussian(d)
    xT = np.random.default_rng(0).standard_normal((64, 1))
    errors = [np.max(np.abs(sample("ddim", model, d, (64, 1), x_T=xT, steps=n).x - flow(xT))) for n in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3


def test_ddim_uses_the_previous_kept_step_on_uneven_respacing():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    model, flow = _single_gaussian(d)
    s = build("ddim", model, d, steps="10,15,20")  # uneven: three sections of different strides
    kept = diffcore.respaced_timesteps(1000, "10,15,20")[::-1]
    np.testing.assert_allclose(s.plan.alpha, d.sqrt_alphas_cumprod[kept], rtol=1e-14)
    np.testing.assert_allclose(s.plan.alpha_next[:-1], d.sqrt_alphas_cumprod[kept[1:]], rtol=1e-14)
    assert s.plan.alpha_next[-1] == 1.0 and s.plan.sigma_next[-1] == 0.0  # the last step goes to abar = 1
    np.testing.assert_array_equal(s.plan.t_in, kept)
    # a fixed-stride "previous step" (the bug of other libraries) is visibly worse on the exact map
    xT = np.random.default_rng(1).standard_normal((32, 1))
    good = np.max(np.abs(sample("ddim", model, d, (32, 1), x_T=xT, steps="10,15,20").x - flow(xT)))
    stride = 1000 // 45
    wrong_prev = np.clip(kept - stride, 0, None)
    bad_plan = s.plan._replace(
        alpha_next=np.append(d.sqrt_alphas_cumprod[wrong_prev[:-1]], 1.0),
        sigma_next=np.append(d.sqrt_one_minus_alphas_cumprod[wrong_prev[:-1]], 0.0),
        c_eps=np.append(d.sqrt_one_minus_alphas_cumprod[wrong_prev[:-1]], 0.0),
    )
    x = _replay(s._replace(plan=bad_plan), xT, [np.zeros((32, 1, 1))] * len(kept), load_namespace("numpy"))[0]
    assert np.max(np.abs(x - flow(xT))) > 2 * good


def _replay(sampler, x_T, noises, xp, jit=False):
    """Run a sampler's steps with given NumPy-made noise in namespace ``xp`` (jit on JAX if asked)."""
    X = lambda a: to_xp(a, xp)
    plan = plan_to(sampler.plan, xp, xp.float64, None)

    def run(x_T, plan, noises):
        state = sampler.init(x_T)
        for i in range(len(noises)):
            state = sampler.step(state, tuple(p[i] for p in plan), noises[i], NO_WEIGHTS)
        return sampler.result(state), state.bad_step

    if jit:
        import jax

        run = jax.jit(run)
    return run(X(x_T), plan, [X(z) for z in noises])


def test_same_trajectories_on_every_namespace(xp):
    _check_trajectories(xp, jit=False)


def test_same_trajectories_under_jax_jit():
    _check_trajectories(load_namespace("jax"), jit=True)


def _check_trajectories(xp, jit):
    d = GaussianDiffusion(betas=get_named_beta_schedule("cosine", 100), model_var_type="learned_range")
    mix = two_gaussians_2d()
    rng = np.random.default_rng(3)
    xT = rng.standard_normal((4, 2))
    eps_model = mix.as_model(d, "eps")

    def learned(x, t_in):
        n = array_ns(x)
        return n.concat([eps_model(x, t_in), 0.3 * n.tanh(x)], axis=1)

    array_ns = lambda a: diffcore._array.array_namespace(a)
    mask = np.array([[1.0, 0.0]])
    known = np.array([[0.5, 0.0]])
    cases = [
        (build("ddpm", learned, d, steps=5), 1),
        (build("ddim", eps_model, d, steps=5, eta=0.5), 1),
    ]
    for s, draws in cases:
        noises = [rng.standard_normal((4, draws, 2)) for _ in range(5)]
        ref = _replay(s, xT, noises, load_namespace("numpy"))[0]
        got, bad = _replay(s, xT, noises, xp, jit=jit)
        np.testing.assert_allclose(to_np(got), ref, rtol=1e-10, atol=1e-12)
        assert int(bad) == -1
        ip = diffcore.samplers.inpaint(s, to_xp(mask, xp), to_xp(known, xp), (4, 2))
        noises = [rng.standard_normal((4, draws + 1, 2)) for _ in range(5)]
        ref_ip = diffcore.samplers.inpaint(s, mask, known, (4, 2))
        want = _replay(ref_ip, xT, noises, load_namespace("numpy"))[0]
        got = _replay(ip, xT, noises, xp, jit=jit)[0]
        np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-12)


def test_backends_run_the_one_call_api():
    pytest.importorskip("diffcore_torch")
    pytest.importorskip("diffcore_jax")
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    mix = two_gaussians_2d()
    xT = np.random.default_rng(4).standard_normal((8, 2))
    ref = sample("ddim", mix.as_model(d, "eps"), d, (8, 2), x_T=xT, steps=10).x
    for name in ("torch", "jax"):
        bk = diffcore.backend(name)
        x_T = bk.xp.asarray(xT)
        r = sample("ddim", mix.as_model(d, "eps"), d, (8, 2), backend=bk, x_T=x_T, steps=10)
        assert r.nfe == 10
        np.testing.assert_allclose(to_np(r.x), ref, rtol=1e-6, atol=1e-8)
        # stochastic: the backend's own generator, per-sample seeds independent of the batch
        ids = np.arange(8)
        full = sample("ddpm", mix.as_model(d, "eps"), d, (8, 2), backend=bk, seed=5, sample_ids=bk.xp.asarray(ids))
        one = sample("ddpm", mix.as_model(d, "eps"), d, (1, 2), backend=bk, seed=5, sample_ids=bk.xp.asarray(ids[3:4]))
        np.testing.assert_allclose(to_np(one.x)[0], to_np(full.x)[3], rtol=1e-5, atol=1e-6)


def test_per_sample_seeds_make_samples_independent_of_the_batch():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50))
    model = two_gaussians_2d().as_model(d, "eps")
    full = sample("ddpm", model, d, (8, 2), seed=3, sample_ids=np.arange(8)).x
    for i in (0, 5):
        one = sample("ddpm", model, d, (1, 2), seed=3, sample_ids=np.array([i])).x
        np.testing.assert_array_equal(one[0], full[i])


# ------------------------------------------------------------------------------------ inpainting


def _gaussian_eps_model(d, cov):
    """Exact eps model of data N(0, cov): eps = sigma (alpha^2 cov + sigma^2 I)^-1 x."""
    cov = np.asarray(cov)

    def model(x, t_in):
        t = d.time_from_model_time(t_in)
        a2 = d.alphas_cumprod[t][:, None, None]
        s2 = 1.0 - a2
        prec = np.linalg.inv(a2 * cov + s2 * np.eye(cov.shape[0]))
        return np.sqrt(s2)[:, :, 0] * np.einsum("bij,bj->bi", prec, x)

    return model


@pytest.mark.parametrize("name, options", [("ddpm", {"steps": 200}), ("ddim", {"steps": 200, "eta": 1.0})])
def test_inpainting_independent_parts_are_exact(name, options):
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    cov = np.diag([0.5, 0.3]) ** 2
    model = _gaussian_eps_model(d, cov)
    known = np.array([[0.8, 0.0]])
    mask = np.array([[1.0, 0.0]])
    x = sample(name, model, d, (N, 2), seed=1, mask=mask, known=known, **options).x
    np.testing.assert_array_equal(x[:, 0], 0.8)  # the known part is the clean observation
    ref = np.random.default_rng(9).normal(0, 0.3, size=N)
    floor = energy_distance(np.random.default_rng(10).normal(0, 0.3, size=(N, 1)), ref[:, None])
    assert energy_distance(x[:, 1:], ref[:, None]) < 3 * max(floor, 1e-4)


def test_inpainting_on_a_correlated_gaussian_is_an_approximation():
    """Measured, not hidden: the projection method misses the exact conditional when parts correlate."""
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    rho = 0.9
    cov = np.array([[1.0, rho], [rho, 1.0]]) * 0.25
    known = np.array([[0.8, 0.0]])
    x = sample("ddpm", _gaussian_eps_model(d, cov), d, (N, 2), seed=2, mask=np.array([[1.0, 0.0]]), known=known, steps=200).x
    np.testing.assert_array_equal(x[:, 0], 0.8)
    exact_mean, exact_std = rho * 0.8, np.sqrt(0.25 * (1 - rho**2))
    mean_err, std_err = x[:, 1].mean() - exact_mean, x[:, 1].std() - exact_std
    print(f"\nprojection inpainting, rho={rho}: conditional mean error {mean_err:+.4f} (exact {exact_mean:.4f}), "
          f"std error {std_err:+.4f} (exact {exact_std:.4f})")
    # the unknown part follows the known one (most of the correlation is recovered) ...
    assert x[:, 1].mean() > 0.5 * exact_mean
    assert np.isfinite(mean_err) and np.isfinite(std_err)


# ---------------------------------------------------------------------- colorization (inpainting in a basis)

BASIS = diffcore.samplers.colorization_basis(3)


def _pixel_model(mix, d):
    """The exact eps model of x = B^T y, y ~ ``mix`` (3-D, in the colour basis), for (B, 3, 1, 1)
    images: eps_x(x) = B^T eps_y(B x) (eps is equivariant under orthogonal maps). Any namespace."""
    from diffcore.samplers.control import change_basis

    inner = mix.as_model(d, "eps")

    def model(x, t_in):
        ns = diffcore._array.array_namespace(x)
        b = diffcore._array.as_like(BASIS, x)
        y = ns.reshape(change_basis(b, x), (x.shape[0], 3))
        return change_basis(ns.matrix_transpose(b), ns.reshape(inner(y, t_in), tuple(x.shape)))

    return model


def test_colorization_basis_is_orthogonal_with_the_grey_first():
    np.testing.assert_allclose(BASIS @ BASIS.T, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(BASIS[0], np.full(3, 3**-0.5))
    # score_sde's M (columns: the grey, then two colour differences), up to the sign of a colour axis
    M = np.array([[5.7735014e-01, -8.1649649e-01, 4.7008697e-08],
                  [5.7735026e-01, 4.0824834e-01, 7.0710671e-01],
                  [5.7735026e-01, 4.0824822e-01, -7.0710683e-01]])
    np.testing.assert_allclose(np.abs(BASIS), np.abs(M.T), atol=1e-6)
    mask, known, basis = diffcore.samplers.colorization_inputs(np.full((2, 1, 4, 4), 0.5))  # grey input
    np.testing.assert_allclose(known[:, 0], 0.5 * np.sqrt(3)) and np.testing.assert_array_equal(mask.ravel(), [1, 0, 0])


def test_colorization_matches_the_exact_conditional():
    """A Gaussian whose grey channel is independent of its colour channels (which correlate the
    pixels' R, G, B): projecting the grey channel samples the exact conditional p(x | grey). The
    probability-flow ODE (Heun, 30 steps) is accurate on a Gaussian; DDPM on a coarse grid is not."""
    d = diffcore.VPSDE()
    means, stds = np.array([[0.1, 0.3, -0.2]]), np.array([[0.5, 0.4, 0.15]])
    model = _pixel_model(GaussianMixture(np.array([1.0]), means, stds), d)
    observed = np.array([[[[0.6]], [[0.2]], [[-0.1]]]])  # an RGB image (1, 3, 1, 1)
    mask, known, basis = diffcore.samplers.colorization_inputs(observed)
    x = sample("ode_heun", model, d, (N, 3, 1, 1), seed=3, steps=30, mask=mask, known=known, basis=basis).x[..., 0, 0]
    grey = BASIS @ observed[0, :, 0, 0]
    np.testing.assert_allclose((x @ BASIS.T)[:, 0], grey[0], rtol=0, atol=1e-12)  # the grey level is kept
    want_mean = BASIS.T @ np.array([grey[0], *means[0, 1:]])
    want_cov = BASIS.T @ np.diag([0.0, *stds[0, 1:] ** 2]) @ BASIS
    got_mean, got_cov = x.mean(0), np.cov(x.T)
    print(f"\ncolorization: mean error {np.abs(got_mean - want_mean).max():.4f}, cov error {np.abs(got_cov - want_cov).max():.4f}")
    np.testing.assert_allclose(got_mean, want_mean, atol=0.03)
    np.testing.assert_allclose(got_cov, want_cov, atol=0.015)
    assert np.abs(want_cov - np.diag(np.diag(want_cov))).max() > 0.03  # the channels do correlate
    # inpainting channel 0 in pixel space instead is another (wrong) conditional
    plain = sample("ode_heun", model, d, (N, 3, 1, 1), seed=3, steps=30, mask=mask, known=known).x[..., 0, 0]
    assert np.abs(plain.mean(0) - want_mean).max() > 0.1


@pytest.mark.parametrize("name, options", [("ddpm", {"steps": 5}), ("ddim", {"steps": 4, "eta": 0.5})])
def test_colorization_is_inpainting_after_the_change_of_basis(xp, name, options):
    """Colorizing x with the pixel model = plain inpainting of y = B x with the model in the basis
    (step noise rotated alike), on every namespace (JAX: one case, compiled; its eager dispatch is slow)."""
    from diffcore.samplers.control import change_basis

    jit = xp.__name__.startswith("jax")
    if jit and name != "ddim":
        pytest.skip("JAX runs the ddim case only")
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    mix = GaussianMixture(np.array([0.4, 0.6]), np.array([[0.5, -0.3, 0.2], [-0.4, 0.2, -0.1]]),
                          np.array([[0.3, 0.2, 0.4], [0.2, 0.3, 0.1]]))
    inner = mix.as_model(d, "eps")
    basis_model = lambda y, t_in: inner(y[..., 0, 0], t_in)[..., None, None]  # noqa: E731
    rng = np.random.default_rng(5)
    shape = (4, 3, 1, 1)
    x_T = rng.standard_normal(shape)
    mask, known = np.array([1.0, 0.0, 0.0])[None, :, None, None], rng.standard_normal((4, 3, 1, 1))
    s_x, s_y = build(name, _pixel_model(mix, d), d, **options), build(name, basis_model, d, **options)
    col = diffcore.samplers.inpaint(s_x, to_xp(mask, xp), to_xp(known, xp), shape, basis=to_xp(BASIS, xp))
    ip = diffcore.samplers.inpaint(s_y, to_xp(mask, xp), to_xp(known, xp), shape)
    k = s_x.noise_draws
    noises = [rng.standard_normal((4, k + 1, 3, 1, 1)) for _ in range(len(s_x.plan[0]))]
    rotated = [np.concatenate([np.stack([change_basis(BASIS, z[:, j]) for j in range(k)], 1), z[:, k:]], 1) if k else z
               for z in noises]
    x = to_np(_replay(col, x_T, noises, xp, jit=jit)[0])
    y = to_np(_replay(ip, change_basis(BASIS, x_T), rotated, xp, jit=jit)[0])
    np.testing.assert_allclose(x, change_basis(BASIS.T, y), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(change_basis(BASIS, x)[:, 0], known[:, 0], atol=1e-12)


def test_colorization_bad_basis():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    model = lambda x, t: 0.0 * x  # noqa: E731
    mask, known = np.array([1.0, 0.0, 0.0])[None, :, None, None], np.zeros((1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"basis must be orthogonal .* max \|basis basis\^T - I\| = 3"):
        sample("ddim", model, d, (2, 3, 1, 1), steps=2, mask=mask, known=known, basis=2 * np.eye(3))
    with pytest.raises(ValueError, match=r"basis must be a \(3, 3\) matrix acting on the 3 channels"):
        sample("ddim", model, d, (2, 3, 1, 1), steps=2, mask=mask, known=known, basis=np.eye(2))
    with pytest.raises(ValueError, match="basis is the basis of mask and known"):
        sample("ddim", model, d, (2, 3, 1, 1), steps=2, basis=BASIS)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, ...\) colour images or \(B, 1, ...\) grey"):
        diffcore.samplers.colorization_inputs(np.zeros((2, 2, 4, 4)))


# ---------------------------------------------------------------------------------- kept states


@pytest.mark.parametrize("backend_name", ["numpy", "torch", "jax"])
def test_keep_returns_the_states_after_the_kept_steps(backend_name):
    if backend_name not in diffcore.available_backends():
        pytest.skip(f"backend {backend_name} not installed")
    bk = diffcore.backend(backend_name)
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    model = two_gaussians_2d().as_model(d, "eps")
    xT = np.random.default_rng(6).standard_normal((4, 2))
    r = sample("ddim", model, d, (4, 2), backend=bk, x_T=bk.xp.asarray(xT), steps=6, keep=[-1, 0, 2])
    plain = sample("ddim", model, d, (4, 2), backend=bk, x_T=bk.xp.asarray(xT), steps=6)
    traj = r.trajectory
    assert traj.steps == (0, 2, 6) and to_np(traj.x).shape == (3, 4, 2)
    np.testing.assert_array_equal(to_np(r.x), to_np(plain.x))  # keeping changes nothing
    s = build("ddim", model, d, steps=6)
    np.testing.assert_array_equal(traj.times[:2], s.times[[0, 2]]) and np.isnan(traj.times[2])
    state, plan = s.init(xT), plan_to(s.plan, np, np.float64, None)
    for i in range(2):
        state = s.step(state, tuple(p[i] for p in plan), None, NO_WEIGHTS)
    np.testing.assert_allclose(to_np(traj.x), np.stack([xT, state.x, to_np(r.x)]), rtol=1e-12, atol=1e-12)


def test_keep_with_inpainting_and_a_split_driver():
    """edm_heun runs its last row apart (one model call): the samples are still the last entry."""
    vp = diffcore.VPSDE()
    model = two_gaussians_2d().as_model(vp, "eps")
    opts = dict(steps=5, mask=np.array([[1.0, 0.0]]), known=np.array([[0.3, 0.0]]), seed=2)
    r = sample("edm_heun", model, vp, (8, 2), keep=range(6), **opts)
    np.testing.assert_array_equal(r.x, sample("edm_heun", model, vp, (8, 2), **opts).x)
    np.testing.assert_array_equal(r.trajectory.x[-1], r.x)
    assert r.trajectory.steps == (0, 1, 2, 3, 4, 5)
    np.testing.assert_array_equal(r.trajectory.x[1:-1, :, 0].std(axis=1) > 0, True)  # noisy known part on the way
    with pytest.raises(ValueError, match=r"keep must hold numbers of steps in 0..5 \(or -6..-1 from the end\); got \[7\]"):
        sample("edm_heun", model, vp, (8, 2), steps=5, keep=[7])
    with pytest.raises(ValueError, match="ode_dopri5 has no fixed grid of steps to wrap"):
        sample("ode_dopri5", model, vp, (8, 2), keep=[0])


# ------------------------------------------------------------------------------------- guidance


def _conditional_mixture_model(mix, d):
    """model(x, t_in, cond): cond = k selects component k; cond = None (or -1) is the whole mixture."""
    comps = [GaussianMixture(np.array([1.0]), mix.means[k : k + 1], mix.stds[k : k + 1]) for k in range(2)]

    def model(x, t_in, cond=None):
        if cond is None:
            return mix.as_model(d, "eps")(x, t_in)
        outs = np.stack([c.as_model(d, "eps")(x, t_in) for c in comps])
        return np.where(np.asarray(cond)[None, :, None] == np.arange(2)[:, None, None], outs, 0).sum(0)

    return model, comps


def test_classifier_free_guidance_mixes_predictions():
    mix = two_gaussians_2d()
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    model, comps = _conditional_mixture_model(mix, d)
    x = np.random.default_rng(0).standard_normal((6, 2))
    t_in = np.full(6, 40)
    cond = np.array([0, 1, 0, 1, 1, 0])
    cfg = diffcore.samplers.control.classifier_free_guidance
    np.testing.assert_allclose(cfg(model, 1.0)(x, t_in, cond), model(x, t_in, cond), rtol=1e-12)
    np.testing.assert_allclose(cfg(model, 0.0)(x, t_in, cond), model(x, t_in), rtol=1e-12, atol=1e-14)
    u, c = model(x, t_in), model(x, t_in, cond)
    np.testing.assert_allclose(cfg(model, 3.0)(x, t_in, cond), u + 3.0 * (c - u), rtol=1e-10)
    # guiding eps is guiding x_0: mixing in either space gives the same x_0
    a, s = d.sqrt_alphas_cumprod[40], d.sqrt_one_minus_alphas_cumprod[40]
    x0_mix = (x - s * u) / a + 3.0 * ((x - s * c) / a - (x - s * u) / a)
    np.testing.assert_allclose((x - s * cfg(model, 3.0)(x, t_in, cond)) / a, x0_mix, rtol=1e-10)
    # learned variance: the mean channels are mixed, the variance channels are the conditional ones
    lv = lambda x, t, y=None: np.concatenate([model(x, t, y), np.full_like(x, 0.1 if y is None else 0.7)], axis=1)
    out = cfg(lv, 2.0, learned_variance=True)(x, t_in, cond)
    np.testing.assert_allclose(out[:, :2], u + 2.0 * (c - u), rtol=1e-10)
    np.testing.assert_array_equal(out[:, 2:], 0.7)
    # the guided model samples the conditional component at scale 1
    out = sample("ddim", cfg(model, 1.0), d, (N, 2), seed=0, steps=50, cond=np.zeros(N, dtype=int)).x
    ref = exact_samples(comps[0], N, 1)
    assert energy_distance(out, ref) < 0.01
    with pytest.raises(TypeError, match="needs a conditional model"):
        cfg(lambda x, t: x, 2.0)


def test_classifier_free_guidance_stays_finite_at_zero_terminal_snr():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50, rescale_zero_terminal_snr=True), model_mean_type="x0")
    model = lambda x, t, y=None: 0.5 * x + (0.0 if y is None else 0.2)
    r = sample("ddim", diffcore.samplers.control.classifier_free_guidance(model, 4.0), d, (8, 2), steps=10, cond=np.ones(8))
    assert np.all(np.isfinite(r.x))


def test_classifier_guidance_recovers_the_class_conditional_score():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffcore_torch")
    mix = two_gaussians_2d()
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    _, comps = _conditional_mixture_model(mix, d)
    logw = torch.tensor(np.log(mix.weights))

    def classifier(x, t_in, y):
        # exact log p_t(y | x) by Bayes: log w_y + log p_t(x | y) - log p_t(x)
        t = d.time_from_model_time(t_in)
        lp = torch.stack([comps[k].marginal_log_prob(x, t, d) for k in range(2)], dim=1) + logw
        return lp.gather(1, y[:, None])[:, 0] - torch.logsumexp(lp, dim=1)

    guided = diffcore.samplers.control.classifier_guidance(
        mix.as_model(d, "eps"), d, classifier, 1.0, backend=diffcore.backend("torch")
    )
    x = torch.tensor(np.random.default_rng(1).standard_normal((5, 2)))
    t_in = torch.full((5,), 30)
    y = torch.tensor([0, 1, 1, 0, 1])
    want = np.where(y.numpy()[:, None] == 0, comps[0].as_model(d, "eps")(x, t_in).numpy(), comps[1].as_model(d, "eps")(x, t_in).numpy())
    np.testing.assert_allclose(guided(x, t_in, y).numpy(), want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------- bad input


def test_nonfinite_output_names_step_and_time():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))

    def blows_up(x, t_in):
        return np.where(t_in[:, None] < 50, np.nan, 0.0 * x)

    with pytest.raises(FloatingPointError, match=r"state became non-finite at step 50 \(time 49 "):
        sample("ddpm", blows_up, d, (3, 2))
    # a respaced chain names the process's original step, not the chain index (kept 99, 88, ..., 11, 0)
    with pytest.raises(FloatingPointError, match=r"state became non-finite at step 5 \(time 44 "):
        sample("ddpm", blows_up, d, (3, 2), steps=10)


def test_torch_probes_name_the_first_nonfinite_step(torch_one_thread):
    """Eager torch runs keep each step's probe aside and find the first bad step after the loop
    (docs/performance.md): the same step as the flag carried in the state, in the first chunk of
    probes and past it (chunks of 1024 are folded), for NaN and for inf; a finite run passes."""
    import torch
    from diffcore.samplers._base import NonfiniteProbes, nonfinite_probes

    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1100))
    bad_from = {"t": -1, "value": float("nan")}

    def model(x, t_in):  # a non-finite output from step 1099 - bad_from["t"] on (t_in descends)
        return 0.1 * x + torch.where(t_in[:, None] <= bad_from["t"], bad_from["value"], 0.0)

    sample("ddpm", model, d, (2, 2), backend="torch")  # finite: no error
    for t, value, step in ((1099 - 7, float("nan"), 7), (1099 - 1050, float("inf"), 1050), (0, float("-inf"), 1099)):
        bad_from.update(t=t, value=value)
        with pytest.raises(FloatingPointError, match=rf"state became non-finite at step {step} \(time {t} "):
            sample("ddpm", model, d, (2, 2), backend="torch")
    # the probes and the state's flag agree, step by step, on the same run
    bad_from.update(t=1099 - 3, value=float("nan"))
    s = build("ddpm", model, d)
    plan = plan_to(s.plan, load_namespace("torch"), torch.float64, None)
    rows = list(zip(*(p.unbind(0) for p in plan)))
    z = torch.zeros((2, 1, 2), dtype=torch.float64)
    plain = probed = s.init(torch.ones((2, 2), dtype=torch.float64))
    with nonfinite_probes() as probes:
        for row in rows[:10]:
            probed = s.step(probed, row, z, NO_WEIGHTS)
    for row in rows[:10]:
        plain = s.step(plain, row, z, NO_WEIGHTS)
    assert int(probed.bad_step) == -1 and int(plain.bad_step) == 3 and probes.first_bad(probed.bad_step) == 3
    assert NonfiniteProbes().first_bad(torch.tensor(-1)) == -1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_torch_probe_is_exact_at_the_largest_finite_values(dtype):
    """A state of each dtype's largest finite values (whose plain sum overflows) is not flagged;
    one inf or NaN among them is, at its own index."""
    import torch
    from diffcore.samplers._base import flag_nonfinite, nonfinite_probes

    dt = getattr(torch, dtype)
    big = torch.finfo(dt).max
    finite = torch.tensor([[big, big], [-big, big]], dtype=dt)
    flag = torch.tensor(-1)
    for bad, index in ((None, -1), (float("inf"), 2), (float("-inf"), 2), (float("nan"), 2)):

        def state(i):  # step i's state: bad from step `index` on
            x = finite.clone()
            if bad is not None and i >= index:
                x[1, 0] = bad
            return x

        with nonfinite_probes() as probes:
            for i in range(4):
                assert flag_nonfinite(flag, state(i), torch.tensor(i)) is flag  # kept aside
        assert probes.first_bad(flag) == index, (dtype, bad)
        for i in range(4):  # the flag carried in the state (outside a probed run) agrees
            flag = flag_nonfinite(flag, state(i), torch.tensor(i))
        assert int(flag) == index
        flag = torch.tensor(-1)


def test_linear_combination_equals_the_plain_expression_and_leaves_its_inputs_alone():
    import torch
    from diffcore._array import linear_combination

    rng = np.random.default_rng(0)
    x, o, z = (rng.standard_normal((4, 3, 5)).astype(np.float32) for _ in range(3))
    a, b, c = np.float32(0.9), np.float32(-0.2), np.float32(0.05)
    want = a * x + b * o + c * z
    np.testing.assert_allclose(linear_combination(a, x, b, o, c, z), want, rtol=1e-6)
    tx, to, tz = (torch.tensor(v) for v in (x, o, z))
    copies = [t.clone() for t in (tx, to, tz)]
    for coeffs in ((torch.tensor(a), torch.tensor(b), torch.tensor(c)), (float(a), float(b), float(c))):
        got = linear_combination(coeffs[0], tx, coeffs[1], to, coeffs[2], tz)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
        assert all(torch.equal(t, u) for t, u in zip((tx, to, tz), copies))  # a fresh tensor; inputs untouched
        assert got.data_ptr() not in {t.data_ptr() for t in (tx, to, tz)}
    # with autograd, broadcasting coefficients or mixed shapes: the plain expression (gradients flow)
    w = tx.clone().requires_grad_(True)
    linear_combination(torch.tensor(2.0), w, torch.tensor(1.0), to).sum().backward()
    assert torch.equal(w.grad, torch.full_like(tx, 2.0))
    row = torch.arange(5, dtype=torch.float32)
    np.testing.assert_allclose(linear_combination(row, tx, 1.0, to).numpy(), row.numpy() * x + o, rtol=1e-6)
    # promotions the plain expression makes (integer tensors, a complex coefficient): the plain result
    xi = torch.arange(6).reshape(2, 3)
    for coeffs in ((2, 0.5), (torch.tensor(2), torch.tensor(0.5)), (1.0, torch.tensor(1j))):
        want_p = coeffs[0] * xi + coeffs[1] * xi
        got_p = linear_combination(coeffs[0], xi, coeffs[1], xi)
        assert got_p.dtype == want_p.dtype and torch.equal(got_p, want_p), coeffs


def test_a_torch_step_vmapped_over_its_noise_alone():
    """torch.func.vmap over the noise only (the state unbatched): the fused update must not write a
    batched value into an unbatched tensor in place."""
    import torch
    from array_api_compat import torch as torch_xp

    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50))
    s = build("ddpm", lambda x, t: 0.1 * x, d)
    x = torch.randn(2, 3, dtype=torch.float64)
    plan = plan_to(s.plan, torch_xp, x.dtype, None)
    row = tuple(p[0] for p in plan)
    state = s.init(x)
    zs = torch.randn(4, 2, 1, 3, dtype=torch.float64)
    got = torch.func.vmap(lambda z: s.step(state, row, z, NO_WEIGHTS).x)(zs)
    want = torch.stack([s.step(state, row, z, NO_WEIGHTS).x for z in zs])
    torch.testing.assert_close(got, want)


def test_nonfinite_x_T_is_not_blamed_on_the_model():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    calls = []

    def model(x, t_in):
        calls.append(1)
        return 0.0 * x

    x_T = np.array([[0.0, np.nan], [1.0, 2.0]])
    for name in ("ddpm", "ddim"):
        with pytest.raises(FloatingPointError, match=f"sampler '{name}': x_T holds non-finite values"):
            sample(name, model, d, (2, 2), x_T=x_T)
    assert not calls


def test_bad_input():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    model = lambda x, t: x
    with pytest.raises(ValueError, match="unknown sampler 'dddim'; valid samplers: .*ddim.*ddpm"):
        sample("dddim", model, d, (2, 2))
    with pytest.raises(ValueError, match="steps must be an integer >= 1|num_steps"):
        sample("ddim", model, d, (2, 2), steps=0)
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]; got 1.5"):
        sample("ddim", model, d, (2, 2), eta=1.5)
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast to the sample shape \(2, 2\)"):
        sample("ddim", model, d, (2, 2), mask=np.ones(3), known=np.ones(2))
    with pytest.raises(ValueError, match="needs both mask and known"):
        sample("ddim", model, d, (2, 2), mask=np.ones(2))
    with pytest.raises(TypeError, match="needs a process with the capability 'discrete_chain'"):
        sample("ddpm", model, diffcore.VPSDE(), (2, 2))
    with pytest.raises(ValueError, match="shape must be a non-empty tuple"):
        sample("ddim", model, d, ())


def test_drivers_use_the_callers_backend():
    """Samplers with their own driver (adaptive, EDM) run on the backend object the caller gave."""
    calls = []

    class Recording(diffcore.NumPyBackend):
        def loop(self, *args, **kwargs):
            calls.append("loop")
            return super().loop(*args, **kwargs)

        def while_loop(self, *args, **kwargs):
            calls.append("while_loop")
            return super().while_loop(*args, **kwargs)

    sde = diffcore.VPSDE()
    model = two_gaussians_2d().as_model(sde, "score")
    sample("ode_dopri5", model, sde, (4, 2), backend=Recording(), rtol=1e-3, atol=1e-3)
    assert calls == ["while_loop"]
    calls.clear()
    sample("edm_heun", model, sde, (4, 2), backend=Recording(), steps=5, prediction="score")
    assert calls and set(calls) == {"loop"}


def test_no_value_reads_inside_the_sampling_loop(monkeypatch):
    """Times and steps come from the plan: the loop must not read array values (a sync per step on GPUs)."""
    import diffcore._array as arr

    reads = []
    real = arr.concrete_min_max

    def counting(x):
        out = real(x)
        if out is not None:
            reads.append(tuple(x.shape))
        return out

    monkeypatch.setattr(arr, "concrete_min_max", counting)
    d, vp = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100)), diffcore.VPSDE()
    counts = []
    for steps, rtol in ((10, 1e-2), (40, 1e-5)):  # reads while building the plan are fine; none per step
        reads.clear()
        sample("ddpm", two_gaussians_2d().as_model(d, "eps"), d, (4, 2), steps=steps)
        sample("ode_dopri5", two_gaussians_2d().as_model(vp, "score"), vp, (4, 2), rtol=rtol, atol=rtol)
        counts.append(len(reads))
    # reads at build time (alpha(T) for the start) and one check of x_T per run are fine; none per step
    assert counts[0] == counts[1] <= 10, counts
    # outside a loop the checks still read values
    with pytest.raises(ValueError, match="t must lie in"):
        d.q_sample(np.zeros((1, 2)), np.array([100]), noise=np.zeros((1, 2)))


def test_prediction_defaults_to_what_the_model_declares():
    vp = diffcore.VPSDE()
    score_model = two_gaussians_2d().as_model(vp, "score")
    x_T = np.array([[1.44369095, -0.89594598]])  # an x_T that diverges when a score is read as eps
    for name in ("ode_dopri5", "ode_heun", "dpmpp_2m", "ddim", "edm_heun", "pc"):
        x = sample(name, score_model, vp, (1, 2), x_T=x_T).x
        assert np.all(np.abs(x) < 5), (name, x)
    with pytest.raises(ValueError, match="prediction='eps' but the model declares that it predicts 'score'"):
        sample("ddim", score_model, vp, (1, 2), prediction="eps")


def test_inpainting_arrays_are_converted_once_to_the_samples_namespace():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffcore_torch")
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    r = sample("ddim", two_gaussians_2d().as_model(d, "eps"), d, (4, 2), backend="torch", steps=10,
               mask=np.array([[1.0, 0.0]]), known=np.array([[0.5, 0.0]]))  # NumPy mask and observation
    assert isinstance(r.x, torch.Tensor)
    np.testing.assert_array_equal(r.x[:, 0].numpy(), 0.5)


def test_langevin_refuses_a_discrete_process():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    with pytest.raises(TypeError, match="'langevin' sampler holds a continuous time fixed"):
        sample("langevin", lambda x, t: -x, d, (2, 2), step_size=0.1)


def test_the_same_sampler_is_reused_so_jax_compiles_once():
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    model = two_gaussians_2d().as_model(d, "eps")
    assert build("ddim", model, d, steps=10) is build("ddim", model, d, steps=10)
    assert build("ddim", model, d, steps=10) is not build("ddim", model, d, steps=11)
    with pytest.raises(TypeError, match="cond is an argument of the run"):
        build("ddim", model, d, steps=10, cond=np.zeros(4))


def test_ddpm_and_annealed_langevin_take_explicit_grids():
    """ddpm keeps exactly the steps given (as respace(timesteps=) does); annealed_langevin takes the
    ladder of sigmas: both reproduce the grids they would build themselves."""
    d = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    mix = two_gaussians_2d()
    m = mix.as_model(d, "eps")
    kept = list(range(0, 100, 10))
    by_times = sample("ddpm", m, d, (4, 2), seed=0, times=kept[::-1]).x
    np.testing.assert_array_equal(by_times, sample("ddpm", m, d, (4, 2), seed=0, times=kept).x)
    np.testing.assert_array_equal(by_times, sample("ddpm", m, d, (4, 2), seed=0, steps=10, spacing="leading").x)
    assert not np.allclose(by_times, sample("ddpm", m, d, (4, 2), seed=0, times=[k + 1 for k in kept]).x)
    with pytest.raises(ValueError, match="either steps or times"):
        sample("ddpm", m, d, (4, 2), steps=10, times=kept)
    ve = diffcore.VESDE(sigma_max=5.0, N=10)
    mv = mix.as_model(ve, "score")
    ladder = diffcore.ncsn_sigmas(5.0, 0.01, 10)
    a = sample("annealed_langevin", mv, ve, (4, 2), seed=0, num_scales=10, steps_per_level=2).x
    np.testing.assert_allclose(sample("annealed_langevin", mv, ve, (4, 2), seed=0, sigmas=ladder, steps_per_level=2).x, a, atol=1e-12)
    with pytest.raises(ValueError, match="sigmas must be a strictly decreasing"):
        sample("annealed_langevin", mv, ve, (4, 2), sigmas=ladder[::-1])
