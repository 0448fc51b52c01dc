"""The serving snapshot: the recommendations published as files the recommendations service reads.

The service (`moovitamix_serving`, its own process) never opens the DuckDB file, which a run
may be writing: this asset, inside a run, writes an immutable version of the lists, with
the track fields the app shows and the cold-start lists, and points the manifest at it.
The format is `moovitamix_serving.files` (numpy only), shared by the writer and the reader.
"""

import os
import time
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from moovitamix_assets.constants import ML
from moovitamix_assets.contract import TRACKS
from moovitamix_assets.ml import recommenders
from moovitamix_assets.ml.assets import USER_RECOMMENDATIONS, user_recommendations
from moovitamix_assets.ml.checks import RECOMMENDATIONS_KEY, user_recommendations_quality
from moovitamix_assets.ml.registry import ModelStore, get_entry
from moovitamix_assets.monitoring.metrics import CHECK_RESULTS, recorded_result
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    WarehouseResource,
    core_table,
    run_sql_file,
    table_exists,
    utc_now,
)
from moovitamix_serving import files

SQL = Path(__file__).parent / "sql"

KEEP_PREVIOUS_ENV = "MOOVITAMIX_SERVING_KEEP_PREVIOUS"
DEFAULT_KEEP_PREVIOUS = 3

POPULAR_REASON = "popular with all listeners"
GENRE_REASON_PREFIX = "popular in "

# Published after each recomputation of the recommendations, once all their checks passed.
# They are not blocking checks: in a run with the recommendations this asset could run before
# them, so it is never requested on the tick that requests the recommendations (eager alone
# would), only on a tick after their run, when their checks have passed.
SERVING_AUTOMATION = (
    dg.AutomationCondition.eager()
    & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).with_label(
        "no dep requested on this tick"
    )
    & dg.AutomationCondition.all_deps_match(
        dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(), blocking_only=False)
    ).with_label("all checks of the recommendations passed")
)


class ServingStore(dg.ConfigurableResource):
    """Where the serving snapshot is published, and how many earlier versions stay for rollback."""

    path: str = files.DEFAULT_SERVING_PATH
    keep_previous: int = DEFAULT_KEEP_PREVIOUS


def serving_store_from_env() -> ServingStore:
    return ServingStore(
        path=os.getenv(files.SERVING_PATH_ENV, files.DEFAULT_SERVING_PATH),
        keep_previous=int(os.getenv(KEEP_PREVIOUS_ENV, DEFAULT_KEEP_PREVIOUS)),
    )


RECOMMENDATION_CHECKS = sorted(spec.name for spec in user_recommendations_quality.check_specs)


def checks_not_passed(connection: duckdb.DuckDBPyConnection, generated_at) -> dict[str, str]:
    """The checks of ml/user_recommendations whose latest result on the current lists (recorded
    after they were generated) is not a pass: check name -> "failed" or "not run"."""
    latest = {}
    if table_exists(connection, CHECK_RESULTS):
        latest = dict(
            connection.execute(
                f"SELECT check_name, arg_max(passed, recorded_at) FROM {CHECK_RESULTS} "
                "WHERE asset = ? AND recorded_at >= ? GROUP BY check_name",
                [RECOMMENDATIONS_KEY.to_user_string(), generated_at],
            ).fetchall()
        )
    return {
        name: "not run" if name not in latest else "failed" for name in RECOMMENDATION_CHECKS if not latest.get(name)
    }


def cold_start_lists(
    model: recommenders.RecommenderModel, tracks: pd.DataFrame, reasons: pd.DataFrame
) -> dict:
    """The model's lists for a user it has never seen: one per genre of `tracks` (as a new
    user declaring it gets), and the global one. Rows are [track index, score, reason index]."""
    genres = sorted(reasons["genre"].dropna())
    newcomer_ids = -1 - np.arange(len(genres) + 1)  # ids no user has: the last declares no genre
    newcomers = pd.DataFrame({"user_id": newcomer_ids, "favorite_genre": [*genres, None]})
    no_listens = pd.DataFrame({"user_id": np.array([], dtype=np.int64), "track_id": np.array([], dtype=np.int64)})
    lists = recommenders.recommend(model, no_listens, newcomer_ids, files.MAX_K, users=newcomers)
    lists = lists.merge(tracks[["track_id", "track_index", "genre"]], on="track_id")  # tracks gone from core drop out
    reason_of_genre = dict(zip(reasons["genre"], reasons["reason_index"]))

    def coded(user_id: int, genre: Optional[str]) -> dict:
        rows = lists[lists["user_id"] == user_id].sort_values("rank")
        source = rows["source"].iloc[0] if len(rows) else "popularity_fallback"
        in_genre = (source == "genre_fallback") & (rows["genre"] == genre)
        reason_index = np.where(in_genre, rows["genre"].map(reason_of_genre).fillna(1), 1).astype(int)
        return {
            "source": source,
            "rows": [[int(t), float(s), int(r)] for t, s, r in zip(rows["track_index"], rows["score"], reason_index)],
        }

    return {
        "global": coded(newcomer_ids[-1], None),
        "genres": {genre: coded(user_id, genre) for user_id, genre in zip(newcomer_ids, genres)},
    }


