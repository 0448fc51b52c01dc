"""End-to-end ingestion vs. a bare HTTP download, at 100,000 and 1,000,000 users.

    .venv/bin/python benchmarks/ingestion_benchmark.py                       # both scales
    .venv/bin/python benchmarks/ingestion_benchmark.py --users 100000 --listens-per-user 20 \
        --tracks 10000 --concurrency 4

For each scale, the API emulator runs as a separate process (`python -m moovitamix_api.cli`,
so it does not share a GIL with what is measured) on a free loopback port, serving one
snapshot day (--as-of = --start-date, so the counts are exactly --users / --tracks). Then,
against that same emulator process:

1. baseline: a bare client (one keep-alive requests.Session, a ThreadPoolExecutor of
   --concurrency threads, no retries) reads `pages` from page 1 of each endpoint, then
   downloads every other page without parsing it, counting bytes. This is roughly the
   fastest a Python client can pull the data from this server;
2. pipeline: `dg.materialize` of the raw snapshot assets and the core assets (no asset
   checks) for that day's partition, into a fresh DuckDB file in a temporary directory,
   with the API resource at the same concurrency. The row counts are read back and
   asserted against what the emulator serves (raw = every served record; core.users /
   core.tracks = the records; core.listen_history = every listen).

How to read the ratio: `ratio` = pipeline wall seconds / baseline seconds. 1.0 would mean
ingestion costs nothing beyond the download; the excess is what parsing JSON, re-encoding
pages, writing DuckDB, building the core tables and Dagster's own overhead add on top.
`raw/base` compares only the three raw assets (pull + write, their metadata `seconds`)
with the baseline, i.e. what the ingestion adds to the download itself; `core s` is the
three core builds (SQL only, no HTTP). Both processes share the machine's cores with
each other (and with anything else running): the load average is printed per phase.

Memory: this process's RSS is sampled every 10 ms during the pipeline phase only, and
each Dagster step's peak is read from the samples between its STEP_START and STEP_SUCCESS
events; the table shows the RSS before the phase (the benchmark itself, Dagster, the
expected counts), the peak during the raw steps and the peak during the core steps. The
emulator's peak RSS is sampled over both phases. `ru_maxrss`, printed at the end, is this
process's lifetime peak, across every scale.
"""

import argparse
import datetime as dt
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import psutil
import requests
from requests.adapters import HTTPAdapter

from moovitamix_api.data import expected_counts
from moovitamix_api.settings import EmulatorSettings
from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ml.registry import ModelStore
from moovitamix_assets.resources.environment import pipeline_resources
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.warehouse import WarehouseResource

from measure import PeakRss, start_emulator, stop_emulator

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("users", "tracks", "listen_history")
DAY = "2026-11-01"  # served snapshot date, start date and partition key
PAGE_SIZE = 100
MIB = 2**20


# ---------------------------------------------------------------------------------------
# Helpers: ports, the emulator process, peak memory
# ---------------------------------------------------------------------------------------


def start_emulator_at(users: int, tracks: int, listens_per_user: float) -> tuple:
    return start_emulator([
        "--users", str(users), "--tracks", str(tracks), "--listens-per-user", str(listens_per_user),
        "--start-date", DAY, "--as-of", DAY,
    ])  # fmt: skip


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# ---------------------------------------------------------------------------------------
# Phase 1: the bare concurrent download
# ---------------------------------------------------------------------------------------


@dataclass
class Download:
    endpoint: str
    pages: int
    total: int
    bytes: int
    seconds: float


