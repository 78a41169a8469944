"""Score-based samplers: Langevin, annealed Langevin (NCSN), Euler-Maruyama, reverse diffusion,
ancestral sampling and predictor-corrector (Song et al. 2021).

- Statistics on NumPy at fixed seeds: energy distance of n = 2000 samples to exact samples of the
  2-D mixture, against the distance between two exact sets of the same size (the floor).
- Exactness: every predictor / corrector / order / process replayed against a transcription of
  score_sde's update functions on the process's own methods (deterministic given the noise).
- Mutants that must fail: a dropped noise term, an off-by-one time input, an off-by-one chain index,
  the wrong corrector alpha on sub-VP, batch-mean norms (batch-dependent samples).
- Other namespaces replay short trajectories with the same NumPy-made noise.
"""

from __future__ import annotations

import numpy as np
import pytest

import diffcore
from diffcore import VESDE, VPSDE, GaussianDiffusion, get_named_beta_schedule, subVPSDE
from diffcore.analytic import GaussianMixture
from diffcore.samplers import SAMPLERS, build, sample
from diffcore.samplers import sde_samplers
from diffcore.samplers._base import plan_to
from diffcore.samplers.sde_samplers import FACTORIES

from conftest import load_namespace, to_np, to_xp
from sampler_utils import NO_WEIGHTS, energy_distance, exact_samples, two_gaussians_2d

SAMPLERS.update(FACTORIES)

N = 2000


def _overlapping():
    """A unimodal-looking mixture plain Langevin can sample (its modes overlap)."""
    return GaussianMixture([0.4, 0.6], np.array([[-0.4, 0.2], [0.4, -0.1]]), np.array([0.5, 0.6]))


class Target:
    """Exact reference sets of a mixture and the floor: the largest distance between two exact sets
    (as in test_samplers.py; single distances scatter by about 3x between seeds, so the mean would
    put an exact sampler over 3x the floor at one seed in twenty)."""

    def __init__(self, mix, seeds=(1, 2, 3, 4)):
        self.mix = mix
        self.refs = [exact_samples(mix, N, s) for s in seeds]
        pairs = [(i, j) for i in range(len(seeds)) for j in range(i + 1, len(seeds))]
        self.floors = [energy_distance(self.refs[i], self.refs[j]) for i, j in pairs]
        self.floor = float(np.max(self.floors))

    def distance(self, x):
        """Mean energy distance of ``x`` to two of the exact sets."""
        return float(np.mean([energy_distance(to_np(x), r) for r in self.refs[:2]]))


@pytest.fixture(scope="module")
def target():
    return Target(two_gaussians_2d())


@pytest.fixture(scope="module")
def overlapping():
    return Target(_overlapping(), seeds=(1, 2, 3))


VE = VESDE(sigma_min=0.01, sigma_max=5.0)  # sigma_max covers the data's spread (|x| <= ~3)
VP = VPSDE()
SUBVP = subVPSDE()
PROCESSES = {"ve": VE, "vp": VP, "subvp": SUBVP}

MEASURED: dict = {}  # printed at the end of the module: (config) -> (nfe, distance)


def _run(target, name, process, seed=0, model=None, **options):
    model = model or target.mix.as_model(process, "score")
    r = sample(name, model, process, (N, 2), seed=seed, **options)
    d = target.distance(r.x)
    MEASURED[(name, type(process).__name__, tuple(sorted(options.items())))] = (r.nfe, d)
    return d, r.nfe


# ------------------------------------------------------------------------------ statistics

ACCURACY = [
    ("euler_maruyama", "vp", dict(steps=100)),
    ("reverse_diffusion", "ve", dict(steps=100)),
    ("reverse_diffusion", "subvp", dict(steps=100)),
    ("ancestral", "vp", dict(steps=100)),
    ("ancestral", "ve", dict(steps=100)),
    ("pc", "subvp", dict(steps=100, norm="batch_mean")),  # sub-VP's corrector: the case references fail
    ("pc", "ve", dict(steps=100, norm="batch_mean", predictor="euler_maruyama", order="corrector_first")),
    ("pc", "vp", dict(steps=100, norm="batch_mean", predictor="ancestral", corrector_steps=2)),
    ("annealed_langevin", "ve", dict(num_scales=10, steps_per_level=100, step_lr=2e-5)),  # NCSN's L, T, eps
]


