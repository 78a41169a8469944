"""Training objectives: the core's losses, each with its own keyed draws, as the loop calls them.

An objective is a frozen (hashable) dataclass called as ``objective(backend, net, batch) ->
LossOut`` (:mod:`diffcore.training`). It draws everything it needs from the step's key with the
batch's example ids, so example b's loss depends on (seed, step, b) only:

- :class:`DiffusionLoss`: discrete Gaussian diffusion -- L_simple (Ho et al. 2020), L_hybrid with a
  learned range and the mean frozen in its L_vlb term, L_vlb (Nichol & Dhariwal 2021), t drawn from
  the batch's p_t (uniform or the loss-second-moment importance sampler) with weights 1 / (T p_t);
- :class:`ScoreLoss`: continuous-time denoising score matching, lambda(t) = sigma(t)^2 or the
  likelihood weighting g(t)^2 (Song et al. 2021; Song, Durkan et al. 2021), t ~ U(eps, T);
- :class:`NCSNLoss`: NCSN's multi-level loss over a noise ladder (Song & Ermon 2019);
- :class:`SlicedScoreLoss`: sliced score matching on the data (Song et al. 2019);
- :class:`FlowLoss`: the velocity regression of a rectified flow (Liu et al. 2023).

``net(x, t_in, cond=None)`` is the network with the step's weights and dropout keys bound; its
output is read through the objective's ``prediction`` (eps / x0 / v / score / u).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import array_device, expand_to, mean_flat
from .checks import check_bool, check_choice, check_positive, check_prediction, check_real
from .parametrization import to_score, to_u
from .process import is_discrete, require_continuous, time_range
from .score_matching import denoising_score_matching_loss, ncsn_loss, sliced_score_matching_loss
from .timestep_sampler import steps_from_uniform
from .training import EXTRA, NOISE, TIME, Batch, LossOut

__all__ = ["DiffusionLoss", "ScoreLoss", "NCSNLoss", "SlicedScoreLoss", "FlowLoss", "LOSSES", "make_objective"]


def _draw_noise(bk: Any, batch: Batch) -> Any:
    x0 = batch.x0
    return bk.normal(bk.fold_in(batch.key, NOISE), tuple(x0.shape), x0.dtype, sample_ids=batch.ids, device=array_device(x0))


def _draw_uniform(bk: Any, batch: Batch) -> Any:
    """One U[0, 1) per example, each from the example's own key."""
    x0 = batch.x0
    u = bk.uniform(bk.fold_in(batch.key, TIME), (x0.shape[0], 1), x0.dtype, sample_ids=batch.ids, device=array_device(x0))
    return u[:, 0]


def _call(net: Any, x: Any, t_in: Any, cond: Any) -> Any:
    return net(x, t_in) if cond is None else net(x, t_in, cond)


@dataclass(frozen=True)
class DiffusionLoss:
    """Discrete diffusion's losses (:meth:`GaussianDiffusion.loss_terms`): "simple", "hybrid", "vlb",
    "rescaled_vlb". The step t ~ p_t from the batch's ``t_probs`` (importance sampling), and the
    minimised loss is w_t L with w_t = 1 / (T p_t), so E[w_t L_t] = (1/T) sum_t L_t."""

    process: Any
    loss_type: str = "simple"
    lambda_vlb: float = 0.001
    decoder: str = "discretized"

    discrete = True

    def __post_init__(self) -> None:
        if not is_discrete(self.process):
            raise TypeError(
                f"DiffusionLoss needs a discrete diffusion (GaussianDiffusion); got {type(self.process).__name__} "
                "(use ScoreLoss for an SDE, FlowLoss for a rectified flow)"
            )
        check_choice(self.loss_type, ("simple", "hybrid", "vlb", "rescaled_vlb"), "loss_type")

    @property
    def num_timesteps(self) -> int:
        return int(self.process.num_timesteps)

    def __call__(self, bk: Any, net: Any, batch: Batch) -> LossOut:
        if batch.t_probs is None:
            raise ValueError("DiffusionLoss needs the batch's t_probs (the timestep sampler's p_t over the T steps)")
        x0 = batch.x0
        t, w = steps_from_uniform(_draw_uniform(bk, batch), batch.t_probs)
        noise = _draw_noise(bk, batch)
        x_t = self.process.q_sample(x0, t, noise=noise)
        out = _call(net, x_t, self.process.model_time(t), batch.cond)
        terms = self.process.loss_terms(
            out, x0, x_t, t, noise=noise, loss_type=self.loss_type, lambda_vlb=self.lambda_vlb,
            stop_gradient=bk.stop_gradient, decoder=self.decoder,
        )
        raw = terms["loss"]
        return LossOut(loss=raw * w, raw=raw, t=t)