def bare_download(base_url: str, endpoint: str, concurrency: int) -> Download:
    """Every page of one endpoint with a plain session and thread pool: no retries, no parsing."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    url = f"{base_url}/{endpoint}"

    def fetch(number: int) -> int:
        response = session.get(url, params={"page": number, "size": PAGE_SIZE}, timeout=30)
        response.raise_for_status()
        return len(response.content)

    started = time.perf_counter()
    first = session.get(url, params={"page": 1, "size": PAGE_SIZE}, timeout=30)
    first.raise_for_status()
    body = first.json()  # the only parse: how many pages there are
    size = len(first.content)
    with ThreadPoolExecutor(concurrency) as pool:
        size += sum(pool.map(fetch, range(2, body["pages"] + 1)))
    seconds = time.perf_counter() - started
    session.close()
    return Download(endpoint, body["pages"], body["total"], size, seconds)


# ---------------------------------------------------------------------------------------
# Phase 2: the pipeline
# ---------------------------------------------------------------------------------------


@dataclass
class Step:
    seconds: float  # the step's wall time, STEP_START to STEP_SUCCESS in the event log
    asset_seconds: float  # the materialization's own `seconds` metadata
    peak_rss: int  # this process's peak RSS while the step ran


@dataclass
class PipelineRun:
    seconds: float  # wall time of dg.materialize
    steps: dict  # "raw/users" -> Step
    raw_bytes: int  # the raw assets' `bytes` metadata, summed
    rows: dict  # "raw.users" -> row count read back
    database_bytes: int
    peak_rss: int
    start_rss: int
    cpu_seconds: float  # this process's CPU time over the phase

    @property
    def raw_seconds(self) -> float:
        return sum(step.asset_seconds for key, step in self.steps.items() if key.startswith("raw/"))

    @property
    def core_seconds(self) -> float:
        return sum(step.asset_seconds for key, step in self.steps.items() if key.startswith("core/"))

    def phase_peak_rss(self, prefix: str) -> int:
        return max(step.peak_rss for key, step in self.steps.items() if key.startswith(prefix))


def materialize_day(
    base_url: str, database: Path, concurrency: int, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*raw_snapshot_assets, *core_assets],
        partition_key=DAY,
        resources=pipeline_resources(
            api=MoovitamixApiResource(base_url=base_url, max_concurrency=concurrency),
            warehouse=WarehouseResource(database=str(database)),
            model_store=ModelStore(directory=str(Path(database).parent / "models")),
            allow_any_snapshot_date=True,  # the emulator is pinned to DAY
        ),
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )


def metadata_value(event: dg.AssetMaterialization, key: str):
    return event.metadata[key].value


def step_windows(instance: dg.DagsterInstance, run_id: str) -> dict:
    """step key -> (start, end) wall-clock times of the run's successful steps."""
    starts, windows = {}, {}
    types = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    for entry in instance.all_logs(run_id, of_type=types):
        if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        else:
            windows[entry.step_key] = (starts[entry.step_key], entry.timestamp)
    return windows


def run_pipeline(base_url: str, concurrency: int) -> PipelineRun:
    with tempfile.TemporaryDirectory(prefix="ingestion-benchmark-") as folder:
        database = Path(folder) / "moovitamix.duckdb"
        instance = dg.DagsterInstance.ephemeral()
        cpu_before = cpu_seconds(os.getpid())
        with PeakRss(os.getpid()) as rss:
            started = time.perf_counter()
            result = materialize_day(base_url, database, concurrency, instance)
            seconds = time.perf_counter() - started
        cpu = cpu_seconds(os.getpid()) - cpu_before
        windows = step_windows(instance, result.run_id)
        steps, raw_bytes = {}, 0
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            key = "/".join(materialization.asset_key.path)
            start, end = windows[event.step_key]
            steps[key] = Step(end - start, float(metadata_value(materialization, "seconds")), rss.peak_between(start, end))
            if key.startswith("raw/"):
                raw_bytes += int(metadata_value(materialization, "bytes"))
        with duckdb.connect(str(database), read_only=True) as connection:
            rows = {
                f"{schema}.{entity}": connection.execute(f"SELECT count(*) FROM {schema}.{entity}").fetchone()[0]
                for schema in ("raw", "core")
                for entity in ENDPOINTS
            }
            (rows["quality.rejected_records"],) = connection.execute(
                "SELECT count(*) FROM quality.rejected_records"
            ).fetchone()
        database_bytes = sum(path.stat().st_size for path in Path(folder).iterdir() if path.is_file())
    return PipelineRun(seconds, steps, raw_bytes, rows, database_bytes, rss.peak, rss.start, cpu)


