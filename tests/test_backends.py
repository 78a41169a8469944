"""Runtime backends: registry, random numbers, loop drivers, devices (autodiff: test_autodiff.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import EntryPoint
from typing import Any, NamedTuple

import numpy as np
import pytest

import diffcore
from diffcore._array import mean_flat
from diffcore.backends import LoopError, StepBudgetExceeded

from conftest import jax_x64, to_np
from harness import assert_same_on_all_backends

backend_mod = importlib.import_module("diffcore.backends")  # the module (diffcore.backend is the function)

BACKENDS = ["numpy", "torch", "jax"]


def load_backend(name: str):
    if name != "numpy":
        pytest.importorskip(name)
        pytest.importorskip(f"diffcore_{name}")
    return diffcore.backend(name)


@pytest.fixture(params=BACKENDS)
def bk(request):
    return load_backend(request.param)


class State(NamedTuple):
    x: Any
    n: Any


def step_fn(state: State, plan_i: tuple, noise_i: Any) -> State:
    """A toy ancestral step: x <- a_i x + b_i noise_i (+ count)."""
    a, b = plan_i
    return State(state.x * a + b * noise_i, state.n + 1)


def make_state(bk, batch=3, dim=2, dtype=None):
    xp = bk.xp
    dtype = dtype or xp.float64
    x = xp.asarray(np.linspace(-1.0, 1.0, batch * dim).reshape(batch, dim), dtype=dtype)
    return State(x, xp.asarray(0))


def make_plan(bk, steps, dtype=None):
    xp = bk.xp
    dtype = dtype or xp.float64
    a = np.linspace(0.9, 0.5, steps)
    return (xp.asarray(a, dtype=dtype), xp.asarray(np.sqrt(1 - a**2), dtype=dtype))


def plain_loop(bk, state, plan, key, noise_shape, sample_ids=None):
    """The reference: a for-loop drawing noise from fold_in(key, i) eagerly."""
    for i in range(plan[0].shape[0]):
        noise = bk.normal(bk.fold_in(key, i), noise_shape, state.x.dtype, sample_ids=sample_ids)
        state = step_fn(state, (plan[0][i], plan[1][i]), noise)
    return state


# registry -------------------------------------------------------------------------------------


def test_registry_loads_every_backend_on_request():
    names = diffcore.available_backends()
    assert {"numpy", "torch", "jax"} <= set(names)
    for name in BACKENDS:
        bk = load_backend(name)
        assert bk.name == name
        assert isinstance(bk, diffcore.Backend)
        assert diffcore.backend(name) is bk


def test_import_diffcore_imports_no_framework():
    code = "import diffcore, sys; assert 'torch' not in sys.modules and 'jax' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'; known backends: .*'jax'.*'numpy'.*'torch'"):
        diffcore.backend("tensorflow")
    with pytest.raises(TypeError, match="string"):
        diffcore.backend(3)


def test_missing_framework_names_the_extra(monkeypatch):
    pytest.importorskip("diffcore_torch")
    diffcore.backend.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
        monkeypatch.delitem(sys.modules, "diffcore_torch")
        with pytest.raises(ImportError, match=r"pip install 'diffcore\[torch\]'"):
            diffcore.backend("torch")
    finally:
        monkeypatch.undo()
        diffcore.backend.cache_clear()


def test_third_party_backend_via_entry_point(monkeypatch):
    found = dict(backend_mod._entry_points())
    found["toy"] = EntryPoint(name="toy", value="diffcore.backends:NumPyBackend", group=backend_mod.ENTRY_POINT_GROUP)
    found["broken"] = EntryPoint(name="broken", value="builtins:object", group=backend_mod.ENTRY_POINT_GROUP)
    found["absent"] = EntryPoint(name="absent", value="no_such_pkg_xyz:B", group=backend_mod.ENTRY_POINT_GROUP)
    monkeypatch.setattr(backend_mod, "_entry_points", lambda: found)
    diffcore.backend.cache_clear()
    try:
        assert "toy" in diffcore.available_backends()
        assert isinstance(diffcore.backend("toy"), diffcore.NumPyBackend)
        with pytest.raises(TypeError, match=r"does not implement the Backend protocol; missing: \[.*'name'"):
            diffcore.backend("broken")
        with pytest.raises(ImportError, match="install the package that provides backend 'absent'"):
            diffcore.backend("absent")
    finally:
        monkeypatch.undo()
        diffcore.backend.cache_clear()


def test_backend_for_arrays():
    assert diffcore.backend_for(np.zeros(2)).name == "numpy"
    torch = pytest.importorskip("torch")
    assert diffcore.backend_for(torch.zeros(2)).name == "torch"
    jnp = pytest.importorskip("jax.numpy")
    assert diffcore.backend_for(jnp.zeros(2)).name == "jax"


# random numbers -------------------------------------------------------------------------------


N_DRAWS = 4096  # one shape for the draw tests: JAX compiles once per (method, shape, dtype)


@pytest.mark.parametrize("method", ["normal", "rademacher", "uniform"])
def test_draws_are_functions_of_the_key(bk, method):
    draw = getattr(bk, method)
    f64 = bk.xp.float64
    key = bk.key(7)
    a, b = to_np(draw(key, (N_DRAWS,), f64)), to_np(draw(key, (N_DRAWS,), f64))
    np.testing.assert_array_equal(a, b)  # drawing does not advance a key
    k1, k2 = bk.fold_in(key, 1), bk.fold_in(key, 2)
    assert not np.array_equal(to_np(draw(k1, (N_DRAWS,), f64)), to_np(draw(k2, (N_DRAWS,), f64)))
    assert not np.array_equal(to_np(draw(bk.key(8), (N_DRAWS,), f64)), a)
    # fold_in is order-sensitive: (1, 2) and (2, 1) are different streams
    assert not np.array_equal(
        to_np(draw(bk.fold_in(k1, 2), (N_DRAWS,), f64)), to_np(draw(bk.fold_in(k2, 1), (N_DRAWS,), f64))
    )
    # the distribution: within 4 standard errors
    n = N_DRAWS
    if method == "normal":
        assert abs(a.mean()) < 4 / np.sqrt(n) and abs(a.var() - 1) < 4 * np.sqrt(2 / n)
    elif method == "rademacher":
        assert set(np.unique(a)) == {-1.0, 1.0} and abs(a.mean()) < 4 / np.sqrt(n)
    else:
        assert a.min() >= 0 and a.max() < 1 and abs(a.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)


def test_draw_dtypes_and_shapes(bk):
    key = bk.key(0)
    assert to_np(bk.normal(key, (3, 2), bk.xp.float32)).dtype == np.float32
    expected = {"numpy": np.float64, "torch": np.float32, "jax": np.float64}[bk.name]  # tests run JAX x64
    assert to_np(bk.normal(key, (3, 2))).dtype == expected
    assert tuple(bk.normal(key, (3, 0, 2)).shape) == (3, 0, 2)
    if bk.name == "jax":
        with jax_x64(False):
            assert to_np(bk.normal(key, (3, 2))).dtype == np.float32


def test_per_sample_seeding_does_not_depend_on_the_batch(bk):
    xp = bk.xp
    key = bk.key(3)
    ids = np.arange(10, 18)
    batch8 = to_np(bk.normal(key, (8, 3, 2), xp.float64, sample_ids=xp.asarray(ids)))
    for i in (0, 5, 7):
        alone = to_np(bk.normal(key, (1, 3, 2), xp.float64, sample_ids=xp.asarray(ids[i : i + 1])))
        np.testing.assert_array_equal(alone[0], batch8[i])
    if bk.name != "jax":  # (one more compile on JAX for the same code path)
        halves = [to_np(bk.normal(key, (4, 3, 2), xp.float64, sample_ids=xp.asarray(ids[j : j + 4]))) for j in (0, 4)]
        np.testing.assert_array_equal(np.concatenate(halves), batch8)
    assert not np.array_equal(batch8[0], batch8[1])


@pytest.mark.parametrize("method", ["normal", "rademacher", "uniform"])
def test_per_sample_row_is_the_draw_of_its_folded_key(bk, method):
    draw = getattr(bk, method)
    key = bk.key(3)
    rows = to_np(draw(key, (8, 3, 2), bk.xp.float64, sample_ids=bk.xp.asarray(np.arange(10, 18))))
    np.testing.assert_array_equal(to_np(draw(bk.fold_in(key, 13), (3, 2), bk.xp.float64)), rows[3])


def test_per_sample_seeding_under_jit():
    bk = load_backend("jax")
    import jax

    key = bk.key(3)
    ids = bk.xp.arange(4)
    eager = bk.normal(key, (4, 3), sample_ids=ids)
    jitted = jax.jit(lambda k, i: bk.normal(k, (4, 3), sample_ids=i))(key, ids)
    np.testing.assert_array_equal(to_np(eager), to_np(jitted))


def test_bad_random_arguments(bk):
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        bk.key(-1)
    with pytest.raises(ValueError, match="sample_ids has 3 entries, but shape \\(4, 2\\)"):
        bk.normal(bk.key(0), (4, 2), sample_ids=bk.xp.asarray([0, 1, 2]))
    with pytest.raises(TypeError, match="key must come from"):
        bk.normal(12, (2,))


# loop drivers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_sample", [False, True])
def test_loop_matches_a_plain_loop(bk, per_sample):
    steps, shape = 6, (3, 2)
    state, plan, key = make_state(bk), make_plan(bk, steps), bk.key(11)
    ids = bk.xp.asarray([4, 9, 2]) if per_sample else None
    got = bk.loop(step_fn, state, plan, key=key, noise_shape=shape, sample_ids=ids)
    want = plain_loop(bk, state, plan, key, shape, sample_ids=ids)
    np.testing.assert_allclose(to_np(got.x), to_np(want.x), rtol=1e-13, atol=1e-13)
    assert int(got.n) == steps
    assert not np.allclose(to_np(got.x), to_np(state.x))


def test_loop_without_noise(bk):
    def decay(state, plan_i, noise_i):
        assert noise_i is None
        return State(state.x * plan_i[0], state.n + 1)

    state = make_state(bk)
    plan = (bk.xp.asarray([0.5, 0.5, 0.5], dtype=bk.xp.float64),)
    got = bk.loop(decay, state, plan)
    np.testing.assert_allclose(to_np(got.x), to_np(state.x) / 8, rtol=1e-15)


def test_torch_compiled_step_matches_eager():
    bk = load_backend("torch")
    state, plan, key = make_state(bk), make_plan(bk, 4), bk.key(2)
    # the "eager" dynamo backend exercises torch.compile's tracing without a C++ build
    got = bk.loop(step_fn, state, plan, key=key, noise_shape=(3, 2), compile={"backend": "eager"})
    want = bk.loop(step_fn, state, plan, key=key, noise_shape=(3, 2))
    np.testing.assert_allclose(to_np(got.x), to_np(want.x), rtol=1e-14)
    with pytest.raises(TypeError, match="compile must be a bool or a dict"):
        type(bk)(compile="yes")


_TRACES = [0]


def counting_step(state, plan_i, noise_i):
    _TRACES[0] += 1  # runs once per trace under jit, once per step eagerly
    return step_fn(state, plan_i, noise_i)


def test_jax_loop_compiles_once_per_shape():
    bk = load_backend("jax")
    _TRACES[0] = 0
    state, key = make_state(bk), bk.key(0)
    first = bk.loop(counting_step, state, make_plan(bk, 9), key=key, noise_shape=(3, 2))
    traces = _TRACES[0]
    assert 1 <= traces <= 2  # eval_shape's check and lax.scan's body: not one per step
    again = bk.loop(counting_step, State(state.x + 1, state.n), make_plan(bk, 9), key=bk.key(5), noise_shape=(3, 2))
    assert _TRACES[0] == traces  # same shapes: the compiled scan is reused
    assert not np.allclose(to_np(first.x), to_np(again.x))


def test_jax_loop_inside_jit_and_with_progress():
    bk = load_backend("jax")
    import jax

    state, plan, key = make_state(bk), make_plan(bk, 6), bk.key(4)
    whole = bk.loop(step_fn, state, plan, key=key, noise_shape=(3, 2))
    seen = []
    chunked = bk.loop(step_fn, state, plan, key=key, noise_shape=(3, 2), progress=lambda d, n: seen.append((d, n)), chunk_size=4)
    assert seen == [(4, 6), (6, 6)]
    np.testing.assert_allclose(to_np(chunked.x), to_np(whole.x), rtol=1e-13)
    seen.clear()
    inside = jax.jit(
        lambda s, k: bk.loop(step_fn, s, plan, key=k, noise_shape=(3, 2), progress=lambda d, n: seen.append(d), chunk_size=4)
    )(state, key)
    jax.effects_barrier()
    np.testing.assert_allclose(to_np(inside.x), to_np(whole.x), rtol=1e-13)
    assert sorted(seen) == [4, 6]


def test_jax_progress_reports_when_a_chunk_has_run(monkeypatch):
    """A report at dispatch would fire every callback at once (JAX dispatches asynchronously) and
    Ctrl-C would wait for the whole run: each report must follow the chunk's completion."""
    bk = load_backend("jax")
    import jax

    events = []
    real = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready", lambda x: (events.append("ready"), real(x))[1])
    bk.loop(step_fn, make_state(bk), make_plan(bk, 6), key=bk.key(4), noise_shape=(3, 2),
            progress=lambda d, n: events.append(d), chunk_size=2)
    assert events == ["ready", 2, "ready", 4, "ready", 6]


