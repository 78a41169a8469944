"""diffcore.data: level maps and dequantisation, built-in sets, user files, data order, bad input.

Everything is offline: user data are small files written to tmp_path.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from diffcore import data as dd
from diffcore.analytic import GaussianMixture
from diffcore.likelihood import DEQUANT_OFFSET_BITS, dequantize as dequantize_8bit

LEVELS = [2, 17, 256]


# ------------------------------------------------------------------ levels <-> [-1, 1]
@pytest.mark.parametrize("L", LEVELS)
def test_to_levels_inverts_to_unit_exactly(L):
    k = np.arange(L, dtype=np.int64)
    x = dd.to_unit(k, L)
    assert x.dtype == np.float64
    assert x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_array_equal(dd.to_levels(x, L), k)
    np.testing.assert_allclose(x, 2 * k / (L - 1) - 1, rtol=0, atol=1e-15)
    # float32 keeps the round trip exact too
    np.testing.assert_array_equal(dd.to_levels(dd.to_unit(k, L, dtype=np.float32), L), k)
    # the loaders' in-place NumPy version performs the same operations
    np.testing.assert_array_equal(dd._np_to_unit(k.astype(np.uint8), L, np.float64), x)
    np.testing.assert_array_equal(dd._np_to_unit(k, L, np.float32), dd.to_unit(k, L, dtype=np.float32))


def test_to_unit_for_256_levels_is_pixel_over_127_5():
    k = np.arange(256)
    np.testing.assert_array_equal(dd.to_unit(k, 256), k / 127.5 - 1.0)


def test_level_maps_on_another_namespace():
    xp = pytest.importorskip("array_api_strict")  # the maps are Array API code (torch/jax: same calls)
    k = xp.asarray([0, 3, 16], dtype=xp.int64)
    x = dd.to_unit(k, 17, dtype=xp.float64)
    back = dd.to_levels(x, 17)
    assert back.dtype == xp.int64
    assert [int(v) for v in back] == [0, 3, 16]


def test_level_map_errors():
    with pytest.raises(ValueError, match=r"k must hold levels in 0\.\.16.*got values from 0 to 17"):
        dd.to_unit(np.array([0, 17]), 17)
    with pytest.raises(TypeError, match="k must be an integer array"):
        dd.to_unit(np.array([0.0, 1.0]), 17)
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        dd.to_unit(np.array([0]), 1)
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\].*clip=True"):
        dd.to_levels(np.array([-1.0, 1.2]), 256)
    np.testing.assert_array_equal(dd.to_levels(np.array([-3.0, 0.999, 5.0]), 2, clip=True), [0, 1, 1])


@pytest.mark.parametrize("L", LEVELS)
def test_dequantize_fills_each_levels_bin(L):
    rng = np.random.default_rng(0)
    k = rng.integers(0, L, size=(64, 3))
    k[0] = [0, L - 1, L // 2]
    u = rng.random(k.shape)
    u[1] = 0.0
    u[2] = 1.0 - 1e-9  # (within an ulp or so of 1, k + u rounds to the bin's upper edge in float64)
    y = dd.dequantize(dd.to_unit(k, L), u, L)
    # level k's bin is [2k/L - 1, 2(k+1)/L - 1): floor((y + 1) L / 2) recovers k, and y = (k + u) 2/L - 1
    np.testing.assert_array_equal(np.floor((y + 1) * L / 2), k)
    np.testing.assert_allclose(y, (k + u) * 2 / L - 1, rtol=0, atol=1e-14)
    assert y.min() >= -1.0 and y.max() < 1.0


def test_dequantize_and_offset_reproduce_the_8bit_likelihood_code():
    rng = np.random.default_rng(1)
    x = dd.to_unit(rng.integers(0, 256, size=(8, 3, 4, 4)), 256)
    u = rng.random(x.shape)
    np.testing.assert_array_equal(dd.dequantize(x, u, 256), dequantize_8bit(x, u))
    np.testing.assert_array_equal(dd.dequantize(x, u), dequantize_8bit(x, u))
    assert dd.bits_per_dim_offset(256) == DEQUANT_OFFSET_BITS == 7.0
    for L in LEVELS:
        assert math.isclose(dd.bits_per_dim_offset(L), -math.log2(2 / L), rel_tol=0, abs_tol=1e-15)
    assert dd.bits_per_dim_offset(2) == 0.0


def test_dequantize_errors():
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"u must hold uniform draws in \[0, 1\)"):
        dd.dequantize(x, np.ones((2, 2)), 17)
    with pytest.raises(ValueError, match=r"x must lie in \[-1, 1\]"):
        dd.dequantize(x + 2, np.zeros((2, 2)), 17)
    with pytest.raises(ValueError, match="same shape"):
        dd.dequantize(x, np.zeros((2, 3)), 17)


# ------------------------------------------------------------------------- 2-D sets
TOYS = {
    "two_moons": (dd.two_moons, 3.0),
    "swiss_roll": (dd.swiss_roll, 3.5),
    "checkerboard": (dd.checkerboard, 2.0),
    "eight_gaussians": (dd.eight_gaussians, 3.5),
    "gaussian_mixture": (lambda n, seed: dd.gaussian_mixture(n, seed)[0], 4.0),
}


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_sets_are_deterministic_and_scaled(name):
    fn, bound = TOYS[name]
    x = fn(2000, 5)
    assert x.shape == (2000, 2) and x.dtype == np.float64 and np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, fn(2000, 5))
    assert not np.array_equal(x, fn(2000, 6))
    assert np.abs(x).max() <= bound
    assert np.all((x.std(axis=0) > 0.5) & (x.std(axis=0) < 1.6))
    assert np.all(np.abs(x.mean(axis=0)) < 0.5)
    # the registry's training set is the function's output; its held-out set is another stream
    ds = dd.load_dataset(name, n=2000, seed=5, held_out=50)
    np.testing.assert_array_equal(ds.data, x)
    assert ds.levels is None and ds.shape == (2,) and ds.name == name and len(ds.held_out) == 50
    assert not np.any(np.all(ds.held_out.data[:, None] == x[None], axis=-1))


def test_checkerboard_lies_on_dark_squares():
    x = dd.checkerboard(1000, 0)
    cells = np.floor(x + 2).astype(int)
    assert np.all((cells >= 0) & (cells <= 3))
    assert np.all(cells.sum(axis=1) % 2 == 0)
    assert len({tuple(c) for c in cells}) == 8


def test_gaussian_mixture_returns_the_exact_mixture():
    x, mix = dd.gaussian_mixture(4000, 0)
    assert mix is dd.DEFAULT_MIXTURE and isinstance(mix, GaussianMixture)
    se = np.sqrt(np.diag(mix.covariance()) / 4000)
    assert np.all(np.abs(x.mean(axis=0) - mix.mean()) < 4 * se)
    assert np.all(np.isfinite(mix.log_prob(x))) and mix.score(x).shape == x.shape
    ds = dd.load_dataset("gaussian_mixture", n=10, held_out=0)
    assert ds.mixture is mix and ds.held_out is None
    own = GaussianMixture([1.0], [[3.0, 3.0, 3.0]], [0.1])
    y, m = dd.gaussian_mixture(50, 1, mixture=own)
    assert m is own and y.shape == (50, 3)
    assert dd.load_dataset("gaussian_mixture", n=5, mixture=own).mixture is own
    # eight Gaussians: every point within 6 std of one of the 8 centres on the radius-2 circle
    e = dd.eight_gaussians(500, 0)
    d = np.linalg.norm(e[:, None] - dd.EIGHT_GAUSSIANS.means[None], axis=-1).min(axis=1)
    assert d.max() < 6 * 0.2
    assert dd.load_dataset("eight_gaussians", n=4).mixture is dd.EIGHT_GAUSSIANS


def test_toy_argument_errors():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        dd.two_moons(0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        dd.checkerboard(5, -1)
    with pytest.raises(ValueError, match="noise must be a non-negative number"):
        dd.swiss_roll(5, 0, noise=-0.1)
    with pytest.raises(TypeError, match="mixture must be a diffcore.analytic.GaussianMixture"):
        dd.gaussian_mixture(5, 0, mixture="eight")
    with pytest.raises(TypeError, match=r"dataset 'checkerboard' takes the options \['n', 'seed', 'held_out'\]; got \['noise'\]"):
        dd.load_dataset("checkerboard", noise=0.1)
    with pytest.raises(TypeError, match=r"'two_moons' takes the options \['n', 'seed', 'held_out', 'noise'\]"):
        dd.load_dataset("two_moons", scale=2)


# --------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return dd.load_dataset("digits")


def test_digits_have_17_levels_and_a_fixed_split(digits):
    from sklearn.datasets import load_digits

    assert digits.levels == 17 and digits.shape == (1, 8, 8)
    assert digits.data.shape == (1500, 1, 8, 8) and digits.held_out.data.shape == (297, 1, 8, 8)
    k = dd.to_levels(digits.data, 17)
    assert set(np.unique(k)) == set(range(17))
    # the two splits partition the 1797 images, labels follow their images
    ref = load_digits()
    both = np.concatenate([k, dd.to_levels(digits.held_out.data, 17)])[:, 0]
    labels = np.concatenate([digits.labels, digits.held_out.labels])
    key = lambda imgs, lab: sorted(zip(map(bytes, imgs.astype(np.uint8).reshape(len(imgs), -1)), lab.tolist()))
    assert key(both, labels) == key(ref.images.astype(np.int64), ref.target)
    again = dd.digits()
    np.testing.assert_array_equal(again.data, digits.data)
    np.testing.assert_array_equal(again.held_out.labels, digits.held_out.labels)
    other = dd.digits(held_out=100, split_seed=1)
    assert len(other) == 1697 and len(other.held_out) == 100
    with pytest.raises(ValueError, match="held_out must be < 1797"):
        dd.digits(held_out=1797)


# ------------------------------------------------------------------------ user data
def _png(path, array, mode):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)


@pytest.fixture
def pil():
    return pytest.importorskip("PIL.Image")


def test_image_folder_greyscale_rgb_palette_and_jpeg(tmp_path, pil):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(3, 5, 4), dtype=np.uint8)  # 3 images of height 5, width 4
    g = tmp_path / "grey"
    g.mkdir()
    for i, img in enumerate(grey[::-1]):  # written in reverse; read back in sorted name order
        _png(g / f"img{2 - i}.png", img, "L")
    (g / "notes.txt").write_text("not an image")
    ds = dd.load_dataset(g)
    assert ds.data.shape == (3, 1, 5, 4) and ds.levels == 256 and ds.shape == (1, 5, 4)
    np.testing.assert_array_equal(dd.to_levels(ds.data, 256)[:, 0], grey)

    rgb = rng.integers(0, 256, size=(2, 6, 7, 3), dtype=np.uint8)
    c = tmp_path / "rgb"
    c.mkdir()
    for i, img in enumerate(rgb):
        _png(c / f"{i}.PNG", img, "RGB")
    pal = pil.new("P", (7, 6))
    pal.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    pal.putdata([0, 1] * 21)
    pal.save(c / "2.png")
    ds = dd.load_image_folder(str(c), dtype=np.float32)
    assert ds.data.shape == (3, 3, 6, 7) and ds.data.dtype == np.float32 and ds.data.flags.c_contiguous
    np.testing.assert_array_equal(dd.to_levels(ds.data[:2], 256), np.transpose(rgb, (0, 3, 1, 2)))
    palette_pixels = dd.to_levels(ds.data[2], 256).reshape(3, -1).T
    assert {tuple(p) for p in palette_pixels} == {(10, 20, 30), (200, 100, 0)}

    j = tmp_path / "jpeg"
    j.mkdir()
    pil.fromarray(rgb[0]).save(j / "a.jpg", quality=95)
    pil.fromarray(rgb[1]).save(j / "b.JPEG", quality=95)
    assert dd.load_dataset(j).data.shape == (2, 3, 6, 7)


def test_image_folder_errors(tmp_path, pil):
    a = np.zeros((4, 4), dtype=np.uint8)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _png(mixed / "a.png", a, "L")
    _png(mixed / "b.png", np.zeros((3, 5), dtype=np.uint8), "L")
    with pytest.raises(ValueError, match=r"one size: '.*a\.png' is 4x4 \(width x height\) but '.*b\.png' is 5x3"):
        dd.load_dataset(mixed)

    modes = tmp_path / "modes"
    modes.mkdir()
    _png(modes / "a.png", a, "L")
    _png(modes / "b.png", np.zeros((4, 4, 3), dtype=np.uint8), "RGB")
    with pytest.raises(ValueError, match=r"one mode: '.*a\.png' is 'L' but '.*b\.png' is 'RGB'"):
        dd.load_dataset(modes)

    for mode in ("I;16", "RGBA", "1"):
        d = tmp_path / mode.replace(";", "_")
        d.mkdir()
        pil.new(mode, (4, 4)).save(d / "deep.png")
        with pytest.raises(ValueError, match=rf"image '.*deep\.png' has mode '{re_escape(mode)}'.*'L'.*'RGB'"):
            dd.load_dataset(d)

    # a 16-bit RGB PNG, which Pillow opens as mode 'RGB' keeping only the high byte
    rgb16 = tmp_path / "rgb16"
    rgb16.mkdir()
    _write_png(rgb16 / "deep.png", 2, 2, bit_depth=16, color_type=2, rows=[b"\x12\x34" * 6] * 2)
    assert pil.open(rgb16 / "deep.png").mode == "RGB"
    with pytest.raises(ValueError, match=r"image '.*deep\.png' has 16 bits per channel.*'RGB;16B'"):
        dd.load_dataset(rgb16)

    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"'.*x\.png' is not an image"):
        dd.load_dataset(bad)


def _write_png(path, width, height, bit_depth, color_type, rows):
    """A minimal PNG written byte by byte (Pillow cannot write 16-bit RGB)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def re_escape(s):
    import re

    return re.escape(s)