# ---------------------------------------------------------------------------------------
# One scale
# ---------------------------------------------------------------------------------------


@dataclass
class ScaleResult:
    users: int
    listens_per_user: float
    served: dict  # endpoint -> records served
    listens: int
    downloads: list
    pipeline: PipelineRun
    emulator_peak_rss: int
    loads: dict = field(default_factory=dict)  # phase -> load average at its end

    @property
    def baseline_seconds(self) -> float:
        return sum(download.seconds for download in self.downloads)

    @property
    def records(self) -> int:
        return sum(self.served.values())


def expected_rows(settings: EmulatorSettings) -> tuple:
    """(served records per endpoint, listens) of the emulator with `settings`, computed locally."""
    counts = expected_counts(settings, as_of=dt.date.fromisoformat(DAY))
    served = {endpoint: counts[endpoint]["served"] for endpoint in ENDPOINTS}
    return served, counts["listen_history"]["listens"]


def check_rows(result: ScaleResult, reported: dict) -> None:
    """The rows read back equal what the emulator serves (no data faults are configured)."""
    assert reported == result.served, f"the emulator reports {reported}, expected {result.served}"
    expected = {
        **{f"raw.{endpoint}": count for endpoint, count in result.served.items()},
        "core.users": result.served["users"],
        "core.tracks": result.served["tracks"],
        "core.listen_history": result.listens,
        "quality.rejected_records": 0,
    }
    assert result.pipeline.rows == expected, f"rows read back {result.pipeline.rows} != expected {expected}"


