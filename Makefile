# One entry point for people and CI. Every target does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
LINT_PATHS := src lambda tests bench examples docs/hooks
BENCH_PEERS := byoc,rayserve,rayserve-onnx,litserve,litserve-onnx

.PHONY: help venv docker images demo lint test test-unit bench bench-main bench-peers docs clean

help:
	@echo "make demo    train on the embedded demo dataset in the training container, serve it, print predictions"
	@echo "make test    lint, then unit and container tests (starts a Docker engine if none answers)"
	@echo "make lint    ruff check, ruff format --check and mypy (configured in pyproject.toml)"
	@echo "make images  build byoc-train:latest, byoc-serve:latest and byoc-serve:cpu"
	@echo "make venv    .venv/ with byoc (editable) and the test dependencies"
	@echo "make bench   side-by-side benchmarks into bench/results/ (make bench-main, then make bench-peers)"
	@echo "make docs    the documentation site into site/ (mkdocs build --strict; preview: .venv/bin/mkdocs serve)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.2
	$(PY) -m pip install -q -e '.[torch,train,serve,test,docs]'
	@# multi-model-server's model-archiver and torch-model-archiver both ship the Python package
	@# `model_archiver`; the TorchServe comparison needs TorchServe's, whatever pip's install order.
	$(PY) -m pip install -q --force-reinstall --no-deps torch-model-archiver==0.12.0
	touch $@

venv: $(VENV)/.installed

docker:
	@scripts/ensure_docker.sh

images: docker
	scripts/build_images.sh all

demo: venv images
	scripts/demo.sh

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

test-unit: venv
	$(PY) -m pytest -m "not container" $(PYTEST_ARGS)

test: lint images
	scripts/install_test_deps.sh
	$(PY) -m pytest $(PYTEST_ARGS)

# Two runs, each within 30 minutes on 2 cores (each writes how long it took into its results):
# byoc's images against their in-process limit and TorchServe, training, precision, sizes; then byoc's
# images beside Ray Serve and LitServe, in a run of their own so that every ratio compares servers
# measured in the same minutes.
bench: bench-main bench-peers

bench-main: venv images
	$(PY) -m bench $(BENCH_ARGS)

bench-peers: venv images
	$(PY) -m bench --only serving --servers $(BENCH_PEERS) --variants '' --peer-sizing 2x1,1x2,2x2 \
		--out bench/results/peers $(BENCH_ARGS)

# The reference pages and the performance tables are generated from this tree by docs/hooks/.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .venv-sdk build site *.egg-info .pytest_cache .ruff_cache .mypy_cache bench/results/*.tmp
