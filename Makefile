# `make test` and `make demo` set everything up first: a virtual environment (shared by every clone, kept in the
# user's cache and keyed by requirements-dev.txt, so torch's 5.5 GB is installed once), the package with its
# compiled kernels, then the job. VENV=/path overrides the environment's location.
SHELL := /bin/bash
PYTHON ?= python3
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/progan_fast
REQS_KEY := $(shell cat requirements-dev.txt requirements-nodeps.txt | sha1sum | cut -c1-12)-$(shell $(PYTHON) -c 'import sys; print("py%d%d" % sys.version_info[:2])')
VENV ?= $(CACHE_DIR)/venv-$(REQS_KEY)
PY := $(VENV)/bin/python
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export CUDA_HOME
PYTEST_ARGS ?=

.PHONY: venv install test demo bench sanitize env clean

venv: $(VENV)/.ready

$(VENV)/.ready: requirements-dev.txt requirements-nodeps.txt
	@mkdir -p $(CACHE_DIR)
	@# flock: two clones setting up the same environment at once wait for each other instead of racing.
	flock $(CACHE_DIR)/.venv.lock bash -c '\
	  set -e; if [ ! -f $(VENV)/.ready ]; then \
	    rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
	    $(VENV)/bin/pip install --upgrade pip && \
	    $(VENV)/bin/pip install -r requirements-dev.txt && \
	    $(VENV)/bin/pip install --no-deps -r requirements-nodeps.txt && touch $(VENV)/.ready; fi'

# The package is installed editable once per clone (a stamp in the venv records which clone it points at); the
# extension is built in place, where ninja recompiles only what changed: a second `make test` starts in seconds.
install: venv
	@if [ "$$(cat $(VENV)/.editable-source 2>/dev/null)" != "$(CURDIR)" ]; then \
	  PROGAN_FAST_NO_EXTENSION=1 $(VENV)/bin/pip install -q --no-build-isolation --no-deps -e . && \
	  echo "$(CURDIR)" > $(VENV)/.editable-source; fi
	$(PY) setup.py -q build_ext --inplace

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)
	@# benchmarks once each without timing, so they keep working (timings are never asserted)
	$(PY) -m pytest benchmarks --benchmark-disable -q

demo: install
	$(PY) -m progan_fast.demo

# Writes benchmarks/results.json and benchmarks/report/ (report.md + PNG charts); fails naming each missed target.
# PYTEST_ARGS="--device cuda" runs every group on a GPU; "--benchmark-threads 1" for a busy machine.
bench: install
	$(PY) -m pytest benchmarks --benchmark-json=benchmarks/results.json $(PYTEST_ARGS)
	$(PY) -m benchmarks.report benchmarks/results.json --out benchmarks/report

env: install
	$(PY) -m progan_fast.env

# CPU kernels built with AddressSanitizer + UndefinedBehaviorSanitizer in a separate tree, op tests run under them
# (the Triton family's cases are left to `make test`: the interpreter runs no C++ of ours, and is the slow part).
sanitize: venv
	rm -rf build/sanitize && mkdir -p build/sanitize && cp -r setup.py csrc progan_fast tests build/sanitize/
	cd build/sanitize && rm -f progan_fast/_C*.so progan_fast/_C.build_info && \
	  PROGAN_FAST_SANITIZE=1 PROGAN_FAST_NO_CUDA=1 $(PY) setup.py -q build_ext --inplace
	cd build/sanitize && \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PY) -m pytest tests/ops tests/gpu/test_cuda_emulation.py -x -q -p no:cacheprovider -k "not triton" $(PYTEST_ARGS)

clean:
	rm -rf build progan_fast/_C*.so progan_fast/_C.build_info *.egg-info
