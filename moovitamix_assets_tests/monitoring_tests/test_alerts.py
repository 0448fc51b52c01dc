"""Alerts from real failed runs and checks, posted to a real HTTP receiver on loopback.

The sensors are evaluated as the daemon evaluates them (a context with the instance, the
cursor of the previous tick and the resources); runs are real, on a real SQLite instance;
the ledger is a real DuckDB file.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
import duckdb
import pytest
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor

from moovitamix_assets.monitoring.alert_delivery import AlertState, backoff_delay, post_alert
from moovitamix_assets.monitoring.alerts import AlertSettings, check_failure_alert_sensor, run_failure_alert_sensor
from moovitamix_assets.resources.warehouse import WarehouseResource

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


@dg.asset
def listens() -> None:
    pass


def warn_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=listens, name=name)
    def check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"count": 1})

    return check


THREE_CHECKS = ("no_orphan_user_ids", "no_orphan_track_ids", "values_typed")
listens_checks = [warn_check(name) for name in THREE_CHECKS]


class Receiver:
    """A webhook on loopback that records every JSON body posted to it. It answers `status`,
    or 500 to the next `fail_times` posts, or, while `hanging`, nothing at all (until the
    test ends), or, while `trickling`, a header line every 0.2 s without ever finishing."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []  # every post
        self.delivered: list[dict] = []  # the posts answered 2xx
        self.status = 200
        self.fail_times = 0
        self.hanging = False
        self.trickling = False
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                if receiver.hanging:
                    receiver.released.wait(60)
                    return
                if receiver.trickling:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while not receiver.released.wait(0.2):
                        self.wfile.write(b"X-Slow: a\r\n")
                        self.wfile.flush()
                    return
                status = receiver.status
                if receiver.fail_times > 0:
                    receiver.fail_times -= 1
                    status = 500
                if 200 <= status < 300:
                    receiver.delivered.append(body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield receiver
    receiver.released.set()
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One SQLite-backed instance (the default storage of `dagster dev`) for the module: each
    test starts its sensor with a first tick, so the runs of the tests before it are history."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def warehouse(tmp_path) -> WarehouseResource:
    return WarehouseResource(database=str(tmp_path / "warehouse.duckdb"))


def settings(receiver: Receiver, **overrides) -> AlertSettings:
    return AlertSettings(
        webhook_url=receiver.url, ui_url=UI_URL, **{"timeout_seconds": 2, "backoff_seconds": 0, **overrides}
    )


class Collected(logging.Handler):
    """The records a logger emitted: a sensor's log is its own logger, outside the root's tree."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    cursor: Optional[str],
    alert_settings: AlertSettings,
    warehouse: WarehouseResource,
    log: Optional[Collected] = None,
) -> dg.SensorResult:
    """One evaluation of the sensor, as the daemon runs it: the previous tick's cursor in."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alert_settings": alert_settings, "warehouse": warehouse}
    ) as context:
        if log is not None:
            context.log.addHandler(log)
        return sensor(context)


def ledger(warehouse: WarehouseResource) -> list[tuple]:
    """(alert_key, kind, run_id, status, attempts, error) of every ledger row, in attempt order."""
    with duckdb.connect(warehouse.database, read_only=True) as connection:
        return connection.execute(
            "SELECT alert_key, kind, run_id, status, attempts, error FROM monitoring.alert_deliveries "
            "ORDER BY alert_key, attempts"
        ).fetchall()


def fail_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [api_pull, cleaned, unaffected], instance=instance, partition_key=SNAPSHOT_DATE, raise_on_error=False
    )


def fail_check(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [users, unique_user_ids], instance=instance, partition_key=SNAPSHOT_DATE, raise_on_error=False
    )


