"""Pictures as PNG files: image grids, 2-D scatters over the data, score fields, loss curves, trajectories.

Every function writes one PNG (parent folders created) and returns its path. Image grids are
drawn with Pillow alone; the other plots with matplotlib's Agg canvas (``matplotlib.figure.Figure``,
never ``pyplot``: no window, no global backend switch, safe in threads and on headless machines).
Both are imported only when a function runs: ``import diffcore.plots`` imports neither.

Inputs are NumPy arrays or anything NumPy converts (torch tensors are detached and copied to the
host). Images are (N, C, H, W) with C = 1 or 3 and values in [-1, 1] (``diffcore.data.to_unit``);
values outside are clipped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .checks import check_int, check_positive

__all__ = ["image_grid", "scatter_2d", "score_field", "loss_curve", "trajectory_strip"]

#: grid images are upscaled (nearest neighbour) until their longer side is at least this many pixels
MIN_CELL_PIXELS = 48
_DPI = 100
_FIGSIZE = (5.0, 5.0)  # inches: 500 x 500 pixels at _DPI


# ------------------------------------------------------------------------------------ helpers
def _array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)) or x is None or np.isscalar(x):
        raise TypeError(f"{name} must be an array (NumPy, torch or JAX); got {type(x).__name__}")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch
        x = x.detach().cpu()
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers; got dtype {a.dtype}")
    return a.astype(np.float64)


def _png_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png (these functions write PNG files); got {str(p)!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _images(x: Any, name: str, leading: int = 1) -> np.ndarray:
    """Check (…, C, H, W) images with ``leading`` batch axes, C in {1, 3}; clip to [-1, 1]."""
    a = _array(x, name)
    want = "(T, N, C, H, W)" if leading == 2 else "(N, C, H, W)"
    if a.ndim != leading + 3 or a.shape[-3] not in (1, 3) or min(a.shape) < 1:
        raise ValueError(f"{name} must be images of shape {want} with C = 1 or 3; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
    return np.clip(a, -1.0, 1.0)


def _to_uint8(a: np.ndarray, levels: int | None) -> np.ndarray:
    """[-1, 1] -> 0..255; with ``levels`` L, first rounded to the L levels (what the data can hold)."""
    if levels is not None:
        L = check_int(levels, "levels", 2)
        a = np.round((a + 1.0) * ((L - 1) / 2)) / ((L - 1) / 2) - 1.0
    return np.round((a + 1.0) * 127.5).astype(np.uint8)


def _tile(images: np.ndarray, nrow: int, scale: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) uint8 -> one (rows*(H*s+pad)+pad, nrow*(W*s+pad)+pad, C) mosaic on grey."""
    N, C, H, W = images.shape
    rows = math.ceil(N / nrow)
    h, w = H * scale, W * scale
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, C), 128, dtype=np.uint8)
    up = images.repeat(scale, axis=2).repeat(scale, axis=3).transpose(0, 2, 3, 1)
    for i in range(N):
        r, c = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        out[y0 : y0 + h, x0 : x0 + w] = up[i]
    return out


def _save_pil(mosaic: np.ndarray, p: Path) -> Path:
    from PIL import Image

    Image.fromarray(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic).save(p, format="PNG")
    return p


def _figure(figsize: tuple[float, float] = _FIGSIZE) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=_DPI)


def _save_fig(fig: Any, p: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(p, format="png", dpi=_DPI)
    return p


def _points2d(x: Any, name: str) -> np.ndarray:
    a = _array(x, name)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be 2-D points of shape (N, 2); got shape {a.shape}")
    return a


def _extent(extent: Any, *point_sets: np.ndarray) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax): given, or the points' bounding box padded by 10%."""
    if extent is None:
        pts = np.concatenate([p[np.all(np.isfinite(p), axis=1)] for p in point_sets if p is not None])
        if pts.shape[0] == 0:
            raise ValueError("no finite points to take the extent from; pass extent=(xmin, xmax, ymin, ymax)")
        lo, hi = pts.min(0), pts.max(0)
        span = np.maximum(hi - lo, 1e-3)
        lo, hi = lo - 0.1 * span, hi + 0.1 * span
        return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])
    try:
        e = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        raise TypeError(f"extent must be 4 numbers (xmin, xmax, ymin, ymax); got {extent!r}") from None
    if len(e) != 4 or not all(math.isfinite(v) for v in e) or not (e[0] < e[1] and e[2] < e[3]):
        raise ValueError(f"extent must be 4 finite numbers (xmin, xmax, ymin, ymax) with xmin < xmax, ymin < ymax; got {extent!r}")
    return e  # type: ignore[return-value]


