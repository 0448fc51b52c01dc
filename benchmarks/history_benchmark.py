"""Storage and time per day over 30 simulated days: do they follow the day's changes or the total size?

    .venv/bin/python benchmarks/history_benchmark.py                         # 100,000 users, 30 days
    .venv/bin/python benchmarks/history_benchmark.py --users 20000 --days 10 --keep-days 3

The emulator runs as a separate process (`python -m moovitamix_api.cli`) on a free loopback
port, pinned to --start-date, with --users users and --tracks tracks on that day. Each
simulated day, its as-of date is moved one day on (POST /_admin/state) and one daily run
is made against one DuckDB file and one lake in a temporary directory:

1. raw: `dg.materialize` of the raw snapshot assets for the day's partition (the pull);
2. stage: `stage_core_tables`, the day typed into core_staging (core's own code);
3. publish: `publish_core_tables` with `apply_history` in its transaction, then the
   history audits on core (`audit_history`): what the publish step runs;
4. lake: `dg.materialize` of lake/raw_snapshot_parquet for the partition;
5. retention: `dg.materialize` of lake/raw_retention with `today` = the day, keeping
   --keep-days complete days (and raw days) in DuckDB; older days live only in the lake.

Printed per day: the seconds of each phase, the listens and records served, the rows
each history table gained, the DuckDB file size and the bytes its used blocks hold
(`PRAGMA database_size`, after a CHECKPOINT; the file keeps freed blocks for reuse, so
the used bytes are the storage figure), and the lake's size. The last lines compare the
mean daily growth of each with the size of one full snapshot.
"""

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb
import requests

from moovitamix_assets.core.build import publish_core_tables, stage_core_tables
from moovitamix_assets.core.history import apply_history, audit_history, failed_audits
from moovitamix_assets.ingestion.assets import RawStaging, raw_snapshot_assets
from moovitamix_assets.ml.registry import ModelStore
from moovitamix_assets.monitoring.lake import LakeResource, RetentionConfig, raw_retention, raw_snapshot_parquet
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.environment import pipeline_resources
from moovitamix_assets.resources.warehouse import WarehouseResource, in_utc

from measure import start_emulator, stop_emulator

MIB = 2**20
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def used_bytes(connection: duckdb.DuckDBPyConnection) -> int:
    connection.execute("CHECKPOINT")
    (block_size, used_blocks) = connection.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchall()[0]
    return block_size * used_blocks


