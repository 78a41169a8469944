"""A small LRU of built step functions.

JAX compiles a loop once per step *object* (a static argument of its jit), so a step function
rebuilt on every call recompiles on every call. Steps are therefore built once per (what defines
them) and kept here; the cache holds the model alive until the entry is evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
CACHE_SIZE = 32


def cached(key: tuple, make: Callable[[], Any]) -> Any:
    """``make()``, reused while ``key`` (hashable) stays among the last CACHE_SIZE keys."""
    try:
        hash(key)
    except TypeError:  # an unhashable model or option (an array): build afresh (JAX then recompiles)
        return make()
    value = _CACHE.get(key)
    if value is None:
        value = _CACHE[key] = make()
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return value