@pytest.mark.parametrize("name, process, options", ACCURACY, ids=lambda v: str(v))
def test_samplers_reach_the_target(target, name, process, options):
    d, nfe = _run(target, name, PROCESSES[process], **options)
    assert d < 3 * target.floor, f"{name} on {process}: distance {d:.5f}, floor {target.floor:.5f}, nfe {nfe}"


def test_langevin_reaches_an_overlapping_target(overlapping):
    d, _ = _run(overlapping, "langevin", VP, steps=200, step_size=0.01)
    assert d < 3 * overlapping.floor


def test_per_sample_corrector_in_32_dimensions():
    """Per-sample snr norms are meant for many dimensions (images): there they match the target.

    (In 2-D the ratio ||z||^2 / ||s||^2 of one sample is heavy-tailed -- an F(2, 2) variable at
    high noise -- and a few samples take huge steps; batch-mean norms average that away.)
    """
    D = 32
    means = np.zeros((2, D))
    means[:, :2] = two_gaussians_2d().means
    mix = GaussianMixture([0.3, 0.7], means, np.array([0.35, 0.4]))
    tgt = Target(mix, seeds=(1, 2, 3))
    x = sample("pc", mix.as_model(VE, "score"), VE, (N, D), seed=0, steps=100, norm="per_sample").x
    d = tgt.distance(x)
    MEASURED[("pc", "VESDE", (("D", 32), ("norm", "per_sample"), ("steps", 100)))] = (198, d)
    assert d < 3 * tgt.floor


FALLS = [
    ("euler_maruyama", "ve", {}, "steps", 5, 50),
    ("euler_maruyama", "vp", {}, "steps", 5, 50),
    ("reverse_diffusion", "ve", {}, "steps", 5, 50),
    ("ancestral", "ve", {}, "steps", 5, 50),
    ("pc", "ve", {"norm": "batch_mean"}, "steps", 5, 50),
    ("annealed_langevin", "ve", {"num_scales": 10, "step_lr": 2e-5}, "steps_per_level", 1, 30),
]


@pytest.mark.parametrize("name, process, options, knob, coarse, fine", FALLS, ids=lambda v: str(v))
def test_distance_falls_with_steps(target, name, process, options, knob, coarse, fine):
    d_coarse, _ = _run(target, name, PROCESSES[process], **options, **{knob: coarse})
    d_fine, _ = _run(target, name, PROCESSES[process], **options, **{knob: fine})
    assert d_fine < d_coarse / 5


def test_langevin_distance_falls_with_steps(overlapping):
    d_coarse, _ = _run(overlapping, "langevin", VP, steps=5, step_size=0.01)
    d_fine, _ = _run(overlapping, "langevin", VP, steps=200, step_size=0.01)
    assert d_fine < d_coarse / 5


def _loop(sampler, x_T, step=None):
    bk = diffcore.backend("numpy")
    plan = plan_to(sampler.plan, bk.xp, np.float64, "cpu")
    shape = (x_T.shape[0], sampler.noise_draws) + x_T.shape[1:]
    state = bk.loop(step or sampler.step, sampler.init(x_T), plan, key=bk.key(0), noise_shape=shape, args=NO_WEIGHTS)
    return sampler.result(state)


@pytest.mark.parametrize(
    "name, process, options",
    [
        ("euler_maruyama", "vp", dict(steps=20)),
        ("reverse_diffusion", "vp", dict(steps=25)),
        ("ancestral", "ve", dict(steps=20)),
        ("annealed_langevin", "ve", dict(num_scales=10, steps_per_level=20, step_lr=2e-5)),
    ],
    ids=lambda v: str(v),
)
def test_dropped_noise_mutant_fails(target, name, process, options):
    proc = PROCESSES[process]
    s = build(name, target.mix.as_model(proc, "score"), proc, **options)
    x_T = proc.prior_sample(np.random.default_rng(0).standard_normal((N, 2)))
    good = target.distance(_loop(s, x_T))
    mutant = target.distance(_loop(s, x_T, step=lambda st, p, z, a: s.step(st, p, 0.0 * z, a)))
    assert mutant > 10 * max(good, target.floor)


