"""Backend autodiff hooks (grad, vjp, jvp, stop_gradient) and diffcore.autodiff's divergences."""

from __future__ import annotations

import numpy as np
import pytest

import diffcore
from diffcore._array import array_namespace
from diffcore.autodiff import divergence_exact, divergence_hutchinson

from conftest import to_np
from harness import assert_same_on_all_backends

AUTODIFF = ["torch", "jax"]

RNG = np.random.default_rng(20240601)
W = np.diag([1.5, -0.8, 1.2]) + 0.4 * RNG.standard_normal((3, 3))  # a strong diagonal: |trace| is large
C = 0.3 * RNG.standard_normal(3)
X = RNG.standard_normal((2, 3))


def load_backend(name: str):
    pytest.importorskip(name)
    pytest.importorskip(f"diffcore_{name}")
    return diffcore.backend(name)


@pytest.fixture(params=AUTODIFF)
def bk(request):
    return load_backend(request.param)


def field(w, c):
    """f(x) = tanh(flat(x) W^T + c), per example, reshaped like x (w, c: arrays or NumPy)."""

    def f(x):
        xp = array_namespace(x)
        wx = xp.asarray(w, dtype=x.dtype) if isinstance(w, np.ndarray) else w
        cx = xp.asarray(c, dtype=x.dtype) if isinstance(c, np.ndarray) else c
        flat = xp.reshape(x, (x.shape[0], -1))
        return xp.reshape(xp.tanh(flat @ xp.matrix_transpose(wx) + cx), x.shape)

    return f


def field_np(x, w=W, c=C):
    """(f(x), J(x)) in NumPy: J[b] = diag(1 - tanh(z_b)^2) W."""
    flat = x.reshape(x.shape[0], -1)
    out = np.tanh(flat @ w.T + c)
    jac = (1 - out**2)[:, :, None] * w[None]
    return out.reshape(x.shape), jac


def exact_trace(x, w=W, c=C):
    return np.trace(field_np(x, w, c)[1], axis1=1, axis2=2)


def arr(bk, a):
    return bk.xp.asarray(np.asarray(a, dtype=np.float64))


# the hooks ------------------------------------------------------------------------------------


