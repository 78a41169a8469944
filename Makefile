# The two commands of README.md: `make demo` (the main job) and `make test` (the whole suite).
# Each creates or refreshes the local virtual environment .venv by itself; the stamp file makes
# that idempotent (re-installed only when a pyproject.toml or constraints.txt changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffcore-installed
BACKENDS := $(wildcard backends/*/pyproject.toml)

.PHONY: venv test demo bench clean

$(STAMP): pyproject.toml constraints.txt $(BACKENDS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt \
		-e '.[dev,torch,jax]' $(foreach b,$(BACKENDS),-e ./$(patsubst %/,%,$(dir $(b))))
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m diffcore.demo

clean:
	rm -rf $(VENV)