def test_off_by_one_time_input_mutant_fails(target):
    """The network fed the next level's time (sigma_{j-1} for sigma_j) is visible at 20 steps."""
    s = build("ancestral", target.mix.as_model(VE, "score"), VE, steps=20)
    exact = target.mix.as_model(VE, "score")
    ratio = float(s.plan.t_in[1] / s.plan.t_in[0])  # the VE ladder is geometric

    def next_level(x, t_in):
        return exact(x, np.maximum(t_in * ratio, VE.sigma_min))

    x_T = VE.prior_sample(np.random.default_rng(0).standard_normal((N, 2)))
    good = target.distance(_loop(s, x_T))
    mutant = target.distance(_loop(build("ancestral", next_level, VE, steps=20), x_T))
    assert good < 3 * target.floor
    assert mutant > 3 * max(good, target.floor)


# ------------------------------------------------------------- exactness against score_sde


def _reference(process, mix, x, noises, *, predictor, M, snr, order, denoise, eps, batch_mean, N):
    """score_sde's predictors, Langevin corrector and loop, transcribed onto diffcore.sde's methods.

    ``N`` levels t = linspace(T, eps, N); the chain is ``process`` (its N must equal ``N``). Euler-
    Maruyama uses the actual spacing (t_N := 0) instead of score_sde's dt = 1/N. Sub-VP's corrector
    uses alphas = 1 - discrete_betas (score_sde's code would fail there). Returns the output.
    """
    assert process.N == N
    score_fn = lambda y, t: mix.marginal_score(y, t, process)
    rsde = process.reverse(score_fn)
    ts = np.linspace(process.T, eps, N)
    index = lambda t: (t * (N - 1) / process.T).astype(np.int64)

    def pred(x, t, t_next, z):
        vt = np.full(x.shape[0], t)
        if predictor == "euler_maruyama":
            dt = t - t_next
            drift, diffusion = rsde.sde(x, vt)
            x_mean = x - drift * dt
            return x_mean + diffusion[:, None] * np.sqrt(dt) * z, x_mean
        if predictor == "reverse_diffusion":
            f, G = rsde.discretize(x, vt)
            x_mean = x - f
            return x_mean + G[:, None] * z, x_mean
        j = index(vt)
        score = score_fn(x, vt)
        if isinstance(process, VESDE):
            sigma = process.discrete_sigmas[j]
            adjacent = np.where(j == 0, 0.0, process.discrete_sigmas[j - 1])
            x_mean = x + score * (sigma**2 - adjacent**2)[:, None]
            std = np.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
            return x_mean + std[:, None] * z, x_mean
        beta = process.discrete_betas[j][:, None]
        x_mean = (x + beta * score) / np.sqrt(1.0 - beta)
        return x_mean + np.sqrt(beta) * z, x_mean

    def correct(x, t, zs):
        vt = np.full(x.shape[0], t)
        alpha = process.alphas[index(vt)] if isinstance(process, VPSDE) else np.ones_like(vt)
        x_mean = x
        for m in range(M):
            grad = score_fn(x, vt)
            g_norm = np.linalg.norm(grad.reshape(grad.shape[0], -1), axis=-1)
            n_norm = np.linalg.norm(zs[:, m].reshape(x.shape[0], -1), axis=-1)
            if batch_mean:
                g_norm, n_norm = g_norm.mean(), n_norm.mean()
            step = (snr * n_norm / g_norm) ** 2 * 2 * alpha
            x_mean = x + np.reshape(step, (-1, 1)) * grad
            x = x_mean + np.reshape(np.sqrt(step * 2), (-1, 1)) * zs[:, m]
        return x, x_mean

    x_mean = x
    if order == "corrector_first":
        nexts = np.append(ts[1:], 0.0)
        for i in range(N):
            if M:
                x, x_mean = correct(x, ts[i], noises[i][:, 1:])
            x, x_mean = pred(x, ts[i], nexts[i], noises[i][:, 0])
    else:
        for i in range(N - 1):
            x, x_mean = pred(x, ts[i], ts[i + 1], noises[i][:, 0])
            if M:
                x, x_mean = correct(x, ts[i + 1], noises[i][:, 1:])
    return x_mean if denoise else x


