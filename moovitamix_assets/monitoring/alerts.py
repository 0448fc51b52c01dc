"""Alerts: failed runs and failed asset checks, posted to a Slack-compatible webhook."""

import json
import logging
import os
from typing import Any, Mapping, Optional, Sequence, Union

import dagster as dg
import requests

WEBHOOK_URL_ENV = "MOOVITAMIX_ALERT_WEBHOOK_URL"
UI_URL_ENV = "MOOVITAMIX_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"

RUN_FAILURE = "run_failure"
CHECK_FAILURE = "check_failure"

PARTITION_TAG = "dagster/partition"
PARTITION_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# A run's check evaluations are read once the run has ended, whatever the outcome.
RUN_END_EVENTS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
# Ended runs read per sensor tick; the cursor carries the rest to the next tick.
RUNS_PER_TICK = 50

Logger = Union[logging.Logger, logging.LoggerAdapter, dg.DagsterLogManager]


class AlertSettings(dg.ConfigurableResource):
    """Where alerts go (a Slack-compatible webhook, or the log when unset) and where run links point."""

    webhook_url: Optional[str] = None
    ui_url: str = DEFAULT_UI_URL
    timeout_seconds: float = 5.0

    def run_url(self, run_id: Optional[str]) -> Optional[str]:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if run_id else None


def alert_settings_from_env() -> AlertSettings:
    return AlertSettings(
        # An EnvVar, not the value: a webhook URL is a secret that the UI must not show.
        webhook_url=dg.EnvVar(WEBHOOK_URL_ENV) if os.getenv(WEBHOOK_URL_ENV) else None,
        ui_url=os.getenv(UI_URL_ENV, DEFAULT_UI_URL),
    )


def send_alert(message: dict, webhook_url: Optional[str], log: Logger, timeout_seconds: float = 5.0) -> bool:
    """Posts the message as JSON to the webhook, or logs it when none is set; True when delivered.

    A webhook that fails is logged and never raised: an alert must not break the sensor
    that sends it, nor stop the alerts after it.
    """
    if not webhook_url:
        log.warning(f"No alert webhook configured ({WEBHOOK_URL_ENV}); alert: {json.dumps(message)}")
        return False
    try:
        response = requests.post(webhook_url, json=message, timeout=timeout_seconds)
        response.raise_for_status()
    except requests.RequestException as error:
        log.error(f"Could not deliver the {message.get('kind')} alert to the webhook: {error}; alert: {json.dumps(message)}")
        return False
    return True


def first_line(text: Optional[str]) -> Optional[str]:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else None


def root_error_line(error: Optional[Any]) -> Optional[str]:
    """The first line of the innermost cause of a serialized error: the user's exception, not Dagster's wrapper."""
    if error is None:
        return None
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return first_line(error.message)


def run_partition(tags: Mapping[str, str]) -> Optional[str]:
    """The partition a run targeted, or its range as `start...end` for a backfill of several."""
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    start, end = (tags.get(tag) for tag in PARTITION_RANGE_TAGS)
    return f"{start}...{end}" if start and end else None


def run_failure_message(
    job: str,
    run_id: str,
    partition: Optional[str],
    failed_steps: Sequence[str],
    assets: Sequence[str],
    error: Optional[str],
    run_url: Optional[str],
) -> dict:
    """The alert for a failed run: a one-paragraph text for people, and the same facts as fields."""
    text = (
        f"Run {run_id} of job {job}"
        + (f" for partition {partition}" if partition else "")
        + " failed"
        + (f" in step(s) {', '.join(failed_steps)}" if failed_steps else "")
        + f": {error or 'no error message'}."
        + (f" Assets not materialized: {', '.join(assets)}." if assets else "")
        + (f" {run_url}" if run_url else "")
    )
    return {
        "text": text,
        "kind": RUN_FAILURE,
        "job": job,
        "run_id": run_id,
        "partition": partition,
        "failed_steps": list(failed_steps),
        "assets": list(assets),
        "error": error,
        "run_url": run_url,
    }


def check_failure_message(
    asset: str,
    check: str,
    severity: str,
    partition: Optional[str],
    metadata: Mapping[str, Any],
    description: Optional[str],
    run_id: Optional[str],
    job: Optional[str],
    run_url: Optional[str],
) -> dict:
    """The alert for a failed asset check: a one-paragraph text for people, and the same facts as fields."""
    counts = ", ".join(f"{name}={value}" for name, value in metadata.items())
    text = (
        f"Check {check} on {asset}"
        + (f" for partition {partition}" if partition else "")
        + f" failed ({severity})"
        + (f": {description}" if description else "")
        + (f"; {counts}" if counts else "")
        + "."
        + (f" {run_url}" if run_url else "")
    )
    return {
        "text": text,
        "kind": CHECK_FAILURE,
        "job": job,
        "run_id": run_id,
        "asset": asset,
        "check": check,
        "severity": severity,
        "partition": partition,
        "metadata": dict(metadata),
        "run_url": run_url,
    }


