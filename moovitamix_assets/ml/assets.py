"""ML assets: the training set, the recommender model (champion/challenger), top-k for every user."""

import time
from typing import Optional

import dagster as dg
import duckdb
import pandas as pd

from moovitamix_assets.constants import CORE, ML
from moovitamix_assets.contract import LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.ml import recommenders
from moovitamix_assets.ml.promotion import PROMOTION_METRIC, decide_promotion
from moovitamix_assets.ml.registry import (
    CHAMPION,
    REJECTED,
    ModelStore,
    RegistryEntry,
    current_champion,
    ensure_tables,
    new_version,
    record,
)
from moovitamix_assets.monitoring.metrics import recorded_result
from moovitamix_assets.resources.warehouse import DUCKDB_POOL, WarehouseResource, core_table, table_exists, utc_now

TRAINING_SET = "ml.training_set"
USER_RECOMMENDATIONS = "ml.user_recommendations"
PREVIOUS_USER_RECOMMENDATIONS = "ml.previous_user_recommendations"

# The descriptions the catalogue carries (docs/schema.md is generated from them); run after
# each CREATE OR REPLACE, which starts a table without comments.
TRAINING_SET_COMMENTS = f"""
COMMENT ON TABLE {TRAINING_SET} IS 'Listens of known users and tracks from the latest core snapshot, each on the train or test side of a seeded per-user hold-out.';
COMMENT ON COLUMN {TRAINING_SET}.user_id IS 'A user of core.users.';
COMMENT ON COLUMN {TRAINING_SET}.track_id IS 'A track of core.tracks.';
COMMENT ON COLUMN {TRAINING_SET}.position IS 'The listen''s position in the user''s history (1 the oldest).';
COMMENT ON COLUMN {TRAINING_SET}.side IS 'train or test: per user with at least min_user_listens distinct tracks, test_share of them held out with every listen of them.';
COMMENT ON COLUMN {TRAINING_SET}.snapshot_date IS 'The core snapshot the listens come from.';
"""
RECOMMENDATIONS_COMMENTS = """
COMMENT ON TABLE {table} IS '{what}: top-k tracks for every user of core.users from the champion; users with no listens get their favourite genre''s most popular.';
COMMENT ON COLUMN {table}.user_id IS 'A user of core.users.';
COMMENT ON COLUMN {table}.rank IS '1 the best; k rows per user, fewer when the catalogue has fewer unheard tracks.';
COMMENT ON COLUMN {table}.track_id IS 'A track of core.tracks the user has not listened to.';
COMMENT ON COLUMN {table}.score IS 'The model''s score (higher is better).';
COMMENT ON COLUMN {table}.source IS 'model, or for users the model cannot score genre_fallback (their favourite genre''s most popular) or popularity_fallback.';
COMMENT ON COLUMN {table}.model_version IS 'The champion of ml.model_registry that made the list.';
COMMENT ON COLUMN {table}.history_length IS 'Listens the user had when the list was made: the drift sensor''s new listens start after it.';
COMMENT ON COLUMN {table}.snapshot_date IS 'The core snapshot the list was made from.';
COMMENT ON COLUMN {table}.generated_at IS 'When the list was made (UTC).';
"""

BASELINES = ("popularity", "genre_popularity")

# Recommendations follow every rebuild of the core tables and every new champion, but never
# data whose blocking checks (duplicates, orphans, a champion worse than popularity) failed.
RECOMMENDATIONS_AUTOMATION = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
)


class TrainingSetConfig(dg.Config):
    test_share: float = 0.2
    seed: int = 42
    split_method: str = "random"  # or "time": each user's latest discoveries are held out
    min_user_listens: int = 2


class RecommenderConfig(dg.Config):
    algorithm: str = "auto"  # auto: EASE up to 20,000 tracks, ALS above
    k: int = 10
    min_relative_gain: float = 0.01
    # Hyper-parameters left unset take recommenders.ModelParams' defaults.
    ease_l2: Optional[float] = None
    als_factors: Optional[int] = None
    als_iterations: Optional[int] = None
    als_regularization: Optional[float] = None
    als_alpha: Optional[float] = None
    seed: int = 0


class RecommendationsConfig(dg.Config):
    k: int = 10