def _replay(sampler, x_T, noises, xp, jit=False, rows=None):
    """Run ``sampler``'s first ``rows`` steps (all by default) in ``xp`` with NumPy-made noise."""
    X = lambda a: to_xp(a, xp)
    plan = plan_to(sampler.plan, xp, xp.float64, None)
    rows = len(noises) if rows is None else rows

    def run(x_T, plan, noises):
        state = sampler.init(x_T)
        for i in range(rows):
            state = sampler.step(state, tuple(p[i] for p in plan), noises[i], NO_WEIGHTS)
        return sampler.result(state), state.bad_step

    if jit:
        import jax

        run = jax.jit(run)
    return run(X(x_T), plan, [X(z) for z in noises])


REFERENCE_CASES = [
    ("ve", "euler_maruyama"),
    ("ve", "reverse_diffusion"),
    ("ve", "ancestral"),
    ("vp", "euler_maruyama"),
    ("vp", "reverse_diffusion"),
    ("vp", "ancestral"),
    ("subvp", "euler_maruyama"),
    ("subvp", "reverse_diffusion"),
]


def _small(process_name, N):
    return {"ve": VESDE(0.01, 5.0, N=N), "vp": VPSDE(N=N), "subvp": subVPSDE(N=N)}[process_name]


def _check_against_reference(process_name, predictor, N=25, orders=("predictor_first", "corrector_first"), steps_arg=None):
    """Every corrector / order / norm / denoise combination of one predictor equals the reference."""
    mix = two_gaussians_2d()
    chain = _small(process_name, N)
    process = chain if steps_arg is None else _small(process_name, 1000)  # steps != process.N: a rebuilt chain
    rng = np.random.default_rng(7)
    x_T = process.prior_sample(rng.standard_normal((4, 2)))
    eps = 1e-3
    for M in (0, 2):
        for order in orders:
            for batch_mean in (False, True):
                for denoise in (True, False):
                    if M == 0 and batch_mean:
                        continue
                    s = build(
                        "pc", mix.as_model(process, "score"), process, predictor=predictor,
                        corrector="langevin" if M else None, corrector_steps=max(M, 1), snr=0.2, order=order,
                        norm="batch_mean" if batch_mean else "per_sample", denoise=denoise, eps=eps,
                        steps=steps_arg,
                    )
                    noises = [rng.standard_normal((4, 1 + M, 2)) for _ in range(s.plan.index.shape[0])]
                    got = _replay(s, x_T, noises, load_namespace("numpy"))[0]
                    want = _reference(
                        chain, mix, x_T, noises, predictor=predictor, M=M, snr=0.2, order=order, denoise=denoise,
                        eps=eps, batch_mean=batch_mean, N=N,
                    )
                    where = f"{process_name} {predictor} M={M} {order} batch_mean={batch_mean} denoise={denoise}"
                    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=where)


@pytest.mark.parametrize("process_name, predictor", REFERENCE_CASES)
def test_predictors_and_corrector_equal_score_sde(process_name, predictor):
    _check_against_reference(process_name, predictor)


def test_steps_other_than_process_N_use_the_rebuilt_chain():
    _check_against_reference("vp", "ancestral", N=30, steps_arg=30, orders=("corrector_first",))
    _check_against_reference("ve", "reverse_diffusion", N=12, steps_arg=12, orders=("predictor_first",))


def test_off_by_one_chain_index_mutant_fails(monkeypatch):
    original = diffcore.sde.SDE.chain_index
    monkeypatch.setattr(diffcore.sde.SDE, "chain_index", lambda self, t: np.maximum(original(self, t) - 1, 0))
    for process_name in ("ve", "vp"):
        with pytest.raises(AssertionError):
            _check_against_reference(process_name, "ancestral", orders=("corrector_first",))


def test_wrong_sub_vp_corrector_alpha_mutant_fails(monkeypatch):
    """alpha = 1 on sub-VP (what a VE-style fallback would give) differs from 1 - beta_i."""
    _check_against_reference("subvp", "euler_maruyama", orders=("predictor_first",))
    monkeypatch.setattr(sde_samplers, "_corrector_alpha", lambda process, chain, t, N: np.ones_like(t))
    with pytest.raises(AssertionError):
        _check_against_reference("subvp", "euler_maruyama", orders=("predictor_first",))


