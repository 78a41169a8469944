"""GPU throughput of the DDPM CIFAR-10 U-Net: diffusers vs diffcore-torch (bf16 autocast,
channels_last, torch.compile optional) and diffcore-JAX (jit, float32 parameters).

    .venv/bin/python bench/bench_gpu.py [--batch 128] [--iters 20] [--compile] [--no-jax] [--cpu]

Prints images/s for the forward pass and for a training step (forward + backward of the MSE to a
random target + Adam). On a machine without a CUDA GPU it says so and exits with status 0;
``--cpu`` runs the same code on the CPU in float32 (bf16 autocast on a CPU without bf16 units
is emulated and takes minutes per step), to check the script.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings


def _rate(fn, sync, batch: int, iters: int) -> float:
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator, compiled graphs
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return batch * iters / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="torch.compile the diffcore-torch model")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (to check the script without a GPU)")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("bench_gpu: torch is not installed; nothing to measure.")
        return 0
    if not torch.cuda.is_available() and not args.cpu:
        print("bench_gpu: no CUDA GPU is available on this machine; nothing to measure (see bench_networks.py for CPU).")
        return 0

    import diffusers
    import numpy as np

    from diffcore.networks import UNetConfig, config_to_diffusers
    from diffcore_torch import networks as tnet

    dev = torch.device("cpu" if args.cpu else "cuda")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    config = UNetConfig.ddpm_cifar10()
    kwargs = {k: v for k, v in config_to_diffusers(config).items() if not k.startswith("_")}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.UNet2DModel(**kwargs)
    weights = tnet.to_numpy_weights(ref)
    b = args.batch
    x = torch.randn(b, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    t = torch.rand(b, device=dev) * 999
    y = torch.randn(b, 3, 32, 32, device=dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"# DDPM CIFAR-10 U-Net, batch {b}, {name}, torch {torch.__version__}")

    def make(model_cls):
        if model_cls == "diffusers":
            m = diffusers.UNet2DModel(**kwargs)
            m.load_state_dict(ref.state_dict())
            call = lambda m, x: m(x, t).sample  # noqa: E731
        else:
            m = tnet.UNet2D(config)
            tnet.load_numpy_weights(m, weights)
            call = lambda m, x: m(x, t)  # noqa: E731
        m = m.to(dev).to(memory_format=torch.channels_last)
        fm = torch.compile(m) if (args.compile and model_cls != "diffusers") else m
        return m, fm, call

    results = {}
    for model_name in ("diffusers", "diffcore-torch"):
        m, fm, call = make(model_name)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)

        def fwd():
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                call(fm, x)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = torch.nn.functional.mse_loss(call(fm, x).float(), y)
            loss.backward()
            opt.step()

        results[model_name] = (_rate(fwd, sync, b, args.iters), _rate(step, sync, b, args.iters))

    if not args.no_jax:
        try:
            import jax
            import jax.numpy as jnp
            import optax
            from flax import nnx

            from diffcore_jax import networks as jnet
        except ImportError as err:
            print(f"(JAX skipped: {err})")
        else:
            if not args.cpu and not any(d.platform == "gpu" for d in jax.devices()):
                print("(JAX skipped: jax sees no GPU)")
            else:
                model = jnet.from_numpy(jnet.UNet2D, config, weights)
                graphdef, params, rest = nnx.split(model, nnx.Param, ...)
                xj = jnp.asarray(np.random.default_rng(0).standard_normal((b, 3, 32, 32), np.float32))
                tj = jnp.asarray(np.random.default_rng(1).uniform(0, 999, b).astype(np.float32))
                yj = jnp.zeros_like(xj)
                tx = optax.adam(1e-4)

                @jax.jit
                def fwd(p):
                    return nnx.merge(graphdef, p, rest)(xj, tj)

                def loss(p):
                    return jnp.mean((nnx.merge(graphdef, p, rest)(xj, tj) - yj) ** 2)

                @jax.jit
                def step(p, s):
                    g = jax.grad(loss)(p)
                    u, s = tx.update(g, s, p)
                    return optax.apply_updates(p, u), s

                state = {"p": params, "s": tx.init(params)}

                def run_step():
                    state["p"], state["s"] = step(state["p"], state["s"])

                def sync():
                    jax.block_until_ready(state["p"])

                out = {}
                r_fwd = _rate(lambda: out.__setitem__("y", fwd(params)), lambda: jax.block_until_ready(out["y"]), b, args.iters)
                results["diffcore-jax (f32)"] = (r_fwd, _rate(run_step, sync, b, args.iters))

    print("| model | forward img/s | train step img/s |")
    print("|---|---:|---:|")
    for model_name, (f, s) in results.items():
        print(f"| {model_name} | {f:.1f} | {s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
