"""The torch backend's CPU draws: NumPy's Philox keyed by the full 64-bit key state."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from diffcore_torch import TorchBackend, TorchKey  # noqa: E402

BK = TorchBackend()


def _reference(state, method, shape, np_dtype):
    gen = np.random.Generator(np.random.Philox(key=state))  # key (state, 0), counter 0
    if method == "normal":
        return gen.standard_normal(shape, dtype=np_dtype)
    if method == "uniform":
        return gen.random(shape, dtype=np_dtype)
    return (2 * gen.integers(0, 2, size=shape, dtype=np.int8) - 1).astype(np_dtype)


def test_keys_differing_only_above_bit_32_draw_differently():
    for s in (0, 12345, 2**31 + 7):
        a, b = TorchKey(s), TorchKey(s + 2**32)
        for method in ("normal", "uniform", "rademacher"):
            x = getattr(BK, method)(a, (64,), torch.float32)
            y = getattr(BK, method)(b, (64,), torch.float32)
            assert not torch.equal(x, y), (s, method)
    assert not torch.equal(BK.normal(TorchKey(1), (8,)), BK.normal(TorchKey(1 + 2**63), (8,)))


@pytest.mark.parametrize("method", ["normal", "uniform", "rademacher"])
@pytest.mark.parametrize("dtype, np_dtype", [(torch.float32, np.float32), (torch.float64, np.float64)])
def test_draws_equal_a_numpy_philox_reference_and_repeat(method, dtype, np_dtype):
    key = BK.fold_in(BK.key(3), 2**40 + 5)
    shape = (3, 5, 7)
    x = getattr(BK, method)(key, shape, dtype)
    assert x.dtype == dtype and tuple(x.shape) == shape
    np.testing.assert_array_equal(x.numpy(), _reference(key.state, method, shape, np_dtype))
    BK.normal(BK.key(9), (11,), dtype)  # a draw in between changes nothing: keys are values
    assert torch.equal(getattr(BK, method)(key, shape, dtype), x)


@pytest.mark.parametrize("method", ["normal", "uniform", "rademacher"])
@pytest.mark.parametrize("shape", [(4,), (4, 3, 2)])
def test_sample_id_rows_equal_single_draws(method, shape):
    key = BK.key(11)
    ids = torch.tensor([7, 0, 2**33, 7])
    x = getattr(BK, method)(key, shape, torch.float32, sample_ids=ids)
    assert tuple(x.shape) == shape
    for b, i in enumerate(ids.tolist()):
        assert torch.equal(x[b], getattr(BK, method)(BK.fold_in(key, i), shape[1:], torch.float32)), (b, i)
    assert torch.equal(x[0], x[3])
    if method != "rademacher" or len(shape) > 1:  # one sign each may agree by chance
        assert not torch.equal(x[0], x[1])
    assert torch.equal(getattr(BK, method)(key, shape, torch.float32, sample_ids=[7, 0, 2**33, 7]), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_draws_are_float32_draws_rounded_and_uniforms_stay_below_one(dtype):
    key = BK.key(5)
    np.testing.assert_array_equal(
        BK.normal(key, (100,), dtype).float().numpy(), BK.normal(key, (100,), torch.float32).to(dtype).float().numpy()
    )
    # enough draws that some float32 uniforms round up to 1 in half precision (p ~ 2**-9 / 2**-12 each)
    u32 = BK.uniform(key, (20000,), torch.float32)
    assert (u32.to(dtype) == 1).any()
    u = BK.uniform(key, (20000,), dtype)
    assert u.dtype == dtype and float(u.max()) < 1.0 and float(u.min()) >= 0.0


def test_default_device_follows_torch_device_contexts():
    assert BK.device() == torch.device("cpu")
    with torch.device("meta"):
        assert BK.device() == torch.device("meta")
    assert BK.device() == torch.device("cpu")
