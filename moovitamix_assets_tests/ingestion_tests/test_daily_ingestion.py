"""A day's ingestion against the emulator: exact counts, checks, re-runs, two days, transport faults."""

import datetime as dt

import dagster as dg
import pytest
import requests

from moovitamix_api.data import expected_counts
from moovitamix_assets.ingestion.schedules import daily_ingestion_schedule
from moovitamix_assets_tests.pipeline import (
    check_results,
    materialize_day,
    materialized,
    query,
    scalar,
    table_fingerprint,
)

DAY = "2026-11-01"
# The conftest world on 2026-11-01 (seed 42, realistic, started 2026-10-01).
USERS_ON_DAY, TRACKS_ON_DAY = 1155, 1062


@pytest.fixture
def database(tmp_path):
    return tmp_path / "warehouse.duckdb"


def test_one_day_lands_every_record_and_passes_every_check(emulator_url, emulator_settings, database):
    expected = expected_counts(emulator_settings)
    result = materialize_day(emulator_url, database, DAY)

    assert scalar(database, "SELECT count(*) FROM raw.users") == USERS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM raw.tracks") == TRACKS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM raw.listen_history") == USERS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM core.users") == USERS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM core.tracks") == TRACKS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM core.listen_history") == expected["listen_history"]["listens"]
    assert scalar(database, "SELECT count(DISTINCT snapshot_date) FROM raw.users") == 1
    assert scalar(database, "SELECT count(*) FROM quality.rejected_records") == 0

    evaluations = check_results(result)
    # 9 per staged table (3 gates, 6 reports), 2 x 2 on orphans, and 8 on the history.
    assert len(evaluations) == 3 * 9 + 4 + 8
    failed = [key for key, evaluation in evaluations.items() if not evaluation.passed]
    assert failed == []

    raw_users = materialized(result)["raw/users"]
    assert raw_users["records"] == USERS_ON_DAY
    assert raw_users["pages"] == 12
    assert raw_users["requests"] == 13  # 12 pages, then page 1 again to see that nothing moved
    assert raw_users["retries"] == 0
    assert raw_users["pull_attempts"] == 1 and raw_users["records_moved"] == 0
    assert query(database, "SELECT entity, records, pull_attempts FROM raw.snapshot_manifest ORDER BY entity") == [
        ("listen_history", USERS_ON_DAY, 1), ("tracks", TRACKS_ON_DAY, 1), ("users", USERS_ON_DAY, 1)
    ]


def test_listen_history_is_exploded_in_order(emulator_url, database):
    materialize_day(emulator_url, database, DAY)
    user_id, items = query(
        database,
        "SELECT (record->>'user_id')::BIGINT, (record->'items')::BIGINT[] FROM raw.listen_history "
        "ORDER BY page, position_in_page LIMIT 1",
    )[0]
    exploded = query(
        database, "SELECT track_id FROM core.listen_history WHERE user_id = ? ORDER BY position", [user_id]
    )
    assert [track_id for (track_id,) in exploded] == items
    assert scalar(
        database, "SELECT count(*) FROM (SELECT user_id, position FROM core.listen_history GROUP BY ALL HAVING count(*) > 1)"
    ) == 0
    assert scalar(database, "SELECT min(duration_seconds) > 0 FROM core.tracks")


def test_rerunning_a_day_leaves_the_same_tables(emulator_url, database):
    tables = ["raw.users", "raw.tracks", "raw.listen_history", "core.users", "core.tracks", "core.listen_history"]
    materialize_day(emulator_url, database, DAY)
    first = [table_fingerprint(database, table) for table in tables]
    materialize_day(emulator_url, database, DAY)
    assert [table_fingerprint(database, table) for table in tables] == first


def test_two_days_give_two_partitions_and_core_follows_the_later(emulator, emulator_settings, database):
    base_url = emulator()
    materialize_day(base_url, database, "2026-11-01")
    requests.post(f"{base_url}/_admin/state", json={"as_of": "2026-11-02"}, timeout=10).raise_for_status()
    materialize_day(base_url, database, "2026-11-02")

    later = expected_counts(emulator_settings, as_of=dt.date(2026, 11, 2))
    per_day = dict(query(database, "SELECT snapshot_date::VARCHAR, count(*) FROM raw.users GROUP BY 1"))
    assert per_day == {"2026-11-01": USERS_ON_DAY, "2026-11-02": later["users"]["served"]}
    assert later["users"]["served"] > USERS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM core.users") == later["users"]["served"]
    assert scalar(database, "SELECT count(*) FROM core.listen_history") == later["listen_history"]["listens"]
    assert query(database, "SELECT DISTINCT snapshot_date::VARCHAR FROM core.users") == [("2026-11-02",)]


def test_transport_faults_still_land_every_record_once(emulator, emulator_settings, database):
    base_url = emulator(error_rate=0.2, rate_limit_rate=0.1, retry_after=0, drop_rate=0.03, bad_json_rate=0.03)
    result = materialize_day(base_url, database, DAY, backoff_factor=0.01)

    expected = expected_counts(emulator_settings)
    assert scalar(database, "SELECT count(*) FROM raw.users") == USERS_ON_DAY
    assert scalar(database, "SELECT count(DISTINCT record->>'id') FROM raw.users") == USERS_ON_DAY
    assert scalar(database, "SELECT count(*) FROM core.listen_history") == expected["listen_history"]["listens"]
    retries = sum(materialized(result)[f"raw/{entity}"]["retries"] for entity in ("users", "tracks", "listen_history"))
    assert retries > 0


def test_a_failed_pull_leaves_no_partial_snapshot(emulator, database):
    base_url = emulator()
    materialize_day(base_url, database, DAY)
    before = table_fingerprint(database, "raw.users")
    requests.post(f"{base_url}/_admin/state", json={"error_rate": 1.0}, timeout=10).raise_for_status()
    result = materialize_day(base_url, database, DAY, raise_on_error=False, max_retries=1, backoff_factor=0.01)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.event_specific_data.error
    message = error.cause.message if error.message.startswith("Exceeded max_retries") else error.message
    assert failure.step_key == "raw_snapshots"
    assert "3 of 3 endpoint(s) failed (nothing was loaded" in message
    assert "GET /users page 1: HTTP 50" in message and "after 1 retries" in message
    # The step was retried with backoff before it gave up.
    assert len([e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]) == 2
    assert table_fingerprint(database, "raw.users") == before


def test_schedule_tick_targets_its_own_day():
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)
    )
    run_request = daily_ingestion_schedule(context)
    assert run_request.partition_key == "2026-11-23"
    assert run_request.run_key == "2026-11-23"
    assert daily_ingestion_schedule.cron_schedule == "0 2 * * *"
    assert daily_ingestion_schedule.execution_timezone == "UTC"


def test_a_past_partition_is_refused_unless_the_api_is_pinned_to_a_date():
    from moovitamix_assets.ingestion.assets import SnapshotPolicy, check_partition_date

    today = dt.date(2026, 11, 23)
    check_partition_date("2026-11-23", SnapshotPolicy(), today)
    with pytest.raises(dg.Failure, match="partition 2026-11-22 is 1 days from today"):
        # yesterday's run retried after midnight would store today's data under yesterday
        check_partition_date("2026-11-22", SnapshotPolicy(), today)
    with pytest.raises(dg.Failure, match="partition 2026-03-01 is 267 days from today"):
        check_partition_date("2026-03-01", SnapshotPolicy(), today)
    check_partition_date("2026-03-01", SnapshotPolicy(allow_any_date=True), today)
