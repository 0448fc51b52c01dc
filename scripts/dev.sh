#!/usr/bin/env bash
# Starts the emulated Moovitamix API, `dagster dev` and the recommendations service, each in
# its own process group (job control on), and stops all three when the API or Dagster exits
# or on Ctrl-C. Without `set -m`, a background `dagster dev` started from a script ignores
# SIGINT and SIGTERM.
set -euo pipefail
set -m
cd "$(dirname "$0")/.."

API_HOST="${MOOVITAMIX_API_HOST:-127.0.0.1}"
API_PORT="${MOOVITAMIX_API_PORT:-8000}"
UI_PORT="${DAGSTER_PORT:-3000}"
RECS_PORT="${MOOVITAMIX_RECS_PORT:-8001}"

.venv/bin/moovitamix-api --host "$API_HOST" --port "$API_PORT" ${MOOVITAMIX_API_ARGS:-} &
api_pid=$!
.venv/bin/dagster dev -h 127.0.0.1 -p "$UI_PORT" &
dagster_pid=$!
# Serves what ml/serving_snapshot publishes under MOOVITAMIX_SERVING_PATH (data/serving); until
# the first publication it answers /health with 503. Its exit does not stop the others.
.venv/bin/moovitamix-recs --host 127.0.0.1 --port "$RECS_PORT" &
recs_pid=$!

stop() {
    trap - INT TERM EXIT
    kill -TERM -- "-$dagster_pid" "-$api_pid" "-$recs_pid" 2>/dev/null || true
    wait "$dagster_pid" "$api_pid" "$recs_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "Moovitamix API on http://$API_HOST:$API_PORT, Dagster UI on http://127.0.0.1:$UI_PORT," \
    "recommendations on http://127.0.0.1:$RECS_PORT (Ctrl-C stops all three)"
wait -n "$api_pid" "$dagster_pid" || true
