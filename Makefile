# Two commands: `make dev` runs the product, `make test` runs the tests.
# Both create .venv and install the project into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MOOVITAMIX_DUCKDB_PATH ?= data/moovitamix.duckdb
export MOOVITAMIX_REPORTS_PATH ?= data/reports

# Where each service listens: one setting each (README, "Configuration"). The URLs follow
# from them, so the pipeline pulls from the emulator make dev starts, alerts link to the UI
# it serves, and `make ingest` finds it.
export MOOVITAMIX_API_HOST ?= 127.0.0.1
export MOOVITAMIX_API_PORT ?= 8000
export MOOVITAMIX_UI_PORT ?= 3000
export MOOVITAMIX_RECS_PORT ?= 8001
export MOOVITAMIX_REPORTS_PORT ?= 8002
export MOOVITAMIX_API_URL ?= http://$(MOOVITAMIX_API_HOST):$(MOOVITAMIX_API_PORT)
export MOOVITAMIX_UI_URL ?= http://127.0.0.1:$(MOOVITAMIX_UI_PORT)
export MOOVITAMIX_REPORTS_URL ?= http://127.0.0.1:$(MOOVITAMIX_REPORTS_PORT)

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

# The emulated API, the Dagster UI (webserver and daemon), the recommendations service and the
# health reports' charts, on the ports above; Ctrl-C stops them all.
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	bash scripts/dev.sh

# Today's (UTC) daily_ingestion run, as the 02:00 schedule launches it: submitted to the
# instance `make dev` runs, through its UI, then waited for; prints the run's link and counts.
ingest: $(STAMP)
	$(BIN)/python scripts/launch.py --job daily_ingestion --partition "$$(date -u +%F)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/emulator_benchmark.py

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data *.egg-info
