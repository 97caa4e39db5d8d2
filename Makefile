# The two set-up commands of the README:
#   make run    create .venv, install catneuron, run the main job on its default small config
#   make test   create .venv, install catneuron with its test extras, run the whole test suite
# Both are idempotent: a stamp file per extra set re-installs only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is only an independent oracle for tests. Pin the CPU build this machine ships on disk;
# elsewhere override it, e.g. `make test TORCH=torch`, or `make test TORCH=` to skip the oracle.
TORCH  ?= torch==2.13.0

.PHONY: run test book book-html data bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.stamp-base: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(if $(TORCH),$(PIP) install -q "$(TORCH)")
	$(PIP) install -q -e '.[test$(if $(TORCH),$(comma)oracle)]'
	touch $@ $(VENV)/.stamp-base

$(VENV)/.stamp-book: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[book]'
	touch $@ $(VENV)/.stamp-base

comma := ,

run: $(VENV)/.stamp-base
	$(VENV)/bin/catneuron gradcheck

test: $(VENV)/.stamp-test
	$(PY) -m pytest -p no:cacheprovider -q $(PYTEST_ARGS)

book: $(VENV)/.stamp-book
	$(VENV)/bin/jupyter lab book/

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/sublayers.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
