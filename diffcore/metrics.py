"""Sample-quality measures that run offline: two-sample distances and a digits judge.

FID needs Inception weights (a download); nothing here does. Instead:

- :func:`energy_distance` and :func:`mmd_rbf` compare any two samples of points (N, D) -- the 2-D
  sets, flattened images, features. Both default to the V-statistic, which is the distance between
  the two *empirical* distributions: never negative, and for two samples of one distribution about
  c / n rather than 0. :func:`reference_distance` measures that floor (two disjoint data subsets of
  the sample size), the yardstick for "samples within k x the data-vs-data distance".
- :func:`kernel_distance` is KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
  MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / D + 1)^3; about 0 (either sign) for two
  samples of one distribution. :func:`pixel_kernel_distance` applies it to a user's images in pixel
  space (average-pooled when large).
- :class:`DigitsJudge` scores 8x8 digits (``diffcore.data.digits``) with a small scikit-learn
  classifier trained on the training digits at first use: confidence, class coverage, an
  Inception-score analogue, KID in the classifier's hidden features, and the near-copy fraction.

Everything is NumPy, float64, on host arrays (torch / JAX arrays are copied to NumPy). scikit-learn
(the ``data`` extra) is imported only by :class:`DigitsJudge`.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .checks import check_bool, check_int, check_positive, check_real

__all__ = [
    "energy_distance",
    "mmd_rbf",
    "median_bandwidth",
    "kernel_distance",
    "reference_distance",
    "pixel_kernel_distance",
    "DigitsJudge",
    "DIGITS_CLASSES",
]

#: number of digit classes (0..9)
DIGITS_CLASSES = 10
_BLOCK_ELEMENTS = 1 << 22  # pairwise blocks of at most ~4M entries (32 MB of float64)


# ------------------------------------------------------------------------------------ inputs
def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A host float64 copy of a NumPy / torch / JAX array (lists refused: say what was meant)."""
    if isinstance(x, (list, tuple)) or x is None or np.isscalar(x):
        raise TypeError(f"{name} must be an array (NumPy, torch or JAX); got {type(x).__name__}")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch: drop autograd, move to host
        x = x.detach().cpu()
    try:
        a = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic array types
        raise TypeError(f"{name} must be convertible to a NumPy array; got {type(x).__name__}: {exc}") from exc
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers; got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
    return a


def _points(x: Any, name: str, min_n: int = 2) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (N points, D dimensions); got shape {a.shape} "
            f"(flatten images first: x.reshape(len(x), -1))"
        )
    if a.shape[0] < min_n or a.shape[1] < 1:
        raise ValueError(f"{name} must hold at least {min_n} points of at least 1 dimension; got shape {a.shape}")
    return a


