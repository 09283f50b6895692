# The README's commands. Every target creates and uses .venv at the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint typecheck bench bench-load bench-peers protos clean

# pip -qq: errors only (setuptools prints a banner on every editable install).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Start the service on the bundled model store (REST :8000, gRPC :50051).
serve: $(STAMP)
	$(BIN)/care-serve serve --model-store model_store

## Lint, type-check and run every test.
test: $(STAMP)
	$(BIN)/ruff check care_serve tests benchmarks
	$(BIN)/ruff format --check care_serve tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check care_serve tests benchmarks
	$(BIN)/ruff format --check care_serve tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

## Model benchmark: eager vs fused torch vs plain vs fused ONNX.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.model

## Load benchmark of the running stack over REST and gRPC.
bench-load: $(STAMP)
	$(BIN)/python -m benchmarks.load

## Peer benchmark: care-serve vs FastAPI + onnxruntime, FastAPI + torch, TorchServe.
## Installs the `peers` extra (TorchServe needs Java 17). ARGS=--quick for a smoke run.
bench-peers: $(STAMP)
	$(BIN)/python -m pip install -qq -e '.[peers]'
	$(BIN)/python -m benchmarks.peers $(ARGS)

## Regenerate the gRPC code from protos/.
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
