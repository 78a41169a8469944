"""Network configurations: frozen dataclasses, validated on construction, saved as JSON.

:class:`UNetConfig` mirrors the constructor of diffusers' ``UNet2DModel`` (same field names, same
defaults, same meaning) for the subset diffcore implements, so a diffusers ``config.json`` maps onto
it key for key (:mod:`diffcore.networks.diffusers_io`). :class:`MLPConfig` describes a small score
network for low-dimensional data.

Nothing here imports a framework: the backends read these configs and the layout built from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "DOWN_BLOCK_TYPES",
    "UP_BLOCK_TYPES",
    "MID_BLOCK_TYPES",
    "UNetConfig",
    "MLPConfig",
    "config_from_dict",
]

#: Block types diffcore implements (diffusers names). Attention variants add one self-attention
#: after every resnet of the block.
DOWN_BLOCK_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "AttnUpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2D", None)
TIME_EMBEDDING_TYPES = ("positional", "fourier")
TIME_SCALE_SHIFTS = ("default", "scale_shift")
# diffusers' get_activation maps both names to SiLU.
ACTIVATIONS = ("silu", "swish")


def _fail(cls: str, key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{cls}.{key}={value!r} is not supported; allowed: {allowed}")


def _check_int(cls: str, key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(cls, key, value, f"an int >= {minimum}")


def _check_number(cls: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(cls, key, value, "a finite number")


def _check_bool(cls: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(cls, key, value, "True or False")


class _JSONConfig:
    """to_dict / from_dict / to_json / from_json for the frozen config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: tuples become lists; ``"type"`` names the config class."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict expects a mapping; got {type(d).__name__}")
        d = dict(d)
        kind = d.pop("type", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"config type {kind!r} cannot be read as {cls.__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(names)}")
        return cls(**d)

    def to_json(self, path: str | None = None) -> str:
        """The config as JSON text (sorted keys); also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            from ._io import atomic_write_bytes

            atomic_write_bytes(path, text.encode())
        return text

    @classmethod
    def from_json(cls, text_or_path: str):
        """Read a config from JSON text, or from a file when the argument is not JSON text."""
        s = text_or_path.lstrip()
        if not s.startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                s = fh.read()
        return cls.from_dict(json.loads(s))


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class UNetConfig(_JSONConfig):
    """A diffusers-compatible 2-D U-Net (``UNet2DModel``): field names, defaults and meaning as there.

    ``attention_head_dim``: channels per attention head (heads = channels // attention_head_dim);
    None means one head over all channels. ``num_class_embeds`` counts the classes *including* the
    null class used for classifier-free guidance, which is the last index (``null_class``).
    ``resnet_time_scale_shift="scale_shift"`` is improved-diffusion's conditioning
    ``norm2(h) * (1 + scale) + shift``. ``time_embedding_type="fourier"`` is diffusers' Gaussian
    Fourier projection of ``log t`` (scale 16) with the output divided by ``t``.
    """

    sample_size: int | tuple[int, int] | None = None
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_type: str = "positional"
    time_embedding_dim: int | None = None
    freq_shift: float = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1
    downsample_padding: int = 1
    dropout: float = 0.0
    act_fn: str = "silu"
    attention_head_dim: int | None = 8
    norm_num_groups: int = 32
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    num_class_embeds: int | None = None
    num_train_timesteps: int | None = None

    def __post_init__(self) -> None:
        c = "UNetConfig"
        for key in ("down_block_types", "up_block_types", "block_out_channels", "sample_size"):
            object.__setattr__(self, key, _as_tuple(getattr(self, key)))
        ss = self.sample_size
        if ss is not None:
            sizes = ss if isinstance(ss, tuple) else (ss,)
            if len(sizes) not in (1, 2):
                _fail(c, "sample_size", ss, "None, an int or (height, width)")
            for s in sizes:
                _check_int(c, "sample_size", s, 1)
        _check_int(c, "in_channels", self.in_channels, 1)
        _check_int(c, "out_channels", self.out_channels, 1)
        _check_bool(c, "center_input_sample", self.center_input_sample)
        _check_bool(c, "flip_sin_to_cos", self.flip_sin_to_cos)
        _check_bool(c, "add_attention", self.add_attention)
        if self.time_embedding_type not in TIME_EMBEDDING_TYPES:
            _fail(c, "time_embedding_type", self.time_embedding_type, repr(TIME_EMBEDDING_TYPES))
        if self.time_embedding_dim is not None:
            _check_int(c, "time_embedding_dim", self.time_embedding_dim, 1)
        _check_number(c, "freq_shift", self.freq_shift)
        if not isinstance(self.block_out_channels, tuple) or not self.block_out_channels:
            _fail(c, "block_out_channels", self.block_out_channels, "a non-empty sequence of ints")
        for ch in self.block_out_channels:
            _check_int(c, "block_out_channels", ch, 1)
        n = len(self.block_out_channels)
        for key, valid in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
            types = getattr(self, key)
            if not isinstance(types, tuple) or len(types) != n:
                _fail(c, key, types, f"a sequence of {n} block types (one per block_out_channels entry)")
            for t in types:
                if t not in valid:
                    raise ValueError(f"{c}.{key} contains unknown block type {t!r}; valid types: {list(valid)}")
        if self.mid_block_type not in MID_BLOCK_TYPES:
            raise ValueError(
                f"{c}.mid_block_type={self.mid_block_type!r} is not a known mid block type; "
                f"valid: {list(MID_BLOCK_TYPES)}"
            )
        _check_int(c, "layers_per_block", self.layers_per_block, 1)
        _check_number(c, "mid_block_scale_factor", self.mid_block_scale_factor)
        if self.mid_block_scale_factor == 0:
            _fail(c, "mid_block_scale_factor", 0, "a non-zero number (outputs are divided by it)")
        if self.downsample_padding not in (0, 1) or isinstance(self.downsample_padding, bool):
            _fail(c, "downsample_padding", self.downsample_padding, "0 (pad right/bottom by 1) or 1")
        _check_number(c, "dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            _fail(c, "dropout", self.dropout, "a probability in [0, 1)")
        if self.act_fn not in ACTIVATIONS:
            _fail(c, "act_fn", self.act_fn, repr(ACTIVATIONS))
        if self.attention_head_dim is not None:
            _check_int(c, "attention_head_dim", self.attention_head_dim, 1)
        _check_int(c, "norm_num_groups", self.norm_num_groups, 1)
        if self.attn_norm_num_groups is not None:
            _check_int(c, "attn_norm_num_groups", self.attn_norm_num_groups, 1)
        _check_number(c, "norm_eps", self.norm_eps)
        if self.norm_eps <= 0:
            _fail(c, "norm_eps", self.norm_eps, "a positive number")
        if self.resnet_time_scale_shift not in TIME_SCALE_SHIFTS:
            _fail(c, "resnet_time_scale_shift", self.resnet_time_scale_shift, repr(TIME_SCALE_SHIFTS))
        if self.num_class_embeds is not None:
            # One real class plus the null class is the smallest useful table.
            _check_int(c, "num_class_embeds", self.num_class_embeds, 2)
        if self.num_train_timesteps is not None:
            _check_int(c, "num_train_timesteps", self.num_train_timesteps, 1)
        if self.time_embedding_type == "positional" and self.block_out_channels[0] % 2:
            _fail(c, "block_out_channels", self.block_out_channels,
                  "an even first entry (the sinusoidal embedding has block_out_channels[0] / 2 frequencies)")
        # Group counts and head sizes depend on every module's channels: the plan checks them.
        from .layout import unet_plan

        unet_plan(self)

    # -- derived quantities --------------------------------------------------------------------
    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding: ``time_embedding_dim`` or 4 * block_out_channels[0]."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def downsample_factor(self) -> int:
        """Total spatial downsampling: height and width must be multiples of it."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def null_class(self) -> int | None:
        """The label of the null class (classifier-free guidance), or None without class embeddings."""
        return None if self.num_class_embeds is None else self.num_class_embeds - 1

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def ddpm_cifar10(cls, **overrides: Any) -> "UNetConfig":
        """Ho et al. (2020)'s CIFAR-10 network as diffusers ships it (google/ddpm-cifar10-32):
        35,746,307 parameters."""
        base = dict(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(128, 256, 256, 256),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            layers_per_block=2,
            downsample_padding=0,
            flip_sin_to_cos=False,
            freq_shift=1,
            norm_eps=1e-6,
            norm_num_groups=32,
            attention_head_dim=None,
            time_embedding_type="positional",
        )
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class MLPConfig(_JSONConfig):
    """An MLP score network for low-dimensional data (2-D toys).

    ``h = silu(input(x) + time_embedding(t) [+ class_embedding(c)])``, then for each hidden layer
    ``h = h + dropout(silu(layers.i(h)))`` (residual), output ``output(h)``. The time embedding is
    the sinusoidal one of :class:`UNetConfig`, ``time_embed_dim`` wide (``time_embed_dim / 2``
    frequencies), followed by ``linear_1 -> silu -> linear_2`` to ``hidden_dim``.
    """

    data_dim: int = 2
    hidden_dim: int = 128
    num_layers: int = 3
    time_embed_dim: int = 64
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    out_dim: int | None = None
    num_class_embeds: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        c = "MLPConfig"
        _check_int(c, "data_dim", self.data_dim, 1)
        _check_int(c, "hidden_dim", self.hidden_dim, 1)
        _check_int(c, "num_layers", self.num_layers, 0)
        _check_int(c, "time_embed_dim", self.time_embed_dim, 2)
        if self.time_embed_dim % 2:
            _fail(c, "time_embed_dim", self.time_embed_dim, "an even int (sin and cos halves)")
        _check_bool(c, "flip_sin_to_cos", self.flip_sin_to_cos)
        _check_number(c, "freq_shift", self.freq_shift)
        if self.out_dim is not None:
            _check_int(c, "out_dim", self.out_dim, 1)
        if self.num_class_embeds is not None:
            _check_int(c, "num_class_embeds", self.num_class_embeds, 2)
        _check_number(c, "dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            _fail(c, "dropout", self.dropout, "a probability in [0, 1)")

    @property
    def output_dim(self) -> int:
        return self.data_dim if self.out_dim is None else self.out_dim

    @property
    def null_class(self) -> int | None:
        return None if self.num_class_embeds is None else self.num_class_embeds - 1


def config_from_dict(d: Mapping[str, Any]) -> UNetConfig | MLPConfig:
    """Read either config from its :meth:`to_dict` form, dispatching on ``"type"``."""
    kinds = {"UNetConfig": UNetConfig, "MLPConfig": MLPConfig}
    kind = d.get("type")
    if kind not in kinds:
        raise ValueError(f"config dict has type {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(d)