def serving_content(connection: duckdb.DuckDBPyConnection, model_store: ModelStore) -> files.SnapshotContent:
    """ml.user_recommendations with core.tracks' fields and the cold-start lists of the model
    that made them, coded for the serving files."""
    ((model_version, versions, snapshot_date, generated_at, rows),) = connection.execute(
        f"SELECT any_value(model_version), count(DISTINCT model_version), any_value(snapshot_date), "
        f"max(generated_at), count(*) FROM {USER_RECOMMENDATIONS}"
    ).fetchall()
    if versions != 1:
        raise dg.Failure(f"{USER_RECOMMENDATIONS} holds {versions} model versions; exactly one can be served.")
    entry = get_entry(connection, model_version)
    if entry is None:
        raise dg.Failure(f"{model_version}, which made {USER_RECOMMENDATIONS}, is not in ml.model_registry.")

    run_sql_file(
        connection,
        SQL / "serving_rows.sql",
        {"sources": list(files.SOURCES), "popular_reason": POPULAR_REASON, "genre_reason_prefix": GENRE_REASON_PREFIX},
    )
    coded = connection.execute("SELECT user_id, source_index, track_index, score, reason_index FROM serving_rows").fetchnumpy()
    if len(coded["user_id"]) != rows:
        raise dg.Failure(f"{rows - len(coded['user_id'])} recommended tracks are not in {core_table(TRACKS)}.")
    tracks = connection.execute("SELECT track_index, track_id, name, artist, genre FROM serving_tracks ORDER BY track_index").df()
    reasons = connection.execute("SELECT reason_index, genre, reason FROM serving_reasons ORDER BY reason_index").df()

    row_users = np.asarray(coded["user_id"], dtype=np.int64)
    firsts = np.flatnonzero(np.r_[True, row_users[1:] != row_users[:-1]]) if len(row_users) else np.array([], dtype=np.int64)
    return files.SnapshotContent(
        model_version=model_version,
        snapshot_date=snapshot_date.isoformat(),
        generated_at=files.utc_timestamp(generated_at),
        user_ids=row_users[firsts],
        offsets=np.r_[firsts, len(row_users)],
        user_sources=np.asarray(coded["source_index"])[firsts],
        row_tracks=coded["track_index"],
        row_scores=coded["score"],
        row_reasons=coded["reason_index"],
        tracks=[[int(t), n, a, g] for t, n, a, g in tracks[["track_id", "name", "artist", "genre"]].itertuples(index=False)],
        reasons=[None if pd.isna(reason) else reason for reason in reasons["reason"]],
        cold_start=cold_start_lists(model_store.load(entry.artefact_path), tracks, reasons),
    )


@dg.asset(
    key=[ML, "serving_snapshot"],
    group_name=ML,
    # Also reads core.tracks (the fields the app shows) and core.users (favourite genres), which
    # ml/user_recommendations follows already: as deps, their own non-blocking checks would hold it.
    deps=[user_recommendations],
    pool=DUCKDB_POOL,
    kinds={"duckdb", "numpy"},
    automation_condition=SERVING_AUTOMATION,
)
def serving_snapshot(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    model_store: ModelStore,
    serving_store: ServingStore,
) -> dg.MaterializeResult:
    """Publishes the recommendations whose checks passed as a new version of the files the recommendations service reads."""
    started = time.monotonic()
    with warehouse.get_connection() as connection:
        if not table_exists(connection, USER_RECOMMENDATIONS):
            raise dg.Failure(f"No {USER_RECOMMENDATIONS} yet: materialize ml/user_recommendations first.")
        ((generated_at,),) = connection.execute(f"SELECT max(generated_at) FROM {USER_RECOMMENDATIONS}").fetchall()
        not_passed = checks_not_passed(connection, generated_at)
        if not_passed:
            raise dg.Failure(
                description=f"The recommendations generated at {generated_at} are not published: their checks "
                + ", ".join(f"{name} {outcome}" for name, outcome in not_passed.items())
                + ". Run the checks of ml/user_recommendations (or fix what they found) first.",
                metadata={"checks_not_passed": dg.MetadataValue.json(not_passed)},
            )
        content = serving_content(connection, model_store)
    published = files.publish(Path(serving_store.path), content, serving_store.keep_previous, utc_now())
    directory = files.version_directory(Path(serving_store.path), published.version)
    context.log.info(f"serving version {published.version} (model {content.model_version}) published in {directory}")
    return recorded_result(
        context,
        warehouse,
        {
            "serving_version": published.version,
            "previous_serving_version": published.previous or "none",
            "model_version": content.model_version,
            "snapshot_date": content.snapshot_date,
            "users": len(content.user_ids),
            "dagster/row_count": len(content.row_tracks),
            "cold_start_genres": len(content.cold_start["genres"]),
            "megabytes": round(sum(path.stat().st_size for path in directory.iterdir()) / 2**20, 3),
            "pruned_versions": len(published.pruned),
            "path": dg.MetadataValue.path(str(directory)),
            "seconds": round(time.monotonic() - started, 3),
        },
    )


def serve_kept_version_of(serving_store: ServingStore, model_version: str) -> Optional[str]:
    """Points the manifest at the newest kept version that `model_version` made, when one is
    kept and not already served; returns its name (None when there is none to point at)."""
    root = Path(serving_store.path)
    manifest = files.read_manifest(root)
    if manifest is None:
        return None
    made_by_it = [entry["version"] for entry in manifest["versions"] if entry["model_version"] == model_version]
    if not made_by_it or manifest["current"] == made_by_it[0]:
        return None
    files.make_current(root, made_by_it[0], utc_now())
    return made_by_it[0]
