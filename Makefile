# laion-pipeline: `make run` builds and publishes the database, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The project's own Dagster instance, unless DAGSTER_HOME names yours: then it is used as it is
# (make never writes into it).
PROJECT_HOME := $(CURDIR)/.dagster_home
export DAGSTER_HOME ?= $(PROJECT_HOME)
INSTANCE := $(if $(filter $(PROJECT_HOME),$(abspath $(DAGSTER_HOME))),$(PROJECT_HOME)/dagster.yaml)

.PHONY: bench-abuse install run run-on-workers worker daemon test test-stories test-fast test-datasette-1 lint dev serve where rollback bench bench-staging bench-search bench-scale bench-load bench-tools clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# -qq: errors only. setuptools prints an "Editable installation" notice for any editable
	@# install of a project whose folder holds more than its package (our tests).
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $@

$(PROJECT_HOME)/dagster.yaml: dagster_home.yaml
	mkdir -p $(PROJECT_HOME)
	cp dagster_home.yaml $@

## Decide from the data folder what is missing or stale: "up to date" when the current release
## holds exactly what a build would (FORCE=1 builds anyway); else observe the sources, stage
## each source file the data folder lacks (a run of stage_source_files per file, LAION_WORKERS
## at a time), then launch the full_build job (every other asset and check) as a Dagster run of
## the instance in $(DAGSTER_HOME), as the UI would, wait for it, and say where the database
## and its analysis are.
FORCE ?=
FORCE_FLAG = $(if $(filter-out 0 no false,$(FORCE)),--force)
run: $(STAMP) $(INSTANCE)
	$(BIN)/python -m laion_pipeline run --job full_build --workspace workspace.yaml \
		--host $(HOST) --port $(PORT) $(FORCE_FLAG)

## The distributed engine (docs/scale.md): runs are Celery tasks on LAION_CELERY_BROKER (Redis),
## taken by `make worker` on any machine that shares the instance and the data folder.
CELERY_HOME ?= $(CURDIR)/.dagster_home_celery
WORKER_NAME ?= worker1
WORKER_CONCURRENCY ?= 1

$(CELERY_HOME)/dagster.yaml: dagster_home.celery.yaml
	mkdir -p $(CELERY_HOME)
	cp dagster_home.celery.yaml $@

## The build partition by partition through the Celery run launcher: a run per source file,
## the shard plan, a run per shard (each on a worker), then the catalog and the publish.
run-on-workers: $(STAMP) $(CELERY_HOME)/dagster.yaml
	DAGSTER_HOME=$(CELERY_HOME) $(BIN)/python -m laion_pipeline run-on-workers --workspace workspace.yaml \
		$(FORCE_FLAG)

## One worker: WORKER_CONCURRENCY runs at a time (one core each), under WORKER_NAME.
worker: $(STAMP) $(CELERY_HOME)/dagster.yaml
	DAGSTER_HOME=$(CELERY_HOME) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dagster-celery worker start -A dagster_celery.app \
		-y celery_worker.yaml -n $(WORKER_NAME) -- --concurrency=$(WORKER_CONCURRENCY)

## The daemon of the engine's instance: run monitoring (a run whose worker died is failed) and
## run retries (it is launched again), the sensor and the schedule.
daemon: $(STAMP) $(CELERY_HOME)/dagster.yaml
	DAGSTER_HOME=$(CELERY_HOME) $(BIN)/dagster-daemon run -w workspace.yaml

## The tests, after the linter: each layer's tests (laion_pipeline_tests/<layer>/) and the
## project's (packaging, docs), TEST_WORKERS at a time (pytest-xdist): most tests wait on a
## process or a server, so 3 keep 2 cores busy; each module's tests run together on one worker
## (loadscope), so a module's server or built folder is set up once. The end-to-end stories
## (laion_pipeline_tests/stories/) are `make test-stories`; CI runs both.
TEST_WORKERS ?= 3
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --ignore=laion_pipeline_tests/stories

## The end-to-end stories: the commands the README gives, Dagster's UI and Celery engine, builds
## killed at each stage, faults, whole sharded builds, a real browser.
test-stories: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope laion_pipeline_tests/stories

## The unit tests of the core and the Datasette plugin (under a minute): the inner loop.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m fast -q

## The site's tests on Datasette's 1.0 line (`make test` runs them on the 0.65 line, the
## default): a second environment, $(VENV_DATASETTE_1), with $(DATASETTE_1) installed.
DATASETTE_1 ?= datasette==1.0a41
VENV_DATASETTE_1 ?= .venv-datasette1
SITE_TESTS := laion_pipeline_tests/serve laion_pipeline_tests/stories/test_serving_releases.py \
	laion_pipeline_tests/stories/test_open_sql.py \
	laion_pipeline_tests/stories/test_browser.py laion_pipeline_tests/stories/test_security.py \
	laion_pipeline_tests/sources/test_domains.py
$(VENV_DATASETTE_1)/.installed: setup.cfg pyproject.toml
	test -x $(VENV_DATASETTE_1)/bin/python || $(PYTHON) -m venv $(VENV_DATASETTE_1)
	$(VENV_DATASETTE_1)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_DATASETTE_1)/bin/python -m pip install -qq -e '.[dev]' '$(DATASETTE_1)'
	touch $@

