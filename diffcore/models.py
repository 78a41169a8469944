"""Models and how their weights travel into loops.

A model speaks one protocol: ``model(x, t_in, cond=None) -> output`` (``t_in`` one network time
per example). Before a loop runs it, the model is split into a *pure function* and its *weights*:

    apply(weights, x, t_in[, cond]) -> output

The weights (a pytree of arrays) are an argument of every step and of the compiled loop; the pure
function holds no weights, so a compiled loop never bakes a network in as constants and changed
weights always take effect. The split is:

- :class:`Model` ``(apply, params)``: a pure function and its parameter pytree, given by the user
  (as in JAX/flax ``apply`` style). Reusable: loops built for it are reused across calls.
- a backend's own kinds, through ``backend.split_model(model)``: the JAX backend splits a flax
  ``nnx.Module`` into its graph definition (static) and its state (the weights). Reusable.
- any other callable: ``weights`` is ``None`` and the callable itself is the function. The backend
  cannot see its state, so it is never run from a loop compiled in an earlier call (correct first):
  eager backends read its state live; JAX traces it afresh on every call. A torch ``nn.Module`` is
  such a callable: torch loops are eager, so in-place updates, optimizer steps and
  ``load_state_dict`` are seen at every call.

:class:`ModelFn` is the pure part; two splits of models with the same structure give equal
``ModelFn``s, which is what lets a compiled loop be found again.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Model", "ModelFn", "split_model", "call_apply"]


def call_apply(apply: Callable[..., Any], weights: Any, x: Any, t_in: Any, cond: Any = None) -> Any:
    """``apply(weights, x, t_in)``, or ``apply(weights, x, t_in, cond)`` when there is a condition."""
    return apply(weights, x, t_in) if cond is None else apply(weights, x, t_in, cond)


class Model:
    """A model given as a pure function and its parameters: ``apply(params, x, t_in[, cond])``.

    ``params`` is any pytree of arrays (a dict, a list, an nnx state...); it enters compiled loops
    as an argument, so ``Model(apply, new_params)`` samples with the new parameters without
    recompiling. ``prediction`` declares what the output is ("eps", "x0", "v", "score", "u", ...).
    Calling the model directly, ``model(x, t_in, cond=None)``, applies it to its own parameters.
    """

    __slots__ = ("apply", "params", "prediction", "__weakref__")

    def __init__(self, apply: Callable[..., Any], params: Any, *, prediction: str | None = None) -> None:
        if not callable(apply):
            raise TypeError(f"apply must be callable apply(params, x, t_in, cond=None); got {type(apply).__name__}")
        if prediction is not None:
            from .parametrization import check_prediction

            check_prediction(prediction)
        self.apply = apply
        self.params = params
        self.prediction = prediction

    def __call__(self, x: Any, t_in: Any, cond: Any = None) -> Any:
        return call_apply(self.apply, self.params, x, t_in, cond)

    def __repr__(self) -> str:
        name = getattr(self.apply, "__qualname__", type(self.apply).__name__)
        return f"Model({name}, prediction={self.prediction!r})"


class ModelFn:
    """The pure part of a model: ``fn(weights, x, t_in[, cond])``.

    ``key`` says which models share it (hashable; ``None``: this object only, for models whose
    weights the backend cannot see). ``reusable`` is True when the weights travel as an argument,
    i.e. a loop built for this function may run again with other weights. ``prediction`` is what
    the model declares it outputs (or None).
    """

    __slots__ = ("apply", "key", "prediction", "__weakref__")

    def __init__(self, apply: Callable[..., Any], key: Any, prediction: str | None) -> None:
        self.apply = apply
        self.key = key
        self.prediction = prediction

    @property
    def reusable(self) -> bool:
        return self.key is not None

    def __call__(self, weights: Any, x: Any, t_in: Any, cond: Any = None) -> Any:
        return call_apply(self.apply, weights, x, t_in, cond)

    def __eq__(self, other: Any) -> bool:
        if self is other:
            return True
        return (
            isinstance(other, ModelFn)
            and self.key is not None
            and self.key == other.key
            and self.prediction == other.prediction
        )

    def __hash__(self) -> int:
        return hash((self.key, self.prediction)) if self.key is not None else id(self)

    def __repr__(self) -> str:
        kind = "reusable" if self.reusable else "not reusable"
        return f"ModelFn({getattr(self.apply, '__qualname__', type(self.apply).__name__)}, {kind})"


class _MeanChannels:
    """``apply`` with the variance half of a learned-variance output dropped (channel axis 1)."""

    __slots__ = ("apply", "__weakref__")

    def __init__(self, apply: Callable[..., Any]) -> None:
        self.apply = apply

    def __repr__(self) -> str:
        return f"mean_channels({getattr(self.apply, '__qualname__', type(self.apply).__name__)})"

    def __call__(self, weights: Any, x: Any, t_in: Any, cond: Any = None) -> Any:
        from .parametrization import split_learned_variance

        out = call_apply(self.apply, weights, x, t_in, cond)
        if getattr(out, "ndim", 0) >= 2 and out.shape[1] == 2 * x.shape[1]:
            return split_learned_variance(out, x.shape[1])[0]
        return out  # a wrong shape is reported by the sampler's shape check


def mean_channels(fn: ModelFn) -> ModelFn:
    """``fn`` for samplers that use only the mean of a learned-variance model (DDIM, the ODE and SDE
    samplers): the variance channels (the second half of axis 1) are dropped. Models that share
    ``fn``'s key share the view's key, so a built sampler is still reused across weights."""
    key = None if fn.key is None else ("mean_channels", fn.key)
    return ModelFn(_MeanChannels(fn.apply), key, fn.prediction)


def _plain(model: Callable[..., Any]) -> Callable[..., Any]:
    def apply(weights: Any, x: Any, t_in: Any, cond: Any = None) -> Any:
        return model(x, t_in) if cond is None else model(x, t_in, cond)

    apply.__qualname__ = getattr(model, "__qualname__", type(model).__name__)
    return apply


def split_model(model: Any, backend: Any = None) -> tuple[ModelFn, Any]:
    """(pure function, weights) of ``model`` for running it in a loop of ``backend``.

    :class:`Model`: ``(apply, params)``. Otherwise the backend's ``split_model(model)`` if it has
    one and it knows the kind (the JAX backend: flax nnx modules). Otherwise the callable itself
    with weights ``None`` (not reusable: see the module docstring).
    """
    if isinstance(model, ModelFn):
        raise TypeError("model is already split (a ModelFn); pass the model itself")
    if not callable(model):
        raise TypeError(f"model must be callable model(x, t_in, cond=None); got {type(model).__name__}")
    prediction = getattr(model, "prediction", None)
    if isinstance(model, Model):
        return ModelFn(model.apply, ("apply", model.apply), prediction), model.params
    splitter = getattr(backend, "split_model", None)
    if splitter is not None:
        split = splitter(model)
        if split is not None:
            apply, weights, key = split
            return ModelFn(apply, key, prediction), weights
    return ModelFn(_plain(model), None, prediction), None
