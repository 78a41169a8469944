"""Exact resume, faults and cross-framework checkpoints, through the public loop
(``diffcore.training.train`` with a run directory).

- A run stopped halfway (mid-epoch) and resumed by a fresh process gives the uninterrupted run's
  per-step losses and its final weights, EMA, optimizer state and importance-sampler history bit
  for bit, on torch and on JAX, with keyed dropout, EMA, accumulation and the loss-second-moment
  importance sampler all on.
- A non-finite loss stops the run with ``NonFiniteError`` naming the step; the last checkpoint
  stays loadable. Ctrl-C (SIGINT) ends a run cleanly with a checkpoint of its step, and resuming
  gives the uninterrupted run's weights.
- A checkpoint written by torch resumes on JAX (optimizer state included) and the other way
  round: the same network outputs, the same DDIM samples, close weights after a further step.
- A checkpoint of another configuration is refused, listing the differing keys; a truncated file
  is a ``CheckpointError`` naming it.

The fresh processes import this module (``python -c``) and call :func:`_run`, so both sides build
the run the same way. JAX runs with x64 off (what users run), in-process and in the subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import diffcore
from diffcore import checkpoints
from diffcore.checkpoints import CheckpointError, list_checkpoints, load_checkpoint
from diffcore.data import Dataset, batch_indices
from diffcore.networks import MLPConfig
from diffcore.objectives import DiffusionLoss
from diffcore.schedules import get_named_beta_schedule
from diffcore.training import NOISE, LossOut, NonFiniteError, OptimizerConfig, TrainConfig, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

N_DATA = 150  # 4 batches of 32 an epoch (drop-last): step 6 starts at example 192 = epoch 1, offset 64
B = 32
STEPS = 12
HALF = 6
T = 20  # 20 steps x history 10 = 200 draws to warm the importance sampler up; the run draws 384
OPT = OptimizerConfig(lr=1e-2, weight_decay=0.01)
FAST_XLA = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ------------------------------------------------------------------------------------ building a run
@contextlib.contextmanager
def _x64_off():
    """JAX with x64 off (conftest turns it on for the core's tests); a no-op without JAX loaded."""
    jax = sys.modules.get("jax")
    if jax is None:
        yield
        return
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _data(n: int = N_DATA, nan_at: int | None = None) -> Dataset:
    x = np.random.default_rng(11).uniform(-1, 1, (n, 2))
    if nan_at is not None:
        x[nan_at, 1] = np.nan
    return Dataset(data=x, levels=None, shape=(2,), name="resume-toy")


def _process():
    return diffcore.GaussianDiffusion(betas=get_named_beta_schedule("cosine", T), model_var_type="learned_range")


_OBJECTIVES: dict = {}


def _objective(loss_type: str = "vlb") -> DiffusionLoss:
    """One objective per loss type and process: DiffusionLoss compares by identity (eq=False), and
    JAX compiles a step per objective, so a fresh instance per run would compile again."""
    if loss_type not in _OBJECTIVES:
        _OBJECTIVES[loss_type] = DiffusionLoss(_process(), loss_type)
    return _OBJECTIVES[loss_type]


def _net_config(dropout: float = 0.1, hidden: int = 32) -> MLPConfig:
    return MLPConfig(data_dim=2, hidden_dim=hidden, num_layers=2, out_dim=4, dropout=dropout)


def _trainer(backend_name: str, net_config: MLPConfig, seed: int = 0, opt: OptimizerConfig = OPT):
    bk = diffcore.backend(backend_name)
    net = bk.network(net_config, seed=seed)
    if backend_name == "jax":
        return bk.trainer(net, opt, compiler_options=FAST_XLA)
    return bk.trainer(net, opt)


def _config(steps: int = STEPS, **kw) -> TrainConfig:
    base = dict(
        steps=steps, batch_size=B, micro_batch_size=B // 2, seed=3, ema_decay=0.9, clip_norm=1.0,
        timestep_sampler="loss-second-moment", checkpoint_every=3, keep=5, log_every=1,
    )
    return TrainConfig(**{**base, **kw})


def _run(backend_name: str, run_dir: str, steps: int = STEPS, stop_after: int | None = None, sleep: float = 0.0) -> dict:
    """The exact-resume run: vlb with the importance sampler, dropout, EMA, 2 micro-batches.
    ``sleep`` seconds after each step (the SIGINT test's child, so the signal lands mid-run)."""
    if backend_name == "torch":
        import torch

        torch.set_num_threads(1)
    with _x64_off():
        trainer = _trainer(backend_name, _net_config())
        progress = (lambda *a: time.sleep(sleep)) if sleep else None
        result = train(
            trainer, _objective(), _data(), _config(steps), run_dir,
            stop_after=stop_after, progress=progress,
        )
    return {"step": result.step, "interrupted": result.interrupted, "losses": result.losses,
            "checkpoint": str(result.checkpoint)}


def _fresh_process(backend_name: str, run_dir: Path, **kw) -> tuple[subprocess.CompletedProcess, dict | None]:
    """:func:`_run` in a new Python process; its result from the last stdout line."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import test_train_resume as m; "
        f"print(json.dumps(m._run({backend_name!r}, {str(run_dir)!r}, **{kw!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def _child_env() -> dict:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "backends" / "diffcore_torch"), str(ROOT / "backends" / "diffcore_jax")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _metrics(run_dir: Path) -> list[dict]:
    keep = ("step", "loss", "grad_norm", "lr", "ema_decay")  # not the wall-clock fields
    with open(run_dir / "metrics.jsonl") as f:
        return [{k: json.loads(line)[k] for k in keep} for line in f if line.strip()]


def _assert_checkpoints_equal(a: Path, b: Path) -> None:
    """Two checkpoints hold the same arrays bit for bit: weights, EMA, optimizer, state, history."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.step == cb.step and ca.state == cb.state
    for part in ("params", "ema", "optimizer"):
        x, y = getattr(ca, part), getattr(cb, part)
        assert list(x) == list(y), part
        for name in x:
            assert x[name].dtype == y[name].dtype, (part, name)
            assert np.array_equal(x[name], y[name]), f"{part}/{name} differs between {a} and {b}"
    assert (ca.history is None) == (cb.history is None)
    if ca.history is not None:
        assert list(ca.history) == list(cb.history)
        for k in ca.history:
            assert np.array_equal(np.asarray(ca.history[k]), np.asarray(cb.history[k])), f"history {k}"


def _step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:09d}"


