"""Rolling back to an earlier champion: the job, its record, its refusal, and the recommendations that follow."""

import dagster as dg
import pytest

from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations
from moovitamix_assets.ml.checks import ml_checks
from moovitamix_assets.ml.rollback import rollback_champion
from moovitamix_assets_tests.ml_tests.test_ml_assets import DAY, model_metadata, train
from moovitamix_assets_tests.pipeline import materialize_day, query, resources

RECOMMENDATIONS = dg.AssetKey(["ml", "user_recommendations"])


def rollback_config(version: str, reason: str) -> dict:
    return {"ops": {"rollback_to_version": {"config": {"version": version, "reason": reason}}}}


@pytest.fixture
def trained_twice(emulator_url, tmp_path):
    """A warehouse whose registry holds a champion and a rejected challenger, on one instance."""
    database = tmp_path / "warehouse.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    materialize_day(emulator_url, database, DAY, instance=instance)
    first = model_metadata(train(emulator_url, database, instance=instance))
    second = model_metadata(train(emulator_url, database, instance=instance))
    assert first["promoted"] is True and second["promoted"] is False
    return database, instance, first["challenger_version"], second["challenger_version"]


def test_rollback_crowns_the_version_records_it_and_recommendations_follow(emulator_url, trained_twice):
    database, instance, champion, other = trained_twice
    defs = dg.Definitions(
        assets=[*raw_snapshot_assets, *core_assets, training_set, recommender_model, user_recommendations],
        asset_checks=ml_checks,
        resources=resources(emulator_url, database),
    )
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.get_num_requested(RECOMMENDATIONS) == 0

    result = rollback_champion.execute_in_process(
        run_config=rollback_config(other, "the new champion misbehaves in production"),
        resources=resources(emulator_url, database),
        instance=instance,
    )

    assert result.success
    assert query(database, "SELECT version FROM ml.model_registry WHERE status = 'champion'") == [(other,)]
    assert query(database, "SELECT status FROM ml.model_registry WHERE version = ?", [champion]) == [("retired",)]
    assert query(database, "SELECT version, previous, reason FROM ml.champion_history ORDER BY promoted_at DESC LIMIT 1") == [
        (other, champion, "rollback: the new champion misbehaves in production")
    ]
    (materialization,) = [
        event.event_specific_data.materialization
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    ]
    assert materialization.asset_key == dg.AssetKey(["ml", "recommender_model"])
    assert materialization.metadata["champion_version"].value == other
    assert materialization.metadata["previous_champion_version"].value == champion

    # The automation sensor's next tick recomputes the recommendations with the restored champion.
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(RECOMMENDATIONS) == 1


def test_rollback_to_an_unknown_or_current_version_fails_clearly(emulator_url, trained_twice):
    database, instance, champion, _ = trained_twice
    for version, message in (("no-such-version", "no model version 'no-such-version' in ml.model_registry"),
                             (champion, "is already the champion")):  # fmt: skip
        result = rollback_champion.execute_in_process(
            run_config=rollback_config(version, "test"),
            resources=resources(emulator_url, database),
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        (failure,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
        assert f"Rollback to {version!r} refused" in failure.event_specific_data.error.message
        assert message in failure.event_specific_data.error.message
    assert query(database, "SELECT version FROM ml.model_registry WHERE status = 'champion'") == [(champion,)]
