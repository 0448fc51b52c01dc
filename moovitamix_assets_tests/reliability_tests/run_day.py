"""Materializes one day's ingestion in its own process, for tests that kill it or run two at once.

    python run_day.py BASE_URL DATABASE DAY [--start-file PATH] [--shared-instance] [--raw-only]
                      [--stall-in-load PATH]

Prints "ready" once loaded, then one JSON line on stdout: success, the failed steps'
messages, how many times opening the DuckDB file met another process's lock, and the
peak memory in MB. --start-file waits for a file matching PATH (a glob pattern) to exist
before starting, so that two processes start together, or one once the other has begun
staging its pull; --shared-instance runs on the Dagster instance of
$DAGSTER_HOME instead of an ephemeral one; --raw-only materializes the raw snapshots only.
--stall-in-load stops the raw load inside its transaction, once users and tracks are
written (uncommitted), creates PATH and waits there forever: a test kills the process
at that point for sure, where the load's few seconds would otherwise leave it to luck.
"""

import argparse
import glob
import json
import resource
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests package, not installed

from moovitamix_assets.ingestion import assets as raw_assets  # noqa: E402
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


def stall_in_load(marker: Path) -> None:
    """Makes the raw load stop for good after writing its second endpoint, inside the transaction."""
    run_sql_file = raw_assets.run_sql_file
    loads = []

    def run_sql_file_then_stall(connection, path, *args, **kwargs):
        run_sql_file(connection, path, *args, **kwargs)
        if Path(path).name.startswith("load_"):
            loads.append(path)
            if len(loads) == 2:
                marker.touch()
                time.sleep(3600)

    raw_assets.run_sql_file = run_sql_file_then_stall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("database", type=Path)
    parser.add_argument("day")
    parser.add_argument("--start-file", type=Path)
    parser.add_argument("--shared-instance", action="store_true")
    parser.add_argument("--raw-only", action="store_true", help="the raw snapshot assets only")
    parser.add_argument("--stall-in-load", type=Path, help="stop inside the load transaction, creating this file")
    args = parser.parse_args()

    duckdb.connect = connect_counting_lock_waits
    if args.stall_in_load:
        stall_in_load(args.stall_in_load)
    instance = dg.DagsterInstance.get() if args.shared_instance else dg.DagsterInstance.ephemeral()
    print("ready", flush=True)
    while args.start_file and not glob.glob(str(args.start_file)):
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