def test_npy_and_npz(tmp_path):
    cont = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    np.save(tmp_path / "points.npy", cont)
    ds = dd.load_dataset(tmp_path / "points.npy")
    assert ds.levels is None and ds.data.dtype == np.float64 and ds.shape == (2,)
    np.testing.assert_array_equal(ds.data, cont.astype(np.float64))

    imgs = np.random.default_rng(1).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "one.npz", images=imgs)
    ds = dd.load_dataset(str(tmp_path / "one.npz"), layout="NHWC")
    assert ds.levels == 256 and ds.data.shape == (4, 3, 5, 6)
    np.testing.assert_array_equal(dd.to_levels(ds.data, 256), np.transpose(imgs, (0, 3, 1, 2)))

    np.savez(tmp_path / "two.npz", x=np.arange(34).reshape(2, 17) % 17, y=np.zeros(3))
    ds = dd.load_array(tmp_path / "two.npz", key="x", levels=17)
    assert ds.levels == 17 and ds.name.endswith("two.npz:x")
    np.testing.assert_array_equal(dd.to_levels(ds.data, 17), np.arange(34).reshape(2, 17) % 17)


def test_array_errors(tmp_path):
    np.savez(tmp_path / "two.npz", images=np.zeros((2, 2)), labels=np.zeros(2))
    with pytest.raises(ValueError, match=r"holds 2 arrays \['images', 'labels'\]; pass key="):
        dd.load_dataset(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=r"key 'x' is not in .*\['images', 'labels'\]"):
        dd.load_dataset(tmp_path / "two.npz", key="x")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="readable without pickle"):
        dd.load_dataset(tmp_path / "obj.npy")
    np.save(tmp_path / "i16.npy", np.zeros((2, 3), dtype=np.int16))
    with pytest.raises(ValueError, match="dtype int16: pass levels="):
        dd.load_dataset(tmp_path / "i16.npy")
    with pytest.raises(ValueError, match=r"levels 0\.\.16 \(levels=17\); got values from 0 to 20"):
        dd.load_array(_save(tmp_path, np.array([[0, 20]])), levels=17)
    with pytest.raises(ValueError, match="layout='NHWC' needs a 4-D array"):
        dd.load_array(tmp_path / "i16.npy", layout="NHWC", levels=4)


