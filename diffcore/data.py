"""Data with no network: built-in 2-D sets, the 8x8 digits, and a user's own images or arrays.

Everything here runs offline. The 2-D sets are NumPy functions of ``(n, seed)``; the digits come
from inside the scikit-learn package (``sklearn.datasets.load_digits``, no download); a user's data
is a folder of PNG/JPEG images (Pillow), a ``.npy``/``.npz`` array (never unpickled) or the CIFAR-10
binary batches (read as bytes). scikit-learn and Pillow are optional (the ``data`` extra) and are
imported only by the loaders that need them.

Images with L intensity levels map to [-1, 1] by x = k / ((L - 1) / 2) - 1 = 2 k / (L - 1) - 1,
with the exact inverse k = round((x + 1) (L - 1) / 2) (:func:`to_unit`, :func:`to_levels`).
Uniform dequantisation spreads level k over its bin [2 k / L - 1, 2 (k + 1) / L - 1):
y = ((x + 1) (L - 1) / 2 + u) / (L / 2) - 1, u ~ U[0, 1) (:func:`dequantize`), and a density on y
gives bits of the L-level data after adding log2(L / 2) bits/dim (:func:`bits_per_dim_offset`).
For L = 256 these are, operation for operation, ``diffcore.likelihood.dequantize`` and its +7.

Training order is a pure function of (seed, position): :func:`epoch_order` permutes one epoch,
:func:`batch_indices` slices the batch that starts at a global example position (see its docstring
for the drop-last rule), so a run resumes from any position with no other state.

The level maps and the dequantisation are written against the Array API (any namespace); loaders
and the order functions return NumPy.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._array import array_device, array_namespace, check_float_array, check_same_shape, concrete_min_max, default_dtype
from .analytic import GaussianMixture
from .checks import check_int, check_unit_range

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "two_moons",
    "swiss_roll",
    "checkerboard",
    "eight_gaussians",
    "gaussian_mixture",
    "DEFAULT_MIXTURE",
    "EIGHT_GAUSSIANS",
    "digits",
    "load_image_folder",
    "load_array",
    "load_cifar10",
    "split_held_out",
    "to_unit",
    "to_levels",
    "dequantize",
    "bits_per_dim_offset",
    "epoch_order",
    "batch_indices",
    "batches_per_epoch",
]

#: suffixes read as images by :func:`load_image_folder` (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Pillow modes taken as they are; "P" (palette) is converted to RGB
IMAGE_MODES = ("L", "RGB")
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
_CIFAR_NAME = re.compile(r"^(data_batch_(\d+)|test_batch)\.bin$")
_MAX_EPOCH = 2**32  # SeedSequence((seed, epoch)) is one-to-one while the epoch fits one 32-bit word


# ------------------------------------------------------------------------------------- record
@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset held in memory.

    Attributes:
        data: (N, *shape) array: float in [-1, 1] for images (levels given), raw float64 otherwise.
        levels: number of intensity levels L of quantised data (256 for 8-bit images, 17 for the
            digits), or None for continuous data.
        shape: the shape of one example, e.g. (2,) or (C, H, W).
        name: the built-in name or the path the data came from.
        held_out: a held-out split (a Dataset without a further split), or None.
        labels: (N,) int64 class labels where the source has them (digits, CIFAR-10), else None.
        mixture: the exact :class:`~diffcore.analytic.GaussianMixture` the data were sampled
            from (``gaussian_mixture``, ``eight_gaussians``), else None.
    """

    data: np.ndarray
    levels: int | None
    shape: tuple[int, ...]
    name: str
    held_out: "Dataset | None" = None
    labels: np.ndarray | None = None
    mixture: GaussianMixture | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def num_dims(self) -> int:
        """Values per example (D in bits/dim)."""
        return math.prod(self.shape)

    def batch(self, batch_size: int, seed: int, position: int) -> np.ndarray:
        """The examples of the batch starting at global example ``position`` (:func:`batch_indices`)."""
        return self.data[batch_indices(len(self), batch_size, seed, position)]

    def __repr__(self) -> str:
        held = f", held_out={len(self.held_out)}" if self.held_out is not None else ""
        return f"Dataset({self.name!r}, N={len(self)}, shape={self.shape}, levels={self.levels}{held})"


