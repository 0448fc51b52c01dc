"""The ML assets on real ingested data: promotion, non-promotion, baselines as yardsticks, checks, drift."""

import json

import dagster as dg
import duckdb
import pytest
import requests

from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations
from moovitamix_assets.ml.checks import (
    check_every_user_has_k,
    check_no_history_recommended,
    check_only_known_tracks,
    ml_checks,
)
from moovitamix_assets.ml.registry import rollback_to
from moovitamix_assets.ml.sensors import DriftPolicy, recommender_drift_sensor
from moovitamix_assets.resources.warehouse import WarehouseResource
from moovitamix_assets_tests.pipeline import check_results, materialize_day, query, resources, scalar

DAY = "2026-11-01"
ML_ASSETS = [training_set, recommender_model, user_recommendations, *ml_checks]


def train(base_url, database, instance=None):
    return dg.materialize(
        ML_ASSETS, resources=resources(base_url, database), instance=instance or dg.DagsterInstance.ephemeral()
    )


def model_metadata(result):
    return {key: value.value for key, value in result.asset_materializations_for_node("ml__recommender_model")[0].metadata.items()}


@pytest.fixture(scope="module")
def realistic(tmp_path_factory, emulator_url):
    """One realistic day ingested and a model trained on it, shared by the read-only tests."""
    database = tmp_path_factory.mktemp("realistic") / "warehouse.duckdb"
    materialize_day(emulator_url, database, DAY)
    result = train(emulator_url, database)
    return database, result


def test_on_realistic_data_the_champion_beats_both_baselines(realistic):
    database, result = realistic
    metadata = model_metadata(result)
    print("\n" + metadata["metrics"])
    assert metadata["promoted"] is True
    assert metadata["algorithm"] == "ease"
    # A clear margin over both yardsticks, on NDCG@10 and recall@10.
    assert metadata["ndcg_at_k"] > 1.15 * metadata["genre_popularity_ndcg_at_k"]
    assert metadata["ndcg_at_k"] > 3 * metadata["popularity_ndcg_at_k"]
    baselines = json.loads(query(database, "SELECT baseline_metrics FROM ml.model_registry")[0][0])
    for baseline in ("popularity", "genre_popularity"):
        assert metadata["recall_at_k"] > 1.2 * baselines[baseline]["recall_at_k"]
    registry = query(database, "SELECT status, algorithm, metrics FROM ml.model_registry")
    assert [(status, algorithm) for status, algorithm, _ in registry] == [("champion", "ease")]
    metrics = json.loads(registry[0][2])
    assert metrics["recall_at_k"] > 0 and metrics["catalogue_coverage"] > 0


def test_every_user_gets_k_recommendations_outside_their_history(realistic):
    database, result = realistic
    assert scalar(database, "SELECT count(DISTINCT user_id) FROM ml.user_recommendations") == scalar(
        database, "SELECT count(*) FROM core.users"
    )
    assert query(database, "SELECT DISTINCT count(*) FROM ml.user_recommendations GROUP BY user_id") == [(10,)]
    assert scalar(
        database,
        "SELECT count(*) FROM ml.user_recommendations r SEMI JOIN core.listen_history l "
        "ON l.user_id = r.user_id AND l.track_id = r.track_id",
    ) == 0
    evaluations = check_results(result)
    assert all(evaluation.passed for evaluation in evaluations.values()), evaluations
    assert len(evaluations) == 4


def test_users_without_listens_get_their_genres_most_popular(realistic):
    database, _ = realistic
    silent = query(
        database,
        "SELECT u.user_id, u.favorite_genre FROM core.users u ANTI JOIN core.listen_history l USING (user_id) LIMIT 5",
    )
    assert silent, "the emulator's world has users who never listened"
    for user_id, genre in silent:
        sources = query(database, "SELECT DISTINCT source FROM ml.user_recommendations WHERE user_id = ?", [user_id])
        assert sources == [("genre_fallback",)]
        genres = query(
            database,
            "SELECT DISTINCT t.genre FROM ml.user_recommendations r JOIN core.tracks t USING (track_id) WHERE r.user_id = ?",
            [user_id],
        )
        assert genres == [(genre,)]