def _save(tmp_path, arr):
    p = tmp_path / "levels.npy"
    np.save(p, arr)
    return p


def _cifar_bytes(labels, pixels):
    return b"".join(bytes([lab]) + pix.tobytes() for lab, pix in zip(labels, pixels))


def test_cifar10_binary_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    pix, labs = {}, {}
    for name, n in [("data_batch_2.bin", 2), ("data_batch_10.bin", 1), ("data_batch_1.bin", 3), ("test_batch.bin", 2)]:
        pix[name] = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labs[name] = rng.integers(0, 10, size=n).tolist()
        (root / name).write_bytes(_cifar_bytes(labs[name], pix[name]))
    (root / "batches.meta.txt").write_text("airplane\n")
    order = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_10.bin"]
    for path in (root, tmp_path):  # the batches folder, or the folder holding it
        ds = dd.load_dataset(path)
        assert ds.levels == 256 and ds.data.shape == (6, 3, 32, 32)
        np.testing.assert_array_equal(dd.to_levels(ds.data, 256), np.concatenate([pix[n] for n in order]))
        np.testing.assert_array_equal(ds.labels, sum((labs[n] for n in order), []))
        np.testing.assert_array_equal(dd.to_levels(ds.held_out.data, 256), pix["test_batch.bin"])
        np.testing.assert_array_equal(ds.held_out.labels, labs["test_batch.bin"])
    # channel layout: byte 1 + c*1024 + r*32 + col is pixel (c, r, col)
    raw = np.frombuffer((root / "test_batch.bin").read_bytes(), dtype=np.uint8)
    one = dd.load_dataset(root / "test_batch.bin")
    assert one.held_out is None and len(one) == 2
    assert dd.to_levels(one.data, 256)[0, 2, 5, 7] == raw[1 + 2 * 1024 + 5 * 32 + 7]


