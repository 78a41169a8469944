"""The training loop's pieces that need no framework: objectives' keyed draws, the timestep
sampler's inverse CDF, the configuration, and the loop's mechanics with a stand-in trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest

import diffcore
from diffcore import objectives as obj
from diffcore.data import Dataset, batch_indices
from diffcore.timestep_sampler import steps_from_uniform
from diffcore.training import Batch, LossOut, OptimizerConfig, StepOut, TrainConfig, step_key, train

BK = diffcore.backend("numpy")


def _net(scale=0.5):
    """A deterministic stand-in network: a fixed function of (x, t_in), any output kind."""
    def net(x, t_in, cond=None):
        t = np.asarray(t_in, dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return scale * x * np.cos(t)
    return net


def _batches(x0, key, splits, t_probs=None):
    out, start = [], 0
    for n in splits:
        out.append(Batch(x0[start:start + n], np.arange(start, start + n), key, None, t_probs))
        start += n
    return out


OBJECTIVES = {
    "simple": lambda: obj.make_objective("simple", diffcore.GaussianDiffusion(betas=np.linspace(1e-4, 0.02, 50))),
    "vlb": lambda: obj.make_objective("vlb", diffcore.GaussianDiffusion(betas=np.linspace(1e-4, 0.02, 50))),
    "dsm": lambda: obj.make_objective("dsm", diffcore.VPSDE()),
    "dsm_likelihood": lambda: obj.make_objective("dsm_likelihood", diffcore.subVPSDE()),
    "ncsn": lambda: obj.make_objective("ncsn", diffcore.VESDE(sigma_min=0.01, sigma_max=1.0, N=10)),
    "flow": lambda: obj.make_objective("flow", diffcore.RectifiedFlow()),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_example_losses_depend_on_seed_step_and_example_only(name):
    """Example b's loss is the same whether the batch is split 8 or 3 + 5: its draws are keyed by b."""
    objective = OBJECTIVES[name]()
    x0 = np.random.default_rng(0).uniform(-1, 1, (8, 2))
    key = step_key(BK, 3, 17)
    probs = np.full(50, 1 / 50) if getattr(objective, "discrete", False) else None
    whole = objective(BK, _net(), _batches(x0, key, [8], probs)[0])
    parts = [objective(BK, _net(), b) for b in _batches(x0, key, [3, 5], probs)]
    np.testing.assert_array_equal(whole.loss, np.concatenate([p.loss for p in parts]))
    assert whole.loss.shape == (8,) and np.all(np.isfinite(whole.loss))
    other = objective(BK, _net(), _batches(x0, step_key(BK, 3, 18), [8], probs)[0])
    assert not np.array_equal(whole.loss, other.loss)  # another step draws anew


def test_sliced_score_loss_is_exact_for_a_linear_score():
    """s(x) = W x: the loss is mean_k v_k^T W v_k + 1/2 ||W x||^2 with the example's keyed probes."""
    torch = pytest.importorskip("torch")
    bk = diffcore.backend("torch")
    x0 = torch.randn(6, 2, dtype=torch.float64)
    w = torch.tensor([[-1.0, 0.2], [0.1, -2.0]], dtype=torch.float64)
    net = lambda x, t_in, cond=None: x @ w.T
    key = step_key(bk, 0, 0)
    out = obj.SlicedScoreLoss(num_projections=3)(bk, net, Batch(x0, torch.arange(6), key))
    v = bk.normal(bk.fold_in(key, diffcore.training.EXTRA), (6, 3, 2), torch.float64, sample_ids=torch.arange(6))
    expected = torch.einsum("bki,ij,bkj->bk", v, w, v).mean(1) + 0.5 * ((x0 @ w.T) ** 2).sum(1)
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)