def test_a_challenger_no_better_than_the_champion_is_not_promoted(emulator_url, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    materialize_day(emulator_url, database, DAY)
    first = model_metadata(train(emulator_url, database))
    second = model_metadata(train(emulator_url, database))
    assert first["promoted"] is True and second["promoted"] is False
    assert "does not beat the champion" in second["decision"]
    assert second["champion_version"] == first["challenger_version"]
    assert query(database, "SELECT status FROM ml.model_registry ORDER BY trained_at") == [("champion",), ("rejected",)]

    # Rolling back to a rejected model's artefact is possible, and recorded.
    with duckdb.connect(str(database)) as connection:
        rollback_to(connection, second["challenger_version"], "test")
    assert query(database, "SELECT version FROM ml.model_registry WHERE status = 'champion'") == [
        (second["challenger_version"],)
    ]
    assert scalar(database, "SELECT count(*) FROM ml.champion_history") == 2


def test_on_upstream_random_data_nothing_beats_popularity(emulator, tmp_path):
    base_url = emulator(profile="upstream")
    database = tmp_path / "warehouse.duckdb"
    # Upstream data is flat and random, and some updated_at come before created_at: a report
    # (WARN), nothing that blocks, so core is published and the models train on it.
    assert materialize_day(base_url, database, DAY).success
    result = train(base_url, database)
    metadata = model_metadata(result)
    print("\n" + metadata["metrics"])
    assert metadata["promoted"] is False
    assert "does not beat popularity" in metadata["decision"]
    champion = query(database, "SELECT algorithm, reason FROM ml.model_registry WHERE status = 'champion'")
    assert len(champion) == 1 and champion[0][0] in ("popularity", "genre_popularity")
    assert "no learned model beats popularity" in champion[0][1]
    assert scalar(database, "SELECT count(DISTINCT user_id) FROM ml.user_recommendations") == scalar(
        database, "SELECT count(*) FROM core.users"
    )


def test_recommendation_checks_fail_on_planted_bad_rows(emulator_url, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    materialize_day(emulator_url, database, DAY)
    train(emulator_url, database)
    with duckdb.connect(str(database)) as connection:
        user_id, track_id = connection.execute("SELECT user_id, track_id FROM core.listen_history LIMIT 1").fetchone()
        connection.execute(
            "UPDATE ml.user_recommendations SET track_id = ? WHERE user_id = ? AND rank = 1", [track_id, user_id]
        )
        connection.execute("UPDATE ml.user_recommendations SET track_id = 999999999 WHERE user_id = ? AND rank = 2", [user_id])
        connection.execute("DELETE FROM ml.user_recommendations WHERE user_id = (SELECT max(user_id) FROM core.users)")
        history = check_no_history_recommended(connection)
        unknown = check_only_known_tracks(connection)
        per_user = check_every_user_has_k(connection, 10)
    assert not history.passed and history.metadata["sample_user_ids"].value == [user_id]
    assert not unknown.passed and unknown.metadata["sample_track_ids"].value == [999999999]
    assert not per_user.passed and per_user.metadata["users_wrong"].value == 1


def test_drift_sensor_fires_once_on_drifted_data_and_not_on_unchanged_data(emulator, tmp_path):
    base_url = emulator()
    database = tmp_path / "warehouse.duckdb"
    materialize_day(base_url, database, DAY)
    warehouse = WarehouseResource(database=str(database))
    policy = DriftPolicy()

    def evaluate(cursor=None):
        context = dg.build_sensor_context(cursor=cursor, resources={"warehouse": warehouse, "drift_policy": policy})
        return recommender_drift_sensor(context)

    first = evaluate()
    assert isinstance(first, dg.SensorResult)  # nothing trained yet
    assert "no model has been trained yet" in first.run_requests[0].tags["moovitamix/drift_reasons"]

    train(base_url, database)
    unchanged = evaluate(first.cursor)
    assert isinstance(unchanged, dg.SkipReason) and unchanged.skip_message.startswith("no drift")

    # Three weeks later: over 20% more listens.
    requests.post(f"{base_url}/_admin/state", json={"as_of": "2026-11-22"}, timeout=10).raise_for_status()
    materialize_day(base_url, database, "2026-11-22")
    drifted = evaluate(first.cursor)
    assert isinstance(drifted, dg.SensorResult)
    reasons = drifted.run_requests[0].tags["moovitamix/drift_reasons"]
    assert "more listens than model" in reasons
    again = evaluate(drifted.cursor)
    assert isinstance(again, dg.SkipReason) and "already requested" in again.skip_message


def test_recommendations_follow_each_core_update_but_training_waits(emulator_url, tmp_path):
    from moovitamix_assets.core.assets import core_assets
    from moovitamix_assets.ingestion.assets import raw_snapshot_assets

    database = tmp_path / "warehouse.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(
        assets=[*raw_snapshot_assets, *core_assets, training_set, recommender_model, user_recommendations],
        asset_checks=ml_checks,
        resources=resources(emulator_url, database),
    )
    materialize_day(emulator_url, database, DAY, instance=instance)
    train(emulator_url, database, instance=instance)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    # The next day's core rebuild, with its checks, as the daily job runs it.
    dg.materialize(core_assets, resources=resources(emulator_url, database), instance=instance)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(dg.AssetKey(["ml", "user_recommendations"])) == 1
    assert result.get_num_requested(dg.AssetKey(["ml", "recommender_model"])) == 0
    assert result.get_num_requested(dg.AssetKey(["ml", "training_set"])) == 0
