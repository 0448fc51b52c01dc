"""Alerts: failed runs and failed asset checks, posted to a Slack-compatible webhook.

Both sensors read what failed from the instance (run events by storage id, with a cursor),
so a run launched from the CLI or a script, which has no code-location origin, alerts like
one launched from the UI: @run_failure_sensor only sees runs of its own code location. Each
failure has a stable key (run id, kind, and for a check its asset, name and partition) and
is posted once; delivery, retries and the `monitoring.alert_deliveries` ledger are
alert_delivery.py's.
"""

import os
from typing import Any, Callable, Mapping, Optional, Sequence

import dagster as dg

from moovitamix_assets.monitoring.alert_delivery import (
    DEFAULT_UI_URL,
    WEBHOOK_URL_ENV,
    AlertSettings,
    AlertState,
    deliver_alerts,
)
from moovitamix_assets.resources.warehouse import WarehouseResource

UI_URL_ENV = "MOOVITAMIX_UI_URL"
UI_PORT_ENV = "MOOVITAMIX_UI_PORT"

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
# Run events read per sensor tick; the cursor carries the rest to the next tick.
RUNS_PER_TICK = 50


def ui_url_from_env() -> str:
    """The Dagster UI's address: MOOVITAMIX_UI_URL (behind a proxy), else the port it is served on
    (MOOVITAMIX_UI_PORT, as `make dev` serves it), so run links follow the UI wherever it moved."""
    port = os.getenv(UI_PORT_ENV)
    return os.getenv(UI_URL_ENV) or (f"http://127.0.0.1:{port}" if port else DEFAULT_UI_URL)


def alert_settings_from_env() -> AlertSettings:
    return AlertSettings(
        # An EnvVar, not the value: a webhook URL is a secret that the UI must not show.
        webhook_url=dg.EnvVar(WEBHOOK_URL_ENV) if os.getenv(WEBHOOK_URL_ENV) else None,
        ui_url=ui_url_from_env(),
    )


def alert_key(message: Mapping[str, Any]) -> str:
    """What failed, once: the same failure always has the same key, another failure another."""
    if message["kind"] == RUN_FAILURE:
        return f"{RUN_FAILURE}:{message['run_id']}"
    # A run over a partition range evaluates a check once per partition.
    partition = f":{message['partition']}" if message.get("partition") else ""
    return f"{CHECK_FAILURE}:{message['run_id']}:{message['asset']}:{message['check']}{partition}"


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


def run_failure_alert(instance: dg.DagsterInstance, failure: dg.EventLogRecord, settings: AlertSettings) -> dict:
    """The alert for the run whose RUN_FAILURE event this is."""
    run_id = failure.run_id
    run = instance.get_run_by_id(run_id)
    failure_event = failure.event_log_entry.dagster_event
    step_failures = [
        record.event_log_entry.dagster_event
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    ]
    # A run can fail before any step does (a resource, the launcher, run monitoring marking a
    # dead run failed): its own event says why.
    errors = [root_error_line(event.event_specific_data.error) for event in step_failures] + [
        root_error_line(getattr(failure_event.event_specific_data, "error", None)),
        first_line(failure_event.message),
    ]
    return run_failure_message(
        job=run.job_name if run else failure.event_log_entry.job_name,
        run_id=run_id,
        partition=run_partition(run.tags) if run else None,
        failed_steps=[event.step_key for event in step_failures if event.step_key],
        assets=not_materialized_assets(instance, run_id),
        error=next((error for error in errors if error), None),
        run_url=settings.run_url(run_id),
    )


def run_events_after(
    instance: dg.DagsterInstance, event_types: Sequence[dg.DagsterEventType], after_storage_id: int, limit: int
) -> list[dg.EventLogRecord]:
    """The run events of these types stored after the cursor, oldest first, at most about `limit`."""
    records: list[dg.EventLogRecord] = []
    horizon = None
    for event_type in event_types:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after_storage_id),
            limit=limit,
            ascending=True,
        )
        records += result.records
        if result.has_more:
            # Past a truncated list's last event, the other lists may hold events this one lacks.
            last = result.records[-1].storage_id
            horizon = last if horizon is None else min(horizon, last)
    return sorted(
        (record for record in records if horizon is None or record.storage_id <= horizon),
        key=lambda record: record.storage_id,
    )


def latest_run_event_id(instance: dg.DagsterInstance, event_types: Sequence[dg.DagsterEventType]) -> int:
    latest = [
        instance.fetch_run_status_changes(event_type, limit=1, ascending=False).records for event_type in event_types
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


def alert_tick(
    context: dg.SensorEvaluationContext,
    event_types: Sequence[dg.DagsterEventType],
    alerts_for: Callable[[dg.EventLogRecord], list[dict]],
    settings: AlertSettings,
    warehouse: WarehouseResource,
) -> dg.SensorResult:
    """One tick of an alert sensor: read the run events past the cursor, alert what they show
    (once per key), deliver what is due, and hand the whole state back as the cursor.

    The first tick (no cursor) only records the latest event: failures from before the
    sensor existed are history, not news.
    """
    if context.cursor is None:
        latest = latest_run_event_id(context.instance, event_types)
        return dg.SensorResult(
            skip_reason=f"Started after run event {latest}; earlier runs are not replayed.",
            cursor=AlertState(after=latest).to_cursor(),
        )
    state = AlertState.from_cursor(context.cursor)
    events = run_events_after(context.instance, event_types, state.after, RUNS_PER_TICK)
    alerts = [(alert_key(message), message) for event in events for message in alerts_for(event)]
    if events:
        state.after = events[-1].storage_id
    summary = deliver_alerts(state, alerts, settings, warehouse, context.log)
    return dg.SensorResult(skip_reason=f"{len(events)} run event(s) read; {summary}", cursor=state.to_cursor())


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Posts an alert naming the job, partition, failed steps, error and run link when a run fails, "
    "however it was launched (UI, schedule, sensor, CLI).",
)
def run_failure_alert_sensor(
    context: dg.SensorEvaluationContext, alert_settings: AlertSettings, warehouse: WarehouseResource
) -> dg.SensorResult:
    return alert_tick(
        context,
        [dg.DagsterEventType.RUN_FAILURE],
        lambda failure: [run_failure_alert(context.instance, failure, alert_settings)],
        alert_settings,
        warehouse,
    )


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Posts an alert for every failed asset check of each run that ended since its last tick.",
)
def check_failure_alert_sensor(
    context: dg.SensorEvaluationContext, alert_settings: AlertSettings, warehouse: WarehouseResource
) -> dg.SensorResult:
    """Follows run-end events, not check evaluation events: those can be queried across runs
    only on some event log storages (not the default SQLite one), while run-end events can on
    every storage. A run's failed checks are alerted once the run has ended; evaluations
    reported outside a run are not seen."""
    return alert_tick(
        context,
        RUN_END_EVENTS,
        lambda ended: check_failure_alerts(context.instance, ended.run_id, alert_settings),
        alert_settings,
        warehouse,
    )
