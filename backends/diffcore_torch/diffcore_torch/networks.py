"""PyTorch implementations of the diffcore networks: :class:`UNet2D` and :class:`MLP`.

Each module's ``state_dict()`` holds exactly ``diffcore.networks.layout(config)`` -- same names,
shapes and order -- so ``load_state_dict(diffusers_unet.state_dict(), strict=True)`` works, and the
outputs equal diffusers' ``UNet2DModel`` for the same weights. The module structure is read from
``diffcore.networks.unet_plan(config)``.

Interface: ``forward(x, t_in, cond=None, *, dropout_key=None, sample_ids=None)`` with ``x``
(B, C, H, W), ``t_in`` (B,) float network times, ``cond`` (B,) integer class labels or None (the
null class when class conditioning is on). Dropout is keyed (:class:`Dropout`): it applies iff a
``dropout_key`` is given and the rate is > 0, whatever ``train()`` / ``eval()`` say.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffcore.networks import (
    MLPConfig,
    UNetConfig,
    check_weights,
    fourier_embedding,
    sinusoidal_embedding,
    unet_plan,
)
from diffcore.networks.layout import AttentionPlan, BlockPlan, ResnetPlan

__all__ = ["UNet2D", "MLP", "to_numpy_weights", "load_numpy_weights", "Dropout", "DropoutKeys"]

_BACKEND: Any = None


def _backend() -> Any:
    global _BACKEND
    if _BACKEND is None:
        from . import TorchBackend

        _BACKEND = TorchBackend()
    return _BACKEND


class DropoutKeys:
    """The keys of one forward's dropout: layer i's mask for example b is drawn from
    ``fold_in(fold_in(key, i), sample_ids[b])`` (TorchBackend.uniform with ``sample_ids``)."""

    __slots__ = ("key", "sample_ids")

    def __init__(self, key: Any, sample_ids: Any, batch: int) -> None:
        bk = _backend()
        bk.fold_in(key, 0)  # a TorchKey, or a TypeError naming what is allowed
        if sample_ids is None:
            sample_ids = range(batch)
        elif isinstance(sample_ids, torch.Tensor) and (sample_ids.dtype.is_floating_point or sample_ids.dtype.is_complex):
            raise TypeError(f"sample_ids must hold integers (one id per example); got dtype {sample_ids.dtype}")
        n = len(sample_ids.tolist() if hasattr(sample_ids, "tolist") else sample_ids)
        if n != batch:
            raise ValueError(f"sample_ids has {n} entries; the batch has {batch} examples (one id per example)")
        self.key, self.sample_ids = key, sample_ids

    def mask(self, index: int, x: torch.Tensor, rate: float) -> torch.Tensor:
        """``(u >= rate) / (1 - rate)`` with ``u = uniform(fold_in(key, index), x.shape)`` per example,
        drawn in x's dtype (float32 for narrower floats), on x's device; no gradient."""
        bk = _backend()
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        u = bk.uniform(bk.fold_in(self.key, index), x.shape, dtype, sample_ids=self.sample_ids, device=x.device)
        return (u >= rate).to(x.dtype) * (1.0 / (1.0 - rate))


class Dropout(nn.Module):
    """Keyed dropout (Srivastava et al. 2014): ``x * (u >= rate) / (1 - rate)``, u uniform per entry
    from the forward's :class:`DropoutKeys` and this layer's ``index``; the identity without keys
    or with rate 0 (in ``train()`` and ``eval()`` mode alike: no global generator is used).

    ``index``: the layer's position among the network's dropout layers in module order (0-based),
    which for the U-Net is the layout order of its resnets: down blocks, up blocks, mid block.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)
        self.index = 0

    def forward(self, x: torch.Tensor, keys: DropoutKeys | None = None, index: int | None = None) -> torch.Tensor:
        if keys is None or self.rate == 0.0:
            return x
        return x * keys.mask(self.index if index is None else index, x, self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, index={self.index}"


def _number_dropouts(module: nn.Module) -> None:
    for i, m in enumerate(m for m in module.modules() if isinstance(m, Dropout)):
        m.index = i


class ResnetBlock(nn.Module):
    """diffusers' ResnetBlock2D (pre-norm, SiLU):
    ``h = conv1(silu(norm1(x)))``; default: ``h = norm2(h + proj(temb))``; scale_shift:
    ``h = norm2(h) * (1 + scale) + shift``; ``h = conv2(dropout(silu(h)))``;
    ``out = (shortcut(x) + h) / output_scale``. ``temb`` arrives already passed through SiLU."""

    def __init__(self, plan: ResnetPlan, config: UNetConfig) -> None:
        super().__init__()
        cin, cout = plan.in_channels, plan.out_channels
        g, eps = config.norm_num_groups, config.norm_eps
        self.scale_shift = config.resnet_time_scale_shift == "scale_shift"
        self.output_scale = float(plan.output_scale)
        self.norm1 = nn.GroupNorm(g, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(config.time_embed_dim, (2 if self.scale_shift else 1) * cout)
        self.norm2 = nn.GroupNorm(g, cout, eps=eps)
        self.dropout = Dropout(config.dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor, drop: DropoutKeys | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        t = self.time_emb_proj(temb_act)[:, :, None, None]
        if self.scale_shift:
            scale, shift = t.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.dropout(F.silu(h), drop))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = skip + h
        return out if self.output_scale == 1.0 else out / self.output_scale


class Attention(nn.Module):
    """Self-attention over the H*W positions (diffusers' Attention with AttnProcessor2_0):
    ``h = group_norm(x)``; per head ``softmax(q k^T / sqrt(d)) v``; ``out = (to_out(h) + x) / rescale``."""

    def __init__(self, plan: AttentionPlan, config: UNetConfig) -> None:
        super().__init__()
        c = plan.channels
        self.heads = plan.heads
        self.rescale = float(plan.rescale)
        self.group_norm = nn.GroupNorm(plan.norm_groups, c, eps=config.norm_eps) if plan.norm_groups else None
        self.to_q = nn.Linear(c, c)
        self.to_k = nn.Linear(c, c)
        self.to_v = nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = x if self.group_norm is None else self.group_norm(x)
        h = h.reshape(b, c, hgt * wid).transpose(1, 2)  # (B, L, C)
        # One matmul for q, k and v: the three projections read the same input.
        w = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        bias = torch.cat([self.to_q.bias, self.to_k.bias, self.to_v.bias])
        qkv = F.linear(h, w, bias).reshape(b, hgt * wid, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, L, d)
        a = a.transpose(1, 2).reshape(b, hgt * wid, c)
        out = self.to_out[0](a).transpose(1, 2).reshape(b, c, hgt, wid) + x
        return out if self.rescale == 1.0 else out / self.rescale


class Downsample(nn.Module):
    """3x3 stride-2 conv; ``padding=0`` means diffusers' pad (0, 1, 0, 1) then an unpadded conv."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.pad_right = padding == 0
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_right:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    """A down, mid or up block of the plan. Attentions are registered before resnets, as in
    diffusers, so ``state_dict()`` comes out in the layout's order."""

    def __init__(self, plan: BlockPlan, config: UNetConfig, kind: str) -> None:
        super().__init__()
        if plan.attentions:
            self.attentions = nn.ModuleList([Attention(a, config) for a in plan.attentions])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList([ResnetBlock(r, config) for r in plan.resnets])
        if plan.resample is not None and kind == "down":
            self.downsamplers = nn.ModuleList([Downsample(plan.channels, config.downsample_padding)])
        elif plan.resample is not None and kind == "up":
            self.upsamplers = nn.ModuleList([Upsample(plan.channels)])


class TimestepEmbedding(nn.Module):
    """``linear_2(silu(linear_1(e)))``."""

    def __init__(self, fin: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(fin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(e)))


class FourierProjection(nn.Module):
    """Holds diffusers' fixed Gaussian Fourier frequencies (``time_proj.weight``, not trained)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim) * 16.0, requires_grad=False)


def _check_labels(cond: Any, batch: int, num_classes: int | None, null: int | None, like: torch.Tensor) -> torch.Tensor | None:
    if num_classes is None:
        if cond is not None:
            raise ValueError("cond: this network has no class embedding (num_class_embeds is None); pass cond=None")
        return None
    if cond is None:
        return torch.full((batch,), null, dtype=torch.long, device=like.device)
    if not isinstance(cond, torch.Tensor) or cond.dtype.is_floating_point or cond.dtype.is_complex:
        raise TypeError(f"cond must be an integer tensor of class labels; got {getattr(cond, 'dtype', type(cond))}")
    if tuple(cond.shape) != (batch,):
        raise ValueError(f"cond has shape {tuple(cond.shape)}; expected ({batch},), one label per sample")
    return cond


def _check_times(t_in: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t_in, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if tuple(t.shape) != (batch,):
        raise ValueError(f"t_in has shape {tuple(t.shape)}; expected ({batch},), one time per sample")
    return t


class UNet2D(nn.Module):
    """diffusers' UNet2DModel for a :class:`~diffcore.networks.UNetConfig`, NCHW."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet2D(config): expected a UNetConfig; got {type(config).__name__}")
        self.config = config
        plan = unet_plan(config)
        c0 = config.block_out_channels[0]
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        if config.time_embedding_type == "fourier":
            self.time_proj = FourierProjection(c0)
        self.time_embedding = TimestepEmbedding(plan.time_input_dim, config.time_embed_dim)
        if config.num_class_embeds is not None:
            self.class_embedding = nn.Embedding(config.num_class_embeds, config.time_embed_dim)
        self.down_blocks = nn.ModuleList([Block(b, config, "down") for b in plan.down])
        # Registered after up_blocks, as diffusers does, so state_dict() is in the layout's order.
        self.up_blocks = nn.ModuleList([Block(b, config, "up") for b in plan.up])
        self.mid_block = Block(plan.mid, config, "mid") if plan.mid is not None else None
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, c0, eps=config.norm_eps)
        self.conv_out = nn.Conv2d(c0, config.out_channels, 3, padding=1)
        _number_dropouts(self)
        self.eval()  # no layer depends on the mode: dropout is keyed (forward's dropout_key)

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 4:
            raise ValueError(f"sample must be (batch, channels, height, width); got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"sample has {x.shape[1]} channels (shape {tuple(x.shape)}); the network expects "
                f"in_channels={cfg.in_channels}"
            )
        f = cfg.downsample_factor
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(
                f"sample shape {tuple(x.shape)}: height and width must be multiples of {f}, the network's "
                f"total downsampling factor (2 ** (len(block_out_channels) - 1))"
            )

    def forward(
        self, x: torch.Tensor, t_in: Any, cond: torch.Tensor | None = None, *, dropout_key: Any = None,
        sample_ids: Any = None,
    ) -> torch.Tensor:
        """``x`` (B, C, H, W), ``t_in`` (B,) network times, ``cond`` (B,) labels or None.

        ``dropout_key`` (a TorchKey) switches dropout on (rate ``config.dropout``): resnet i's mask
        for example b from ``fold_in(fold_in(dropout_key, i), sample_ids[b])``; ``sample_ids``
        defaults to ``arange(B)``. Without a key there is no dropout.
        """
        cfg = self.config
        self._check_input(x)
        b = x.shape[0]
        drop = DropoutKeys(dropout_key, sample_ids, b) if dropout_key is not None and cfg.dropout > 0 else None
        t = _check_times(t_in, b, x)
        labels = _check_labels(cond, b, cfg.num_class_embeds, cfg.null_class, x)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        if cfg.time_embedding_type == "fourier":
            e = fourier_embedding(t, self.time_proj.weight)
        else:
            e = sinusoidal_embedding(
                t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift
            )
        emb = self.time_embedding(e.to(x.dtype))
        if labels is not None:
            emb = emb + self.class_embedding(labels).to(emb.dtype)
        # Every resnet applies SiLU to the embedding before its projection: do it once.
        emb = F.silu(emb)

        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            attns = block.attentions or [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attns):
                h = resnet(h, emb, drop)
                if attn is not None:
                    h = attn(h)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        if self.mid_block is not None:
            h = self.mid_block.resnets[0](h, emb, drop)
            if self.mid_block.attentions is not None:
                h = self.mid_block.attentions[0](h)
            h = self.mid_block.resnets[1](h, emb, drop)
        for block in self.up_blocks:
            attns = block.attentions or [None] * len(block.resnets)
            for resnet, attn in zip(block.resnets, attns):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb, drop)
                if attn is not None:
                    h = attn(h)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h)
        h = self.conv_out(F.silu(self.conv_norm_out(h)))
        if cfg.time_embedding_type == "fourier":
            h = h / t.to(h.dtype).reshape(b, 1, 1, 1)
        return h


