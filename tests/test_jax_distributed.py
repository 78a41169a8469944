"""JAX data parallelism on JAX's own machinery: a mesh of devices in one process and a
``jax.distributed`` job of several processes compute the same training steps, samples and
likelihoods as one device, and a killed process makes the job fail quickly.

The work runs in subprocesses (tests/jax_dist_worker.py), all started at once by one fixture:
one process with 2 host devices (``--xla_force_host_platform_device_count=2``) that trains on
one device then on a 2-device mesh and evaluates its shard-free reference; and a 2-process
``jax.distributed`` job on localhost that trains, samples and evaluates sharded by global id,
then trains on until rank 1 kills itself. A tiny MLP (hidden 32, dropout 0.1), 3 steps of batch 8
in 2 micro-batches with EMA, so little is compiled.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax.nnx")
pytest.importorskip("optax")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "jax_dist_worker.py"
LIMIT = 150  # seconds any worker may take before it is killed (a hang is a failure, not a stuck suite)
KILL_DEADLINE = 30.0  # seconds from rank 1's death to the other rank's exit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"))}
    paths = [str(ROOT), str(ROOT / "backends" / "diffcore_jax"), str(ROOT / "backends" / "diffcore_torch")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # XLA's cheap CPU compilation (as the trainer's compiler_options in the worker) for the
    # samplers and solvers too: compiling is most of these tests' time
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true")
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    d = tmp_path_factory.mktemp("jaxdist")
    port = _free_port()
    cmds = {
        "one": ([str(d / "one.npz"), "--mesh", "none,auto"], 2),
        **{f"rank{r}": ([str(d / "two.npz"), "--procs", "2", "--rank", str(r), "--port", str(port),
                         "--run-dir", str(d / "run"), "--kill-at", "4"], 1) for r in (0, 1)},
    }
    t0 = time.time()
    procs, logs, ends = {}, {}, {}
    for name, (args, devices) in cmds.items():
        logs[name] = open(d / f"{name}.log", "w")
        procs[name] = subprocess.Popen(
            ["timeout", str(LIMIT), sys.executable, str(WORKER), *args], env=_env(devices), cwd=ROOT,
            stdout=logs[name], stderr=subprocess.STDOUT,
        )
    while len(ends) < len(procs):
        for name, p in procs.items():
            if name not in ends and p.poll() is not None:
                ends[name] = time.time()
        time.sleep(0.05)
    for f in logs.values():
        f.close()
    out = {name: (d / f"{name}.log").read_text() for name in procs}
    for name in procs:
        print(f"{name}: rc {procs[name].returncode}, wall {ends[name] - t0:.1f} s")
        print("\n".join(line for line in out[name].splitlines() if line.startswith(("TIME", "FAILED", "DYING"))))
    return {"dir": d, "rc": {n: p.returncode for n, p in procs.items()}, "end": ends, "log": out}


def _load(path):
    with np.load(path) as f:
        return dict(f)


def _state_keys(arrays, prefix=""):
    return sorted(k[len(prefix):] for k in arrays if k.startswith(prefix) and "/" in k[len(prefix):]
                  and k[len(prefix):].split("/")[0] in ("params", "ema", "optimizer"))


def _same_state(a, b, prefix_b=""):
    keys = _state_keys(a)
    assert keys and keys == _state_keys(b, prefix_b)
    assert any(k.startswith("ema/") for k in keys) and any(k.startswith("optimizer/exp_avg/") for k in keys)
    for k in keys:
        np.testing.assert_allclose(b[prefix_b + k], a[k], rtol=2e-5, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(b[prefix_b + "losses"], a["losses"], rtol=2e-5, atol=1e-6)


def test_two_devices_in_one_process_train_as_one_device(jobs):
    assert jobs["rc"]["one"] == 0, jobs["log"]["one"][-3000:]
    one = _load(jobs["dir"] / "one.npz")
    _same_state(one, one, "auto:")
    assert int(one["optimizer/step"]) == 3
    moments = [v for k, v in one.items() if k.startswith("optimizer/exp_avg/")]
    assert max(float(np.abs(m).max()) for m in moments) > 0  # gradients flowed: not two untouched states
    assert "DIVISIBILITY-ERROR:" in jobs["log"]["one"] and "multiple of the 2 devices" in jobs["log"]["one"]


def test_two_processes_train_as_one(jobs):
    assert jobs["rc"]["one"] == 0, jobs["log"]["one"][-3000:]
    assert (jobs["dir"] / "two.npz").exists(), jobs["log"]["rank0"][-3000:]
    _same_state(_load(jobs["dir"] / "one.npz"), _load(jobs["dir"] / "two.npz"))


def test_sharded_sampling_and_likelihood_match_one_process(jobs):
    one, two = _load(jobs["dir"] / "one.npz"), _load(jobs["dir"] / "two.npz")
    assert two["samples"].shape == (5, 2) and two["nll"].shape == (5,)
    np.testing.assert_allclose(two["samples"], one["samples"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two["nll"], one["nll"], rtol=1e-4, atol=1e-4)


def test_killed_process_fails_the_job_quickly_and_the_checkpoint_loads(jobs):
    from diffcore.checkpoints import latest_checkpoint, load_checkpoint

    assert jobs["rc"]["rank1"] == 3, jobs["log"]["rank1"][-3000:]  # it killed itself after step 4
    died = float((jobs["dir"] / "two.npz.died").read_text())
    log0 = jobs["log"]["rank0"]
    assert jobs["rc"]["rank0"] not in (0, 124), log0[-3000:]  # failed, and not by the test's timeout
    assert "NOT FAILED" not in log0
    took = jobs["end"]["rank0"] - died
    print(f"rank 0 exited {took:.1f} s after rank 1 died")
    assert took < KILL_DEADLINE, log0[-3000:]
    assert "ProcessFailure" in log0 and "another process has probably died" in log0, log0[-3000:]
    ckpt = load_checkpoint(latest_checkpoint(jobs["dir"] / "run"))
    assert int(ckpt.state["step"]) >= 3 and ckpt.params and ckpt.optimizer


# in-process checks of the arguments (nothing compiled) ---------------------------------------
def test_init_world_without_a_job_is_local_and_checks_its_arguments(monkeypatch):
    from diffcore.distributed import LOCAL
    from diffcore_jax.distributed import init_world

    for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert init_world() is LOCAL
    assert __import__("diffcore").backend("jax").world() is LOCAL
    with pytest.raises(ValueError, match="num_processes = 2 needs coordinator"):
        init_world(num_processes=2)
    with pytest.raises(ValueError, match="heartbeat_timeout must be a positive whole number"):
        init_world(heartbeat_timeout=0)
    with pytest.raises(ValueError, match="process_id = 2 must be < num_processes = 2"):
        init_world("localhost:1", 2, 2)
    # a launcher's environment: JAX reads only the address; the count and the id are read here
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be a whole number; got 'two'"):
        init_world()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match="process_id = 2 must be < num_processes = 2"):
        init_world()


def test_trainer_mesh_argument():
    import jax
    from flax import nnx
    from jax.sharding import AxisType

    import diffcore
    from diffcore.networks import MLPConfig
    from diffcore.training import OptimizerConfig
    from diffcore_jax import networks as jnet

    bk = diffcore.backend("jax")
    net = jnet.MLP(MLPConfig(hidden_dim=8, num_layers=1), rngs=nnx.Rngs(0))
    opt = OptimizerConfig(lr=1e-3)
    with pytest.raises(ValueError, match="mesh must be None, 'auto' or a jax.sharding.Mesh; got 'all'"):
        bk.trainer(net, opt, mesh="all")
    with pytest.raises(TypeError, match="mesh must be None, 'auto' or a jax.sharding.Mesh; got int"):
        bk.trainer(net, opt, mesh=2)
    with pytest.raises(ValueError, match="mesh must have an axis named 'data'"):
        bk.trainer(net, opt, mesh=jax.make_mesh((1,), ("batch",)))
    explicit = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Explicit,))
    tr = bk.trainer(net, opt, mesh=explicit)
    assert tr.mesh.axis_types == (AxisType.Auto,) and tr.world is None
    assert bk.trainer(net, opt).mesh is None
