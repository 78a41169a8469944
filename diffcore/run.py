"""A run's configuration as data, and what it builds: the process, the network, the objective.

The configuration is a nested mapping of sections (``data``, ``model``, ``network``, ``train``,
``optimizer``, ``sample``, ``nll``) plus top-level ``backend``, ``device`` and ``seed``; it is what
a TOML file holds and what every ``diffcore`` flag overrides. :data:`DEFAULTS` lists every key
with its default; a key that is not there is an error listing the valid ones. Empty strings and
zeros mean "the family's default" where the docs of the key say so.

Model families (``model.family``):

=========  ==========================================  =====================  ===========
family     process                                     default loss           prediction
=========  ==========================================  =====================  ===========
ddpm       GaussianDiffusion, linear betas, fixed var  simple (L_simple)      eps
iddpm      GaussianDiffusion, cosine, learned range    hybrid (L_hybrid)      eps
vp         VPSDE (beta 0.1 -> 20)                      dsm                    eps
subvp      subVPSDE                                    dsm                    eps
ve         VESDE (sigma 0.01 -> 50 by default)         dsm                    eps
ncsn       VESDE ladder, annealed Langevin             ncsn                   score
flow       RectifiedFlow                               flow                   u
=========  ==========================================  =====================  ===========
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import numpy as np

__all__ = [
    "DEFAULTS",
    "FAMILIES",
    "resolve",
    "build_process",
    "build_network_config",
    "build_objective",
    "prediction_of",
    "family_losses",
]

FAMILIES = ("ddpm", "iddpm", "vp", "subvp", "ve", "ncsn", "flow")
_FAMILY_LOSS = {"ddpm": "simple", "iddpm": "hybrid", "vp": "dsm", "subvp": "dsm", "ve": "dsm", "ncsn": "ncsn", "flow": "flow"}
_FAMILY_LOSSES = {
    "ddpm": ("simple", "vlb", "rescaled_vlb"),
    "iddpm": ("hybrid", "simple", "vlb", "rescaled_vlb"),
    "vp": ("dsm", "dsm_likelihood"),
    "subvp": ("dsm", "dsm_likelihood"),
    "ve": ("dsm", "dsm_likelihood"),
    "ncsn": ("ncsn",),
    "flow": ("flow",),
}
_FAMILY_PREDICTION = {"ncsn": "score", "flow": "u"}

#: every key of a run's configuration, with its default
DEFAULTS: dict[str, Any] = {
    "backend": "torch",
    "device": "",  # "": the backend's default device
    "seed": 0,
    "data": {
        "name": "digits",  # a built-in name or a path (folder of images, .npy/.npz, CIFAR-10 .bin folder)
        "examples": 10000,  # 2-D sets: how many points to draw
        "held_out": 0,  # 0: the dataset's own held-out split (digits: 297; 2-D: 1000)
    },
    "model": {
        "family": "ddpm",
        "loss": "",  # "": the family's default
        "timesteps": 1000,  # discrete families; the SDEs' N (samplers' default step count)
        "schedule": "",  # ddpm / iddpm: "linear" / "cosine" ("": the family's)
        "prediction": "",  # "": eps (score for ncsn, u for flow)
        "beta_min": 0.1,
        "beta_max": 20.0,
        "sigma_min": 0.01,
        "sigma_max": 0.0,  # 0: 50 for ve; 1 for ncsn on 2-D data, 16 for images
        "num_scales": 10,  # ncsn's ladder
    },
    "network": {
        "type": "auto",  # auto (unet for images, mlp for vectors) | unet | mlp
        "channels": [32, 64],  # unet: block_out_channels
        "layers_per_block": 1,
        "attention": True,  # unet: attention in the lowest-resolution blocks
        "norm_groups": 8,
        "hidden_dim": 128,  # mlp
        "num_layers": 3,  # mlp
        "dropout": 0.0,
        "class_conditional": False,
    },
    "train": {
        "steps": 1000,
        "batch_size": 64,
        "micro_batch_size": 0,  # 0: no accumulation
        "warmup": 0,
        "clip_norm": 1.0,  # 0: no clipping
        "ema_decay": 0.999,  # 0: no EMA
        "ema_warmup": True,
        "cond_dropout": 0.1,  # class-conditional networks: labels dropped to the null class (for guidance)
        "timestep_sampler": "uniform",
        "checkpoint_every": 0,  # 0: at the end (and on Ctrl-C) only
        "keep": 3,
        "log_every": 10,
        "time_budget": 0.0,  # seconds of training (0: none); the run stops at a step boundary
    },
    "optimizer": {
        "name": "adamw",
        "lr": 2e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.0,
        "precision": "float32",
    },
    "sample": {
        "sampler": "",  # "": ddim for discrete families, pc for SDEs, annealed_langevin for ncsn, ode_heun for flow
        "steps": 0,  # 0: the sampler's default
        "n": 64,
        "ema": True,
        "options": {},  # further sampler options by name
        "guidance": 0.0,  # classifier-free guidance weight w: uncond + w (cond - uncond); 0: none
        "label": -1,  # class-conditional: -1 draws the classes in turn
    },
    "nll": {
        "method": "ode",  # ode | vlb
        "trace": "hutchinson",  # hutchinson | exact
        "examples": 128,
        "rtol": 1e-4,
        "atol": 1e-4,
    },
}

_TWO_D = ("two_moons", "swiss_roll", "checkerboard", "eight_gaussians", "gaussian_mixture")


def _type_name(v: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}[type(v)]


def _merge(base: dict, update: Mapping[str, Any], where: str) -> None:
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in base:
            valid = ", ".join(sorted(base))
            raise ValueError(f"unknown configuration key {path!r}; valid keys{' in [' + where[:-1] + ']' if where else ''}: {valid}")
        default = base[key]
        if isinstance(default, dict) and key != "options":
            if not isinstance(value, Mapping):
                raise ValueError(f"configuration key {path!r} must be a table of keys ({', '.join(sorted(default))}); got {value!r}")
            _merge(default, value, path + ".")
            continue
        base[key] = _coerce(value, default, path)


def _coerce(value: Any, default: Any, path: str) -> Any:
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if kind is dict and isinstance(value, Mapping):
        return dict(value)
    if type(value) is not kind:
        raise ValueError(f"configuration key {path!r} must be {_type_name(default)}; got {value!r}")
    return value


def resolve(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` updated by each mapping in turn (a TOML file's, then the flags'), checked."""
    config = copy.deepcopy(DEFAULTS)
    for layer in layers:
        _merge(config, layer, "")
    _check(config)
    return config


