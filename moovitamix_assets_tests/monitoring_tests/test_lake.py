"""The Parquet lake against the emulator and a real DuckDB file: exports, verification and retention."""

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests

from moovitamix_api.server import serve_in_thread
from moovitamix_assets.contract import ENTITIES, LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.monitoring.lake import (
    LakeResource,
    RetentionConfig,
    partition_path,
    prune_raw_partitions,
    raw_retention,
    raw_snapshot_parquet,
    verify_parquet_copy,
)
from moovitamix_assets_tests.pipeline import query, resources, scalar

DAYS = ("2026-11-01", "2026-11-02")
# The conftest world: 1155 users and 1062 tracks on 2026-11-01 (one history per user).
USERS_ON_FIRST_DAY, TRACKS_ON_FIRST_DAY = 1155, 1062

CHECKSUM = "count(*), sum(hash(page, position_in_page, record::VARCHAR))"

# For runs that only read DuckDB: nothing listens there, and nothing calls it.
NO_API = "http://127.0.0.1:9"


def lake_resources(base_url: str, database: Path, lake_root: Path) -> dict:
    return {**resources(base_url, database), "lake": LakeResource(root=str(lake_root))}


def export_day(base_url: str, database: Path, lake_root: Path, snapshot_date: str, assets) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(assets),
        partition_key=snapshot_date,
        resources=lake_resources(base_url, database, lake_root),
        instance=dg.DagsterInstance.ephemeral(),
    )


def run_retention(database: Path, lake_root: Path, today: str, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_retention],
        resources=lake_resources(NO_API, database, lake_root),
        run_config=dg.RunConfig({"lake__raw_retention": RetentionConfig(retention_days=30, today=today)}),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="module")
def two_days(tmp_path_factory, emulator_settings):
    """A warehouse with two days of raw snapshots and their Parquet copies, built once; tests copy it."""
    folder = tmp_path_factory.mktemp("two_days")
    database, lake_root = folder / "warehouse.duckdb", folder / "lake"
    with serve_in_thread(emulator_settings) as base_url:
        exports = []
        for snapshot_date in DAYS:
            requests.post(f"{base_url}/_admin/state", json={"as_of": snapshot_date}, timeout=5).raise_for_status()
            exports.append(export_day(base_url, database, lake_root, snapshot_date, [*raw_snapshot_assets, raw_snapshot_parquet]))
    return folder, exports


@pytest.fixture
def warehouse(two_days, tmp_path) -> tuple[Path, Path]:
    shutil.copytree(two_days[0], tmp_path / "copy")
    return tmp_path / "copy" / "warehouse.duckdb", tmp_path / "copy" / "lake"


def parquet_fingerprint(path: Path) -> tuple:
    with duckdb.connect() as connection:
        return connection.execute(f"SELECT {CHECKSUM} FROM read_parquet('{path}')").fetchone()


def test_each_day_is_exported_with_the_exact_rows_of_duckdb(warehouse, two_days):
    database, lake_root = warehouse
    for snapshot_date in DAYS:
        for entity in ENTITIES:
            in_duckdb = query(database, f"SELECT {CHECKSUM} FROM raw.{entity} WHERE snapshot_date = ?", [snapshot_date])[0]
            assert parquet_fingerprint(partition_path(str(lake_root), entity, snapshot_date)) == in_duckdb
            assert in_duckdb[0] > 0
    first_day = query(database, f"SELECT {CHECKSUM} FROM raw.users WHERE snapshot_date = ?", [DAYS[0]])[0]
    assert first_day[0] == USERS_ON_FIRST_DAY
    second_day = query(database, f"SELECT {CHECKSUM} FROM raw.users WHERE snapshot_date = ?", [DAYS[1]])[0]
    assert second_day[0] > USERS_ON_FIRST_DAY  # the world grew, so the two files really differ

    metadata = two_days[1][0].asset_materializations_for_node("lake__raw_snapshot_parquet")[0].metadata
    assert metadata["rows_users"].value == USERS_ON_FIRST_DAY
    assert metadata["rows_tracks"].value == TRACKS_ON_FIRST_DAY
    assert metadata["rows_listen_history"].value == USERS_ON_FIRST_DAY
    assert metadata["bytes"].value > 0


def test_the_lake_reads_as_one_hive_partitioned_table(warehouse):
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
    expected = [
        (dt.date.fromisoformat(snapshot_date), "DATE", sum(
            scalar(database, f"SELECT count(*) FROM raw.{entity} WHERE snapshot_date = ?", [snapshot_date]) for entity in ENTITIES
        ), 3)
        for snapshot_date in DAYS
    ]
    assert rows == expected
    assert record_type == ("VARCHAR", True)


