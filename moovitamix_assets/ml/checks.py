"""Checks on the recommender: a champion no worse than popularity, sound top-k lists for every user."""

from typing import Iterator

import dagster as dg
import duckdb

from moovitamix_assets.constants import ML
from moovitamix_assets.contract import LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.core.checks import first_values
from moovitamix_assets.ml.assets import USER_RECOMMENDATIONS, RecommendationsConfig
from moovitamix_assets.ml.promotion import PROMOTION_METRIC
from moovitamix_assets.ml.registry import current_champion
from moovitamix_assets.monitoring.metrics import record_check_results
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    core_table,
)

RECOMMENDATIONS_KEY = dg.AssetKey([ML, "user_recommendations"])
MODEL_KEY = dg.AssetKey([ML, "recommender_model"])


def check_every_user_has_k(connection: duckdb.DuckDBPyConnection, k: int) -> dg.AssetCheckResult:
    """Each user of core.users has k rows, or every catalogue track they have not heard if fewer."""
    expected = f"""
        WITH catalogue AS (
            SELECT c.track_id FROM ml.model_catalogue c
            JOIN (SELECT DISTINCT model_version FROM {USER_RECOMMENDATIONS}) r ON r.model_version = c.version
        ),
        heard AS (
            SELECT DISTINCT user_id, track_id FROM {core_table(LISTEN_HISTORY)} SEMI JOIN catalogue USING (track_id)
        ),
        expected AS (
            SELECT u.user_id,
                   least({int(k)}, (SELECT count(*) FROM catalogue) - count(h.track_id)) AS expected_rows
            FROM {core_table(USERS)} u LEFT JOIN heard h USING (user_id) GROUP BY u.user_id
        ),
        actual AS (SELECT user_id, count(*) AS rows, count(DISTINCT rank) AS ranks FROM {USER_RECOMMENDATIONS} GROUP BY 1)
        SELECT e.user_id FROM expected e LEFT JOIN actual a USING (user_id)
        WHERE coalesce(a.rows, 0) <> e.expected_rows OR coalesce(a.ranks, 0) <> coalesce(a.rows, 0)
    """
    (wrong,) = connection.execute(f"SELECT count(*) FROM ({expected})").fetchone()
    (users,) = connection.execute(f"SELECT count(*) FROM {core_table(USERS)}").fetchone()
    return dg.AssetCheckResult(
        check_name="every_user_has_k_recommendations",
        asset_key=RECOMMENDATIONS_KEY,
        passed=wrong == 0,
        metadata={"users_wrong": wrong, "users": users, "k": k, "sample_user_ids": first_values(connection, f"{expected} ORDER BY 1")},
    )


def check_no_history_recommended(connection: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    offending = f"""
        SELECT DISTINCT r.user_id FROM {USER_RECOMMENDATIONS} r
        SEMI JOIN {core_table(LISTEN_HISTORY)} l ON l.user_id = r.user_id AND l.track_id = r.track_id
    """
    (count,) = connection.execute(f"SELECT count(*) FROM ({offending})").fetchone()
    return dg.AssetCheckResult(
        check_name="no_listened_track_recommended",
        asset_key=RECOMMENDATIONS_KEY,
        passed=count == 0,
        metadata={"users_affected": count, "sample_user_ids": first_values(connection, f"{offending} ORDER BY 1")},
    )


def check_only_known_tracks(connection: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    offending = f"""
        SELECT DISTINCT r.track_id FROM {USER_RECOMMENDATIONS} r
        ANTI JOIN {core_table(TRACKS)} t ON t.track_id = r.track_id
    """
    (count,) = connection.execute(f"SELECT count(*) FROM ({offending})").fetchone()
    return dg.AssetCheckResult(
        check_name="only_known_tracks_recommended",
        asset_key=RECOMMENDATIONS_KEY,
        passed=count == 0,
        metadata={"unknown_tracks": count, "sample_track_ids": first_values(connection, f"{offending} ORDER BY 1")},
    )


@dg.multi_asset_check(
    name="user_recommendations_quality",
    specs=[
        dg.AssetCheckSpec("every_user_has_k_recommendations", asset=RECOMMENDATIONS_KEY,
                          description="Every user has k recommendations, or all the unheard catalogue if smaller."),
        dg.AssetCheckSpec("no_listened_track_recommended", asset=RECOMMENDATIONS_KEY,
                          description="No user is recommended a track already in their history."),
        dg.AssetCheckSpec("only_known_tracks_recommended", asset=RECOMMENDATIONS_KEY,
                          description="Every recommended track is in core.tracks."),
    ],
    pool=DUCKDB_POOL,
)
def user_recommendations_quality(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, config: RecommendationsConfig
) -> Iterator[dg.AssetCheckResult]:
    with warehouse.get_connection() as connection:
        results = [
            check_every_user_has_k(connection, config.k),
            check_no_history_recommended(connection),
            check_only_known_tracks(connection),
        ]
        yield from record_check_results(connection, context.run.run_id, results)


def check_champion_beats_popularity(connection: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    champion = current_champion(connection)
    if champion is None:
        return dg.AssetCheckResult(
            check_name="champion_beats_popularity", asset_key=MODEL_KEY, passed=False,
            metadata={"reason": "no champion"},
        )
    popularity = champion.baseline_metrics.get("popularity", {}).get(PROMOTION_METRIC, 0.0)
    score = champion.metrics[PROMOTION_METRIC]
    return dg.AssetCheckResult(
        check_name="champion_beats_popularity",
        asset_key=MODEL_KEY,
        # A baseline serving as champion ties with popularity at best: "no worse" is the bar.
        passed=score >= popularity,
        metadata={
            "champion_version": champion.version,
            "algorithm": champion.algorithm,
            "champion_ndcg_at_k": score,
            "popularity_ndcg_at_k": popularity,
        },
    )


@dg.asset_check(
    asset=MODEL_KEY,
    name="champion_beats_popularity",
    blocking=True,
    pool=DUCKDB_POOL,
    description="The serving model's NDCG@k is no worse than popularity's on its test data; blocks the recommendations.",
)
def champion_beats_popularity(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    with warehouse.get_connection() as connection:
        (result,) = record_check_results(
            connection, context.run.run_id, [check_champion_beats_popularity(connection)]
        )
    return result


ml_checks = [user_recommendations_quality, champion_beats_popularity]
