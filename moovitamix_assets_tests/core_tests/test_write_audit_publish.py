"""A bad day fails loudly and leaves the previous one in place; a day under the thresholds moves everything.

Each test ingests a good day, then a bad one on the same warehouse and instance, and
asserts exact numbers afterwards: which day core holds, what each gate said, and whether
the recommendations' automation condition asks for a new list.
"""

import dagster as dg
import pytest
import requests

from moovitamix_api.data import expected_counts
from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations
from moovitamix_assets.ml.checks import ml_checks
from moovitamix_assets_tests.pipeline import (
    check_results,
    materialize_day,
    query,
    resources,
    scalar,
    table_fingerprint,
)

DAY1, DAY2, DAY3 = "2026-11-01", "2026-11-02", "2026-11-03"
CORE_TABLES = ("core.users", "core.tracks", "core.listen_history")
ENTITIES = ("users", "tracks", "listen_history")


@pytest.fixture
def database(tmp_path):
    return tmp_path / "warehouse.duckdb"


def set_state(base_url: str, **changes) -> None:
    requests.post(f"{base_url}/_admin/state", json=changes, timeout=10).raise_for_status()


def core_days(database) -> dict[str, list[str]]:
    return {
        table: [day for (day,) in query(database, f"SELECT DISTINCT snapshot_date::VARCHAR FROM {table} ORDER BY 1")]
        for table in CORE_TABLES
    }


def manifest(database) -> dict[tuple[str, str], int]:
    rows = query(database, "SELECT snapshot_date::VARCHAR, entity, records FROM raw.snapshot_manifest")
    return {(day, entity): records for day, entity, records in rows}