def check_alert(run_id: str) -> dict:
    return {
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


# --- what an alert says, and that every run is seen -------------------------------------


def test_a_failed_run_outside_any_code_location_posts_its_job_partition_steps_error_and_link(
    instance, receiver, warehouse
):
    """dg.materialize runs in this process: no code-location origin, which @run_failure_sensor ignores."""
    alert_settings = settings(receiver)
    first = tick(run_failure_alert_sensor, instance, None, alert_settings, warehouse)
    result = fail_run(instance)
    assert not result.success and result.dagster_run.remote_job_origin is None

    tick(run_failure_alert_sensor, instance, first.cursor, alert_settings, warehouse)

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
    assert ledger(warehouse) == [(f"run_failure:{run_id}", "run_failure", run_id, "delivered", 1, None)]


FAILING_JOB = """
import dagster as dg

@dg.asset
def pull() -> None:
    raise ConnectionError("the API answered 503 three times")

@dg.asset(deps=[pull])
def downstream() -> None:
    pass

defs = dg.Definitions(assets=[pull, downstream], jobs=[dg.define_asset_job("nightly", selection=[pull, downstream])])
"""


def test_a_run_launched_from_the_cli_alerts_like_one_from_the_ui(receiver, warehouse, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (tmp_path / "nightly.py").write_text(textwrap.dedent(FAILING_JOB))
    alert_settings = settings(receiver)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        first = tick(run_failure_alert_sensor, instance, None, alert_settings, warehouse)

        cli = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-f", "nightly.py", "-j", "nightly"],
            cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 1 and "resulted in failure" in cli.stderr + cli.stdout

        tick(run_failure_alert_sensor, instance, first.cursor, alert_settings, warehouse)
        (run,) = instance.get_runs()
    assert run.remote_job_origin is None
    assert receiver.bodies == [
        {
            "text": (
                f"Run {run.run_id} of job nightly failed in step(s) pull: ConnectionError: the API answered 503 "
                f"three times. Assets not materialized: downstream, pull. {UI_URL}/runs/{run.run_id}"
            ),
            "kind": "run_failure",
            "job": "nightly",
            "run_id": run.run_id,
            "partition": None,
            "failed_steps": ["pull"],
            "assets": ["downstream", "pull"],
            "error": "ConnectionError: the API answered 503 three times",
            "run_url": f"{UI_URL}/runs/{run.run_id}",
        }
    ]


def test_a_failed_check_is_alerted_with_its_counts_and_history_is_not_replayed(instance, receiver, warehouse):
    alert_settings = settings(receiver)
    fail_check(instance)  # before the sensor's first tick: history

    first = tick(check_failure_alert_sensor, instance, None, alert_settings, warehouse)
    assert receiver.bodies == []
    assert AlertState.from_cursor(first.cursor).after > 0

    result = fail_check(instance)
    tick(check_failure_alert_sensor, instance, first.cursor, alert_settings, warehouse)
    assert receiver.bodies == [check_alert(result.run_id)]
    key = f"check_failure:{result.run_id}:users:unique_user_ids:{SNAPSHOT_DATE}"
    assert ledger(warehouse) == [(key, "check_failure", result.run_id, "delivered", 1, None)]


def test_the_same_failure_is_posted_once_across_ticks_restarts_and_a_lost_cursor(instance, receiver, warehouse):
    alert_settings = settings(receiver)
    first = tick(check_failure_alert_sensor, instance, None, alert_settings, warehouse)
    result = fail_check(instance)

    cursor = first.cursor
    for _ in range(10):  # the daemon's ticks; a restarted daemon resumes from the saved cursor
        cursor = tick(check_failure_alert_sensor, instance, cursor, alert_settings, warehouse).cursor
    assert receiver.bodies == [check_alert(result.run_id)]

    # The tick that posted lost its cursor (it timed out after posting, or the cursor was reset
    # to an earlier point): the run is read again, and the ledger knows it was alerted.
    again = tick(check_failure_alert_sensor, instance, first.cursor, alert_settings, warehouse)
    assert receiver.bodies == [check_alert(result.run_id)]
    assert "0 new alert(s), 1 already alerted" in again.skip_reason.skip_message
    assert [row[3:5] for row in ledger(warehouse)] == [("delivered", 1)]


def test_without_a_webhook_the_alert_is_logged_and_recorded_as_logged(instance, receiver, warehouse):
    first = tick(check_failure_alert_sensor, instance, None, settings(receiver), warehouse)
    result = fail_check(instance)
    log = Collected()
    no_webhook = AlertSettings(webhook_url=None, ui_url=UI_URL)
    tick(check_failure_alert_sensor, instance, first.cursor, no_webhook, warehouse, log)

    assert receiver.bodies == []
    (logged,) = [message for message in log.messages if "No alert webhook configured" in message]
    assert logged.startswith("WARNING")
    assert '"check": "unique_user_ids"' in logged
    assert [row[2:6] for row in ledger(warehouse)] == [(result.run_id, "logged", 1, None)]


# --- delivery: bounded, retried, recorded --------------------------------------------------


def test_a_webhook_failing_twice_then_answering_gets_one_delivery_after_three_attempts(instance, receiver, warehouse):
    alert_settings = settings(receiver)
    cursor = tick(check_failure_alert_sensor, instance, None, alert_settings, warehouse).cursor
    result = fail_check(instance)
    receiver.fail_times = 2

    for _ in range(5):
        cursor = tick(check_failure_alert_sensor, instance, cursor, alert_settings, warehouse).cursor

    assert len(receiver.bodies) == 3
    assert receiver.delivered == [check_alert(result.run_id)]
    rows = ledger(warehouse)
    assert [(status, attempts) for _, _, _, status, attempts, _ in rows] == [
        ("retrying", 1), ("retrying", 2), ("delivered", 3)
    ]  # fmt: skip
    assert rows[0][5].startswith("HTTPError: 500 Server Error") and rows[2][5] is None
    assert AlertState.from_cursor(cursor).pending == []


def test_retries_wait_their_backoff_then_give_up_and_say_so(instance, receiver, warehouse):
    alert_settings = settings(receiver, backoff_seconds=0.4, max_attempts=3)
    cursor = tick(check_failure_alert_sensor, instance, None, alert_settings, warehouse).cursor
    fail_check(instance)
    receiver.status = 503
    log = Collected()

    def attempts_after(seconds: float) -> int:
        nonlocal cursor
        time.sleep(seconds)
        cursor = tick(check_failure_alert_sensor, instance, cursor, alert_settings, warehouse, log).cursor
        return len(receiver.bodies)

    assert attempts_after(0) == 1
    assert attempts_after(0) == 1  # the next attempt is 0.4 s away
    assert attempts_after(0.45) == 2
    assert attempts_after(0) == 2  # then 0.8 s
    assert attempts_after(0.85) == 3  # the last allowed attempt
    assert attempts_after(0) == 3  # given up: never tried again
    assert [row[3:5] for row in ledger(warehouse)] == [("retrying", 1), ("retrying", 2), ("failed", 3)]
    with duckdb.connect(warehouse.database, read_only=True) as connection:
        waits = connection.execute(
            "SELECT epoch(next_attempt_at - recorded_at) FROM monitoring.alert_deliveries ORDER BY attempts"
        ).fetchall()
    assert [round(wait, 1) if wait is not None else None for (wait,) in waits] == [0.4, 0.8, None]
    (gave_up,) = [message for message in log.messages if "Gave up" in message]
    assert gave_up.startswith("ERROR") and "after 3 attempts" in gave_up and '"check": "unique_user_ids"' in gave_up
    assert AlertState.from_cursor(cursor).pending == []


def test_backoff_doubles_up_to_an_hour():
    assert [backoff_delay(attempts, 30) for attempts in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]


def test_a_hanging_webhook_does_not_hold_the_tick_and_every_alert_arrives_later(instance, receiver, warehouse):
    alert_settings = settings(receiver, timeout_seconds=0.5, tick_budget_seconds=1.2)
    cursor = tick(check_failure_alert_sensor, instance, None, alert_settings, warehouse).cursor
    result = dg.materialize([listens, *listens_checks], instance=instance)
    receiver.hanging = True

    started = time.monotonic()
    cursor = tick(check_failure_alert_sensor, instance, cursor, alert_settings, warehouse).cursor
    elapsed = time.monotonic() - started

    # Three alerts, 0.5 s per attempt, 1.2 s to post: at most two attempts start, the third
    # alert waits in the cursor, untried. (The webhook would hang for 60 s.)
    hung = len(receiver.bodies)
    assert 1 <= hung <= 2
    assert elapsed < 3.0, elapsed
    waiting = AlertState.from_cursor(cursor).pending
    assert sorted(delivery.attempts for delivery in waiting) == [0] * (3 - hung) + [1] * hung

    receiver.hanging = False
    cursor = tick(check_failure_alert_sensor, instance, cursor, alert_settings, warehouse).cursor
    assert sorted(body["check"] for body in receiver.delivered) == sorted(THREE_CHECKS)
    assert {body["run_id"] for body in receiver.delivered} == {result.run_id}
    rows = ledger(warehouse)
    assert sorted(row[3] for row in rows) == ["delivered"] * 3 + ["retrying"] * hung
    assert all(row[5].startswith("Timeout") for row in rows if row[3] == "retrying")
    assert AlertState.from_cursor(cursor).pending == []


def test_a_webhook_that_trickles_its_answer_is_cut_off_at_the_timeout(receiver):
    receiver.trickling = True  # every read gets a byte within requests' read timeout
    started = time.monotonic()
    error = post_alert(receiver.url, {"kind": "run_failure", "text": "x"}, timeout_seconds=0.5)
    assert error == "Timeout: no answer within 0.5 s"
    assert time.monotonic() - started < 1.0


def test_an_unreachable_webhook_is_an_error_not_an_exception(receiver):
    receiver.server.server_close()  # nothing listens on the port any more
    error = post_alert(receiver.url, {"kind": "run_failure", "text": "x"}, timeout_seconds=1)
    assert error is not None and error.startswith("ConnectionError")


HOLD_THE_FILE = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


def test_while_a_run_holds_the_warehouse_the_ledger_waits_in_the_cursor(instance, receiver, warehouse):
    alert_settings = settings(receiver)
    cursor = tick(check_failure_alert_sensor, instance, None, alert_settings, warehouse).cursor
    result = fail_check(instance)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FILE, warehouse.database],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        busy = tick(check_failure_alert_sensor, instance, cursor, alert_settings, warehouse)
        assert time.monotonic() - started < 2.0  # never waits for the lock
    finally:
        holder.kill()
        holder.wait()

    assert receiver.delivered == [check_alert(result.run_id)]  # delivery does not wait for the file either
    (waiting,) = AlertState.from_cursor(busy.cursor).unwritten
    key = f"check_failure:{result.run_id}:users:unique_user_ids:{SNAPSHOT_DATE}"
    assert waiting[1:6] == [key, "check_failure", result.run_id, "delivered", 1]
    assert "0 ledger row(s) written, 1 waiting for the file" in busy.skip_reason.skip_message

    free = tick(check_failure_alert_sensor, instance, busy.cursor, alert_settings, warehouse)
    assert AlertState.from_cursor(free.cursor).unwritten == []
    assert [row[3:5] for row in ledger(warehouse)] == [("delivered", 1)]
    assert len(receiver.bodies) == 1


def test_the_cursors_of_the_sensors_before_this_one_are_read():
    assert AlertState.from_cursor("1234").after == 1234  # the check sensor's: a storage id
    legacy = RunStatusSensorCursor(record_id=987, update_timestamp="2026-11-01T02:00:00+00:00").to_json()
    assert AlertState.from_cursor(legacy).after == 987  # @run_failure_sensor's