def _dataset(data: np.ndarray, levels: int | None, name: str, **extra: Any) -> Dataset:
    return Dataset(data=data, levels=levels, shape=tuple(int(s) for s in data.shape[1:]), name=name, **extra)


# ------------------------------------------------------------------------------ small checks
def _check_int(value: Any, name: str, low: int, what: str = "") -> int:
    return check_int(value, name, low)


def _check_seed(seed: Any, name: str = "seed") -> int:
    return _check_int(seed, name, 0, " (a non-negative seed)")


def _check_levels(levels: Any) -> int:
    return _check_int(levels, "levels", 2, " (the number of intensity levels L)")


def _require(module: str, purpose: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    package = {"PIL": "Pillow", "sklearn": "scikit-learn"}[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs {package}, which is not installed: pip install 'diffcore[data]' (or pip install {package})"
        ) from exc


# --------------------------------------------------------------------- levels <-> [-1, 1]
def _as_array(x: Any) -> Any:
    try:
        array_namespace(x)
        return x
    except TypeError:
        return np.asarray(x)


def to_unit(k: Any, levels: int, dtype: Any = None) -> Any:
    """Integer levels k in 0..L-1 -> x = k / ((L - 1) / 2) - 1 = 2 k / (L - 1) - 1 in [-1, 1].

    Exact inverse: :func:`to_levels`. For L = 256 this is the usual pixel / 127.5 - 1. ``k`` is an
    integer array of any Array API namespace (or anything NumPy converts); ``dtype`` defaults to
    the namespace's default real floating dtype (float64 for NumPy).
    """
    L = _check_levels(levels)
    k = _as_array(k)
    xp = array_namespace(k)
    if not xp.isdtype(k.dtype, "integral"):
        raise TypeError(f"k must be an integer array of levels 0..{L - 1}; got dtype {k.dtype}")
    lo_hi = concrete_min_max(k)
    if lo_hi is not None:
        lo, hi = (int(v) for v in lo_hi)
        if lo < 0 or hi > L - 1:
            raise ValueError(f"k must hold levels in 0..{L - 1} (levels = {L}); got values from {lo} to {hi}")
    dtype = default_dtype(xp, "real floating", array_device(k)) if dtype is None else dtype
    return xp.astype(k, dtype) / ((L - 1) / 2) - 1.0


def _np_to_unit(k: np.ndarray, levels: int, dtype: Any) -> np.ndarray:
    """:func:`to_unit` for the NumPy loaders, in place: the same operations, one float array in memory."""
    L = _check_levels(levels)
    lo, hi = int(k.min()), int(k.max())
    if lo < 0 or hi > L - 1:  # pragma: no cover - callers check their own ranges first
        raise ValueError(f"levels must lie in 0..{L - 1}; got values from {lo} to {hi}")
    out = k.astype(np.dtype(dtype))
    np.divide(out, (L - 1) / 2, out=out)
    np.subtract(out, 1.0, out=out)
    return out


def to_levels(x: Any, levels: int, clip: bool = False) -> Any:
    """x in [-1, 1] -> integer level k = round((x + 1) (L - 1) / 2), int64 (the inverse of :func:`to_unit`).

    ``to_levels(to_unit(k, L), L) == k`` exactly. Values outside [-1, 1] are an error unless
    ``clip=True`` (for model samples), which clips to [-1, 1] first.
    """
    L = _check_levels(levels)
    x = _as_array(x)
    xp = check_float_array(x, "x")
    if clip:
        x = xp.clip(x, -1.0, 1.0)
    else:
        check_unit_range(x, "x", f"to map to {L} levels", " (pass clip=True to clip model samples first)")
    return xp.astype(xp.round((x + 1.0) * ((L - 1) / 2)), xp.int64)


def dequantize(x: Any, u: Any, levels: int = 256) -> Any:
    """Uniform dequantisation of L-level data in [-1, 1]: y = ((x + 1) (L - 1) / 2 + u) / (L / 2) - 1.

    ``u`` ~ U[0, 1) of x's shape. Level k goes to (k + u) 2 / L - 1, uniform over its bin
    [2 k / L - 1, 2 (k + 1) / L - 1); the L bins of width 2 / L tile [-1, 1) (in floating point a
    u within an ulp or so of 1 can round onto the bin's upper edge). For L = 256 the
    operations are those of ``diffcore.likelihood.dequantize`` ((x + 1) 127.5 + u) / 128 - 1.
    Add :func:`bits_per_dim_offset` (L) to the bits/dim of a density on y.
    """
    L = _check_levels(levels)
    check_float_array(x, "x")
    check_float_array(u, "u")
    check_same_shape(x, u, "x", "u")
    check_unit_range(x, "x", "(L-level data from to_unit)")
    lo_hi = concrete_min_max(u)
    if lo_hi is not None and not (float(lo_hi[0]) >= 0.0 and float(lo_hi[1]) < 1.0):
        raise ValueError(f"u must hold uniform draws in [0, 1); got values from {float(lo_hi[0]):g} to {float(lo_hi[1]):g}")
    return ((x + 1.0) * ((L - 1) / 2) + u) / (L / 2) - 1.0


def bits_per_dim_offset(levels: int) -> float:
    """log2(L / 2) = -log2(2 / L): bits/dim to add to a density on dequantised L-level data in [-1, 1].

    A bin has width 2 / L, so -log2 P(bin) = -log2 p(y) - log2(2 / L) per dimension. 7.0 for
    L = 256 (``diffcore.likelihood.DEQUANT_OFFSET_BITS``), log2(8.5) ~ 3.087 for the 17-level
    digits, 0 for binary data.
    """
    return math.log2(_check_levels(levels) / 2)


# ----------------------------------------------------------------------------- data order
def batches_per_epoch(num_examples: int, batch_size: int) -> int:
    """floor(N / B): full batches per epoch (drop-last: the N mod B examples left over are skipped)."""
    N = _check_int(num_examples, "num_examples", 1)
    B = _check_int(batch_size, "batch_size", 1)
    if B > N:
        raise ValueError(f"batch_size = {B} is larger than the data ({N} examples); it must be in 1..{N}")
    return N // B


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of 0..N-1 for one epoch, int64, from ``SeedSequence((seed, epoch))``.

    A pure function: the same (N, seed, epoch) always give the same order, on every machine.
    """
    N = _check_int(num_examples, "num_examples", 1)
    seed = _check_seed(seed)
    epoch = _check_int(epoch, "epoch", 0)
    if epoch >= _MAX_EPOCH:
        raise ValueError(f"epoch must be < 2**32; got {epoch}")
    rng = np.random.default_rng(np.random.SeedSequence((seed, epoch)))
    return rng.permutation(N).astype(np.int64)


def batch_indices(num_examples: int, batch_size: int, seed: int, position: int) -> np.ndarray:
    """Indices of the batch that starts at global example ``position``, int64 of shape (B,).

    The training stream is the concatenation over epochs e = 0, 1, ... of
    ``epoch_order(N, seed, e)[:E]`` with E = floor(N / B) B examples per epoch (drop-last: each
    epoch skips the N mod B examples at the end of its permutation, so every batch holds B
    distinct examples). The batch at ``position`` p is stream[p : p + B]: epoch p // E from offset
    p % E. A run that has consumed p examples (p = steps * B) resumes exactly by asking for
    position p; nothing but (seed, position) needs saving. Positions that are not multiples of B
    are allowed; a batch that crosses an epoch's end continues into the next epoch's order.
    """
    per_epoch = batches_per_epoch(num_examples, batch_size) * batch_size
    position = _check_int(position, "position", 0, " (examples consumed so far)")
    N, B = int(num_examples), int(batch_size)
    epoch, offset = divmod(position, per_epoch)
    idx = epoch_order(N, seed, epoch)[offset : min(offset + B, per_epoch)]
    if idx.shape[0] < B:
        idx = np.concatenate([idx, epoch_order(N, seed, epoch + 1)[: B - idx.shape[0]]])
    return idx


# ------------------------------------------------------------------------------ 2-D sets
def _rng(seed: int, stream: int = 0) -> np.random.Generator:
    """Training draws use SeedSequence(seed); held-out draws spawn_key=(1,): independent streams."""
    seed = _check_seed(seed)
    key = () if stream == 0 else (stream,)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _check_n(n: Any) -> int:
    return _check_int(n, "n", 1, " (the number of points)")


def _check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number (a standard deviation); got {noise!r}")
    return float(noise)


def _two_moons(n: int, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    noise = _check_noise(noise)
    t = np.pi * rng.random(n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return 1.5 * (pts - np.array([0.5, 0.25]))


def two_moons(n: int, seed: int = 0, noise: float = 0.1) -> np.ndarray:
    """Two interleaved half circles, (n, 2) float64.

    scikit-learn's moons with random angles: each point picks a moon with probability 1/2 and an
    angle t ~ U[0, pi]: (cos t, sin t) or (1 - cos t, 1/2 - sin t); Gaussian noise of std
    ``noise`` is added, then the points are centred at (0.5, 0.25) and scaled by 1.5 (noise-free:
    x in [-2.25, 2.25], y in [-1.125, 1.125]; stds about 1.31 and 0.75 with the default noise).
    """
    return _two_moons(_check_n(n), _rng(seed), noise)


def _swiss_roll(n: int, rng: np.random.Generator, noise: float = 0.5) -> np.ndarray:
    noise = _check_noise(noise)
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    pts = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + noise * rng.standard_normal((n, 2))
    return pts / 5.0


def swiss_roll(n: int, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    """A 2-D spiral (scikit-learn's swiss roll seen along its axis), (n, 2) float64.

    t ~ U[1.5 pi, 4.5 pi], (t cos t, t sin t) plus Gaussian noise of std ``noise``, divided by 5:
    within about [-2, 3] per axis, stds about 1.35.
    """
    return _swiss_roll(_check_n(n), _rng(seed), noise)


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # the 8 dark squares of a 4 x 4 board of unit squares on [-2, 2]^2: (col + row) even
    cells = np.array([(c, r) for r in range(4) for c in range(4) if (c + r) % 2 == 0], dtype=np.float64)
    corner = cells[rng.integers(0, 8, size=n)] - 2.0
    return corner + rng.random((n, 2))


def checkerboard(n: int, seed: int = 0) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4 x 4 checkerboard on [-2, 2]^2, (n, 2) float64.

    Square (col, row) with (col + row) even; mean 0, variance 4/3 per axis. The density is
    1/8 on the dark squares and 0 elsewhere (no smooth score).
    """
    return _checkerboard(_check_n(n), _rng(seed))


#: Eight equal isotropic Gaussians (std 0.2) on the circle of radius 2, at angles 0, 45, ..., 315 degrees.
EIGHT_GAUSSIANS = GaussianMixture(
    np.full(8, 1.0 / 8.0),
    2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1),
    np.full(8, 0.2),
)

#: The default 2-D mixture: three anisotropic components of unequal weight (exact score and density known).
DEFAULT_MIXTURE = GaussianMixture(
    np.array([0.5, 0.3, 0.2]),
    np.array([[-1.0, -0.5], [1.0, -0.25], [0.0, 1.25]]),
    np.array([[0.4, 0.25], [0.3, 0.5], [0.5, 0.2]]),
)


def _mixture_sample(mixture: GaussianMixture, n: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal((n, mixture.dim))
    u = rng.random(n)
    return np.asarray(mixture.sample(noise, u), dtype=np.float64)


def gaussian_mixture(n: int, seed: int = 0, mixture: GaussianMixture | None = None) -> tuple[np.ndarray, GaussianMixture]:
    """Exact samples of a Gaussian mixture and the mixture itself: ((n, D) float64, mixture).

    ``mixture`` defaults to :data:`DEFAULT_MIXTURE` (2-D). The mixture gives the exact density,
    score and the score under any process (``mixture.marginal_score(x, t, process)``,
    ``mixture.as_model(process)``), to compare a trained model against.
    """
    mixture = DEFAULT_MIXTURE if mixture is None else mixture
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a diffcore.analytic.GaussianMixture; got {type(mixture).__name__}")
    return _mixture_sample(mixture, _check_n(n), _rng(seed)), mixture


def eight_gaussians(n: int, seed: int = 0) -> np.ndarray:
    """Samples of :data:`EIGHT_GAUSSIANS` (8 modes of std 0.2 on the circle of radius 2), (n, 2) float64."""
    return _mixture_sample(EIGHT_GAUSSIANS, _check_n(n), _rng(seed))


def _toy_loader(name: str, sample: Callable[..., np.ndarray], mixture: GaussianMixture | None = None) -> Callable[..., Dataset]:
    own_options = list(inspect.signature(sample).parameters)[2:]  # after (n, rng)

    def load(n: int = 10_000, seed: int = 0, held_out: int = 1_000, **options: Any) -> Dataset:
        n = _check_n(n)
        held_out = _check_int(held_out, "held_out", 0, " (held-out points; 0 for none)")
        unknown = sorted(set(options) - set(own_options))
        if unknown:
            raise TypeError(f"dataset {name!r} takes the options {['n', 'seed', 'held_out', *own_options]}; got {unknown}")
        mix = mixture
        if name == "gaussian_mixture":  # the mixture the points come from, given or the default
            mix = options.get("mixture") or DEFAULT_MIXTURE

        def draw(count: int, stream: int) -> np.ndarray:
            return sample(count, _rng(seed, stream), **options)

        held = _dataset(draw(held_out, 1), None, f"{name} (held out)", mixture=mix) if held_out else None
        return _dataset(draw(n, 0), None, name, held_out=held, mixture=mix)

    load.__name__ = f"load_{name}"
    load.__doc__ = (
        f"The built-in 2-D set {name!r} as a Dataset: ``n`` points from SeedSequence(seed) and ``held_out`` "
        f"points from an independent stream (SeedSequence(seed, spawn_key=(1,))); other options go to {name}()."
    )
    return load


def _gm_sample(n: int, rng: np.random.Generator, mixture: GaussianMixture | None = None) -> np.ndarray:
    mixture = DEFAULT_MIXTURE if mixture is None else mixture
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a diffcore.analytic.GaussianMixture; got {type(mixture).__name__}")
    return _mixture_sample(mixture, n, rng)


# ---------------------------------------------------------------------------------- digits
def digits(held_out: int = 297, split_seed: int = 0, dtype: Any = np.float64) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (shipped inside the package: no download), 17 levels.

    1797 images (N, 1, 8, 8) with intensities 0..16, mapped to [-1, 1] by :func:`to_unit` with
    L = 17, with their labels. A fixed permutation from SeedSequence(split_seed) puts ``held_out``
    images (default 297, leaving 1500 for training) in the held-out split; both splits keep the
    original order. Bits/dim on these are bits of 17-level data (offset log2(8.5)), not
    comparable with 8-bit numbers.
    """
    datasets = _require("sklearn", "the digits dataset").datasets
    held_out = _check_int(held_out, "held_out", 0, " (held-out images; 0 for none)")
    split_seed = _check_seed(split_seed, "split_seed")
    bunch = datasets.load_digits()
    images = np.asarray(bunch.images)
    levels = np.rint(images).astype(np.int64)
    if not np.array_equal(levels, images) or levels.min() < 0 or levels.max() > 16:  # pragma: no cover - sklearn's data
        raise RuntimeError("sklearn.datasets.load_digits() no longer holds integer intensities 0..16")
    x = _np_to_unit(levels[:, None], 17, dtype)
    labels = np.asarray(bunch.target, dtype=np.int64)
    N = x.shape[0]
    if held_out >= N:
        raise ValueError(f"held_out must be < {N} (the digits have {N} images); got {held_out}")
    perm = np.random.default_rng(np.random.SeedSequence(split_seed)).permutation(N)
    test = np.sort(perm[N - held_out :])
    train = np.sort(perm[: N - held_out])
    held = _dataset(x[test], 17, "digits (held out)", labels=labels[test]) if held_out else None
    return _dataset(x[train], 17, "digits", held_out=held, labels=labels[train])


# ------------------------------------------------------------------------------ user data
def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset path {str(p)!r} does not exist")
    return p


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _raw_mode(tile: Any) -> str:
    """The raw (file) mode of a Pillow tile, e.g. 'RGB;16B' for a 16-bit RGB PNG."""
    args = tile[3]
    return str(args[0] if isinstance(args, tuple) and args else args)


def load_image_folder(path: Any, dtype: Any = np.float64) -> Dataset:
    """A folder of PNG/JPEG images of one size -> (N, C, H, W) in [-1, 1], 256 levels.

    Files ending in .png/.jpg/.jpeg (any case) directly in ``path`` are read in sorted name order;
    other files and subfolders are ignored. Modes: "L" (C = 1) and "RGB" (C = 3), all images the
    same; palette images ("P") are converted to RGB. Anything else (16-bit "I;16", "I", "F",
    bilevel "1", alpha "LA"/"RGBA"/"PA", "CMYK", ...) is refused, naming the file and its mode, and
    so are 16-bit RGB PNGs, which Pillow opens as "RGB" by dropping the low byte.
    """
    PIL = _require("PIL", "loading a folder of images")
    from PIL import Image

    folder = _check_path(path)
    if not folder.is_dir():
        raise NotADirectoryError(f"path {str(folder)!r} must be a directory of .png/.jpg/.jpeg images")
    files = _image_files(folder)
    if not files:
        raise ValueError(f"dataset directory {str(folder)!r} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    arrays, first = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                mode, size = im.mode, im.size
                if mode == "P":
                    im = im.convert("RGB")
                    mode = "RGB"
                elif mode not in IMAGE_MODES:
                    raise ValueError(
                        f"image {str(f)!r} has mode {im.mode!r}, which this loader does not take: it reads 8-bit "
                        f"'L' (greyscale) and 'RGB' images (and converts palette 'P' to RGB); convert the file "
                        f"first (16-bit and alpha channels are not dropped silently)"
                    )
                elif any(";16" in _raw_mode(t) for t in (im.tile or ())):  # Pillow keeps the high byte only
                    raise ValueError(
                        f"image {str(f)!r} has 16 bits per channel (mode {im.mode!r}, stored as "
                        f"{_raw_mode(im.tile[0])!r}); this loader takes 8-bit 'L' and 'RGB' images only and will "
                        f"not drop the low byte silently: convert the file to 8 bits first"
                    )
                arr = np.asarray(im, dtype=np.uint8)
        except (PIL.UnidentifiedImageError, OSError) as exc:  # not an image, or a truncated one
            raise ValueError(f"file {str(f)!r} is not an image Pillow can read: {exc}") from exc
        if first is None:
            first = (f, mode, size)
        elif size != first[2]:
            raise ValueError(
                f"images must all have one size: {str(first[0])!r} is {first[2][0]}x{first[2][1]} "
                f"(width x height) but {str(f)!r} is {size[0]}x{size[1]}"
            )
        elif mode != first[1]:
            raise ValueError(
                f"images must all have one mode: {str(first[0])!r} is {first[1]!r} but {str(f)!r} is {mode!r} "
                f"(after converting palette images to RGB)"
            )
        arrays.append(arr)
    k = np.stack(arrays)
    k = k[:, None] if k.ndim == 3 else np.ascontiguousarray(np.transpose(k, (0, 3, 1, 2)))
    return _dataset(_np_to_unit(k, 256, dtype), 256, str(folder))


def load_array(path: Any, key: str | None = None, levels: int | None = None, layout: str = "NCHW",
               dtype: Any = np.float64) -> Dataset:
    """A .npy or .npz array of N examples (first axis), read with allow_pickle=False.

    ``key`` picks an array of an .npz (optional when it holds exactly one). Values:
    - ``levels=None``: float arrays are continuous data, kept as float64 (``levels`` None);
      uint8 arrays are 8-bit images (256 levels), mapped to [-1, 1]; other integer arrays need
      ``levels``.
    - ``levels=L``: the array holds integer levels 0..L-1 (any real dtype), mapped to [-1, 1].
    ``layout="NHWC"`` transposes a 4-D image array to NCHW.
    """
    p = _check_path(path)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".npz") or not p.is_file():
        raise ValueError(f"path {str(p)!r} must be a .npy or .npz file")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays, or not a NumPy file
        raise ValueError(f"{str(p)!r} is not a NumPy array file readable without pickle: {exc}") from exc
    name = str(p)
    if suffix == ".npz":
        with loaded:
            keys = list(loaded.files)
            if key is None:
                if len(keys) != 1:
                    raise ValueError(
                        f"{str(p)!r} holds {len(keys)} arrays {keys}; pass key= one of them"
                        if keys else f"{str(p)!r} holds no arrays"
                    )
                key = keys[0]
            elif key not in keys:
                raise ValueError(f"key {key!r} is not in {str(p)!r}; its arrays are {keys}")
            try:
                arr = loaded[key]
            except ValueError as exc:
                raise ValueError(f"array {key!r} of {str(p)!r} cannot be read without pickle: {exc}") from exc
        name = f"{p}:{key}"
    else:
        if key is not None:
            raise ValueError(f"key is only for .npz files; {str(p)!r} is a .npy file")
        arr = loaded
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise ValueError(f"{name!r} must hold N >= 1 examples along its first axis; got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name!r} must hold real numbers (integer or float); got dtype {arr.dtype}")
    if layout == "NHWC":
        if arr.ndim != 4:
            raise ValueError(f"layout='NHWC' needs a 4-D array (N, H, W, C); {name!r} has shape {arr.shape}")
        arr = np.ascontiguousarray(np.transpose(arr, (0, 3, 1, 2)))
    if levels is None and arr.dtype == np.uint8:
        levels = 256
    if levels is None:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"{name!r} holds integers of dtype {arr.dtype}: pass levels= (the number of intensity levels L, "
                f"values 0..L-1), or store floats for continuous data"
            )
        data = arr.astype(np.float64)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{name!r} holds NaN or infinite values")
        return _dataset(data, None, name)
    L = _check_levels(levels)
    k = np.rint(arr) if np.issubdtype(arr.dtype, np.floating) else arr
    if not np.array_equal(k, arr):
        raise ValueError(f"{name!r} must hold integer levels 0..{L - 1} with levels={L}; it holds non-integer values")
    k = k.astype(np.int64)
    if k.min() < 0 or k.max() > L - 1:
        raise ValueError(f"{name!r} must hold levels 0..{L - 1} (levels={L}); got values from {k.min()} to {k.max()}")
    return _dataset(_np_to_unit(k, L, dtype), L, name)


def _read_cifar_file(f: Path) -> tuple[np.ndarray, np.ndarray]:
    size = f.stat().st_size
    if size == 0 or size % CIFAR_RECORD_BYTES:
        raise ValueError(
            f"CIFAR-10 file {str(f)!r} has {size} bytes, which is not a positive multiple of {CIFAR_RECORD_BYTES} "
            f"(one record = 1 label byte + 3072 pixel bytes); is it a CIFAR-10 binary batch?"
        )
    rec = np.fromfile(f, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(
            f"CIFAR-10 file {str(f)!r} has label byte {labels.max()} > 9: not a CIFAR-10 batch "
            f"(CIFAR-100's binary format, with 2 label bytes, is not read)"
        )
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(path: Any, dtype: Any = np.float64) -> Dataset:
    """CIFAR-10 binary batches from a local file or directory -> (N, 3, 32, 32) in [-1, 1], 256 levels.

    Each record is 1 label byte then 3072 pixel bytes (1024 red, green, blue, rows of 32), read
    as bytes with NumPy (the Python-version pickles are never read). A directory (or its
    ``cifar-10-batches-bin`` subfolder) gives data_batch_1..5.bin as the data and test_batch.bin
    as the held-out split; with only test_batch.bin, that is the data. A single .bin file is the
    data. Labels 0..9 come along. The full training set in float64 takes 1.2 GB (dtype=np.float32: half).
    """
    p = _check_path(path)
    if p.is_dir():
        if not _cifar_files(p) and (p / "cifar-10-batches-bin").is_dir():
            p = p / "cifar-10-batches-bin"
        files = _cifar_files(p)
        if not files:
            raise ValueError(f"directory {str(p)!r} holds no CIFAR-10 batches (data_batch_<i>.bin, test_batch.bin)")
        train = sorted((f for f in files if f.name != "test_batch.bin"), key=lambda f: int(_CIFAR_NAME.match(f.name)[2]))
        test = [f for f in files if f.name == "test_batch.bin"]
        if not train:
            train, test = test, []
    elif p.suffix.lower() == ".bin":
        train, test = [p], []
    else:
        raise ValueError(f"path {str(p)!r} must be a CIFAR-10 .bin batch or a directory of them")

    def read(group: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_cifar_file(f) for f in group]
        k = np.concatenate([a for a, _ in parts])
        return _np_to_unit(k, 256, dtype), np.concatenate([b for _, b in parts])

    x, y = read(train)
    held = None
    if test:
        hx, hy = read(test)
        held = _dataset(hx, 256, str(test[0]), labels=hy)
    return _dataset(x, 256, str(p), held_out=held, labels=y)


def _cifar_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and _CIFAR_NAME.match(f.name))


def split_held_out(dataset: Dataset, size: int, seed: int = 0) -> Dataset:
    """``dataset`` with ``size`` examples (a fixed permutation from SeedSequence(seed)) moved to held_out.

    For data that come without a split (image folders, arrays, a single .bin). Both parts keep
    their original order. Refuses a dataset that already has a held-out split.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a Dataset; got {type(dataset).__name__}")
    if dataset.held_out is not None:
        raise ValueError(f"dataset {dataset.name!r} already has a held-out split of {len(dataset.held_out)} examples")
    N = len(dataset)
    size = _check_int(size, "size", 1, f" and < {N} (the dataset's size)")
    if size >= N:
        raise ValueError(f"size must be in 1..{N - 1} (dataset {dataset.name!r} has {N} examples); got {size}")
    perm = np.random.default_rng(np.random.SeedSequence(_check_seed(seed))).permutation(N)
    test, train = np.sort(perm[N - size :]), np.sort(perm[: N - size])

    def part(idx: np.ndarray, name: str, **extra: Any) -> Dataset:
        labels = None if dataset.labels is None else dataset.labels[idx]
        return replace(dataset, data=dataset.data[idx], labels=labels, name=name, **extra)

    return part(train, dataset.name, held_out=part(test, f"{dataset.name} (held out)"))


# -------------------------------------------------------------------------------- registry
#: Built-in name -> loader returning a :class:`Dataset` (options as keyword arguments).
DATASETS: dict[str, Callable[..., Dataset]] = {
    "two_moons": _toy_loader("two_moons", _two_moons),
    "swiss_roll": _toy_loader("swiss_roll", _swiss_roll),
    "checkerboard": _toy_loader("checkerboard", _checkerboard),
    "eight_gaussians": _toy_loader("eight_gaussians", lambda n, rng: _mixture_sample(EIGHT_GAUSSIANS, n, rng), EIGHT_GAUSSIANS),
    "gaussian_mixture": _toy_loader("gaussian_mixture", _gm_sample),
    "digits": digits,
}


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith(".") or Path(name).suffix.lower() in (
        ".npy", ".npz", ".bin", *IMAGE_SUFFIXES)


def load_dataset(name_or_path: Any, **options: Any) -> Dataset:
    """A built-in dataset by name, or a user's data by path.

    Names (``DATASETS``) win over paths of the same spelling: write ``./digits`` for a folder
    called digits. A path is a .npy/.npz file (:func:`load_array`), a CIFAR-10 .bin file
    (:func:`load_cifar10`), or a directory: CIFAR-10 batches when it holds data_batch_<i>.bin or
    test_batch.bin (or a cifar-10-batches-bin subfolder), else a folder of images
    (:func:`load_image_folder`). ``options`` go to the loader.
    """
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        return DATASETS[name_or_path](**options)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a dataset name or a path; got {type(name_or_path).__name__}")
    p = Path(name_or_path)
    if not p.exists():
        if isinstance(name_or_path, str) and not _looks_like_path(name_or_path):
            raise ValueError(
                f"unknown dataset {name_or_path!r}: built-in names are {sorted(DATASETS)}; "
                f"or give the path of a directory of images, a .npy/.npz file or CIFAR-10 .bin batches "
                f"(no file or directory {name_or_path!r} exists)"
            )
        raise FileNotFoundError(f"dataset path {str(p)!r} does not exist")
    if p.is_dir():
        entries = list(p.iterdir())
        if not entries:
            raise ValueError(f"dataset directory {str(p)!r} is empty")
        if _cifar_files(p) or (p / "cifar-10-batches-bin").is_dir():
            return load_cifar10(p, **options)
        if _image_files(p):
            return load_image_folder(p, **options)
        shown = ", ".join(sorted(e.name for e in entries)[:5])
        raise ValueError(
            f"dataset directory {str(p)!r} holds no {'/'.join(IMAGE_SUFFIXES)} images and no CIFAR-10 batches "
            f"(data_batch_<i>.bin, test_batch.bin); it holds: {shown}{', ...' if len(entries) > 5 else ''}"
        )
    suffix = p.suffix.lower()
    if suffix in (".npy", ".npz"):
        return load_array(p, **options)
    if suffix == ".bin":
        return load_cifar10(p, **options)
    raise ValueError(
        f"dataset file {str(p)!r} has suffix {suffix!r}; a file must be .npy, .npz or a CIFAR-10 .bin batch "
        f"(images go in a directory: pass the directory)"
    )