def _grid(extent: tuple[float, float, float, float], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.linspace(extent[0], extent[1], n), np.linspace(extent[2], extent[3], n))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1)


def _call_on_grid(fn: Callable[[np.ndarray], Any], pts: np.ndarray, name: str, out_shape: tuple[int, ...]) -> np.ndarray:
    if not callable(fn):
        raise TypeError(f"{name} must be a callable taking (M, 2) points; got {type(fn).__name__}")
    v = _array(fn(pts), f"{name}(points)")
    if v.shape != out_shape:
        raise ValueError(f"{name} must map (M, 2) points to shape {out_shape}; for M = {pts.shape[0]} it returned shape {v.shape}")
    return v


# ----------------------------------------------------------------------------------- images
def image_grid(images: Any, path: Any, nrow: int | None = None, levels: int | None = None) -> Path:
    """A grid of images (N, C, H, W) in [-1, 1] as one PNG; returns the path.

    ``nrow`` images per row (default ceil(sqrt(N))). Images are upscaled by nearest neighbour by the
    integer factor s = ceil(48 / max(H, W)) (8x8 digits become 48x48; 32x32 images 64x64), separated
    by 1 grey pixel. ``levels`` L rounds values to the L levels of the data first (17 for the digits).
    Output size: (rows (H s + 1) + 1) x (nrow (W s + 1) + 1) pixels, greyscale for C = 1, RGB for C = 3.
    """
    a = _images(images, "images")
    p = _png_path(path)
    N, _, H, W = a.shape
    nrow = math.ceil(math.sqrt(N)) if nrow is None else check_int(nrow, "nrow", 1)
    scale = max(1, math.ceil(MIN_CELL_PIXELS / max(H, W)))
    return _save_pil(_tile(_to_uint8(a, levels), min(nrow, N), scale), p)


# ---------------------------------------------------------------------------------- 2-D plots
def scatter_2d(samples: Any, path: Any, data: Any = None, density: Callable[[np.ndarray], Any] | None = None,
               extent: Any = None, title: str | None = None, grid: int = 120) -> Path:
    """Samples (N, 2) as dots over the data (M, 2) (grey), with optional log-density contours; returns the path.

    ``density``: a callable log p((K, 2) points) -> (K,), e.g. ``GaussianMixture.log_prob`` of
    ``diffcore.analytic``; drawn as 12 filled contour levels of log p on a ``grid`` x ``grid`` grid
    over ``extent`` (xmin, xmax, ymin, ymax; default the points' bounding box plus 10%), clipped
    below at max - 12 nats. 500 x 500 pixels.
    """
    s = _points2d(samples, "samples")
    d = None if data is None else _points2d(data, "data")
    p = _png_path(path)
    e = _extent(extent, s, d)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if density is not None:
        n = check_int(grid, "grid", 8)
        gx, gy, pts = _grid(e, n)
        lp = _call_on_grid(density, pts, "density", (n * n,)).reshape(n, n)
        finite = lp[np.isfinite(lp)]
        if finite.size:
            top = float(finite.max())
            ax.contourf(gx, gy, np.clip(np.nan_to_num(lp, nan=top - 12, neginf=top - 12), top - 12, top),
                        levels=12, cmap="Blues", alpha=0.6)
    if d is not None:
        ax.scatter(d[:, 0], d[:, 1], s=3, c="0.55", alpha=0.5, linewidths=0, label=f"data ({len(d)})")
    ax.scatter(s[:, 0], s[:, 1], s=4, c="tab:red", alpha=0.7, linewidths=0, label=f"samples ({len(s)})")
    ax.set_xlim(e[0], e[1])
    ax.set_ylim(e[2], e[3])
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_fig(fig, p)


