"""diffusers ``UNet2DModel`` folders in and out, with NumPy only (no diffusers, no safetensors package).

A folder holds ``config.json`` (the constructor arguments plus ``_class_name`` and
``_diffusers_version``) and ``diffusion_pytorch_model.safetensors`` (the state dict). Since the
diffcore layout *is* that state dict, loading is: map the config, rename old attention keys, check
every tensor against the layout. Saving writes both files atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import numpy as np

from ._io import atomic_write_bytes
from .config import UNetConfig
from .layout import check_weights, layout, rename_legacy_keys
from .safetensors import read_safetensors, write_safetensors

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "DIFFUSERS_VERSION",
    "config_from_diffusers",
    "config_to_diffusers",
    "load_diffusers",
    "save_diffusers",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: The diffusers release whose UNet2DModel format this module follows (written to config.json).
DIFFUSERS_VERSION = "0.42.1"

# UNet2DModel constructor arguments diffcore does not implement beyond their default: key -> the
# only accepted value.
_DEFAULT_ONLY = {"downsample_type": "conv", "upsample_type": "conv", "class_embed_type": None}
# Bookkeeping keys diffusers writes or reads; their values do not change the network.
_BOOKKEEPING = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


def config_from_diffusers(d: Mapping[str, Any]) -> UNetConfig:
    """A :class:`UNetConfig` from a diffusers ``UNet2DModel`` config dict.

    Every key save_pretrained writes is accepted at its default value; supported options map to
    the UNetConfig field of the same name. Raises ValueError naming the key for an unknown key, and
    the key and value for a value diffcore does not implement.
    """
    fields = set(UNetConfig.__dataclass_fields__)
    cls = d.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise ValueError(f"config.json _class_name={cls!r}: only 'UNet2DModel' can be loaded")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in _BOOKKEEPING:
            continue
        if key in _DEFAULT_ONLY:
            if value != _DEFAULT_ONLY[key]:
                raise ValueError(
                    f"config.json {key}={value!r} is not supported by diffcore; only {_DEFAULT_ONLY[key]!r} is"
                )
            continue
        if key not in fields:
            raise ValueError(
                f"config.json has unknown key {key!r}; known keys: "
                f"{sorted(fields | set(_DEFAULT_ONLY) | set(_BOOKKEEPING))}"
            )
        kwargs[key] = value
    return UNetConfig(**kwargs)


def config_to_diffusers(config: UNetConfig) -> dict[str, Any]:
    """The config.json dict ``UNet2DModel.save_pretrained`` would write for ``config``."""
    d: dict[str, Any] = {"_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION}
    body = config.to_dict()
    body.pop("type")
    body.update(_DEFAULT_ONLY)
    d.update(sorted(body.items()))
    return d


def load_diffusers(path: str | os.PathLike) -> tuple[UNetConfig, dict[str, np.ndarray]]:
    """Read a diffusers UNet2DModel folder: (config, name -> float NumPy array in PyTorch layout).

    Old attention names (query/key/value/proj_attn) are renamed; the weights are checked against
    the layout (missing, unexpected, wrong shapes -- all listed) before anything is returned.
    """
    path = os.fspath(path)
    cfg_path = os.path.join(path, CONFIG_NAME)
    w_path = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(w_path) and os.path.isfile(os.path.join(path, "diffusion_pytorch_model.bin")):
        raise ValueError(
            f"{path} holds only diffusion_pytorch_model.bin, a pickle; diffcore reads {WEIGHTS_NAME} only "
            f"(convert it with diffusers: UNet2DModel.from_pretrained(path).save_pretrained(path))"
        )
    for p in (cfg_path, w_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p} does not exist (a diffusers folder has {CONFIG_NAME} and {WEIGHTS_NAME})")
    with open(cfg_path, encoding="utf-8") as fh:
        try:
            raw = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object")
    try:
        config = config_from_diffusers(raw)
    except ValueError as err:
        raise ValueError(f"{cfg_path}: {err}") from None
    tensors, _ = read_safetensors(w_path)
    weights = check_weights(config, rename_legacy_keys(tensors), source=w_path)
    return config, weights


def save_diffusers(path: str | os.PathLike, config: UNetConfig, weights: Mapping[str, Any]) -> None:
    """Write ``config`` and ``weights`` as a diffusers UNet2DModel folder at ``path``.

    Both files are written into a fresh temporary folder next to ``path`` and moved into place at
    the end; the weights are validated against the layout first, so a failed save leaves ``path``
    as it was.
    """
    if not isinstance(config, UNetConfig):
        raise TypeError(f"save_diffusers: config must be a UNetConfig; got {type(config).__name__}")
    checked = check_weights(config, weights)
    ordered = {e.name: checked[e.name] for e in layout(config)}
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", dir=parent)
    try:
        text = json.dumps(config_to_diffusers(config), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(os.path.join(tmp, CONFIG_NAME), text.encode("utf-8"))
        write_safetensors(os.path.join(tmp, WEIGHTS_NAME), ordered, {"format": "pt"})
        os.makedirs(path, exist_ok=True)
        # Each file is replaced atomically; files of the folder other than these two are kept.
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            os.replace(os.path.join(tmp, name), os.path.join(path, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