# ------------------------------------------------------------------------------------ 1. exact resume
@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_resume_in_a_fresh_process_is_bit_identical(backend_name, tmp_path):
    pytest.importorskip(backend_name)
    # the checkpoint at HALF is mid-epoch: its data position is not an epoch boundary
    per_epoch = (N_DATA // B) * B
    assert (HALF * B) % per_epoch != 0 and STEPS * B > per_epoch

    straight = _run(backend_name, str(tmp_path / "straight"))
    first = _run(backend_name, str(tmp_path / "resumed"), stop_after=HALF)
    assert straight["step"] == STEPS and first["step"] == HALF and not first["interrupted"]
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")][-1] == f"step_{HALF:09d}"
    _, second = _fresh_process(backend_name, tmp_path / "resumed")
    assert second["step"] == STEPS and len(second["losses"]) == STEPS - HALF  # it resumed at HALF

    # the same per-step losses (returned, and as logged: metrics.jsonl has one line per step)
    assert first["losses"] + second["losses"] == straight["losses"]
    logged = _metrics(tmp_path / "straight")
    assert [m["step"] for m in logged] == list(range(1, STEPS + 1))
    assert _metrics(tmp_path / "resumed") == logged
    # the same state at the stop and at the end, bit for bit
    _assert_checkpoints_equal(_step_dir(tmp_path / "straight", HALF), _step_dir(tmp_path / "resumed", HALF))
    _assert_checkpoints_equal(_step_dir(tmp_path / "straight", STEPS), _step_dir(tmp_path / "resumed", STEPS))

    # what the run exercised: the sampler warmed up during the run (p_t no longer uniform), the
    # saved EMA is not the weights, dropout is on (a step's losses are not those without it)
    end = load_checkpoint(tmp_path / "resumed")
    # (it warms up after the stop: the fresh process's p_t comes from the restored history)
    mid = load_checkpoint(_step_dir(tmp_path / "resumed", HALF))
    assert not np.all(mid.history["loss_counts"] == 10), mid.history["loss_counts"]
    assert np.all(end.history["loss_counts"] == 10), end.history["loss_counts"]
    assert not all(np.array_equal(end.params[n], end.ema[n]) for n in end.params)
    assert int(end.optimizer["step"]) == STEPS


# ------------------------------------------------------------------------------------ 2. faults
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, torch_one_thread):
    nan_at = 37
    data = _data(nan_at=nan_at)
    config = _config(steps=STEPS, checkpoint_every=2)
    bad_step = next(s for s in range(100) if nan_at in batch_indices(N_DATA, B, config.seed, s * B))
    assert bad_step >= 2, bad_step  # the example is first read after a checkpoint
    trainer = _trainer("torch", _net_config())
    with pytest.raises(NonFiniteError, match=rf"training stopped at step {bad_step}\b") as err:
        train(trainer, _objective(), data, config, tmp_path / "run",
              progress=lambda done, *_: None)
    last = (bad_step // 2) * 2
    assert f"step_{last:09d}" in str(err.value) and "intact" in str(err.value)
    ckpts = list_checkpoints(tmp_path / "run")
    assert ckpts[-1].name == f"step_{last:09d}"
    ckpt = load_checkpoint(tmp_path / "run")  # verifies sizes, checksums, layouts
    assert ckpt.step == last
    # the step was not applied: the trainer still holds the state of the step before
    assert int(trainer.state_arrays()["optimizer"]["step"]) == bad_step
    # the checkpoint is the clean run's (the NaN example had not been read)
    _run("torch", str(tmp_path / "clean"), steps=last)
    _assert_checkpoints_equal(_step_dir(tmp_path / "clean", last), ckpt.path)


def test_sigint_checkpoints_and_resuming_finishes_the_run(tmp_path, torch_one_thread):
    pytest.importorskip("torch")
    run_dir = tmp_path / "run"
    code = (
        f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import test_train_resume as m; "
        f"print(json.dumps(m._run('torch', {str(run_dir)!r}, sleep=0.15)))"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_child_env())
    try:
        deadline = time.monotonic() + 60
        while not list_checkpoints(run_dir):  # the first checkpoint: step 3
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, errs = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, errs[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] and 3 <= result["step"] < STEPS, result
    assert result["checkpoint"] == str(_step_dir(run_dir, result["step"]))
    assert load_checkpoint(run_dir).step == result["step"]

    resumed = _run("torch", str(run_dir))
    assert resumed["step"] == STEPS and len(resumed["losses"]) == STEPS - result["step"]
    _run("torch", str(tmp_path / "straight"))
    _assert_checkpoints_equal(_step_dir(tmp_path / "straight", STEPS), _step_dir(run_dir, STEPS))
    assert _metrics(run_dir) == _metrics(tmp_path / "straight")


# ------------------------------------------------------------------------------------ 3. cross-framework
@dataclass(frozen=True)
class FixedNoise:
    """eps-prediction with the noise and the time fixed functions of x0: no keyed draws, whose
    streams differ between the backends, so one step on torch and on JAX sees the same numbers."""

    def __call__(self, bk, net, batch):
        xp, x0 = bk.xp, batch.x0
        noise = xp.sin(7.0 * x0 + 1.0)
        t_in = xp.abs(x0[:, 0]) * float(T - 1)
        raw = xp.mean((net(0.8 * x0 + 0.6 * noise, t_in) - noise) ** 2, axis=1)
        return LossOut(raw, raw, None)


def _assert_close_checkpoints(a: Path, b: Path, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.step == cb.step and ca.state == cb.state
    for part in ("params", "ema", "optimizer"):
        x, y = getattr(ca, part), getattr(cb, part)
        assert sorted(x) == sorted(y), part
        for name in x:
            np.testing.assert_allclose(x[name], y[name], rtol=rtol, atol=atol, err_msg=f"{part}/{name}")


def test_checkpoints_cross_frameworks(tmp_path, torch_one_thread):
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    import dataclasses

    import jax.numpy as jnp

    net_config = MLPConfig(data_dim=2, hidden_dim=32, num_layers=2, dropout=0.0)
    process = diffcore.GaussianDiffusion(betas=get_named_beta_schedule("cosine", T))
    config = TrainConfig(steps=3, batch_size=16, seed=1, ema_decay=0.9, clip_norm=1.0, log_every=1)
    more = lambda n: dataclasses.replace(config, steps=n)  # noqa: E731
    data = _data()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    t_in = rng.uniform(0, T - 1, 64).astype(np.float32)
    x_T = rng.standard_normal((64, 2)).astype(np.float32)

    with _x64_off():
        # torch trains 3 steps; its checkpoint loads into a JAX trainer, optimizer state included
        torch_trainer = _trainer("torch", net_config, seed=0)
        train(torch_trainer, FixedNoise(), data, config, tmp_path / "torch")
        ckpt = load_checkpoint(tmp_path / "torch")
        jax_trainer = _trainer("jax", net_config, seed=7)
        jax_trainer.load_state_arrays({"params": ckpt.params, "ema": ckpt.ema, "optimizer": ckpt.optimizer})
        state = jax_trainer.state_arrays()
        for part in ("params", "ema", "optimizer"):
            stored = getattr(ckpt, part)
            assert sorted(state[part]) == sorted(stored), part
            for name in stored:  # the portable layout round-trips exactly
                assert np.array_equal(state[part][name], stored[name]), f"{part}/{name}"

        # the same network: the same outputs, and the same DDIM samples from the same x_T
        with torch.no_grad():
            out_t = torch_trainer.network(torch.from_numpy(x), torch.from_numpy(t_in)).numpy()
        out_j = np.asarray(jax_trainer.network(jnp.asarray(x), jnp.asarray(t_in)))
        np.testing.assert_allclose(out_j, out_t, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            s_t = diffcore.sample("ddim", torch_trainer.ema_network(), process, (64, 2), backend="torch",
                                  x_T=torch.from_numpy(x_T), steps=10).x.numpy()
        s_j = np.asarray(diffcore.sample("ddim", jax_trainer.ema_network(), process, (64, 2), backend="jax",
                                         x_T=jnp.asarray(x_T), steps=10).x)
        assert np.abs(s_t - x_T).max() > 1e-2  # the sampler did something
        np.testing.assert_allclose(s_j, s_t, rtol=1e-4, atol=1e-4)

        # one more step on each framework from the torch checkpoint (train() resumes a torch run on JAX)
        shutil.copytree(tmp_path / "torch", tmp_path / "torch_then_jax")
        on_jax = train(_trainer("jax", net_config, seed=9), FixedNoise(), data, more(4), tmp_path / "torch_then_jax")
        on_torch = train(_trainer("torch", net_config, seed=9), FixedNoise(), data, more(4), tmp_path / "torch")
        assert on_jax.step == on_torch.step == 4 and len(on_jax.losses) == 1
        np.testing.assert_allclose(on_jax.losses, on_torch.losses, rtol=1e-5)
        _assert_close_checkpoints(_step_dir(tmp_path / "torch_then_jax", 4), _step_dir(tmp_path / "torch", 4))

        # and the other way: JAX's checkpoint (step 4) resumes on torch, and on JAX, for one step
        shutil.copytree(tmp_path / "torch_then_jax", tmp_path / "jax_then_torch")
        jax_ckpt = load_checkpoint(tmp_path / "jax_then_torch")
        assert jax_ckpt.optimizer_meta == {"backend": "jax"}
        torch_loaded = _trainer("torch", net_config, seed=9)
        torch_loaded.load_state_arrays({"params": jax_ckpt.params, "ema": jax_ckpt.ema, "optimizer": jax_ckpt.optimizer})
        back = torch_loaded.state_arrays()
        for part in ("params", "ema", "optimizer"):
            for name, a in getattr(jax_ckpt, part).items():
                assert np.array_equal(back[part][name], a), f"{part}/{name}"
        train(torch_loaded, FixedNoise(), data, more(5), tmp_path / "jax_then_torch")
        train(_trainer("jax", net_config, seed=9), FixedNoise(), data, more(5), tmp_path / "torch_then_jax")
        _assert_close_checkpoints(_step_dir(tmp_path / "jax_then_torch", 5), _step_dir(tmp_path / "torch_then_jax", 5))


# ------------------------------------------------------------------------------------ 4. refusals
def test_another_configuration_is_refused_and_a_truncated_file_is_named(tmp_path, torch_one_thread):
    run_dir = tmp_path / "run"
    _run("torch", str(run_dir), steps=3)
    objective, data = _objective(), _data()

    other_opt = OptimizerConfig(lr=2e-3, weight_decay=0.01)
    with pytest.raises(ValueError, match="another configuration") as err:
        train(_trainer("torch", _net_config(), opt=other_opt), DiffusionLoss(_process(), "hybrid"), data,
              _config(steps=6, clip_norm=None, log_every=2), run_dir)
    msg = str(err.value)
    for key in ("objective.loss_type", "optimizer.lr", "train.clip_norm"):
        assert key in msg, (key, msg)
    assert "train.steps" not in msg and "train.log_every" not in msg  # scheduling may change on resume
    with pytest.raises(CheckpointError, match="hidden_dim"):  # another network
        train(_trainer("torch", _net_config(hidden=16)), objective, data, _config(steps=6), run_dir)
    assert [p.name for p in list_checkpoints(run_dir)] == [f"step_{3:09d}"]  # nothing written

    weights = _step_dir(run_dir, 3) / "net" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(CheckpointError, match="net/model.safetensors") as err:
        train(_trainer("torch", _net_config()), objective, data, _config(steps=6), run_dir)
    print(err.value)
    assert [p.name for p in list_checkpoints(run_dir)] == [f"step_{3:09d}"]
