"""Tests for diffcore.schedules: beta tables, zero-terminal-SNR rescaling and timestep respacing.

Reference values are recomputed here independently of the library (plain loops with ``math``), and
checked against the published numbers (docs/conventions.md, "Numbers the tests check").
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffcore.schedules import (
    SCHEDULE_NAMES,
    SPACINGS,
    betas_for_alpha_bar,
    check_betas,
    get_named_beta_schedule,
    rescale_zero_terminal_snr,
    respace_betas,
    respaced_timesteps,
    space_timesteps,
)

# --------------------------------------------------------------------------- independent references


def ref_cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> list[float]:
    """Nichol & Dhariwal's cosine schedule written out from the paper's formula."""

    def f(t):
        return math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2

    return [min(1 - (f(i + 1) / f(0)) / (f(i) / f(0)), max_beta) for i in range(T)]


def ref_space_timesteps(num_timesteps, section_counts):
    """A straightforward port of improved-diffusion's ``space_timesteps`` (respace.py)."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired_count:
                    return set(range(0, num_timesteps, i))
            raise ValueError("no stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError("section too small")
        if section_count <= 1:
            frac_stride = 1
        else:
            frac_stride = (size - 1) / (section_count - 1)
        cur_idx = 0.0
        taken_steps = []
        for _ in range(section_count):
            taken_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken_steps
        start_idx += size
    return set(all_steps)


def abar_of(betas) -> np.ndarray:
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


MIN_T = {"linear": 21, "cosine": 1, "scaled_linear": 1, "sigmoid": 1}

# --------------------------------------------------------------------------- reference numbers


def test_linear_t1000_reference_numbers():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, rel=1e-14)
    assert betas[-1] == pytest.approx(0.02, rel=1e-14)
    # evenly spaced
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    # abar_T: the published number, and the direct product written as a plain loop
    direct = 1.0
    for i in range(1000):
        direct *= 1.0 - (1e-4 + i * (0.02 - 1e-4) / 999)
    abar_T = abar_of(betas)[-1]
    assert abar_T == pytest.approx(4.04e-5, rel=1e-2)
    assert abar_T == pytest.approx(direct, rel=1e-12)


def test_linear_is_rescaled_by_1000_over_T():
    betas = get_named_beta_schedule("linear", 4000)
    assert betas.shape == (4000,)
    assert betas[0] == pytest.approx(1e-4 * 1000 / 4000, rel=1e-14)
    assert betas[-1] == pytest.approx(0.02 * 1000 / 4000, rel=1e-14)
    small = get_named_beta_schedule("linear", 21)
    assert small[-1] == pytest.approx(20 / 21, rel=1e-14) and small[-1] < 1


def test_cosine_t1000_reference_numbers():
    betas = get_named_beta_schedule("cosine", 1000)
    ref = ref_cosine_betas(1000)
    assert betas[0] == pytest.approx(4.13e-5, rel=1e-2)
    assert betas[0] == pytest.approx(ref[0], rel=1e-12)
    # whole table (1 - ratio amplifies rounding of the cosines near t = 0)
    np.testing.assert_allclose(betas, ref, rtol=1e-10)
    assert betas[-1] == 0.999  # clipped at max_beta
    # abar(t) of the paper at the kept steps
    t = np.arange(1, 1001) / 1000
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(abar_of(betas)[:-1], f[:-1], rtol=1e-9)


def test_cosine_options():
    betas = get_named_beta_schedule("cosine", 50, s=0.02, max_beta=0.5)
    np.testing.assert_allclose(betas, ref_cosine_betas(50, s=0.02, max_beta=0.5), rtol=1e-10)
    assert betas.max() == 0.5


