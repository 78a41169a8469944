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

# The demo needs one framework and the command's extras, not the test tools: a fresh clone installs
# only those ('.[torch]', or '.[jax]' when DEMO_ARGS names jax), about a minute less than the full
# set; an environment that already has the full set is used as it is.
DEMO_EXTRA = $(if $(findstring jax,$(DEMO_ARGS)),jax,torch)
DEMO_STAMP = $(if $(wildcard $(STAMP)),$(STAMP),$(VENV)/.diffcore-demo-$(DEMO_EXTRA))

# --no-compile: pip's byte-compiling of every installed module (torch's thousands) takes about 25 s
# of a 45 s install; the demo's one process compiles only what it imports (a few seconds).
$(VENV)/.diffcore-demo-%: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip uninstall -q -y diffcore-torch diffcore-jax 2>/dev/null || true
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -c constraints.txt -e '.[$*]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --durations=15 $(PYTEST_ARGS)

demo: $(DEMO_STAMP)
	$(PY) -m diffcore demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV)
