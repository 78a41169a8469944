"""A tiny distributed job for tests/test_torch_distributed.py and bench/bench_scaling.py.

Run under torchrun (``python -m torch.distributed.run --standalone --nproc_per_node=2
tests/torch_dist_job.py OUT RUN_DIR [--kill-after K]``) or imported: the test builds its 1-process
references from the same functions. The job trains an MLP on 2-D data (vlb loss of a learned-range
DDPM, keyed dropout, EMA, 2 micro-batches per rank), writes each rank's state, then samples and
evaluates likelihoods on the rank's :func:`diffcore.distributed.shard` of the examples (global
``sample_ids``) and gathers them with :func:`diffcore.distributed.gather_rows`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import diffcore
from diffcore.data import Dataset
from diffcore.distributed import LOCAL, gather_rows, shard
from diffcore.networks import MLPConfig
from diffcore.objectives import DiffusionLoss
from diffcore.schedules import get_named_beta_schedule
from diffcore.training import OptimizerConfig, TrainConfig, train

T = 20
N_DATA = 96
STEPS = 8
CKPT_EVERY = 2
N_EVAL = 9  # odd: the two ranks' shards differ in length (5 and 4), so gather_rows pads
OPT = OptimizerConfig(lr=1e-2, weight_decay=0.01)


def data() -> Dataset:
    x = np.random.default_rng(11).uniform(-1, 1, (N_DATA, 2))
    return Dataset(data=x, levels=None, shape=(2,), name="dist-toy")


_PROCESS = None
_OBJECTIVE = None


def process() -> diffcore.GaussianDiffusion:
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = diffcore.GaussianDiffusion(betas=get_named_beta_schedule("cosine", T), model_var_type="learned_range")
    return _PROCESS


def objective() -> DiffusionLoss:
    global _OBJECTIVE
    if _OBJECTIVE is None:
        _OBJECTIVE = DiffusionLoss(process(), "vlb")
    return _OBJECTIVE


def net_config(hidden: int = 32) -> MLPConfig:
    return MLPConfig(data_dim=2, hidden_dim=hidden, num_layers=2, out_dim=4, dropout=0.1)


def config(steps: int = STEPS, batch: int = 16, micro: int = 4, **kw) -> TrainConfig:
    base = dict(
        steps=steps, batch_size=batch, micro_batch_size=micro, seed=3, ema_decay=0.9, clip_norm=1.0,
        checkpoint_every=CKPT_EVERY, keep=10, log_every=1,
    )
    return TrainConfig(**{**base, **kw})


def trainer(world=LOCAL, hidden: int = 32, seed: int = 0):
    bk = diffcore.backend("torch")
    # rank-dependent initial weights: DDP's broadcast from rank 0 must make the ranks agree
    net = bk.network(net_config(hidden), seed=seed + 1000 * world.rank)
    return bk.trainer(net, OPT, world=world)


def run_training(world, run_dir: str, steps: int = STEPS, stop_after: int | None = None):
    tr = trainer(world)
    result = train(tr, objective(), data(), config(steps), run_dir, stop_after=stop_after)
    return tr, result


def evaluate(world, net, n: int = N_EVAL) -> dict[str, np.ndarray]:
    """This rank's shard of n examples: DDPM samples, the VLB (stride 3: random offsets), and the
    probability-flow ODE likelihood (Hutchinson probes) of a VP SDE with the net's first two
    outputs as eps; each keyed by the global ids, gathered in order on every rank."""
    import torch

    bk = diffcore.backend("torch")
    ids = shard(n, world)
    sid = torch.arange(ids.start, ids.stop, dtype=torch.int64)
    x = torch.as_tensor(data().data[ids.start : ids.stop], dtype=torch.float32)
    def bounded(x, t):
        # an 8-step network's outputs are noise; unbounded, its learned variance grows with the state
        # and overflows float32 within the 20 steps for some draws (a NaN error, not a comparison)
        return torch.tanh(net(x, t))

    with torch.no_grad():
        s = diffcore.sample("ddpm", bounded, process(), (len(ids), 2), backend=bk, seed=5, sample_ids=sid).x
        vlb = diffcore.vlb_bpd(bounded, process(), x, backend=bk, seed=6, sample_ids=sid, stride=3, decoder="gaussian").bpd

    def eps(x, t):
        return bounded(x, t * 999.0)[:, :2]

    ode = diffcore.ode_likelihood(eps, diffcore.VPSDE(), x, backend=bk, prediction="eps", seed=7, sample_ids=sid,
                                  rtol=1e-3, atol=1e-3).bpd
    return {k: gather_rows(world, v.detach().numpy(), n) for k, v in (("samples", s), ("vlb", vlb), ("ode", ode))}


def _flat(prefix: str, d) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": np.asarray(v) for k, v in d.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--kill-after", type=int, default=None,
                   help="then train on to --steps + 4 and have rank 1 kill itself after this step")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    bk = diffcore.backend("torch")
    t0 = time.perf_counter()
    world = bk.world(device="cpu", timeout_s=60)
    t_init = time.perf_counter() - t0
    tr, result = run_training(world, args.run_dir, steps=args.steps)
    t_train = time.perf_counter() - t0 - t_init
    state = tr.state_arrays()
    out = {**_flat("params", state["params"]), **_flat("ema", state["ema"]), **_flat("optimizer", state["optimizer"])}
    out["losses"] = np.asarray(result.losses)
    # the network the trainer holds is never the DDP wrapper
    assert type(tr.network).__name__ == "MLP" and type(tr.ema_network()).__name__ == "MLP"
    out.update(_flat("eval", evaluate(world, tr.ema_network())))
    np.savez(os.path.join(args.out, f"rank{world.rank}.npz"), **out)
    print(f"rank {world.rank}/{world.size} {world!r}: init {t_init:.2f} s, train {t_train:.2f} s, "
          f"eval+save {time.perf_counter() - t0 - t_init - t_train:.2f} s", flush=True)
    if args.kill_after is not None:  # a fault: rank 1 dies mid-run; torchrun must fail the job
        world.barrier()  # both ranks' results are written

        def progress(done: int, total: int, info) -> None:
            if world.rank == 1 and done == args.kill_after:
                with open(os.path.join(args.out, "killed_at"), "w") as f:
                    f.write(repr(time.time()))
                print(f"rank 1: the test hook kills this process after step {done}", file=sys.stderr, flush=True)
                os._exit(17)

        train(tr, objective(), data(), config(args.steps + 4), args.run_dir, progress=progress)
        raise SystemExit(f"rank {world.rank}: the run went on after rank 1 was killed")


if __name__ == "__main__":
    main()
