"""ml/serving_snapshot on real ingested data and a real model: the service answers exactly what the
warehouse holds, nothing is published before the recommendations' checks passed, the automation
sensor publishes after them, and a rollback reaches the app."""

import shutil
import subprocess
import sys
import textwrap

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import requests

from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ml import recommenders
from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations
from moovitamix_assets.ml.checks import ml_checks, user_recommendations_quality
from moovitamix_assets.ml.registry import ModelStore
from moovitamix_assets.ml.rollback import rollback_champion
from moovitamix_assets.ml.serving import GENRE_REASON_PREFIX, POPULAR_REASON, serving_snapshot
from moovitamix_assets_tests.ml_tests.test_ml_assets import DAY, model_metadata, train
from moovitamix_assets_tests.ml_tests.test_rollback import rollback_config
from moovitamix_assets_tests.pipeline import materialize_day, materialized, query, resources, scalar
from moovitamix_assets_tests.serving_tests.test_service import POLL, wait_for_version
from moovitamix_serving import files
from moovitamix_serving.server import serve_in_thread

SERVING = dg.AssetKey(["ml", "serving_snapshot"])
RECOMMENDATIONS = dg.AssetKey(["ml", "user_recommendations"])


def publish_snapshot(base_url, database, instance=None, raise_on_error=True):
    return dg.materialize(
        [serving_snapshot], resources=resources(base_url, database), instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )  # fmt: skip


def recompute_recommendations(base_url, database, instance, with_checks=True):
    """What the automation sensor launches for ml/user_recommendations: the asset with its checks."""
    return dg.materialize(
        [user_recommendations, user_recommendations_quality] if with_checks else [user_recommendations],
        resources=resources(base_url, database), instance=instance,
    )  # fmt: skip