def score_field(score_fn: Callable[[np.ndarray], Any], path: Any, extent: Any, data: Any = None, grid: int = 21,
                title: str | None = None) -> Path:
    """The vector field s(x) of ``score_fn((K, 2) points) -> (K, 2)`` as arrows on a grid; returns the path.

    ``grid`` x ``grid`` arrows over ``extent`` (xmin, xmax, ymin, ymax), all drawn with length
    proportional to |s|^(1/2) / max |s|^(1/2) (the square root keeps small scores visible near the
    modes), coloured by log10 |s| (scale from its 5th percentile to its maximum); data points (M, 2) in grey underneath. 500 x 500 pixels.
    """
    e = _extent(extent)
    n = check_int(grid, "grid", 2)
    d = None if data is None else _points2d(data, "data")
    p = _png_path(path)
    gx, gy, pts = _grid(e, n)
    v = _call_on_grid(score_fn, pts, "score_fn", (n * n, 2))
    if not np.all(np.isfinite(v)):
        raise ValueError("score_fn returned NaN or infinite scores on the grid; check the model or narrow the extent")
    norm = np.linalg.norm(v, axis=1)
    safe = np.where(norm > 0, norm, 1.0)
    length = np.sqrt(norm) / max(float(np.sqrt(norm).max()), 1e-300)
    u = v / safe[:, None] * length[:, None]
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    if d is not None:
        ax.scatter(d[:, 0], d[:, 1], s=3, c="0.6", alpha=0.5, linewidths=0)
    step = min((e[1] - e[0]), (e[3] - e[2])) / max(n - 1, 1)
    colour = np.log10(np.maximum(norm, 1e-300))
    q = ax.quiver(gx.ravel(), gy.ravel(), u[:, 0] * step, u[:, 1] * step, colour,
                  angles="xy", scale_units="xy", scale=1.0, cmap="viridis", width=0.004)
    lo, hi = float(np.percentile(colour, 5)), float(colour.max())
    q.set_clim(lo, hi if hi > lo else lo + 1.0)  # a zero at a mode would stretch the scale to -300
    fig.colorbar(q, ax=ax, label="log10 |score|", shrink=0.8)
    ax.set_xlim(e[0], e[1])
    ax.set_ylim(e[2], e[3])
    ax.set_aspect("equal", adjustable="box")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_fig(fig, p)