def test_annealed_langevin_equals_ncsn_loop():
    """NCSN's anneal_Langevin_dynamics (+ NCSNv2's final denoising step) with the same noise."""
    mix = two_gaussians_2d()
    rng = np.random.default_rng(2)
    x = VE.prior_sample(rng.standard_normal((4, 2)))
    L, T, lr = 6, 3, 3e-5
    s = build("annealed_langevin", mix.as_model(VE, "score"), VE, num_scales=L, steps_per_level=T, step_lr=lr)
    assert s.nfe == L * T + 1 and s.plan.index.shape[0] == L * T + 1
    noises = [rng.standard_normal((4, 1, 2)) for _ in range(L * T + 1)]
    got = _replay(s, x, noises, load_namespace("numpy"))[0]
    sigmas = diffcore.ncsn_sigmas(VE.sigma_max, VE.sigma_min, L)
    k = 0
    for sigma in sigmas:
        step_size = lr * (sigma / sigmas[-1]) ** 2
        for _ in range(T):
            grad = mix.marginal_score(x, VE.time_from_model_time(np.full(4, sigma)), VE)
            x = x + step_size * grad + noises[k][:, 0] * np.sqrt(step_size * 2)
            k += 1
    x = x + sigmas[-1] ** 2 * mix.marginal_score(x, np.zeros(4), VE)
    np.testing.assert_allclose(got, x, rtol=1e-10, atol=1e-12)
    assert s.plan.sigma_next[-1] == 0.0 and s.plan.sigma_next[0] == pytest.approx(VE.sigma_max)


def test_other_predictions_give_the_same_trajectory():
    mix = two_gaussians_2d()
    rng = np.random.default_rng(5)
    x_T = VP.prior_sample(rng.standard_normal((4, 2)))
    noises = [rng.standard_normal((4, 2, 2)) for _ in range(29)]
    outs = [
        _replay(build("pc", mix.as_model(VP, p), VP, steps=30, prediction=p), x_T, noises, load_namespace("numpy"))[0]
        for p in ("score", "eps", "x0", "v")
    ]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ plans, NFE and levels


def test_plan_levels_and_alpha_sigma_next():
    mix = two_gaussians_2d()
    m = mix.as_model(VE, "score")
    t = np.linspace(1.0, 1e-5, 10)
    s = build("pc", m, VE, steps=10)
    np.testing.assert_allclose(s.times, t[:-1])
    np.testing.assert_allclose(s.plan.sigma_next, VE.sigma(t[1:]), rtol=1e-14)  # ends at eps
    np.testing.assert_allclose(s.plan.ct_in, VE.model_time(t[1:]), rtol=1e-14)  # corrector after the predictor
    s = build("reverse_diffusion", m, VE, steps=10, order="corrector_first")
    np.testing.assert_allclose(s.times, t)
    np.testing.assert_allclose(s.plan.sigma_next[:-1], VE.sigma(t[1:]), rtol=1e-14)
    assert (s.plan.alpha_next[-1], s.plan.sigma_next[-1]) == (1.0, 0.0)  # the ladder's end: sigma_{-1} = 0
    assert s.plan.c_z[-1] == 0.0  # denoise: the last update adds no noise
    s = build("euler_maruyama", m, VE, steps=10, order="corrector_first", denoise=False)
    assert s.plan.sigma_next[-1] == pytest.approx(VE.sigma_min) and s.plan.c_z[-1] > 0  # EM ends at t = 0
    s = build("pc", mix.as_model(VP, "score"), VP, steps=30)
    assert s.plan.alpha_next[-1] == pytest.approx(float(VP.alpha(np.asarray(1e-3))), rel=1e-14)
    assert s.plan.c_last[-1] == 0.0 and np.all(s.plan.c_last[:-1] == 1.0)


@pytest.mark.parametrize(
    "name, options, nfe",
    [
        ("langevin", dict(steps=7, step_size=0.01), 7),
        ("annealed_langevin", dict(num_scales=3, steps_per_level=2), 7),
        ("annealed_langevin", dict(num_scales=3, steps_per_level=2, final_denoise=False), 6),
        ("euler_maruyama", dict(steps=6), 5),
        ("reverse_diffusion", dict(steps=6, order="corrector_first"), 6),
        ("ancestral", dict(steps=6, corrector="langevin", corrector_steps=2), 15),
        ("pc", dict(steps=6, order="corrector_first", corrector_steps=3), 24),
        ("pc", dict(steps=6), 10),
    ],
    ids=lambda v: str(v),
)
def test_nfe_is_the_number_of_model_calls(name, options, nfe):
    calls = []
    exact = two_gaussians_2d().as_model(VE, "score")

    def counting(x, t_in):
        calls.append(1)
        return exact(x, t_in)

    r = sample(name, counting, VE, (3, 2), seed=0, **options)
    assert r.nfe == len(calls) == nfe


