"""One day's ingestion against a bare concurrent download, at 100,000 and 1,000,000 users (today's emulator date).

    .venv/bin/python benchmarks/ingestion_benchmark.py                      # both scales
    .venv/bin/python benchmarks/ingestion_benchmark.py --users 100000 --as-of 2026-11-25

For each scale the API emulator runs as its own process (`python -m moovitamix_api.cli`,
so it shares no GIL with what is measured) on a free loopback port, serving the realistic
world on --as-of (default: today, UTC) grown from 2026-01-01 with --users users on that
first day. Against that same emulator process, one after the other:

1. bare: a plain client (one keep-alive session, --concurrency threads per endpoint, the
   three endpoints at once, no retries, no parsing past page 1) downloads every page: about
   the fastest a Python client can pull the day from this server;
2. raw landing: `dg.materialize` of the raw assets in this process (verified passes staged
   as Parquet, then one load transaction) into a fresh DuckDB file;
3. whole day, as the CLI runs it: `dagster job execute -j daily_ingestion` in a subprocess
   on a fresh DAGSTER_HOME and DuckDB file: raw, core staging with every check, publish.

It prints each phase's wall time, the ratios to the bare download, the time the DuckDB
file was held for writing (raw: the load transaction; whole day: the load, the core
staging step and the publish), the peak RSS of the process that ran the phase (sampled
every 10 ms; the whole day's DuckDB runs under MOOVITAMIX_DUCKDB_MEMORY_LIMIT, 512MB by
default, and spills past it), and the row counts checked against what the emulator serves.
Targets from issue 9: raw landing within 1.1x the bare download, the whole day within 1.5x,
peak RSS under 1 GiB, the write lock held under 20% of the run.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import requests
from requests.adapters import HTTPAdapter

from moovitamix_api.data import expected_counts
from moovitamix_api.settings import EmulatorSettings
from moovitamix_assets.ingestion.assets import RawStaging, raw_snapshots
from moovitamix_assets.ml.registry import ModelStore
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.environment import pipeline_resources
from moovitamix_assets.resources.warehouse import DEFAULT_DUCKDB_MEMORY_LIMIT, WarehouseResource

from measure import ROOT, PeakRss, start_emulator, stop_emulator

ENDPOINTS = ("users", "tracks", "listen_history")
PAGE_SIZE = 100
MIB = 2**20
GIB = 2**30


def bare_download(base_url: str, concurrency: int) -> tuple[float, int]:
    """Every page of the three endpoints at once, unparsed: (seconds, bytes)."""
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=3 * concurrency, max_retries=0))

    def fetch(endpoint: str, number: int) -> int:
        response = session.get(f"{base_url}/{endpoint}", params={"page": number, "size": PAGE_SIZE}, timeout=60)
        response.raise_for_status()
        return len(response.content)

    def endpoint_pages(endpoint: str) -> int:
        first = session.get(f"{base_url}/{endpoint}", params={"page": 1, "size": PAGE_SIZE}, timeout=60)
        first.raise_for_status()
        with ThreadPoolExecutor(concurrency) as pool:
            return len(first.content) + sum(pool.map(lambda n: fetch(endpoint, n), range(2, first.json()["pages"] + 1)))

    started = time.perf_counter()
    with ThreadPoolExecutor(len(ENDPOINTS)) as pool:
        size = sum(pool.map(endpoint_pages, ENDPOINTS))
    seconds = time.perf_counter() - started
    session.close()
    return seconds, size


@dataclass
class Phase:
    seconds: float
    lock_seconds: float
    peak_rss: int
    rows: dict


def counts(database: Path, tables: list[str]) -> dict:
    with duckdb.connect(str(database), read_only=True) as connection:
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in tables}


def raw_landing(base_url: str, day: str, folder: Path, concurrency: int) -> Phase:
    database = folder / "landing.duckdb"  # not raw.duckdb: the catalog would clash with the raw schema
    resources = pipeline_resources(
        api=MoovitamixApiResource(base_url=base_url, max_concurrency=concurrency),
        warehouse=WarehouseResource(database=str(database), memory_limit=DEFAULT_DUCKDB_MEMORY_LIMIT),
        model_store=ModelStore(directory=str(folder / "models")),
        raw_staging=RawStaging(root=str(folder / "staging")),
        allow_any_snapshot_date=True,  # the emulator is pinned to --as-of
    )
    with PeakRss(os.getpid()) as rss:
        started = time.perf_counter()
        result = dg.materialize(
            [raw_snapshots], partition_key=day, resources=resources,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )  # fmt: skip
        seconds = time.perf_counter() - started
    metadata = {
        event.asset_key.path[-1]: event.materialization.metadata for event in result.get_asset_materialization_events()
    }
    lock = metadata["users"]["write_lock_seconds"].value  # one transaction for the three endpoints
    return Phase(seconds, lock, rss.peak, counts(database, [f"raw.{e}" for e in ENDPOINTS]))


def whole_day(base_url: str, day: str, folder: Path) -> Phase:
    """The daily_ingestion job for `day`, launched by the CLI as a user would, in a subprocess."""
    home = folder / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    database = folder / "warehouse.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_API_URL": base_url,
        "MOOVITAMIX_DUCKDB_PATH": str(database),
        "MOOVITAMIX_STAGING_PATH": str(folder / "day-staging"),
        "MOOVITAMIX_LAKE_PATH": str(folder / "lake"),
        "MOOVITAMIX_MODEL_DIR": str(folder / "models"),
        "MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE": "1",
    }
    command = [
        str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m", "moovitamix_assets.definitions",
        "-j", "daily_ingestion", "--tags", json.dumps({"dagster/partition": day}),
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with PeakRss(process.pid) as rss:
        _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"daily_ingestion failed:\n{stderr.decode()[-3000:]}")
    with duckdb.connect(str(database), read_only=True) as connection:
        figures = dict(
            connection.execute(
                "SELECT asset || '.' || metric, max(value) FROM monitoring.asset_metrics "
                "WHERE metric IN ('write_lock_seconds', 'seconds', 'publish_seconds') GROUP BY ALL"
            ).fetchall()
        )
    # The file is held for writing by the raw load, the whole core staging step (typing and
    # every check) and the publish transaction; reading the figures back is not counted.
    lock = figures["raw/users.write_lock_seconds"] + figures["core_staging/users.seconds"]
    lock += figures["core/users.publish_seconds"]
    tables = [f"{schema}.{e}" for schema in ("raw", "core") for e in ENDPOINTS] + ["quality.rejected_records"]
    return Phase(seconds, lock, rss.peak, counts(database, tables))


def run_scale(users: int, tracks: int, as_of: dt.date, concurrency: int) -> dict:
    settings = EmulatorSettings(users=users, tracks=tracks, as_of=as_of)
    expected = expected_counts(settings)
    served = {e: expected[e]["served"] for e in ENDPOINTS}
    listens = expected["listen_history"]["listens"]
    day = as_of.isoformat()
    print(f"\n=== {users:,} users on {settings.start_date} -> {served['users']:,} users, {served['tracks']:,} tracks, "
          f"{listens:,} listens on {day} ===", flush=True)  # fmt: skip
    process, base_url = start_emulator(["--users", str(users), "--tracks", str(tracks), "--as-of", day])
    try:
        with tempfile.TemporaryDirectory(prefix="ingestion-benchmark-") as name:
            folder = Path(name)
            bare_seconds, size = bare_download(base_url, concurrency)
            print(f"bare download   {bare_seconds:8.1f} s  {size / MIB:8.0f} MiB", flush=True)
            raw = raw_landing(base_url, day, folder, concurrency)
            assert raw.rows == {f"raw.{e}": n for e, n in served.items()}, raw.rows
            print(f"raw landing     {raw.seconds:8.1f} s  lock {raw.lock_seconds:6.1f} s  peak RSS "
                  f"{raw.peak_rss / MIB:6.0f} MiB", flush=True)  # fmt: skip
            day_run = whole_day(base_url, day, folder)
            assert day_run.rows == {
                **{f"raw.{e}": n for e, n in served.items()},
                "core.users": served["users"], "core.tracks": served["tracks"], "core.listen_history": listens,
                "quality.rejected_records": 0,
            }, day_run.rows  # fmt: skip
            print(f"whole day (CLI) {day_run.seconds:8.1f} s  lock {day_run.lock_seconds:6.1f} s  peak RSS "
                  f"{day_run.peak_rss / MIB:6.0f} MiB", flush=True)  # fmt: skip
            print("row counts equal what the emulator serves: OK")
    finally:
        stop_emulator(process)
    return {"users": users, "listens": listens, "bare": bare_seconds, "raw": raw, "day": day_run}


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def print_table(results: list[dict]) -> None:
    print("\nOne day's ingestion (wall seconds; ratios to the bare download; targets of issue 9 in brackets)")
    header = (
        f"{'users':>10} {'listens':>12} {'bare s':>7} {'raw s':>7} {'raw/bare [1.1]':>15} {'day s':>7} "
        f"{'day/bare [1.5]':>15} {'raw lock':>9} {'day lock share [0.2]':>21} {'raw RSS MiB':>12} {'day RSS MiB [1024]':>19}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        raw, day = r["raw"], r["day"]
        raw_ratio, day_ratio, share = raw.seconds / r["bare"], day.seconds / r["bare"], day.lock_seconds / day.seconds
        print(
            f"{r['users']:>10,} {r['listens']:>12,} {r['bare']:>7.1f} {raw.seconds:>7.1f} "
            f"{raw_ratio:>8.2f} {verdict(raw_ratio, 1.1):>6} {day.seconds:>7.1f} {day_ratio:>8.2f} {verdict(day_ratio, 1.5):>6} "
            f"{raw.lock_seconds / raw.seconds:>8.1%} {share:>14.1%} {verdict(share, 0.2):>6} "
            f"{raw.peak_rss / MIB:>12.0f} {day.peak_rss / MIB:>12.0f} {verdict(max(raw.peak_rss, day.peak_rss), GIB):>6}"
        )
    print("raw lock = the load transaction's share of the raw landing; day lock share = raw load + core staging + publish over the whole day")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000], help="users on 2026-01-01, per scale")
    parser.add_argument("--tracks", type=int, default=10_000, help="tracks on 2026-01-01")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.datetime.now(dt.timezone.utc).date())
    parser.add_argument("--concurrency", type=int, default=4, help="pages in flight per endpoint, both clients")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; as of {args.as_of}; concurrency {args.concurrency} per endpoint")
    print_table([run_scale(users, args.tracks, args.as_of, args.concurrency) for users in args.users])


if __name__ == "__main__":
    main()
