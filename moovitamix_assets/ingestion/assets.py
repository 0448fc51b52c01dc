"""Raw snapshots: each day's full pull of every endpoint, verified, staged, then loaded in one short transaction.

The three endpoints are pulled concurrently, each until it gives a consistent view (see
pull.py), into Parquet files under the staging folder; the DuckDB file is opened only
afterwards, for one transaction that replaces the day's rows of every endpoint pulled and
records them in raw.snapshot_manifest. A pull that fails anywhere loads nothing: the day
keeps its previous rows (or none) for every endpoint.
"""

import datetime as dt
import fcntl
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Iterator, Mapping

import dagster as dg
import duckdb

from moovitamix_assets.constants import RAW
from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.ingestion.partitions import daily_snapshots
from moovitamix_assets.ingestion.pull import StagedPull, pull_endpoint
from moovitamix_assets.ingestion.snapshots import SNAPSHOT_MANIFEST, create_snapshot_manifest
from moovitamix_assets.monitoring.metrics import record_asset_metrics
from moovitamix_assets.resources.api import MoovitamixApiError, MoovitamixApiResource
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    raw_table,
    run_sql_file,
    transaction,
    utc_now,
    utc_today,
)

SQL = Path(__file__).parent / "sql"

STAGING_PATH_ENV = "MOOVITAMIX_STAGING_PATH"
DEFAULT_STAGING_PATH = "data/staging"

# Step retries with exponential backoff for a pull that fails (an outage at 02:00 should
# not lose the day); the daily job's run retries (dagster.yaml, the job's tags) cover a
# process that died.
RAW_STEP_RETRIES_ENV = "MOOVITAMIX_RAW_STEP_RETRIES"
RAW_RETRY_DELAY_ENV = "MOOVITAMIX_RAW_RETRY_DELAY_SECONDS"
RAW_RETRY_POLICY = dg.RetryPolicy(
    max_retries=int(os.getenv(RAW_STEP_RETRIES_ENV, "2")),
    delay=float(os.getenv(RAW_RETRY_DELAY_ENV, "10")),
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)