def test_cifar10_errors(tmp_path):
    bad = tmp_path / "data_batch_1.bin"
    bad.write_bytes(b"\x00" * 3075)
    with pytest.raises(ValueError, match=r"'.*data_batch_1\.bin' has 3075 bytes.*multiple of 3073"):
        dd.load_dataset(bad)
    with pytest.raises(ValueError, match="3075 bytes"):
        dd.load_dataset(tmp_path)
    bad.write_bytes(b"\x0c" + b"\x00" * 3072)
    with pytest.raises(ValueError, match="label byte 12 > 9"):
        dd.load_dataset(bad)


def test_path_and_name_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset path '.*nowhere' does not exist"):
        dd.load_dataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dd.load_dataset("./no/such/images")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"dataset directory '.*empty' is empty"):
        dd.load_dataset(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds no .png/.jpg/.jpeg images and no CIFAR-10 batches.*readme\.txt"):
        dd.load_dataset(other)
    with pytest.raises(ValueError, match=r"holds no .png/.jpg/.jpeg images"):
        dd.load_image_folder(other)
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist': built-in names are \['checkerboard', 'digits', "
                                         r"'eight_gaussians', 'gaussian_mixture', 'swiss_roll', 'two_moons'\]"):
        dd.load_dataset("mnist")
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"suffix '\.csv'; a file must be \.npy, \.npz or a CIFAR-10 \.bin"):
        dd.load_dataset(tmp_path / "a.csv")