def test_scaled_linear_and_sigmoid_match_their_formulas():
    T = 1000
    sl = get_named_beta_schedule("scaled_linear", T)
    assert sl[0] == pytest.approx(0.00085, rel=1e-13) and sl[-1] == pytest.approx(0.012, rel=1e-13)
    i = 400
    root = math.sqrt(0.00085) + i * (math.sqrt(0.012) - math.sqrt(0.00085)) / (T - 1)
    assert sl[i] == pytest.approx(root**2, rel=1e-13)
    sg = get_named_beta_schedule("sigmoid", T, beta_start=2e-4, beta_end=0.03)
    x = -6 + i * 12 / (T - 1)
    assert sg[i] == pytest.approx(1 / (1 + math.exp(-x)) * (0.03 - 2e-4) + 2e-4, rel=1e-13)
    assert np.all(np.diff(sg) > 0) and np.all(np.diff(sl) > 0)
    sg_default = get_named_beta_schedule("sigmoid", 11)
    assert sg_default[5] == pytest.approx(0.5 * (0.02 - 1e-4) + 1e-4, rel=1e-13)  # sigmoid(0) = 1/2


@given(name=st.sampled_from(SCHEDULE_NAMES), T=st.integers(1, 1000), rescale=st.booleans())
def test_every_schedule_is_in_range(name, T, rescale):
    T = max(T, MIN_T[name], 2 if rescale else 1)
    betas = get_named_beta_schedule(name, T, rescale_zero_terminal_snr=rescale)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert np.all(np.isfinite(betas))
    assert np.all((betas[:-1] > 0) & (betas[:-1] < 1))
    if rescale:
        assert betas[-1] == 1.0
    else:
        assert 0 < betas[-1] < 1
    abar = abar_of(betas)
    assert np.all(np.diff(abar) < 0) and abar[0] < 1


def test_betas_for_alpha_bar_matches_its_definition():
    betas = betas_for_alpha_bar(10, lambda t: 1 - t**2 / 2, max_beta=0.999)
    t = np.arange(11) / 10
    a = 1 - t**2 / 2
    np.testing.assert_allclose(betas, 1 - a[1:] / a[:-1], rtol=1e-13)
    clipped = betas_for_alpha_bar(4, lambda t: 1 - t, max_beta=0.9)  # last ratio is 0 -> beta 1 -> clipped
    assert clipped[-1] == 0.9 and clipped[0] == pytest.approx(0.25)
    assert betas_for_alpha_bar(4, lambda t: 1 - t, max_beta=1.0)[-1] == 1.0


# --------------------------------------------------------------------------- zero terminal SNR


@given(name=st.sampled_from(SCHEDULE_NAMES), T=st.integers(2, 1000))
def test_rescale_zero_terminal_snr_properties(name, T):
    betas = get_named_beta_schedule(name, max(T, MIN_T[name]))
    new = rescale_zero_terminal_snr(betas)
    assert new.shape == betas.shape and new.dtype == np.float64
    assert new[-1] == 1.0
    abar_old, abar_new = abar_of(betas), abar_of(new)
    assert abar_new[-1] == 0.0
    assert abar_new[0] == abar_old[0]
    assert np.all((new[:-1] > 0) & (new[:-1] < 1))
    # sqrt(abar) is mapped by the affine map that sends sqrt(abar_1) -> itself and sqrt(abar_T) -> 0
    s_old, s_new = np.sqrt(abar_old), np.sqrt(abar_new)
    expected = (s_old - s_old[-1]) * s_old[0] / (s_old[0] - s_old[-1])
    np.testing.assert_allclose(s_new, expected, rtol=1e-10, atol=1e-13)
    # ... so the slope between any two steps is the same
    slope = (s_new[0] - s_new[-1]) / (s_old[0] - s_old[-1])
    if len(s_old) > 2:
        mid = len(s_old) // 2
        assert (s_new[0] - s_new[mid]) / (s_old[0] - s_old[mid]) == pytest.approx(slope, rel=1e-9)
    # already zero terminal SNR: a fixed point
    np.testing.assert_allclose(rescale_zero_terminal_snr(new), new, rtol=1e-10, atol=1e-15)