class RawStaging(dg.ConfigurableResource):
    """Where pulls are staged as Parquet before the load, and how hard a pull tries to be consistent."""

    root: str = DEFAULT_STAGING_PATH
    max_pull_attempts: int = 4  # full passes over an endpoint before it is declared moving

    def run_directory(self, run_id: str) -> Path:
        return Path(self.root) / run_id

    def lock_path(self, run_id: str) -> Path:
        return Path(self.root) / f"{run_id}.lock"

    def claim(self, run_id: str) -> IO:
        """Holds the run's staging with an advisory lock (<root>/<run_id>.lock) until release().

        The lock dies with the process, SIGKILL included, so a sweep tells a live pull from
        a dead one by it, whatever Dagster instance each run is on: a run's status cannot
        (an ephemeral instance knows no other run; a killed run stays STARTED for a while).
        """
        Path(self.root).mkdir(parents=True, exist_ok=True)
        lock = open(self.lock_path(run_id), "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def release(self, run_id: str, lock: IO) -> None:
        """Removes the run's staged files and its lock."""
        shutil.rmtree(self.run_directory(run_id), ignore_errors=True)
        self.lock_path(run_id).unlink(missing_ok=True)
        lock.close()


def raw_staging_from_env() -> RawStaging:
    return RawStaging(root=os.getenv(STAGING_PATH_ENV, DEFAULT_STAGING_PATH))


class SnapshotPolicy(dg.ConfigurableResource):
    """Which daily partitions a pull may be stored under.

    The API has no as-of parameter: it serves the current snapshot only. Stored under a
    date long past (a backfill), it would pass today's data off as that day's, so only
    today's and recent partitions are accepted, unless the API is an emulator pinned to a
    date (`allow_any_date`).
    """

    max_partition_age_days: int = 0  # the pull's own UTC day: a run retried after midnight is refused
    allow_any_date: bool = False


def check_partition_date(partition_key: str, policy: SnapshotPolicy, today: dt.date) -> None:
    age = (today - dt.date.fromisoformat(partition_key)).days
    if policy.allow_any_date or 0 <= age <= policy.max_partition_age_days:
        return
    raise dg.Failure(
        f"partition {partition_key} is {age} days from today ({today}, UTC); the API serves only the "
        f"current snapshot, so a pull is stored under the day it runs (up to "
        f"{policy.max_partition_age_days} day(s) before): a missed day stays missing and today's run "
        "pulls today. A backfill of past days is not possible upstream; against an emulator pinned "
        "to a date, set MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE=1."
    )



def sweep_staging(staging: RawStaging, current_run_id: str) -> list[str]:
    """Removes the staged files of runs no longer in progress (killed, failed, finished): those whose lock is free."""
    root = Path(staging.root)
    run_ids = sorted({path.name.removesuffix(".lock") for path in root.iterdir()}) if root.exists() else []
    swept = []
    for run_id in run_ids:
        if run_id == current_run_id:
            continue
        with open(staging.lock_path(run_id), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a pull in progress, in this process or another
            shutil.rmtree(staging.run_directory(run_id), ignore_errors=True)
            staging.lock_path(run_id).unlink(missing_ok=True)
        swept.append(run_id)
    return swept


def pull_endpoints(
    api: MoovitamixApiResource, entities: list[str], directory: Path, max_attempts: int, log
) -> dict[str, StagedPull]:
    """Pulls the endpoints concurrently, each staged in its own folder; raises naming every endpoint that failed."""
    client = api.get_client()
    with ThreadPoolExecutor(len(entities), thread_name_prefix="moovitamix-pull") as pool:
        futures = {
            entity: pool.submit(pull_endpoint, client, entity, directory / entity, max_attempts, log)
            for entity in entities
        }
        errors, pulls = [], {}
        for entity, future in futures.items():
            try:
                pulls[entity] = future.result()
            except MoovitamixApiError as error:
                errors.append(error)
    if errors:
        loaded = "nothing was loaded: every endpoint keeps its previous snapshot"
        raise dg.Failure(
            f"{len(errors)} of {len(entities)} endpoint(s) failed ({loaded}): " + " | ".join(map(str, errors)),
            # The step's retries wait out an outage; they cannot change a 401 or a 404.
            allow_retries=any(error.transient for error in errors),
        )
    return pulls


def load_snapshot(
    connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date, run_id: str, pulls: Mapping[str, StagedPull]
) -> dict[str, int]:
    """One transaction: each pulled endpoint's day replaced by its staged rows, and its manifest row.

    A failure at any point (the disk, the process) rolls back: the day keeps its previous
    complete rows, or none, for every endpoint, never a part of one.
    """
    create_snapshot_manifest(connection)
    loaded_at = utc_now()
    rows = {}
    for entity in pulls:
        run_sql_file(connection, SQL / "create_raw_table.sql", table=raw_table(entity))
    with transaction(connection):
        for entity, pull in pulls.items():
            run_sql_file(
                connection,
                SQL / ("load_merged_raw_snapshot.sql" if pull.merged else "load_raw_snapshot.sql"),
                {
                    "snapshot_date": snapshot_date,
                    "run_id": run_id,
                    "ingested_at": loaded_at,
                    "staged_files": [str(path) for path in pull.files],
                    "winning_pass": pull.winning_pass,
                },
                table=raw_table(entity),
            )
            (rows[entity],) = connection.execute(
                f"SELECT count(*) FROM {raw_table(entity)} WHERE snapshot_date = ?", [snapshot_date]
            ).fetchall()[0]
            connection.execute(
                f"INSERT OR REPLACE INTO {SNAPSHOT_MANIFEST} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [snapshot_date, entity, rows[entity], pull.total_reported, pull.attempts, pull.records_moved,
                 run_id, loaded_at],
            )  # fmt: skip
    return rows


@dg.multi_asset(
    name="raw_snapshots",
    specs=[
        dg.AssetSpec(
            [RAW, entity],
            group_name=RAW,
            partitions_def=daily_snapshots,
            kinds={"duckdb", "parquet"},
            description=f"The day's full pull of GET /{entity}, verified consistent, every record and field as received.",
            skippable=True,
        )
        for entity in ENTITIES
    ],
    can_subset=True,
    pool=DUCKDB_POOL,
    retry_policy=RAW_RETRY_POLICY,
)
def raw_snapshots(
    context: dg.AssetExecutionContext,
    api: MoovitamixApiResource,
    warehouse: WarehouseResource,
    snapshot_policy: SnapshotPolicy,
    raw_staging: RawStaging,
) -> Iterator[dg.MaterializeResult]:
    """Pulls the selected endpoints concurrently into Parquet, then loads the day in one short transaction."""
    check_partition_date(context.partition_key, snapshot_policy, utc_today())
    snapshot_date = dt.date.fromisoformat(context.partition_key)
    run_id = context.run.run_id
    entities = [entity for entity in ENTITIES if dg.AssetKey([RAW, entity]) in context.selected_asset_keys]
    staging_lock = raw_staging.claim(run_id)
    try:
        swept = sweep_staging(raw_staging, run_id)
        if swept:
            context.log.info(f"removed the staged files of {len(swept)} run(s) no longer in progress: {swept}")
        started = time.monotonic()
        directory = raw_staging.run_directory(run_id)
        pulls = pull_endpoints(api, entities, directory, raw_staging.max_pull_attempts, context.log)
        pulled = time.monotonic()
        with warehouse.get_connection() as connection:
            rows = load_snapshot(connection, snapshot_date, run_id, pulls)
            lock_seconds = time.monotonic() - pulled
            results = []
            for entity, pull in pulls.items():
                if rows[entity] != pull.total_reported:
                    context.log.warning(
                        f"/{entity}: {rows[entity]} records kept, the API reported {pull.total_reported}: "
                        f"{pull.records_moved} records moved while it was pulled ({pull.attempts} passes)."
                    )
                if pull.replaced_characters:
                    context.log.warning(
                        f"/{entity}: {pull.replaced_characters} lone UTF-16 surrogate(s) replaced with U+FFFD"
                    )
                seconds = time.monotonic() - started
                metadata = {
                    "dagster/row_count": rows[entity],
                    "dagster/table_name": raw_table(entity),
                    "snapshot_date": context.partition_key,
                    **pull.metadata(),
                    # The pull and the load together, rather than the client's own figures.
                    "records": rows[entity],
                    "seconds": round(seconds, 3),
                    "records_per_second": round(rows[entity] / seconds, 1) if seconds else 0.0,
                    "write_lock_seconds": round(lock_seconds, 3),
                }
                record_asset_metrics(connection, run_id, f"{RAW}/{entity}", context.partition_key, metadata)
                results.append(dg.MaterializeResult(asset_key=[RAW, entity], metadata=metadata))
    finally:
        raw_staging.release(run_id, staging_lock)
    yield from results


raw_snapshot_assets = [raw_snapshots]