# ------------------------------------------------------------------------------------- curves
def _records(metrics: Any) -> list[Mapping[str, Any]]:
    if isinstance(metrics, (str, os.PathLike)):
        f = Path(metrics)
        if not f.is_file():
            raise FileNotFoundError(f"metrics file {str(f)!r} does not exist")
        out = []
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {i} of {str(f)!r} is not JSON: {exc}") from exc
        return out
    if isinstance(metrics, Mapping) or not isinstance(metrics, Iterable):
        raise TypeError(f"metrics must be a .jsonl path or an iterable of dicts; got {type(metrics).__name__}")
    return list(metrics)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``window`` points (shrinking at the ends)."""
    if window <= 1 or len(y) < 3:
        return y
    c = np.concatenate([[0.0], np.cumsum(y)])
    half = window // 2
    lo = np.clip(np.arange(len(y)) - half, 0, len(y))
    hi = np.clip(np.arange(len(y)) + half + 1, 0, len(y))
    return (c[hi] - c[lo]) / (hi - lo)


def loss_curve(metrics: Any, path: Any, key: str = "loss", step_key: str = "step", window: int | None = None,
               title: str | None = None) -> Path:
    """``key`` against ``step_key`` from JSON-lines records (a path, or an iterable of dicts); returns the path.

    Records without ``key`` (evaluation lines, say) are skipped; the rest need a finite number
    under ``key`` and ``step_key``. The raw values are drawn faint, a centred moving average of
    ``window`` points (default max(1, n // 50)) solid. The y axis is logarithmic when every value
    is > 0, linear otherwise. 800 x 400 pixels.
    """
    if not isinstance(key, str) or not isinstance(step_key, str):
        raise TypeError(f"key and step_key must be strings; got {key!r} and {step_key!r}")
    recs = _records(metrics)
    steps, vals = [], []
    for i, r in enumerate(recs):
        if not isinstance(r, Mapping):
            raise TypeError(f"metrics record {i} must be a dict; got {type(r).__name__}")
        if key not in r:
            continue
        if step_key not in r:
            raise ValueError(f"metrics record {i} has {key!r} but no {step_key!r}: {dict(r)}")
        try:
            steps.append(float(r[step_key]))
            vals.append(float(r[key]))
        except (TypeError, ValueError):
            raise ValueError(f"metrics record {i} must hold numbers under {step_key!r} and {key!r}; got {dict(r)}") from None
    if not vals:
        keys = sorted({k for r in recs if isinstance(r, Mapping) for k in r})
        raise ValueError(f"no metrics record holds {key!r} (of {len(recs)} records; keys seen: {keys})")
    x, y = np.asarray(steps), np.asarray(vals)
    if not np.all(np.isfinite(y)):
        bad = int(np.argmax(~np.isfinite(y)))
        raise ValueError(f"{key!r} is not finite at step {x[bad]:g} ({y[bad]!r}); the run diverged there")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    w = max(1, len(y) // 50) if window is None else check_int(window, "window", 1)
    p = _png_path(path)
    fig = _figure((8.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, y, color="tab:blue", alpha=0.25, linewidth=0.8, label=key)
    ax.plot(x, _smooth(y, w), color="tab:blue", linewidth=1.8, label=f"{key}, mean of {w}")
    if np.all(y > 0):
        ax.set_yscale("log")
    ax.set_xlabel(step_key)
    ax.set_ylabel(key)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_fig(fig, p)


# -------------------------------------------------------------------------------- trajectories
def trajectory_strip(xs: Any, times: Sequence[float] | Any, path: Any, levels: int | None = None,
                     max_samples: int = 8) -> Path:
    """x_t over time: ``xs`` (T, N, C, H, W) images or (T, N, 2) points at the T ``times``; returns the path.

    Images: one row per sample (the first ``max_samples``), one column per time, upscaled as in
    :func:`image_grid` (``levels`` as there); size (n (H s + 1) + 1) x (T (W s + 1) + 1) pixels, no
    labels (the times are the caller's to state). Points: T scatter panels side by side, each
    titled with its t, sharing the axes of all points; 2.2 T x 2.4 inches at 100 dpi.
    """
    a = _array(xs, "xs")
    t = _array(times, "times") if not isinstance(times, (list, tuple)) else np.asarray(times, dtype=np.float64)
    if a.ndim < 3:
        raise ValueError(f"xs must be (T, N, C, H, W) images or (T, N, 2) points; got shape {a.shape}")
    if t.ndim != 1 or t.shape[0] != a.shape[0]:
        raise ValueError(f"times must be 1-D with one time per entry of xs (T = {a.shape[0]}); got shape {t.shape}")
    max_samples = check_int(max_samples, "max_samples", 1)
    p = _png_path(path)
    if a.ndim == 5:
        a = _images(a, "xs", leading=2)
        T, N, C, H, W = a.shape
        n = min(N, max_samples)
        # row r = sample r, column c = time c
        order = a[:, :n].transpose(1, 0, 2, 3, 4).reshape(n * T, C, H, W)
        scale = max(1, math.ceil(MIN_CELL_PIXELS / max(H, W)))
        return _save_pil(_tile(_to_uint8(order, levels), T, scale), p)
    if a.ndim == 3 and a.shape[2] == 2:
        T = a.shape[0]
        e = _extent(None, a.reshape(-1, 2))
        fig = _figure((2.2 * T, 2.4))
        for i in range(T):
            ax = fig.add_subplot(1, T, i + 1)
            ax.scatter(a[i, :, 0], a[i, :, 1], s=2, c="tab:red", alpha=0.6, linewidths=0)
            ax.set_xlim(e[0], e[1])
            ax.set_ylim(e[2], e[3])
            ax.set_aspect("equal", adjustable="box")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t = {t[i]:.3g}", fontsize=9)
        fig.tight_layout()
        return _save_fig(fig, p)
    raise ValueError(f"xs must be (T, N, C, H, W) images or (T, N, 2) points; got shape {a.shape}")
