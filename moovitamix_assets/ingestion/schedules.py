"""The daily ingestion job and the schedule that runs it."""

import os

import dagster as dg

from moovitamix_assets.constants import CORE, RAW
from moovitamix_assets.operations.executor import in_process_executor_with_recovery

INGESTION_CRON_ENV = "MOOVITAMIX_INGESTION_CRON"
DEFAULT_INGESTION_CRON = "0 2 * * *"

# Run retries (the daemon re-executes a failed run; dagster.yaml enables them): the outer of
# three layers, inside which the client retries each request and the raw pull step retries
# with exponential backoff (its RetryPolicy). A run retry starts at once, so it serves when the
# run itself died (killed, out of memory) or the step's retries ran out; two bound the loop:
# a day that keeps failing stays failed. FROM_FAILURE re-runs the steps that failed or never
# ran: a raw partition that landed is whole, and kept.
DAILY_RUN_RETRIES = {"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"}

daily_ingestion_job = dg.define_asset_job(
    name="daily_ingestion",
    description="Pull the day's snapshot of every endpoint, then rebuild the core tables and run their checks.",
    selection=dg.AssetSelection.groups(RAW, CORE),
    tags=DAILY_RUN_RETRIES,
    # Each run first ends the runs whose process died and frees their pool slots: a run from
    # the CLI has no daemon sensor to do it, and would wait for a dead run's slot forever.
    executor_def=in_process_executor_with_recovery,
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