def test_jvp_vjp_grad_match_finite_differences(bk):
    f = field(W, C)
    x = arr(bk, X)
    v, u = RNG.standard_normal(X.shape), RNG.standard_normal(X.shape)
    h = 1e-6
    fd = (to_np(f(arr(bk, X + h * v))) - to_np(f(arr(bk, X - h * v)))) / (2 * h)

    out, jv = bk.jvp(f, x, arr(bk, v))
    np.testing.assert_allclose(to_np(out), field_np(X)[0], rtol=1e-14)
    np.testing.assert_allclose(to_np(jv), fd, rtol=1e-7, atol=1e-9)

    out, uj = bk.vjp(f, x, arr(bk, u))
    np.testing.assert_allclose(to_np(out), field_np(X)[0], rtol=1e-14)
    np.testing.assert_allclose(np.sum(to_np(uj) * v), np.sum(u * fd), rtol=1e-7)  # <u^T J, v> = <u, J v>
    np.testing.assert_allclose(np.sum(to_np(uj) * v), np.sum(u * to_np(jv)), rtol=1e-12)

    def energy(y):
        return 0.5 * array_namespace(y).sum(f(y) ** 2)

    g = to_np(bk.grad(energy)(x))
    basis = np.eye(X.size).reshape((X.size,) + X.shape)
    fd_grad = np.array(
        [(float(energy(arr(bk, X + h * e))) - float(energy(arr(bk, X - h * e)))) / (2 * h) for e in basis]
    ).reshape(X.shape)
    np.testing.assert_allclose(g, fd_grad, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(g, to_np(bk.vjp(f, x, f(x))[1]), rtol=1e-13)  # grad(|f|^2/2) = J^T f


def test_autodiff_agrees_across_frameworks():
    v = RNG.standard_normal(X.shape)

    def products(bk, x, v, w, c):
        f = field(w, c)
        energy = lambda y: 0.5 * array_namespace(y).sum(f(y) ** 2)  # noqa: E731
        return bk.jvp(f, x, v)[1], bk.vjp(f, x, v)[1], bk.grad(energy)(x)

    def expected(x, v, w, c):
        out, jac = field_np(x, w, c)
        return (
            np.einsum("bij,bj->bi", jac, v),
            np.einsum("bij,bi->bj", jac, v),
            np.einsum("bij,bi->bj", jac, out),  # grad |f|^2 / 2 = J^T f
        )

    assert_same_on_all_backends(
        products, X, v, W, C, with_backend=True, backends=AUTODIFF, expected=expected, rtol64=1e-12
    )


def test_stop_gradient(bk):
    x = arr(bk, X)

    def g(y):
        return array_namespace(y).sum(bk.stop_gradient(y) * y)

    np.testing.assert_allclose(to_np(bk.grad(g)(x)), X, rtol=1e-15)  # not 2 x
    np.testing.assert_array_equal(to_np(bk.stop_gradient(x)), X)


def test_numpy_backend_has_no_autodiff():
    bk = diffcore.backend("numpy")
    assert bk.stop_gradient(X) is X
    with pytest.raises(NotImplementedError, match="diffcore.backend\\('torch'\\)"):
        bk.vjp(field(W, C), X, X)
    with pytest.raises(NotImplementedError, match="numpy backend has no automatic differentiation"):
        divergence_exact(bk, field(W, C), X)


# divergence -----------------------------------------------------------------------------------


def _full_jacobian(bk, f, x):
    if bk.name == "torch":
        import torch.func

        return to_np(torch.func.jacrev(f)(x))
    import jax

    return to_np(jax.jacfwd(f)(x))


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_divergence_exact_is_the_trace_of_the_jacobian(bk, mode):
    rng = np.random.default_rng(5)
    w6, c6 = np.eye(6) + 0.5 * rng.standard_normal((6, 6)), rng.standard_normal(6)
    x = arr(bk, rng.standard_normal((2, 2, 3)))  # data with two axes: D = 6
    f = field(w6, c6)
    out, div = divergence_exact(bk, f, x, mode=mode, return_output=True)
    full = _full_jacobian(bk, f, x).reshape(2, 6, 2, 6)
    np.testing.assert_allclose(to_np(div), [np.trace(full[b, :, b, :]) for b in range(2)], rtol=1e-13)
    np.testing.assert_allclose(to_np(out), to_np(f(x)), rtol=1e-15)
    assert np.abs(full[0, :, 1, :]).max() == 0  # the examples are independent, as the helper assumes


def test_divergence_exact_on_every_framework_and_under_jit():
    assert_same_on_all_backends(
        lambda bk, x, w, c: divergence_exact(bk, field(w, c), x),
        X, W, C, with_backend=True, backends=AUTODIFF, expected=exact_trace, rtol64=1e-12, rtol32=1e-5,
    )


def test_divergence_exact_refuses_large_dimensions():
    bk = load_backend("torch")
    x = arr(bk, np.zeros((2, 65)))
    with pytest.raises(ValueError, match=r"65 > max_dim=64; use divergence_hutchinson"):
        divergence_exact(bk, lambda y: y, x)
    assert to_np(divergence_exact(bk, lambda y: 2 * y, x, max_dim=65)).tolist() == [130.0, 130.0]


def _per_probe_estimates(bk, f, x, probes):
    """eps_k^T J(x_b) eps_k for every probe k and example b, with one vjp over a (K*B, D) batch."""
    xp = bk.xp
    k, b, d = probes.shape
    x_rep = xp.reshape(xp.broadcast_to(x[None, ...], (k, b, d)), (k * b, d))
    return to_np(divergence_hutchinson(bk, f, x_rep, xp.reshape(probes, (k * b, d)))).reshape(k, b)


@pytest.mark.parametrize("probe", ["rademacher", "normal"])
def test_hutchinson_is_unbiased_and_a_biased_mutant_is_caught(bk, probe):
    f, x, exact = field(W, C), arr(bk, X), exact_trace(X)
    n = 4000
    probes = getattr(bk, probe)(bk.key(0), (n,) + X.shape, bk.xp.float64)

    def z_scores(estimates):
        return np.abs(estimates.mean(0) - exact) / (estimates.std(0, ddof=1) / np.sqrt(n))

    assert np.all(z_scores(_per_probe_estimates(bk, f, x, probes)) < 4)
    # E = 1.44 tr J: about 8-10 standard errors off at n = 4000 (1.1x, E = 1.21 tr J, was about 4: caught by chance)
    assert np.all(z_scores(_per_probe_estimates(bk, f, x, 1.2 * probes)) > 4)


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_hutchinson_averages_its_probes(bk, mode):
    f, x = field(W, C), arr(bk, X)
    probes = bk.rademacher(bk.key(1), (5,) + X.shape, bk.xp.float64)
    got = to_np(divergence_hutchinson(bk, f, x, probes, mode=mode))
    np.testing.assert_allclose(got, _per_probe_estimates(bk, f, x, probes).mean(0), rtol=1e-13)
    one = to_np(divergence_hutchinson(bk, f, x, probes[0]))  # (B, ...) probes: K = 1
    np.testing.assert_allclose(one, _per_probe_estimates(bk, f, x, probes[:1])[0], rtol=1e-13)


def test_divergence_bad_arguments():
    bk = load_backend("torch")
    f, x = field(W, C), arr(bk, X)
    with pytest.raises(ValueError, match=r"probes must have shape \(K, \*x.shape\) = \(K, 2, 3\)"):
        divergence_hutchinson(bk, f, x, arr(bk, np.ones((2, 4))))
    with pytest.raises(TypeError, match="probes must have the dtype of x"):
        divergence_hutchinson(bk, f, x, bk.xp.ones((2, 3), dtype=bk.xp.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        divergence_exact(bk, f, x, mode="fwd")
    with pytest.raises(ValueError, match="same shape"):
        divergence_exact(bk, lambda y: y[:, :2], x)
    with pytest.raises(ValueError, match="batch axis"):
        divergence_exact(bk, f, arr(bk, np.ones(3)))