def _check_sde(process: Any, name: str) -> None:
    require_continuous(process, name, "it draws continuous times t ~ U(eps, T)")
    if not hasattr(process, "diffusion_squared"):
        raise TypeError(f"{name} needs an SDE (VPSDE, subVPSDE, VESDE); got {type(process).__name__}")


def _continuous_times(bk: Any, process: Any, batch: Batch, eps: float) -> Any:
    lo, hi = (float(v) for v in time_range(process))
    lo = max(lo, eps)
    return lo + (hi - lo) * _draw_uniform(bk, batch)


@dataclass(frozen=True)
class ScoreLoss:
    """Continuous-time DSM: 1/2 ||sigma s + z||^2 (lambda = sigma^2), or 1/2 g^2 ||s + z / sigma||^2
    (``likelihood_weighting``), at x_t = alpha x0 + sigma z, t ~ U(eps, T) (score_sde's eps = 1e-5)."""

    process: Any
    prediction: str = "eps"
    likelihood_weighting: bool = False
    reduce_mean: bool = False
    eps: float = 1e-5

    discrete = False

    def __post_init__(self) -> None:
        _check_sde(self.process, "ScoreLoss")
        check_prediction(self.prediction)
        check_bool(self.likelihood_weighting, "likelihood_weighting")
        check_bool(self.reduce_mean, "reduce_mean")
        check_positive(self.eps, "eps")

    def __call__(self, bk: Any, net: Any, batch: Batch) -> LossOut:
        x0, p = batch.x0, self.process
        t = _continuous_times(bk, p, batch, self.eps)
        z = _draw_noise(bk, batch)
        alpha, sigma = expand_to(p.alpha(t, dtype=x0.dtype), x0), expand_to(p.sigma(t, dtype=x0.dtype), x0)
        x_t = alpha * x0 + sigma * z
        score = to_score(_call(net, x_t, p.model_time(t), batch.cond), self.prediction, x_t, alpha, sigma)
        loss = denoising_score_matching_loss(
            p, score, z, t, likelihood_weighting=self.likelihood_weighting, reduce_mean=self.reduce_mean
        )
        return LossOut(loss=loss, raw=loss)


@dataclass(frozen=True)
class NCSNLoss:
    """NCSN's loss over a ladder sigma_1 > ... > sigma_L of a VE process: a level drawn uniformly per
    example, x~ = x + sigma z, 1/2 ||s(x~, sigma) + z / sigma||^2 sigma^anneal_power (Song & Ermon 2019,
    eq. 6). The network receives the process's model time of the level (sigma for a VESDE), as
    annealed Langevin sampling gives it. ``num_scales`` None: the process's own N levels."""

    process: Any
    num_scales: int | None = None
    anneal_power: float = 2.0
    prediction: str = "score"

    discrete = False

    def __post_init__(self) -> None:
        require_continuous(self.process, "NCSNLoss", "it needs a noise ladder of a VE process")
        if np.any(np.asarray(self.process.alpha(np.array(time_range(self.process), dtype=np.float64))) != 1.0):
            raise TypeError(f"NCSNLoss needs a variance-exploding process (alpha = 1); got {type(self.process).__name__}")
        if self.num_scales is None and getattr(self.process, "N", None) is None:
            raise TypeError(f"NCSNLoss needs num_scales: {type(self.process).__name__} has no N")
        check_real(self.anneal_power, "anneal_power")
        check_prediction(self.prediction)

    def level_times(self) -> np.ndarray:
        """The ladder's times, t = linspace(T, t_min, L) (the annealed_langevin sampler's levels)."""
        lo, hi = (float(v) for v in time_range(self.process))
        L = int(self.process.N if self.num_scales is None else self.num_scales)
        return np.linspace(hi, lo, L)

    def __call__(self, bk: Any, net: Any, batch: Batch) -> LossOut:
        x0, p = batch.x0, self.process
        xp = bk.xp
        levels = self.level_times()
        idx = xp.astype(xp.floor(_draw_uniform(bk, batch) * len(levels)), xp.int64)
        idx = xp.clip(idx, max=len(levels) - 1)
        t = xp.take(xp.asarray(levels, dtype=x0.dtype, device=array_device(x0)), idx, axis=0)
        z = _draw_noise(bk, batch)
        sigma = p.sigma(t, dtype=x0.dtype)
        x_t = x0 + expand_to(sigma, x0) * z
        score = to_score(_call(net, x_t, p.model_time(t), batch.cond), self.prediction, x_t, 1.0, expand_to(sigma, x0))
        loss = ncsn_loss(score, z, sigma, anneal_power=self.anneal_power)
        return LossOut(loss=loss, raw=loss)


