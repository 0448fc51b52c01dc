"""The retraining job and its weekly schedule."""

import os

import dagster as dg

from moovitamix_assets.ml.assets import recommender_model, training_set, user_recommendations

RETRAIN_CRON_ENV = "MOOVITAMIX_RETRAIN_CRON"
DEFAULT_RETRAIN_CRON = "0 3 * * 1"  # Mondays, after the daily ingestion

retrain_recommender_job = dg.define_asset_job(
    name="retrain_recommender",
    description="Rebuild the training set, train and judge a challenger, then recompute recommendations.",
    selection=dg.AssetSelection.assets(training_set, recommender_model, user_recommendations),
)

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=retrain_recommender_job,
    cron_schedule=os.getenv(RETRAIN_CRON_ENV, DEFAULT_RETRAIN_CRON),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
