"""The sensor that ends dead runs for the daemon's and the UI's runs."""

import dagster as dg

from moovitamix_assets.operations.recovery import recover_dead_runs

# A queued run blocked by a dead run's slot starts at most this long after the death.
RECOVERY_INTERVAL_SECONDS = 30


@dg.sensor(
    minimum_interval_seconds=RECOVERY_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose process died (killed, out of memory, a reboot) and frees "
    "their duckdb pool slots, so that the queued and later runs are not blocked by them.",
)
def dead_run_recovery_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Needed besides the recovery each daily_ingestion run does before its first step: the run
    queue holds a run whose pool is full, so a run queued behind a dead one never starts to do it."""
    recoveries = recover_dead_runs(context.instance, found_by="dead_run_recovery_sensor")
    for recovery in recoveries:
        context.log.warning(f"Run {recovery.run_id} ({recovery.job_name}): {recovery.message}")
    if not recoveries:
        return dg.SkipReason("No dead run.")
    return dg.SkipReason("; ".join(f"{recovery.run_id}: {recovery.action}" for recovery in recoveries))
