"""Bad input from upstream: each planted record is stored verbatim in raw, then either
accepted into core unchanged or rejected with its reason code; bodies that are not pages
are retried, then fail the run naming the endpoint and page."""

import json
import time

import pytest
import requests

from moovitamix_api.data import expected_counts
from moovitamix_assets.core.checks import QualityPolicy
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets_tests.pipeline import (
    check_results,
    materialize_day,
    materialized,
    query,
    scalar,
    table_fingerprint,
)
from moovitamix_assets_tests.reliability_tests.upstream import (
    PlantedUpstream,
    history,
    serve_planted,
    track,
    user,
)

DAY = "2026-11-01"
ACCEPTED = None
RAW_USERS = "key:raw/users"  # the one endpoint of the raw multi-asset these tests break
# Every planted record is judged alone: no check may stop the run on their account.
TOLERANT = QualityPolicy(max_duplicate_rate=1.0, max_orphan_rate=1.0, max_row_count_change=1e9)
SQL_INJECTION = "Robert'); DROP TABLE core.users;--"


def without(record, field):
    return {key: value for key, value in record.items() if key != field}


EVERY_USER_FIELD_MISSING = "; ".join(
    f"missing_field:{field}"
    for field in ("id", "first_name", "last_name", "email", "gender", "favorite_genres", "created_at", "updated_at")
)

# (case, entity, record as served, reason code it is rejected with, or ACCEPTED)
PLANTED = [
    ("valid user", "users", user(1), ACCEPTED),
    ("id as string", "users", user("7"), "invalid_type:id"),
    ("id negative", "users", user(-3), "invalid_id:id"),
    ("id zero", "users", user(0), "invalid_id:id"),
    ("id 10**30", "users", user(10**30), "invalid_type:id"),
    ("id 2**63 (past BIGINT)", "users", user(2**63), "invalid_type:id"),
    ("id 2**63-1 (largest BIGINT)", "users", user(2**63 - 1), ACCEPTED),
    ("id 1.5", "users", user(1.5), "invalid_type:id"),
    ("id true", "users", user(True), "invalid_type:id"),
    ("id NaN", "users", user(float("nan")), "invalid_type:id"),
    ("email missing", "users", without(user(8), "email"), "missing_field:email"),
    ("email null", "users", user(9, email=None), "null_field:email"),
    ("email a number", "users", user(10, email=42), "invalid_type:email"),
    ("first_name a list", "users", user(11, first_name=["Ada"]), "invalid_type:first_name"),
    ("field renamed", "users", {**without(user(12), "favorite_genres"), "favourite_genres": "Jazz"},
     "missing_field:favorite_genres"),
    ("created_at not a date", "users", user(13, created_at="yesterday"), "unparseable_timestamp:created_at"),
    ("created_at month 13", "users", user(14, created_at="2026-13-01T00:00:00"), "unparseable_timestamp:created_at"),
    ("two faults at once", "users", user(15, email=None, created_at="x"),
     "null_field:email; unparseable_timestamp:created_at"),
    ("record a string", "users", "just a string", EVERY_USER_FIELD_MISSING),
    ("record null", "users", None, EVERY_USER_FIELD_MISSING),
    ("id served twice, older copy", "users", user(16, updated_at="2026-10-01T09:00:00"), "duplicate_id"),
    ("id served twice, newer copy", "users", user(16, first_name="Newer"), ACCEPTED),
    ("SQL in a string", "users", user(20, first_name=SQL_INJECTION), ACCEPTED),
    ("quotes", "users", user(21, first_name='"quoted"', last_name="O'Brien"), ACCEPTED),
    ("unicode", "users", user(22, first_name="Zoë 🎵 名前", last_name="Ωμέγα"), ACCEPTED),
    ("newline, tab, backslash", "users", user(23, first_name="line 1\nline 2\ttab \\ back"), ACCEPTED),
    ("NUL character", "users", user(24, first_name="nul\u0000byte"), ACCEPTED),
    ("empty string", "users", user(25, first_name=""), ACCEPTED),
    ("100 kB string", "users", user(26, first_name="a" * 100_000), ACCEPTED),
    ("extra field", "users", user(27, mood="happy"), ACCEPTED),
    ("valid track", "tracks", track(1), ACCEPTED),
    ('duration "3:75"', "tracks", track(2, duration="3:75"), "invalid_duration:duration"),
    ("duration 215 (a number)", "tracks", track(3, duration=215), "invalid_type:duration"),
    ('duration "120:00"', "tracks", track(4, duration="120:00"), ACCEPTED),
    ('duration "-1:30"', "tracks", track(5, duration="-1:30"), "invalid_duration:duration"),
    ('duration "3:5"', "tracks", track(6, duration="3:5"), "invalid_duration:duration"),
    ('duration ""', "tracks", track(7, duration=""), "invalid_duration:duration"),
    ("valid history", "listen_history", history(1, [1, 4, 1]), ACCEPTED),
    ("items as string", "listen_history", history(2, "[1, 4]"), "invalid_type:items"),
    ("items an object", "listen_history", history(3, {"1": 4}), "invalid_type:items"),
    ("a track id as string", "listen_history", history(4, [1, "4"]), "invalid_type:items"),
    ("a track id negative", "listen_history", history(5, [1, -4]), "invalid_type:items"),
    ("a track id 1.5", "listen_history", history(6, [1, 1.5]), "invalid_type:items"),
    ("a track id 10**30", "listen_history", history(7, [1, 10**30]), "invalid_type:items"),
    ("items null", "listen_history", history(8, None), "null_field:items"),
    ("items missing", "listen_history", without(history(9, [1]), "items"), "missing_field:items"),
    ("items empty", "listen_history", history(10, []), ACCEPTED),
    ("user_id null", "listen_history", history(None, [1]), "null_field:user_id"),
    ("user_id as string", "listen_history", history("11", [1]), "invalid_type:user_id"),
    ("an unknown track id", "listen_history", history(20, [1, 999]), ACCEPTED),
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """One day ingested from a server serving every planted record (3 to a page)."""
    database = tmp_path_factory.mktemp("planted") / "warehouse.duckdb"
    records = {entity: [record for _, of, record, _ in PLANTED if of == entity] for entity in ("users", "tracks", "listen_history")}
    with serve_planted(PlantedUpstream(records)) as base_url:
        result = materialize_day(base_url, database, DAY, quality_policy=TOLERANT, page_size=3)
    return database, result


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True)  # tells 1 from 1.0 from true


