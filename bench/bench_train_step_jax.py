"""CPU throughput of one JaxTrainer step on the DDPM CIFAR-10 U-Net, beside a bare nnx + optax step.

    .venv/bin/python bench/bench_train_step_jax.py [--batch 8] [--rounds 5] [--precision float32]

"JaxTrainer.step": diffcore_jax's trainer with a DDPM epsilon objective written here (keyed time
and noise draws per example, keyed dropout, gradient clipping at 1, AdamW, EMA 0.9999, the
finite check, one host transfer of the losses). "bare step": forward + backward of the mean
squared error to a fixed target + one optax.adam update, jitted (what bench_networks.py times):
the trainer's overhead is the difference. One XLA CPU thread (XLA_FLAGS set before jax is
imported). Compile time is the first call's wall time; throughput is images per second of process
CPU time (median of interleaved rounds; the machine is shared). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from dataclasses import dataclass

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import diffcore  # noqa: E402
from diffcore.networks import UNetConfig, parameter_count  # noqa: E402
from diffcore.training import NOISE, TIME, Batch, LossOut, OptimizerConfig, step_key  # noqa: E402
from diffcore_jax import networks as jnet  # noqa: E402


@dataclass(frozen=True)
class EpsLoss:
    """DDPM's simple loss (Ho et al. 2020): ``|| net(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) - eps ||^2``
    averaged over dimensions, t uniform on 0..T-1, linear betas 1e-4..0.02."""

    T: int = 1000

    def __call__(self, bk, net, batch):
        x0 = batch.x0
        b = x0.shape[0]
        u = bk.uniform(bk.fold_in(batch.key, TIME), (b,), jnp.float32, sample_ids=batch.ids)
        t = jnp.minimum(jnp.floor(u * self.T), self.T - 1).astype(jnp.int32)
        abar = jnp.cumprod(1.0 - jnp.linspace(1e-4, 0.02, self.T, dtype=jnp.float32))[t].reshape(b, 1, 1, 1)
        eps = bk.normal(bk.fold_in(batch.key, NOISE), x0.shape, jnp.float32, sample_ids=batch.ids)
        xt = jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * eps
        raw = jnp.mean((net(xt, t.astype(jnp.float32)) - eps) ** 2, axis=(1, 2, 3))
        return LossOut(loss=raw, raw=raw, t=t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", default="float32", choices=["float32", "bf16"])
    ap.add_argument("--dropout", type=float, default=0.0, help="the config's dropout (DDPM used 0.1 on CIFAR-10)")
    ap.add_argument("--no-bare", action="store_true", help="time the trainer only")
    args = ap.parse_args()

    config = UNetConfig.ddpm_cifar10()
    if args.dropout:
        config = dataclasses.replace(config, dropout=args.dropout)
    bk = diffcore.backend("jax")
    b = args.batch
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.uniform(-1, 1, (b, 3, 32, 32)).astype(np.float32))
    ids = jnp.arange(b)
    print(f"# DDPM CIFAR-10 U-Net ({parameter_count(config):,} parameters, dropout {config.dropout}), batch {b}, "
          f"{args.precision}, CPU")
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}")

    trainer = bk.trainer(jnet.UNet2D(config, rngs=nnx.Rngs(0)),
                         OptimizerConfig(lr=2e-4, precision=args.precision))
    step_no = [0]

    def trainer_step():
        key = step_key(bk, 0, step_no[0])
        step_no[0] += 1
        out = trainer.step(EpsLoss(), [Batch(x0=x0, ids=ids, key=key)], global_batch=b, lr=2e-4, clip_norm=1.0,
                           ema_decay=0.9999)
        assert out.applied
        return out

    cases = {"JaxTrainer.step": trainer_step}
    compile_s = {}
    t0 = time.perf_counter()
    first = trainer_step()
    compile_s["JaxTrainer.step"] = time.perf_counter() - t0
    print(f"first JaxTrainer step: loss {first.loss.mean():.4f}, grad norm {first.grad_norm:.3f}")

    if not args.no_bare:
        model = jnet.UNet2D(config, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tj = jnp.asarray(rng.uniform(0, 999, b).astype(np.float32))
        yj = jnp.asarray(rng.standard_normal((b, 3, 32, 32)).astype(np.float32))
        tx = optax.adam(1e-4)

        def loss_fn(p):
            return jnp.mean((nnx.merge(graphdef, p, rest)(x0, tj) - yj) ** 2)

        @jax.jit
        def j_step(p, opt_state):
            grads = jax.grad(loss_fn)(p)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state

        state = {"p": params, "opt": tx.init(params)}

        def bare_step():
            state["p"], state["opt"] = j_step(state["p"], state["opt"])
            jax.block_until_ready(state["p"])

        t0 = time.perf_counter()
        bare_step()
        compile_s["bare step"] = time.perf_counter() - t0
        cases["bare step"] = bare_step

    for fn in cases.values():  # warm-up after compiling
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    wall: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for k, fn in cases.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    print()
    print("| step | img/s (CPU time) | img/s (wall) | first call (compile) s |")
    print("|---|---:|---:|---:|")
    for k in cases:
        rate, wall_rate = b / statistics.median(cpu[k]), b / statistics.median(wall[k])
        print(f"| {k} | {rate:.2f} | {wall_rate:.2f} | {compile_s[k]:.1f} |")
    if "bare step" in cases:
        ratio = statistics.median(t / s for t, s in zip(cpu["JaxTrainer.step"], cpu["bare step"]))
        print(f"\nJaxTrainer.step CPU time / bare step CPU time: {ratio:.2f} (median of paired rounds)")
    print(f"({args.rounds} rounds; command: {' '.join([os.path.basename(sys.executable)] + sys.argv)})")


if __name__ == "__main__":
    main()
