# hf_verifix developer commands. The README's two set-up commands are `make demo` and `make test`;
# each installs what it needs (a virtual environment in .venv, and the Fashion-MNIST Debian package for the demo).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned together: a torchvision build must match its torch exactly (timm imports it).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Every package at the version the suite was last green with; `make test-latest` tries the newest instead.
CONSTRAINTS ?= .ci/constraints.txt
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_ARGS ?=

.PHONY: install data demo test test-all test-latest quality style typecheck clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	touch $@

# Fashion-MNIST offline from Debian's dataset-fashion-mnist; without it the demo falls back to the Hub's copy.
data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
		echo "could not install dataset-fashion-mnist; the demo will try the Hub's zalando-datasets/fashion_mnist"; \
	else \
		echo "Fashion-MNIST not in $(FASHION_MNIST_DIR): run 'sudo apt-get install dataset-fashion-mnist'," \
		     "or the demo will try the Hub's zalando-datasets/fashion_mnist"; \
	fi

demo: install data
	$(BIN)/python examples/fashion_mnist_sap.py $(DEMO_ARGS)

test: install data
	$(BIN)/python -m pytest

# The newest releases every requirement allows, in a venv of their own (.venv-latest), without the constraints.
test-latest: data
	$(MAKE) VENV=.venv-latest CONSTRAINTS= TORCH_PINS="$(TORCH_PINS)" test

test-all: install data
	$(BIN)/python -m pytest -m ""

quality: install
	$(BIN)/ruff check hf_verifix tests examples benchmarks
	$(BIN)/ruff format --check hf_verifix tests examples benchmarks
	$(BIN)/mypy

style: install
	$(BIN)/ruff check --fix hf_verifix tests examples benchmarks
	$(BIN)/ruff format hf_verifix tests examples benchmarks

clean:
	rm -rf $(VENV) .venv-latest build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