def test_default_steps_are_the_process_chain():
    s = build("pc", lambda x, t: x, VPSDE(N=40))
    assert s.plan.index.shape[0] == 39 and s.nfe == 78
    s = build("ancestral", lambda x, t: x, VESDE(N=40), order="corrector_first")
    np.testing.assert_allclose(np.sqrt(s.plan.c_s[-1]), VESDE(N=40).discrete_sigmas[0], rtol=1e-14)


# -------------------------------------------------------------------- batch independence


@pytest.mark.parametrize("name", ["pc", "langevin", "annealed_langevin"])
def test_per_sample_results_do_not_depend_on_the_batch(name):
    options = {
        "pc": dict(steps=8, corrector_steps=2),
        "langevin": dict(steps=8, step_size=0.05),
        "annealed_langevin": dict(num_scales=3, steps_per_level=2),
    }[name]
    model = two_gaussians_2d().as_model(VE, "score")
    full = sample(name, model, VE, (8, 2), seed=3, sample_ids=np.arange(8), **options).x
    for i in (0, 5):
        one = sample(name, model, VE, (1, 2), seed=3, sample_ids=np.array([i]), **options).x
        np.testing.assert_array_equal(one[0], full[i])


def test_batch_mean_norms_couple_the_batch():
    """score_sde's batch-mean norms: a sample changes with its batch (the mutant the test above catches)."""
    model = two_gaussians_2d().as_model(VE, "score")
    opts = dict(steps=8, corrector_steps=2, norm="batch_mean")
    full = sample("pc", model, VE, (8, 2), seed=3, sample_ids=np.arange(8), **opts).x
    one = sample("pc", model, VE, (1, 2), seed=3, sample_ids=np.array([5]), **opts).x
    assert np.max(np.abs(one[0] - full[5])) > 1e-3


# ------------------------------------------------------------------------- namespaces


def _namespace_cases():
    mix = two_gaussians_2d()
    return [
        build("langevin", mix.as_model(VP, "score"), VP, steps=5, step_size=0.02),
        build("annealed_langevin", mix.as_model(VE, "eps"), VE, num_scales=2, steps_per_level=2, prediction="eps"),
        build("pc", mix.as_model(SUBVP, "score"), SUBVP, steps=25, predictor="euler_maruyama", corrector_steps=2),
        build("pc", mix.as_model(VE, "x0"), VE, steps=5, order="corrector_first", norm="batch_mean", prediction="x0"),
        build("ancestral", mix.as_model(VE, "score"), VE, steps=6, denoise=False),
    ]


def _check_namespaces(xp, jit, few=False):
    """Every case on numpy / strict / torch; on JAX (eager dispatch and compiles are slow) the two
    predictor-corrector cases, which cover both orders, both norms and the corrector, without the
    inpainting wrapper."""
    rng = np.random.default_rng(11)
    x_T = rng.standard_normal((4, 2))
    mask, known = np.array([[1.0, 0.0]]), np.array([[0.5, 0.0]])
    cases = _namespace_cases()
    for k, s in enumerate(cases):
        if few and k not in (2, 3):
            continue
        noises = [rng.standard_normal((4, s.noise_draws, 2)) for _ in range(5)]
        ref = _replay(s, x_T, noises, load_namespace("numpy"))[0]
        got, bad = _replay(s, x_T, noises, xp, jit=jit)
        np.testing.assert_allclose(to_np(got), ref, rtol=1e-10, atol=1e-12, err_msg=s.name)
        assert int(bad) == -1
        if few:
            continue
        # the inpainting wrapper finds alpha_next / sigma_next in every plan
        noises = [rng.standard_normal((4, s.noise_draws + 1, 2)) for _ in range(5)]
        want = _replay(diffcore.samplers.inpaint(s, mask, known, (4, 2)), x_T, noises, load_namespace("numpy"))[0]
        ip = diffcore.samplers.inpaint(s, to_xp(mask, xp), to_xp(known, xp), (4, 2))
        got = _replay(ip, x_T, noises, xp, jit=jit)[0]
        np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-12, err_msg=s.name + "+inpaint")