@dataclass(frozen=True)
class SlicedScoreLoss:
    """Sliced score matching on the data (Song et al. 2019): E[v^T (ds/dx) v + 1/2 (v^T s)^2] with
    Gaussian projections v (``variance_reduced``: 1/2 ||s||^2 in place of 1/2 (v^T s)^2). The network
    is called at ``t_in`` (a time-independent score)."""

    t_in: float = 0.0
    num_projections: int = 1
    variance_reduced: bool = True

    discrete = False

    def __post_init__(self) -> None:
        check_real(self.t_in, "t_in")
        check_positive(self.num_projections, "num_projections")
        check_bool(self.variance_reduced, "variance_reduced")

    def __call__(self, bk: Any, net: Any, batch: Batch) -> LossOut:
        x0 = batch.x0
        xp = bk.xp
        t_in = xp.full((x0.shape[0],), self.t_in, dtype=x0.dtype, device=array_device(x0))
        shape = (x0.shape[0], int(self.num_projections), *x0.shape[1:])
        v = bk.normal(bk.fold_in(batch.key, EXTRA), shape, x0.dtype, sample_ids=batch.ids, device=array_device(x0))
        v = xp.permute_dims(v, (1, 0, *range(2, v.ndim)))  # (K, B, ...): probes of example b keyed by b
        loss = sliced_score_matching_loss(
            bk, lambda x: _call(net, x, t_in, batch.cond), x0, v, variance_reduced=self.variance_reduced
        )
        return LossOut(loss=loss, raw=loss)


@dataclass(frozen=True)
class FlowLoss:
    """Rectified flow's velocity regression, mean over dims of ||u_hat - (z - x0)||^2 at
    x_t = (1 - t) x0 + t z, t ~ U(0, 1) (Liu et al. 2023; Lipman et al. 2023)."""

    process: Any
    prediction: str = "u"

    discrete = False

    def __post_init__(self) -> None:
        require_continuous(self.process, "FlowLoss", "it draws continuous times")
        check_prediction(self.prediction)

    def __call__(self, bk: Any, net: Any, batch: Batch) -> LossOut:
        x0, p = batch.x0, self.process
        t = _continuous_times(bk, p, batch, 0.0)
        z = _draw_noise(bk, batch)
        alpha, sigma = expand_to(p.alpha(t, dtype=x0.dtype), x0), expand_to(p.sigma(t, dtype=x0.dtype), x0)
        x_t = alpha * x0 + sigma * z
        u_hat = to_u(_call(net, x_t, p.model_time(t), batch.cond), self.prediction, x_t, alpha, sigma)
        loss = mean_flat((u_hat - (z - x0)) ** 2)
        return LossOut(loss=loss, raw=loss)


#: loss names -> (objective class, fixed options)
LOSSES = {
    "simple": (DiffusionLoss, {"loss_type": "simple"}),
    "hybrid": (DiffusionLoss, {"loss_type": "hybrid"}),
    "vlb": (DiffusionLoss, {"loss_type": "vlb"}),
    "rescaled_vlb": (DiffusionLoss, {"loss_type": "rescaled_vlb"}),
    "dsm": (ScoreLoss, {}),
    "dsm_likelihood": (ScoreLoss, {"likelihood_weighting": True}),
    "ncsn": (NCSNLoss, {}),
    "ssm": (SlicedScoreLoss, {}),
    "flow": (FlowLoss, {}),
}


def make_objective(name: str, process: Any = None, **options: Any) -> Any:
    """An objective by name (:data:`LOSSES`), for ``process`` (none for "ssm")."""
    check_choice(name, tuple(LOSSES), "loss")
    cls, fixed = LOSSES[name]
    if cls is SlicedScoreLoss:
        return cls(**options)
    return cls(process, **fixed, **options)