def served_position(case: str) -> int:
    entity = next(of for name, of, _, _ in PLANTED if name == case)
    names = [name for name, of, _, _ in PLANTED if of == entity]
    return names.index(case) + 1


@pytest.mark.parametrize("case, entity, record, reason", PLANTED, ids=[case for case, *_ in PLANTED])
def test_planted_record_is_stored_verbatim_then_accepted_or_rejected(planted, case, entity, record, reason):
    database, _ = planted
    position = served_position(case)
    (stored,) = query(
        database,
        f"SELECT record FROM raw.{entity} WHERE snapshot_date = ? "
        "QUALIFY row_number() OVER (ORDER BY page, position_in_page) = ?",
        [DAY, position],
    )[0]
    assert canonical(json.loads(stored)) == canonical(record)  # as served: same values, same types
    rejected = query(
        database,
        "SELECT reason FROM quality.rejected_records WHERE entity = ? AND served_position = ?",
        [entity, position],
    )
    assert rejected == ([] if reason is ACCEPTED else [(reason,)])


def test_accepted_strings_round_trip_exactly_and_are_never_executed(planted):
    database, _ = planted
    for case, entity, record, reason in PLANTED:
        if entity == "users" and reason is ACCEPTED:
            row = query(
                database, "SELECT first_name, last_name, email FROM core.users WHERE user_id = ?", [record["id"]]
            )
            assert row == [(record["first_name"], record["last_name"], record["email"])], case
    assert scalar(database, "SELECT count(*) FROM core.users WHERE first_name = ?", [SQL_INJECTION]) == 1
    tables = {name for (name,) in query(database, "SELECT table_schema || '.' || table_name FROM information_schema.tables")}
    assert {"core.users", "core.tracks", "core.listen_history", "raw.users", "quality.rejected_records"} <= tables


