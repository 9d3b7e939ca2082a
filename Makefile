# lgeom: make study (the main job on the embedded default) and make test (every test, real servers).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
PRESET ?= quick

.PHONY: setup study test test-fast lint bench up up-shared down clean help

help:
	@echo "make study   run the '$(PRESET)' study on the embedded default (sqlite MLflow + ./mlruns + local Ray)"
	@echo "make test    create .venv if needed and run the whole test suite (starts real servers)"
	@echo "make lint    ruff check + ruff format --check"
	@echo "make bench   run the benchmarks (installs the bench extras)"
	@echo "make up/down start/stop the local SeaweedFS S3 + MLflow server stack"
	@echo "make up-shared the shared server: + PostgreSQL backend store + MLflow basic auth (users)"

setup: $(STAMP)

# Creates the venv from nothing and installs the package with its test extras at the locked versions.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "pip==26.3"
	$(BIN)/python -m pip install -c requirements.lock -e ".[test]"
	@command -v chromium >/dev/null 2>&1 || echo "note: chromium is not installed; the MLflow UI screenshot test will be skipped (install: apt-get install -y chromium)"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || echo "note: postgresql is not installed; 'lgeom up --shared' and its tests will be skipped (install: apt-get install -y postgresql)"
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || echo "note: dataset-fashion-mnist is not installed; the real-data Fashion-MNIST tests will be skipped (install: apt-get install -y dataset-fashion-mnist)"
	touch $(STAMP)

study: setup
	$(BIN)/lgeom study --preset $(PRESET)

test: setup
	$(BIN)/python -m pytest

# ruff (configured in pyproject.toml): lint rules and formatting; .ci/run runs it before the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: setup
	$(BIN)/python -m pytest -m "not integration and not slow"

bench: setup
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[test,bench]"
	$(BIN)/python bench/train_throughput.py
	@for f in bench/curves.py bench/plane.py bench/hessian.py bench/study_overhead.py bench/tracking_load.py bench/presets.py; do \
		if [ -f $$f ]; then $(BIN)/python $$f || exit 1; fi; done

up: setup
	$(BIN)/lgeom up

up-shared: setup
	$(BIN)/lgeom up --shared

down:
	$(BIN)/lgeom down

clean:
	rm -rf outputs reports .pytest_cache
