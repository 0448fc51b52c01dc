"""The Parquet lake against the emulator and a real DuckDB file: exports, verification and retention."""

import datetime as dt
import functools
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pydantic
import pytest
import requests

from moovitamix_api.data import expected_counts
from moovitamix_api.server import serve_in_thread
from moovitamix_assets.contract import ENTITIES, TRACKS, USERS
from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.monitoring.lake import (
    RetentionConfig,
    apply_retention,
    partition_path,
    raw_retention,
    raw_snapshot_parquet,
    retention_window,
    verify_parquet_copy,
)
from moovitamix_assets_tests.pipeline import INGESTION, check_results, query, resources, scalar

# Four complete days, then a day whose /users only was pulled (incomplete, as a day being retried).
COMPLETE_DAYS = ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02")
INCOMPLETE_DAY = "2026-11-03"
USERS_ONLY = [dg.AssetKey(["raw", USERS])]

CHECKSUM = "count(*), sum(hash(page, position_in_page, record::VARCHAR))"

# For runs that only read DuckDB: nothing listens there, and nothing calls it.
NO_API = "http://127.0.0.1:9"

MONITORING = ("monitoring.asset_metrics", "monitoring.check_results")


@pytest.fixture(scope="module")
def lake_settings(emulator_settings):
    # A few duplicates per day, so that every day has rejected records (duplicate_id).
    return emulator_settings.replace(duplicate_rate=0.005)


@pytest.fixture(scope="module")
def served(lake_settings):
    @functools.lru_cache(maxsize=None)
    def counts(day: str) -> dict:
        return expected_counts(lake_settings, dt.date.fromisoformat(day))

    return lambda day, entity, figure="served": counts(day)[entity][figure]


def materialize(database: Path, assets, base_url: str = NO_API, **options) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(assets), resources=resources(base_url, database), instance=dg.DagsterInstance.ephemeral(), **options
    )


def retention(database: Path, raise_on_error: bool = True, **config) -> dg.ExecuteInProcessResult:
    return materialize(
        database,
        [raw_retention],
        run_config=dg.RunConfig({"lake__raw_retention": RetentionConfig(**config)}),
        raise_on_error=raise_on_error,
    )


def retention_metadata(result: dg.ExecuteInProcessResult) -> dict:
    return {key: value.value for key, value in result.asset_materializations_for_node("lake__raw_retention")[0].metadata.items()}


@pytest.fixture(scope="module")
def five_days(tmp_path_factory, lake_settings):
    """A warehouse with four complete days (raw, core, checks, Parquet copies) and a fifth
    with /users only, built once; tests copy it. Returns (folder, {day: run id})."""
    folder = tmp_path_factory.mktemp("five_days")
    database = folder / "warehouse.duckdb"
    run_ids = {}
    with serve_in_thread(lake_settings) as base_url:
        for day in (*COMPLETE_DAYS, INCOMPLETE_DAY):
            requests.post(f"{base_url}/_admin/state", json={"as_of": day}, timeout=5).raise_for_status()
            if day == INCOMPLETE_DAY:
                result = materialize(database, raw_snapshot_assets, base_url, partition_key=day, selection=USERS_ONLY)
            else:
                result = materialize(database, [*INGESTION, raw_snapshot_parquet], base_url, partition_key=day)
            run_ids[day] = result.run_id
    return folder, run_ids


@pytest.fixture
def warehouse(five_days, tmp_path) -> tuple[Path, Path]:
    shutil.copytree(five_days[0], tmp_path / "copy")
    return tmp_path / "copy" / "warehouse.duckdb", tmp_path / "copy" / "lake"


def parquet_fingerprint(path: Path) -> tuple:
    with duckdb.connect() as connection:
        return connection.execute(f"SELECT {CHECKSUM} FROM read_parquet('{path}')").fetchone()


def days_in(database: Path, table: str) -> list[tuple[str, int]]:
    return query(database, f"SELECT snapshot_date::VARCHAR, count(*) FROM {table} GROUP BY 1 ORDER BY 1")


def lake_days(lake_root: Path, entity: str) -> list[str]:
    return sorted(path.name.removeprefix("snapshot_date=") for path in (lake_root / "raw" / entity).iterdir())


def test_each_day_is_exported_with_the_exact_rows_of_duckdb(warehouse, served):
    database, lake_root = warehouse
    for day in COMPLETE_DAYS:
        for entity in ENTITIES:
            in_duckdb = query(database, f"SELECT {CHECKSUM} FROM raw.{entity} WHERE snapshot_date = ?", [day])[0]
            assert parquet_fingerprint(partition_path(str(lake_root), entity, day)) == in_duckdb
            assert in_duckdb[0] == served(day, entity)
    assert served("2026-11-01", USERS) == 1160  # the world grows, so the files really differ day to day
    assert served("2026-11-02", USERS) == 1165