def test_rescale_zero_terminal_snr_stable_diffusion():
    betas = get_named_beta_schedule("scaled_linear", 1000, rescale_zero_terminal_snr=True)
    direct = rescale_zero_terminal_snr(get_named_beta_schedule("scaled_linear", 1000))
    np.testing.assert_array_equal(betas, direct)
    abar = abar_of(betas)
    assert abar[0] == 1 - 0.00085 and abar[-1] == 0.0
    # SD's original terminal SNR is ~0.0047 (sqrt(abar_T) ~ 0.068, Lin et al. 2024, Table 1); now 0
    orig = abar_of(get_named_beta_schedule("scaled_linear", 1000))
    assert math.sqrt(orig[-1]) == pytest.approx(0.068, abs=1e-3)


# --------------------------------------------------------------------------- check_betas


def test_check_betas_accepts_and_converts():
    out = check_betas([0.1, 0.2, 1.0])
    assert out.dtype == np.float64 and out.tolist() == [0.1, 0.2, 1.0]
    src = np.array([0.1, 0.5], dtype=np.float32)
    out = check_betas(src)
    assert out.dtype == np.float64 and out is not src


@pytest.mark.parametrize(
    "betas, exc, match",
    [
        ([[0.1, 0.2]], ValueError, r"my_betas must be 1-D, got shape \(1, 2\)"),
        ([], ValueError, r"my_betas must not be empty"),
        ([0.1, float("nan"), 0.2], ValueError, r"my_betas must be finite, got my_betas\[1\] = nan"),
        ([0.1, float("inf")], ValueError, r"my_betas must be finite, got my_betas\[1\] = inf"),
        ([0.1, 0.0, 0.2], ValueError, r"my_betas.*\(0, 1\).*my_betas\[1\] = 0\.0"),
        ([0.1, -0.2], ValueError, r"my_betas.*\(0, 1\).*my_betas\[1\] = -0\.2"),
        ([1.0, 0.2], ValueError, r"my_betas.*last step only.*my_betas\[0\] = 1\.0"),
        ([0.1, 1.5], ValueError, r"my_betas.*my_betas\[1\] = 1\.5"),
        (["a", "b"], TypeError, r"my_betas must be a 1-D array of real numbers.*dtype"),
        ([True, False], TypeError, r"my_betas.*dtype bool"),
        ([0.1 + 1j], TypeError, r"my_betas.*dtype complex"),
    ],
)
def test_check_betas_refuses(betas, exc, match):
    with pytest.raises(exc, match=match):
        check_betas(betas, name="my_betas")


# --------------------------------------------------------------------------- respacing: space_timesteps


def test_ddim50_at_1000():
    steps = space_timesteps(1000, "ddim50")
    assert steps.dtype == np.int64
    np.testing.assert_array_equal(steps, np.arange(0, 1000, 20))
    assert steps[-1] == 980  # never reaches 999 (improved-diffusion's ddimN)
    np.testing.assert_array_equal(respaced_timesteps(1000, "ddim50"), steps)


def test_section_counts_10_15_20_at_300():
    ref = sorted(ref_space_timesteps(300, "10,15,20"))
    steps = space_timesteps(300, "10,15,20")
    assert steps.tolist() == ref
    assert len(ref) == 45 and ref[:3] == [0, 11, 22] and ref[-1] == 299
    np.testing.assert_array_equal(space_timesteps(300, [10, 15, 20]), steps)
    np.testing.assert_array_equal(space_timesteps(300, (10, 15, 20)), steps)
    np.testing.assert_array_equal(respaced_timesteps(300, "10,15,20"), steps)