@pytest.mark.parametrize("name", ["numpy", "torch"])  # JAX reports per chunk (test above)
def test_eager_progress_reports_every_step(name):
    bk = load_backend(name)
    seen = []
    bk.loop(step_fn, make_state(bk), make_plan(bk, 3), key=bk.key(0), noise_shape=(3, 2), progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_loop_names_the_field_that_changed(bk, change):
    xp = bk.xp

    def bad(state, plan_i, noise_i):
        x = state.x[:2] if change == "shape" else xp.astype(state.x, xp.float32)
        return state._replace(x=x)

    with pytest.raises(LoopError, match=r"changed state field 'x'"):
        bk.loop(bad, make_state(bk), make_plan(bk, 3))


def test_loop_bad_arguments(bk):
    state = make_state(bk)
    with pytest.raises(ValueError, match="plan must be a non-empty tuple"):
        bk.loop(step_fn, state, [bk.xp.zeros(3)])
    with pytest.raises(ValueError, match="equal length"):
        bk.loop(step_fn, state, (bk.xp.zeros(3), bk.xp.zeros(4)))
    with pytest.raises(ValueError, match="key is required"):
        bk.loop(step_fn, state, make_plan(bk, 2), noise_shape=(3, 2))


def _count_up(state):
    return State(state.x * 0.5, state.n + 1)


def _below(limit):
    return lambda state: state.n < limit


def test_while_loop_matches_plain_while(bk):
    state = make_state(bk)
    cond = _below(5)
    got = bk.while_loop(cond, _count_up, state, max_steps=5)  # exactly on budget: no error
    want = state
    while bool(cond(want)):
        want = _count_up(want)
    assert int(got.n) == 5
    np.testing.assert_allclose(to_np(got.x), to_np(want.x), rtol=1e-15)


def test_while_loop_budget_overrun_reports_the_steps(bk):
    with pytest.raises(StepBudgetExceeded, match="7 steps reached \\(max_steps=7\\)") as info:
        bk.while_loop(_below(100), _count_up, make_state(bk), max_steps=7)
    assert info.value.steps == 7
    if info.value.state is not None:
        assert int(info.value.state.n) == 7
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1; got 0"):
        bk.while_loop(_below(1), _count_up, make_state(bk), max_steps=0)


def test_while_loop_body_that_changes_shape(bk):
    with pytest.raises(LoopError, match="changed state field 'x'"):
        bk.while_loop(_below(3), lambda s: State(s.x[:1], s.n + 1), make_state(bk), max_steps=5)


def test_jax_while_loop_inside_jit():
    bk = load_backend("jax")
    import jax

    state = make_state(bk)
    ok = jax.jit(lambda s: bk.while_loop(_below(4), _count_up, s, max_steps=10))(state)
    assert int(ok.n) == 4
    with pytest.raises(Exception, match="4 steps reached"):  # raised from a host callback
        jax.block_until_ready(jax.jit(lambda s: bk.while_loop(_below(9), _count_up, s, max_steps=4))(state))
        jax.effects_barrier()


def test_nested_state_fields_are_named():
    class Inner(NamedTuple):
        v: Any

    class Outer(NamedTuple):
        x: Any
        inner: Inner

    before = Outer(np.zeros(2), Inner(np.zeros(3)))
    with pytest.raises(LoopError, match="'inner.v'"):
        backend_mod.check_state_unchanged(before, Outer(np.zeros(2), Inner(np.zeros(4))), 0)
    with pytest.raises(LoopError, match="returned a tuple"):
        backend_mod.check_state_unchanged(before, (np.zeros(2), Inner(np.zeros(3))), 0)


# devices --------------------------------------------------------------------------------------


def _device_kind(x) -> str:
    import array_api_compat

    return str(array_api_compat.device(x)).lower()


def test_devices(bk):
    devs = bk.devices()
    assert "cpu" in str(devs[0]).lower()
    cpu = bk.device("cpu")
    assert "cpu" in _device_kind(bk.normal(bk.key(0), (2,), device=cpu))
    names = [str(d).lower() for d in devs]
    if not any("cuda" in n or "gpu" in n for n in names):
        with pytest.raises(ValueError, match=r"device 'cuda' is not available.*available: \[.*cpu"):
            bk.device("cuda")
        with pytest.raises(ValueError, match="not available"):
            bk.normal(bk.key(0), (2,), device="cuda:3")


def test_loop_noise_follows_the_state_device():
    torch = pytest.importorskip("torch")
    bk = load_backend("torch")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        state = State(make_state(bk).x.to(dev), torch.tensor(0, device=dev))
        plan = tuple(p.to(dev) for p in make_plan(bk, 2))
        out = bk.loop(step_fn, state, plan, key=bk.key(0), noise_shape=(3, 2))
        assert out.x.device.type == dev


def test_numpy_backend_serves_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    bk = diffcore.backend("numpy")
    state = State(strict.asarray(np.ones((3, 2))), strict.asarray(0))
    plan = tuple(strict.asarray(p) for p in make_plan(bk, 3))
    out = bk.loop(step_fn, state, plan, key=bk.key(1), noise_shape=(3, 2))
    want = bk.loop(step_fn, State(np.ones((3, 2)), np.asarray(0)), make_plan(bk, 3), key=bk.key(1), noise_shape=(3, 2))
    assert type(out.x).__module__.startswith("array_api_strict")
    np.testing.assert_array_equal(np.from_dlpack(out.x), want.x)


# the cross-framework harness ------------------------------------------------------------------


def test_harness_on_a_core_function():
    x = np.random.default_rng(0).standard_normal((4, 3, 2))
    results = assert_same_on_all_backends(mean_flat, x)
    assert ("jax", "float32", "jit x64-off") in results or "jax" not in {k[0] for k in results}


def _sampler_with_numpy_noise(bk, x, a, b, index, noise):
    """A loop whose noise is given (NumPy-made, indexed by an integer plan entry)."""

    def step(state, plan_i, _):
        ai, bi, k = plan_i
        return State(state.x * ai + bi * noise[k], state.n + 1)

    return bk.loop(step, State(x, bk.xp.asarray(0)), (a, b, index)).x


def test_harness_drivers_agree_across_frameworks():
    rng = np.random.default_rng(1)
    steps = 5
    x, noise = rng.standard_normal((3, 2)), rng.standard_normal((steps, 3, 2))
    a = np.linspace(0.9, 0.5, steps)
    expected = lambda x, a, b, idx, noise: _sampler_with_numpy_noise(diffcore.backend("numpy"), x, a, b, idx, noise)
    assert_same_on_all_backends(
        _sampler_with_numpy_noise, x, a, np.sqrt(1 - a**2), np.arange(steps), noise,
        with_backend=True, expected=expected, rtol64=1e-12,
    )


def test_harness_catches_disagreement_and_promotion():
    x = np.random.default_rng(0).standard_normal((4, 3))

    def off_on_torch(x):
        return x * (1.001 if "torch" in type(x).__module__ else 1.0)

    with pytest.raises(AssertionError, match="torch float64"):
        assert_same_on_all_backends(off_on_torch, x)

    table = np.linspace(1.0, 2.0, 3)

    def promotes(x):  # multiplies by a float64 table: a float32 input comes back float64
        import array_api_compat

        xp = array_api_compat.array_namespace(x)
        return x * xp.asarray(table)

    with pytest.raises(AssertionError, match="float32 .*dtype float64"):
        assert_same_on_all_backends(promotes, x, backends=("torch",))


def test_the_documented_backend_works(monkeypatch):
    """docs/writing-a-backend.md's code, executed as written: registered through the entry-point
    table, it passes the protocol check, keys behave as values, sample_ids rows are single draws of
    the folded keys, and DDIM (eta = 0) from a given x_T equals the NumPy backend's result."""
    import re
    import types
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "writing-a-backend.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "class PCGBackend" in b]
    assert len(blocks) == 1
    module = types.ModuleType("diffcore_pcg_doc")
    exec(compile(blocks[0], "docs/writing-a-backend.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "diffcore_pcg_doc", module)
    found = dict(backend_mod._entry_points())
    found["pcg"] = EntryPoint(name="pcg", value="diffcore_pcg_doc:PCGBackend", group=backend_mod.ENTRY_POINT_GROUP)
    monkeypatch.setattr(backend_mod, "_entry_points", lambda: found)
    diffcore.backend.cache_clear()
    try:
        bk = diffcore.backend("pcg")
        key = bk.fold_in(bk.key(3), 7)
        x = bk.normal(key, (4, 5))
        assert x.shape == (4, 5) and np.array_equal(x, bk.normal(key, (4, 5)))
        assert not np.array_equal(x, bk.normal(bk.fold_in(bk.key(3), 8), (4, 5)))
        rows = bk.normal(key, (3, 5), sample_ids=[2, 9, 2])
        np.testing.assert_array_equal(rows[1], bk.normal(bk.fold_in(key, 9), (5,)))
        np.testing.assert_array_equal(rows[0], rows[2])
        assert bk.uniform(key, (1000,), np.float32).dtype == np.float32
        with pytest.raises(NotImplementedError, match="autodiff"):
            bk.vjp(lambda v: v, x, x)
        from diffcore.analytic import GaussianMixture

        mix = GaussianMixture(np.array([0.4, 0.6]), np.array([[-1.0, 0.5], [1.0, 0.0]]), np.array([0.3, 0.5]))
        sde = diffcore.VPSDE()
        x_T = np.random.default_rng(0).standard_normal((16, 2))
        got = diffcore.sample("ddim", mix.as_model(sde, "eps"), sde, (16, 2), backend="pcg", x_T=x_T, steps=20).x
        want = diffcore.sample("ddim", mix.as_model(sde, "eps"), sde, (16, 2), backend="numpy", x_T=x_T, steps=20).x
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        chain = diffcore.GaussianDiffusion(betas=diffcore.get_named_beta_schedule("linear", 50))
        noisy = diffcore.sample("ddpm", mix.as_model(chain, "eps"), chain, (8, 2), backend="pcg", seed=1).x
        assert noisy.shape == (8, 2) and np.isfinite(noisy).all()
    finally:
        monkeypatch.undo()
        diffcore.backend.cache_clear()


def test_jax_progress_chunks_have_one_length_where_a_divisor_allows():
    """A remainder chunk compiles a second scan: the default chunk divides the plan when it can."""
    pytest.importorskip("jax")
    from diffcore_jax import _progress_chunk

    for n in (7, 49, 50, 99, 100, 128, 1000):
        c = _progress_chunk(n)
        assert n % c == 0 and n / 20 <= c <= max(1, n / 4), (n, c)
    assert _progress_chunk(97) == 10  # a prime: about a tenth, one remainder chunk
