"""Weights are loop arguments: changed weights always give new samples and likelihoods, compiled
loops are reused without recompiling, and nothing global keeps a user's model alive."""

from __future__ import annotations

import gc
import sys
import threading
import weakref

import numpy as np
import pytest

import diffcore
from diffcore import GaussianDiffusion, get_named_beta_schedule
from diffcore._array import to_numpy
from diffcore.samplers import SAMPLERS

VP = diffcore.VPSDE()
VE = diffcore.VESDE(sigma_max=5.0, N=50)
DISCRETE = GaussianDiffusion(betas=get_named_beta_schedule("linear", 50))

# every sampler with a process it runs on and small options (kept fast)
CASES = {
    "ddpm": (DISCRETE, dict(steps=5)),
    "ddim": (VP, dict(steps=5)),
    "ode_euler": (VP, dict(steps=5)),
    "ode_heun": (VP, dict(steps=5)),
    "ode_rk4": (VP, dict(steps=3)),
    "ode_dopri5": (VP, dict(rtol=1e-3, atol=1e-3)),
    "edm_heun": (VP, dict(steps=4)),
    "dpmpp_2m": (VP, dict(steps=5)),
    "langevin": (VP, dict(steps=5, step_size=0.01, t_in=500.0)),
    "annealed_langevin": (VE, dict(num_scales=3, steps_per_level=2)),
    "euler_maruyama": (VP, dict(steps=5)),
    "reverse_diffusion": (VP, dict(steps=25)),
    "ancestral": (VP, dict(steps=25)),
    "pc": (VP, dict(steps=25)),
}


def test_every_sampler_is_covered():
    assert set(CASES) == set(SAMPLERS)


def _prediction(name):
    return "score" if name in ("langevin", "annealed_langevin", "euler_maruyama", "reverse_diffusion", "ancestral", "pc") else "eps"


class NumpyModel:
    """A model whose weight lives in an attribute changed in place between calls."""

    def __init__(self, w, prediction):
        self.w = np.array([w])
        self.prediction = prediction

    def __call__(self, x, t_in, cond=None):
        return -self.w * x if self.prediction == "score" else self.w * x


def _draw(name, model, backend, **extra):
    process, options = CASES[name]
    return np.asarray(to_numpy(
        diffcore.sample(name, model, process, (3, 2), backend=backend, seed=0, **options, **extra).x
    ))


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_place_changes_give_new_samples_numpy(name):
    m = NumpyModel(0.3, _prediction(name))
    first = _draw(name, m, "numpy")
    m.w *= 2.0  # in place
    second = _draw(name, m, "numpy")
    m.w /= 2.0
    again = _draw(name, m, "numpy")
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_place_changes_give_new_samples_torch(name):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffcore_torch")
    prediction = _prediction(name)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
            self.prediction = prediction

        def forward(self, x, t_in, cond=None):
            return -self.w * x if prediction == "score" else self.w * x

    net = Net()
    with torch.no_grad():
        first = _draw(name, net, "torch", dtype=torch.float64)
        net.w.mul_(2.0)  # in place, as an optimizer step does
        second = _draw(name, net, "torch", dtype=torch.float64)
        net.load_state_dict({"w": torch.tensor([0.3], dtype=torch.float64)})
        again = _draw(name, net, "torch", dtype=torch.float64)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(first, again, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reassigned_jax_weights_give_new_samples(name):
    jnp = pytest.importorskip("jax.numpy")
    pytest.importorskip("diffcore_jax")
    prediction = _prediction(name)

    class JaxModel:
        def __init__(self):
            self.w = jnp.asarray(0.3)
            self.prediction = prediction

        def __call__(self, x, t_in, cond=None):
            return -self.w * x if prediction == "score" else self.w * x

    m = JaxModel()
    first = _draw(name, m, "jax")
    if name in ("ddpm", "ddim", "pc", "edm_heun"):  # each call compiles: a few samplers are enough
        m.w = m.w * 2.0  # a plain callable: its state is invisible to the backend, so no loop is reused
        assert not np.allclose(first, _draw(name, m, "jax"))

    traces = []

    def apply(params, x, t_in, cond=None):
        traces.append(1)  # runs only while JAX traces
        return -params["w"] * x if prediction == "score" else params["w"] * x

    a = _draw(name, diffcore.Model(apply, {"w": jnp.asarray(0.3)}, prediction=prediction), "jax")
    n = len(traces)
    b = _draw(name, diffcore.Model(apply, {"w": jnp.asarray(0.6)}, prediction=prediction), "jax")
    c = _draw(name, diffcore.Model(apply, {"w": jnp.asarray(0.3)}, prediction=prediction), "jax")
    np.testing.assert_allclose(a, first, rtol=1e-6, atol=1e-9)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, c)
    if name != "ode_dopri5":  # the adaptive sampler's eager solve builds its loop per call
        assert len(traces) == n, "new weights recompiled the loop"


