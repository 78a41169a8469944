"""The parameter layout of a network configuration, as data.

A layout is the ordered list of every parameter a configuration implies: its name, its shape in
PyTorch convention (conv weights OIHW, linear weights (out, in)) and its ``kind``. For a
:class:`~diffcore.networks.UNetConfig` the names, shapes and order are exactly those of diffusers'
``UNet2DModel(...).state_dict()`` for the same configuration, so a diffusers checkpoint *is* a
diffcore checkpoint.

The ``kind`` says how each framework stores the tensor (:data:`NNX_STORAGE`): PyTorch stores the
layout as is; flax nnx keeps conv kernels HWIO, linear kernels (in, out), and calls GroupNorm's
weight ``scale``. Backends read these rules from the entry's kind -- never from its name.

The module structure itself (which blocks, which channels) is :func:`unet_plan`; both backends build
their modules from the same plan, so the channel arithmetic lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .config import MLPConfig, UNetConfig

__all__ = [
    "KINDS",
    "LayoutEntry",
    "Storage",
    "NNX_STORAGE",
    "ResnetPlan",
    "AttentionPlan",
    "BlockPlan",
    "UNetPlan",
    "unet_plan",
    "layout",
    "parameter_count",
    "nnx_path",
    "to_nnx",
    "from_nnx",
    "WeightsError",
    "check_weights",
    "rename_legacy_keys",
]

#: Every parameter kind a layout may declare.
KINDS = ("conv", "linear", "bias", "norm_weight", "norm_bias", "embedding", "fourier")


@dataclass(frozen=True)
class LayoutEntry:
    """One parameter: ``name`` (diffusers state-dict key), ``shape`` (PyTorch layout), ``kind``."""

    name: str
    shape: tuple[int, ...]
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"LayoutEntry {self.name!r}: kind {self.kind!r} is not one of {KINDS}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Storage:
    """How a framework stores a kind: the leaf attribute name and the axis permutation applied to
    the PyTorch-layout array (``np.transpose(w, perm)``; None = stored as is)."""

    leaf: str
    perm: tuple[int, ...] | None = None

    @property
    def inverse(self) -> tuple[int, ...] | None:
        return None if self.perm is None else tuple(int(i) for i in np.argsort(self.perm))


#: flax nnx storage per kind: nnx.Conv kernels are (kh, kw, in, out) = HWIO, nnx.Linear kernels
#: (in, out), nnx.GroupNorm's weight is ``scale``, nnx.Embed's table is ``embedding``.
NNX_STORAGE: dict[str, Storage] = {
    "conv": Storage("kernel", (2, 3, 1, 0)),
    "linear": Storage("kernel", (1, 0)),
    "bias": Storage("bias"),
    "norm_weight": Storage("scale"),
    "norm_bias": Storage("bias"),
    "embedding": Storage("embedding"),
    "fourier": Storage("weight"),
}


# --------------------------------------------------------------------------------------------
# The U-Net plan: which modules exist and their channels (diffusers' UNet2DModel constructor).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResnetPlan:
    """A ResnetBlock2D: GroupNorm-SiLU-conv3x3, + time projection, GroupNorm-SiLU-dropout-conv3x3,
    1x1 shortcut when ``in_channels != out_channels``, output divided by ``output_scale``."""

    prefix: str
    in_channels: int
    out_channels: int
    output_scale: float = 1.0


@dataclass(frozen=True)
class AttentionPlan:
    """Self-attention over the H*W positions with ``heads`` heads of ``channels // heads``; the
    GroupNorm is absent when ``norm_groups`` is None; output ``(attn + x) / rescale``."""

    prefix: str
    channels: int
    heads: int
    norm_groups: int | None
    rescale: float = 1.0


@dataclass(frozen=True)
class BlockPlan:
    """A down, mid or up block. ``attentions`` is empty or one per resnet (the mid block: one per
    resnet after the first). ``resample`` is the prefix of the down/upsampling conv, or None."""

    prefix: str
    resnets: tuple[ResnetPlan, ...]
    attentions: tuple[AttentionPlan, ...]
    resample: str | None = None
    channels: int = 0


@dataclass(frozen=True)
class UNetPlan:
    config: UNetConfig
    time_input_dim: int
    down: tuple[BlockPlan, ...]
    mid: BlockPlan | None
    up: tuple[BlockPlan, ...]


def _check_groups(where: str, channels: int, groups: int) -> None:
    if channels % groups:
        raise ValueError(
            f"{where}: GroupNorm over {channels} channels cannot use {groups} groups "
            f"(norm_num_groups must divide every block's channel count)"
        )


def _attention(config: UNetConfig, prefix: str, channels: int, groups: int | None, rescale: float) -> AttentionPlan:
    head_dim = channels if config.attention_head_dim is None else config.attention_head_dim
    if channels % head_dim:
        raise ValueError(
            f"UNetConfig.attention_head_dim={config.attention_head_dim} does not divide the {channels} channels "
            f"of {prefix}; use a divisor of every attention block's channels, or None for one head"
        )
    if groups is not None:
        _check_groups(prefix + ".group_norm", channels, groups)
    return AttentionPlan(prefix, channels, channels // head_dim, groups, rescale)


def _resnet(config: UNetConfig, prefix: str, cin: int, cout: int, scale: float = 1.0) -> ResnetPlan:
    _check_groups(prefix + ".norm1", cin, config.norm_num_groups)
    _check_groups(prefix + ".norm2", cout, config.norm_num_groups)
    return ResnetPlan(prefix, cin, cout, scale)


def unet_plan(config: UNetConfig) -> UNetPlan:
    """The modules of ``UNet2DModel(**config)`` with their channels, in diffusers' order.

    Raises ValueError (naming the module) when a GroupNorm's groups or an attention's head size
    does not divide its channels.
    """
    boc = config.block_out_channels
    n = len(boc)
    groups = config.norm_num_groups
    down = []
    out_ch = boc[0]
    for i, btype in enumerate(config.down_block_types):
        in_ch, out_ch = out_ch, boc[i]
        p = f"down_blocks.{i}"
        resnets = tuple(
            _resnet(config, f"{p}.resnets.{j}", in_ch if j == 0 else out_ch, out_ch)
            for j in range(config.layers_per_block)
        )
        attns = ()
        if btype == "AttnDownBlock2D":
            attns = tuple(
                _attention(config, f"{p}.attentions.{j}", out_ch, groups, 1.0) for j in range(config.layers_per_block)
            )
        down.append(BlockPlan(p, resnets, attns, f"{p}.downsamplers.0.conv" if i < n - 1 else None, out_ch))

    mid = None
    if config.mid_block_type is not None:
        ch = boc[-1]
        s = config.mid_block_scale_factor
        # diffusers: the mid attention has a GroupNorm only with attn_norm_num_groups set, or
        # (default) with the "default" time conditioning.
        attn_groups = config.attn_norm_num_groups
        if attn_groups is None and config.resnet_time_scale_shift == "default":
            attn_groups = groups
        resnets = tuple(_resnet(config, f"mid_block.resnets.{j}", ch, ch, s) for j in range(2))
        attns = (_attention(config, "mid_block.attentions.0", ch, attn_groups, s),) if config.add_attention else ()
        mid = BlockPlan("mid_block", resnets, attns, None, ch)

    up = []
    rev = tuple(reversed(boc))
    out_ch = rev[0]
    layers = config.layers_per_block + 1
    for i, btype in enumerate(config.up_block_types):
        prev_out, out_ch = out_ch, rev[i]
        in_ch = rev[min(i + 1, n - 1)]
        p = f"up_blocks.{i}"
        resnets = tuple(
            _resnet(
                config,
                f"{p}.resnets.{j}",
                (prev_out if j == 0 else out_ch) + (in_ch if j == layers - 1 else out_ch),
                out_ch,
            )
            for j in range(layers)
        )
        attns = ()
        if btype == "AttnUpBlock2D":
            attns = tuple(_attention(config, f"{p}.attentions.{j}", out_ch, groups, 1.0) for j in range(layers))
        up.append(BlockPlan(p, resnets, attns, f"{p}.upsamplers.0.conv" if i < n - 1 else None, out_ch))
    _check_groups("conv_norm_out", boc[0], groups)

    time_input_dim = 2 * boc[0] if config.time_embedding_type == "fourier" else boc[0]
    return UNetPlan(config, time_input_dim, tuple(down), mid, tuple(up))


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.entries: list[LayoutEntry] = []

    def add(self, name: str, shape: Sequence[int], kind: str) -> None:
        self.entries.append(LayoutEntry(name, tuple(int(s) for s in shape), kind))

    def conv(self, name: str, cin: int, cout: int, k: int) -> None:
        self.add(f"{name}.weight", (cout, cin, k, k), "conv")
        self.add(f"{name}.bias", (cout,), "bias")

    def linear(self, name: str, fin: int, fout: int) -> None:
        self.add(f"{name}.weight", (fout, fin), "linear")
        self.add(f"{name}.bias", (fout,), "bias")

    def norm(self, name: str, ch: int) -> None:
        self.add(f"{name}.weight", (ch,), "norm_weight")
        self.add(f"{name}.bias", (ch,), "norm_bias")

    def resnet(self, r: ResnetPlan, temb: int, scale_shift: bool) -> None:
        self.norm(f"{r.prefix}.norm1", r.in_channels)
        self.conv(f"{r.prefix}.conv1", r.in_channels, r.out_channels, 3)
        self.linear(f"{r.prefix}.time_emb_proj", temb, (2 if scale_shift else 1) * r.out_channels)
        self.norm(f"{r.prefix}.norm2", r.out_channels)
        self.conv(f"{r.prefix}.conv2", r.out_channels, r.out_channels, 3)
        if r.in_channels != r.out_channels:
            self.conv(f"{r.prefix}.conv_shortcut", r.in_channels, r.out_channels, 1)

    def attention(self, a: AttentionPlan) -> None:
        if a.norm_groups is not None:
            self.norm(f"{a.prefix}.group_norm", a.channels)
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            self.linear(f"{a.prefix}.{proj}", a.channels, a.channels)

    def block(self, b: BlockPlan, temb: int, scale_shift: bool) -> None:
        # diffusers registers a block's attentions before its resnets: state_dict order follows.
        for a in b.attentions:
            self.attention(a)
        for r in b.resnets:
            self.resnet(r, temb, scale_shift)
        if b.resample is not None:
            self.conv(b.resample, b.channels, b.channels, 3)


def _unet_layout(config: UNetConfig) -> list[LayoutEntry]:
    plan = unet_plan(config)
    c0, temb = config.block_out_channels[0], config.time_embed_dim
    scale_shift = config.resnet_time_scale_shift == "scale_shift"
    b = _Builder()
    b.conv("conv_in", config.in_channels, c0, 3)
    if config.time_embedding_type == "fourier":
        b.add("time_proj.weight", (c0,), "fourier")
    b.linear("time_embedding.linear_1", plan.time_input_dim, temb)
    b.linear("time_embedding.linear_2", temb, temb)
    if config.num_class_embeds is not None:
        b.add("class_embedding.weight", (config.num_class_embeds, temb), "embedding")
    for blk in plan.down:
        b.block(blk, temb, scale_shift)
    # diffusers assigns mid_block after creating up_blocks, so its tensors come after them.
    for blk in plan.up:
        b.block(blk, temb, scale_shift)
    if plan.mid is not None:
        b.block(plan.mid, temb, scale_shift)
    b.norm("conv_norm_out", c0)
    b.conv("conv_out", c0, config.out_channels, 3)
    return b.entries


def _mlp_layout(config: MLPConfig) -> list[LayoutEntry]:
    b = _Builder()
    h = config.hidden_dim
    b.linear("input", config.data_dim, h)
    b.linear("time_embedding.linear_1", config.time_embed_dim, h)
    b.linear("time_embedding.linear_2", h, h)
    if config.num_class_embeds is not None:
        b.add("class_embedding.weight", (config.num_class_embeds, h), "embedding")
    for i in range(config.num_layers):
        b.linear(f"layers.{i}", h, h)
    b.linear("output", h, config.output_dim)
    return b.entries


def layout(config: UNetConfig | MLPConfig) -> list[LayoutEntry]:
    """Every parameter of ``config``, in order (for a UNetConfig: diffusers' state_dict order)."""
    if isinstance(config, UNetConfig):
        return _unet_layout(config)
    if isinstance(config, MLPConfig):
        return _mlp_layout(config)
    raise TypeError(f"layout(config): expected a UNetConfig or MLPConfig; got {type(config).__name__}")


def parameter_count(config: UNetConfig | MLPConfig) -> int:
    """Total number of scalars in the layout."""
    return sum(e.size for e in layout(config))


# --------------------------------------------------------------------------------------------
# Framework storage
# --------------------------------------------------------------------------------------------


def nnx_path(entry: LayoutEntry) -> tuple[str | int, ...]:
    """The flax nnx state path of ``entry``: module path from the name (list indices as ints),
    leaf from the kind's :data:`NNX_STORAGE` rule."""
    parts = entry.name.split(".")[:-1]
    return tuple(int(p) if p.isdigit() else p for p in parts) + (NNX_STORAGE[entry.kind].leaf,)


def to_nnx(entry: LayoutEntry, array: np.ndarray) -> np.ndarray:
    """PyTorch-layout array -> nnx storage (e.g. OIHW -> HWIO)."""
    perm = NNX_STORAGE[entry.kind].perm
    return np.asarray(array) if perm is None else np.ascontiguousarray(np.transpose(array, perm))


def from_nnx(entry: LayoutEntry, array: np.ndarray) -> np.ndarray:
    """nnx storage -> PyTorch-layout array (inverse of :func:`to_nnx`)."""
    inv = NNX_STORAGE[entry.kind].inverse
    return np.asarray(array) if inv is None else np.ascontiguousarray(np.transpose(array, inv))


# --------------------------------------------------------------------------------------------
# Validation of a weights dict against a layout
# --------------------------------------------------------------------------------------------


class WeightsError(ValueError):
    """Weights that do not match a layout: missing, unexpected or wrongly shaped tensors."""


def _names(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_weights(config: UNetConfig | MLPConfig, weights: Mapping[str, Any], *, source: str = "weights") -> dict[str, np.ndarray]:
    """Validate ``weights`` (name -> array in PyTorch layout) against ``layout(config)``.

    Returns a new dict of float numpy arrays in layout order. Raises :class:`WeightsError` listing
    every missing name, every unexpected name and every shape mismatch (name, expected, found);
    nothing is returned -- hence nothing assigned -- unless all of them pass.
    """
    entries = layout(config)
    expected = {e.name: e for e in entries}
    missing = [n for n in expected if n not in weights]
    unexpected = sorted(n for n in weights if n not in expected)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} weight(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} weight(s): {_names(unexpected)}")
    out: dict[str, np.ndarray] = {}
    bad_shapes = []
    for e in entries:
        if e.name not in weights:
            continue
        a = np.asarray(weights[e.name])
        if a.shape != e.shape:
            bad_shapes.append(f"{e.name}: expected shape {e.shape}, found {tuple(a.shape)}")
        elif a.dtype.kind != "f":
            bad_shapes.append(f"{e.name}: expected a floating-point array, found dtype {a.dtype}")
        out[e.name] = a
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} weight(s) of the wrong shape or dtype: " + "; ".join(bad_shapes))
    if problems:
        raise WeightsError(f"{source} do not match the layout of the config: " + " | ".join(problems))
    return out


#: Attention key names of checkpoints saved before diffusers 0.14 (and of google/ddpm-*).
LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_legacy_keys(weights: Mapping[str, Any]) -> dict[str, Any]:
    """Map old attention names (``attentions.i.query`` ...) to current ones (``to_q`` ...),
    as diffusers does when loading; every other name is kept. Order is preserved."""
    out: dict[str, Any] = {}
    for name, value in weights.items():
        parts = name.split(".")
        if len(parts) >= 3 and "attentions" in parts[:-2] and parts[-2] in LEGACY_ATTENTION_NAMES:
            name = ".".join(parts[:-2] + [LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        if name in out:
            raise WeightsError(f"weight {name!r} is given twice (under its old and its new attention name)")
        out[name] = value
    return out
