"""Timestep samplers for training: uniform and loss-second-moment importance sampling.

The core makes no random numbers: a sampler maps uniform draws ``u`` in [0, 1) (from a backend) to
steps by the inverse CDF of its distribution p_t, and returns the unbiasing weights 1 / (T p_t),
so that E_t[w_t L_t] = (1/T) sum_t L_t under either sampler (Nichol & Dhariwal 2021, §3.3).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_choice, check_int, check_real
from ._array import array_device, array_namespace, as_xp, concrete_min_max, to_numpy

__all__ = ["steps_from_uniform", "TimestepSampler", "UniformSampler", "LossSecondMomentResampler", "create_named_schedule_sampler"]


def steps_from_uniform(u: Any, probs: Any) -> tuple[Any, Any]:
    """Steps t ~ p by the inverse CDF of uniform draws ``u``, and the weights 1 / (T p_t).

    ``probs`` (shape (T,), summing to 1) is an array of ``u``'s namespace, possibly traced: the
    importance sampler's distribution enters a compiled training step as an argument. The CDF is
    accumulated in at least float32 and its last entry set to 1, so every u < 1 finds a step;
    a float16 / bfloat16 CDF would round its edges (1/3 -> 0.33325) and move draws to the next step.
    """
    xp = array_namespace(u, probs)
    T = probs.shape[0]
    work = probs.dtype if probs.dtype in (xp.float32, getattr(xp, "float64", None)) else xp.float32
    p = xp.astype(probs, work)
    cdf = xp.cumulative_sum(p)
    cdf = xp.where(xp.arange(T, device=array_device(u)) == T - 1, xp.asarray(1.0, dtype=work, device=array_device(u)), cdf)
    steps = xp.searchsorted(cdf, xp.astype(u, work), side="right")
    steps = xp.clip(steps, max=T - 1)
    weights = 1.0 / (T * xp.take(p, steps, axis=0))
    return steps, xp.astype(weights, u.dtype)


class TimestepSampler:
    """A distribution over the steps 0..T-1 of a diffusion; subclasses define :meth:`weights`."""

    num_timesteps: int

    def weights(self) -> np.ndarray:
        """Unnormalised float64 weights over steps (NumPy, host side)."""
        raise NotImplementedError

    def sample(self, u: Any) -> tuple[Any, Any]:
        """(steps, weights) for uniform draws ``u`` of shape (B,) in [0, 1).

        Steps are int64-like integers of ``u``'s namespace; weights 1 / (T p_t) in ``u``'s dtype.
        """
        try:
            xp = array_namespace(u)
        except TypeError:
            raise TypeError(
                f"u must be a 1-D floating array of uniform draws in [0, 1) (from backend.uniform); got {type(u).__name__}"
            ) from None
        if not xp.isdtype(u.dtype, "real floating") or u.ndim != 1:
            raise ValueError(f"u must be a 1-D floating array of uniform draws in [0, 1); got shape {tuple(u.shape)}, dtype {u.dtype}")
        lo_hi = concrete_min_max(u)  # None for traced arrays (jit): no value check there
        if lo_hi is not None:
            lo, hi = (float(v) for v in lo_hi)
            if not (lo >= 0.0 and hi < 1.0):  # NaN fails both comparisons
                raise ValueError(f"u must lie in [0, 1) and be finite; got values from {lo} to {hi}")
        w = np.asarray(self.weights(), dtype=np.float64)
        device = array_device(u)
        f64 = getattr(xp, "float64", None)
        try:  # the distribution in float64 where the namespace has it (JAX with x64 off does not)
            probs = as_xp(w / np.sum(w), xp, f64 if f64 is not None else xp.float32, device)
        except (TypeError, ValueError):
            probs = as_xp(w / np.sum(w), xp, xp.float32, device)
        return steps_from_uniform(u, probs)


class UniformSampler(TimestepSampler):
    """p_t = 1/T (the default, and the one L_hybrid uses); weights are all 1."""

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = check_int(num_timesteps, "num_timesteps", 1)

    def weights(self) -> np.ndarray:
        return np.ones(self.num_timesteps)


class LossSecondMomentResampler(TimestepSampler):
    """p_t proportional to sqrt(E[L_t^2]) over the last ``history_per_term`` losses at each t.

    Uniform until every step has a full history, then mixed with ``uniform_prob`` of uniform
    (Improved DDPM §3.3; for L_vlb: the paper found it unhelpful for L_hybrid).
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        self.num_timesteps = check_int(num_timesteps, "num_timesteps", 1)
        self.history_per_term = check_int(history_per_term, "history_per_term", 1)
        self.uniform_prob = check_real(uniform_prob, "uniform_prob", 0.0, 1.0, high_inclusive=True)
        self._loss_history = np.zeros((num_timesteps, history_per_term), dtype=np.float64)
        self._loss_counts = np.zeros(num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool(np.all(self._loss_counts == self.history_per_term))

    def weights(self) -> np.ndarray:
        if not self.warmed_up():
            return np.ones(self.num_timesteps)
        w = np.sqrt(np.mean(self._loss_history**2, axis=-1))
        w = w / np.sum(w)
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_losses(self, steps: Any, losses: Any) -> None:
        """Record per-example losses at their steps (host side: call outside any jit)."""
        steps = np.asarray(to_numpy(steps)).reshape(-1)
        if steps.dtype.kind not in "iu":
            raise TypeError(f"steps must be integer steps (as returned by sample); got dtype {steps.dtype}")
        losses = np.asarray(to_numpy(losses))
        if losses.dtype.kind not in "iuf":
            raise TypeError(f"losses must be real numbers, one per step; got dtype {losses.dtype}")
        losses = losses.astype(np.float64).reshape(-1)
        if steps.shape != losses.shape:
            raise ValueError(f"steps and losses must have the same length; got {steps.shape[0]} and {losses.shape[0]}")
        if steps.size and (steps.min() < 0 or steps.max() >= self.num_timesteps):
            raise ValueError(f"steps must lie in [0, {self.num_timesteps - 1}]; got {steps.min()}..{steps.max()}")
        if not np.all(np.isfinite(losses)):
            raise ValueError("losses must be finite; got a NaN or infinity")
        for t, loss in zip(steps.tolist(), losses.tolist()):
            if self._loss_counts[t] == self.history_per_term:
                self._loss_history[t, :-1] = self._loss_history[t, 1:]
                self._loss_history[t, -1] = loss
            else:
                self._loss_history[t, self._loss_counts[t]] = loss
                self._loss_counts[t] += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_history": self._loss_history.copy(),
            "loss_counts": self._loss_counts.copy(),
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(); got {type(state).__name__}")
        missing = [k for k in ("loss_history", "loss_counts") if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing} (expected a dict from state_dict(); got keys {sorted(state)})")
        history = np.asarray(state["loss_history"], dtype=np.float64)
        counts = np.asarray(state["loss_counts"], dtype=np.int64)
        if history.shape != (self.num_timesteps, self.history_per_term) or counts.shape != (self.num_timesteps,):
            raise ValueError(
                f"state does not fit this sampler: loss_history {history.shape} (expected "
                f"{(self.num_timesteps, self.history_per_term)}), loss_counts {counts.shape}"
            )
        self._loss_history = history.copy()
        self._loss_counts = counts.copy()
        self.uniform_prob = check_real(
            state.get("uniform_prob", self.uniform_prob), "uniform_prob", 0.0, 1.0, high_inclusive=True
        )


def create_named_schedule_sampler(name: str, num_timesteps: int) -> TimestepSampler:
    """improved-diffusion's names: "uniform" or "loss-second-moment"."""
    check_choice(name, ("uniform", "loss-second-moment"), "name")
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(num_timesteps)
    raise ValueError(f"name must be 'uniform' or 'loss-second-moment'; got {name!r}")