def test_diffusion_loss_importance_weights():
    """t ~ p_t from the batch's probabilities; the loss is raw / (T p_t)."""
    diffusion = diffcore.GaussianDiffusion(betas=np.linspace(1e-4, 0.02, 4))
    objective = obj.DiffusionLoss(diffusion)
    probs = np.array([0.7, 0.1, 0.1, 0.1])
    x0 = np.random.default_rng(1).uniform(-1, 1, (64, 3))
    out = objective(BK, _net(), _batches(x0, step_key(BK, 0, 0), [64], probs)[0])
    np.testing.assert_allclose(out.loss, out.raw / (4 * probs[out.t]), rtol=1e-12)
    assert np.mean(out.t == 0) > 0.5  # p_0 = 0.7


def test_steps_from_uniform_is_the_inverse_cdf(xp):
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    u = np.array([0.0, 0.0999, 0.1001, 0.2999, 0.3001, 0.5999, 0.6001, 0.9999999])
    steps, w = steps_from_uniform(xp.asarray(u), xp.asarray(probs))
    np.testing.assert_array_equal(np.asarray(steps), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_allclose(np.asarray(w), 1.0 / (4 * probs[[0, 0, 1, 1, 2, 2, 3, 3]]))


def test_train_config_checks():
    with pytest.raises(ValueError, match="micro_batch_size must divide batch_size"):
        TrainConfig(batch_size=10, micro_batch_size=3)
    with pytest.raises(ValueError, match="timestep_sampler must be one of 'uniform', 'loss-second-moment'"):
        TrainConfig(timestep_sampler="importance")
    with pytest.raises(ValueError, match="ema_decay must lie in"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match=r"unknown training key\(s\) \['lr_warmup'\]"):
        TrainConfig.from_dict({"lr_warmup": 5})
    with pytest.raises(ValueError, match="lr must be a positive number"):
        OptimizerConfig(lr=-1e-3)
    with pytest.raises(ValueError, match="optimizer must be one of 'adamw', 'adam'"):
        OptimizerConfig(name="sgd")
    with pytest.raises(ValueError, match=r"unknown loss|loss must be one of"):
        obj.make_objective("l2", diffcore.VPSDE())
    c = TrainConfig(warmup=4, ema_decay=0.999, ema_warmup=True)
    assert [c.lr_at(s, 1.0) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert c.ema_decay_at(0) == pytest.approx(0.1) and c.ema_decay_at(10**6) == 0.999
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_objectives_reject_the_wrong_process():
    with pytest.raises(TypeError, match="DiffusionLoss needs a discrete diffusion"):
        obj.DiffusionLoss(diffcore.VPSDE())
    with pytest.raises(TypeError, match="NCSNLoss needs a variance-exploding"):
        obj.NCSNLoss(diffcore.VPSDE())
    with pytest.raises(TypeError, match="ScoreLoss"):
        obj.ScoreLoss(diffcore.GaussianDiffusion(betas=np.linspace(1e-4, 0.02, 10)))


# ----------------------------------------------------------------------------- loop mechanics
class _Config:
    num_class_embeds = None


class _Network:
    config = _Config()


class StandInTrainer:
    """Records what the loop hands a trainer; 'learns' by a deterministic rule from the losses."""

    backend = BK
    network = _Network()
    optimizer = OptimizerConfig(lr=0.1)

    def __init__(self, fail_at=None):
        self.w = 0.0
        self.calls = []
        self.fail_at = fail_at

    def step(self, objective, batches, *, global_batch, lr, clip_norm, ema_decay):
        outs = [objective(BK, _net(self.w + 0.5), b) for b in batches]
        self.calls.append({"ids": [b.ids.tolist() for b in batches], "x0": np.concatenate([b.x0 for b in batches]),
                           "lr": lr, "ema_decay": ema_decay, "key": batches[0].key})
        loss = np.concatenate([o.loss for o in outs])
        if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
            loss = loss * np.nan
        t = None if outs[0].t is None else np.concatenate([o.t for o in outs])
        applied = bool(np.all(np.isfinite(loss)))
        if applied:
            self.w -= lr * float(np.mean(loss))
        return StepOut(loss, np.concatenate([o.raw for o in outs]), t, 1.0, applied)


def _toy_data(n=20):
    return Dataset(data=np.random.default_rng(0).uniform(-1, 1, (n, 2)), levels=None, shape=(2,), name="toy")


def test_loop_reads_the_keyed_data_order_and_passes_each_steps_rates():
    data = _toy_data()
    trainer = StandInTrainer()
    cfg = TrainConfig(steps=5, batch_size=8, micro_batch_size=4, warmup=2, ema_decay=0.9, ema_warmup=True, seed=7)
    result = train(trainer, OBJECTIVES["dsm"](), data, cfg)
    assert result.step == 5 and not result.interrupted and len(result.losses) == 5
    for s, call in enumerate(trainer.calls):
        np.testing.assert_array_equal(call["x0"], data.data[batch_indices(20, 8, 7, s * 8)].astype(np.float32))
        assert call["ids"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert call["lr"] == cfg.lr_at(s, 0.1) and call["ema_decay"] == cfg.ema_decay_at(s)
        assert call["key"] == step_key(BK, 7, s)


def test_loop_stops_on_a_non_finite_loss_naming_the_step():
    with pytest.raises(diffcore.training.NonFiniteError, match="training stopped at step 3"):
        train(StandInTrainer(fail_at=3), OBJECTIVES["dsm"](), _toy_data(), TrainConfig(steps=6, batch_size=4))


def test_loop_feeds_the_importance_sampler_history():
    trainer = StandInTrainer()
    cfg = TrainConfig(steps=30, batch_size=10, timestep_sampler="loss-second-moment")
    train(trainer, OBJECTIVES["vlb"](), _toy_data(), cfg)
    # all 50 steps hold 10 losses after enough steps? not yet with 300 draws: the sampler stays uniform
    # until warmed up, and the loop passed uniform probabilities meanwhile
    assert len(trainer.calls) == 30


def test_labels_drop_to_the_null_class_keyed_per_example():
    class Conditional(_Config):
        num_class_embeds = 11  # ten classes and the null class
        null_class = 10

    class Net:
        config = Conditional()

    class Recorder(StandInTrainer):
        network = Net()

        def step(self, objective, batches, **kw):
            self.calls.append(np.concatenate([b.cond for b in batches]))
            return StepOut(np.zeros(len(self.calls[-1])), np.zeros(len(self.calls[-1])), None, 1.0, True)

    data = Dataset(data=np.zeros((500, 2)), levels=None, shape=(2,), name="labelled", labels=np.arange(500) % 10)
    runs = []
    for micro in (None, 25):
        trainer = Recorder()
        train(trainer, OBJECTIVES["dsm"](), data, TrainConfig(steps=8, batch_size=100, micro_batch_size=micro, cond_dropout=0.2))
        runs.append(np.stack(trainer.calls))
    np.testing.assert_array_equal(runs[0], runs[1])  # keyed by (seed, step, example): the split does not matter
    dropped = runs[0] == 10
    assert 0.12 < dropped.mean() < 0.28
    kept = ~dropped
    expected = np.stack([data.labels[batch_indices(500, 100, 0, s * 100)] for s in range(8)])
    np.testing.assert_array_equal(runs[0][kept], expected[kept])
    with pytest.raises(ValueError, match="cond_dropout needs a class-conditional network"):
        train(StandInTrainer(), OBJECTIVES["dsm"](), data, TrainConfig(steps=1, batch_size=10, cond_dropout=0.1))


def test_batch_larger_than_the_data_is_an_error():
    with pytest.raises(ValueError, match="batch_size = 64 is larger than the data"):
        train(StandInTrainer(), OBJECTIVES["dsm"](), _toy_data(20), TrainConfig(steps=1, batch_size=64))
