"""The history of users, tracks and listens, built day by day from staged snapshots.

Most tests stage the emulator's days by hand into core_staging (typed in Python from
moovitamix_api.data.Dataset, which tells exactly what a server serves on a day), so that
each can change a record, drop it or rewrite a list, and compare the history with one
computed here, row by row.
"""

import datetime as dt
import re
from pathlib import Path
from typing import Callable

import dagster as dg
import duckdb
import pyarrow as pa
import pytest
import requests

from moovitamix_api.data import Dataset
from moovitamix_assets.core.backfill import rebuild_history
from moovitamix_assets.core.build import publish_core_tables, stage_core_tables, staged_snapshot_date
from moovitamix_assets.core.history import (
    AUDITS,
    HistoryAuditError,
    HistoryOrderError,
    apply_and_audit_history,
    apply_history,
    audit_history,
    failed_audits,
)
from moovitamix_assets.core.history_checks import HISTORY_ASSET_KEYS, history_checks
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.monitoring.lake import LakeResource, export_raw_partition
from moovitamix_assets.resources.warehouse import WarehouseResource, in_utc, transaction
from moovitamix_assets_tests.pipeline import check_results, materialize_day, materialized

DAYS = [dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 5)]

USER_FIELDS = ("first_name", "last_name", "email", "gender", "favorite_genre", "created_at", "updated_at")
TRACK_FIELDS = (
    "name", "artist", "songwriter", "duration", "duration_seconds", "genre", "album", "created_at", "updated_at",
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# A day served by the emulator, typed as core types it, staged by hand.
# ---------------------------------------------------------------------------------------


def served_day(settings, day: dt.date) -> dict:
    """{entity: {id: typed record}} of what the emulator serves on `day`."""
    dataset = Dataset(settings, as_of=day)
    stamp = dt.datetime.fromisoformat
    users = {
        record["id"]: {
            "first_name": record["first_name"], "last_name": record["last_name"], "email": record["email"],
            "gender": record["gender"], "favorite_genre": record["favorite_genres"],
            "created_at": stamp(record["created_at"]), "updated_at": stamp(record["updated_at"]),
        }
        for record in dataset.iter_records("users")
    }  # fmt: skip
    tracks = {}
    for record in dataset.iter_records("tracks"):
        minutes, seconds = record["duration"].split(":")
        tracks[record["id"]] = {
            "name": record["name"], "artist": record["artist"], "songwriter": record["songwriters"],
            "duration": record["duration"], "duration_seconds": int(minutes) * 60 + int(seconds),
            "genre": record["genres"], "album": record["album"],
            "created_at": stamp(record["created_at"]), "updated_at": stamp(record["updated_at"]),
        }  # fmt: skip
    histories = {
        record["user_id"]: {
            "items": list(record["items"]),
            "created_at": stamp(record["created_at"]),
            "updated_at": stamp(record["updated_at"]),
        }
        for record in dataset.iter_records("listen_history")
    }
    return {"users": users, "tracks": tracks, "listen_history": histories}


def stage(connection: duckdb.DuckDBPyConnection, day: dt.date, served: dict) -> None:
    """core_staging.* for the day, in exactly core's columns and types."""
    users, tracks, histories = (sorted(served[entity].items()) for entity in ("users", "tracks", "listen_history"))
    columns = {
        "users": pa.table({"user_id": [k for k, _ in users], **{f: [r[f] for _, r in users] for f in USER_FIELDS}}),
        "tracks": pa.table({"track_id": [k for k, _ in tracks], **{f: [r[f] for _, r in tracks] for f in TRACK_FIELDS}}),
        "histories": pa.table({
            "user_id": [k for k, _ in histories],
            "items": pa.array([h["items"] for _, h in histories], pa.list_(pa.int64())),
            "created_at": [h["created_at"] for _, h in histories],
            "updated_at": [h["updated_at"] for _, h in histories],
        }),
    }  # fmt: skip
    connection.execute("CREATE SCHEMA IF NOT EXISTS core_staging")
    connection.execute("SET VARIABLE staged_day = ?", [day])
    for name, table in columns.items():
        connection.register(f"served_{name}", table)
    connection.execute(
        """
        CREATE OR REPLACE TABLE core_staging.users AS
        SELECT user_id::BIGINT AS user_id, first_name, last_name, email, gender, favorite_genre,
               created_at::TIMESTAMP AS created_at, updated_at::TIMESTAMP AS updated_at,
               getvariable('staged_day')::DATE AS snapshot_date
        FROM served_users;
        CREATE OR REPLACE TABLE core_staging.tracks AS
        SELECT track_id::BIGINT AS track_id, name, artist, songwriter, duration,
               duration_seconds::INTEGER AS duration_seconds, genre, album,
               created_at::TIMESTAMP AS created_at, updated_at::TIMESTAMP AS updated_at,
               getvariable('staged_day')::DATE AS snapshot_date
        FROM served_tracks;
        CREATE OR REPLACE TABLE core_staging.listen_history AS
        SELECT user_id::BIGINT AS user_id, listen.position::INTEGER AS position, listen.track_id::BIGINT AS track_id,
               created_at::TIMESTAMP AS history_created_at, updated_at::TIMESTAMP AS history_updated_at,
               getvariable('staged_day')::DATE AS snapshot_date
        FROM served_histories, unnest(items) WITH ORDINALITY AS listen(track_id, position);
        """
    )
    for name in columns:
        connection.unregister(f"served_{name}")


def publish(connection: duckdb.DuckDBPyConnection, day: dt.date, served: dict, run_id: str = "run"):
    """What the publish step does around apply_history: staging, one transaction, core replaced."""
    stage(connection, day, served)
    with transaction(connection):
        stats = apply_history(connection, day, run_id)
        connection.execute("CREATE SCHEMA IF NOT EXISTS core")
        for entity in ("users", "tracks", "listen_history"):
            connection.execute(f"CREATE OR REPLACE TABLE core.{entity} AS SELECT * FROM core_staging.{entity}")
    return stats


@pytest.fixture
def warehouse(tmp_path):
    with in_utc(duckdb.connect(str(tmp_path / "warehouse.duckdb"))) as connection:
        yield connection


@pytest.fixture(scope="module")
def days(emulator_settings) -> dict:
    return {day: served_day(emulator_settings, day) for day in DAYS}


# ---------------------------------------------------------------------------------------
# The history expected, computed here from the days served.
# ---------------------------------------------------------------------------------------


def expected_versions(days_served: list[tuple[dt.date, dict]], fields: tuple) -> set[tuple]:
    """Type-2 rows (id, *fields, valid_from, valid_to) of a sequence of {id: record} days."""
    rows, current = [], {}  # current: id -> index in rows
    for day, records in days_served:
        for key, index in list(current.items()):
            if records.get(key) != rows[index][1]:
                rows[index][3] = day
                del current[key]
        for key, record in records.items():
            if key not in current:
                current[key] = len(rows)
                rows.append([key, record, day, None])
    return {(key, *(record[f] for f in fields), start, end) for key, record, start, end in rows}


def expected_events(days_served: list[tuple[dt.date, dict]]) -> set[tuple]:
    """(user_id, position, track_id, first_seen_date) of lists that only grow."""
    events, length = set(), {}
    for day, histories in days_served:
        for user_id, history in histories.items():
            items = history["items"]
            for position in range(length.get(user_id, 0) + 1, len(items) + 1):
                events.add((user_id, position, items[position - 1], day))
            length[user_id] = max(length.get(user_id, 0), len(items))
    return events


def history_rows(connection, entity: str, key: str, fields: tuple) -> set[tuple]:
    return set(
        connection.execute(f"SELECT {key}, {', '.join(fields)}, valid_from, valid_to FROM core.{entity}_history").fetchall()
    )


def all_tables(connection) -> dict[str, list]:
    """Every history table's rows, sorted; the run and the time that wrote them left out."""
    return {
        table: connection.execute(f"SELECT * {exclude} FROM {table} ORDER BY ALL").fetchall()
        for table, exclude in [
            ("core.users_history", ""),
            ("core.tracks_history", ""),
            ("core.listen_events", ""),
            ("quality.history_rewrites", "EXCLUDE (run_id, recorded_at)"),
            ("core.history_days", "EXCLUDE (run_id, applied_at)"),
        ]
    }


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_days_of_the_emulator_build_exactly_the_expected_versions_and_events(warehouse, days):
    statistics = [publish(warehouse, day, days[day]) for day in DAYS]

    served = [(day, days[day]) for day in DAYS]
    users = expected_versions([(day, s["users"]) for day, s in served], USER_FIELDS)
    tracks = expected_versions([(day, s["tracks"]) for day, s in served], TRACK_FIELDS)
    events = expected_events([(day, s["listen_history"]) for day, s in served])
    assert history_rows(warehouse, "users", "user_id", USER_FIELDS) == users
    assert history_rows(warehouse, "tracks", "track_id", TRACK_FIELDS) == tracks
    assert set(warehouse.execute("SELECT * FROM core.listen_events").fetchall()) == events

    # The first day: one version per record, every listen; 1155 users, 1062 tracks on 2026-11-01.
    first = statistics[0]
    assert (first.users_versions_added, first.tracks_versions_added) == (1155, 1062)
    assert first.listen_events_added == 36983
    # Each later day: a second version exactly for the records whose fields changed, a first
    # one for each new record; listen events exactly the growth of the lists.
    for previous_day, day, stats in zip(DAYS, DAYS[1:], statistics[1:]):
        before, after = days[previous_day], days[day]
        for entity in ("users", "tracks"):
            changed = {key for key in before[entity] if after[entity][key] != before[entity][key]}
            new = set(after[entity]) - set(before[entity])
            assert changed and new
            assert getattr(stats, f"{entity}_versions_closed") == len(changed)
            assert getattr(stats, f"{entity}_versions_added") == len(changed) + len(new)
            key = "user_id" if entity == "users" else "track_id"
            opened = {k for (k,) in warehouse.execute(
                f"SELECT {key} FROM core.{entity}_history WHERE valid_from = ?", [day]).fetchall()}  # fmt: skip
            assert opened == changed | new
        growth = sum(
            len(history["items"]) - len(before["listen_history"].get(user_id, {"items": []})["items"])
            for user_id, history in after["listen_history"].items()
        )
        assert stats.listen_events_added == growth > 0
        assert stats.history_rewrites == 0
    # The numbers of this world (seed 42), so that a change in the emulator shows here too.
    assert [(s.users_versions_closed, s.tracks_versions_closed, s.listen_events_added) for s in statistics[1:]] == [
        (24, 22, 577), (23, 32, 574), (46, 32, 1243),
    ]
    # No duplicate: (user_id, position) once, one current version per id; and every audit passes.
    assert warehouse.execute(
        "SELECT count(*), count(DISTINCT (user_id, position)) FROM core.listen_events").fetchall() == [(len(events),) * 2]
    assert failed_audits(audit_history(warehouse, DAYS[-1])) == []
    assert warehouse.execute("SELECT snapshot_date FROM core.history_days ORDER BY 1").fetchall() == [(d,) for d in DAYS]


def test_listens_per_first_seen_date_are_the_growth_of_each_day(warehouse, days):
    for day in DAYS:
        publish(warehouse, day, days[day])
    per_day = dict(warehouse.execute(
        "SELECT first_seen_date, count(*) FROM core.listen_events GROUP BY 1").fetchall())  # fmt: skip
    listens = {day: sum(len(h["items"]) for h in days[day]["listen_history"].values()) for day in DAYS}
    assert per_day == {
        DAYS[0]: listens[DAYS[0]],
        **{day: listens[day] - listens[previous] for previous, day in zip(DAYS, DAYS[1:])},
    }
    # Listens first seen in a date range: the example of docs/architecture.md.
    (new_listens,) = warehouse.execute(
        "SELECT count(*) FROM core.listen_events WHERE first_seen_date BETWEEN ? AND ?", [DAYS[1], DAYS[2]]
    ).fetchall()[0]
    assert new_listens == listens[DAYS[2]] - listens[DAYS[0]]


def test_as_of_macros_give_the_records_each_day_served(warehouse, days):
    for day in DAYS:
        publish(warehouse, day, days[day])
    for day in DAYS:
        users = warehouse.execute(
            f"SELECT user_id, {', '.join(USER_FIELDS)} FROM core.users_as_of(?)", [day]).fetchall()  # fmt: skip
        assert sorted(users) == sorted((k, *(r[f] for f in USER_FIELDS)) for k, r in days[day]["users"].items())
        tracks = warehouse.execute(f"SELECT track_id, {', '.join(TRACK_FIELDS)} FROM core.tracks_as_of(?)", [day]).fetchall()
        assert sorted(tracks) == sorted((k, *(r[f] for f in TRACK_FIELDS)) for k, r in days[day]["tracks"].items())
    # 2026-11-04 had no snapshot: it reads 2026-11-03's; before the first snapshot, nothing.
    assert warehouse.execute("SELECT count(*) FROM core.users_as_of(DATE '2026-11-04')").fetchall() == [(1165,)]
    assert warehouse.execute("SELECT count(*) FROM core.users_as_of(DATE '2026-10-31')").fetchall() == [(0,)]


def test_the_queries_of_the_architecture_doc_run_and_answer(warehouse, days):
    for day in DAYS:
        publish(warehouse, day, days[day])
    section = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text().split("## History", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]
    assert len(statements) == 3
    jazz, album, new_listens = (warehouse.execute(statement).fetchall() for statement in statements)
    latest = days[DAYS[-1]]
    assert len(jazz) == 59
    assert sorted(user_id for user_id, _, _ in jazz) == sorted(
        k for k, user in latest["users"].items() if user["favorite_genre"] == "Jazz"
    )
    versions = expected_versions([(day, days[day]["tracks"]) for day in DAYS], TRACK_FIELDS)
    assert album == sorted((v[7], v[-2], v[-1]) for v in versions if v[0] == 42)
    listens = {day: sum(len(h["items"]) for h in days[day]["listen_history"].values()) for day in DAYS}
    assert len(new_listens) == listens[DAYS[-1]] - listens[DAYS[0]]


def test_a_record_that_vanishes_gets_its_end_and_comes_back_as_a_new_version(warehouse, days):
    gone_user, gone_track = 7, 11
    for index, day in enumerate(DAYS[:3]):
        served = {entity: dict(records) for entity, records in days[day].items()}
        if index == 1:
            del served["users"][gone_user], served["tracks"][gone_track]
            del served["listen_history"][gone_user]
        stats = publish(warehouse, day, served)
    versions = warehouse.execute(
        "SELECT valid_from, valid_to, email FROM core.users_history WHERE user_id = ? ORDER BY valid_from", [gone_user]
    ).fetchall()
    email = days[DAYS[2]]["users"][gone_user]["email"]
    assert versions == [(DAYS[0], DAYS[1], days[DAYS[0]]["users"][gone_user]["email"]), (DAYS[2], None, email)]
    assert warehouse.execute(
        "SELECT valid_from, valid_to FROM core.tracks_history WHERE track_id = ? ORDER BY valid_from", [gone_track]
    ).fetchall() == [(DAYS[0], DAYS[1]), (DAYS[2], None)]
    assert warehouse.execute("SELECT count(*) FROM core.users_as_of(?) WHERE user_id = ?", [DAYS[1], gone_user]).fetchall() == [(0,)]
    # Its listens were kept while it was away; back, its list grew over two days, which is new.
    grown = len(days[DAYS[2]]["listen_history"][gone_user]["items"]) - len(days[DAYS[0]]["listen_history"][gone_user]["items"])
    assert warehouse.execute(
        "SELECT count(*) FROM core.listen_events WHERE user_id = ? AND first_seen_date = ?", [gone_user, DAYS[2]]
    ).fetchall() == [(grown,)]
    assert stats.history_rewrites == 0
    assert failed_audits(audit_history(warehouse, DAYS[2])) == []


def rewritten(days: dict, day: dt.date, edits: dict[int, Callable[[list], list]]) -> dict:
    served = {entity: dict(records) for entity, records in days[day].items()}
    histories = served["listen_history"] = dict(served["listen_history"])
    for user_id, edit in edits.items():
        histories[user_id] = {**histories[user_id], "items": edit(list(histories[user_id]["items"]))}
    return served


def test_a_rewritten_history_is_recorded_not_merged(warehouse, days):
    changed_user, shortened_user = 3, 4
    original = {u: days[DAYS[0]]["listen_history"][u]["items"] for u in (changed_user, shortened_user)}
    publish(warehouse, DAYS[0], days[DAYS[0]])

    def swap_second(items: list) -> list:
        items[1] = 999_999
        return items

    second = rewritten(days, DAYS[1], {changed_user: swap_second, shortened_user: lambda items: items[:3]})
    stats = publish(warehouse, DAYS[1], second, run_id="second")
    assert stats.history_rewrites == 2
    rewrites = warehouse.execute(
        "SELECT user_id, snapshot_date, kind, first_difference, previous_track_ids, new_track_ids, run_id "
        "FROM quality.history_rewrites ORDER BY user_id"
    ).fetchall()
    assert rewrites == [
        (changed_user, DAYS[1], "changed", 2, original[changed_user], second["listen_history"][changed_user]["items"], "second"),
        (shortened_user, DAYS[1], "shortened", 4, original[shortened_user], original[shortened_user][:3], "second"),
    ]
    # Nothing merged: both users keep exactly their first day's events, and get none that day.
    for user_id in (changed_user, shortened_user):
        assert warehouse.execute(
            "SELECT position, track_id, first_seen_date FROM core.listen_events WHERE user_id = ? ORDER BY position",
            [user_id],
        ).fetchall() == [(p, t, DAYS[0]) for p, t in enumerate(original[user_id], start=1)]
    # Every other list grew as served: the day's events are the others' growth.
    others = sum(
        len(h["items"]) - len(days[DAYS[0]]["listen_history"].get(u, {"items": []})["items"])
        for u, h in days[DAYS[1]]["listen_history"].items()
        if u not in original
    )
    assert stats.listen_events_added == others
    findings = {f.check_name: f for f in audit_history(warehouse, DAYS[1])}
    assert findings["new_listen_events_match_growth"].passed
    assert findings["new_listen_events_match_growth"].details["rewrites"] == 2

    # The next day the rewritten list grows at its end: that is growth again, not a new rewrite.
    third_items = second["listen_history"][changed_user]["items"] + [5, 6]
    third = rewritten(days, DAYS[2], {changed_user: lambda _: third_items, shortened_user: lambda items: items[:3]})
    stats = publish(warehouse, DAYS[2], third)
    assert stats.history_rewrites == 0
    new_positions = len(original[changed_user]) + 1
    assert warehouse.execute(
        "SELECT position, track_id FROM core.listen_events WHERE user_id = ? AND first_seen_date = ? ORDER BY position",
        [changed_user, DAYS[2]],
    ).fetchall() == [(p, t) for p, t in enumerate(third_items, start=1) if p >= new_positions]
    # The shortened list grows over positions whose events were kept, with other tracks: a change.
    fourth = rewritten(days, DAYS[3], {changed_user: lambda _: third_items, shortened_user: lambda items: items[:3] + [42]})
    stats = publish(warehouse, DAYS[3], fourth)
    assert stats.history_rewrites == 1
    assert warehouse.execute(
        "SELECT kind, first_difference, previous_track_ids, new_track_ids FROM quality.history_rewrites "
        "WHERE snapshot_date = ?", [DAYS[3]]
    ).fetchall() == [("changed", 4, original[shortened_user][:3], original[shortened_user][:3] + [42])]
    assert failed_audits(audit_history(warehouse, DAYS[3])) == []


def test_applying_the_newest_day_again_gives_the_same_tables(warehouse, days):
    for day in DAYS[:2]:
        publish(warehouse, day, days[day])
    once = all_tables(warehouse)
    first = warehouse.execute("SELECT * EXCLUDE (run_id, applied_at) FROM core.history_days").fetchall()
    again = publish(warehouse, DAYS[1], days[DAYS[1]], run_id="re-run")
    assert again.reapplied
    assert all_tables(warehouse) == once
    assert warehouse.execute("SELECT * EXCLUDE (run_id, applied_at) FROM core.history_days").fetchall() == first
    assert warehouse.execute("SELECT run_id FROM core.history_days WHERE snapshot_date = ?", [DAYS[1]]).fetchall() == [("re-run",)]
    # A re-run with a corrected pull of the same day replaces that day's changes whole.
    corrected = rewritten(days, DAYS[1], {})
    corrected["users"] = {**corrected["users"], 1: {**corrected["users"][1], "email": "fixed@example.com"}}
    publish(warehouse, DAYS[1], corrected)
    assert warehouse.execute(
        "SELECT email, valid_from, valid_to FROM core.users_history WHERE user_id = 1 ORDER BY valid_from"
    ).fetchall() == [(days[DAYS[0]]["users"][1]["email"], DAYS[0], DAYS[1]), ("fixed@example.com", DAYS[1], None)]


def test_a_day_older_than_the_newest_is_refused_and_changes_nothing(warehouse, days):
    publish(warehouse, DAYS[0], days[DAYS[0]])
    publish(warehouse, DAYS[2], days[DAYS[2]])
    before = all_tables(warehouse)
    with pytest.raises(HistoryOrderError, match=r"cannot apply 2026-11-02 .* already holds 2026-11-03.*rebuild_history"):
        publish(warehouse, DAYS[1], days[DAYS[1]])
    assert all_tables(warehouse) == before


def test_a_failed_audit_in_the_publish_rolls_the_day_back(warehouse, days):
    publish(warehouse, DAYS[0], days[DAYS[0]])
    # A duplicate event planted before the day: the audits inside the publish find it.
    warehouse.execute("INSERT INTO core.listen_events SELECT * FROM core.listen_events WHERE user_id = 8 AND position = 2")
    before = all_tables(warehouse)
    stage(warehouse, DAYS[1], days[DAYS[1]])
    with pytest.raises(HistoryAuditError, match=r"with 2026-11-02 applied fails its audits: listen_events.listen_events_unique: 1 found, e.g. \[8\]"):
        with transaction(warehouse):
            apply_and_audit_history(warehouse, DAYS[1], "run")
    assert all_tables(warehouse) == before
    # Repaired, the same day goes through.
    warehouse.execute("CREATE OR REPLACE TEMP TABLE kept AS SELECT DISTINCT * FROM core.listen_events")
    warehouse.execute("DELETE FROM core.listen_events")
    warehouse.execute("INSERT INTO core.listen_events SELECT * FROM kept")
    with transaction(warehouse):
        assert apply_and_audit_history(warehouse, DAYS[1], "run").listen_events_added == 577


def test_staging_of_another_day_is_refused(warehouse, days):
    stage(warehouse, DAYS[0], days[DAYS[0]])
    with pytest.raises(ValueError, match="core_staging.users holds 2026-11-01, not only 2026-11-02"):
        with transaction(warehouse):
            apply_history(warehouse, DAYS[1], "run")


def test_audits_find_each_fault_planted_in_the_history(warehouse, days):
    for day in DAYS[:2]:
        publish(warehouse, day, days[day])
    assert failed_audits(audit_history(warehouse, DAYS[1])) == []
    # A second current version of user 1, an overlapping old version of track 2, a duplicate
    # listen event, a core row that differs from its version, a listen event never served.
    warehouse.execute(
        "INSERT INTO core.users_history SELECT * REPLACE (DATE '2026-11-02' AS valid_from) "
        "FROM core.users_history WHERE user_id = 1 AND valid_to IS NULL"
    )
    warehouse.execute(
        "INSERT INTO core.tracks_history SELECT * REPLACE (DATE '2026-10-30' AS valid_from, DATE '2026-11-02' AS valid_to) "
        "FROM core.tracks_history WHERE track_id = 2 AND valid_to IS NULL"
    )
    warehouse.execute("INSERT INTO core.listen_events SELECT * FROM core.listen_events WHERE user_id = 5 AND position = 1")
    warehouse.execute("UPDATE core.tracks SET album = 'Other' WHERE track_id IN (3, 4)")
    warehouse.execute("INSERT INTO core.listen_events VALUES (6, 1000, 1, DATE '2026-11-02')")
    findings = {(f.table, f.check_name): f for f in audit_history(warehouse, DAYS[1])}
    failed = {name: (f.count, f.sample) for name, f in findings.items() if not f.passed}
    assert failed == {
        ("users_history", "one_current_version_per_id"): (1, [1]),
        ("users_history", "no_overlapping_versions"): (1, [1]),  # two versions from 2026-11-02 on
        ("tracks_history", "no_overlapping_versions"): (1, [2]),
        ("tracks_history", "current_versions_match_core"): (2, [3, 4]),
        ("listen_events", "listen_events_unique"): (1, [5]),
        ("listen_events", "new_listen_events_match_growth"): (1, [6]),
    }
    # The day added 577 events; the duplicate of user 5's first one counts as one listen more
    # before the day, the event never served as one more new event.
    growth = findings[("listen_events", "new_listen_events_match_growth")].details
    assert (growth["expected_growth"], growth["new_events_of_grown_lists"]) == (577 - 1, 577 + 1)


def test_core_of_another_day_fails_the_comparison(warehouse, days):
    publish(warehouse, DAYS[0], days[DAYS[0]])
    stage(warehouse, DAYS[1], days[DAYS[1]])  # staged, not yet applied
    findings = {(f.table, f.check_name): f for f in audit_history(warehouse, DAYS[0], core_schema="core_staging")}
    match = findings[("users_history", "current_versions_match_core")]
    assert not match.passed
    assert match.details["problem"] == "core_staging.users holds 2026-11-02, not 2026-11-01"


def run_history_checks(database) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """The history_quality checks run as Dagster runs them, on their own."""
    defs = dg.Definitions(
        assets=[dg.AssetSpec(key) for key in HISTORY_ASSET_KEYS.values()],
        asset_checks=[history_checks],
        jobs=[dg.define_asset_job("history_checks", selection=dg.AssetSelection.checks(history_checks))],
        resources={"warehouse": WarehouseResource(database=str(database))},
    )
    result = defs.resolve_job_def("history_checks").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return {
        (evaluation.asset_key.to_user_string(), evaluation.check_name): evaluation
        for evaluation in result.get_asset_check_evaluations()
    }


def test_asset_checks_judge_the_published_history_and_are_recorded(tmp_path, days):
    database = tmp_path / "warehouse.duckdb"
    with in_utc(duckdb.connect(str(database))) as connection:
        connection.execute("CREATE SCHEMA core")
    before = run_history_checks(database)  # nothing applied yet: every check fails, saying why
    assert len(before) == 8 and not any(evaluation.passed for evaluation in before.values())
    assert before[("core/listen_events", "listen_events_unique")].metadata["problem"].value.startswith("no snapshot applied")

    with in_utc(duckdb.connect(str(database))) as connection:
        for day in DAYS[:2]:
            publish(connection, day, days[day])
    evaluations = run_history_checks(database)
    assert set(evaluations) == {
        (f"core/{table}", name) for table, audits in AUDITS.items() for name in audits
    }  # fmt: skip
    assert all(evaluation.passed for evaluation in evaluations.values())
    growth = evaluations[("core/listen_events", "new_listen_events_match_growth")].metadata
    assert (growth["snapshot_date"].value, growth["expected_growth"].value, growth["rewrites"].value) == ("2026-11-02", 577, 0)

    with in_utc(duckdb.connect(str(database))) as connection:
        connection.execute("UPDATE core.users SET email = 'changed@example.com' WHERE user_id IN (1, 2, 3)")
    failed = {key: e for key, e in run_history_checks(database).items() if not e.passed}
    assert list(failed) == [("core/users_history", "current_versions_match_core")]
    evaluation = failed[("core/users_history", "current_versions_match_core")]
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert (evaluation.metadata["count"].value, evaluation.metadata["sample_ids"].value) == (3, [1, 2, 3])
    with in_utc(duckdb.connect(str(database))) as connection:
        recorded = connection.execute(
            "SELECT passed, count(*) FROM monitoring.check_results WHERE asset LIKE 'core/%' GROUP BY ALL ORDER BY 1"
        ).fetchall()
    assert recorded == [(False, 8 + 1), (True, 8 + 7)]


# ---------------------------------------------------------------------------------------
# End to end: raw days pulled from the emulator, staged and published by core's own code,
# then the history rebuilt from DuckDB and the lake.
# ---------------------------------------------------------------------------------------


def daily_publish(database, day: dt.date, run_id: str) -> None:
    """The publish of core with the history in its transaction, as the core asset runs it."""
    with in_utc(duckdb.connect(str(database))) as connection:
        stage_core_tables(connection, day, run_id)
        publish_core_tables(
            connection, lambda _connection, _day: [], within_transaction=lambda c, staged: apply_history(c, staged, run_id)
        )


def test_rebuild_history_gives_exactly_the_tables_the_daily_runs_built(emulator, tmp_path):
    database, lake = tmp_path / "warehouse.duckdb", tmp_path / "lake"
    base_url = emulator(as_of=DAYS[0].isoformat())
    for day in DAYS:
        requests.post(f"{base_url}/_admin/state", json={"as_of": day.isoformat()}, timeout=10).raise_for_status()
        materialize_day(base_url, database, day.isoformat(), assets=raw_snapshot_assets)
        if day == DAYS[2]:
            # Upstream rewrites user 9's history that day: its first listen becomes another track.
            with duckdb.connect(str(database)) as connection:
                connection.execute(
                    "UPDATE raw.listen_history SET record = json_object('user_id', 9, 'items', "
                    "list_prepend(424242, ((record->'items')::BIGINT[])[2:]), 'created_at', record->>'created_at', "
                    "'updated_at', record->>'updated_at') WHERE snapshot_date = ? AND record->>'user_id' = '9'",
                    [day],
                )
        daily_publish(database, day, f"daily-{day}")
    with in_utc(duckdb.connect(str(database))) as connection:
        daily = all_tables(connection)
        # The two oldest days leave DuckDB for the lake, as retention does once their copy is verified.
        for day in DAYS[:2]:
            for entity in ("users", "tracks", "listen_history"):
                export_raw_partition(connection, entity, day.isoformat(), str(lake))
                connection.execute(f"DELETE FROM raw.{entity} WHERE snapshot_date = ?", [day])
        # The rebuild must not leave core_staging on another day than the one it held.
        assert staged_snapshot_date(connection) == DAYS[-1]
    # Rewritten on 2026-11-03, and back the next snapshot: two rewrites, recorded by the daily runs.
    assert [row[:4] for row in daily["quality.history_rewrites"]] == [(9, DAYS[2], "changed", 1), (9, DAYS[3], "changed", 1)]

    result = rebuild_history.execute_in_process(
        resources={"warehouse": WarehouseResource(database=str(database)), "lake": LakeResource(root=str(lake))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    with in_utc(duckdb.connect(str(database))) as connection:
        assert all_tables(connection) == daily
        assert staged_snapshot_date(connection) == DAYS[-1]
        assert not connection.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'history_rebuild'"
        ).fetchall()[0][0]
    materializations = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert set(materializations) == {"core/users_history", "core/tracks_history", "core/listen_events"}
    metadata = materializations["core/listen_events"]
    assert metadata["rows"].value == len(daily["core.listen_events"])
    assert metadata["read_from_lake"].value == {day.isoformat(): ["listen_history", "tracks", "users"] for day in DAYS[:2]}
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 8 and all(evaluation.passed for evaluation in evaluations)


def test_daily_runs_build_the_history_in_their_publish_and_a_refused_day_leaves_it_untouched(emulator, tmp_path, days):
    """The real daily path (raw, core_staging, core with its history in one transaction) over
    the emulator's days, one of them refused by a gate: the history is exactly the days published."""
    database = tmp_path / "warehouse.duckdb"
    base_url = emulator(as_of=DAYS[0].isoformat())
    published = [DAYS[0], DAYS[1], DAYS[3]]
    for day in DAYS:
        # 2026-11-03 loses every track overnight: its volume gate refuses it, nothing is published.
        refused = day == DAYS[2]
        state = {"as_of": day.isoformat(), "empty_endpoints": ["tracks"] if refused else []}
        requests.post(f"{base_url}/_admin/state", json=state, timeout=10).raise_for_status()
        result = materialize_day(base_url, database, day.isoformat(), raise_on_error=not refused)
        assert result.success != refused
        if refused:
            evaluations = check_results(result)
            assert not evaluations[("core_staging/tracks", "volume_above_floor")].passed
        else:
            metadata = materialized(result)["core/listen_events"]
            assert metadata["history_snapshot_date"] == day.isoformat()
    served = [(day, days[day]) for day in published]
    with duckdb.connect(str(database), read_only=True) as connection:
        assert history_rows(connection, "users", "user_id", USER_FIELDS) == expected_versions(
            [(day, s["users"]) for day, s in served], USER_FIELDS
        )
        assert history_rows(connection, "tracks", "track_id", TRACK_FIELDS) == expected_versions(
            [(day, s["tracks"]) for day, s in served], TRACK_FIELDS
        )
        events = set(connection.execute("SELECT user_id, position, track_id, first_seen_date FROM core.listen_events").fetchall())
        assert events == expected_events([(day, s["listen_history"]) for day, s in served])
        assert [day for (day,) in connection.execute("SELECT snapshot_date FROM core.history_days ORDER BY 1").fetchall()] == published
