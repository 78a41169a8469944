"""The networks as models of the core: the same weights sample, score likelihoods and train the
same on torch and on JAX (nnx state as a loop argument), and changed weights change the samples."""

from __future__ import annotations

import numpy as np
import pytest

import diffcore
from diffcore.networks import UNetConfig, layout

torch = pytest.importorskip("torch")
pytest.importorskip("diffcore_torch")
jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
pytest.importorskip("diffcore_jax")
import jax.numpy as jnp  # noqa: E402
from diffcore_jax import networks as jnet  # noqa: E402
from diffcore_torch import networks as tnet  # noqa: E402

CONFIG = UNetConfig(
    sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), norm_num_groups=8,
    layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)
SHAPE = (2, 1, 8, 8)
DISCRETE = diffcore.GaussianDiffusion(betas=diffcore.get_named_beta_schedule("linear", 100))


# loops of small torch ops: one thread (two are far slower when another process holds a core)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _weights(seed):
    rng = np.random.default_rng(seed)
    return {e.name: (0.1 * rng.standard_normal(e.shape)).astype(np.float32) for e in layout(CONFIG)}


def _nets(seed=0):
    w = _weights(seed)
    t = tnet.UNet2D(CONFIG).eval()
    tnet.load_numpy_weights(t, w)
    return t, jnet.from_numpy(jnet.UNet2D, CONFIG, w)


def test_same_weights_same_samples_on_torch_and_jax_and_new_weights_new_samples():
    tnet_, jnet_ = _nets(0)
    x_T = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    with torch.no_grad():
        xt = diffcore.sample("ddim", tnet_, DISCRETE, SHAPE, backend="torch", x_T=torch.tensor(x_T), steps=5).x
    sampler = diffcore.build_sampler("ddim", jnet_, DISCRETE, backend="jax", steps=5)
    xj = sampler.sample(jnet_, SHAPE, backend="jax", x_T=jnp.asarray(x_T)).x
    np.testing.assert_allclose(np.asarray(xj), xt.numpy(), rtol=1e-4, atol=1e-4)

    new = _weights(7)
    jnet.load_numpy_weights(jnet_, new)  # in place, as loading a checkpoint does
    tnet.load_numpy_weights(tnet_, new)
    with torch.no_grad():
        xt2 = diffcore.sample("ddim", tnet_, DISCRETE, SHAPE, backend="torch", x_T=torch.tensor(x_T), steps=5).x
    xj2 = sampler.sample(jnet_, SHAPE, backend="jax", x_T=jnp.asarray(x_T)).x
    assert not np.allclose(xt2.numpy(), xt.numpy())
    np.testing.assert_allclose(np.asarray(xj2), xt2.numpy(), rtol=1e-4, atol=1e-4)


def test_likelihood_runs_and_loss_gradients_agree_on_torch_and_jax():
    tnet_, jnet_ = _nets(3)
    vp = diffcore.VPSDE()
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    probes = rng.choice([-1.0, 1.0], size=SHAPE).astype(np.float32)
    # the likelihood with the network (torch: an adaptive solve over a U-Net compiles for minutes on JAX)
    with torch.no_grad():
        nt = diffcore.nll(tnet_, vp, torch.tensor(x), backend="torch", probes=torch.tensor(probes),
                          rtol=1e-3, atol=1e-3, prediction="eps")
    assert torch.all(torch.isfinite(nt.bpd)) and torch.all(nt.nfe > 0)

    # L_simple through the core's loss, gradients by each framework
    t = np.array([10, 60])
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    loss_t = DISCRETE.training_losses(tnet_, torch.tensor(x), torch.tensor(t), noise=torch.tensor(noise))["loss"].mean()
    loss_t.backward()
    g_torch = {k: v.grad.numpy() for k, v in tnet_.named_parameters()}

    graphdef, state = nnx.split(jnet_)

    def loss_fn(state):
        model = nnx.merge(graphdef, state)
        return DISCRETE.training_losses(model, jnp.asarray(x), jnp.asarray(t), noise=jnp.asarray(noise))["loss"].mean()

    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    loss_j, grads = jax.jit(jax.value_and_grad(loss_fn), compiler_options=fast)(state)
    np.testing.assert_allclose(float(loss_j), loss_t.item(), rtol=1e-4)
    g_jax = jnet.state_to_numpy(CONFIG, grads)
    top = max(float(np.abs(g).max()) for g in g_torch.values())
    for name, g in g_torch.items():
        # per tensor; floored for gradients that vanish analytically (attention's key bias)
        scale = max(float(np.abs(g).max()), 1e-6 * top)
        np.testing.assert_allclose(g_jax[name], g, rtol=0, atol=1e-4 * scale, err_msg=name)