def run(arguments: argparse.Namespace) -> None:
    start = (
        dt.date.fromisoformat(arguments.start_date)
        if arguments.start_date
        else dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=arguments.days)
    )
    emulator, base_url = start_emulator([
        "--users", str(arguments.users), "--tracks", str(arguments.tracks),
        "--start-date", start.isoformat(), "--as-of", start.isoformat(),
    ])  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="history-benchmark-", dir=arguments.tmp) as folder:
            database, lake = Path(folder) / "warehouse.duckdb", Path(folder) / "lake"
            resources = pipeline_resources(
                api=MoovitamixApiResource(base_url=base_url),
                warehouse=WarehouseResource(database=str(database)),
                model_store=ModelStore(directory=str(Path(folder) / "models")),
                lake=LakeResource(root=str(lake)),
                raw_staging=RawStaging(root=str(Path(folder) / "staging")),
                allow_any_snapshot_date=True,  # the emulator is pinned to each simulated day
            )
            instance = dg.DagsterInstance.ephemeral()
            header = (
                f"{'day':<10} {'raw s':>6} {'stage s':>7} {'publ s':>6} {'hist s':>6} {'audit s':>7} {'lake s':>6} "
                f"{'ret s':>5} {'listens':>9} {'+users':>7} {'+tracks':>7} {'+events':>8} {'rewr':>4} "
                f"{'file MiB':>8} {'used MiB':>8} {'lake MiB':>8}"
            )
            print(header)
            rows = []
            for index in range(arguments.days):
                day = start + dt.timedelta(days=index)
                requests.post(f"{base_url}/_admin/state", json={"as_of": day.isoformat()}, timeout=30).raise_for_status()
                timings = {}
                began = time.perf_counter()
                dg.materialize(raw_snapshot_assets, partition_key=day.isoformat(), resources=resources,
                               instance=instance, run_config=QUIET)  # fmt: skip
                timings["raw"] = time.perf_counter() - began
                with in_utc(duckdb.connect(str(database))) as connection:
                    began = time.perf_counter()
                    stage_core_tables(connection, day, f"benchmark-{day}")
                    timings["stage"] = time.perf_counter() - began
                    history = {}
                    began = time.perf_counter()
                    publish_core_tables(
                        connection, lambda _connection, _day: [],
                        within_transaction=lambda c, staged: history.setdefault("stats", apply_history(c, staged, f"benchmark-{day}")),
                    )  # fmt: skip
                    timings["publish"] = time.perf_counter() - began
                    began = time.perf_counter()
                    failed = failed_audits(audit_history(connection, day))
                    timings["audit"] = time.perf_counter() - began
                    if failed:
                        raise RuntimeError(f"{day}: the history fails its audits: {failed}")
                    (listens,) = connection.execute("SELECT count(*) FROM core.listen_history").fetchall()[0]
                began = time.perf_counter()
                dg.materialize([raw_snapshot_parquet], partition_key=day.isoformat(), resources=resources,
                               instance=instance, run_config=QUIET)  # fmt: skip
                timings["export"] = time.perf_counter() - began
                began = time.perf_counter()
                retention = RetentionConfig(
                    keep_complete_days=arguments.keep_days, raw_days=arguments.keep_days, today=day.isoformat()
                )
                dg.materialize([raw_retention], resources=resources, instance=instance,
                               run_config=dg.RunConfig(ops={"lake__raw_retention": retention}, loggers=QUIET["loggers"]))  # fmt: skip
                timings["retention"] = time.perf_counter() - began
                with in_utc(duckdb.connect(str(database))) as connection:
                    used = used_bytes(connection)
                stats = history["stats"]
                row = {
                    "day": day, **timings, "history": stats.seconds, "listens": listens,
                    "users": stats.users_versions_added, "tracks": stats.tracks_versions_added,
                    "events": stats.listen_events_added, "rewrites": stats.history_rewrites,
                    "file": database.stat().st_size, "used": used, "lake": folder_bytes(lake),
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{day.isoformat():<10} {row['raw']:>6.1f} {row['stage']:>7.1f} {row['publish']:>6.1f} "
                    f"{row['history']:>6.2f} {row['audit']:>7.2f} {row['export']:>6.1f} {row['retention']:>5.1f} "
                    f"{listens:>9,} {row['users']:>7,} {row['tracks']:>7,} {row['events']:>8,} {row['rewrites']:>4} "
                    f"{row['file'] / MIB:>8.1f} {used / MIB:>8.1f} {row['lake'] / MIB:>8.1f}",
                    flush=True,
                )
            summarise(rows, arguments.keep_days)
    finally:
        stop_emulator(emulator)


def summarise(rows: list[dict], keep_days: int) -> None:
    """Mean daily growth once retention holds DuckDB's raw days steady, against one day's full snapshot."""
    steady = rows[keep_days:] if len(rows) > keep_days + 1 else rows[1:]
    if len(steady) < 2:
        return
    days = len(steady) - 1
    used_growth = (steady[-1]["used"] - steady[0]["used"]) / days
    lake_growth = (steady[-1]["lake"] - steady[0]["lake"]) / days
    first_day_used = rows[0]["used"]
    print()
    print(f"first day: DuckDB holds {first_day_used / MIB:.1f} MiB (one full raw snapshot, core and the history's first day)")
    print(
        f"days {steady[0]['day']}..{steady[-1]['day']} (DuckDB keeping {keep_days} raw days): DuckDB used "
        f"{used_growth / MIB:+.2f} MiB/day, lake {lake_growth / MIB:+.2f} MiB/day"
    )
    print(
        f"per day: {sum(r['events'] for r in steady[1:]) / days:,.0f} listen events, "
        f"{sum(r['users'] for r in steady[1:]) / days:,.0f} user versions, "
        f"{sum(r['tracks'] for r in steady[1:]) / days:,.0f} track versions added; "
        f"history {sum(r['history'] for r in steady[1:]) / days:.2f} s, audits {sum(r['audit'] for r in steady[1:]) / days:.2f} s, "
        f"whole day {sum(r['raw'] + r['stage'] + r['publish'] + r['audit'] + r['export'] + r['retention'] for r in steady[1:]) / days:.1f} s"
    )
    print(f"listens served: {rows[0]['listens']:,} on the first day, {rows[-1]['listens']:,} on the last")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    # Daily partitions exist up to today: the simulated days end yesterday by default.
    parser.add_argument("--start-date", default=None, help="the first simulated day (default: --days days ago)")
    parser.add_argument("--keep-days", type=int, default=7, help="complete raw days DuckDB keeps (>= 2)")
    parser.add_argument("--tmp", default=None, help="where the temporary DuckDB file and lake go")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
