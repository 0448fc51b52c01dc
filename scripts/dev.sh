#!/usr/bin/env bash
# Starts the emulated Moovitamix API, `dagster dev`, the recommendations service and a file
# server for the health reports' charts, each in its own process group (job control on), and
# stops them all when the API or Dagster exits or on Ctrl-C. Without `set -m`, a background
# `dagster dev` started from a script ignores SIGINT and SIGTERM.
# `make dev` runs it: the Makefile is the one place that sets the ports and the URLs that
# follow from them (MOOVITAMIX_API_PORT, MOOVITAMIX_UI_PORT, ...).
set -euo pipefail
set -m
cd "$(dirname "$0")/.."

for setting in DAGSTER_HOME MOOVITAMIX_API_HOST MOOVITAMIX_API_PORT MOOVITAMIX_UI_PORT MOOVITAMIX_RECS_PORT \
    MOOVITAMIX_REPORTS_PORT MOOVITAMIX_REPORTS_PATH MOOVITAMIX_API_URL MOOVITAMIX_UI_URL MOOVITAMIX_REPORTS_URL; do
    if [ -z "${!setting:-}" ]; then
        echo "$setting is not set: start everything with \`make dev\`, which sets it." >&2
        exit 2
    fi
done

# The API serves only the current snapshot: the raw partitions of a new instance begin on the
# day it first ran (ingestion/partitions.py), not on a fixed date with hundreds of days that
# nothing can fill. An instance that has run before this file existed keeps its partitions.
first_day="$DAGSTER_HOME/first_snapshot_date"
if [ ! -s "$first_day" ] && [ ! -d "$DAGSTER_HOME/history" ]; then
    date -u +%F > "$first_day"
fi
if [ -s "$first_day" ]; then
    export MOOVITAMIX_FIRST_SNAPSHOT_DATE="${MOOVITAMIX_FIRST_SNAPSHOT_DATE:-$(cat "$first_day")}"
fi

.venv/bin/moovitamix-api --host "$MOOVITAMIX_API_HOST" --port "$MOOVITAMIX_API_PORT" ${MOOVITAMIX_API_ARGS:-} &
api_pid=$!
# `dagster dev` is the command of this classic layout (setup.py, workspace.yaml); it warns on
# every start that it is superseded by `dg dev`, the CLI of dg-scaffolded projects: noise here.
PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded" .venv/bin/dagster dev -h 127.0.0.1 -p "$MOOVITAMIX_UI_PORT" &
dagster_pid=$!
# Serves what ml/serving_snapshot publishes under MOOVITAMIX_SERVING_PATH (data/serving); until
# the first publication it answers /health with 503. Its exit does not stop the others.
.venv/bin/moovitamix-recs --host 127.0.0.1 --port "$MOOVITAMIX_RECS_PORT" &
recs_pid=$!
# The health report links its chart here (monitoring/health.py, MOOVITAMIX_REPORTS_URL).
mkdir -p "$MOOVITAMIX_REPORTS_PATH"
.venv/bin/python -m http.server --bind 127.0.0.1 --directory "$MOOVITAMIX_REPORTS_PATH" "$MOOVITAMIX_REPORTS_PORT" \
    >/dev/null 2>&1 &
reports_pid=$!

stop() {
    trap - INT TERM EXIT
    kill -TERM -- "-$dagster_pid" "-$api_pid" "-$recs_pid" "-$reports_pid" 2>/dev/null || true
    wait "$dagster_pid" "$api_pid" "$recs_pid" "$reports_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "Moovitamix API on $MOOVITAMIX_API_URL, Dagster UI on $MOOVITAMIX_UI_URL," \
    "recommendations on http://127.0.0.1:$MOOVITAMIX_RECS_PORT, health charts on $MOOVITAMIX_REPORTS_URL" \
    "(Ctrl-C stops them all). First day? In another terminal: make ingest"
wait -n "$api_pid" "$dagster_pid" || true