def test_same_trajectories_on_every_namespace(xp):
    _check_namespaces(xp, jit=False, few=xp.__name__.startswith("jax"))


def test_same_trajectories_under_jax_jit():
    _check_namespaces(load_namespace("jax"), jit=True, few=True)


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_one_call_api_on_the_backends_equals_numpy(backend_name):
    """diffcore.sample on the backend; NumPy replays the backend's own per-step noise."""
    if backend_name not in diffcore.available_backends():
        pytest.skip(f"backend {backend_name} not installed")
    pytest.importorskip(f"diffcore_{backend_name}")
    bk = diffcore.backend(backend_name)
    mix = two_gaussians_2d()
    x_T = np.random.default_rng(4).standard_normal((4, 2)) * VE.sigma_max
    options = dict(steps=6, corrector_steps=2)
    r = sample("pc", mix.as_model(VE, "score"), VE, (4, 2), backend=bk, x_T=bk.xp.asarray(x_T), seed=9, **options)
    s = build("pc", mix.as_model(VE, "score"), VE, **options)
    assert r.nfe == s.nfe == 15
    loop_key = bk.fold_in(bk.key(9), diffcore.samplers._LOOP_STREAM)
    noises = [to_np(bk.normal(bk.fold_in(loop_key, i), (4, 3, 2), bk.xp.float64)) for i in range(5)]
    want = _replay(s, x_T, noises, load_namespace("numpy"))[0]
    np.testing.assert_allclose(to_np(r.x), want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- bad input


def test_inpainting_writes_the_known_part():
    model = two_gaussians_2d().as_model(VE, "score")
    x = sample("pc", model, VE, (16, 2), seed=1, steps=10, mask=np.array([[1.0, 0.0]]), known=np.array([[0.7, 0.0]])).x
    np.testing.assert_array_equal(x[:, 0], 0.7)


def test_nonfinite_output_names_step_and_time():
    exact = two_gaussians_2d().as_model(VE, "score")

    def blows_up(x, t_in):
        return np.where(t_in[:, None] < 0.1, np.nan, exact(x, t_in))

    with pytest.raises(FloatingPointError, match=r"state became non-finite at step \d+ \(time 0\.\d+"):
        sample("pc", blows_up, VE, (3, 2), steps=10)


def test_bad_input():
    model = lambda x, t: x
    gd = GaussianDiffusion(betas=get_named_beta_schedule("linear", 100))
    cases = [
        (ValueError, "unknown sampler 'annealed_langevine'", dict(name="annealed_langevine")),
        (ValueError, "predictor must be one of 'euler_maruyama', 'reverse_diffusion', 'ancestral'; got 'heun'", dict(predictor="heun")),
        (ValueError, "corrector must be one of None, 'langevin'; got 'ald'", dict(corrector="ald")),
        (ValueError, "order must be one of 'predictor_first', 'corrector_first'; got 'both'", dict(order="both")),
        (ValueError, "norm must be one of 'expected', 'per_sample', 'batch_mean'; got 'l1'", dict(norm="l1")),
        (ValueError, "steps must be an integer >= 1; got 0", dict(steps=0)),
        (ValueError, r"steps must be an integer >= 2 .*; got 1", dict(steps=1)),
        (TypeError, "steps must be an integer; got 2.5", dict(steps=2.5)),
        (ValueError, "snr must be a positive number; got 0", dict(snr=0)),
        (ValueError, "snr must be a positive number; got -0.1", dict(snr=-0.1)),
        (TypeError, "snr must be a positive number; got 'high'", dict(snr="high")),
        (ValueError, "corrector_steps must be an integer >= 1; got 0", dict(corrector_steps=0)),
        (ValueError, "prediction must be one of .*; got 'noise'", dict(prediction="noise")),
        (ValueError, r"eps must lie in \[0, 1\) for VESDE; got 1.5", dict(eps=1.5)),
        (ValueError, r"steps=10 is too few for the 'pc' sampler on a VP chain: .*beta_max/N = 2", dict(process=VP, steps=10)),
        (ValueError, r"steps=10 is too few for the Langevin corrector", dict(process=VP, steps=10, predictor="euler_maruyama")),
        (TypeError, "needs a variance-exploding process .*got process=VPSDE", dict(name="annealed_langevin", process=VP)),
        (ValueError, "num_scales must be at least 2", dict(name="annealed_langevin", num_scales=1)),
        (ValueError, "steps_per_level must be an integer >= 1; got 0", dict(name="annealed_langevin", steps_per_level=0)),
        (ValueError, "step_lr must be a positive number; got -1", dict(name="annealed_langevin", step_lr=-1)),
        (TypeError, "needs a process with the capability 'ancestral'; subVPSDE declares", dict(name="ancestral", process=SUBVP)),
        (TypeError, "integrates in continuous time .*GaussianDiffusion", dict(name="euler_maruyama", process=gd)),
        (ValueError, "step_size must be a positive number; got 0", dict(name="langevin", step_size=0)),
        (TypeError, "step_size", dict(name="langevin")),
        (ValueError, "prediction 'eps' needs a process", dict(name="langevin", process=None, step_size=0.1, prediction="eps")),
    ]
    for exc, message, case in cases:
        case = dict(case)
        name = case.pop("name", "pc")
        process = case.pop("process", VE)
        with pytest.raises(exc, match=message):
            sample(name, model, process, (2, 2), **case)


def test_zz_report_measurements():
    """Print the measured NFE and distances of the statistical tests above (run with -s to see)."""
    if not MEASURED:
        pytest.skip("no statistical test ran")
    lines = [f"{k[0]:>18} {k[1]:>9} {dict(k[2])}: nfe {v[0]}, distance {v[1]:.5f}" for k, v in MEASURED.items()]
    print("\n" + "\n".join(lines))


# ------------------------------------------------------------------ the corrector's default step


def _three_d_mixture():
    return GaussianMixture(
        [0.2, 0.5, 0.3], np.array([[-2.0, 0.0, 1.0], [1.0, 1.0, -1.0], [0.0, -2.0, 0.5]]), np.array([0.5, 0.4, 0.6])
    )


def _pc_variances(norm=None, n=2000, steps=200):
    mix = _three_d_mixture()
    p = VESDE()
    opts = {} if norm is None else {"norm": norm}
    x = np.asarray(sample("pc", mix.as_model(p, "score"), p, (n, 3), seed=0, steps=steps, **opts).x)
    rng = np.random.default_rng(9)
    ref = np.asarray(mix.sample(rng.standard_normal((100_000, 3)), rng.random(100_000)))
    se = np.sqrt(np.var((ref - ref.mean(0)) ** 2, axis=0) / n)  # standard error of a variance of n samples
    return np.var(x, axis=0), np.diag(mix.covariance()), se


def test_default_corrector_step_puts_the_variances_right():
    """The default step eps_i = 2 alpha_i (snr sigma_i)^2 (expected norms) keeps the variances of the
    3-D mixture within 4 standard errors; the old default (per-sample norms: each chain's step from
    its own score) inflates them by 20+ standard errors (measured at 8000 samples, 1000 steps:
    (2.64, 2.93, 1.93) against the exact (1.53, 1.93, 0.99))."""
    var, exact, se = _pc_variances()
    print(f"\ndefault: variances {np.round(var, 3)}, exact {np.round(exact, 3)}, z {np.round((var - exact) / se, 1)}")
    assert np.all(np.abs(var - exact) < 4 * se)
    old, _, _ = _pc_variances("per_sample")
    print(f"per_sample: variances {np.round(old, 3)}, z {np.round((old - exact) / se, 1)}")
    assert np.any(np.abs(old - exact) > 4 * se)


def test_expected_norm_step_does_not_read_the_state():
    """norm='expected': the step is a plan column, 2 alpha_i snr^2 sigma(t_i)^2, the same for every chain."""
    s = build("pc", two_gaussians_2d().as_model(VE, "score"), VE, steps=20, snr=0.16)
    t_corr = s.times + 0.0  # predictor_first: the corrector runs at the level the predictor lands on
    t_next = np.linspace(1.0, 1e-5, 20)[1:]
    np.testing.assert_allclose(s.plan.c_scale, 2 * 0.16**2 * np.asarray(VE.sigma(t_next)) ** 2, rtol=1e-12)
    assert t_corr.shape == t_next.shape
