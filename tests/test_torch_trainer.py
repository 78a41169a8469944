"""TorchTrainer (diffcore.training.Trainer on torch): exact resumption, accumulation, keyed dropout,
non-finite steps, clipping, state checks."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from diffcore.networks import MLPConfig, WeightsError  # noqa: E402
from diffcore.training import NOISE, TIME, Batch, LossOut, OptimizerConfig, step_key  # noqa: E402
from diffcore_torch import TorchBackend  # noqa: E402
from diffcore_torch import networks as tnet  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BK = TorchBackend()
B = 8
X = torch.from_numpy(np.random.default_rng(0).standard_normal((4 * B, 2)).astype(np.float32))
OPT = OptimizerConfig(lr=1e-3, weight_decay=0.01)


def objective(bk, net, batch):
    """eps-prediction on x0 + noise: loss_b = mean((net(x0 + eps, t) - eps)^2) over features."""
    x0 = batch.x0
    noise = bk.normal(bk.fold_in(batch.key, NOISE), tuple(x0.shape), x0.dtype, sample_ids=batch.ids)
    t = bk.uniform(bk.fold_in(batch.key, TIME), (x0.shape[0],), x0.dtype, sample_ids=batch.ids) * 999.0
    loss = ((net(x0 + noise, t) - noise) ** 2).mean(dim=1)
    return LossOut(loss, loss.detach(), None)


def make(seed=0, dropout=0.1, opt=OPT, ema=True):
    torch.manual_seed(seed)
    return BK.trainer(tnet.MLP(MLPConfig(hidden_dim=32, num_layers=2, dropout=dropout)), opt, ema=ema)


def batches(step, split=(B,), seed=0):
    key = step_key(BK, seed, step)
    x = X[(step % 4) * B : (step % 4 + 1) * B]
    out, start = [], 0
    for n in split:
        out.append(Batch(x0=x[start : start + n], ids=torch.arange(start, start + n), key=key))
        start += n
    return out


def run(trainer, steps, **kw):
    kw = {"global_batch": B, "lr": 1e-3, "clip_norm": 1.0, "ema_decay": 0.9, **kw}
    return [trainer.step(objective, batches(s), **kw) for s in steps]


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for part in a:
        assert a[part].keys() == b[part].keys(), part
        for name in a[part]:
            assert a[part][name].dtype == b[part][name].dtype, (part, name)
            np.testing.assert_array_equal(a[part][name], b[part][name], err_msg=f"{part}/{name}")


def test_resume_from_state_arrays_is_bit_identical():
    straight = make()
    outs = run(straight, range(6))
    assert all(o.applied for o in outs) and outs[0].loss.shape == (B,) and outs[0].t is None
    first = make()
    run(first, range(3))
    state = first.state_arrays()
    assert int(state["optimizer"]["step"]) == 3 and state["optimizer"]["step"].dtype == np.int64
    resumed = make(seed=1)  # other initial weights: everything must come from the state
    resumed.load_state_arrays(state)
    assert_states_equal(resumed.state_arrays(), state)
    outs2 = run(resumed, range(3, 6))
    assert_states_equal(straight.state_arrays(), resumed.state_arrays())
    for o, o2 in zip(outs[3:], outs2):
        np.testing.assert_array_equal(o.loss, o2.loss)
        assert o.grad_norm == o2.grad_norm
    # and the weights moved, the EMA lags them
    s = straight.state_arrays()
    assert not np.array_equal(s["params"]["output.weight"], state["params"]["output.weight"])
    assert not np.array_equal(s["params"]["output.weight"], s["ema"]["output.weight"])


def test_micro_batches_give_the_update_of_the_whole_batch():
    whole, parts = make(), make()
    a = whole.step(objective, batches(0), global_batch=B, lr=1e-3, clip_norm=None, ema_decay=0.9)
    b = parts.step(objective, batches(0, split=(4, 4)), global_batch=B, lr=1e-3, clip_norm=None, ema_decay=0.9)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)  # dropout and noise keyed by example id
    np.testing.assert_allclose(a.grad_norm, b.grad_norm, rtol=1e-5)
    sa, sb = whole.state_arrays(), parts.state_arrays()
    for part in ("params", "ema", "optimizer"):
        for name in sa[part]:
            np.testing.assert_allclose(sa[part][name], sb[part][name], rtol=1e-5, atol=1e-7, err_msg=f"{part}/{name}")


def test_dropout_is_keyed_by_step_key_and_example_id():
    seen = []

    def probe(bk, net, batch):  # every row of x is the same point: rows differ by their dropout masks only
        out = net(torch.zeros(batch.x0.shape), torch.full((batch.x0.shape[0],), 10.0))
        seen.append(out.detach())
        return objective(bk, net, batch)

    for _ in range(2):
        make().step(probe, batches(0), global_batch=B, lr=1e-3, clip_norm=None, ema_decay=None)
    make(dropout=0.0).step(probe, batches(0), global_batch=B, lr=1e-3, clip_norm=None, ema_decay=None)
    make().step(probe, batches(1), global_batch=B, lr=1e-3, clip_norm=None, ema_decay=None)
    same_key, again, no_dropout, other_key = seen
    assert torch.equal(same_key, again)
    assert not torch.equal(same_key[0], same_key[1])  # different ids, different masks
    assert torch.equal(no_dropout[0], no_dropout[1])
    assert not torch.equal(same_key, other_key)


def test_non_finite_loss_changes_nothing():
    trainer = make()
    run(trainer, range(2))
    before = trainer.state_arrays()

    def bad(bk, net, batch):
        out = objective(bk, net, batch)
        return LossOut(out.loss * float("nan"), out.raw, None)

    out = trainer.step(bad, batches(2), global_batch=B, lr=1e-3, clip_norm=1.0, ema_decay=0.9)
    assert out.applied is False and np.isnan(out.loss).all()
    assert_states_equal(trainer.state_arrays(), before)
    assert all(p.grad is None for p in trainer.network.parameters())
    assert run(trainer, [2])[0].applied  # and the next step works


def test_clipping_bounds_the_update():
    # eps far above |g|: the first AdamW update is lr * g / (|g| + eps) ~ lr / eps * g, linear in g
    opt = OptimizerConfig(lr=1.0, eps=1e4)
    clip = 1e-3

    def update_norm(clip_norm):
        trainer = make(dropout=0.0, opt=opt)
        before = trainer.state_arrays()["params"]
        out = trainer.step(objective, batches(0), global_batch=B, lr=1.0, clip_norm=clip_norm, ema_decay=None)
        after = trainer.state_arrays()["params"]
        return out.grad_norm, np.sqrt(sum(((after[n] - before[n]).astype(np.float64) ** 2).sum() for n in after))

    norm, clipped = update_norm(clip)
    _, free = update_norm(None)
    assert norm > 100 * clip  # the reported norm is the unclipped one
    assert clipped <= clip / 1e4 * (1 + 1e-3)
    np.testing.assert_allclose(free, norm / 1e4, rtol=1e-3)


def test_load_checks_everything_before_assigning():
    trainer = make()
    good = trainer.state_arrays()
    other = make(seed=3)
    other_before = other.state_arrays()
    bad = copy.deepcopy(good)
    bad["optimizer"]["exp_avg/output.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(WeightsError, match=r"exp_avg.*output.weight: expected shape"):
        other.load_state_arrays(bad)
    bad = copy.deepcopy(good)
    del bad["ema"]["input.bias"]
    with pytest.raises(WeightsError, match=r"state\['ema'\].*missing 1 weight\(s\): input.bias"):
        other.load_state_arrays(bad)
    bad = copy.deepcopy(good)
    bad["optimizer"]["step"] = np.float32(3)
    with pytest.raises(ValueError, match=r"'step'\] must be a non-negative integer scalar"):
        other.load_state_arrays(bad)
    with pytest.raises(ValueError, match=r"missing \['optimizer'\]"):
        other.load_state_arrays({"params": good["params"], "ema": good["ema"]})
    with pytest.raises(ValueError, match="ema=True"):
        make(ema=False).load_state_arrays(good)
    assert_states_equal(other.state_arrays(), other_before)


def test_ema_network_is_an_eval_copy_with_the_ema_weights():
    trainer = make()
    run(trainer, range(2))
    net = trainer.ema_network()
    assert type(net) is type(trainer.network) and net is not trainer.network and not net.training
    ema = trainer.state_arrays()["ema"]
    for name, value in tnet.to_numpy_weights(net).items():
        np.testing.assert_array_equal(value, ema[name])
    with pytest.raises(ValueError, match="ema=False"):
        make(ema=False).ema_network()
    with pytest.raises(ValueError, match="ema_decay"):
        run(make(ema=False), [0])


def test_bf16_step_runs_with_float32_loss():
    trainer = make(opt=OptimizerConfig(precision="bf16"))
    out = run(trainer, [0])[0]
    assert out.applied and out.loss.dtype == np.float32 and np.isfinite(out.loss).all()
    assert all(p.dtype == torch.float32 for p in trainer.network.parameters())


def test_sliced_score_matching_trains_with_keyed_dropout(torch_one_thread):
    """ssm differentiates the network with respect to its input (torch.func.vjp); keyed dropout draws
    inside that transform, where `.cpu()` on the ids returned a tensor without storage."""
    import diffcore
    from diffcore.data import load_dataset
    from diffcore.networks import MLPConfig
    from diffcore.objectives import make_objective
    from diffcore.training import OptimizerConfig, TrainConfig, train

    bk = diffcore.backend("torch")
    net = bk.network(MLPConfig(data_dim=2, hidden_dim=32, num_layers=2, dropout=0.1), seed=0)
    tr = bk.trainer(net, OptimizerConfig(lr=1e-3))
    losses = train(tr, make_objective("ssm", None), load_dataset("gaussian_mixture", n=200),
                   TrainConfig(steps=3, batch_size=32, ema_decay=None)).losses
    assert len(losses) == 3 and np.isfinite(losses).all()
