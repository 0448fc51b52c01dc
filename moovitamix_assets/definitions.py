"""The Moovitamix code location: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from moovitamix_assets.catalogue import with_catalogue
from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.core.backfill import rebuild_history
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ingestion.schedules import daily_ingestion_job, daily_ingestion_schedule
from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations
from moovitamix_assets.ml.checks import ml_checks
from moovitamix_assets.ml.rollback import rollback_champion
from moovitamix_assets.ml.schedules import retrain_recommender_job, weekly_retrain_schedule
from moovitamix_assets.ml.sensors import recommender_drift_sensor
from moovitamix_assets.ml.serving import serving_snapshot
from moovitamix_assets.monitoring.alerts import check_failure_alert_sensor, run_failure_alert_sensor
from moovitamix_assets.monitoring.freshness import with_daily_freshness
from moovitamix_assets.monitoring.health import pipeline_health
from moovitamix_assets.operations.sensors import dead_run_recovery_sensor
from moovitamix_assets.monitoring.lake import (
    raw_retention,
    raw_retention_job,
    raw_retention_schedule,
    raw_snapshot_parquet,
)
from moovitamix_assets.operations.executor import in_process_executor_with_recovery
from moovitamix_assets.resources.environment import resources_from_env

# Declared here because Dagster creates the default automation sensor STOPPED.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds core tables after a raw snapshot lands, recommendations after core or a new champion, "
    "and publishes the serving snapshot once the recommendations' checks passed.",
)

defs = dg.Definitions(
    # Each asset that writes a table shows the catalogue's descriptions of it and its columns.
    assets=with_catalogue([
        *raw_snapshot_assets,
        *with_daily_freshness([*core_assets, user_recommendations, serving_snapshot]),
        training_set,
        recommender_model,
        raw_snapshot_parquet,
        raw_retention,
        pipeline_health,
    ]),
    asset_checks=ml_checks,
    jobs=[daily_ingestion_job, retrain_recommender_job, raw_retention_job, rollback_champion, rebuild_history],
    schedules=[daily_ingestion_schedule, weekly_retrain_schedule, raw_retention_schedule],
    sensors=[
        automation_sensor,
        recommender_drift_sensor,
        run_failure_alert_sensor,
        check_failure_alert_sensor,
        dead_run_recovery_sensor,
    ],
    resources=resources_from_env(),
    # Steps run one after another in the run's process: DuckDB allows one writer per file,
    # and for this workload the in-process executor is several times faster. Every run, from
    # the UI, a schedule or the CLI, first recovers runs whose process died (their pool slots).
    executor=in_process_executor_with_recovery,
)
