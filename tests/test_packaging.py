"""The one distribution: pyproject.toml's entry points resolve, every adapter package is shipped,
the `diffcore` command answers, the core's dependencies stay NumPy and array-api-compat, and
`import diffcore` stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _resolve(value: str):
    module, _, attr = value.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_backends_are_registered_by_the_root_distribution():
    eps = PYPROJECT["project"]["entry-points"]["diffcore.backends"]
    assert eps == {"numpy": "diffcore.backends:NumPyBackend", "torch": "diffcore_torch:TorchBackend",
                   "jax": "diffcore_jax:JaxBackend"}
    assert _resolve(eps["numpy"]).__name__ == "NumPyBackend"
    for name in ("torch", "jax"):
        pytest.importorskip(name)
        assert _resolve(eps[name])().name == name
    # no adapter keeps a pyproject of its own (it would register the same backend twice)
    assert not list((ROOT / "backends").glob("*/pyproject.toml"))


def test_every_adapter_package_is_found_by_the_package_finder():
    from setuptools import find_packages

    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    found = {p for where in find["where"] for p in find_packages(str(ROOT / where), include=find["include"])}
    adapters = {p.parent.name for p in (ROOT / "backends").glob("*/*/__init__.py")}
    assert adapters == {"diffcore_torch", "diffcore_jax"}
    assert adapters <= found and "diffcore" in found and "diffcore.samplers" in found
    assert not {p for p in found if p.startswith(("tests", "bench"))}


def test_console_script_and_python_m_reach_the_command():
    assert PYPROJECT["project"]["scripts"] == {"diffcore": "diffcore.cli:main"}
    main = _resolve(PYPROJECT["project"]["scripts"]["diffcore"])
    assert main([]) == 2  # no command: the help, and a usage status
    run = subprocess.run([sys.executable, "-m", "diffcore", "info"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and "diffcore" in run.stdout and "backend" in run.stdout


def test_core_dependencies_are_numpy_and_array_api_compat_and_extras_bring_the_command():
    deps = {d.split(">")[0].split("=")[0].strip() for d in PYPROJECT["project"]["dependencies"]}
    assert deps == {"numpy", "array-api-compat"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    for framework in ("torch", "jax"):
        assert "diffcore[cli]" in extras[framework]


def test_import_diffcore_imports_no_framework_and_no_plotting():
    heavy = ("torch", "jax", "flax", "matplotlib", "tqdm", "sklearn", "PIL")
    code = f"import diffcore, diffcore.metrics, diffcore.plots, sys; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
