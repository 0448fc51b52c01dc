"""UTC everywhere: what the pipeline writes is UTC whatever the machine's time zone, and
upstream timestamps with an offset are converted, not truncated (no offset means UTC)."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moovitamix_assets.core.checks import QualityPolicy
from moovitamix_assets_tests.pipeline import materialize_day, query
from moovitamix_assets_tests.reliability_tests.upstream import PlantedUpstream, history, serve_planted, track, user

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-01"

# The whole pipeline for one day, in a process whose local zone is New York: raw, core and
# its checks, the Parquet copy, a model trained and promoted, recommendations, the health report.
PIPELINE_IN_NEW_YORK = """
import json, sys, time
from pathlib import Path
import dagster as dg
from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations
from moovitamix_assets.ml.checks import ml_checks
from moovitamix_assets.monitoring.health import pipeline_health
from moovitamix_assets.monitoring.lake import raw_snapshot_parquet
from moovitamix_assets_tests.pipeline import INGESTION, materialize_day, resources

base_url, database, day = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
started = time.time()
instance = dg.DagsterInstance.ephemeral()
materialize_day(base_url, database, day, assets=[*INGESTION, raw_snapshot_parquet], instance=instance)
dg.materialize(
    [training_set, recommender_model, user_recommendations, *ml_checks, pipeline_health],
    resources=resources(base_url, database), instance=instance,
)
print(json.dumps({"started": started, "ended": time.time(), "utc_offset_seconds": -time.timezone, "zone": time.tzname[0]}))
"""

# Every timestamp column the day above writes: (table, column).
WRITTEN_TIMESTAMPS = [
    ("raw.users", "ingested_at"),
    ("raw.tracks", "ingested_at"),
    ("raw.listen_history", "ingested_at"),
    ("raw.snapshot_manifest", "loaded_at"),
    ("quality.rejected_records", "rejected_at"),
    ("monitoring.asset_metrics", "recorded_at"),
    ("monitoring.check_results", "recorded_at"),
    ("monitoring.health_reports", "generated_at"),
    ("ml.model_registry", "trained_at"),
    ("ml.champion_history", "promoted_at"),
    ("ml.user_recommendations", "generated_at"),
]


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


@pytest.mark.slow
def test_every_timestamp_written_in_new_york_is_utc(emulator, tmp_path):
    # A few duplicates, so that records are rejected (rejected_at) and the day still publishes.
    base_url, database = emulator(duplicate_rate=0.005), tmp_path / "warehouse.duckdb"
    environment = {
        **os.environ,
        "TZ": "America/New_York",
        "PYTHONPATH": str(ROOT),
        "MOOVITAMIX_REPORTS_PATH": str(tmp_path / "reports"),
    }
    finished = subprocess.run(
        [sys.executable, "-c", PIPELINE_IN_NEW_YORK, base_url, str(database), DAY],
        env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-5000:]
    run = json.loads(finished.stdout.strip().splitlines()[-1])
    # The process really ran five hours behind UTC (EST; New York is never on UTC).
    assert run["zone"] == "EST" and run["utc_offset_seconds"] == -5 * 3600
    earliest, latest = utc(run["started"]) - dt.timedelta(seconds=1), utc(run["ended"]) + dt.timedelta(seconds=1)

    for table, column in WRITTEN_TIMESTAMPS:
        rows, oldest, newest = query(database, f"SELECT count(*), min({column}), max({column}) FROM {table}")[0]
        assert rows > 0, table
        assert earliest <= oldest <= newest <= latest, (table, column, oldest, newest, earliest, latest)
    # The model's version names its UTC training time.
    version, trained_at = query(database, "SELECT version, trained_at FROM ml.model_registry")[0]
    assert dt.datetime.strptime(version.split("-")[0], "%Y%m%dT%H%M%S%f") == trained_at
    # The health report's chart is named after the UTC day.
    assert [path.name for path in (tmp_path / "reports").iterdir()] in (
        [f"pipeline_health_{moment.date()}.png"] for moment in (earliest, latest)
    )


TOLERANT = QualityPolicy(max_duplicate_rate=1.0, max_orphan_rate=1.0, max_row_count_change=1e9)

# Served in this order, three to a page. Users 5 and 6 are served twice: the copy with the
# latest updated_at in UTC must win, and it is the first one served each time, so neither
# reading the wall clock text nor taking the last one served would pick it.
PLANTED_USERS = [
    user(1, updated_at="2026-11-01T10:00:00+02:00"),
    user(2, updated_at="2026-11-01T10:00:00Z"),
    user(3, updated_at="2026-11-01T10:00:00"),
    user(4, created_at="2026-10-01T08:00:00-05:00", updated_at="2026-11-01T03:00:00.250-05:00"),
    user(5, first_name="Zulu", updated_at="2026-11-01T09:00:00Z"),
    user(5, first_name="Plus two", updated_at="2026-11-01T10:00:00+02:00"),
    user(6, first_name="Minus five", updated_at="2026-11-01T06:00:00-05:00"),
    user(6, first_name="Zulu", updated_at="2026-11-01T10:30:00Z"),
]


@pytest.fixture(scope="module")
def planted_zones(tmp_path_factory):
    database = tmp_path_factory.mktemp("zones") / "warehouse.duckdb"
    records = {
        "users": PLANTED_USERS,
        "tracks": [track(1, updated_at="2026-11-01T10:00:00+02:00"), track(2)],
        "listen_history": [history(1, [1, 2], updated_at="2026-11-01T01:00:00+02:00"), history(2, [1])],
    }
    with serve_planted(PlantedUpstream(records)) as base_url:
        materialize_day(base_url, database, DAY, quality_policy=TOLERANT, page_size=3)
    return database


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_offsets_are_converted_to_utc_and_no_offset_means_utc(planted_zones):
    assert query(planted_zones, "SELECT user_id, first_name, created_at, updated_at FROM core.users ORDER BY user_id") == [
        (1, "Ada", at("2026-10-01 08:00:00"), at("2026-11-01 08:00:00")),
        (2, "Ada", at("2026-10-01 08:00:00"), at("2026-11-01 10:00:00")),
        (3, "Ada", at("2026-10-01 08:00:00"), at("2026-11-01 10:00:00")),
        (4, "Ada", at("2026-10-01 13:00:00"), at("2026-11-01 08:00:00.250")),
        (5, "Zulu", at("2026-10-01 08:00:00"), at("2026-11-01 09:00:00")),
        (6, "Minus five", at("2026-10-01 08:00:00"), at("2026-11-01 11:00:00")),
    ]
    assert query(planted_zones, "SELECT track_id, updated_at FROM core.tracks ORDER BY 1") == [
        (1, at("2026-11-01 08:00:00")),
        (2, at("2026-10-02 09:30:00")),
    ]
    # Two hours east of UTC at 01:00 is the evening before in UTC.
    assert query(planted_zones, "SELECT DISTINCT user_id, history_updated_at FROM core.listen_history ORDER BY 1") == [
        (1, at("2026-10-31 23:00:00")),
        (2, at("2026-10-02 09:30:00")),
    ]


def test_the_latest_updated_at_across_zones_wins_the_dedupe(planted_zones):
    rejected = query(
        planted_zones,
        "SELECT served_position, record->>'first_name', record->>'updated_at', reason "
        "FROM quality.rejected_records WHERE entity = 'users' ORDER BY served_position",
    )
    assert rejected == [
        (6, "Plus two", "2026-11-01T10:00:00+02:00", "duplicate_id"),
        (8, "Zulu", "2026-11-01T10:30:00Z", "duplicate_id"),
    ]
    # Raw keeps every record as received, offsets included.
    assert query(planted_zones, "SELECT record->>'updated_at' FROM raw.users ORDER BY page, position_in_page") == [
        (record["updated_at"],) for record in PLANTED_USERS
    ]
