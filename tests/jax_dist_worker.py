"""One process of tests/test_jax_distributed.py (and bench/bench_scaling_jax.py): trains a tiny MLP
with diffcore.training.train on the JAX backend, then samples and evaluates the likelihood of its
shard of examples, and writes what it computed to an .npz.

    python tests/jax_dist_worker.py OUT --mesh none|auto [--procs W --rank R --port P]
        [--run-dir DIR] [--die-after K] [--steps S] [--batch B] [--micro M] [--no-eval]

``--procs > 1`` joins a jax.distributed job on localhost:P (diffcore_jax.distributed.init_world).
``--die-after K``: rank 1 kills itself (os._exit, no clean-up) after step K (the kill test).
Prints ``TIME <what> <seconds>`` lines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

T0 = time.perf_counter()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mesh", default="none", help="comma-separated: train once per mesh (none, auto)")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--kill-at", type=int, default=None,
                    help="then train on; rank 1 kills itself after this step (os._exit, no clean-up)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--data-n", type=int, default=64)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--full-opt", action="store_true", help="XLA's default optimisation (slower compile)")
    a = ap.parse_args()

    import numpy as np

    import diffcore
    from diffcore.distributed import LOCAL

    bk = diffcore.backend("jax")
    world = bk.world(f"localhost:{a.port}", a.procs, a.rank) if a.procs > 1 else LOCAL
    import jax
    from flax import nnx

    from diffcore.data import load_dataset
    from diffcore.distributed import gather_rows, shard
    from diffcore.networks import MLPConfig
    from diffcore.objectives import ScoreLoss
    from diffcore.sde import VPSDE
    from diffcore.training import OptimizerConfig, TrainConfig, train
    from diffcore_jax import networks as jnet

    print(f"TIME start {time.perf_counter() - T0:.2f} rank {world.rank}/{world.size} devices {jax.devices()}",
          flush=True)
    sde = VPSDE(N=100)
    data = load_dataset("two_moons", n=a.data_n, held_out=0)
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    out = {}

    def progress(done, total, info):
        print(f"TIME step {done} {time.perf_counter() - T0:.4f} loss {info['loss']:.6f}", flush=True)
        if a.kill_at is not None and world.rank == 1 and done == a.kill_at:
            with open(a.out + ".died", "w") as f:
                f.write(repr(time.time()))
            print("DYING", flush=True)
            os._exit(3)

    def config(steps):
        return TrainConfig(steps=steps, batch_size=a.batch, micro_batch_size=a.micro, ema_decay=0.9,
                           checkpoint_every=1 if a.run_dir else None, log_every=1)

    meshes = a.mesh.split(",")
    for i, mesh in enumerate(meshes):
        net = jnet.MLP(MLPConfig(hidden_dim=a.hidden, num_layers=2, dropout=0.1), rngs=nnx.Rngs(0))
        trainer = bk.trainer(net, OptimizerConfig(lr=1e-2, weight_decay=0.01),
                             compiler_options=None if a.full_opt else fast,
                             mesh=None if mesh == "none" else mesh)
        t = time.perf_counter()
        result = train(trainer, ScoreLoss(sde), data, config(a.steps), a.run_dir, progress=progress)
        print(f"TIME train[{mesh}] {time.perf_counter() - t:.2f}", flush=True)
        prefix = "" if i == 0 else mesh + ":"
        out.update({f"{prefix}{k}/{n}": v for k, d in trainer.state_arrays().items() for n, v in d.items()})
        out[prefix + "losses"] = np.asarray(result.losses)
        if i == 0:
            first = trainer
        if trainer.mesh is not None and jax.process_count() == 1 and len(trainer.mesh.devices.flat) > 1:
            from diffcore.training import Batch, step_key

            odd = Batch(np.zeros((3, 2), np.float32), np.arange(3), step_key(bk, 0, 0))
            try:  # a micro-batch that does not divide over the devices: a clear error before compiling
                trainer.step(ScoreLoss(sde), [odd], global_batch=3, lr=1e-3, clip_norm=None, ema_decay=None)
            except ValueError as err:
                print(f"DIVISIBILITY-ERROR: {err}", flush=True)

    if not a.no_eval:  # each rank its shard of n examples, keyed by their global ids, gathered
        t = time.perf_counter()
        n = 5
        ids = np.asarray(shard(n, world), dtype=np.int64)
        model = first.ema_network()
        s = diffcore.sample("euler_maruyama", model, sde, (len(ids), 2), backend=bk, seed=1, steps=4,
                            sample_ids=ids)
        out["samples"] = gather_rows(world, np.asarray(s.x), n)
        x = data.data[ids[0]:ids[-1] + 1].astype(np.float32)
        r = diffcore.likelihood.ode_likelihood(model, sde, jax.numpy.asarray(x), backend=bk, seed=2,
                                               sample_ids=ids, rtol=1e-3, atol=1e-3, divergence="exact")
        out["nll"] = gather_rows(world, np.asarray(r.nll), n)
        print(f"TIME eval {time.perf_counter() - t:.2f}", flush=True)
    if world.rank == 0:
        np.savez(a.out + ".tmp.npz", **out)
        os.replace(a.out + ".tmp.npz", a.out)
    world.barrier()
    print(f"TIME done {time.perf_counter() - T0:.2f}", flush=True)

    if a.kill_at is not None:  # train on; rank 1 dies after step kill_at, the others must fail
        try:
            train(first, ScoreLoss(sde), data, config(a.kill_at + 3), a.run_dir, progress=progress)
        except Exception as err:
            print(f"FAILED at {time.time()!r}: {type(err).__name__}: {err}", flush=True)
            raise
        print("NOT FAILED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
