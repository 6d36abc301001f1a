# laion-pipeline: `make run` builds and publishes the database, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install run test lint dev serve clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster_home.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster_home.yaml $@

## Materialize every asset in one Dagster run, then say where the database is. The graph is
## a chain, so one process (in_process) runs it without a process start per step.
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster asset materialize --select '*' -m laion_pipeline.definitions \
		--config-json '{"execution": {"config": {"in_process": {}}}}'
	$(BIN)/python -m laion_pipeline where

## The whole test suite, after the linter.
test: lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check laion_pipeline laion_pipeline_tests
	$(BIN)/ruff format --check laion_pipeline laion_pipeline_tests

## The Dagster UI on http://127.0.0.1:3000
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

## Datasette on the published database, http://127.0.0.1:8001
serve: $(STAMP)
	$(BIN)/python -m laion_pipeline serve --host 127.0.0.1 --port 8001

clean:
	rm -rf data .dagster_home
