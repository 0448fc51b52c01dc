"""Data faults switched on in the emulator: each is caught by its check, nothing is lost."""

import dagster as dg
import pytest

from moovitamix_api.data import expected_counts
from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.core.checks import QualityPolicy, core_checks
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets_tests.pipeline import check_results, materialize_day, query, resources, scalar

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


def test_each_data_fault_is_caught_and_nothing_is_lost(emulator, database):
    base_url = emulator(**FAULTS)
    expected = expected_counts(emulator.settings)
    # Duplicates tolerated up to 10% here, so that they warn without blocking the orphan
    # checks (test_duplicates_above_the_allowed_rate_block shows the blocking). Orphans
    # above 1% fail with ERROR severity, which fails their step, hence the run.
    result = materialize_day(
        base_url, database, DAY, raise_on_error=False, quality_policy=QualityPolicy(max_duplicate_rate=0.1)
    )
    assert not result.success
    evaluations = check_results(result)

    for entity in ("users", "tracks", "listen_history"):
        served = scalar(database, f"SELECT count(*) FROM raw.{entity} WHERE snapshot_date = ?", [DAY])
        rejected = scalar(database, "SELECT count(*) FROM quality.rejected_records WHERE entity = ?", [entity])
        metadata = result.asset_materializations_for_node(f"core__{entity}")[0].metadata
        accepted = metadata["records_accepted"].value
        assert served == expected[entity]["served"] == metadata["records_served"].value
        assert rejected == metadata["records_rejected"].value > 0
        assert accepted + rejected == served, entity  # nothing lost

    for entity in ("users", "tracks"):
        counts = expected[entity]
        reasons = rejected_by_reason(database, entity)
        # Exact copies of a faulty record carry its fault and are rejected for it, not as duplicates.
        assert scalar(database, f"SELECT count(*) FROM core.{entity}") == (
            counts["base_records"] - counts["nulls"] - counts["bad_timestamps"]
        )
        assert 0 < reasons["duplicate_id"] <= counts["duplicates"]
        assert reasons["null_field"] >= counts["nulls"] > 0
        assert reasons["unparseable_timestamp"] >= counts["bad_timestamps"] > 0

        assert not evaluations[(f"core/{entity}", "no_duplicate_ids")].passed
        assert evaluations[(f"core/{entity}", "no_duplicate_ids")].severity == dg.AssetCheckSeverity.WARN
        assert not evaluations[(f"core/{entity}", "required_fields_present")].passed
        assert not evaluations[(f"core/{entity}", "values_typed")].passed
        assert evaluations[(f"core/{entity}", "fields_match_contract")].passed

    history = expected["listen_history"]
    assert history["orphans"] > 0
    orphans = evaluations[("core/listen_history", "no_orphan_user_ids")]
    assert not orphans.passed and orphans.severity == dg.AssetCheckSeverity.ERROR
    assert orphans.metadata["count"].value > 0
    assert not evaluations[("core/listen_history", "no_orphan_track_ids")].passed
    assert not evaluations[("core/listen_history", "required_fields_present")].passed

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

    duplicates = evaluations[("core/users", "no_duplicate_ids")]
    assert not duplicates.passed and duplicates.severity == dg.AssetCheckSeverity.ERROR
    assert duplicates.metadata["count"].value == expected["users"]["duplicates"]
    assert duplicates.metadata["duplicates_left_in_core"].value == 0
    assert scalar(database, "SELECT count(*) FROM core.users") == expected["users"]["base_records"]
    # The listen_history checks read core.users: they do not run on blocked data.
    assert ("core/listen_history", "no_orphan_user_ids") not in evaluations


def test_renamed_and_extra_fields_are_reported(emulator, database):
    base_url = emulator(rename_fields=("users.email=mail",), extra_fields=("tracks.mood=happy",))
    # Every user is rejected, so every listen is an orphan: a blocking failure, as it should be.
    result = materialize_day(base_url, database, DAY, raise_on_error=False)
    evaluations = check_results(result)

    users_fields = evaluations[("core/users", "fields_match_contract")]
    assert not users_fields.passed
    assert users_fields.metadata["fields_missing"].value == {"email": 1155}
    assert users_fields.metadata["fields_added"].value == {"mail": 1155}
    assert rejected_by_reason(database, "users") == {"missing_field": 1155}

    tracks_fields = evaluations[("core/tracks", "fields_match_contract")]
    assert not tracks_fields.passed
    assert tracks_fields.metadata["fields_added"].value == {"mood": 1062}
    assert scalar(database, "SELECT count(*) FROM core.tracks") == 1062
    assert scalar(database, "SELECT count(*) FROM raw.tracks WHERE record->>'mood' = 'happy'") == 1062


def test_core_rebuilds_itself_after_a_raw_snapshot_lands(emulator_url, database):
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(
        assets=[*raw_snapshot_assets, *core_assets],
        asset_checks=core_checks,
        resources=resources(emulator_url, database),
    )
    # The sensor's first tick only records the state; it ticks again after the snapshot lands.
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0
    dg.materialize(
        raw_snapshot_assets, partition_key=DAY, resources=resources(emulator_url, database), instance=instance
    )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    for entity in ("users", "tracks", "listen_history"):
        assert result.get_num_requested(dg.AssetKey(["core", entity])) == 1
    assert result.total_requested == 3
    # Once core is rebuilt, nothing more is asked for.
    dg.materialize(core_assets, resources=resources(emulator_url, database), instance=instance)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0


def test_core_before_any_snapshot_fails_saying_what_to_do(tmp_path):
    result = dg.materialize(
        core_assets, resources=resources("http://127.0.0.1:9", tmp_path / "warehouse.duckdb"), raise_on_error=False
    )
    messages = {event.step_key: event.event_specific_data.error.message for event in result.get_step_failure_events()}
    for entity in ("users", "tracks", "listen_history"):
        assert f"raw.{entity} holds no snapshot yet: materialize a raw partition first." in messages[f"core__{entity}"]