def _choice(value: str, allowed: tuple, path: str) -> None:
    if value not in allowed:
        raise ValueError(f"{path} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check(config: dict) -> None:
    from .parametrization import PREDICTIONS

    _choice(config["backend"], ("torch", "jax"), "backend")
    m = config["model"]
    _choice(m["family"], FAMILIES, "model.family")
    if m["loss"]:
        _choice(m["loss"], _FAMILY_LOSSES[m["family"]], f"model.loss (for family {m['family']!r})")
    if m["schedule"]:
        _choice(m["schedule"], ("linear", "cosine"), "model.schedule")
    if m["prediction"]:
        _choice(m["prediction"], PREDICTIONS, "model.prediction")
    if m["timesteps"] < 2:
        raise ValueError(f"model.timesteps must be an integer >= 2; got {m['timesteps']}")
    _choice(config["network"]["type"], ("auto", "unet", "mlp"), "network.type")
    _choice(config["nll"]["method"], ("ode", "vlb"), "nll.method")
    _choice(config["nll"]["trace"], ("hutchinson", "exact"), "nll.trace")
    if config["sample"]["n"] < 1:
        raise ValueError(f"sample.n must be an integer >= 1; got {config['sample']['n']}")


def family_losses(family: str) -> tuple[str, ...]:
    return _FAMILY_LOSSES[family]


def loss_of(config: Mapping[str, Any]) -> str:
    m = config["model"]
    return m["loss"] or _FAMILY_LOSS[m["family"]]


def prediction_of(config: Mapping[str, Any]) -> str:
    m = config["model"]
    return m["prediction"] or _FAMILY_PREDICTION.get(m["family"], "eps")


def is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3


def build_process(config: Mapping[str, Any], data_shape: tuple[int, ...] = (2,)) -> Any:
    """The family's process (see the module's table)."""
    from .diffusion import GaussianDiffusion
    from .flow import RectifiedFlow
    from .schedules import get_named_beta_schedule
    from .sde import VESDE, VPSDE, subVPSDE

    m = config["model"]
    family, T = m["family"], m["timesteps"]
    if family in ("ddpm", "iddpm"):
        schedule = m["schedule"] or ("linear" if family == "ddpm" else "cosine")
        learned = family == "iddpm" and loss_of(config) in ("hybrid", "vlb", "rescaled_vlb")
        return GaussianDiffusion(
            betas=get_named_beta_schedule(schedule, T),
            model_mean_type=prediction_of(config) if prediction_of(config) in ("eps", "x0", "v") else "eps",
            model_var_type="learned_range" if learned else "fixed_small",
        )
    if family == "vp":
        return VPSDE(beta_min=m["beta_min"], beta_max=m["beta_max"], N=T)
    if family == "subvp":
        return subVPSDE(beta_min=m["beta_min"], beta_max=m["beta_max"], N=T)
    if family == "ve":
        return VESDE(sigma_min=m["sigma_min"], sigma_max=m["sigma_max"] or 50.0, N=T)
    if family == "ncsn":
        sigma_max = m["sigma_max"] or (16.0 if is_image(data_shape) else 1.0)
        return VESDE(sigma_min=m["sigma_min"], sigma_max=sigma_max, N=m["num_scales"])
    return RectifiedFlow()


def learned_variance(process: Any) -> bool:
    return getattr(process, "model_var_type", "") in ("learned_range", "learned")


def build_network_config(config: Mapping[str, Any], data_shape: tuple[int, ...], process: Any, num_classes: int | None = None) -> Any:
    """A UNetConfig for images (C, H, W), an MLPConfig for vectors (D,); output channels doubled
    for a learned variance."""
    from .networks import MLPConfig, UNetConfig

    n = config["network"]
    kind = n["type"]
    if kind == "auto":
        kind = "unet" if is_image(data_shape) else "mlp"
    classes = num_classes + 1 if n["class_conditional"] else None  # + the null class (the last index)
    if n["class_conditional"] and num_classes is None:
        raise ValueError("network.class_conditional needs a dataset with labels (digits, CIFAR-10)")
    factor = 2 if learned_variance(process) else 1
    if kind == "mlp":
        if len(data_shape) != 1:
            raise ValueError(f"network.type 'mlp' takes vectors (D,); the data have shape {data_shape} (use 'unet')")
        return MLPConfig(
            data_dim=data_shape[0], hidden_dim=n["hidden_dim"], num_layers=n["num_layers"], out_dim=factor * data_shape[0],
            dropout=n["dropout"], num_class_embeds=classes,
        )
    if not is_image(data_shape):
        raise ValueError(f"network.type 'unet' takes images (C, H, W); the data have shape {data_shape} (use 'mlp')")
    C, H, W = data_shape
    channels = tuple(int(c) for c in n["channels"])
    levels = len(channels)
    if H % (2 ** (levels - 1)) or W % (2 ** (levels - 1)):
        raise ValueError(f"network.channels has {levels} levels: images of {H}x{W} must be divisible by {2 ** (levels - 1)}")
    attn = n["attention"]
    down = tuple("AttnDownBlock2D" if attn and i == levels - 1 else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if attn and i == 0 else "UpBlock2D" for i in range(levels))
    return UNetConfig(
        sample_size=(H, W) if H != W else H, in_channels=C, out_channels=factor * C,
        block_out_channels=channels, down_block_types=down, up_block_types=up,
        layers_per_block=n["layers_per_block"], norm_num_groups=n["norm_groups"], attention_head_dim=8,
        dropout=n["dropout"], num_class_embeds=classes, add_attention=attn,
    )


def build_objective(config: Mapping[str, Any], process: Any) -> Any:
    from .objectives import make_objective

    loss = loss_of(config)
    if loss in ("dsm", "dsm_likelihood", "ncsn", "flow"):
        return make_objective(loss, process, prediction=prediction_of(config))
    return make_objective(loss, process)


def train_config(config: Mapping[str, Any]) -> Any:
    from .training import TrainConfig

    t = config["train"]
    return TrainConfig(
        steps=t["steps"], batch_size=t["batch_size"], micro_batch_size=t["micro_batch_size"] or None,
        seed=config["seed"], warmup=t["warmup"], clip_norm=t["clip_norm"] or None, ema_decay=t["ema_decay"] or None,
        ema_warmup=t["ema_warmup"], timestep_sampler=t["timestep_sampler"],
        cond_dropout=t["cond_dropout"] if config["network"]["class_conditional"] else 0.0,
        checkpoint_every=t["checkpoint_every"] or None, keep=t["keep"], log_every=t["log_every"],
    )


def optimizer_config(config: Mapping[str, Any]) -> Any:
    from .training import OptimizerConfig

    return OptimizerConfig.from_dict(config["optimizer"])


def default_sampler(config: Mapping[str, Any]) -> str:
    family = config["model"]["family"]
    return config["sample"]["sampler"] or {
        "ddpm": "ddim", "iddpm": "ddpm", "vp": "pc", "subvp": "pc", "ve": "pc", "ncsn": "annealed_langevin", "flow": "ode_heun",
    }[family]


def math_sections(config: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a configuration a checkpoint must agree with (data, model, network)."""
    return {k: copy.deepcopy(config[k]) for k in ("data", "model", "network")}
