# The two commands of README.md: `make demo` (the main job) and `make test` (the whole suite).
# Each creates or refreshes the local virtual environment .venv by itself; the stamp file makes
# that idempotent (re-installed only when a pyproject.toml or constraints.txt changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffcore-installed

.PHONY: venv test demo bench clean

# One distribution holds the core and both adapters (backends/ is mapped in pyproject.toml). The
# uninstall drops the separate diffcore-torch / diffcore-jax distributions of older checkouts, which
# would register the same entry points a second time; it is a no-op when they are absent.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip uninstall -q -y diffcore-torch diffcore-jax 2>/dev/null || true
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,torch,jax]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --durations=15 $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m diffcore demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV)