def test_a_re_export_replaces_the_file_with_the_same_content(warehouse):
    database, lake_root = warehouse
    path = partition_path(str(lake_root), USERS, DAYS[0])
    before, inode = parquet_fingerprint(path), path.stat().st_ino

    export_day(NO_API, database, lake_root, DAYS[0], [raw_snapshot_parquet])

    assert path.stat().st_ino != inode  # a new file was renamed over the old one
    assert parquet_fingerprint(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.parquet"]  # no temporary file left


def test_retention_prunes_only_partitions_older_than_the_cutoff(warehouse):
    database, lake_root = warehouse
    second_day_rows = {entity: scalar(database, f"SELECT count(*) FROM raw.{entity} WHERE snapshot_date = ?", [DAYS[1]]) for entity in ENTITIES}
    first_day_rows = sum(scalar(database, f"SELECT count(*) FROM raw.{entity} WHERE snapshot_date = ?", [DAYS[0]]) for entity in ENTITIES)

    # 30 days back from 2026-12-02 is 2026-11-02: only the first day is older.
    result = run_retention(database, lake_root, today="2026-12-02")

    for entity in ENTITIES:
        assert query(database, f"SELECT snapshot_date::VARCHAR, count(*) FROM raw.{entity} GROUP BY 1") == [(DAYS[1], second_day_rows[entity])]
    metadata = result.asset_materializations_for_node("lake__raw_retention")[0].metadata
    assert metadata["partitions_pruned"].value == 3
    assert metadata["partitions_kept"].value == 0
    assert metadata["rows_deleted"].value == first_day_rows
    assert metadata["pruned"].value == [f"raw.{entity}/{DAYS[0]}" for entity in ENTITIES]


def test_retention_keeps_a_partition_whose_copy_is_missing_or_differs(warehouse):
    database, lake_root = warehouse
    partition_path(str(lake_root), USERS, DAYS[0]).unlink()
    tampered = partition_path(str(lake_root), TRACKS, DAYS[0])
    with duckdb.connect() as connection:
        connection.execute(f"COPY (SELECT * FROM read_parquet('{tampered}') LIMIT 1000) TO '{tampered}.short' (FORMAT parquet)")
    Path(f"{tampered}.short").replace(tampered)

    with duckdb.connect(str(database)) as connection:
        assert verify_parquet_copy(connection, LISTEN_HISTORY, DAYS[0], str(lake_root))[0]
        ok, details = verify_parquet_copy(connection, TRACKS, DAYS[0], str(lake_root))
        report = prune_raw_partitions(connection, str(lake_root), dt.date(2027, 1, 1))
    assert not ok
    assert details.startswith("Parquet copy differs: 1000 rows (checksum ")
    assert f"vs {TRACKS_ON_FIRST_DAY} rows" in details
    assert report.kept == {
        f"raw.users/{DAYS[0]}": f"no Parquet copy at {partition_path(str(lake_root), USERS, DAYS[0])}",
        f"raw.tracks/{DAYS[0]}": details,
    }
    assert report.differing == [f"raw.tracks/{DAYS[0]}"]
    assert sorted(report.pruned) == sorted(
        [f"raw.listen_history/{DAYS[0]}"] + [f"raw.{entity}/{DAYS[1]}" for entity in ENTITIES]
    )
    assert query(database, "SELECT snapshot_date::VARCHAR, count(*) FROM raw.users GROUP BY 1") == [(DAYS[0], USERS_ON_FIRST_DAY)]
    assert query(database, "SELECT snapshot_date::VARCHAR, count(*) FROM raw.tracks GROUP BY 1") == [(DAYS[0], TRACKS_ON_FIRST_DAY)]
    assert scalar(database, "SELECT count(*) FROM raw.listen_history") == 0


def test_the_retention_asset_fails_loudly_when_a_copy_differs(warehouse):
    database, lake_root = warehouse
    tampered = partition_path(str(lake_root), TRACKS, DAYS[1])
    with duckdb.connect() as connection:
        connection.execute(f"COPY (SELECT * FROM read_parquet('{tampered}') LIMIT 10) TO '{tampered}.short' (FORMAT parquet)")
    Path(f"{tampered}.short").replace(tampered)

    result = run_retention(database, lake_root, today="2027-01-01", raise_on_error=False)

    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert f"raw.tracks/{DAYS[1]}" in failure.step_failure_data.error.message
    assert failure.step_failure_data.user_failure_data.metadata["partitions_kept"].value == 1
    assert scalar(database, "SELECT count(*) FROM raw.tracks") == scalar(
        database, "SELECT count(*) FROM raw.tracks WHERE snapshot_date = ?", [DAYS[1]]
    ) > 0
    assert scalar(database, "SELECT count(*) FROM raw.users") == 0