def failure_message(result) -> str:
    (failure,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.event_specific_data.error.message


@pytest.fixture(scope="module")
def published(tmp_path_factory, emulator_url):
    """One realistic day, a model and its recommendations with their checks, published."""
    database = tmp_path_factory.mktemp("serving") / "warehouse.duckdb"
    materialize_day(emulator_url, database, DAY)
    train(emulator_url, database)
    result = publish_snapshot(emulator_url, database)
    return database, database.parent / "serving", materialized(result)["ml/serving_snapshot"]


def expected_from_warehouse(database, user_id: int) -> dict:
    """A known user's answer, read from DuckDB with SQL of its own."""
    rows = query(
        database,
        """
        SELECT r.rank, r.track_id, t.name, t.artist, t.genre, r.score, r.source, u.favorite_genre,
               r.model_version, r.snapshot_date, r.generated_at
        FROM ml.user_recommendations r JOIN core.tracks t USING (track_id) JOIN core.users u USING (user_id)
        WHERE r.user_id = ? ORDER BY r.rank
        """,
        [user_id],
    )
    reason = {
        "model": lambda genre, favourite: None,
        "genre_fallback": lambda genre, favourite: GENRE_REASON_PREFIX + genre if genre == favourite else POPULAR_REASON,
        "popularity_fallback": lambda genre, favourite: POPULAR_REASON,
    }
    return {
        "user_id": user_id,
        "model_version": rows[0][8],
        "snapshot_date": rows[0][9].isoformat(),
        "generated_at": rows[0][10].isoformat(timespec="microseconds") + "Z",
        "source": rows[0][6],
        "recommendations": [
            {"rank": rank, "track_id": track_id, "name": name, "artist": artist, "genre": genre,
             "score": round(float(np.float32(score)), 6), "reason": reason[source](genre, favourite)}
            for rank, track_id, name, artist, genre, score, source, favourite, *_ in rows
        ],
    }  # fmt: skip


def test_the_service_answers_what_the_warehouse_holds(published):
    database, serving_path, metadata = published
    users = scalar(database, "SELECT count(*) FROM core.users")
    assert users == 1155
    assert metadata["users"] == users and metadata["dagster/row_count"] == 11550 == scalar(database, "SELECT count(*) FROM ml.user_recommendations")
    assert metadata["model_version"] == scalar(database, "SELECT version FROM ml.model_registry WHERE status = 'champion'")
    assert metadata["snapshot_date"] == DAY and metadata["previous_serving_version"] == "none"
    assert metadata["cold_start_genres"] == scalar(database, "SELECT count(DISTINCT genre) FROM core.tracks") == 17
    version = metadata["serving_version"]
    assert files.read_manifest(serving_path)["current"] == version

    by_source = dict(query(database, "SELECT source, min(user_id) FROM ml.user_recommendations GROUP BY source"))
    assert set(by_source) == {"model", "genre_fallback"}  # users without listens fall back to their genre
    sample = [*by_source.values(), *(user for (user,) in query(database, "SELECT user_id FROM core.users USING SAMPLE 25 ROWS (reservoir, 7)"))]
    with serve_in_thread(serving_path, poll_seconds=POLL) as (base_url, _):
        for user_id in sample:
            body = requests.get(f"{base_url}/users/{user_id}/recommendations", timeout=5).json()
            assert body.pop("serving_version") == version
            assert body == expected_from_warehouse(database, user_id), user_id

        # A user the snapshot does not know gets what the champion gives a newcomer declaring that genre.
        (artefact,) = query(database, "SELECT artefact_path FROM ml.model_registry WHERE status = 'champion'")[0]
        model = ModelStore.load(artefact)
        newcomer = 10**9
        for genre, source in (("Jazz", "genre_fallback"), (None, "popularity_fallback")):
            body = requests.get(
                f"{base_url}/users/{newcomer}/recommendations", params={"k": 100, **({"favorite_genre": genre} if genre else {})}, timeout=5
            ).json()  # fmt: skip
            independent = recommenders.recommend(
                model, pd.DataFrame({"user_id": [], "track_id": []}, dtype="int64"), [newcomer], 100,
                users=pd.DataFrame({"user_id": [newcomer], "favorite_genre": [genre]}),
            )  # fmt: skip
            assert body["source"] == source == independent["source"].iloc[0]
            assert [item["track_id"] for item in body["recommendations"]] == independent["track_id"].tolist()
            assert len(body["recommendations"]) == 100
            if genre:
                in_genre = [item for item in body["recommendations"] if item["genre"] == genre]
                assert body["recommendations"][: len(in_genre)] == in_genre  # the genre's tracks first
                assert {item["reason"] for item in in_genre} == {GENRE_REASON_PREFIX + genre}
            else:
                assert {item["reason"] for item in body["recommendations"]} == {POPULAR_REASON}


def test_the_service_never_imports_duckdb_nor_the_code_location():
    """It must not open the warehouse a run may be writing: it cannot even import what would."""
    script = textwrap.dedent("""
        import sys
        import moovitamix_serving.cli, moovitamix_serving.app, moovitamix_serving.server
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("duckdb", "dagster", "moovitamix_assets", "pandas")))
    """)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_lists_whose_checks_did_not_run_or_failed_are_not_published(published, emulator_url, tmp_path):
    source, serving_path, _ = published
    database = tmp_path / "warehouse.duckdb"
    shutil.copy(source, database)
    instance = dg.DagsterInstance.ephemeral()

    recompute_recommendations(emulator_url, database, instance, with_checks=False)
    result = publish_snapshot(emulator_url, database, instance, raise_on_error=False)
    assert not result.success
    assert (
        "are not published: their checks every_user_has_k_recommendations not run, no_listened_track_recommended not run, "
        "only_known_tracks_recommended not run." in failure_message(result)
    )

    # One user loses a recommendation: every_user_has_k_recommendations fails, the others pass.
    with duckdb.connect(str(database)) as connection:
        connection.execute("DELETE FROM ml.user_recommendations WHERE user_id = (SELECT min(user_id) FROM core.users) AND rank = 10")
    dg.materialize(
        [user_recommendations, user_recommendations_quality], selection=dg.AssetSelection.checks_for_assets(user_recommendations),
        resources=resources(emulator_url, database), instance=instance,
    )  # fmt: skip
    result = publish_snapshot(emulator_url, database, instance, raise_on_error=False)
    assert not result.success
    assert "their checks every_user_has_k_recommendations failed." in failure_message(result)
    assert not (tmp_path / "serving").exists()  # nothing was written

    recompute_recommendations(emulator_url, database, instance)
    assert publish_snapshot(emulator_url, database, instance).success
    assert files.read_manifest(tmp_path / "serving")["versions"][0]["users"] == 1155


def automation(emulator_url, database):
    return dg.Definitions(
        assets=[*raw_snapshot_assets, *core_assets, training_set, recommender_model, user_recommendations, serving_snapshot],
        asset_checks=ml_checks,
        resources=resources(emulator_url, database),
    )


def test_the_automation_sensor_publishes_once_the_checks_passed(emulator_url, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    materialize_day(emulator_url, database, DAY, instance=instance)
    defs = automation(emulator_url, database)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the sensor's first tick
    assert tick.get_num_requested(SERVING) == 0

    train(emulator_url, database, instance=instance)  # recommendations and their checks, passed
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(SERVING) == 1
    publish_snapshot(emulator_url, database, instance)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(SERVING) == 0  # published: nothing new

    # New lists whose checks have not run yet, then fail: held.
    recompute_recommendations(emulator_url, database, instance, with_checks=False)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(SERVING) == 0
    with duckdb.connect(str(database)) as connection:
        connection.execute("UPDATE ml.user_recommendations SET track_id = -1 WHERE rank = 1 AND user_id = (SELECT min(user_id) FROM core.users)")
    dg.materialize(
        [user_recommendations, user_recommendations_quality], selection=dg.AssetSelection.checks_for_assets(user_recommendations),
        resources=resources(emulator_url, database), instance=instance,
    )  # fmt: skip
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(SERVING) == 0

    # Recomputed with its checks passing: published on the next tick.
    recompute_recommendations(emulator_url, database, instance)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert tick.get_num_requested(SERVING) == 1


def test_a_rollback_reaches_the_app(emulator_url, tmp_path):
    """Champion A is served. Rolling back to B: the automation recomputes and republishes, and the
    service swaps to B's lists. Rolling back to A again: A's kept version is served at once."""
    database = tmp_path / "warehouse.duckdb"
    serving_path = tmp_path / "serving"
    instance = dg.DagsterInstance.ephemeral()
    materialize_day(emulator_url, database, DAY, instance=instance)
    first = model_metadata(train(emulator_url, database, instance=instance))
    second = model_metadata(train(emulator_url, database, instance=instance))
    champion, other = first["challenger_version"], second["challenger_version"]
    assert first["promoted"] and not second["promoted"]
    defs = automation(emulator_url, database)
    published_by_champion = materialized(publish_snapshot(emulator_url, database, instance))["ml/serving_snapshot"]["serving_version"]
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    with serve_in_thread(serving_path, poll_seconds=POLL) as (base_url, _):
        user_id = scalar(database, "SELECT min(user_id) FROM core.users")
        assert requests.get(f"{base_url}/users/{user_id}/recommendations").json()["model_version"] == champion

        result = rollback_champion.execute_in_process(
            run_config=rollback_config(other, "the champion misbehaves"), resources=resources(emulator_url, database), instance=instance,
        )  # fmt: skip
        assert result.success
        assert files.read_manifest(serving_path)["current"] == published_by_champion  # nothing of B's to serve yet

        # The automation sensor's next ticks: the recommendations, then their publication.
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_num_requested(RECOMMENDATIONS) == 1 and tick.get_num_requested(SERVING) == 0
        recompute_recommendations(emulator_url, database, instance)
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_num_requested(SERVING) == 1
        republished = materialized(publish_snapshot(emulator_url, database, instance))["ml/serving_snapshot"]
        assert republished["model_version"] == other and republished["previous_serving_version"] == published_by_champion

        health = wait_for_version(base_url, republished["serving_version"])
        assert health["model_version"] == other and health["status"] == "ok"
        assert requests.get(f"{base_url}/users/{user_id}/recommendations").json() == {
            "serving_version": republished["serving_version"], **expected_from_warehouse(database, user_id)
        }

        # Back to A: its version is still kept, so the app gets it without waiting for a run.
        result = rollback_champion.execute_in_process(
            run_config=rollback_config(champion, "B was worse"), resources=resources(emulator_url, database), instance=instance,
        )  # fmt: skip
        assert result.success
        health = wait_for_version(base_url, published_by_champion)
        assert health["model_version"] == champion
        assert requests.get(f"{base_url}/users/{user_id}/recommendations").json()["model_version"] == champion