def test_nnx_module_after_an_optax_step_samples_with_its_new_weights():
    pytest.importorskip("diffcore_jax")
    nnx = pytest.importorskip("flax.nnx")
    optax = pytest.importorskip("optax")
    import jax
    import jax.numpy as jnp

    class Net(nnx.Module):
        prediction = "eps"

        def __init__(self, rngs):
            self.lin = nnx.Linear(2, 2, rngs=rngs)

        def __call__(self, x, t_in, cond=None):
            return 0.1 * self.lin(x)

    net = Net(nnx.Rngs(0))
    opt = nnx.Optimizer(net, optax.sgd(0.5), wrt=nnx.Param)
    sampler = diffcore.build_sampler("ddim", net, VP, backend="jax", steps=5)
    x_T = jnp.ones((3, 2))
    first = np.asarray(sampler.sample(net, (3, 2), backend="jax", x_T=x_T).x)
    one_call = np.asarray(diffcore.sample("ddim", net, VP, (3, 2), backend="jax", x_T=x_T, steps=5).x)
    np.testing.assert_allclose(first, one_call, rtol=1e-6)

    def loss(model):
        return jnp.sum(model(x_T, jnp.zeros(3)) ** 2)

    grads = nnx.grad(loss)(net)
    opt.update(net, grads)
    second = np.asarray(sampler.sample(net, (3, 2), backend="jax", x_T=x_T).x)
    one_call_2 = np.asarray(diffcore.sample("ddim", net, VP, (3, 2), backend="jax", x_T=x_T, steps=5).x)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(second, one_call_2, rtol=1e-6)
    # the same as applying the updated module eagerly in a plain loop of DDIM steps
    ref = diffcore.sample("ddim", lambda x, t: net(x, t), VP, (3, 2), backend="jax", x_T=x_T, steps=5).x
    np.testing.assert_allclose(second, np.asarray(ref), rtol=1e-6)
    nll_a = diffcore.nll(net, VP, x_T, backend="jax", divergence="exact").nll
    opt.update(net, nnx.grad(loss)(net))
    nll_b = diffcore.nll(net, VP, x_T, backend="jax", divergence="exact").nll
    assert not np.allclose(np.asarray(nll_a), np.asarray(nll_b))
    assert jax.tree.leaves(nnx.state(net))  # the module was not consumed


def test_a_built_sampler_runs_again_without_recompiling():
    pytest.importorskip("diffcore_jax")
    jnp = pytest.importorskip("jax.numpy")
    traces = []

    def apply(params, x, t_in, cond=None):
        traces.append(1)
        return params * x

    sampler = diffcore.build_sampler("ddpm", diffcore.Model(apply, jnp.asarray(0.1)), DISCRETE, backend="jax", steps=10)
    outs = []
    n = None
    for k, w in enumerate((0.1, 0.2, 0.3)):
        outs.append(np.asarray(sampler.sample(diffcore.Model(apply, jnp.asarray(w)), (4, 2), backend="jax", seed=k).x))
        outs.append(np.asarray(sampler.sample(diffcore.Model(apply, jnp.asarray(w)), (4, 2), backend="jax",
                                              x_T=jnp.full((4, 2), k, dtype=jnp.float64)).x))
        n = n or len(traces)  # tracing the first run (a shape check, then the scan)
    assert len(traces) == n
    assert len({o.tobytes() for o in outs}) == len(outs)
    with pytest.raises(ValueError, match="was built for another model"):
        sampler.sample(diffcore.Model(lambda p, x, t: x, 0.0), (4, 2), backend="jax")


def _throwaway(kind, backend):
    """A model of ``kind`` and a weak reference to the object that holds its weights."""
    if kind == "callable":
        m = NumpyModel(0.1, "eps")
        return m, weakref.ref(m)
    if kind == "torch":
        import torch

        m = torch.nn.Linear(2, 2)
        return (lambda x, t: 0.1 * m(x)), weakref.ref(m)
    if kind == "jax_callable":
        import jax.numpy as jnp

        m = NumpyModel(0.1, "eps")
        m.w = jnp.asarray([0.1])
        return m, weakref.ref(m)
    if kind == "model":
        import jax.numpy as jnp

        m = diffcore.Model(_scale_apply, {"w": jnp.ones((2,)) * 0.1})
        return m, weakref.ref(m)
    if kind == "nnx":
        m = _nnx_net()
        return m, weakref.ref(m)
    raise ValueError(kind)


