"""Data faults switched on in the emulator: each is caught by its check on staging, nothing is lost, a failed gate publishes nothing."""

import dagster as dg
import pytest

from moovitamix_api.data import expected_counts
from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.core.checks import QualityPolicy
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets_tests.pipeline import check_results, materialize_day, materialized, query, resources, scalar

DAY = "2026-11-01"
FAULTS = dict(duplicate_rate=0.05, null_rate=0.03, orphan_rate=0.03, bad_timestamp_rate=0.03)


@pytest.fixture
def database(tmp_path):
    return tmp_path / "warehouse.duckdb"


def rejected_by_reason(database, entity):
    return dict(
        query(
            database,
            "SELECT split_part(code, ':', 1), count(*) FROM quality.rejected_records, "
            "unnest(string_split(reason, '; ')) AS r(code) WHERE entity = ? GROUP BY 1",
            [entity],
        )
    )


def core_exists(database) -> bool:
    return scalar(database, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'core'") > 0


def test_each_data_fault_is_caught_and_nothing_is_lost(emulator, database):
    base_url = emulator(**FAULTS)
    expected = expected_counts(emulator.settings)
    # Duplicates tolerated up to 10% here, so that only their report fails (WARN); orphans
    # above 1% fail their gate with ERROR, which fails the staging step: nothing is published.
    result = materialize_day(
        base_url, database, DAY, raise_on_error=False, quality_policy=QualityPolicy(max_duplicate_rate=0.1)
    )
    assert not result.success
    evaluations = check_results(result)
    staged = materialized(result)

    for entity in ("users", "tracks", "listen_history"):
        served = scalar(database, f"SELECT count(*) FROM raw.{entity} WHERE snapshot_date = ?", [DAY])
        rejected = scalar(database, "SELECT count(*) FROM quality.rejected_records WHERE entity = ?", [entity])
        metadata = staged[f"core_staging/{entity}"]
        assert served == expected[entity]["served"] == metadata["records_served"]
        assert rejected == metadata["records_rejected"] > 0
        assert metadata["records_accepted"] + rejected == served, entity  # nothing lost

    for entity in ("users", "tracks"):
        counts = expected[entity]
        reasons = rejected_by_reason(database, entity)
        # Exact copies of a faulty record carry its fault and are rejected for it, not as duplicates.
        assert scalar(database, f"SELECT count(*) FROM core_staging.{entity}") == (
            counts["base_records"] - counts["nulls"] - counts["bad_timestamps"]
        )
        assert 0 < reasons["duplicate_id"] <= counts["duplicates"]
        assert reasons["null_field"] >= counts["nulls"] > 0
        assert reasons["unparseable_timestamp"] >= counts["bad_timestamps"] > 0

        duplicates = evaluations[(f"core_staging/{entity}", "no_duplicate_ids")]
        assert not duplicates.passed and duplicates.severity == dg.AssetCheckSeverity.WARN
        assert evaluations[(f"core_staging/{entity}", "duplicate_rate_within_limit")].passed
        assert not evaluations[(f"core_staging/{entity}", "required_fields_present")].passed
        assert not evaluations[(f"core_staging/{entity}", "values_typed")].passed
        assert evaluations[(f"core_staging/{entity}", "fields_match_contract")].passed

    history = expected["listen_history"]
    assert history["orphans"] > 0
    report = evaluations[("core_staging/listen_history", "no_orphan_user_ids")]
    assert not report.passed and report.severity == dg.AssetCheckSeverity.WARN and report.metadata["count"].value > 0
    gate = evaluations[("core_staging/listen_history", "orphan_user_id_rate_within_limit")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "listens" in gate.description and "allowed up to 1.00%" in gate.description
    assert not evaluations[("core_staging/listen_history", "no_orphan_track_ids")].passed
    assert not evaluations[("core_staging/listen_history", "required_fields_present")].passed
    # The gate held: core was never published, no step published it.
    assert not core_exists(database)
    assert [key for key in staged if key.startswith("core/")] == []

    sample = scalar(
        database,
        "SELECT record FROM quality.rejected_records WHERE entity = 'users' AND reason LIKE 'null_field:email%' LIMIT 1",
    )
    assert '"email":null' in sample  # the record as received


def test_duplicates_above_the_allowed_rate_block(emulator, database):
    base_url = emulator(duplicate_rate=0.05)
    expected = expected_counts(emulator.settings)
    result = materialize_day(base_url, database, DAY, raise_on_error=False)
    evaluations = check_results(result)

    report = evaluations[("core_staging/users", "no_duplicate_ids")]
    assert not report.passed and report.severity == dg.AssetCheckSeverity.WARN
    assert report.metadata["count"].value == expected["users"]["duplicates"]
    assert report.metadata["duplicates_left_in_staging"].value == 0
    gate = evaluations[("core_staging/users", "duplicate_rate_within_limit")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert scalar(database, "SELECT count(*) FROM core_staging.users") == expected["users"]["base_records"]
    assert not core_exists(database)
    # Upstream duplicates look the same on a second pass: the pull keeps them as data.
    assert materialized(result)["raw/users"]["pull_attempts"] == 2
    # The orphan audits ran in the same step, on the same day's staged users and tracks.
    assert evaluations[("core_staging/listen_history", "no_orphan_user_ids")].passed


def test_renamed_and_extra_fields_are_reported(emulator, database):
    base_url = emulator(rename_fields=("users.email=mail",), extra_fields=("tracks.mood=happy",))
    # Every user is rejected, so every listen is an orphan: the orphan gate fails, as it should.
    result = materialize_day(base_url, database, DAY, raise_on_error=False)
    evaluations = check_results(result)

    users_fields = evaluations[("core_staging/users", "fields_match_contract")]
    assert not users_fields.passed
    assert users_fields.metadata["fields_missing"].value == {"email": 1155}
    assert users_fields.metadata["fields_added"].value == {"mail": 1155}
    assert rejected_by_reason(database, "users") == {"missing_field": 1155}
    assert not evaluations[("core_staging/listen_history", "orphan_user_id_rate_within_limit")].passed

    tracks_fields = evaluations[("core_staging/tracks", "fields_match_contract")]
    assert not tracks_fields.passed
    assert tracks_fields.metadata["fields_added"].value == {"mood": 1062}
    assert scalar(database, "SELECT count(*) FROM core_staging.tracks") == 1062
    assert scalar(database, "SELECT count(*) FROM raw.tracks WHERE record->>'mood' = 'happy'") == 1062


def test_core_stages_and_publishes_itself_after_a_raw_snapshot_lands(emulator_url, database):
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(assets=[*raw_snapshot_assets, *core_assets], resources=resources(emulator_url, database))
    # The sensor's first tick only records the state; it ticks again after the snapshot lands.
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0
    dg.materialize(
        raw_snapshot_assets, partition_key=DAY, resources=resources(emulator_url, database), instance=instance
    )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    # Staging and publish (core and its history) in one request: in that run, publish waits
    # for staging's gates.
    for entity in ("users", "tracks", "listen_history"):
        assert result.get_num_requested(dg.AssetKey(["core_staging", entity])) == 1
        assert result.get_num_requested(dg.AssetKey(["core", entity])) == 1
    for table in ("users_history", "tracks_history", "listen_events"):
        assert result.get_num_requested(dg.AssetKey(["core", table])) == 1
    assert result.total_requested == 9
    dg.materialize(core_assets, resources=resources(emulator_url, database), instance=instance)
    # Once core is published, nothing more is asked for.
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0


def test_core_before_any_snapshot_fails_saying_what_to_do(tmp_path):
    result = dg.materialize(
        core_assets, resources=resources("http://127.0.0.1:9", tmp_path / "warehouse.duckdb"), raise_on_error=False
    )
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "core_staging"
    assert "no complete raw snapshot yet" in failure.event_specific_data.error.message
    assert "materialize the raw assets for a day first" in failure.event_specific_data.error.message
