"""The one cache of built samplers and likelihood steps: bounded, thread-safe, clearable.

A loop compiled by JAX is found again through the *step function object* it was compiled for, so
a step rebuilt on every call recompiles on every call. Steps built for a model whose weights travel
as loop arguments (:class:`diffcore.models.ModelFn` with ``reusable``) are kept here, keyed by what
defines them: the sampler or solver, the model's pure function (never its weights), the process
and the options. Nothing else is cached: a model whose state the backend cannot see gets a fresh
step on every call. The entries hold no weights and no model object of the user's.

``CACHE_SIZE`` entries at most (least recently used first out); :func:`clear_cache` empties it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

__all__ = ["cached", "clear_cache", "cache_info", "CACHE_SIZE"]

_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 32


def cached(key: tuple, make: Callable[[], Any]) -> Any:
    """``make()``, reused while ``key`` (hashable) stays among the last CACHE_SIZE keys."""
    try:
        hash(key)
    except TypeError:  # an unhashable option (an array): build afresh
        return make()
    with _LOCK:
        value = _CACHE.get(key)
        if value is not None:
            _CACHE.move_to_end(key)
            return value
    value = make()  # outside the lock: building may be slow; a racing twin is harmless
    with _LOCK:
        existing = _CACHE.get(key)
        if existing is not None:
            _CACHE.move_to_end(key)
            return existing
        _CACHE[key] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every built sampler and likelihood step (JAX then frees their compiled loops)."""
    with _LOCK:
        _CACHE.clear()


def cache_info() -> dict:
    """{"size": entries held, "max_size": CACHE_SIZE}."""
    with _LOCK:
        return {"size": len(_CACHE), "max_size": CACHE_SIZE}