def test_every_planted_record_is_kept_or_rejected(planted):
    database, result = planted
    for entity in ("users", "tracks", "listen_history"):
        served = sum(1 for _, of, _, _ in PLANTED if of == entity)
        accepted = sum(1 for _, of, _, reason in PLANTED if of == entity and reason is ACCEPTED)
        metadata = materialized(result)[f"core_staging/{entity}"]
        assert (metadata["records_served"], metadata["records_accepted"]) == (served, accepted), entity
        assert metadata["records_rejected"] == served - accepted
    assert scalar(database, "SELECT count(*) FROM core.tracks") == 2
    assert query(database, "SELECT duration_seconds FROM core.tracks ORDER BY track_id") == [(562,), (7200,)]
    listens = query(database, "SELECT user_id, list(track_id ORDER BY position) FROM core.listen_history GROUP BY 1 ORDER BY 1")
    assert listens == [(1, [1, 4, 1]), (20, [1, 999])]  # an empty history gives no listen


def test_planted_faults_are_reported_by_the_checks(planted):
    _, result = planted
    evaluations = check_results(result)
    for check in ("required_fields_present", "values_typed", "no_duplicate_ids", "fields_match_contract"):
        assert not evaluations[("core_staging/users", check)].passed, check
    fields = evaluations[("core_staging/users", "fields_match_contract")].metadata
    assert fields["fields_added"].value == {"favourite_genres": 1, "mood": 1}
    assert not evaluations[("core_staging/listen_history", "no_orphan_track_ids")].passed