# ---------------------------------------------------------------------------- order
def _stream(N, B, seed, epochs):
    E = (N // B) * B
    return np.concatenate([dd.epoch_order(N, seed, e)[:E] for e in range(epochs)])


def test_epoch_order_is_a_pure_permutation():
    o = dd.epoch_order(50, 3, 2)
    assert o.dtype == np.int64 and sorted(o.tolist()) == list(range(50))
    np.testing.assert_array_equal(o, dd.epoch_order(50, 3, 2))
    np.testing.assert_array_equal(o, np.random.default_rng(np.random.SeedSequence((3, 2))).permutation(50))
    assert not np.array_equal(o, dd.epoch_order(50, 3, 3)) and not np.array_equal(o, dd.epoch_order(50, 4, 2))


@pytest.mark.parametrize("N,B", [(10, 3), (12, 4), (7, 7), (5, 1)])
def test_batches_concatenate_to_the_order_and_resume_anywhere(N, B):
    seed, epochs = 11, 4
    E = (N // B) * B
    stream = _stream(N, B, seed, epochs)
    steps = len(stream) // B
    batches = [dd.batch_indices(N, B, seed, s * B) for s in range(steps)]
    np.testing.assert_array_equal(np.concatenate(batches), stream)
    for b in batches:  # drop-last: every batch holds distinct examples of one epoch
        assert len(set(b.tolist())) == B
    assert dd.batches_per_epoch(N, B) == N // B
    # resume at every position, mid-epoch and unaligned included: the same examples follow
    for p in range(len(stream) - 2 * B):
        np.testing.assert_array_equal(dd.batch_indices(N, B, seed, p), stream[p : p + B])
        resumed = np.concatenate([dd.batch_indices(N, B, seed, p + j * B) for j in range(2)])
        np.testing.assert_array_equal(resumed, stream[p : p + 2 * B])
    # epoch e starts at position e * E
    np.testing.assert_array_equal(dd.batch_indices(N, B, seed, 2 * E), dd.epoch_order(N, seed, 2)[:B])


def test_order_errors_and_dataset_batch():
    with pytest.raises(ValueError, match=r"batch_size = 11 is larger than the data \(10 examples\); it must be in 1\.\.10"):
        dd.batch_indices(10, 11, 0, 0)
    with pytest.raises(ValueError, match="position must be an integer >= 0"):
        dd.batch_indices(10, 2, 0, -1)
    with pytest.raises(ValueError, match="num_examples must be an integer >= 1"):
        dd.epoch_order(0, 0, 0)
    ds = dd.load_dataset("checkerboard", n=20, held_out=0)
    np.testing.assert_array_equal(ds.batch(6, 1, 6), ds.data[dd.batch_indices(20, 6, 1, 6)])
    with pytest.raises(ValueError, match=r"batch_size = 21 is larger than the data \(20 examples\)"):
        ds.batch(21, 0, 0)


def test_split_held_out():
    ds = dd.load_dataset("two_moons", n=30, held_out=0)
    sp = dd.split_held_out(ds, 10, seed=2)
    assert len(sp) == 20 and len(sp.held_out) == 10 and sp.held_out.held_out is None
    together = np.concatenate([sp.data, sp.held_out.data])
    assert sorted(map(tuple, together)) == sorted(map(tuple, ds.data))
    with pytest.raises(ValueError, match="already has a held-out split"):
        dd.split_held_out(sp, 2)
    with pytest.raises(ValueError, match=r"size must be in 1\.\.29"):
        dd.split_held_out(ds, 30)


# ------------------------------------------------------------------------ dependencies
def test_core_imports_without_the_optional_packages():
    code = (
        "import sys, diffcore, diffcore.data; "
        "bad = [m for m in ('sklearn', 'PIL', 'torch', 'jax') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"needs Pillow.*pip install 'diffcore\[data\]'"):
        dd.load_image_folder(tmp_path)
    with pytest.raises(ImportError, match=r"needs scikit-learn.*pip install 'diffcore\[data\]'"):
        dd.digits()