def test_the_lake_reads_as_one_hive_partitioned_table(warehouse, served):
    database, lake_root = warehouse
    with duckdb.connect() as connection:
        rows = connection.execute(
            f"""
            SELECT snapshot_date, typeof(snapshot_date), count(*), count(DISTINCT filename)
            FROM read_parquet('{lake_root}/raw/*/*/*.parquet', hive_partitioning = true, filename = true)
            GROUP BY ALL ORDER BY 1
            """
        ).fetchall()
        record_type = connection.execute(
            f"SELECT typeof(record), record->>'first_name' IS NOT NULL FROM read_parquet('{lake_root}/raw/users/*/*.parquet') LIMIT 1"
        ).fetchone()
    assert rows == [
        (dt.date.fromisoformat(day), "DATE", sum(served(day, entity) for entity in ENTITIES), 3) for day in COMPLETE_DAYS
    ]
    assert record_type == ("VARCHAR", True)


def test_a_re_export_replaces_the_file_with_the_same_content(warehouse):
    database, lake_root = warehouse
    path = partition_path(str(lake_root), USERS, COMPLETE_DAYS[0])
    before, inode = parquet_fingerprint(path), path.stat().st_ino

    materialize(database, [raw_snapshot_parquet], partition_key=COMPLETE_DAYS[0])

    assert path.stat().st_ino != inode  # a new file was renamed over the old one
    assert parquet_fingerprint(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.parquet"]  # no temporary file left


def test_retention_keeps_the_newest_complete_days_whatever_their_age(warehouse, five_days, served):
    """Three days of the retention, one after the other, with exact rows kept and pruned per table."""
    database, lake_root = warehouse
    first, second, third, fourth = COMPLETE_DAYS
    policy = dict(keep_complete_days=2, raw_days=7, lake_days=8, rejected_records_days=7, monitoring_days=30)
    rejected = dict(days_in(database, "quality.rejected_records"))
    assert rejected == {day: sum(served(day, entity, "duplicates") for entity in ENTITIES) for day in COMPLETE_DAYS}
    assert rejected[first] == 17
    # The first day's monitoring rows, aged past monitoring_days (every row here was written today).
    with duckdb.connect(str(database)) as connection:
        (aged_metrics,) = connection.execute(
            "UPDATE monitoring.asset_metrics SET recorded_at = TIMESTAMP '2026-09-01' WHERE partition = ?", [first]
        ).fetchone()
        (aged_checks,) = connection.execute(
            "UPDATE monitoring.check_results SET recorded_at = TIMESTAMP '2026-09-01' WHERE run_id = ?", [five_days[1][first]]
        ).fetchone()
    assert aged_metrics > 0 and aged_checks > 0
    monitoring_rows = {table: scalar(database, f"SELECT count(*) FROM {table}") for table in MONITORING}
    second_day_copies = {entity: parquet_fingerprint(partition_path(str(lake_root), entity, second)) for entity in ENTITIES}

    # 2026-11-07: the newest two complete days are 11-01 and 11-02; the first day is past raw_days.
    metadata = retention_metadata(retention(database, today="2026-11-07", **policy))

    assert metadata["protected_since"] == third
    assert metadata["pruned"] == [f"raw.{entity}/{first}" for entity in ENTITIES]
    assert metadata["kept"] == {
        **{f"raw.{entity}/{second}": "younger than the cutoff (2026-10-31)" for entity in ENTITIES},
        **{f"raw.{entity}/{day}": "within the newest 2 complete days (since 2026-11-01)" for entity in ENTITIES for day in (third, fourth)},
        f"raw.users/{INCOMPLETE_DAY}": "newer than the newest complete day (2026-11-02)",
    }  # fmt: skip
    for entity in ENTITIES:
        kept_days = [second, third, fourth] + ([INCOMPLETE_DAY] if entity == USERS else [])
        assert days_in(database, f"raw.{entity}") == [(day, served(day, entity)) for day in kept_days]
        assert metadata[f"pruned_rows_raw.{entity}"] == served(first, entity)
        assert metadata[f"kept_rows_raw.{entity}"] == sum(served(day, entity) for day in kept_days)
        assert lake_days(lake_root, entity) == list(COMPLETE_DAYS)  # the lake keeps lake_days
    assert metadata["rows_deleted"] == sum(served(first, entity) for entity in ENTITIES)
    assert (metadata["lake_partitions_deleted"], metadata["lake_partitions_kept"]) == (0, 12)
    # A day pruned from DuckDB stays in the manifest while its copy is in the lake.
    assert (metadata["pruned_rows_raw.snapshot_manifest"], metadata["kept_rows_raw.snapshot_manifest"]) == (0, 13)
    assert (metadata["pruned_rows_quality.rejected_records"], metadata["kept_rows_quality.rejected_records"]) == (
        rejected[first], rejected[second] + rejected[third] + rejected[fourth]
    )
    assert metadata["pruned_rows_monitoring.asset_metrics"] == aged_metrics
    assert metadata["pruned_rows_monitoring.check_results"] == aged_checks
    assert metadata["kept_rows_monitoring.asset_metrics"] == monitoring_rows["monitoring.asset_metrics"] - aged_metrics
    assert metadata["tables"]["monitoring.check_results"] == {
        "pruned": aged_checks, "kept": monitoring_rows["monitoring.check_results"] - aged_checks
    }  # fmt: skip

    # 2026-11-08: the second day leaves DuckDB; the first, in neither DuckDB nor its retention, leaves the lake.
    metadata = retention_metadata(retention(database, today="2026-11-08", **policy))

    assert metadata["pruned"] == [f"raw.{entity}/{second}" for entity in ENTITIES]
    assert metadata["lake_deleted"] == [f"{entity}/{first}" for entity in ENTITIES]
    assert (metadata["pruned_rows_raw.snapshot_manifest"], metadata["kept_rows_raw.snapshot_manifest"]) == (3, 10)
    assert metadata["pruned_rows_quality.rejected_records"] == rejected[second]
    for entity in ENTITIES:
        assert lake_days(lake_root, entity) == [second, third, fourth]
        assert parquet_fingerprint(partition_path(str(lake_root), entity, second)) == second_day_copies[entity]
    assert query(database, "SELECT DISTINCT snapshot_date::VARCHAR FROM raw.snapshot_manifest ORDER BY 1") == [
        (day,) for day in (second, third, fourth, INCOMPLETE_DAY)
    ]
    # Exporting a pruned day again keeps its copy: it is the only one left.
    exported = materialize(database, [raw_snapshot_parquet], partition_key=second)
    assert exported.asset_materializations_for_node("lake__raw_snapshot_parquet")[0].metadata["archived_copies_kept"].value == 3
    for entity in ENTITIES:
        assert parquet_fingerprint(partition_path(str(lake_root), entity, second)) == second_day_copies[entity]

    # Seven months later, with no new day: the newest two complete days stay in DuckDB and the
    # lake, past every cutoff; so does the incomplete day after them.
    metadata = retention_metadata(retention(database, today="2027-06-01", **policy))

    assert metadata["pruned"] == []
    assert metadata["kept"][f"raw.users/{third}"] == "within the newest 2 complete days (since 2026-11-01)"
    assert metadata["kept"][f"raw.users/{INCOMPLETE_DAY}"] == "newer than the newest complete day (2026-11-02)"
    for entity in ENTITIES:
        assert lake_days(lake_root, entity) == [third, fourth]
    assert days_in(database, "raw.users") == [(day, served(day, USERS)) for day in (third, fourth, INCOMPLETE_DAY)]
    assert metadata["lake_deleted"] == [f"{entity}/{second}" for entity in ENTITIES]
    assert (metadata["pruned_rows_raw.snapshot_manifest"], metadata["kept_rows_raw.snapshot_manifest"]) == (3, 7)
    assert days_in(database, "quality.rejected_records") == [(third, rejected[third]), (fourth, rejected[fourth])]
    assert metadata["pruned_rows_quality.rejected_records"] == 0
    # Monitoring rows age by when they were written: all of them are past 90 days by then.
    for table in MONITORING:
        assert metadata[f"kept_rows_{table}"] == 0
        assert scalar(database, f"SELECT count(*) FROM {table}") == 0


def test_retention_keeps_a_partition_whose_copy_is_missing_or_differs(warehouse, served):
    database, lake_root = warehouse
    first, second = COMPLETE_DAYS[:2]
    partition_path(str(lake_root), USERS, first).unlink()
    tampered = partition_path(str(lake_root), TRACKS, second)
    with duckdb.connect() as connection:
        connection.execute(f"COPY (SELECT * FROM read_parquet('{tampered}') LIMIT 1000) TO '{tampered}.short' (FORMAT parquet)")
    Path(f"{tampered}.short").replace(tampered)

    with duckdb.connect(str(database)) as connection:
        ok, details = verify_parquet_copy(connection, TRACKS, second, str(lake_root))
        window = retention_window(connection, RetentionConfig(keep_complete_days=2), dt.date(2027, 6, 1))
        report = apply_retention(connection, str(lake_root), window)
    assert not ok
    assert details.startswith("Parquet copy differs: 1000 rows (checksum ")
    assert f"vs {served(second, TRACKS)} rows" in details
    assert report.unverified == {
        f"raw.users/{first}": f"no Parquet copy at {partition_path(str(lake_root), USERS, first)}",
        f"raw.tracks/{second}": details,
    }
    assert report.differing == [f"raw.tracks/{second}"]
    assert report.pruned == [f"raw.users/{second}", f"raw.tracks/{first}", f"raw.listen_history/{first}", f"raw.listen_history/{second}"]
    assert days_in(database, "raw.users")[0] == (first, served(first, USERS))
    assert days_in(database, "raw.tracks")[0] == (second, served(second, TRACKS))
    assert days_in(database, "raw.listen_history")[0][0] == COMPLETE_DAYS[2]
    # DuckDB still holds a part of both days: the lake keeps every copy of them, past lake_days too.
    assert report.lake_deleted == []
    assert lake_days(lake_root, TRACKS) == list(COMPLETE_DAYS)


def test_the_retention_asset_fails_loudly_when_a_copy_differs(warehouse, served):
    database, lake_root = warehouse
    second = COMPLETE_DAYS[1]
    tampered = partition_path(str(lake_root), TRACKS, second)
    with duckdb.connect() as connection:
        connection.execute(f"COPY (SELECT * FROM read_parquet('{tampered}') LIMIT 10) TO '{tampered}.short' (FORMAT parquet)")
    Path(f"{tampered}.short").replace(tampered)

    result = retention(database, raise_on_error=False, keep_complete_days=2, today="2027-06-01")

    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert f"raw.tracks/{second}" in failure.step_failure_data.error.message
    metadata = failure.step_failure_data.user_failure_data.metadata
    assert metadata["partitions_pruned"].value == 5
    assert metadata["kept"].value[f"raw.tracks/{second}"].startswith("Parquet copy differs: 10 rows")
    assert days_in(database, "raw.tracks")[0] == (second, served(second, TRACKS))
    assert days_in(database, "raw.users")[0][0] == COMPLETE_DAYS[2]


def test_without_a_complete_day_nothing_is_pruned(warehouse):
    database, lake_root = warehouse
    with duckdb.connect(str(database)) as connection:
        connection.execute("DELETE FROM raw.snapshot_manifest WHERE entity <> 'users'")
    before = {table: days_in(database, table) for table in ("raw.users", "raw.tracks", "quality.rejected_records")}

    metadata = retention_metadata(retention(database, keep_complete_days=2, today="2027-06-01"))

    assert metadata["protected_since"] == "none: no complete day"
    assert metadata["pruned"] == [] and metadata["lake_deleted"] == []
    assert set(metadata["kept"].values()) == {"no complete day yet: nothing is pruned"}
    assert {table: days_in(database, table) for table in before} == before
    assert lake_days(lake_root, USERS) == list(COMPLETE_DAYS)


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(keep_complete_days=1), "keep_complete_days must be at least 2"),
        (dict(raw_days=0), "at least 1"),
        (dict(raw_days=60, lake_days=30), r"lake_days \(30\) must be at least raw_days \(60\)"),
    ],
)
def test_retention_config_is_validated(config, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        RetentionConfig(**config)


def test_one_day_older_than_the_retention_materialized_whole_is_never_pruned(emulator, tmp_path):
    """The issue's scenario: everything materialized for one day long past, with the default
    retention counted from today's date: the day is the only snapshot, so nothing of it goes."""
    day = "2026-10-20"
    assert dt.date.fromisoformat(day) < dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=30)
    base_url, database = emulator(as_of=day), tmp_path / "warehouse.duckdb"
    served = {entity: counts["served"] for entity, counts in expected_counts(emulator.settings).items()}
    assert served == {"users": 1095, "tracks": 1038, "listen_history": 1095}

    result = materialize(database, [*INGESTION, raw_snapshot_parquet, raw_retention], base_url, partition_key=day)

    metadata = retention_metadata(result)
    assert metadata["partitions_pruned"] == 0
    assert metadata["kept"] == {f"raw.{entity}/{day}": f"within the newest 7 complete days (since {day})" for entity in ENTITIES}
    for entity in ENTITIES:
        assert days_in(database, f"raw.{entity}") == [(day, served[entity])]
    evaluations = check_results(result)
    assert evaluations and all(evaluation.passed for evaluation in evaluations.values()), evaluations
    # Core rebuilt afterwards from what retention left: the same day, every check passing.
    rebuilt = check_results(materialize(database, core_assets))
    assert rebuilt and all(evaluation.passed for evaluation in rebuilt.values()), rebuilt
    assert scalar(database, "SELECT count(*) FROM core.users") == served["users"]
    assert scalar(database, "SELECT DISTINCT snapshot_date::VARCHAR FROM core.listen_history") == day