@given(T=st.integers(1, 1000), counts=st.lists(st.integers(0, 60), min_size=1, max_size=5))
def test_space_timesteps_matches_improved_diffusion(T, counts):
    try:
        ref = ref_space_timesteps(T, counts)
    except (ValueError, ZeroDivisionError):
        with pytest.raises(ValueError, match="section_counts"):
            space_timesteps(T, counts)
        return
    if not ref:
        with pytest.raises(ValueError, match="section_counts"):
            space_timesteps(T, counts)
        return
    steps = space_timesteps(T, counts)
    assert steps.tolist() == sorted(ref)
    assert len(steps) == sum(counts)  # sections never overlap nor merge steps
    assert steps.dtype == np.int64 and steps[0] >= 0 and steps[-1] <= T - 1


@given(T=st.integers(2, 1000), n=st.integers(2, 1000))
def test_ddim_matches_improved_diffusion(T, n):
    try:
        ref = ref_space_timesteps(T, f"ddim{n}")
    except ValueError:
        with pytest.raises(ValueError, match=rf"no integer stride gives exactly {n} steps"):
            space_timesteps(T, f"ddim{n}")
        return
    steps = space_timesteps(T, f"ddim{n}")
    assert steps.tolist() == sorted(ref) and len(steps) == n and steps[0] == 0
    assert len(set(np.diff(steps).tolist())) <= 1  # even stride


def test_ddim1_gives_step_zero():
    # improved-diffusion's loop tries strides 1..T-1 and refuses ddim1; the stride T gives [0]
    assert space_timesteps(10, "ddim1").tolist() == [0]
    assert space_timesteps(1, "ddim1").tolist() == [0]


# --------------------------------------------------------------------------- respacing: respaced_timesteps