def metadata_summary(metadata: Mapping[str, dg.MetadataValue], max_text: int = 200) -> dict:
    """The numbers and short texts of a check's metadata: what fits in an alert."""
    summary = {}
    for name, entry in metadata.items():
        value = entry.value if isinstance(entry, dg.MetadataValue) else entry
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= max_text):
            summary[name] = value
    return summary


def not_materialized_assets(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The assets a run planned and did not materialize: those its failure left stale."""
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_MATERIALIZATION},
    ).records
    planned = {r.asset_key for r in records if r.event_log_entry.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED}
    materialized = {r.asset_key for r in records if r.event_log_entry.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    return sorted(key.to_user_string() for key in planned - materialized if key is not None)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts an alert naming the job, partition, failed steps, error and run link when a run fails.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alert_settings: AlertSettings) -> None:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    # A run can fail before any step does (a resource, the launcher): its own event says why.
    errors = [root_error_line(event.event_specific_data.error) for event in step_failures] + [
        root_error_line(getattr(context.failure_event.event_specific_data, "error", None)),
        first_line(context.failure_event.message),
    ]
    message = run_failure_message(
        job=run.job_name,
        run_id=run.run_id,
        partition=run_partition(run.tags),
        failed_steps=[event.step_key for event in step_failures if event.step_key],
        assets=not_materialized_assets(context.instance, run.run_id),
        error=next((error for error in errors if error), None),
        run_url=alert_settings.run_url(run.run_id),
    )
    send_alert(message, alert_settings.webhook_url, context.log, alert_settings.timeout_seconds)


def runs_ended_after(instance: dg.DagsterInstance, after_storage_id: int, limit: int) -> list[tuple[int, str]]:
    """(storage id of the run-end event, run id) of the runs that ended after the cursor, in order."""
    ended: list[tuple[int, str]] = []
    horizon = None
    for event_type in RUN_END_EVENTS:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after_storage_id),
            limit=limit,
            ascending=True,
        )
        ended += [(record.storage_id, record.run_id) for record in result.records]
        if result.has_more:
            # Past a truncated list's last event, the other lists may hold events this one lacks.
            last = result.records[-1].storage_id
            horizon = last if horizon is None else min(horizon, last)
    return sorted(event for event in ended if horizon is None or event[0] <= horizon)


def latest_run_end_id(instance: dg.DagsterInstance) -> int:
    latest = [
        instance.fetch_run_status_changes(event_type, limit=1, ascending=False).records
        for event_type in RUN_END_EVENTS
    ]
    return max((records[0].storage_id for records in latest if records), default=0)


def check_failure_alerts(instance: dg.DagsterInstance, run_id: str, settings: AlertSettings) -> list[dict]:
    """The alerts for the failed check evaluations of one run."""
    run = instance.get_run_by_id(run_id)
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    alerts = []
    for record in records:
        evaluation: dg.AssetCheckEvaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        alerts.append(
            check_failure_message(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                severity=evaluation.severity.value,
                partition=evaluation.partition or (run_partition(run.tags) if run else None),
                metadata=metadata_summary(evaluation.metadata),
                description=evaluation.description,
                run_id=run_id,
                job=run.job_name if run else None,
                run_url=settings.run_url(run_id),
            )
        )
    return alerts


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Posts an alert for every failed asset check of each run that ended since its last tick.",
)
def check_failure_alert_sensor(context: dg.SensorEvaluationContext, alert_settings: AlertSettings) -> dg.SensorResult:
    """The cursor is the storage id of the last run-end event whose checks were read.

    It follows run-end events, not check evaluation events: those can be queried across
    runs only on some event log storages (not the default SQLite one), while run-end events
    can be on every storage. A run's failed checks are alerted once the run has ended, and
    evaluations reported outside a run are not seen. The first tick (no cursor) only records
    the latest run end: failures from before the sensor existed are history, not news.
    """
    if context.cursor is None:
        latest = latest_run_end_id(context.instance)
        return dg.SensorResult(
            skip_reason=f"Started after run-end event {latest}; earlier runs are not replayed.", cursor=str(latest)
        )
    cursor = int(context.cursor)
    sent = 0
    ended = runs_ended_after(context.instance, cursor, RUNS_PER_TICK)
    for storage_id, run_id in ended:
        for message in check_failure_alerts(context.instance, run_id, alert_settings):
            send_alert(message, alert_settings.webhook_url, context.log, alert_settings.timeout_seconds)
            sent += 1
        cursor = storage_id
    return dg.SensorResult(
        skip_reason=f"{sent} failed check(s) alerted from {len(ended)} ended run(s).", cursor=str(cursor)
    )
