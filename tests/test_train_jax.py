"""JaxTrainer (diffcore_jax.training): exact resume, accumulation, keyed dropout, non-finite steps,
one compilation across learning rates, clipping, the portable state, bf16 and x64.

A tiny MLP (hidden 32, 2 layers, dropout 0.5) and a tiny denoising objective written here. Runs
with JAX's x64 off (the path users run) except for the one x64 test. Trainers of one network
structure and optimizer share their compiled step, so most tests here compile nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import diffcore  # noqa: E402
from conftest import jax_x64  # noqa: E402
from diffcore.networks import MLPConfig, layout  # noqa: E402
from diffcore.training import DROPOUT, NOISE, Batch, LossOut, OptimizerConfig, step_key  # noqa: E402
from diffcore_jax import networks as jnet  # noqa: E402

TRACES: list[str] = []  # one entry per trace of an objective (a Python side effect runs only when traced)


@dataclass(frozen=True)
class Denoise:
    """loss_b = mean over dims of (net(x0 + noise, t) - noise)^2, noise keyed per example."""

    t: float = 0.5
    tag: str = "denoise"
    report_t: bool = False  # return the ids as the "discrete steps" drawn (checks StepOut.t)

    def __call__(self, backend, net, batch):
        TRACES.append(self.tag)
        x0 = batch.x0
        noise = backend.normal(backend.fold_in(batch.key, NOISE), x0.shape, x0.dtype, sample_ids=batch.ids)
        t = jnp.full((x0.shape[0],), self.t, x0.dtype)
        raw = jnp.mean((net(x0 + noise, t) - noise) ** 2, axis=1)
        return LossOut(loss=raw, raw=raw, t=batch.ids if self.report_t else None)


DROP = MLPConfig(hidden_dim=32, num_layers=2, dropout=0.5)
OPT = OptimizerConfig(lr=1e-2, weight_decay=0.01)
# XLA CPU compiles a step in about half the time with these (same computation to float32 rounding)
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
BK = None


@pytest.fixture(scope="module", autouse=True)
def x64_off():
    global BK
    with jax_x64(False):
        BK = diffcore.backend("jax")
        yield


def data(step, n=8, seed=0):
    return np.random.default_rng([seed, step]).standard_normal((n, 2)).astype(np.float32)


def batches(step, split=(8,), seed=0, x0=None):
    x0 = data(step, sum(split)) if x0 is None else x0
    key = step_key(BK, seed, step)
    out, start = [], 0
    for n in split:
        ids = np.arange(start, start + n)
        out.append(Batch(x0=x0[start:start + n], ids=ids, key=key))
        start += n
    return out


def trainer(config=DROP, opt=OPT, seed=0, weights=None, **kw):
    net = jnet.MLP(config, rngs=nnx.Rngs(seed))
    if weights is not None:
        jnet.load_numpy_weights(net, weights)
    return BK.trainer(net, opt, compiler_options=FAST, **kw)


def run(tr, steps, obj=Denoise(), split=(8,), lrs=None, clip_norm=1.0):
    outs = []
    for s in steps:
        lr = 1e-2 if lrs is None else lrs[s]
        outs.append(tr.step(obj, batches(s, split), global_batch=8, lr=lr, clip_norm=clip_norm, ema_decay=0.9))
    return outs


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for part in a:
        assert list(a[part]) == list(b[part]), part
        for name in a[part]:
            np.testing.assert_array_equal(a[part][name], b[part][name], err_msg=f"{part}/{name}")


def test_resume_is_bit_identical():
    lrs = [1e-3, 2e-3, 5e-3, 1e-2, 1e-2, 1e-2]  # warmup: the rate is an argument of each step
    straight = trainer()
    run(straight, range(6), lrs=lrs)
    first = trainer()
    run(first, range(3), lrs=lrs)
    saved = first.state_arrays()
    resumed = trainer(seed=7)  # other initial weights: everything comes from the state
    resumed.load_state_arrays(saved)
    assert_states_equal(resumed.state_arrays(), saved)
    run(resumed, range(3, 6), lrs=lrs)
    want, got = straight.state_arrays(), resumed.state_arrays()
    assert_states_equal(got, want)
    assert int(got["optimizer"]["step"]) == 6 and got["optimizer"]["step"].dtype == np.int64
    # the state changed at all (an all-constant state would pass the comparison)
    assert not np.array_equal(want["params"]["layers.0.weight"], saved["params"]["layers.0.weight"])
    assert not np.array_equal(want["ema"]["layers.0.weight"], want["params"]["layers.0.weight"])


def test_portable_layout_names_and_shapes():
    tr = trainer()
    st = tr.state_arrays()
    names = [(e.name, e.shape) for e in layout(DROP)]
    for part in ("params", "ema"):
        assert [(k, v.shape) for k, v in st[part].items()] == names
        assert all(v.dtype == np.float32 for v in st[part].values())
    opt = st["optimizer"]
    assert list(opt) == ["step"] + [f"exp_avg/{n}" for n, _ in names] + [f"exp_avg_sq/{n}" for n, _ in names]
    assert all(opt[f"exp_avg/{n}"].shape == s for n, s in names)
    assert opt["step"].shape == () and int(opt["step"]) == 0
    # torch layout: a Linear weight is (out, in); the nnx kernel is (in, out)
    np.testing.assert_array_equal(st["params"]["input.weight"], np.asarray(tr.network.input.kernel[...]).T)


def test_load_checks_everything_before_assigning():
    tr = trainer()
    good = tr.state_arrays()
    before = tr.state_arrays()
    bad = {k: dict(v) for k, v in good.items()}
    bad["params"]["input.weight"] = np.zeros((3, 3), np.float32)
    bad["optimizer"]["exp_avg/output.bias"] = np.zeros((5,), np.float32)
    with pytest.raises(ValueError, match=r"input.weight: expected shape \(32, 2\), found \(3, 3\)"):
        tr.load_state_arrays(bad)
    bad["params"]["input.weight"] = good["params"]["input.weight"] + 1
    with pytest.raises(ValueError, match=r"exp_avg/output.bias: expected a float array of shape \(2,\)"):
        tr.load_state_arrays(bad)
    del bad["optimizer"]["exp_avg_sq/input.bias"]
    bad["optimizer"]["momentum/input.bias"] = np.zeros(32, np.float32)
    with pytest.raises(ValueError, match=r"missing 1: \['exp_avg_sq/input.bias'\].*unexpected 1: \['momentum/"):
        tr.load_state_arrays(bad)
    with pytest.raises(ValueError, match=r"missing \['ema'\]"):
        tr.load_state_arrays({"params": good["params"], "optimizer": good["optimizer"]})
    assert_states_equal(tr.state_arrays(), before)  # nothing was assigned


def test_accumulation_does_not_change_the_step():
    weights = jnet.to_numpy_weights(jnet.MLP(DROP, rngs=nnx.Rngs(0)))
    whole, halves = trainer(weights=weights), trainer(weights=weights)
    a = run(whole, [0], split=(8,))[0]
    before = TRACES.count("denoise")
    b = run(halves, [0], split=(4, 4))[0]
    assert TRACES.count("denoise") - before <= 1  # equal micro-batches: one lax.scan, the objective traced once
    assert a.applied and b.applied
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-6)  # same noise and masks per example id
    np.testing.assert_allclose(b.grad_norm, a.grad_norm, rtol=1e-5)
    sa, sb = whole.state_arrays(), halves.state_arrays()
    for part in sa:
        for n in sa[part]:
            np.testing.assert_allclose(sb[part][n], sa[part][n], rtol=1e-5, atol=1e-6, err_msg=f"{part}/{n}")


def test_dropout_is_keyed_by_step_key_and_example_id():
    tr = trainer()
    graphdef, state = nnx.split(tr.network)
    x0 = data(0)
    (b,) = batches(0, x0=x0)

    @jax.jit
    def by_hand(ids, key):  # the objective with the dropout key the trainer must bind
        noise = BK.normal(BK.fold_in(key, NOISE), x0.shape, jnp.float32, sample_ids=ids)
        net = nnx.merge(graphdef, state)
        out = net(x0 + noise, jnp.full(8, 0.5, jnp.float32), dropout_key=BK.fold_in(key, DROPOUT), sample_ids=ids)
        return jnp.mean((out - noise) ** 2, axis=1)

    def step(batch):  # lr 0: the weights stay, so the losses show the masks
        return tr.step(Denoise(), [batch], global_batch=8, lr=0.0, clip_norm=1.0, ema_decay=0.9)

    out = step(b)
    np.testing.assert_allclose(out.loss, by_hand(np.arange(8), b.key), rtol=1e-6)
    assert not np.allclose(out.loss, by_hand(np.arange(8), BK.fold_in(b.key, 1)))  # another dropout key
    other = step(b._replace(ids=np.arange(8, 16)))
    np.testing.assert_allclose(other.loss, by_hand(np.arange(8, 16), b.key), rtol=1e-6)
    assert not np.allclose(other.loss, out.loss)  # other ids: other noise and masks
    np.testing.assert_array_equal(step(b).loss, out.loss)  # same key and ids, same masks


def test_non_finite_loss_changes_nothing():
    tr = trainer()
    run(tr, [0])
    before = tr.state_arrays()
    x0 = data(1)
    x0[3, 1] = np.nan
    out = tr.step(Denoise(), batches(1, x0=x0), global_batch=8, lr=1e-2, clip_norm=1.0, ema_decay=0.9)
    assert out.applied is False and np.isnan(out.loss[3]) and np.isfinite(out.loss[0])
    assert_states_equal(tr.state_arrays(), before)
    assert run(tr, [2])[0].applied  # and training goes on
    assert int(tr.state_arrays()["optimizer"]["step"]) == 2


def test_one_compilation_for_every_learning_rate():
    """At most one trace for 5 steps at 5 rates, other clip and decay values and a second trainer
    (none when an earlier test compiled this step already: the step is shared)."""
    tr = trainer()
    before = TRACES.count("denoise")
    outs = [tr.step(Denoise(), batches(s), global_batch=8, lr=lr, clip_norm=1.0 + s, ema_decay=0.9 + 0.01 * s)
            for s, lr in enumerate([1e-4, 3e-4, 1e-3, 3e-3, 1e-2])]
    trainer(seed=3).step(Denoise(), batches(0), global_batch=8, lr=1e-3, clip_norm=2.0, ema_decay=0.5)
    assert TRACES.count("denoise") - before <= 1
    assert all(o.applied for o in outs) and all(o.loss.shape == (8,) and o.t is None for o in outs)
    assert not np.array_equal(outs[0].loss, outs[-1].loss)  # the steps ran


def test_clipping_bounds_the_update():
    # eps = 1 makes Adam's first update about lr * g (|g| << 1): its norm is then bounded by
    # lr * clip_norm when clipping works, and is not with a clip_norm far above the norm.
    opt = OptimizerConfig(lr=1.0, eps=1.0)
    weights = jnet.to_numpy_weights(jnet.MLP(DROP, rngs=nnx.Rngs(0)))
    norms = {}
    for clip in (1e9, 1e-3):
        tr = trainer(opt=opt, weights=weights, ema=False)
        out = tr.step(Denoise(), batches(0), global_batch=8, lr=1.0, clip_norm=clip, ema_decay=None)
        after = tr.state_arrays()["params"]
        norms[clip] = np.sqrt(sum(np.sum((after[n] - weights[n]) ** 2) for n in weights))
        assert out.grad_norm > 1e-2  # the reported norm is before clipping
        assert "ema" not in tr.state_arrays()
    assert norms[1e-3] <= 1e-3 * (1 + 1e-4)
    assert norms[1e9] > 10 * 1e-3


def test_ema_network_and_network():
    tr = trainer()
    w0 = jnet.to_numpy_weights(tr.network)
    run(tr, range(2))
    ema = tr.ema_network()
    assert type(ema) is jnet.MLP and ema is not tr.network
    st = tr.state_arrays()
    for n, v in jnet.to_numpy_weights(ema).items():
        np.testing.assert_array_equal(v, st["ema"][n])
    for n, v in jnet.to_numpy_weights(tr.network).items():  # the module given holds the trained weights
        np.testing.assert_array_equal(v, st["params"][n])
    assert not np.array_equal(st["params"]["output.weight"], w0["output.weight"])


def test_errors_name_the_argument():
    tr = trainer(ema=False)
    with pytest.raises(ValueError, match=r"ema_decay=0.9.*ema=False"):
        tr.step(Denoise(), batches(0), global_batch=8, lr=1e-3, clip_norm=None, ema_decay=0.9)
    with pytest.raises(ValueError, match=r"lr must be finite and >= 0.0; got nan"):
        tr.step(Denoise(), batches(0), global_batch=8, lr=float("nan"), clip_norm=None, ema_decay=None)
    with pytest.raises(ValueError, match=r"global_batch must be a positive integer; got 0"):
        tr.step(Denoise(), batches(0), global_batch=0, lr=1e-3, clip_norm=None, ema_decay=None)
    with pytest.raises(TypeError, match=r"objective must be hashable"):
        tr.step(_Unhashable(), batches(0), global_batch=8, lr=1e-3, clip_norm=None, ema_decay=None)
    with pytest.raises(TypeError, match=r"network must be a diffcore_jax.networks.UNet2D or MLP"):
        BK.trainer(lambda x: x, OPT)


class _Unhashable:
    __hash__ = None

    def __call__(self, backend, net, batch):  # pragma: no cover - never called
        raise AssertionError


def test_bf16_forward_float32_update():
    weights = jnet.to_numpy_weights(jnet.MLP(DROP, rngs=nnx.Rngs(0)))
    f32 = trainer(weights=weights)
    b16 = trainer(opt=OptimizerConfig(lr=1e-2, weight_decay=0.01, precision="bf16"), weights=weights)
    a, b = run(f32, [0])[0], run(b16, [0])[0]
    assert b.loss.dtype == np.float32 and b.applied
    np.testing.assert_allclose(b.loss, a.loss, rtol=5e-2, atol=1e-2)
    st = b16.state_arrays()
    assert all(v.dtype == np.float32 for part in st.values() for k, v in part.items() if k != "step")
    assert not np.array_equal(st["params"]["input.weight"], weights["input.weight"])


def test_works_with_x64_on():
    with jax_x64(True):
        bk = diffcore.backend("jax")
        tr = bk.trainer(jnet.MLP(DROP, rngs=nnx.Rngs(0)), OPT, compiler_options=FAST)
        key = step_key(bk, 0, 0)
        b = Batch(x0=jnp.asarray(data(0)), ids=jnp.arange(8), key=key)
        half = [b._replace(x0=b.x0[:4], ids=b.ids[:4]), b._replace(x0=b.x0[4:], ids=b.ids[4:])]
        outs = [tr.step(Denoise(report_t=True), half, global_batch=8, lr=lr, clip_norm=1.0, ema_decay=0.9)
                for lr in (1e-3, 2e-3)]
        assert all(o.applied for o in outs)
        np.testing.assert_array_equal(outs[0].t, np.arange(8))  # examples in global-batch order
        st = tr.state_arrays()
        assert all(v.dtype == np.float32 for part in ("params", "ema") for v in st[part].values())
        assert int(st["optimizer"]["step"]) == 2


def test_optax_adamw_is_torch_adamw():
    """The update the trainer's optax AdamW makes is torch.optim.AdamW's (bias corrections, eps
    outside the square root, decoupled decay on the old weights), step by step, at changing rates,
    to float32 rounding (torch updates m with lerp, optax as b1 m + (1 - b1) g)."""
    torch = pytest.importorskip("torch")
    from diffcore_jax.training import _adamw

    opt = OptimizerConfig(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50).astype(np.float32)
    grads = rng.standard_normal((6, 50)).astype(np.float32) * np.logspace(-3, 1, 50, dtype=np.float32)
    lrs = [1e-3, 5e-3, 1e-2, 1e-2, 3e-3, 1e-2]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.AdamW([tp], lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    tx = _adamw(opt)
    jp = {"w": jnp.asarray(p0)}
    state = tx.init(jp)
    for g, lr in zip(grads, lrs):
        for group in topt.param_groups:
            group["lr"] = lr
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        state = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.float32(lr)})
        upd, state = tx.update({"w": jnp.asarray(g)}, state, jp)
        jp = {"w": jp["w"] + upd["w"]}
    np.testing.assert_allclose(np.asarray(jp["w"]), tp.detach().numpy(), rtol=1e-6, atol=1e-7)
    ts = topt.state[tp]
    np.testing.assert_allclose(np.asarray(state.inner_state[0].mu["w"]), ts["exp_avg"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.inner_state[0].nu["w"]), ts["exp_avg_sq"].numpy(), rtol=1e-5)
    assert int(state.inner_state[0].count) == int(ts["step"]) == 6


@pytest.mark.parametrize("family, loss", [("ve", "dsm_likelihood"), ("ncsn", "ncsn")])
def test_the_objectives_proved_on_torch_only_train_under_jit(family, loss):
    """The VE likelihood-weighted DSM and NCSN objectives (whose learning proofs run on torch only,
    tests/test_train_learns.py) trace and train in the jitted JAX step: 40 steps of the loop on the
    mixture, finite, and the loss falls."""
    from diffcore import run as recipes
    from diffcore.data import load_dataset
    from diffcore.training import TrainConfig, train

    cfg = recipes.resolve({"backend": "jax", "data": {"name": "gaussian_mixture"},
                           "model": {"family": family, "loss": loss, "sigma_max": 4.0},
                           "network": {"hidden_dim": 64, "num_layers": 2}})
    ds = load_dataset("gaussian_mixture", n=1000)
    process = recipes.build_process(cfg, ds.shape)
    net = BK.network(recipes.build_network_config(cfg, ds.shape, process), seed=0)
    tr = BK.trainer(net, OptimizerConfig(lr=3e-3), compiler_options=FAST)
    result = train(tr, recipes.build_objective(cfg, process), ds, TrainConfig(steps=40, batch_size=128, ema_decay=None))
    losses = np.asarray(result.losses)
    assert np.isfinite(losses).all() and losses[-10:].mean() < 0.9 * losses[:5].mean(), losses


def test_a_network_placed_on_a_device_compiles_once():
    """Weights committed to a device (backend.network(..., device=)) with optax's fresh state: the
    first step's outputs were all committed, so the second step missed jit's cache and compiled
    the step again (20 s for the demo's U-Net). The state is placed alike from the start now."""
    import jax

    net = BK.network(MLPConfig(hidden_dim=24, num_layers=2), seed=3, device=BK.device(None))
    tr = BK.trainer(net, OPT, compiler_options=FAST)
    with jax.log_compiles(True):
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = lambda r: records.append(r.getMessage())
        logger = logging.getLogger("jax._src.dispatch")
        logger.addHandler(handler)
        try:
            run(tr, range(3), obj=Denoise(tag="placed"))
        finally:
            logger.removeHandler(handler)
    compiles = [m for m in records if "_train_step" in m and "Finished XLA compilation" in m]
    assert len(compiles) == 1, compiles
