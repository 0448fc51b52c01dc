"""Materializes one day's ingestion in its own process, for tests that kill it or run two at once.

    python run_day.py BASE_URL DATABASE DAY [--start-file PATH] [--shared-instance] [--raw-only]

Prints "ready" once loaded, then one JSON line on stdout: success, the failed steps'
messages, how many times opening the DuckDB file met another process's lock, and the
peak memory in MB. --start-file waits for that file to exist before starting, so that
two processes start together; --shared-instance runs on the Dagster instance of
$DAGSTER_HOME instead of an ephemeral one; --raw-only materializes the raw snapshots only.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests package, not installed

from moovitamix_assets.ingestion.assets import raw_snapshot_assets  # noqa: E402
from moovitamix_assets_tests.pipeline import INGESTION, materialize_day  # noqa: E402

lock_waits = 0
_connect = duckdb.connect


def connect_counting_lock_waits(*args, **kwargs):
    """duckdb.connect, counting the IOExceptions that dagster-duckdb's backoff retries."""
    global lock_waits
    try:
        return _connect(*args, **kwargs)
    except duckdb.IOException as error:
        if "lock" in str(error):
            lock_waits += 1
            print(f"{time.strftime('%H:%M:%S')} run_day: waiting on the file lock: {error}", file=sys.stderr, flush=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("database", type=Path)
    parser.add_argument("day")
    parser.add_argument("--start-file", type=Path)
    parser.add_argument("--shared-instance", action="store_true")
    parser.add_argument("--raw-only", action="store_true", help="the raw snapshot assets only")
    args = parser.parse_args()

    duckdb.connect = connect_counting_lock_waits
    instance = dg.DagsterInstance.get() if args.shared_instance else dg.DagsterInstance.ephemeral()
    print("ready", flush=True)
    while args.start_file and not args.start_file.exists():
        time.sleep(0.01)
    started = time.monotonic()
    assets = raw_snapshot_assets if args.raw_only else INGESTION
    result = materialize_day(
        args.base_url, args.database, args.day, assets=assets, instance=instance, raise_on_error=False
    )
    errors = [
        (event.event_specific_data.error.cause or event.event_specific_data.error).message
        for event in result.get_step_failure_events()
    ]
    print(
        json.dumps(
            {
                "success": result.success,
                "errors": errors,
                "lock_waits": lock_waits,
                "seconds": round(time.monotonic() - started, 2),
                "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
