# Two commands: `make dev` runs the product, `make test` runs the tests.
# Both create .venv and install the project into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MOOVITAMIX_API_URL ?= http://127.0.0.1:8000
export MOOVITAMIX_DUCKDB_PATH ?= data/moovitamix.duckdb

.PHONY: install dev ingest test bench clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,serving]"
	touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# The emulated API on 127.0.0.1:8000, the Dagster UI on 127.0.0.1:3000 and the recommendations
# service on 127.0.0.1:8001 (MOOVITAMIX_RECS_PORT); Ctrl-C stops all three.
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	bash scripts/dev.sh

# Today's (UTC) daily_ingestion run, as the 02:00 schedule would launch it, in the instance
# that `make dev` shows; the API must be up (make dev).
ingest: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster job execute -m moovitamix_assets.definitions -j daily_ingestion \
		--tags '{"dagster/partition": "'"$$(date -u +%F)"'"}'

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/emulator_benchmark.py

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data *.egg-info
