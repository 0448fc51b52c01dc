"""Rollback: make a previously trained model the champion again, by hand, from the UI or the CLI."""

import dagster as dg

from moovitamix_assets.ml.checks import MODEL_KEY, check_champion_beats_popularity
from moovitamix_assets.ml.registry import current_champion, rollback_to
from moovitamix_assets.ml.serving import ServingStore, serve_kept_version_of
from moovitamix_assets.monitoring.metrics import record_check_results
from moovitamix_assets.resources.warehouse import DUCKDB_POOL, WarehouseResource


class RollbackConfig(dg.Config):
    version: str  # a version of ml.model_registry whose artefact still exists
    reason: str  # why, kept in ml.champion_history and the registry


@dg.op(pool=DUCKDB_POOL)
def rollback_to_version(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    warehouse: WarehouseResource,
    serving_store: ServingStore,
) -> None:
    """Crowns the given model version, then records a new ml/recommender_model materialization
    and judges it with the champion_beats_popularity check.

    The materialization is what the automation sensor watches: the recommendations, eager on
    ml/recommender_model once its blocking check passed for that materialization, are
    recomputed with the restored champion, and ml/serving_snapshot republishes them once
    their checks passed. Meanwhile the app gets the restored model at once when the serving
    store still keeps a version it made: the manifest points back at it (lists from an
    earlier snapshot date, until the recomputed ones are published). A restored champion
    worse than popularity fails the check; the recommendations and what the app is served
    stay as they are.
    """
    with warehouse.get_connection() as connection:
        previous = current_champion(connection)
        try:
            entry = rollback_to(connection, config.version, config.reason)
        except ValueError as error:
            raise dg.Failure(description=f"Rollback to {config.version!r} refused: {error}") from error
        (check,) = record_check_results(connection, context.run.run_id, [check_champion_beats_popularity(connection)])
    context.log.info(f"champion {previous.version if previous else 'none'} -> {entry.version}: {config.reason}")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=MODEL_KEY,
            description=f"Rollback to {entry.version}",
            metadata={
                "champion_version": entry.version,
                "previous_champion_version": previous.version if previous else "none",
                "algorithm": entry.algorithm,
                "reason": config.reason,
                "rollback": True,
                "ndcg_at_k": entry.metrics.get("ndcg_at_k", 0.0),
                "recall_at_k": entry.metrics.get("recall_at_k", 0.0),
                "precision_at_k": entry.metrics.get("precision_at_k", 0.0),
            },
        )
    )
    # After the materialization: a check evaluation belongs to the latest materialization.
    context.log_event(
        dg.AssetCheckEvaluation(
            asset_key=MODEL_KEY,
            check_name=check.check_name,
            passed=check.passed,
            severity=check.severity,
            metadata=check.metadata,
        )
    )
    if not check.passed:
        context.log.warning(f"{entry.version} is the champion but does not beat popularity: recommendations are held.")
        return
    served = serve_kept_version_of(serving_store, entry.version)
    context.log.info(
        f"the app is served version {served} of {serving_store.path}, made by {entry.version}, until the recomputed lists are published"
        if served
        else f"no kept serving version was made by {entry.version}: the app is served the recomputed lists once published"
    )


@dg.job(
    description="Makes an earlier model version the champion again (config: version, reason) and serves "
    "a kept serving version it made, if any; the recommendations and the serving snapshot follow "
    "through the automation sensor."
)
def rollback_champion() -> None:
    rollback_to_version()