def run_scale(users: int, tracks: int, listens_per_user: float, concurrency: int) -> ScaleResult:
    settings = EmulatorSettings(
        users=users,
        tracks=tracks,
        listens_per_user=listens_per_user,
        start_date=dt.date.fromisoformat(DAY),
        as_of=dt.date.fromisoformat(DAY),
    )
    served, listens = expected_rows(settings)
    print(f"\n=== {users:,} users, {tracks:,} tracks, {listens_per_user:g} listens per user (mean) ===")
    print(f"load average at start: {load_average()}")
    process, base_url = start_emulator_at(users, tracks, listens_per_user)
    try:
        reported = requests.get(f"{base_url}/_admin/state", timeout=30).json()["counts"]
        with PeakRss(process.pid) as emulator_rss:
            emulator_cpu = cpu_seconds(process.pid)
            downloads = []
            for endpoint in ENDPOINTS:
                download = bare_download(base_url, endpoint, concurrency)
                downloads.append(download)
                print(
                    f"baseline  /{endpoint:<15} {download.pages:>6,} pages {download.total:>9,} records "
                    f"{download.bytes / MIB:8.1f} MiB {download.seconds:7.1f} s"
                )
            baseline_emulator_cpu = cpu_seconds(process.pid) - emulator_cpu
            loads = {"baseline": load_average()}
            print(f"baseline  emulator CPU {baseline_emulator_cpu:.1f} s; load average {loads['baseline']}")

            emulator_cpu = cpu_seconds(process.pid)
            pipeline = run_pipeline(base_url, concurrency)
            pipeline_emulator_cpu = cpu_seconds(process.pid) - emulator_cpu
            loads["pipeline"] = load_average()
        for key, step in pipeline.steps.items():
            print(
                f"pipeline  {key:<20} {step.asset_seconds:7.1f} s (step {step.seconds:6.1f} s), "
                f"peak RSS {step.peak_rss / MIB:6.0f} MiB"
            )
        overhead = pipeline.seconds - pipeline.raw_seconds - pipeline.core_seconds
        print(
            f"pipeline  total {pipeline.seconds:.1f} s (Dagster and other overhead {overhead:.1f} s); "
            f"CPU: pipeline process {pipeline.cpu_seconds:.1f} s, emulator {pipeline_emulator_cpu:.1f} s; "
            f"load average {loads['pipeline']}"
        )
        print("rows read back: " + ", ".join(f"{table} {count:,}" for table, count in pipeline.rows.items()))
        result = ScaleResult(
            users, listens_per_user, served, listens, downloads, pipeline, emulator_rss.peak, loads
        )
        check_rows(result, reported)
        print("row counts equal the emulator's totals: OK")
        baseline_bytes = sum(download.bytes for download in downloads)
        if pipeline.raw_bytes != baseline_bytes:
            print(f"note: the pipeline received {pipeline.raw_bytes:,} bytes, the baseline {baseline_bytes:,}")
        return result
    finally:
        stop_emulator(process)


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def print_table(results: list, concurrency: int) -> None:
    print(f"\nIngestion of one day, concurrency {concurrency} (seconds are wall time)")
    header = (
        f"{'users':>9} {'l/user':>6} {'tracks':>7} {'histories':>9} {'listens':>11} {'MiB':>7} "
        f"{'base s':>7} {'raw s':>7} {'core s':>7} {'pipe s':>7} {'ratio':>6} {'raw/base':>8} "
        f"{'base rec/s':>10} {'pipe rec/s':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        p = r.pipeline
        size = sum(d.bytes for d in r.downloads) / MIB
        print(
            f"{r.users:>9,} {r.listens_per_user:>6g} {r.served['tracks']:>7,} {r.served['listen_history']:>9,} "
            f"{r.listens:>11,} {size:>7.0f} {r.baseline_seconds:>7.1f} {p.raw_seconds:>7.1f} "
            f"{p.core_seconds:>7.1f} {p.seconds:>7.1f} {p.seconds / r.baseline_seconds:>6.2f} "
            f"{p.raw_seconds / r.baseline_seconds:>8.2f} {r.records / r.baseline_seconds:>10,.0f} "
            f"{r.records / p.seconds:>10,.0f}"
        )
    print()
    header = (
        f"{'users':>9} {'pipeline RSS MiB: before, raw peak, core peak':>46} {'emulator peak RSS MiB':>22} "
        f"{'DuckDB MiB':>11} {'listens/s (pipe)':>17}  load avg (1/5/15 min) after baseline | pipeline"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        p = r.pipeline
        print(
            f"{r.users:>9,} {rss_figures(p):>46} "
            f"{r.emulator_peak_rss / MIB:>22.0f} {p.database_bytes / MIB:>11.1f} "
            f"{r.listens / p.seconds:>17,.0f}  {r.loads['baseline']} | {r.loads['pipeline']}"
        )
    # ru_maxrss is in KiB on Linux, and covers this process's whole life (every scale).
    print(f"\nthis process's lifetime peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("records = users + tracks + listen histories (one record per user); ratio = pipe s / base s")


def rss_figures(pipeline: PipelineRun) -> str:
    figures = (pipeline.start_rss, pipeline.phase_peak_rss("raw/"), pipeline.phase_peak_rss("core/"))
    return ", ".join(f"{value / MIB:.0f}" for value in figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000], help="scales to run")
    parser.add_argument("--tracks", type=int, default=10_000, help="tracks at every scale")
    parser.add_argument(
        "--listens-per-user", type=float, nargs="+", default=[20.0],
        help="mean listens per history: one value for every scale, or one per --users value",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=4, help="threads of both clients")
    args = parser.parse_args()
    listens = args.listens_per_user
    if len(listens) == 1:
        listens = listens * len(args.users)
    if len(listens) != len(args.users):
        parser.error("give one --listens-per-user value, or one per --users value")
    print(
        f"{os.cpu_count()} CPUs; scales: "
        + ", ".join(f"{users:,} users x {per_user:g} listens" for users, per_user in zip(args.users, listens))
        + f"; {args.tracks:,} tracks; concurrency {args.concurrency}"
    )
    results = [
        run_scale(users, args.tracks, per_user, args.concurrency) for users, per_user in zip(args.users, listens)
    ]
    print_table(results, args.concurrency)


if __name__ == "__main__":
    main()
