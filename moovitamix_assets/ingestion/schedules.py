"""The daily ingestion job and the schedule that runs it."""

import os

import dagster as dg

from moovitamix_assets.constants import CORE, RAW

INGESTION_CRON_ENV = "MOOVITAMIX_INGESTION_CRON"
DEFAULT_INGESTION_CRON = "0 2 * * *"

daily_ingestion_job = dg.define_asset_job(
    name="daily_ingestion",
    description="Pull the day's snapshot of every endpoint, then rebuild the core tables and run their checks.",
    selection=dg.AssetSelection.groups(RAW, CORE),
)


@dg.schedule(
    job=daily_ingestion_job,
    cron_schedule=os.getenv(INGESTION_CRON_ENV, DEFAULT_INGESTION_CRON),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_ingestion_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Each tick ingests the snapshot dated the day of the tick (UTC)."""
    snapshot_date = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=snapshot_date, partition_key=snapshot_date)