class MLP(nn.Module):
    """The MLP score network of :class:`~diffcore.networks.MLPConfig`:
    ``h = silu(input(x) + temb [+ class_embedding(c)])``; ``h = h + dropout(silu(layers.i(h)))``;
    ``out = output(h)``, with ``temb = linear_2(silu(linear_1(sinusoidal(t))))``. One
    :class:`Dropout` module serves every layer: layer i's dropout is dropout layer i."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        if not isinstance(config, MLPConfig):
            raise TypeError(f"MLP(config): expected an MLPConfig; got {type(config).__name__}")
        self.config = config
        h = config.hidden_dim
        self.input = nn.Linear(config.data_dim, h)
        self.time_embedding = TimestepEmbedding(config.time_embed_dim, h)
        if config.num_class_embeds is not None:
            self.class_embedding = nn.Embedding(config.num_class_embeds, h)
        self.layers = nn.ModuleList([nn.Linear(h, h) for _ in range(config.num_layers)])
        self.output = nn.Linear(h, config.output_dim)
        self.dropout = Dropout(config.dropout)
        self.eval()

    def forward(
        self, x: torch.Tensor, t_in: Any, cond: torch.Tensor | None = None, *, dropout_key: Any = None,
        sample_ids: Any = None,
    ) -> torch.Tensor:
        """``x`` (B, data_dim); dropout only with a ``dropout_key`` (as :meth:`UNet2D.forward`)."""
        cfg = self.config
        if x.ndim != 2 or x.shape[1] != cfg.data_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (batch, {cfg.data_dim}) (MLPConfig.data_dim)")
        b = x.shape[0]
        t = _check_times(t_in, b, x)
        labels = _check_labels(cond, b, cfg.num_class_embeds, cfg.null_class, x)
        drop = DropoutKeys(dropout_key, sample_ids, b) if dropout_key is not None and cfg.dropout > 0 else None
        e = sinusoidal_embedding(t, cfg.time_embed_dim, flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift)
        h = self.input(x) + self.time_embedding(e.to(x.dtype))
        if labels is not None:
            h = h + self.class_embedding(labels).to(h.dtype)
        h = F.silu(h)
        for i, layer in enumerate(self.layers):
            h = h + self.dropout(F.silu(layer(h)), drop, i)
        return self.output(h)


def to_numpy_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's parameters as NumPy copies: layout names, PyTorch shapes, layout order."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_weights(module: nn.Module, weights: Mapping[str, Any]) -> None:
    """Copy ``weights`` (layout name -> array in PyTorch layout) into ``module``.

    Everything is validated against ``layout(module.config)`` first (missing, unexpected, shapes),
    so on error the module is left untouched. Values are cast to each parameter's dtype/device.
    """
    checked = check_weights(module.config, weights)
    state = module.state_dict()
    with torch.no_grad():
        for name, value in checked.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