def _pair(x: Any, y: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = _points(x, "x", min_n), _points(y, "y", min_n)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same dimension D; got x of shape {a.shape} and y of shape {b.shape}")
    return a, b


# -------------------------------------------------------------------------- pairwise sums
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 for blocks of rows, clipped at 0 (the expanded form can round below)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def _kernel_sum(a: np.ndarray, b: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """sum_ij fn(a_block, b)[i, j], in row blocks so that N x M never sits in memory at once."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, b.shape[0]))
    total = 0.0
    for s in range(0, a.shape[0], rows):
        total += float(fn(a[s : s + rows], b).sum())
    return total


def _mmd_from_sums(kxx: float, kyy: float, kxy: float, diag_x: float, diag_y: float, n: int, m: int,
                   unbiased: bool) -> float:
    """MMD^2 from full kernel sums: U-statistic (diagonals removed) or V-statistic (kept)."""
    if unbiased:
        return (kxx - diag_x) / (n * (n - 1)) + (kyy - diag_y) / (m * (m - 1)) - 2.0 * kxy / (n * m)
    return kxx / n**2 + kyy / m**2 - 2.0 * kxy / (n * m)


# ------------------------------------------------------------------------------ distances
def energy_distance(x: Any, y: Any, unbiased: bool = False) -> float:
    """Szekely's energy distance E = 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples (N, D), (M, D).

    Default: the V-statistic (means over all pairs, self-pairs included), which is the energy
    distance between the two empirical distributions: >= 0, and for two samples of one distribution
    about (1/N + 1/M) E|X - X'| rather than 0 (:func:`reference_distance` measures it).
    ``unbiased=True``: the U-statistic (self-pairs left out of the within-sample means), unbiased
    for E and so about 0, of either sign, for one distribution. Euclidean norm; cost O(N M D).
    Szekely & Rizzo (2013), "Energy statistics: A class of statistics based on distances".
    """
    a, b = _pair(x, y)
    unbiased = check_bool(unbiased, "unbiased")
    dist = lambda p, q: np.sqrt(_sq_dists(p, q))  # noqa: E731
    n, m = a.shape[0], b.shape[0]
    exy = _kernel_sum(a, b, dist) / (n * m)
    # within-sample sums: the diagonal is 0 for a distance, so only the normaliser changes
    exx = _kernel_sum(a, a, dist) / (n * (n - 1) if unbiased else n * n)
    eyy = _kernel_sum(b, b, dist) / (m * (m - 1) if unbiased else m * m)
    return float(2.0 * exy - exx - eyy)


def median_bandwidth(x: Any, y: Any = None, max_points: int = 1000, seed: int = 0) -> float:
    """The median heuristic: median of the pairwise distances ||a - b|| (a != b) over x (and y) pooled.

    At most ``max_points`` points (a fixed random subset from ``seed``) enter the median. Fix it
    from the data once and pass it as ``bandwidth`` so that the samples-vs-data and the
    data-vs-data (:func:`reference_distance`) MMDs use one kernel. Gretton et al. (2012).
    """
    a = _points(x, "x")
    if y is not None:
        b = _points(y, "y")
        if b.shape[1] != a.shape[1]:
            raise ValueError(f"x and y must have the same dimension D; got x of shape {a.shape} and y of shape {b.shape}")
        a = np.concatenate([a, b])
    max_points = check_int(max_points, "max_points", 2)
    if a.shape[0] > max_points:
        rng = np.random.default_rng(np.random.SeedSequence(check_int(seed, "seed", 0)))
        a = a[rng.choice(a.shape[0], max_points, replace=False)]
    d = np.sqrt(_sq_dists(a, a))[np.triu_indices(a.shape[0], 1)]
    med = float(np.median(d))
    if not med > 0.0:
        raise ValueError("the median pairwise distance is 0 (more than half the points coincide); pass bandwidth= explicitly")
    return med


def mmd_rbf(x: Any, y: Any, bandwidth: float | None = None, unbiased: bool = False) -> float:
    """MMD^2 between samples (N, D), (M, D) with the Gaussian kernel k(a, b) = exp(-||a - b||^2 / (2 s^2)).

    ``bandwidth`` s defaults to the median heuristic on x and y pooled (:func:`median_bandwidth`);
    the kernel then depends on y, so pass a fixed s when comparing several MMDs. Default: the
    V-statistic (self-pairs kept; >= 0, about (1/N + 1/M)(1 - E k(X, X')) for one distribution);
    ``unbiased=True``: the U-statistic (about 0, either sign). Gretton et al. (2012), "A kernel
    two-sample test".
    """
    a, b = _pair(x, y)
    unbiased = check_bool(unbiased, "unbiased")
    s = median_bandwidth(a, b) if bandwidth is None else check_positive(bandwidth, "bandwidth")
    gamma = 1.0 / (2.0 * s * s)
    k = lambda p, q: np.exp(-gamma * _sq_dists(p, q))  # noqa: E731
    n, m = a.shape[0], b.shape[0]
    return float(_mmd_from_sums(_kernel_sum(a, a, k), _kernel_sum(b, b, k), _kernel_sum(a, b, k),
                                float(n), float(m), n, m, unbiased))


def kernel_distance(x: Any, y: Any, degree: int = 3, coef0: float = 1.0) -> float:
    """KID: the unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / D + coef0)^degree.

    About 0 (either sign) for two samples of one distribution. Binkowski et al. (2018),
    "Demystifying MMD GANs" (there in Inception features; here in any features you pass).
    """
    a, b = _pair(x, y)
    degree = check_int(degree, "degree", 1)
    coef0 = check_real(coef0, "coef0", 0.0, low_inclusive=True)
    D = a.shape[1]
    k = lambda p, q: (p @ q.T / D + coef0) ** degree  # noqa: E731
    dx = float(((a * a).sum(1) / D + coef0).__pow__(degree).sum())
    dy = float(((b * b).sum(1) / D + coef0).__pow__(degree).sum())
    n, m = a.shape[0], b.shape[0]
    return float(_mmd_from_sums(_kernel_sum(a, a, k), _kernel_sum(b, b, k), _kernel_sum(a, b, k), dx, dy, n, m, True))


_DISTANCES: dict[str, Callable[..., float]] = {
    "energy": energy_distance,
    "mmd_rbf": mmd_rbf,
    "kernel": kernel_distance,
}


def reference_distance(data: Any, n: int, seed: int = 0, distance: str | Callable[..., float] = "energy",
                       **options: Any) -> float:
    """The distance between two disjoint random subsets of ``data`` (N, D), each of ``n`` points.

    The yardstick for a sample of n points: what the same ``distance`` gives for n points of the
    data itself against n others (needs 2 n <= N). Subsets from SeedSequence(seed). ``distance``:
    "energy" (:func:`energy_distance`), "mmd_rbf" (pass ``bandwidth=`` fixed from the data, e.g.
    :func:`median_bandwidth`), "kernel" (:func:`kernel_distance`), or a callable ``f(x, y, **options)``.
    """
    d = _points(data, "data")
    N = d.shape[0]
    n = check_int(n, "n", 2)
    if 2 * n > N:
        raise ValueError(f"n must be at most N // 2 = {N // 2} (two disjoint subsets of the {N} data points); got {n}")
    fn = _DISTANCES.get(distance) if isinstance(distance, str) else distance
    if fn is None or not callable(fn):
        raise ValueError(f"distance must be one of {sorted(_DISTANCES)} or a callable f(x, y); got {distance!r}")
    perm = np.random.default_rng(np.random.SeedSequence(check_int(seed, "seed", 0))).permutation(N)
    return float(fn(d[perm[:n]], d[perm[n : 2 * n]], **options))


def _pool_images(a: np.ndarray, max_side: int) -> np.ndarray:
    """Average-pool (N, C, H, W) by the integer factor f = ceil(max(H, W) / max_side) (edges cropped)."""
    H, W = a.shape[2], a.shape[3]
    f = math.ceil(max(H, W) / max_side)
    if f <= 1:
        return a
    h, w = H // f, W // f
    a = a[:, :, : h * f, : w * f]
    return a.reshape(a.shape[0], a.shape[1], h, f, w, f).mean(axis=(3, 5))


def pixel_kernel_distance(samples: Any, data: Any, max_side: int = 32, max_points: int = 2000,
                          seed: int = 0) -> float:
    """KID in pixel space: :func:`kernel_distance` between flattened images (N, C, H, W) (or points (N, D)).

    Images larger than ``max_side`` pixels on a side are average-pooled by the integer factor
    ceil(max(H, W) / max_side) first (a 64x64 image becomes 32x32); each side keeps at most
    ``max_points`` examples (a fixed random subset from ``seed``). For a user's own images, where
    no trained feature extractor exists; it sees colours and layout, not content.
    """
    a, b = _to_numpy(samples, "samples"), _to_numpy(data, "data")
    if a.ndim not in (2, 4) or b.ndim != a.ndim:
        raise ValueError(
            f"samples and data must both be images (N, C, H, W) or both points (N, D); "
            f"got samples of shape {a.shape} and data of shape {b.shape}"
        )
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"samples and data must have one example shape; got samples {a.shape[1:]} and data {b.shape[1:]}")
    max_side = check_int(max_side, "max_side", 1)
    max_points = check_int(max_points, "max_points", 2)
    rng = np.random.default_rng(np.random.SeedSequence(check_int(seed, "seed", 0)))
    if a.shape[0] > max_points:
        a = a[np.sort(rng.choice(a.shape[0], max_points, replace=False))]
    if b.shape[0] > max_points:
        b = b[np.sort(rng.choice(b.shape[0], max_points, replace=False))]
    if a.ndim == 4:
        a, b = _pool_images(a, max_side), _pool_images(b, max_side)
    return kernel_distance(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))


# ---------------------------------------------------------------------------- digits judge
@dataclass(frozen=True)
class _Fitted:
    """A trained judge: the classifier and the real-digit statistics it is compared against."""

    classifier: Any
    train: np.ndarray  # (1500, 64) training digits in [-1, 1]
    held_out: np.ndarray  # (297, 64) held-out digits
    held_out_labels: np.ndarray
    held_out_features: np.ndarray  # hidden features of the held-out digits
    held_out_nn: np.ndarray  # distance of each held-out digit to its nearest training digit
    accuracy: float  # held-out accuracy of the classifier


_FITTED: dict[tuple, _Fitted] = {}
_FIT_LOCK = threading.Lock()


def _nearest_distance(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``a`` to its nearest row of ``ref`` (row blocks)."""
    rows = max(1, _BLOCK_ELEMENTS // ref.shape[0])
    out = np.empty(a.shape[0])
    for s in range(0, a.shape[0], rows):
        out[s : s + rows] = np.sqrt(_sq_dists(a[s : s + rows], ref).min(1))
    return out


class DigitsJudge:
    """Scores generated 8x8 digits (N, 1, 8, 8) in [-1, 1] against ``diffcore.data.digits``.

    A scikit-learn ``MLPClassifier`` (one hidden ReLU layer of ``hidden`` units, L-BFGS, L2
    penalty alpha = 1, 200 iterations, initialised from ``seed``) is
    trained on the training digits at first use (a second or two) and kept in memory for the
    process (shared by judges of the same settings; never written to disk). Samples are clipped
    to [-1, 1] first. :meth:`evaluate` gives:

    - ``confidence``: mean over samples of max_y p(y|x);
    - ``coverage``: (number of classes predicted for at least one sample with
      max_y p(y|x) >= ``confident``) / 10;
    - ``inception_score``: exp(E_x KL(p(y|x) || p(y))), p(y) = the mean of p(y|x) over the batch
      (Salimans et al. 2016, with this classifier in place of Inception): 1 to 10;
    - ``kernel_distance``: KID (:func:`kernel_distance`, cubic kernel) between the hidden-layer
      features of the samples and of the held-out real digits (Binkowski et al. 2018);
    - ``copy_fraction``: the fraction of samples whose nearest training digit (Euclidean, in
      [-1, 1] pixels) is closer than the threshold tau = the ``copy_quantile`` quantile (default
      0.05) of the same nearest-training distance over the held-out digits. So real unseen digits
      score about ``copy_quantile`` by construction, exact training images 1.0, noise 0; a model
      that memorises its training set scores well above ``copy_quantile``.

    :meth:`reference_values` gives the yardsticks: real held-out digits and uniform noise.
    """

    def __init__(self, hidden: int = 64, held_out: int = 297, split_seed: int = 0, seed: int = 0,
                 confident: float = 0.9, copy_quantile: float = 0.05):
        self.hidden = check_int(hidden, "hidden", 1)
        self.held_out = check_int(held_out, "held_out", 20)
        self.split_seed = check_int(split_seed, "split_seed", 0)
        self.seed = check_int(seed, "seed", 0)
        self.confident = check_real(confident, "confident", 0.0, 1.0, high_inclusive=True)
        self.copy_quantile = check_real(copy_quantile, "copy_quantile", 0.0, 1.0, low_inclusive=True, high_inclusive=True)

    # ---------------------------------------------------------------------------- training
    def _fitted(self) -> _Fitted:
        key = (self.hidden, self.held_out, self.split_seed, self.seed)
        with _FIT_LOCK:
            if key not in _FITTED:
                _FITTED[key] = self._fit()
            return _FITTED[key]

    def _fit(self) -> _Fitted:
        from .data import _require, digits

        _require("sklearn", "DigitsJudge (a classifier trained on the digits)")
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        ds = digits(held_out=self.held_out, split_seed=self.split_seed)
        train = ds.data.reshape(len(ds), -1)
        held = ds.held_out.data.reshape(len(ds.held_out), -1)
        # L-BFGS (deterministic, no minibatches) with a strong L2 penalty: alpha = 1 keeps the
        # classifier from being confident on noise (0.64 on uniform noise vs 0.96 on real digits)
        clf = MLPClassifier(hidden_layer_sizes=(self.hidden,), solver="lbfgs", alpha=1.0, max_iter=200,
                            tol=1e-6, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(train, ds.labels)
        fitted = _Fitted(
            classifier=clf,
            train=train,
            held_out=held,
            held_out_labels=ds.held_out.labels,
            held_out_features=_hidden(clf, held),
            held_out_nn=_nearest_distance(held, train),
            accuracy=float((clf.predict(held) == ds.held_out.labels).mean()),
        )
        return fitted

    @property
    def accuracy(self) -> float:
        """The classifier's accuracy on the held-out digits (trains it if needed)."""
        return self._fitted().accuracy

    @property
    def copy_threshold(self) -> float:
        """tau: the ``copy_quantile`` quantile of held-out-to-nearest-training-digit distances."""
        return float(np.quantile(self._fitted().held_out_nn, self.copy_quantile))

    # ------------------------------------------------------------------------------ inputs
    @staticmethod
    def _flat(samples: Any, name: str = "samples") -> np.ndarray:
        a = _to_numpy(samples, name)
        if a.ndim != 4 or a.shape[1:] != (1, 8, 8) or a.shape[0] < 2:
            raise ValueError(
                f"{name} must be 8x8 digits of shape (N, 1, 8, 8) with N >= 2, values in [-1, 1]; got shape {a.shape}"
            )
        return np.clip(a, -1.0, 1.0).reshape(a.shape[0], 64)

    # ----------------------------------------------------------------------------- scores
    def probabilities(self, samples: Any) -> np.ndarray:
        """p(y|x): (N, 10) class probabilities of the classifier."""
        return self._fitted().classifier.predict_proba(self._flat(samples))

    def features(self, samples: Any) -> np.ndarray:
        """(N, hidden) hidden-layer activations relu(x W1 + b1) of the classifier."""
        return _hidden(self._fitted().classifier, self._flat(samples))

    def evaluate(self, samples: Any, real: Any = None) -> dict[str, float]:
        """All scores of a batch (see the class docstring); ``real`` (N, 1, 8, 8) replaces the
        held-out digits as the KID reference (used by :meth:`reference_values`)."""
        f = self._fitted()
        x = self._flat(samples)
        p = f.classifier.predict_proba(x)
        conf = p.max(1)
        confident_classes = np.unique(p.argmax(1)[conf >= self.confident])
        py = p.mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(p > 0, p * (np.log(p) - np.log(py)), 0.0).sum(1)
        real_features = f.held_out_features if real is None else _hidden(f.classifier, self._flat(real, "real"))
        return {
            "confidence": float(conf.mean()),
            "coverage": len(confident_classes) / DIGITS_CLASSES,
            "inception_score": float(np.exp(kl.mean())),
            "kernel_distance": kernel_distance(_hidden(f.classifier, x), real_features),
            "copy_fraction": float((_nearest_distance(x, f.train) < self.copy_threshold).mean()),
        }

    def reference_values(self, n: int | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
        """Scores of real and of noise: {"real": ..., "noise": ..., "train": ...}.

        "real": one half of the held-out digits scored against the other half as KID reference;
        "noise": ``n`` (default: half the held-out count) uniform draws on [-1, 1]^64;
        "train": ``n`` training digits (copy_fraction 1 by definition; confidence inflated, the
        classifier saw them). From SeedSequence(seed).
        """
        f = self._fitted()
        half = f.held_out.shape[0] // 2
        n = half if n is None else check_int(n, "n", 2)
        rng = np.random.default_rng(np.random.SeedSequence(check_int(seed, "seed", 0)))
        perm = rng.permutation(f.held_out.shape[0])
        img = lambda a: a.reshape(-1, 1, 8, 8)  # noqa: E731
        a, b = img(f.held_out[perm[:half]]), img(f.held_out[perm[half:]])
        noise = rng.uniform(-1.0, 1.0, size=(n, 1, 8, 8))
        train = img(f.train[rng.choice(f.train.shape[0], min(n, f.train.shape[0]), replace=False)])
        return {
            "real": self.evaluate(a, real=b),
            "noise": self.evaluate(noise, real=b),
            "train": self.evaluate(train, real=b),
        }


def _hidden(clf: Any, x: np.ndarray) -> np.ndarray:
    """relu(x W1 + b1): the first hidden layer of a fitted MLPClassifier (ReLU activation)."""
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0.0)


if __name__ == "__main__":  # pragma: no cover - prints the reference values of the docs
    import time

    t0 = time.perf_counter()
    judge = DigitsJudge()
    acc = judge.accuracy
    t1 = time.perf_counter()
    print(f"DigitsJudge: trained in {t1 - t0:.2f} s, held-out accuracy {acc:.4f}, copy threshold tau = {judge.copy_threshold:.4f}")
    for kind, scores in judge.reference_values().items():
        print(f"{kind:>5}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