def test_a_collapsed_day_is_refused_with_its_numbers_and_core_keeps_the_previous_day(emulator, database):
    base_url = emulator()
    materialize_day(base_url, database, DAY1)
    before = [table_fingerprint(database, table) for table in CORE_TABLES]

    # The upstream loses a quarter of its users overnight (a bad deploy): 850 + 5 a day.
    set_state(base_url, as_of=DAY2, users=850)
    shrunk = expected_counts(emulator.settings.replace(as_of=DAY2, users=850))["users"]["served"]
    result = materialize_day(base_url, database, DAY2, raise_on_error=False)

    assert not result.success
    gate = check_results(result)[("core_staging/users", "volume_above_floor")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert shrunk == 1010
    assert gate.description == (
        "2026-11-02: 1010 users records, 1155 on 2026-11-01 (the floor is 1040: at most 10% fewer)"
    )
    # Tracks did not shrink: their gate passed, but the day is published whole or not at all.
    assert check_results(result)[("core_staging/tracks", "volume_above_floor")].passed
    assert [table_fingerprint(database, table) for table in CORE_TABLES] == before
    assert core_days(database) == {table: [DAY1] for table in CORE_TABLES}
    # The pull itself was whole and is kept, for the record.
    assert manifest(database)[(DAY2, "users")] == 1010


def test_an_empty_upstream_fails_the_day_and_core_keeps_the_previous_one(emulator, database):
    base_url = emulator()
    materialize_day(base_url, database, DAY1)
    before = [table_fingerprint(database, table) for table in CORE_TABLES]

    set_state(base_url, as_of=DAY2, empty_endpoints=list(ENTITIES))
    result = materialize_day(base_url, database, DAY2, raise_on_error=False)

    assert not result.success
    evaluations = check_results(result)
    for entity, previous in (("users", 1155), ("tracks", 1062), ("listen_history", 1155)):
        gate = evaluations[(f"core_staging/{entity}", "volume_above_floor")]
        assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
        assert gate.description.startswith(f"2026-11-02: the API served no {entity} at all, {previous} on 2026-11-01")
        assert manifest(database)[(DAY2, entity)] == 0
    assert [table_fingerprint(database, table) for table in CORE_TABLES] == before
    assert core_days(database) == {table: [DAY1] for table in CORE_TABLES}


def test_one_endpoint_down_leaves_every_core_table_on_the_previous_day(emulator, emulator_settings, database):
    base_url = emulator()
    materialize_day(base_url, database, DAY1)

    set_state(base_url, as_of=DAY2, failing_endpoints=["users"])
    result = materialize_day(base_url, database, DAY2, raise_on_error=False, max_retries=1, backoff_factor=0.01)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    cause = failure.event_specific_data.error.cause
    assert "1 of 3 endpoint(s) failed (nothing was loaded" in cause.message and "GET /users page 1: HTTP 503" in cause.message
    # /tracks and /listen_history answered, yet nothing of the day was loaded.
    assert sorted(manifest(database)) == [(DAY1, entity) for entity in sorted(ENTITIES)]
    assert scalar(database, "SELECT count(*) FROM raw.tracks WHERE snapshot_date = ?", [DAY2]) == 0
    assert core_days(database) == {table: [DAY1] for table in CORE_TABLES}

    # Someone materializes the endpoints that answer, by hand: the day stays incomplete,
    # and core, staged again, says so and stays entirely on the previous day.
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize(
        [*raw_snapshot_assets, *core_assets],
        selection="key:raw/tracks or key:raw/listen_history",
        partition_key=DAY2,
        resources=resources(base_url, database),
        instance=instance,
    )
    staged = dg.materialize(core_assets, resources=resources(base_url, database), instance=instance, raise_on_error=False)
    assert not staged.success
    for entity in ENTITIES:
        gate = check_results(staged)[(f"core_staging/{entity}", "snapshot_complete")]
        assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
        assert gate.description == (
            "2026-11-02 is incomplete (users not loaded): core stays entirely on 2026-11-01, the newest complete day"
        )
    assert core_days(database) == {table: [DAY1] for table in CORE_TABLES}

    # The endpoint is back: the day lands whole, every core table moves together.
    set_state(base_url, failing_endpoints=[])
    materialize_day(base_url, database, DAY2)
    counts = expected_counts(emulator_settings.replace(as_of=DAY2))
    assert core_days(database) == {table: [DAY2] for table in CORE_TABLES}
    assert scalar(database, "SELECT count(*) FROM core.users") == counts["users"]["served"]
    assert scalar(database, "SELECT count(*) FROM core.listen_history") == counts["listen_history"]["listens"]


def test_recommendations_follow_a_day_under_the_thresholds_and_stop_above(emulator, database):
    base_url = emulator()
    instance = dg.DagsterInstance.ephemeral()
    ml_assets = [training_set, recommender_model, user_recommendations]
    defs = dg.Definitions(
        assets=[*raw_snapshot_assets, *core_assets, *ml_assets],
        asset_checks=ml_checks,
        resources=resources(base_url, database),
    )
    recommendations = dg.AssetKey(["ml", "user_recommendations"])
    materialize_day(base_url, database, DAY1, instance=instance)
    dg.materialize([*ml_assets, *ml_checks], resources=resources(base_url, database), instance=instance)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    # A few orphan listens, under the 1% allowed: reported (WARN), the day is published,
    # and the recommendations follow.
    set_state(base_url, as_of=DAY2, orphan_rate=0.004)
    result = materialize_day(base_url, database, DAY2, instance=instance)
    evaluations = check_results(result)
    report = evaluations[("core_staging/listen_history", "no_orphan_user_ids")]
    assert not report.passed and report.severity == dg.AssetCheckSeverity.WARN
    assert 0 < report.metadata["rate"].value < 0.01
    assert evaluations[("core_staging/listen_history", "orphan_user_id_rate_within_limit")].passed
    assert core_days(database) == {table: [DAY2] for table in CORE_TABLES}
    evaluated = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert evaluated.get_num_requested(recommendations) == 1
    dg.materialize(
        [*ml_assets, *ml_checks], selection="key:ml/user_recommendations", resources=resources(base_url, database),
        instance=instance,
    )
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluated.cursor).cursor

    # Far more orphans than allowed: the gate fails with ERROR, nothing is published, and
    # the recommendations are not asked for.
    set_state(base_url, as_of=DAY3, orphan_rate=0.05)
    result = materialize_day(base_url, database, DAY3, instance=instance, raise_on_error=False)
    assert not result.success
    gate = check_results(result)[("core_staging/listen_history", "orphan_user_id_rate_within_limit")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert core_days(database) == {table: [DAY2] for table in CORE_TABLES}
    evaluated = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert evaluated.get_num_requested(recommendations) == 0
    assert evaluated.get_num_requested(dg.AssetKey(["core", "users"])) == 0


def test_publish_refuses_a_staged_day_that_fails_a_gate_however_it_is_launched(emulator, database):
    base_url = emulator()
    materialize_day(base_url, database, DAY1)
    before = [table_fingerprint(database, table) for table in CORE_TABLES]
    set_state(base_url, as_of=DAY2, orphan_rate=0.05)
    materialize_day(base_url, database, DAY2, raise_on_error=False)
    # Publish alone, as `dagster asset materialize --select core/users` would: it audits again.
    published = dg.materialize(
        core_assets, selection="key:core/*", resources=resources(base_url, database), raise_on_error=False
    )
    assert not published.success
    message = published.get_step_failure_events()[0].event_specific_data.error.message
    assert "the staged snapshot 2026-11-02 failed its blocking audits, core stays as it was" in message
    assert "orphan_user_id_rate_within_limit" in message
    assert [table_fingerprint(database, table) for table in CORE_TABLES] == before
