"""Mistakes a new user makes with the one-call APIs (diffcore.sample, diffcore.nll), each answered by
an error that names the argument and what is allowed, instead of a deep framework message or a
silently wrong result."""

from __future__ import annotations

import numpy as np
import pytest

import diffcore
from diffcore.analytic import GaussianMixture

DATA = GaussianMixture(np.array([0.3, 0.7]), np.array([[-1.5, 0.5], [1.0, -0.5]]), np.array([0.3, 0.4]))
VP = diffcore.VPSDE()
MODEL = DATA.as_model(VP, "eps")


def _torch():
    pytest.importorskip("diffcore_torch")
    return pytest.importorskip("torch")


def _jnp():
    pytest.importorskip("diffcore_jax")
    return pytest.importorskip("jax.numpy")


CASES = {
    "process None": (lambda: diffcore.sample("ddim", MODEL, None, (2, 2)), TypeError, "needs a process of the process interface"),
    "process a string": (lambda: diffcore.sample("ddim", MODEL, "vp", (2, 2)), TypeError, "got process='vp'"),
    "backend an int": (lambda: diffcore.sample("ddim", MODEL, VP, (2, 2), backend=3), TypeError, "backend must be a backend name"),
    "x_T a list": (lambda: diffcore.sample("ddim", MODEL, VP, (2, 2), x_T=[[0.0, 0.0]] * 2), TypeError, "x_T must be an array"),
    "x_T torch on numpy": (lambda: diffcore.sample("ddim", MODEL, VP, (2, 2), x_T=_torch().zeros(2, 2)), TypeError,
                           "x_T is a torch array but the backend is 'numpy'"),
    "x_T numpy on jax": (lambda: (_jnp(), diffcore.sample("ddim", MODEL, VP, (2, 2), backend="jax", x_T=np.zeros((2, 2))))[1],
                         TypeError, "x_T is a numpy array but the backend is 'jax'"),
    "torch dtype on numpy": (lambda: diffcore.sample("ddim", MODEL, VP, (2, 2), dtype=_torch().float32), TypeError,
                             "dtype torch.float32 belongs to another framework"),
    "jax dtype on torch": (lambda: (_jnp(), diffcore.sample("ddim", MODEL, VP, (2, 2), backend="torch", dtype=_jnp().float32))[1],
                           TypeError, "dtype must be a torch floating dtype"),
    "integer dtype": (lambda: diffcore.sample("ddim", MODEL, VP, (2, 2), dtype=np.int64), TypeError, "dtype must be a NumPy floating dtype"),
    "fractional shape": (lambda: diffcore.sample("ddim", MODEL, VP, (4, 2.7)), TypeError, r"shape must be a tuple of non-negative integers; shape\[1\] is 2.7"),
    "shape an int": (lambda: diffcore.sample("ddim", MODEL, VP, 4), TypeError, "shape must be a tuple of non-negative integers"),
    "unknown option": (lambda: diffcore.sample("ddim", MODEL, VP, (2, 2), stepz=3), TypeError,
                       "sampler 'ddim' has no option 'stepz'; its options: steps"),
    "model returns a list": (lambda: diffcore.sample("ddim", lambda x, t: [0.0], VP, (2, 2), steps=2), TypeError,
                             "the model returned a builtins list"),
    "model returns torch for numpy": (lambda: diffcore.sample("ddim", lambda x, t: _torch().zeros(2, 2), VP, (2, 2), steps=2),
                                      TypeError, "the model returned a torch Tensor for x of type numpy"),
    "nll process None": (lambda: diffcore.nll(MODEL, None, np.zeros((2, 2))), TypeError, "nll needs a process"),
    "nll numpy x on torch": (lambda: diffcore.nll(MODEL, VP, np.zeros((2, 2)), backend=(_torch(), "torch")[1]), TypeError,
                             "x is a numpy array but the backend is 'torch'"),
    "nll torch x on jax": (lambda: (_jnp(), diffcore.nll(MODEL, VP, _torch().zeros(2, 2), backend="jax"))[1], TypeError,
                           "x is a torch array but the backend is 'jax'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mistakes_get_named_errors(case):
    call, exc, message = CASES[case]
    with pytest.raises(exc, match=message):
        call()
