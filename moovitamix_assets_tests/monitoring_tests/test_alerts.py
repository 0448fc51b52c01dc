"""Alerts from real failed runs and checks, posted to a real HTTP receiver on loopback."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Optional

import dagster as dg
import pytest

from moovitamix_assets.monitoring.alerts import (
    AlertSettings,
    check_failure_alert_sensor,
    run_failure_alert_sensor,
    send_alert,
)

UI_URL = "http://dagster.test:3000"
SNAPSHOT_DATE = "2026-11-01"

daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=daily)
def api_pull() -> None:
    raise ConnectionError("the API answered 503 three times\nretries exhausted")


@dg.asset(partitions_def=daily, deps=[api_pull])
def cleaned() -> None:
    pass


@dg.asset(partitions_def=daily)
def unaffected() -> None:
    pass


@dg.asset(partitions_def=daily)
def users() -> None:
    pass


@dg.asset_check(asset=users, blocking=True)
def unique_user_ids() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description="duplicate user ids",
        metadata={"count": 12, "out_of": 1155, "rate": 0.010390, "sample_ids": dg.MetadataValue.json(["u1", "u2"])},
    )


class Receiver:
    """A webhook on loopback that records every JSON body posted to it and answers `status`."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One SQLite-backed instance (the default storage of `dagster dev`) for the module: each
    test starts its sensor with a first tick, so the runs of the tests before it are history."""
    with dg.instance_for_test() as instance:
        yield instance


def settings(receiver: Receiver) -> AlertSettings:
    return AlertSettings(webhook_url=receiver.url, ui_url=UI_URL, timeout_seconds=2)


def run_failure_context(instance: dg.DagsterInstance, run_id: str, alert_settings: AlertSettings):
    (failure,) = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name,
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        resources={"alert_settings": alert_settings},
    ).for_run_failure()


class Collected(logging.Handler):
    """The records a logger emitted: a sensor's log is its own logger, outside the root's tree."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


def check_tick(instance: dg.DagsterInstance, cursor, alert_settings: AlertSettings, log: Optional[Collected] = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alert_settings": alert_settings}
    )
    if log is not None:
        context.log.addHandler(log)
    return check_failure_alert_sensor(context)


def fail_check(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [users, unique_user_ids], instance=instance, partition_key=SNAPSHOT_DATE, raise_on_error=False
    )


def test_a_failed_run_posts_its_job_partition_steps_error_and_link(instance, receiver):
    result = dg.materialize(
        [api_pull, cleaned, unaffected], instance=instance, partition_key=SNAPSHOT_DATE, raise_on_error=False
    )
    assert not result.success

    run_failure_alert_sensor(run_failure_context(instance, result.run_id, settings(receiver)))

    run_id = result.run_id
    assert receiver.bodies == [
        {
            "text": (
                f"Run {run_id} of job __ephemeral_asset_job__ for partition {SNAPSHOT_DATE} failed in step(s) "
                "api_pull: ConnectionError: the API answered 503 three times. "
                f"Assets not materialized: api_pull, cleaned. {UI_URL}/runs/{run_id}"
            ),
            "kind": "run_failure",
            "job": "__ephemeral_asset_job__",
            "run_id": run_id,
            "partition": SNAPSHOT_DATE,
            "failed_steps": ["api_pull"],
            "assets": ["api_pull", "cleaned"],
            "error": "ConnectionError: the API answered 503 three times",
            "run_url": f"{UI_URL}/runs/{run_id}",
        }
    ]


def test_a_failed_check_is_alerted_once_with_its_counts_and_history_is_not_replayed(instance, receiver):
    alert_settings = settings(receiver)
    fail_check(instance)  # before the sensor's first tick: history

    first = check_tick(instance, None, alert_settings)
    assert receiver.bodies == []
    assert int(first.cursor) > 0

    result = fail_check(instance)
    second = check_tick(instance, first.cursor, alert_settings)
    run_id = result.run_id
    assert receiver.bodies == [
        {
            "text": (
                f"Check unique_user_ids on users for partition {SNAPSHOT_DATE} failed (ERROR): duplicate user ids; "
                f"count=12, out_of=1155, rate=0.01039. {UI_URL}/runs/{run_id}"
            ),
            "kind": "check_failure",
            "job": "__ephemeral_asset_job__",
            "run_id": run_id,
            "asset": "users",
            "check": "unique_user_ids",
            "severity": "ERROR",
            "partition": SNAPSHOT_DATE,
            "metadata": {"count": 12, "out_of": 1155, "rate": 0.01039},
            "run_url": f"{UI_URL}/runs/{run_id}",
        }
    ]

    third = check_tick(instance, second.cursor, alert_settings)
    assert len(receiver.bodies) == 1
    assert third.cursor == second.cursor


def test_without_a_webhook_the_alert_is_logged_and_nothing_is_posted(instance, receiver):
    first = check_tick(instance, None, settings(receiver))
    fail_check(instance)
    log = Collected()
    check_tick(instance, first.cursor, AlertSettings(webhook_url=None, ui_url=UI_URL), log)

    assert receiver.bodies == []
    (logged,) = [message for message in log.messages if "No alert webhook configured" in message]
    assert logged.startswith("WARNING")
    assert '"check": "unique_user_ids"' in logged


def test_a_webhook_that_fails_is_logged_and_does_not_raise(instance, receiver):
    receiver.status = 500
    first = check_tick(instance, None, settings(receiver))
    fail_check(instance)
    log = Collected()
    result = check_tick(instance, first.cursor, settings(receiver), log)

    assert len(receiver.bodies) == 1  # it was tried
    assert int(result.cursor) > int(first.cursor)  # and the sensor moved on
    (logged,) = [message for message in log.messages if "Could not deliver the check_failure alert" in message]
    assert logged.startswith("ERROR") and "500 Server Error" in logged


def test_an_unreachable_webhook_does_not_raise(receiver):
    receiver.server.server_close()  # nothing listens on the port any more
    log = logging.getLogger("test_alerts")
    assert send_alert({"kind": "run_failure", "text": "x"}, receiver.url, log, timeout_seconds=1) is False