test-datasette-1: $(VENV_DATASETTE_1)/.installed
	$(VENV_DATASETTE_1)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(SITE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check laion_pipeline laion_pipeline_tests benchmarks
	$(BIN)/ruff format --check laion_pipeline laion_pipeline_tests benchmarks
	$(BIN)/lint-imports

## The Dagster UI on http://127.0.0.1:3000 (webserver, daemon and code server, through `dg`)
dev: $(STAMP) $(INSTANCE)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev -h 127.0.0.1 -p 3000

## Datasette on the published database, http://$(HOST):$(PORT) (`make serve PORT=8123`;
## HOST=0.0.0.0 listens on every address of the machine; a HOST in the environment is not read,
## since some shells set it to the machine's name).
HOST = 127.0.0.1
PORT = 8001
serve: $(STAMP)
	$(BIN)/python -m laion_pipeline serve --host $(HOST) --port $(PORT)

## Which release is served: its database, when and from what it was built, its rows.
where: $(STAMP)
	$(BIN)/python -m laion_pipeline where --host $(HOST) --port $(PORT)

## Publish the previous version again (run it twice to undo).
rollback: $(STAMP)
	$(BIN)/python -m laion_pipeline rollback

## The 2022 recipe's tools, for `make bench`, in a venv of their own (parquet-tools brings pandas).
SEED_VENV := .venv-seed
bench-tools: $(SEED_VENV)/bin/parquet-tools

$(SEED_VENV)/bin/parquet-tools:
	$(PYTHON) -m venv $(SEED_VENV)
	$(SEED_VENV)/bin/python -m pip install --quiet parquet-tools==0.2.16 'sqlite-utils>=3.38,<5'
	@command -v sqlite3 >/dev/null || echo "the 2022 recipe also needs the sqlite3 command: apt-get install sqlite3"

## Benchmark ROWS rows against the 2022 recipe; the tables go into docs/benchmarks.md.
## `make bench ROWS=12000000 BENCH_FLAGS=` skips the recipe (it takes about 15 minutes there).
## As shards: `make bench ROWS=12000000 FILES=8 LAION_SHARD_ROWS=6000000 BENCH_FLAGS=`.
ROWS ?= 1000000
FILES ?= 7
BENCH_FLAGS ?= --seed-recipe
bench: $(STAMP) bench-tools
	$(BIN)/python -m benchmarks.bench --rows $(ROWS) --files $(FILES) $(BENCH_FLAGS) \
		--report docs/benchmarks.md

## The filter and staging step alone, one core, on ROWS rows shaped like today's datasets
## (aesthetics v2 before the 6+ filter, Re-LAION 2B): rows per second per core.
bench-staging: $(STAMP)
	$(BIN)/python -m benchmarks.bench --staging --rows $(ROWS) --report docs/benchmarks.md

## The sharded build through the distributed engine (redis-server and Celery workers on this
## machine): ROWS_SCALE rows in 8 files, with one worker, then two; into docs/benchmarks.md.
ROWS_SCALE ?= 16000000
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.bench_scale --rows $(ROWS_SCALE) --files 8 --report docs/benchmarks.md

## Press traffic (Zipf) and all-distinct searches, 50 clients for 60 s each, then the abuse,
## against the release `make bench ROWS=$(ROWS_LOAD) BENCH_FLAGS=` built; into docs/benchmarks.md.
ROWS_LOAD ?= 12000000
bench-load: $(STAMP)
	@test -e data/bench/data-$(ROWS_LOAD)/published/current || { \
		echo "no release at data/bench/data-$(ROWS_LOAD): run make bench ROWS=$(ROWS_LOAD) BENCH_FLAGS= first"; exit 2; }
	$(BIN)/python -m benchmarks.bench_load --data data/bench/data-$(ROWS_LOAD) \
		--report docs/benchmarks.md

## The site under press traffic while 12 clients run slow SQL, with a rollback in the middle,
## against the release `make bench ROWS=$(ROWS_ABUSE) BENCH_FLAGS=` built; into docs/benchmarks.md.
ROWS_ABUSE ?= 1000000
bench-abuse: $(STAMP)
	@test -e data/bench/data-$(ROWS_ABUSE)/published/current || { \
		echo "no release at data/bench/data-$(ROWS_ABUSE): run make bench ROWS=$(ROWS_ABUSE) BENCH_FLAGS= first"; exit 2; }
	$(BIN)/python -m benchmarks.bench_abuse --data data/bench/data-$(ROWS_ABUSE) \
		--report docs/benchmarks.md

## Time searches through Datasette on the release the last `make bench` of ROWS rows in FILES
## files built (one database, or shards).
bench-search: $(STAMP)
	$(BIN)/python -m benchmarks.bench_search --data data/bench/data-$(ROWS)$(if $(filter-out 7,$(FILES)),-$(FILES)) \
		--report docs/benchmarks.md

clean:
	rm -rf data .dagster_home .dagster_home_celery