@given(data=st.data(), T=st.integers(1, 1000), spacing=st.sampled_from(SPACINGS))
def test_respaced_timesteps_properties(data, T, spacing):
    n = data.draw(st.integers(1, T), label="n")
    offset = 0
    if spacing == "leading":
        offset = data.draw(st.integers(0, T - 1 - (n - 1) * (T // n)), label="steps_offset")
    steps = respaced_timesteps(T, n, spacing, steps_offset=offset)
    assert steps.dtype == np.int64 and steps.shape == (n,)
    assert np.all(np.diff(steps) > 0)  # sorted, unique
    assert steps[0] >= 0 and steps[-1] <= T - 1
    if spacing == "trailing":
        assert steps[-1] == T - 1
        if n == T:
            np.testing.assert_array_equal(steps, np.arange(T))
        # diffusers' formula; where its float arange yields n+1 entries, the extra one is step -1
        diffusers = np.round(np.arange(T, 0, -T / n)) - 1
        assert len(diffusers) in (n, n + 1)
        if len(diffusers) == n + 1:
            assert diffusers[-1] == -1
        np.testing.assert_array_equal(steps, np.sort(diffusers[:n]))
        # within one step of the exact T (n - k) / n - 1 (ties are decided by float rounding)
        exact = np.array([T * (n - k) / n for k in range(n)])[::-1] - 1
        assert np.all(np.abs(steps - exact) <= 0.5 + 1e-9)
    elif spacing == "linspace":
        assert steps[0] == 0
        if n > 1:
            assert steps[-1] == T - 1
        np.testing.assert_array_equal(steps, np.round(np.linspace(0, T - 1, n)))
    else:
        assert steps[0] == offset
        np.testing.assert_array_equal(np.diff(steps), T // n)


def test_respaced_timesteps_known_values():
    assert respaced_timesteps(1000, 10, "linspace").tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert respaced_timesteps(1000, 10, "leading", steps_offset=1).tolist() == list(range(1, 1000, 100))
    assert respaced_timesteps(1000, 10, "trailing").tolist() == list(range(99, 1000, 100))
    # diffusers' round(arange(17, 0, -17/7)) - 1 has 8 entries, the last -1; ours has 7
    assert len(np.arange(17, 0, -17 / 7)) == 8
    assert respaced_timesteps(17, 7, "trailing").tolist() == [1, 4, 6, 9, 11, 14, 16]


# --------------------------------------------------------------------------- respacing: respace_betas


@given(
    name=st.sampled_from(SCHEDULE_NAMES),
    T=st.integers(21, 1000),
    spacing=st.sampled_from(SPACINGS),
    frac=st.floats(0.0, 1.0),
)
def test_respace_betas_keeps_abar_at_kept_steps(name, T, spacing, frac):
    betas = get_named_beta_schedule(name, T)
    n = max(1, int(round(frac * T)))
    steps = respaced_timesteps(T, n, spacing)
    new_betas, timestep_map = respace_betas(betas, steps)
    assert new_betas.shape == (n,) and timestep_map.dtype == np.int64
    np.testing.assert_array_equal(timestep_map, steps)
    assert np.all((new_betas > 0) & (new_betas < 1))
    # atol: a beta near 1 holds 1 - beta only to ~1e-16 absolute (float64 spacing near 1)
    np.testing.assert_allclose(abar_of(new_betas), abar_of(betas)[steps], rtol=1e-12, atol=1e-14)
    # the formula of Nichol & Dhariwal 2021, §4, directly
    abar = abar_of(betas)
    prev = np.concatenate([[1.0], abar[steps[:-1]]])
    np.testing.assert_allclose(new_betas, 1 - abar[steps] / prev, rtol=1e-9)


@given(name=st.sampled_from(SCHEDULE_NAMES), T=st.integers(21, 1000), rescale=st.booleans())
def test_respace_to_all_steps_is_identity(name, T, rescale):
    betas = get_named_beta_schedule(name, T, rescale_zero_terminal_snr=rescale)
    new_betas, timestep_map = respace_betas(betas, np.arange(T))
    np.testing.assert_allclose(new_betas, betas, rtol=1e-13)
    np.testing.assert_array_equal(timestep_map, np.arange(T))


def test_respace_betas_ddim50_and_zero_terminal_snr():
    betas = get_named_beta_schedule("linear", 1000)
    new_betas, tmap = respace_betas(betas, space_timesteps(1000, "ddim50"))
    abar = abar_of(betas)
    assert abar_of(new_betas)[-1] == pytest.approx(abar[980], rel=1e-12)  # ends at abar[980], not abar_T
    assert new_betas[0] == betas[0]
    assert new_betas[1] == pytest.approx(1 - abar[20] / abar[0], rel=1e-10)
    assert tmap[-1] == 980
    zts = get_named_beta_schedule("cosine", 1000, rescale_zero_terminal_snr=True)
    new_betas, tmap = respace_betas(zts, respaced_timesteps(1000, 10, "trailing"))
    assert new_betas[-1] == 1.0 and abar_of(new_betas)[-1] == 0.0
    np.testing.assert_allclose(abar_of(new_betas)[:-1], abar_of(zts)[tmap[:-1]], rtol=1e-9)


# --------------------------------------------------------------------------- bad input


def _linear():
    return get_named_beta_schedule("linear", 100)


BAD_CALLS = [
    # get_named_beta_schedule
    (lambda: get_named_beta_schedule("quadratic", 10), ValueError, r"name must be one of .*'cosine'.*'quadratic'"),
    (lambda: get_named_beta_schedule(3, 10), TypeError, r"name must be a str"),
    (lambda: get_named_beta_schedule("cosine", 0), ValueError, r"num_timesteps must be an integer >= 1; got 0"),
    (lambda: get_named_beta_schedule("cosine", -5), ValueError, r"num_timesteps.*got -5"),
    (lambda: get_named_beta_schedule("cosine", 10.0), TypeError, r"num_timesteps must be an integer; got 10\.0"),
    (lambda: get_named_beta_schedule("cosine", True), TypeError, r"num_timesteps must be an integer; got True"),
    (lambda: get_named_beta_schedule("linear", 20), ValueError, r"num_timesteps must be >= 21 for the linear.*got 20"),
    (lambda: get_named_beta_schedule("linear", 1), ValueError, r"num_timesteps must be >= 21.*got 1"),
    (lambda: get_named_beta_schedule("linear", 100, beta_start=0.1), TypeError, r"beta_start.*'linear'"),
    (lambda: get_named_beta_schedule("cosine", 100, bogus=1), TypeError, r"'bogus'.*allowed: \['max_beta', 's'\]"),
    (lambda: get_named_beta_schedule("scaled_linear", 10, beta_end=1.5), ValueError, r"beta_end must be.*\(0\.0, 1\.0\).*1\.5"),
    (lambda: get_named_beta_schedule("sigmoid", 10, beta_start=0), ValueError, r"beta_start must be.*got 0\.0"),
    (lambda: get_named_beta_schedule("sigmoid", 10, beta_start=float("nan")), ValueError, r"beta_start.*nan"),
    (lambda: get_named_beta_schedule("sigmoid", 10, beta_end="0.1"), TypeError, r"beta_end must be a real number"),
    (lambda: get_named_beta_schedule("cosine", 10, max_beta=1.2), ValueError, r"max_beta.*\(0\.0, 1\.0\].*1\.2"),
    (lambda: get_named_beta_schedule("cosine", 10, s=-0.1), ValueError, r"s must be a finite number.*-0\.1"),
    (lambda: get_named_beta_schedule("cosine", 10, rescale_zero_terminal_snr=1), TypeError, r"rescale_zero_terminal_snr must be a bool"),
    (lambda: get_named_beta_schedule("cosine", 1, rescale_zero_terminal_snr=True), ValueError, r"betas must have at least 2 steps"),
    # betas_for_alpha_bar
    (lambda: betas_for_alpha_bar(10, 0.5), TypeError, r"alpha_bar must be a callable"),
    (lambda: betas_for_alpha_bar(0, lambda t: 1 - t), ValueError, r"num_timesteps must be an integer >= 1; got 0"),
    (lambda: betas_for_alpha_bar(10, lambda t: 1 - t, max_beta=0), ValueError, r"max_beta.*got 0\.0"),
    (lambda: betas_for_alpha_bar(10, lambda t: 1 + t), ValueError, r"alpha_bar must be strictly decreasing"),
    (lambda: betas_for_alpha_bar(10, lambda t: 0.5), ValueError, r"alpha_bar must be strictly decreasing.*0\.5"),
    (lambda: betas_for_alpha_bar(10, lambda t: float("nan")), ValueError, r"alpha_bar must return finite.*nan"),
    (lambda: betas_for_alpha_bar(10, lambda t: 1 - 2 * t), ValueError, r"alpha_bar must return finite values in \(0, 1\].*alpha_bar\(0\.5\) = 0\.0"),
    (lambda: betas_for_alpha_bar(10, lambda t: 1 - 1.05 * t), ValueError, r"alpha_bar.*alpha_bar\(1\.0\) = -0\.05"),
    (lambda: betas_for_alpha_bar(10, lambda t: "x"), TypeError, r"alpha_bar must return a real number"),
    # rescale_zero_terminal_snr
    (lambda: rescale_zero_terminal_snr([0.5]), ValueError, r"betas must have at least 2 steps.*got 1"),
    (lambda: rescale_zero_terminal_snr([0.5, 1.2]), ValueError, r"betas.*betas\[1\] = 1\.2"),
    (lambda: rescale_zero_terminal_snr([0.5, np.nan]), ValueError, r"betas must be finite.*betas\[1\] = nan"),
    # space_timesteps
    (lambda: space_timesteps(1000, "ddim0"), ValueError, r"section_counts 'ddimN' needs N >= 1.*'ddim0'"),
    (lambda: space_timesteps(1000, "ddimx"), ValueError, r"section_counts must be 'ddimN'.*'ddimx'"),
    (lambda: space_timesteps(1000, "ddim1001"), ValueError, r"section_counts 'ddim1001': no integer stride gives exactly 1001 steps.*1000"),
    (lambda: space_timesteps(1000, "ddim999"), ValueError, r"section_counts 'ddim999': no integer stride"),
    (lambda: space_timesteps(1000, "10,a"), ValueError, r"section_counts must be .*'10,a'"),
    (lambda: space_timesteps(10, "4,8"), ValueError, r"section_counts '4,8': section 1 has 5 steps.*cannot take 8"),
    (lambda: space_timesteps(10, [0, 0]), ValueError, r"section_counts must be non-negative ints with a positive sum"),
    (lambda: space_timesteps(10, [3, -1]), ValueError, r"section_counts.*\[3, -1\]"),
    (lambda: space_timesteps(10, []), ValueError, r"section_counts.*\[\]"),
    (lambda: space_timesteps(10, [2.5]), TypeError, r"section_counts must be a str or a sequence of ints.*2\.5"),
    (lambda: space_timesteps(10, 5), TypeError, r"section_counts must be a str or a sequence of ints, got 5"),
    (lambda: space_timesteps(0, "ddim1"), ValueError, r"num_timesteps must be an integer >= 1; got 0"),
    # respaced_timesteps
    (lambda: respaced_timesteps(100, 0), ValueError, r"num_steps must be an integer >= 1; got 0"),
    (lambda: respaced_timesteps(100, 101), ValueError, r"num_steps must be <= num_timesteps = 100, got 101"),
    (lambda: respaced_timesteps(100, 10.0), TypeError, r"num_steps must be an integer; got 10\.0"),
    (lambda: respaced_timesteps(100, 10, "uniform"), ValueError, r"spacing must be one of 'linspace', 'leading', 'trailing'; got 'uniform'"),
    (lambda: respaced_timesteps(100, 10, None), TypeError, r"spacing must be a str"),
    (lambda: respaced_timesteps(100, 10, "leading", steps_offset=-1), ValueError, r"steps_offset must be an integer >= 0; got -1"),
    (lambda: respaced_timesteps(100, 10, "leading", steps_offset=10), ValueError, r"steps_offset must be <= 9 .*got 10"),
    (lambda: respaced_timesteps(100, 10, "trailing", steps_offset=1), ValueError, r"steps_offset applies to spacing='leading' only"),
    (lambda: respaced_timesteps(100, "ddim10", "trailing"), ValueError, r"num_steps 'ddim10'.*spacing='trailing'"),
    (lambda: respaced_timesteps(100, "ddim99"), ValueError, r"section_counts 'ddim99'"),
    # respace_betas
    (lambda: respace_betas(_linear(), [0, 5, 5]), ValueError, r"timesteps must be strictly increasing.*timesteps\[2\] = 5"),
    (lambda: respace_betas(_linear(), [5, 3]), ValueError, r"timesteps must be strictly increasing.*timesteps\[0\] = 5"),
    (lambda: respace_betas(_linear(), [0, 100]), ValueError, r"timesteps must lie in \[0, 99\].*timesteps\[1\] = 100"),
    (lambda: respace_betas(_linear(), [-1, 3]), ValueError, r"timesteps must lie in \[0, 99\].*timesteps\[0\] = -1"),
    (lambda: respace_betas(_linear(), [0.0, 3.0]), TypeError, r"timesteps must be a 1-D array of ints, got dtype float64"),
    (lambda: respace_betas(_linear(), []), TypeError, r"timesteps must be a 1-D array of ints"),
    (lambda: respace_betas(_linear(), np.array([], dtype=np.int64)), ValueError, r"timesteps must be a non-empty 1-D array"),
    (lambda: respace_betas(_linear(), [[0, 1]]), ValueError, r"timesteps must be a non-empty 1-D array, got shape \(1, 2\)"),
    (lambda: respace_betas([0.1, 0.0], [0, 1]), ValueError, r"betas.*betas\[1\] = 0\.0"),
    # check_betas
    (lambda: check_betas([0.1], name=3), TypeError, r"name must be a str"),
]


@pytest.mark.parametrize("call, exc, match", BAD_CALLS, ids=[f"bad{i}" for i in range(len(BAD_CALLS))])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
