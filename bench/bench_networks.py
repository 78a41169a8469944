"""CPU throughput of the DDPM CIFAR-10 U-Net: diffusers vs diffcore-torch, diffcore-JAX beside them.

    .venv/bin/python bench/bench_networks.py [--batch 8] [--rounds 5] [--no-jax]

All three hold the same weights (float32). "forward" is one network evaluation without gradients;
"train step" is forward + backward of the mean squared error to a random target + one Adam update
(torch.optim.Adam / optax.adam). Torch runs on one thread (pinned and printed); JAX is pinned to one
thread as well (XLA_FLAGS set before jax is imported) and jitted (compile time printed apart).

The machine is shared, so the models are timed in interleaved rounds (one call of each per round)
on process CPU time; each column is the median over the rounds, and the torch ratio (diffcore-torch
images/s over diffusers images/s) is the median of the per-round ratios.
Printed as a markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

# One XLA CPU thread, set before jax is imported (the flag is read when the backend starts).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffcore.networks import UNetConfig, config_to_diffusers, parameter_count  # noqa: E402
from diffcore_torch import networks as tnet  # noqa: E402


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cpu_timed(fn) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call. With one compute thread the CPU time is
    the wall time of an idle machine, and it does not count time other engineers' jobs hold the
    core -- the table reports it; the wall-clock ratio is printed under it."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def cifar_models():
    """(config, diffusers kwargs, diffusers UNet2DModel, diffcore-torch UNet2D) of the DDPM CIFAR-10
    U-Net, both holding the same weights (diffusers' initialisation under torch.manual_seed(0))."""
    import diffusers

    config = UNetConfig.ddpm_cifar10()
    kwargs = {k: v for k, v in config_to_diffusers(config).items() if not k.startswith("_")}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.UNet2DModel(**kwargs)
    net = tnet.UNet2D(config)
    net.load_state_dict(ref.state_dict(), strict=True)
    return config, kwargs, ref, net


def paired_rounds(fns: dict, rounds: int) -> tuple[dict, dict]:
    """Warm each callable up once, then time ``rounds`` interleaved rounds (one call of each per
    round): ({name: [cpu s]}, {name: [wall s]})."""
    for fn in fns.values():  # warm-up: allocator, oneDNN primitives, first jit dispatch
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            c, w = _cpu_timed(fn)
            cpu[k].append(c)
            wall[k].append(w)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-jax", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import diffusers

    config, kwargs, ref, net = cifar_models()
    weights = tnet.to_numpy_weights(net)

    b = args.batch
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((b, 3, 32, 32)).astype(np.float32)
    t_np = rng.uniform(0, 999, b).astype(np.float32)
    y_np = rng.standard_normal((b, 3, 32, 32)).astype(np.float32)
    x, t, y = torch.from_numpy(x_np), torch.from_numpy(t_np), torch.from_numpy(y_np)

    print(f"# DDPM CIFAR-10 U-Net ({parameter_count(config):,} parameters), batch {b}, float32, CPU")
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, torch threads = {torch.get_num_threads()}")

    def torch_forward(model, call):
        model.eval()

        def run():
            with torch.no_grad():
                call(model)

        return run

    def torch_train(model, call):
        model.train()  # dropout is 0.0 in this config: train() only changes the mode flag
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def run():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(call(model), y)
            loss.backward()
            opt.step()

        return run

    call_ref = lambda m: m(x, t).sample  # noqa: E731
    call_net = lambda m: m(x, t)  # noqa: E731
    # Separate copies for training so the forward timings use the untouched weights.
    ref_train = diffusers.UNet2DModel(**kwargs)
    ref_train.load_state_dict(ref.state_dict())
    net_train = tnet.UNet2D(config)
    net_train.load_state_dict(ref.state_dict())

    cases = {
        "forward": {"diffusers": torch_forward(ref, call_ref), "diffcore-torch": torch_forward(net, call_net)},
        "train step (Adam)": {
            "diffusers": torch_train(ref_train, call_ref),
            "diffcore-torch": torch_train(net_train, call_net),
        },
    }

    compile_s: dict[str, float] = {}
    if not args.no_jax:
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        from diffcore_jax import networks as jnet

        print(f"jax {jax.__version__}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
        model = jnet.from_numpy(jnet.UNet2D, config, weights)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        xj, tj, yj = jnp.asarray(x_np), jnp.asarray(t_np), jnp.asarray(y_np)

        @jax.jit
        def j_forward(p, x, t):
            return nnx.merge(graphdef, p, rest)(x, t)

        tx = optax.adam(1e-4)

        def loss_fn(p, x, t, y):
            return jnp.mean((nnx.merge(graphdef, p, rest)(x, t) - y) ** 2)

        @jax.jit
        def j_step(p, opt_state, x, t, y):
            grads = jax.grad(loss_fn)(p, x, t, y)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state

        state = {"p": params, "opt": tx.init(params)}
        compile_s["forward"] = _timed(lambda: j_forward.lower(params, xj, tj).compile())
        compile_s["train step (Adam)"] = _timed(lambda: j_step.lower(params, state["opt"], xj, tj, yj).compile())

        def jax_train():
            state["p"], state["opt"] = j_step(state["p"], state["opt"], xj, tj, yj)
            jax.block_until_ready(state["p"])

        cases["forward"]["diffcore-jax"] = lambda: j_forward(params, xj, tj).block_until_ready()
        cases["train step (Adam)"]["diffcore-jax"] = jax_train

        # Same weights, same answer: a sanity line before the timings.
        with torch.no_grad():
            want = ref(x, t).sample.numpy()
        print(f"max |jax - diffusers| on this batch: {np.abs(np.asarray(j_forward(params, xj, tj)) - want).max():.2e}")

    with torch.no_grad():
        print(f"max |diffcore-torch - diffusers| on this batch: {np.abs(net(x, t).numpy() - ref(x, t).sample.numpy()).max():.2e}")

    rows = []
    for case, fns in cases.items():
        cpu, wall = paired_rounds(fns, args.rounds)
        rate = {k: b / statistics.median(v) for k, v in cpu.items()}
        wall_rate = {k: b / statistics.median(v) for k, v in wall.items()}
        # The ratio pairs the two torch models round by round (they ran back to back), which
        # cancels most of the drift a shared machine adds; the median over rounds is reported.
        paired = statistics.median(d / n for d, n in zip(cpu["diffusers"], cpu["diffcore-torch"]))
        paired_wall = statistics.median(d / n for d, n in zip(wall["diffusers"], wall["diffcore-torch"]))
        rows.append((case, rate, wall_rate, paired, paired_wall))

    print()
    print("images per second of one core's CPU time (median of interleaved rounds):")
    print()
    print("| case | diffusers img/s | diffcore-torch img/s | torch ratio | diffcore-jax img/s (jit) | jax compile s |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, rate, _, ratio, _ in rows:
        jx = f"{rate['diffcore-jax']:.2f}" if "diffcore-jax" in rate else "-"
        cs = f"{compile_s[case]:.0f}" if case in compile_s else "-"
        print(f"| {case} | {rate['diffusers']:.2f} | {rate['diffcore-torch']:.2f} | {ratio:.2f}x | {jx} | {cs} |")
    print()
    for case, _, wall_rate, _, ratio in rows:
        cols = ", ".join(f"{k} {v:.2f}" for k, v in wall_rate.items())
        print(f"wall clock, {case}: {cols} img/s; torch ratio {ratio:.2f}x")
    print(f"\n({args.rounds} rounds; command: {' '.join([os.path.basename(sys.executable)] + sys.argv)})")


if __name__ == "__main__":
    main()