def _nnx_net():
    from flax import nnx

    global _NnxNet
    if "_NnxNet" not in globals():  # one class: modules of one class share a graph (and a compiled loop)

        class _NnxNet(nnx.Module):
            def __init__(self):
                self.lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

            def __call__(self, x, t_in, cond=None):
                return 0.1 * self.lin(x)

    return _NnxNet()


def _scale_apply(params, x, t_in, cond=None):
    return params["w"] * x


@pytest.mark.parametrize(
    "kind,backend",
    [("callable", "numpy"), ("torch", "torch"), ("jax_callable", "jax"), ("model", "jax"), ("nnx", "jax")],
)
def test_no_model_stays_alive_after_sampling(kind, backend):
    if backend == "torch":
        pytest.importorskip("diffcore_torch")
    if backend == "jax":
        pytest.importorskip("diffcore_jax")
    if kind == "nnx":
        pytest.importorskip("flax.nnx")
    refs = []
    for k in range(10 if kind == "jax_callable" else 100):  # a JAX callable compiles on every call
        model, ref = _throwaway(kind, backend)
        refs.append(ref)
        diffcore.sample("ddim", model, VP, (2, 2), backend=backend, steps=3, seed=k)
        if k % 50 == 0 and backend != "numpy":  # the likelihood needs autodiff
            diffcore.nll(model, VP, _zeros(backend), backend=backend, rtol=1e-2, atol=1e-2, prediction="eps")
        del model
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of {len(refs)} models are still alive"


def _zeros(backend):
    if backend == "torch":
        import torch

        return torch.zeros((2, 2))
    import jax.numpy as jnp

    return jnp.zeros((2, 2))


def test_the_cache_is_thread_safe_bounded_and_clearable():
    from diffcore import _cache

    mix = __import__("sampler_utils").two_gaussians_2d()
    model = mix.as_model(DISCRETE, "eps")
    errors = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def work(offset):
            try:
                for k in range(60):
                    diffcore.build_sampler("ddim", model, DISCRETE, steps=2 + (k + offset) % 45)
            except Exception as exc:  # noqa: BLE001 - any error is the failure
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]
    info = diffcore._cache.cache_info()
    assert 0 < info["size"] <= info["max_size"] == _cache.CACHE_SIZE
    diffcore.clear_cache()
    assert diffcore._cache.cache_info()["size"] == 0


def test_plain_callables_are_never_cached():
    from diffcore import _cache

    diffcore.clear_cache()
    m = NumpyModel(0.1, "eps")
    assert diffcore.build_sampler("ddim", m, VP, steps=3) is not diffcore.build_sampler("ddim", m, VP, steps=3)
    assert _cache.cache_info()["size"] == 0
    model = diffcore.Model(lambda p, x, t: p * x, 0.1)
    assert diffcore.build_sampler("ddim", model, VP, steps=3) is diffcore.build_sampler("ddim", model, VP, steps=3)


def test_the_likelihood_honours_what_the_model_declares():
    """The README's eps model in the likelihood: it used to be read as a score (21.84 nats for 3.17)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffcore_torch")
    from diffcore.analytic import GaussianMixture

    data = GaussianMixture(np.array([0.3, 0.7]), np.array([[-1.5, 0.5], [1.0, -0.5]]), np.array([0.3, 0.4]))
    x = torch.tensor(np.random.default_rng(0).standard_normal((4, 2)))
    by_eps = diffcore.nll(data.as_model(VP, "eps"), VP, x, divergence="exact", backend="torch").nll
    by_score = diffcore.nll(data.as_model(VP, "score"), VP, x, divergence="exact", backend="torch").nll
    np.testing.assert_allclose(by_eps.numpy(), by_score.numpy(), rtol=1e-5)
    exact = -data.marginal_log_prob(x.numpy(), np.asarray(1e-5), VP)
    np.testing.assert_allclose(by_eps.numpy(), exact, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bad", ["batch_column", "row", "scalar"])
def test_a_model_output_of_the_wrong_shape_is_an_error(bad):
    def model(x, t_in, cond=None):
        B, D = x.shape
        return {"batch_column": np.zeros((B, 1)), "row": np.zeros((1, D)), "scalar": np.zeros(())}[bad]

    with pytest.raises(ValueError, match=r"the model returned shape .* it must return shape \(3, 2\)"):
        diffcore.sample("ddim", model, VP, (3, 2), steps=3)
    with pytest.raises(ValueError, match=r"the model returned shape .* it must return shape \(3, 2\)"):
        diffcore.nll(model, VP, np.zeros((3, 2)), backend="numpy", divergence=lambda z, t: np.zeros(3))
