"""One training step of the DDPM CIFAR-10 U-Net on CPU: diffcore-torch's TorchTrainer vs diffusers.

    .venv/bin/python bench/bench_train_step.py [--batch 8] [--rounds 3]

Both sides hold the same weights (bench_networks.cifar_models) and train on the same images x0,
float32, one torch thread (pinned and printed). A step is L_simple (Ho et al. 2020):
``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``,
``loss = mean((eps_theta(x_t, t) - eps)^2)``, T = 1000 linear betas (``diffcore.GaussianDiffusion``),
then clipping to norm 1, AdamW (lr 2e-4) and an EMA (decay 0.9999):

- diffcore-torch: ``TorchBackend().trainer(UNet2D, OptimizerConfig(...)).step`` with the
  objective below (t and eps drawn keyed per example, the backend's keyed draws, ``fold_in(step key, TIME / NOISE)``).
- diffusers: ``UNet2DModel``, ``torch.randint`` / ``torch.randn`` from a ``torch.Generator``,
  ``clip_grad_norm_``, ``torch.optim.AdamW`` (torch's default implementation on CPU, foreach) and
  ``diffusers.training_utils.EMAModel(foreach=True)``: the usual diffusers training script.

Timed in paired, interleaved rounds on process CPU time (bench_networks.paired_rounds); the ratio
(diffcore-torch images/s over diffusers images/s) is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch

from bench_networks import cifar_models, paired_rounds
from diffcore import GaussianDiffusion
from diffcore.schedules import get_named_beta_schedule
from diffcore.training import NOISE, TIME, Batch, LossOut, OptimizerConfig, step_key
from diffcore.networks import parameter_count
from diffcore_torch import TorchBackend

LR, CLIP, EMA_DECAY = 2e-4, 1.0, 0.9999


def l_simple(diffusion: GaussianDiffusion):
    """The L_simple objective: per example, t from fold_in(key, TIME), eps from fold_in(key, NOISE)."""
    T = diffusion.num_timesteps
    alpha = torch.from_numpy(diffusion.sqrt_alphas_cumprod).float()
    sigma = torch.from_numpy(np.sqrt(1.0 - diffusion.alphas_cumprod)).float()

    def objective(bk, net, batch):
        x0, ids = batch.x0, batch.ids
        b = x0.shape[0]
        u = bk.uniform(bk.fold_in(batch.key, TIME), (b,), torch.float32, sample_ids=ids)
        t = (u * T).long()
        eps = bk.normal(bk.fold_in(batch.key, NOISE), tuple(x0.shape), x0.dtype, sample_ids=ids)
        x_t = alpha[t].view(b, 1, 1, 1) * x0 + sigma[t].view(b, 1, 1, 1) * eps
        loss = ((net(x_t, t.to(x0.dtype)) - eps) ** 2).mean(dim=(1, 2, 3))
        return LossOut(loss, loss.detach(), t)

    return objective, alpha, sigma


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import diffusers
    from diffusers.training_utils import EMAModel

    config, _, ref, net = cifar_models()
    diffusion = GaussianDiffusion(betas=get_named_beta_schedule("linear", 1000))
    objective, alpha, sigma = l_simple(diffusion)
    b = args.batch
    x0 = torch.from_numpy(np.random.default_rng(0).standard_normal((b, 3, 32, 32)).astype(np.float32))
    print(f"# DDPM CIFAR-10 U-Net ({parameter_count(config):,} parameters), one training step, batch {b}, float32, CPU")
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, torch threads = {torch.get_num_threads()}")

    bk = TorchBackend()
    trainer = bk.trainer(net, OptimizerConfig(lr=LR))
    ids = torch.arange(b)
    count = {"step": 0}

    def diffcore_step():
        key = step_key(bk, 0, count["step"])
        count["step"] += 1
        out = trainer.step(objective, [Batch(x0=x0, ids=ids, key=key)], global_batch=b, lr=LR,
                           clip_norm=CLIP, ema_decay=EMA_DECAY)
        assert out.applied

    ref.train()
    opt = torch.optim.AdamW(ref.parameters(), lr=LR)
    ema = EMAModel(ref.parameters(), decay=EMA_DECAY, foreach=True)
    gen = torch.Generator().manual_seed(0)

    def diffusers_step():
        opt.zero_grad(set_to_none=True)
        t = torch.randint(0, diffusion.num_timesteps, (b,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = alpha[t].view(b, 1, 1, 1) * x0 + sigma[t].view(b, 1, 1, 1) * eps
        loss = torch.nn.functional.mse_loss(ref(x_t, t).sample, eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), CLIP)
        opt.step()
        ema.step(ref.parameters())

    cpu, wall = paired_rounds({"diffusers": diffusers_step, "diffcore-torch": diffcore_step}, args.rounds)
    rate = {k: b / statistics.median(v) for k, v in cpu.items()}
    wall_rate = {k: b / statistics.median(v) for k, v in wall.items()}
    ratio = statistics.median(d / n for d, n in zip(cpu["diffusers"], cpu["diffcore-torch"]))
    ratio_wall = statistics.median(d / n for d, n in zip(wall["diffusers"], wall["diffcore-torch"]))
    print()
    print("| case | diffusers img/s | diffcore-torch img/s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| train step, CPU time | {rate['diffusers']:.2f} | {rate['diffcore-torch']:.2f} | {ratio:.2f}x |")
    print(f"| train step, wall clock | {wall_rate['diffusers']:.2f} | {wall_rate['diffcore-torch']:.2f} | {ratio_wall:.2f}x |")
    print("\nper round (s, CPU): " + "; ".join(
        f"{k} " + ", ".join(f"{v:.2f}" for v in vs) for k, vs in cpu.items()))
    print(f"\n({args.rounds} rounds; command: {' '.join([os.path.basename(sys.executable)] + sys.argv)})")


if __name__ == "__main__":
    main()
