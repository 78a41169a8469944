"""The torch backend's CPU draws: torch's mt19937 with its state filled from the full 64-bit key."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from diffcore_torch import TorchBackend, TorchKey  # noqa: E402

BK = TorchBackend()


def _reference(state, method, shape, dtype):
    """The documented construction, written out: mt19937's 624 words are the low and high halves
    of fold_in(key, 2**63 + j) for j = 0..311, loaded with torch's own serialized state."""
    halves = [BK.fold_in(TorchKey(state), 2**63 + j).state for j in range(312)]
    words = np.array([w for h in halves for w in (h & 0xFFFFFFFF, h >> 32)], dtype=np.uint64)
    gen = torch.Generator().manual_seed(5489)
    st = gen.get_state()
    st.numpy()[24 : 24 + 8 * 624] = words.view(np.uint8)
    gen.set_state(st)
    if method == "normal":
        return torch.randn(shape, generator=gen, dtype=dtype)
    if method == "uniform":
        return torch.rand(shape, generator=gen, dtype=dtype)
    return (2 * torch.randint(0, 2, shape, generator=gen) - 1).to(dtype)


def test_keys_differing_only_above_bit_32_draw_differently():
    for s in (0, 12345, 2**31 + 7):
        a, b = TorchKey(s), TorchKey(s + 2**32)
        for method in ("normal", "uniform", "rademacher"):
            x = getattr(BK, method)(a, (64,), torch.float32)
            y = getattr(BK, method)(b, (64,), torch.float32)
            assert not torch.equal(x, y), (s, method)
    assert not torch.equal(BK.normal(TorchKey(1), (8,)), BK.normal(TorchKey(1 + 2**63), (8,)))


@pytest.mark.parametrize("method", ["normal", "uniform", "rademacher"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draws_equal_the_documented_construction_and_repeat(method, dtype):
    key = BK.fold_in(BK.key(3), 2**40 + 5)
    shape = (3, 5, 7)
    x = getattr(BK, method)(key, shape, dtype)
    assert x.dtype == dtype and tuple(x.shape) == shape
    assert torch.equal(x, _reference(key.state, method, shape, dtype))
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


def test_draws_are_standard_and_keys_independent():
    """Moments of keyed draws, and no correlation between the draws of neighbouring keys."""
    z = torch.stack([BK.normal(BK.fold_in(BK.key(0), i), (4096,), torch.float64) for i in range(64)])
    assert abs(float(z.mean())) < 5 / 512 and abs(float(z.var()) - 1) < 5 * (2 / 2**18) ** 0.5
    corr = torch.corrcoef(z)[~torch.eye(64, dtype=torch.bool)]
    assert float(corr.abs().max()) < 5 / 64  # 5 standard errors of a correlation over 4096 pairs
    u = BK.uniform(BK.key(1), (2**18,), torch.float64)
    assert abs(float(u.mean()) - 0.5) < 5 * (1 / 12 / 2**18) ** 0.5 and 0 <= float(u.min()) and float(u.max()) < 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("ids", [None, [4, 0, 2**40]])
def test_prepared_loop_draws_equal_the_generic_draws(dtype, ids):
    key = BK.fold_in(BK.key(2), 9)
    noise_at = BK.step_noise(key, (3, 1, 5), dtype, sample_ids=ids)
    # a loop's steps, a chunk of 64 and back, and any other integer fold_in takes (mod 2**64)
    for i in (0, 1, 2, 7, 70, 63, 2**33, -1, -100, 2**63 + 5, 2**64 + 1):
        got = noise_at(i)
        want = BK.normal(BK.fold_in(key, i), (3, 1, 5), dtype, sample_ids=ids)
        assert got.dtype == dtype and torch.equal(got, want), i


def test_a_loop_draws_each_step_from_the_folded_key():
    key = BK.key(1)
    seen = []

    def step(state, plan_i, noise_i):
        seen.append(noise_i)
        return state

    BK.loop(step, (torch.zeros(2, 3),), (torch.arange(4),), key=key, noise_shape=(2, 3))
    for i, z in enumerate(seen):
        assert torch.equal(z, BK.normal(BK.fold_in(key, i), (2, 3), torch.float32)), i


def test_cpu_draws_stay_on_the_cpu_inside_a_device_context_and_prepared_draws_follow_the_thread():
    import threading

    with torch.device("meta"):
        assert BK.normal(BK.key(0), (20,), torch.float32, device="cpu").device.type == "cpu"
    key = BK.key(4)
    draw = BK.step_noise(key, (64,), torch.float32)
    want = {i: BK.normal(BK.fold_in(key, i), (64,), torch.float32) for i in range(1, 41)}
    bad = []

    def worker(ids):
        for _ in range(20):
            bad.extend(i for i in ids if not torch.equal(draw(i), want[i]))

    threads = [threading.Thread(target=worker, args=(range(1 + k, 41, 2),)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_state_words_do_not_depend_on_the_byte_order_path(monkeypatch):
    import diffcore_torch

    keys = np.array([0, 1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    fast = diffcore_torch._mt_words(keys)
    monkeypatch.setattr(diffcore_torch, "_LITTLE_ENDIAN", False)
    portable = diffcore_torch._mt_words(keys)
    assert fast.dtype == portable.dtype == np.uint64 and fast.shape == (4, 624)
    np.testing.assert_array_equal(fast, portable)
    assert int(portable.max()) < 2**32


def test_float_and_empty_sample_ids():
    key = BK.key(8)
    ints = BK.normal(key, (3, 2), sample_ids=torch.tensor([-2, 0, 5]))
    assert torch.equal(BK.normal(key, (3, 2), sample_ids=np.array([-2.0, 0.0, 5.0])), ints)  # negatives wrap alike
    empty = BK.normal(key, (0, 4), torch.float64, sample_ids=torch.zeros(0, dtype=torch.int64))
    assert tuple(empty.shape) == (0, 4) and empty.dtype == torch.float64
