"""Network configurations, their parameter layout as data, and diffusers checkpoints -- NumPy only.

The two implementations live in the backends: ``diffcore_torch.networks`` (torch.nn) and
``diffcore_jax.networks`` (flax nnx). Both hold exactly the parameters of :func:`layout`, which for a
:class:`UNetConfig` are the names and shapes of diffusers' ``UNet2DModel`` state dict.
"""

from .config import DOWN_BLOCK_TYPES, MID_BLOCK_TYPES, UP_BLOCK_TYPES, MLPConfig, UNetConfig, config_from_dict
from .diffusers_io import config_from_diffusers, config_to_diffusers, load_diffusers, save_diffusers
from .embeddings import fourier_embedding, sinusoidal_embedding
from .layout import (
    KINDS,
    NNX_STORAGE,
    LayoutEntry,
    Storage,
    WeightsError,
    check_weights,
    from_nnx,
    layout,
    nnx_path,
    parameter_count,
    rename_legacy_keys,
    to_nnx,
    unet_plan,
)
from .safetensors import SafetensorsError, read_safetensors, write_safetensors

__all__ = [
    "DOWN_BLOCK_TYPES",
    "UP_BLOCK_TYPES",
    "MID_BLOCK_TYPES",
    "UNetConfig",
    "MLPConfig",
    "config_from_dict",
    "LayoutEntry",
    "Storage",
    "KINDS",
    "NNX_STORAGE",
    "layout",
    "parameter_count",
    "unet_plan",
    "nnx_path",
    "to_nnx",
    "from_nnx",
    "WeightsError",
    "check_weights",
    "rename_legacy_keys",
    "SafetensorsError",
    "read_safetensors",
    "write_safetensors",
    "config_from_diffusers",
    "config_to_diffusers",
    "load_diffusers",
    "save_diffusers",
    "sinusoidal_embedding",
    "fourier_embedding",
]
