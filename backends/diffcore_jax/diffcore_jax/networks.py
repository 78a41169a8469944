"""flax nnx implementations of the diffcore networks: :class:`UNet2D` and :class:`MLP`.

The parameters are exactly ``diffcore.networks.layout(config)``: each layout entry lives at the
nnx state path :func:`state_paths` gives (module path from the name, leaf and axis permutation
from the entry's kind -- conv kernels HWIO, linear kernels (in, out), GroupNorm ``scale``), so
:func:`load_numpy_weights` takes a diffusers / PyTorch state dict as NumPy arrays and
:func:`to_numpy_weights` gives one back. The module structure is read from
``diffcore.networks.unet_plan(config)``, as in the torch backend.

Interface: ``model(x, t_in, cond=None)`` with ``x`` (B, C, H, W) (NCHW, as torch), ``t_in`` (B,)
float network times, ``cond`` (B,) integer labels or None (the null class when class conditioning
is on). Inside, activations are NHWC: XLA's CPU convolutions are fastest there, and attention reads
(B, H*W, C) without a transpose.

Dropout is keyed (:class:`KeyedDropout`): ``model(x, t_in, cond, dropout_key=k, sample_ids=ids)``
drops with the config's rate; without ``dropout_key`` (the default) there is no dropout at all, so
sampling and evaluation need no mode switch. Dropout layer i (0-based, in layout order: the resnets
of the down blocks, the up blocks, then the mid block; MLP ``layers.i``) keeps element j of row b
where ``u >= rate``, ``u = uniform(fold_in(fold_in(k, i), ids[b]))[j]`` (float32 uniforms, the JAX
backend's per-sample ``uniform``), and scales what it keeps by ``1 / (1 - rate)``. The masks
depend on (key, layer, example id) only: not on the batch an example is in.

The module keeps no Python-side caches and no RNG state -- its state is its weights:
``graphdef, state = nnx.split(model)`` and ``nnx.merge(graphdef, state)`` inside a jitted
function work, with ``state`` traced.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffcore.networks import (
    MLPConfig,
    UNetConfig,
    check_weights,
    fourier_embedding,
    from_nnx,
    layout,
    nnx_path,
    sinusoidal_embedding,
    to_nnx,
    unet_plan,
)
from diffcore.networks.layout import NNX_STORAGE, AttentionPlan, BlockPlan, ResnetPlan, Storage

__all__ = [
    "UNet2D",
    "MLP",
    "FrozenParam",
    "KeyedDropout",
    "make_dropout",
    "state_paths",
    "state_to_numpy",
    "to_numpy_weights",
    "load_numpy_weights",
    "from_numpy",
]


class FrozenParam(nnx.Variable):
    """A parameter of the layout that is not trained (diffusers' Fourier frequencies): it is in
    the state, but ``nnx.grad`` / ``nnx.Optimizer(wrt=nnx.Param)`` leave it alone."""


class KeyedDropout(nnx.Module):
    """Dropout (Srivastava et al. 2014) with masks from a key, no RNG state: layer ``index`` keeps
    ``x[b, ...]`` where ``uniform(fold_in(fold_in(key, index), sample_ids[b])) >= rate`` and scales
    it by ``1 / (1 - rate)``; the identity when ``key`` is None or ``rate`` is 0."""

    def __init__(self, rate: float, index: int) -> None:
        self.rate = float(rate)
        self.index = int(index)

    def __call__(self, x: jax.Array, key: Any = None, sample_ids: Any = None) -> jax.Array:
        if key is None or self.rate == 0.0:
            return x
        u = dropout_uniform(jax.random.fold_in(key, self.index), x.shape, sample_ids)
        return jnp.where(u >= self.rate, x * jnp.asarray(1.0 / (1.0 - self.rate), x.dtype), jnp.zeros((), x.dtype))


def dropout_uniform(key: Any, shape: tuple[int, ...], sample_ids: Any = None) -> jax.Array:
    """The float32 uniforms of a dropout mask: ``JaxBackend.uniform(key, shape, float32,
    sample_ids=ids)`` (row b from ``fold_in(key, ids[b])``), ``ids`` defaulting to ``arange(B)``."""
    from diffcore_jax import _draw  # the backend's one definition of a per-sample draw

    shape = tuple(int(n) for n in shape)
    ids = jnp.arange(shape[0], dtype=jnp.int32) if sample_ids is None else jnp.asarray(sample_ids)
    if ids.shape != (shape[0],):
        raise ValueError(f"sample_ids has shape {tuple(ids.shape)}; expected ({shape[0]},), one id per sample")
    return _draw("uniform", key, shape, jnp.float32, ids)


def make_dropout(rate: float, index: int) -> KeyedDropout:
    """The one dropout layer every block uses: dropout layer ``index`` (0-based, layout order)."""
    return KeyedDropout(rate, index)


def _init_rng(rngs: nnx.Rngs) -> np.random.Generator:
    """A NumPy generator seeded from the ``params`` stream: parameters are drawn in NumPy and put on
    the device as they are, because eager JAX initialisers compile one XLA program per parameter
    shape (tens of seconds for a U-Net on CPU) and ``nnx.eval_shape`` is no faster."""
    return np.random.default_rng(np.asarray(jax.random.key_data(rngs.params())).ravel())


def _uniform(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...]) -> jax.Array:
    # torch's default for Linear / Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / np.sqrt(fan_in)
    return jnp.asarray(rng.uniform(-bound, bound, shape).astype(np.float32))


class Linear(nnx.Module):
    """``x @ kernel + bias`` with ``kernel`` (in, out) (torch's weight transposed)."""

    def __init__(self, fin: int, fout: int, rng: np.random.Generator) -> None:
        self.kernel = nnx.Param(_uniform(rng, fin, (fin, fout)))
        self.bias = nnx.Param(_uniform(rng, fin, (fout,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...]


class Conv(nnx.Module):
    """2-D convolution on NHWC activations with an HWIO ``kernel`` (torch's OIHW weight permuted)."""

    def __init__(self, cin: int, cout: int, k: int, rng: np.random.Generator, stride: int = 1, pad: Any = None) -> None:
        p = k // 2
        self.padding = tuple(pad) if pad is not None else ((p, p), (p, p))
        self.stride = stride
        self.kernel = nnx.Param(_uniform(rng, cin * k * k, (k, k, cin, cout)))
        self.bias = nnx.Param(_uniform(rng, cin * k * k, (cout,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...], (self.stride, self.stride), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + self.bias[...]


class GroupNorm(nnx.Module):
    """GroupNorm over the last (channel) axis: per sample and group of C/G channels,
    ``(x - mean) / sqrt(var + eps) * scale + bias`` with the biased variance E[(x - mean)^2]."""

    def __init__(self, channels: int, groups: int, eps: float) -> None:
        self.groups = groups
        self.eps = float(eps)
        self.scale = nnx.Param(jnp.asarray(np.ones(channels, np.float32)))
        self.bias = nnx.Param(jnp.asarray(np.zeros(channels, np.float32)))

    def __call__(self, x: jax.Array) -> jax.Array:
        shape = x.shape
        xg = x.reshape(shape[0], -1, self.groups, shape[-1] // self.groups)
        mean = xg.mean(axis=(1, 3), keepdims=True)
        centred = xg - mean
        var = jnp.mean(centred * centred, axis=(1, 3), keepdims=True)
        y = (centred * jax.lax.rsqrt(var + self.eps)).reshape(shape)
        return y * self.scale[...] + self.bias[...]


class Embed(nnx.Module):
    """A lookup table ``embedding`` (num, dim), N(0, 1) initialised like torch's nn.Embedding."""

    def __init__(self, num: int, dim: int, rng: np.random.Generator) -> None:
        self.embedding = nnx.Param(jnp.asarray(rng.standard_normal((num, dim)).astype(np.float32)))

    def __call__(self, labels: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], labels, axis=0)


class ResnetBlock(nnx.Module):
    """diffusers' ResnetBlock2D; see ``diffcore_torch.networks.ResnetBlock`` for the formula."""

    def __init__(self, plan: ResnetPlan, config: UNetConfig, dropout_index: int, rng: np.random.Generator) -> None:
        cin, cout = plan.in_channels, plan.out_channels
        g, eps = config.norm_num_groups, config.norm_eps
        self.scale_shift = config.resnet_time_scale_shift == "scale_shift"
        self.output_scale = float(plan.output_scale)
        self.norm1 = GroupNorm(cin, g, eps)
        self.conv1 = Conv(cin, cout, 3, rng)
        self.time_emb_proj = Linear(config.time_embed_dim, (2 if self.scale_shift else 1) * cout, rng)
        self.norm2 = GroupNorm(cout, g, eps)
        self.dropout = make_dropout(config.dropout, dropout_index)
        self.conv2 = Conv(cout, cout, 3, rng)
        self.conv_shortcut = Conv(cin, cout, 1, rng) if cin != cout else None

    def __call__(self, x: jax.Array, temb_act: jax.Array, dropout_key: Any = None, sample_ids: Any = None) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        t = self.time_emb_proj(temb_act)[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(t, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.dropout(nnx.silu(h), dropout_key, sample_ids))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = skip + h
        return out if self.output_scale == 1.0 else out / self.output_scale


class Attention(nnx.Module):
    """Self-attention over the H*W positions (diffusers' Attention, AttnProcessor2_0)."""

    def __init__(self, plan: AttentionPlan, config: UNetConfig, rng: np.random.Generator) -> None:
        c = plan.channels
        self.heads = plan.heads
        self.rescale = float(plan.rescale)
        self.group_norm = GroupNorm(c, plan.norm_groups, config.norm_eps) if plan.norm_groups else None
        self.to_q = Linear(c, c, rng)
        self.to_k = Linear(c, c, rng)
        self.to_v = Linear(c, c, rng)
        self.to_out = nnx.List([Linear(c, c, rng)])

    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = x if self.group_norm is None else self.group_norm(x)
        h = h.reshape(b, hgt * wid, c)
        # One matmul for q, k and v: the three projections read the same input.
        w = jnp.concatenate([self.to_q.kernel[...], self.to_k.kernel[...], self.to_v.kernel[...]], axis=1)
        bias = jnp.concatenate([self.to_q.bias[...], self.to_k.bias[...], self.to_v.bias[...]])
        qkv = (h @ w + bias).reshape(b, hgt * wid, 3, self.heads, c // self.heads)
        a = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])  # (B, L, heads, d)
        out = self.to_out[0](a.reshape(b, hgt * wid, c)).reshape(b, hgt, wid, c) + x
        return out if self.rescale == 1.0 else out / self.rescale


class Downsample(nnx.Module):
    """3x3 stride-2 conv; ``padding=0`` pads only right and bottom by one (diffusers)."""

    def __init__(self, channels: int, padding: int, rng: np.random.Generator) -> None:
        pad = ((0, 1), (0, 1)) if padding == 0 else ((1, 1), (1, 1))
        self.conv = Conv(channels, channels, 3, rng, stride=2, pad=pad)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 conv."""

    def __init__(self, channels: int, rng: np.random.Generator) -> None:
        self.conv = Conv(channels, channels, 3, rng)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
        return self.conv(x)


class Block(nnx.Module):
    """A down, mid or up block of the plan."""

    def __init__(
        self, plan: BlockPlan, config: UNetConfig, kind: str, dropouts: Iterator[int], rng: np.random.Generator
    ) -> None:
        self.attentions = nnx.List([Attention(a, config, rng) for a in plan.attentions]) if plan.attentions else None
        self.resnets = nnx.List([ResnetBlock(r, config, next(dropouts), rng) for r in plan.resnets])
        if plan.resample is not None and kind == "down":
            self.downsamplers = nnx.List([Downsample(plan.channels, config.downsample_padding, rng)])
        elif plan.resample is not None and kind == "up":
            self.upsamplers = nnx.List([Upsample(plan.channels, rng)])

    def pairs(self) -> list:
        attns = list(self.attentions) if self.attentions is not None else [None] * len(self.resnets)
        return list(zip(self.resnets, attns))


class TimestepEmbedding(nnx.Module):
    """``linear_2(silu(linear_1(e)))``."""

    def __init__(self, fin: int, dim: int, rng: np.random.Generator) -> None:
        self.linear_1 = Linear(fin, dim, rng)
        self.linear_2 = Linear(dim, dim, rng)

    def __call__(self, e: jax.Array) -> jax.Array:
        return self.linear_2(nnx.silu(self.linear_1(e)))


class FourierProjection(nnx.Module):
    """Holds diffusers' fixed Gaussian Fourier frequencies (``time_proj.weight``, scale 16)."""

    def __init__(self, dim: int, rng: np.random.Generator) -> None:
        self.weight = FrozenParam(jnp.asarray((16.0 * rng.standard_normal(dim)).astype(np.float32)))


def _times(t_in: Any, batch: int) -> jax.Array:
    t = jnp.asarray(t_in)
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(f"t_in has shape {tuple(t.shape)}; expected ({batch},), one time per sample")
    return t


def _labels(cond: Any, batch: int, num_classes: int | None, null: int | None) -> jax.Array | None:
    if num_classes is None:
        if cond is not None:
            raise ValueError("cond: this network has no class embedding (num_class_embeds is None); pass cond=None")
        return None
    if cond is None:
        return jnp.full((batch,), null, dtype=jnp.int32)
    cond = jnp.asarray(cond)
    if not jnp.issubdtype(cond.dtype, jnp.integer):
        raise TypeError(f"cond must be integer class labels; got dtype {cond.dtype}")
    if cond.shape != (batch,):
        raise ValueError(f"cond has shape {tuple(cond.shape)}; expected ({batch},), one label per sample")
    return cond


class UNet2D(nnx.Module):
    """diffusers' UNet2DModel for a :class:`~diffcore.networks.UNetConfig`; NCHW in and out."""

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs) -> None:
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet2D(config): expected a UNetConfig; got {type(config).__name__}")
        self.config = config
        plan = unet_plan(config)
        rng = _init_rng(rngs)
        c0, temb = config.block_out_channels[0], config.time_embed_dim
        self.conv_in = Conv(config.in_channels, c0, 3, rng)
        if config.time_embedding_type == "fourier":
            self.time_proj = FourierProjection(c0, rng)
        self.time_embedding = TimestepEmbedding(plan.time_input_dim, temb, rng)
        if config.num_class_embeds is not None:
            self.class_embedding = Embed(config.num_class_embeds, temb, rng)
        dropouts = itertools.count()  # dropout layer indices in layout order: down, up, mid
        self.down_blocks = nnx.List([Block(b, config, "down", dropouts, rng) for b in plan.down])
        self.up_blocks = nnx.List([Block(b, config, "up", dropouts, rng) for b in plan.up])
        self.mid_block = Block(plan.mid, config, "mid", dropouts, rng) if plan.mid is not None else None
        self.conv_norm_out = GroupNorm(c0, config.norm_num_groups, config.norm_eps)
        self.conv_out = Conv(c0, config.out_channels, 3, rng)

    def __call__(
        self, x: jax.Array, t_in: Any, cond: Any = None, *, dropout_key: Any = None, sample_ids: Any = None
    ) -> jax.Array:
        """``x`` (B, C, H, W), ``t_in`` (B,) network times, ``cond`` (B,) labels or None;
        ``dropout_key`` turns dropout on (none without it), ``sample_ids`` (B,) the examples' ids
        for its masks (default ``arange(B)``)."""
        cfg = self.config
        x = jnp.asarray(x)
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
        b = x.shape[0]
        t = _times(t_in, b)
        labels = _labels(cond, b, cfg.num_class_embeds, cfg.null_class)
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        if cfg.time_embedding_type == "fourier":
            e = fourier_embedding(t.astype(jnp.float32), self.time_proj.weight[...])
        else:
            e = sinusoidal_embedding(
                t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift
            )
        emb = self.time_embedding(e.astype(x.dtype))
        if labels is not None:
            emb = emb + self.class_embedding(labels).astype(emb.dtype)
        emb = nnx.silu(emb)  # every resnet applies SiLU before its projection: once here

        h = self.conv_in(jnp.transpose(x, (0, 2, 3, 1)))
        skips = [h]
        for block in self.down_blocks:
            for resnet, attn in block.pairs():
                h = resnet(h, emb, dropout_key, sample_ids)
                if attn is not None:
                    h = attn(h)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        if self.mid_block is not None:
            h = self.mid_block.resnets[0](h, emb, dropout_key, sample_ids)
            if self.mid_block.attentions is not None:
                h = self.mid_block.attentions[0](h)
            h = self.mid_block.resnets[1](h, emb, dropout_key, sample_ids)
        for block in self.up_blocks:
            for resnet, attn in block.pairs():
                h = resnet(jnp.concatenate([h, skips.pop()], axis=-1), emb, dropout_key, sample_ids)
                if attn is not None:
                    h = attn(h)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h)
        h = self.conv_out(nnx.silu(self.conv_norm_out(h)))
        h = jnp.transpose(h, (0, 3, 1, 2))
        if cfg.time_embedding_type == "fourier":
            h = h / t.astype(h.dtype).reshape(b, 1, 1, 1)
        return h


class MLP(nnx.Module):
    """The MLP score network of :class:`~diffcore.networks.MLPConfig` (formula as in the torch
    backend)."""

    def __init__(self, config: MLPConfig, *, rngs: nnx.Rngs) -> None:
        if not isinstance(config, MLPConfig):
            raise TypeError(f"MLP(config): expected an MLPConfig; got {type(config).__name__}")
        self.config = config
        h = config.hidden_dim
        rng = _init_rng(rngs)
        self.input = Linear(config.data_dim, h, rng)
        self.time_embedding = TimestepEmbedding(config.time_embed_dim, h, rng)
        if config.num_class_embeds is not None:
            self.class_embedding = Embed(config.num_class_embeds, h, rng)
        self.layers = nnx.List([Linear(h, h, rng) for _ in range(config.num_layers)])
        self.output = Linear(h, config.output_dim, rng)
        self.dropouts = nnx.List([make_dropout(config.dropout, i) for i in range(config.num_layers)])

    def __call__(
        self, x: jax.Array, t_in: Any, cond: Any = None, *, dropout_key: Any = None, sample_ids: Any = None
    ) -> jax.Array:
        """``x`` (B, data_dim), ``t_in`` (B,), ``cond`` (B,) labels or None; dropout as
        :meth:`UNet2D.__call__` (layer i is ``layers.i``)."""
        cfg = self.config
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != cfg.data_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (batch, {cfg.data_dim}) (MLPConfig.data_dim)")
        b = x.shape[0]
        t = _times(t_in, b)
        labels = _labels(cond, b, cfg.num_class_embeds, cfg.null_class)
        e = sinusoidal_embedding(t, cfg.time_embed_dim, flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift)
        h = self.input(x) + self.time_embedding(e.astype(x.dtype))
        if labels is not None:
            h = h + self.class_embedding(labels).astype(h.dtype)
        h = nnx.silu(h)
        for layer, dropout in zip(self.layers, self.dropouts):
            h = h + dropout(nnx.silu(layer(h)), dropout_key, sample_ids)
        return self.output(h)


# --------------------------------------------------------------------------------------------
# Layout <-> nnx state
# --------------------------------------------------------------------------------------------


def state_paths(config: UNetConfig | MLPConfig) -> dict[str, tuple[tuple[str | int, ...], Storage]]:
    """For each layout name: (nnx state path, storage rule of its kind)."""
    return {e.name: (nnx_path(e), NNX_STORAGE[e.kind]) for e in layout(config)}


def _variables(model: nnx.Module) -> dict[tuple, nnx.Variable]:
    """The model's layout variables by state path (Params and FrozenParams; no RNG state)."""
    state = nnx.state(model, nnx.Any(nnx.Param, FrozenParam))
    return {tuple(path): var for path, var in nnx.to_flat_state(state)}


def state_to_numpy(config: UNetConfig | MLPConfig, state: Any) -> dict[str, np.ndarray]:
    """An nnx State holding layout paths (the parameters, or gradients w.r.t. them) as NumPy
    arrays in PyTorch layout, keyed and ordered by the layout. Entries absent from ``state``
    (e.g. frozen parameters in a gradient) are left out."""
    flat = {tuple(path): var for path, var in nnx.to_flat_state(state)}
    out = {}
    for e in layout(config):
        var = flat.get(nnx_path(e))
        if var is not None:
            out[e.name] = from_nnx(e, np.asarray(var[...] if isinstance(var, nnx.Variable) else var))
    return out


def to_numpy_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters as NumPy arrays in PyTorch layout, keyed and ordered by the layout."""
    return state_to_numpy(model.config, nnx.state(model, nnx.Any(nnx.Param, FrozenParam)))


def load_numpy_weights(model: nnx.Module, weights: Mapping[str, Any]) -> None:
    """Copy ``weights`` (layout name -> array in PyTorch layout) into ``model``, converting each to
    nnx storage by its kind. Everything is validated first; on error nothing is assigned."""
    checked = check_weights(model.config, weights)
    variables = _variables(model)
    entries = layout(model.config)
    extra = sorted(map(str, set(variables) - {nnx_path(e) for e in entries}))
    if extra:  # the module and the layout disagree: a bug, not bad input
        raise RuntimeError(f"nnx state has paths outside the layout: {extra}")
    staged = []
    for e in entries:
        var = variables[nnx_path(e)]
        stored = to_nnx(e, checked[e.name])
        if stored.shape != var.shape:
            raise RuntimeError(f"{e.name}: nnx storage {var.shape} does not match the converted {stored.shape}")
        staged.append((var, jnp.asarray(stored, dtype=var.dtype)))
    for var, value in staged:
        var.set_value(value)


def from_numpy(cls: type, config: UNetConfig | MLPConfig, weights: Mapping[str, Any], *, seed: int = 0):
    """``cls(config, rngs=nnx.Rngs(seed))`` (UNet2D or MLP) holding ``weights`` (validated first)."""
    model = cls(config, rngs=nnx.Rngs(seed))
    load_numpy_weights(model, weights)
    return model
