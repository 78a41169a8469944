"""diffcore.plots: each function writes a PNG that Pillow reads, of the expected size, and refuses bad input."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from diffcore import plots  # noqa: E402
from diffcore.analytic import GaussianMixture  # noqa: E402


def _read(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.mode, im.size


@pytest.fixture
def mixture():
    return GaussianMixture(np.array([0.5, 0.5]), np.array([[-1.0, 0.0], [1.0, 0.5]]), np.array([0.3, 0.4]))


def test_plots_module_imports_no_plotting_library():
    import subprocess

    code = "import diffcore.plots, sys; print(any(m in sys.modules for m in ('matplotlib', 'PIL')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("N, C, H, nrow", [(10, 1, 8, None), (6, 3, 32, 4), (1, 1, 8, 5)])
def test_image_grid_size_and_mode(tmp_path, N, C, H, nrow):
    x = np.random.default_rng(0).uniform(-1, 1, size=(N, C, H, H))
    p = plots.image_grid(x, tmp_path / "sub" / "grid.png", nrow=nrow)
    assert p.exists() and p.parent.name == "sub"
    fmt, mode, (w, h) = _read(p)
    cols = min(nrow or math.ceil(math.sqrt(N)), N)
    rows = math.ceil(N / cols)
    s = math.ceil(plots.MIN_CELL_PIXELS / H)  # 8x8 -> x6, 32x32 -> x2
    assert fmt == "PNG" and mode == ("L" if C == 1 else "RGB")
    assert (w, h) == (cols * (H * s + 1) + 1, rows * (H * s + 1) + 1)


def test_image_grid_pixels_are_the_images_upscaled(tmp_path):
    from diffcore.data import to_unit

    x = to_unit(np.random.default_rng(3).integers(0, 17, size=(4, 1, 8, 8)), 17)  # digit-like levels
    p = plots.image_grid(x, tmp_path / "d.png", nrow=4, levels=17)
    arr = np.asarray(Image.open(p))
    s = plots.MIN_CELL_PIXELS // 8
    first = arr[1 : 1 + 8 * s : s, 1 : 1 + 8 * s : s]  # one pixel per upscaled block
    assert np.array_equal(first, np.round((x[0, 0] + 1) * 127.5).astype(np.uint8))
    assert arr[0, 0] == 128  # grey separator


def test_scatter_and_density(tmp_path, mixture):
    r = np.random.default_rng(1)
    s, d = r.normal(size=(200, 2)), r.normal(size=(300, 2))
    p = plots.scatter_2d(s, tmp_path / "s.png", data=d, density=mixture.log_prob, title="t")
    assert _read(p)[2] == (500, 500)
    assert p.stat().st_size > 10_000  # dots and contours, not a blank canvas
    blank = plots.scatter_2d(s[:1], tmp_path / "one.png", extent=(-3, 3, -3, 3))
    assert blank.stat().st_size < p.stat().st_size


def test_score_field(tmp_path, mixture):
    p = plots.score_field(mixture.score, tmp_path / "f.png", extent=(-2, 2, -2, 2), data=np.zeros((5, 2)))
    assert _read(p)[2] == (500, 500)


def test_loss_curve_from_file_and_records(tmp_path):
    recs = [{"step": i, "loss": 1.0 / (i + 1) + 0.01} for i in range(300)] + [{"step": 300, "eval": 1.0}]
    f = tmp_path / "metrics.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    p1 = plots.loss_curve(f, tmp_path / "l1.png")
    p2 = plots.loss_curve(iter(recs), tmp_path / "l2.png")
    assert _read(p1)[2] == (800, 400) and _read(p1)[2] == _read(p2)[2]
    # negative values (an NLL, say) switch to a linear axis instead of failing
    plots.loss_curve([{"step": i, "nll": -i} for i in range(10)], tmp_path / "l3.png", key="nll")


def test_trajectory_strip_images_and_points(tmp_path):
    r = np.random.default_rng(2)
    T, N = 5, 12
    xs = r.uniform(-1, 1, size=(T, N, 1, 8, 8))
    p = plots.trajectory_strip(xs, np.linspace(1, 0, T), tmp_path / "ti.png", max_samples=3)
    s = plots.MIN_CELL_PIXELS // 8
    assert _read(p)[2] == (T * (8 * s + 1) + 1, 3 * (8 * s + 1) + 1)
    arr = np.asarray(Image.open(p))
    col2_row1 = arr[1 + (8 * s + 1) : 1 + (8 * s + 1) + 8 * s : s, 1 + 2 * (8 * s + 1) : 1 + 2 * (8 * s + 1) + 8 * s : s]
    assert np.array_equal(col2_row1, np.round((xs[2, 1, 0] + 1) * 127.5).astype(np.uint8))  # sample 1 at time 2
    q = plots.trajectory_strip(r.normal(size=(4, 100, 2)), [1.0, 0.5, 0.2, 0.0], tmp_path / "tp.png")
    assert _read(q)[2] == (round(2.2 * 4 * 100), 240)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda d: plots.image_grid(np.zeros((2, 2, 8, 8)), d / "a.png"), ValueError, "C = 1 or 3"),
        (lambda d: plots.image_grid(np.zeros((8, 8)), d / "a.png"), ValueError, r"\(N, C, H, W\)"),
        (lambda d: plots.image_grid(np.zeros((2, 1, 8, 8)), d / "a.jpg"), ValueError, "must end in .png"),
        (lambda d: plots.image_grid(np.zeros((2, 1, 8, 8)), d / "a.png", nrow=0), ValueError, "nrow"),
        (lambda d: plots.image_grid(np.full((2, 1, 8, 8), np.nan), d / "a.png"), ValueError, "finite"),
        (lambda d: plots.image_grid([[0.0]], d / "a.png"), TypeError, "images must be an array"),
        (lambda d: plots.scatter_2d(np.zeros((5, 3)), d / "a.png"), ValueError, r"samples must be 2-D points"),
        (lambda d: plots.scatter_2d(np.zeros((5, 2)), d / "a.png", density=lambda x: x), ValueError, "density must map"),
        (lambda d: plots.score_field(lambda x: x, d / "a.png", extent=(1, 0, 0, 1)), ValueError, "xmin < xmax"),
        (lambda d: plots.score_field(lambda x: x[:, 0], d / "a.png", extent=(0, 1, 0, 1)), ValueError, "score_fn must map"),
        (lambda d: plots.score_field(lambda x: x / 0.0, d / "a.png", extent=(-1, 1, -1, 1)), ValueError, "NaN or infinite"),
        (lambda d: plots.loss_curve([{"step": 1}], d / "a.png"), ValueError, "no metrics record holds 'loss'"),
        (lambda d: plots.loss_curve([{"step": 1, "loss": float("nan")}], d / "a.png"), ValueError, "diverged"),
        (lambda d: plots.loss_curve(d / "missing.jsonl", d / "a.png"), FileNotFoundError, "does not exist"),
        (lambda d: plots.loss_curve({"loss": 1}, d / "a.png"), TypeError, "iterable of dicts"),
        (lambda d: plots.trajectory_strip(np.zeros((3, 4, 2)), [0.0, 1.0], d / "a.png"), ValueError, "one time per entry"),
        (lambda d: plots.trajectory_strip(np.zeros((3, 4, 3)), [0, 1, 2], d / "a.png"), ValueError, r"\(T, N, 2\) points"),
    ],
)
def test_errors(tmp_path, call, error, match):
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(error, match=match):
            call(tmp_path)