def test_broken_bodies_are_retried_until_the_page_comes(emulator, emulator_settings, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    base_url = emulator(bad_json_rate=0.3)
    result = materialize_day(base_url, database, DAY, backoff_factor=0.01)
    expected = expected_counts(emulator_settings)
    for entity in ("users", "tracks", "listen_history"):
        metadata = materialized(result)[f"raw/{entity}"]
        assert metadata["records"] == expected[entity]["served"]
        assert metadata["retries"] > 0
    assert scalar(database, "SELECT count(*) FROM core.listen_history") == expected["listen_history"]["listens"]
    assert scalar(database, "SELECT count(*) FROM quality.rejected_records") == 0


def test_bodies_never_json_fail_the_run_naming_endpoint_and_page(emulator, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    base_url = emulator()
    materialize_day(base_url, database, DAY, assets=raw_snapshot_assets, selection=RAW_USERS)
    before = table_fingerprint(database, "raw.users")
    requests.post(f"{base_url}/_admin/state", json={"bad_json_rate": 1.0}, timeout=10).raise_for_status()
    result = materialize_day(
        base_url, database, DAY, assets=raw_snapshot_assets, selection=RAW_USERS,
        raise_on_error=False, max_retries=2, backoff_factor=0.01,
    )  # fmt: skip
    assert not result.success
    (failure,) = result.get_step_failure_events()
    error = failure.event_specific_data.error
    assert error.message == "Exceeded max_retries of 2\n"  # the step itself was retried twice, with backoff
    message = error.cause.message  # the step's own failure, after its last retry
    assert message.startswith(
        "dagster._core.definitions.events.Failure: 1 of 1 endpoint(s) failed (nothing was loaded: every endpoint "
        "keeps its previous snapshot): GET /users page 1: body is not JSON"
    )
    assert "after 2 retries" in message
    assert table_fingerprint(database, "raw.users") == before


@pytest.mark.parametrize(
    "body, problem",
    [
        (b'{"detail": "Not Found"}', "body has no 'items' list"),
        (b'{"items": [], "total": 0, "page": 1, "size": 100, "pages": "1"}', "body has no integer 'pages'"),
        (b"[]", "body is not a JSON object but list"),
    ],
    ids=["error-object", "pages-as-string", "json-array"],
)
def test_bodies_that_are_json_but_not_pages_fail_naming_the_problem(tmp_path, body, problem):
    with serve_planted(PlantedUpstream({}, bodies={"users": body})) as base_url:
        result = materialize_day(
            base_url, tmp_path / "warehouse.duckdb", DAY, assets=raw_snapshot_assets, selection=RAW_USERS,
            raise_on_error=False, max_retries=1, backoff_factor=0.01,
        )  # fmt: skip
    message = result.get_step_failure_events()[0].event_specific_data.error.cause.message
    assert f"GET /users page 1: {problem} after 1 retries" in message


def test_a_page_far_larger_than_asked_fails_naming_it(tmp_path):
    # The contract caps a page at `size` (100) records; this server sends 1,000 on page 1
    # and says that is the only page. The pull cannot tell such paging from a moving
    # upstream's, so it refuses it, naming it, and loads nothing.
    records = 1_000
    body = json.dumps(
        {"items": [user(number) for number in range(1, records + 1)], "total": records, "page": 1, "size": 100, "pages": 1}
    ).encode()
    database = tmp_path / "warehouse.duckdb"
    with serve_planted(PlantedUpstream({}, bodies={"users": body})) as base_url:
        result = materialize_day(
            base_url, database, DAY, assets=raw_snapshot_assets, selection=RAW_USERS, raise_on_error=False
        )
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.cause.message
    assert (
        "GET /users: the upstream served the same inconsistent view on 2 passes, nothing moved between them: "
        f"pages=1 does not match total={records} at size 100"
    ) in message
    assert not database.exists()  # the pull failed before the warehouse was ever opened
    assert not list((tmp_path / "staging").iterdir())  # nothing staged is left behind


def test_a_page_of_100000_records_is_stored_whole(tmp_path):
    # A client that asks for 100,000 records a page gets them in one page (as the contract's
    # `size` would, were it not capped at 100): one Parquet row of 100,000 records staged,
    # unnested by DuckDB at the load; memory grows with the page, not the batch.
    records = 100_000
    body = json.dumps(
        {"items": [user(number) for number in range(1, records + 1)], "total": records, "page": 1, "size": records, "pages": 1}
    ).encode()
    database = tmp_path / "warehouse.duckdb"
    # Core is built from a complete day: one track and one history beside the 100,000 users.
    upstream = PlantedUpstream({"tracks": [track(1)], "listen_history": [history(1, [1])]}, bodies={"users": body})
    with serve_planted(upstream) as base_url:
        started = time.monotonic()
        result = materialize_day(base_url, database, DAY, page_size=records)
        seconds = time.monotonic() - started
    metadata = materialized(result)["raw/users"]
    # Two requests: the page, then page 1 again, which verifies that the pull saw one snapshot.
    assert (metadata["records"], metadata["pages"], metadata["requests"]) == (records, 1, 2)
    assert query(database, "SELECT count(*), count(DISTINCT page), max(position_in_page) FROM raw.users") == [
        (records, 1, records)
    ]
    assert scalar(database, "SELECT count(*) FROM core.users") == records
    assert seconds < 30


def test_a_lone_surrogate_in_one_record_does_not_sink_the_snapshot(tmp_path):
    body = b'{"items": [%s, %s], "total": 2, "page": 1, "size": 100, "pages": 1}' % (
        json.dumps(user(1)).encode(),
        json.dumps(user(2)).encode().replace(b'"Ada"', b'"Ada \\ud83c"'),  # half an emoji
    )
    database = tmp_path / "warehouse.duckdb"
    with serve_planted(PlantedUpstream({}, bodies={"users": body})) as base_url:
        result = materialize_day(
            base_url, database, DAY, assets=raw_snapshot_assets, selection=RAW_USERS, raise_on_error=False
        )
    assert result.success, result.get_step_failure_events()[0].event_specific_data.error.cause.message
    assert scalar(database, "SELECT count(*) FROM raw.users") == 2
    assert scalar(database, "SELECT record->>'first_name' FROM raw.users WHERE (record->>'id')::INT = 2") == "Ada \ufffd"
    assert materialized(result)["raw/users"]["replaced_characters"] == 1