def load_listens(connection: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Listens whose user and track are both known: orphans are reported by checks, not learned from."""
    return connection.execute(
        f"""
        SELECT listen.user_id, listen.track_id, listen.position
        FROM {core_table(LISTEN_HISTORY)} AS listen
        SEMI JOIN {core_table(USERS)} AS u ON u.user_id = listen.user_id
        SEMI JOIN {core_table(TRACKS)} AS t ON t.track_id = listen.track_id
        ORDER BY listen.user_id, listen.position
        """
    ).df()


def load_genres(connection: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame]:
    users = connection.execute(f"SELECT user_id, favorite_genre FROM {core_table(USERS)}").df()
    tracks = connection.execute(f"SELECT track_id, genre FROM {core_table(TRACKS)}").df()
    return users, tracks


def snapshot_of_core(connection: duckdb.DuckDBPyConnection) -> str:
    (snapshot_date,) = connection.execute(
        f"SELECT max(snapshot_date) FROM {core_table(LISTEN_HISTORY)}"
    ).fetchone()
    if snapshot_date is None:
        raise dg.Failure("core.listen_history is empty: there is nothing to learn from.")
    return snapshot_date.isoformat()


@dg.asset(
    key=[ML, "training_set"],
    group_name=ML,
    deps=[dg.AssetKey([CORE, LISTEN_HISTORY]), dg.AssetKey([CORE, USERS]), dg.AssetKey([CORE, TRACKS])],
    pool=DUCKDB_POOL,
    kinds={"duckdb", "pandas"},
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Listens of known users and tracks, split per user into train and test with a seeded hold-out."""
    with warehouse.get_connection() as connection:
        snapshot_date = snapshot_of_core(connection)
        listens = load_listens(connection)
        train, test = recommenders.split_interactions(
            listens,
            test_share=config.test_share,
            seed=config.seed,
            min_user_listens=config.min_user_listens,
            method=config.split_method,
        )
        labelled = pd.concat(
            [train.assign(side="train"), test.assign(side="test")], ignore_index=True
        ).assign(snapshot_date=pd.Timestamp(snapshot_date).date())
        connection.execute("CREATE SCHEMA IF NOT EXISTS ml")
        connection.register("labelled", labelled)
        connection.execute(
            f"CREATE OR REPLACE TABLE {TRAINING_SET} AS "
            "SELECT user_id::BIGINT AS user_id, track_id::BIGINT AS track_id, position::INTEGER AS position, "
            "side::VARCHAR AS side, snapshot_date::DATE AS snapshot_date FROM labelled ORDER BY user_id, position;"
            + TRAINING_SET_COMMENTS
        )
    return recorded_result(
        context,
        warehouse,
        {
            "dagster/row_count": len(labelled),
            "snapshot_date": snapshot_date,
            "train_listens": len(train),
            "test_listens": len(test),
            "users": int(listens["user_id"].nunique()),
            "tracks": int(listens["track_id"].nunique()),
            "test_users": int(test["user_id"].nunique()),
            "split": dg.MetadataValue.json(config.model_dump()),
        },
    )


def metrics_table(rows: dict[str, dict]) -> str:
    lines = [
        "| model | precision@k | recall@k | NDCG@k | coverage | users |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, metrics in rows.items():
        lines.append(
            f"| {name} | {metrics['precision_at_k']:.4f} | {metrics['recall_at_k']:.4f} | "
            f"{metrics['ndcg_at_k']:.4f} | {metrics['catalogue_coverage']:.3f} | {metrics['users_evaluated']} |"
        )
    return "\n".join(lines)


def model_params(config: RecommenderConfig, n_tracks: int) -> recommenders.ModelParams:
    algorithm = config.algorithm if config.algorithm != "auto" else recommenders.default_algorithm(n_tracks)
    chosen = {
        "l2": config.ease_l2,
        "factors": config.als_factors,
        "iterations": config.als_iterations,
        "regularization": config.als_regularization,
        "alpha": config.als_alpha,
    }
    return recommenders.ModelParams(
        algorithm=algorithm,
        seed=config.seed,
        **{name: value for name, value in chosen.items() if value is not None},
    )


@dg.asset(key=[ML, "recommender_model"], group_name=ML, deps=[training_set], pool=DUCKDB_POOL, kinds={"python"})
def recommender_model(
    context: dg.AssetExecutionContext,
    config: RecommenderConfig,
    warehouse: WarehouseResource,
    model_store: ModelStore,
) -> dg.MaterializeResult:
    """Trains a challenger, judges it against popularity and the champion, promotes it only if it wins."""
    with warehouse.get_connection() as connection:
        ensure_tables(connection)
        sides = connection.execute(f"SELECT user_id, track_id, position, side, snapshot_date FROM {TRAINING_SET}").df()
        users, tracks = load_genres(connection)
        champion = current_champion(connection)
    snapshot_date = sides["snapshot_date"].max().isoformat()
    train = sides.loc[sides["side"] == "train", ["user_id", "track_id", "position"]]
    test = sides.loc[sides["side"] == "test", ["user_id", "track_id", "position"]]
    params = model_params(config, n_tracks=train["track_id"].nunique())

    started = time.monotonic()
    challenger = recommenders.train_model(train, params, users=users, tracks=tracks)
    train_seconds = time.monotonic() - started
    baselines = {
        name: recommenders.train_model(train, {"algorithm": name}, users=users, tracks=tracks)
        for name in BASELINES
    }
    evaluated = {f"challenger ({params.algorithm})": recommenders.evaluate(challenger, train, test, config.k)}
    for name, model in baselines.items():
        evaluated[name] = recommenders.evaluate(model, train, test, config.k)
    if champion is not None:
        evaluated[f"champion {champion.version}"] = recommenders.evaluate(
            model_store.load(champion.artefact_path), train, test, config.k
        )
    challenger_metrics = evaluated[f"challenger ({params.algorithm})"]
    champion_metrics = evaluated[f"champion {champion.version}"] if champion else None
    decision = decide_promotion(
        challenger_metrics, evaluated["popularity"], champion_metrics, config.min_relative_gain
    )

    trained_at = utc_now()
    facts = dict(
        trained_at=trained_at,
        snapshot_date=snapshot_date,
        baseline_metrics={name: m for name, m in evaluated.items() if not name.startswith("challenger")},
        data_listens=len(sides),
        data_users=int(sides["user_id"].nunique()),
        data_tracks=int(sides["track_id"].nunique()),
    )
    entries = [
        RegistryEntry(
            version=new_version(params.algorithm, trained_at),
            algorithm=params.algorithm,
            params=challenger.summary()["params"],
            metrics=challenger_metrics,
            status=CHAMPION if decision.promote else REJECTED,
            reason=decision.reason,
            artefact_path="",
            train_seconds=round(train_seconds, 3),
            **facts,
        )
    ]
    models = [challenger]
    if not decision.promote and champion is None:
        # Nothing serves yet and nothing learned beats popularity: the best yardstick serves,
        # so every user still gets recommendations and no model worse than it is promoted.
        best = max(BASELINES, key=lambda name: evaluated[name][PROMOTION_METRIC])
        entries.append(
            RegistryEntry(
                version=new_version(best, trained_at),
                algorithm=best,
                params=baselines[best].summary()["params"],
                metrics=evaluated[best],
                status=CHAMPION,
                reason=f"no learned model beats popularity; the best baseline ({best}) serves",
                artefact_path="",
                train_seconds=0.0,
                **facts,
            )
        )
        models.append(baselines[best])

    with warehouse.get_connection() as connection:
        for entry, model in zip(entries, models):
            entry.artefact_path = model_store.save(entry.version, model)
            record(connection, entry)
            connection.execute("INSERT INTO ml.model_catalogue SELECT ?, unnest(?)", [entry.version, model.track_ids.tolist()])

    serving = next((entry for entry in entries if entry.status == CHAMPION), champion)
    context.log.info(f"challenger {entries[0].version}: {decision.reason}")
    return recorded_result(
        context,
        warehouse,
        {
            "challenger_version": entries[0].version,
            "algorithm": params.algorithm,
            "promoted": decision.promote,
            "decision": decision.reason,
            "champion_version": serving.version if serving else "none",
            "metrics": dg.MetadataValue.md(metrics_table(evaluated)),
            "ndcg_at_k": challenger_metrics["ndcg_at_k"],
            "recall_at_k": challenger_metrics["recall_at_k"],
            "precision_at_k": challenger_metrics["precision_at_k"],
            "popularity_ndcg_at_k": evaluated["popularity"]["ndcg_at_k"],
            "genre_popularity_ndcg_at_k": evaluated["genre_popularity"]["ndcg_at_k"],
            "champion_ndcg_at_k": champion_metrics["ndcg_at_k"] if champion_metrics else 0.0,
            "train_seconds": round(train_seconds, 3),
            "train_listens": len(train),
            "test_listens": len(test),
        },
    )


@dg.asset(
    key=[ML, "user_recommendations"],
    group_name=ML,
    deps=[recommender_model, dg.AssetKey([CORE, USERS]), dg.AssetKey([CORE, LISTEN_HISTORY]), dg.AssetKey([CORE, TRACKS])],
    pool=DUCKDB_POOL,
    kinds={"duckdb"},
    automation_condition=RECOMMENDATIONS_AUTOMATION,
)
def user_recommendations(
    context: dg.AssetExecutionContext,
    config: RecommendationsConfig,
    warehouse: WarehouseResource,
    model_store: ModelStore,
) -> dg.MaterializeResult:
    """Top-k tracks for every user from the champion; users with no listens get their genre's most popular."""
    started = time.monotonic()
    with warehouse.get_connection() as connection:
        champion = current_champion(connection)
        if champion is None:
            raise dg.Failure("No champion model yet: materialize ml/recommender_model first.")
        snapshot_date = snapshot_of_core(connection)
        listens = connection.execute(f"SELECT user_id, track_id FROM {core_table(LISTEN_HISTORY)}").df()
        users, _ = load_genres(connection)
    model = model_store.load(champion.artefact_path)
    recommendations = recommenders.recommend(model, listens, users["user_id"], config.k, users=users)
    history_lengths = listens.groupby("user_id").size()
    generated = recommendations.assign(
        history_length=recommendations["user_id"].map(history_lengths).fillna(0).astype("int64"),
        snapshot_date=pd.Timestamp(snapshot_date).date(),
        model_version=champion.version,
        generated_at=utc_now(),
    )
    with warehouse.get_connection() as connection:
        connection.execute("BEGIN TRANSACTION")
        try:
            # Yesterday's list is kept: the drift sensor measures how many of its tracks users then played.
            if table_exists(connection, USER_RECOMMENDATIONS):
                connection.execute(
                    f"CREATE OR REPLACE TABLE {PREVIOUS_USER_RECOMMENDATIONS} AS FROM {USER_RECOMMENDATIONS};"
                    + RECOMMENDATIONS_COMMENTS.format(table=PREVIOUS_USER_RECOMMENDATIONS, what="The list before the latest")
                )
            connection.register("generated", generated)
            connection.execute(
                f"CREATE OR REPLACE TABLE {USER_RECOMMENDATIONS} AS "
                "SELECT user_id::BIGINT AS user_id, rank::INTEGER AS rank, track_id::BIGINT AS track_id, "
                "score::DOUBLE AS score, source::VARCHAR AS source, model_version::VARCHAR AS model_version, "
                # What the user had heard when the list was made: the drift sensor's "new listens" start after it.
                "history_length::INTEGER AS history_length, snapshot_date::DATE AS snapshot_date, "
                "generated_at::TIMESTAMP AS generated_at FROM generated ORDER BY user_id, rank;"
                + RECOMMENDATIONS_COMMENTS.format(table=USER_RECOMMENDATIONS, what="The serving list")
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    seconds = time.monotonic() - started
    sources = recommendations.drop_duplicates("user_id")["source"].value_counts().to_dict()
    return recorded_result(
        context,
        warehouse,
        {
            "dagster/row_count": len(recommendations),
            "users": int(recommendations["user_id"].nunique()),
            "model_version": champion.version,
            "users_by_source": dg.MetadataValue.json(sources),
            "fallback_users": int(sum(count for source, count in sources.items() if source != "model")),
            "distinct_tracks": int(recommendations["track_id"].nunique()),
            "seconds": round(seconds, 3),
        },
    )
