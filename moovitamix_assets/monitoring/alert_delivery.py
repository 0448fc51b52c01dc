"""Alert delivery that never holds up the sensor posting it.

A sensor tick that outlives Dagster's sensor timeout (60 s) is dropped with its cursor: the
same alerts would be read and posted again on the next tick, and again. So a tick posts for
a bounded time only: each attempt is cut off after `timeout_seconds` whatever the webhook
does, and a tick starts no attempt that would end past `tick_budget_seconds`. What does not
fit waits in the cursor for the next tick; a failed attempt (connection error, timeout,
non-2xx) is tried again on a later tick after an exponential backoff, up to `max_attempts`,
then given up and logged.

The cursor (`AlertState`) holds everything a tick must not forget: where the sensor stopped
reading runs, the deliveries still due, the keys recently alerted (an alert key is posted
once), and the ledger rows of `monitoring.alert_deliveries` not yet written. Those rows
wait there because DuckDB takes one writer process per file and a run may hold it for
minutes: a tick tries the file once, without waiting, and leaves the rows for a later tick
when it is busy. The ledger also answers "was this key alerted already?" for a cursor that
was lost or rewound.
"""

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import dagster as dg
import duckdb
import requests

from moovitamix_assets.resources.warehouse import WarehouseResource, run_sql_file, set_variables, transaction

SQL = Path(__file__).parent / "sql"

ALERT_DELIVERIES = "monitoring.alert_deliveries"

DELIVERED = "delivered"
RETRYING = "retrying"
FAILED = "failed"
LOGGED = "logged"

# Keys remembered in the cursor, beside the position that moves forward past what was read:
# a guard against a run's events read twice, short enough to keep the cursor small. (A
# cursor rewound further back is caught by the ledger.)
RECENT_KEYS = 500
# Ledger rows kept in the cursor while the DuckDB file stays busy; past this the oldest are
# dropped (the log still has every attempt), so a file locked for days cannot bloat the cursor.
UNWRITTEN_ROWS = 2000
MAX_BACKOFF_SECONDS = 3600.0

WEBHOOK_URL_ENV = "MOOVITAMIX_ALERT_WEBHOOK_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"

Logger = Union[logging.Logger, logging.LoggerAdapter, dg.DagsterLogManager]


class AlertSettings(dg.ConfigurableResource):
    """Where alerts go (a Slack-compatible webhook, or the log when unset), where run links
    point, and how long a sensor tick may spend posting them."""

    webhook_url: Optional[str] = None
    ui_url: str = DEFAULT_UI_URL
    # One attempt is cut off after this, whatever the webhook does (hangs, trickles bytes).
    timeout_seconds: float = 5.0
    # A tick starts no attempt that could end past this: well inside Dagster's 60 s sensor timeout.
    tick_budget_seconds: float = 20.0
    # Attempts per alert before it is given up; the n-th retry waits backoff_seconds * 2**(n-1).
    max_attempts: int = 6
    backoff_seconds: float = 30.0

    def run_url(self, run_id: Optional[str]) -> Optional[str]:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if run_id else None


@dataclasses.dataclass
class Delivery:
    """An alert still to be delivered: its key, the message, the attempts made, when the next is due."""

    key: str
    message: dict
    attempts: int = 0
    next_attempt_at: float = 0.0  # epoch seconds


@dataclasses.dataclass
class AlertState:
    """An alert sensor's cursor: the storage id of the last run event read, the deliveries due,
    the keys already alerted, and the ledger rows not yet written to DuckDB."""

    after: int
    pending: list[Delivery] = dataclasses.field(default_factory=list)
    recent_keys: list[str] = dataclasses.field(default_factory=list)
    unwritten: list[list[Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def from_cursor(cls, cursor: str) -> "AlertState":
        data = json.loads(cursor)
        # The cursors of the sensors before this module: a bare storage id (the check sensor)
        # or @run_failure_sensor's RunStatusSensorCursor; both count in run-event storage ids.
        if isinstance(data, int):
            return cls(after=data)
        if "record_id" in data:
            return cls(after=int(data["record_id"]))
        return cls(
            after=data["after"],
            pending=[Delivery(**delivery) for delivery in data["pending"]],
            recent_keys=data["recent_keys"],
            unwritten=data["unwritten"],
        )

    def to_cursor(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str)


def backoff_delay(attempts: int, backoff_seconds: float) -> float:
    """Seconds to wait after the attempts-th failed attempt: backoff, 2x, 4x, ... at most an hour."""
    return min(backoff_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)


def enqueue(state: AlertState, alerts: Sequence[tuple[str, dict]], recorded_keys: set[str]) -> int:
    """Queues the (key, message) alerts whose key was neither queued recently nor recorded in
    the ledger; the number queued."""
    known = set(state.recent_keys) | recorded_keys
    queued = 0
    for key, message in alerts:
        if key in known:
            continue
        known.add(key)
        state.pending.append(Delivery(key=key, message=message))
        state.recent_keys.append(key)
        queued += 1
    del state.recent_keys[:-RECENT_KEYS]
    return queued


def post_alert(url: str, message: dict, timeout_seconds: float) -> Optional[str]:
    """POSTs the message as JSON; None when the webhook answered 2xx, else why not.

    requests' timeout bounds the connection and each read, not the whole exchange (a webhook
    that trickles its answer, or a slow DNS lookup, outlasts it): the post runs in a thread
    that is abandoned at the deadline. It ends by itself at requests' own timeouts.
    """
    outcome: list[Optional[str]] = []

    def post() -> None:
        try:
            response = requests.post(url, json=message, timeout=timeout_seconds)
            response.raise_for_status()
            outcome.append(None)
        except requests.RequestException as error:
            outcome.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=post, name="alert-post", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    return outcome[0] if outcome else f"Timeout: no answer within {timeout_seconds:g} s"


def _ledger_row(
    delivery: Delivery, status: str, error: Optional[str] = None, next_attempt_at: Optional[float] = None
) -> list[Any]:
    """A row of monitoring.alert_deliveries, in the column order of insert_alert_deliveries.sql."""
    message = delivery.message
    return [
        _utc_iso(time.time()), delivery.key, message.get("kind"), message.get("run_id"), status,
        max(delivery.attempts, 1), error, _utc_iso(next_attempt_at) if next_attempt_at is not None else None,
        message.get("text", ""),
    ]  # fmt: skip


def _utc_iso(epoch_seconds: float) -> str:
    # Naive UTC, as TIMESTAMP columns hold it; a string, as the cursor is JSON.
    return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc).replace(tzinfo=None).isoformat()


def deliver_due(state: AlertState, settings: AlertSettings, log: Logger) -> dict[str, int]:
    """Attempts the pending deliveries that are due, oldest first, within the tick's budget;
    records each attempt as a ledger row in the state. The number of attempts per outcome."""
    outcomes = {DELIVERED: 0, RETRYING: 0, FAILED: 0, LOGGED: 0}
    attempt_seconds = min(settings.timeout_seconds, settings.tick_budget_seconds)
    deadline = time.monotonic() + settings.tick_budget_seconds
    for delivery in list(state.pending):
        if delivery.next_attempt_at > time.time():
            continue
        if not settings.webhook_url:
            log.warning(f"No alert webhook configured ({WEBHOOK_URL_ENV}); alert: {json.dumps(delivery.message)}")
            status, error, next_attempt_at = LOGGED, None, None
        elif deadline - time.monotonic() < attempt_seconds:
            break  # the rest waits for the next tick, its attempts untouched
        else:
            delivery.attempts += 1
            error = post_alert(settings.webhook_url, delivery.message, attempt_seconds)
            next_attempt_at = None
            if error is None:
                status = DELIVERED
            elif delivery.attempts >= settings.max_attempts:
                status = FAILED
                log.error(
                    f"Gave up the {delivery.message.get('kind')} alert after {delivery.attempts} attempts "
                    f"({error}); alert: {json.dumps(delivery.message)}"
                )
            else:
                status = RETRYING
                next_attempt_at = time.time() + backoff_delay(delivery.attempts, settings.backoff_seconds)
                delivery.next_attempt_at = next_attempt_at
                log.warning(
                    f"Could not deliver the {delivery.message.get('kind')} alert {delivery.key} "
                    f"(attempt {delivery.attempts} of {settings.max_attempts}): {error}"
                )
        state.unwritten.append(_ledger_row(delivery, status, error, next_attempt_at))
        outcomes[status] += 1
        if status != RETRYING:
            state.pending.remove(delivery)
    del state.unwritten[:-UNWRITTEN_ROWS]
    return outcomes


def create_alert_deliveries(connection: duckdb.DuckDBPyConnection) -> None:
    run_sql_file(connection, SQL / "create_alert_deliveries.sql")


def with_ledger(warehouse: WarehouseResource, log: Logger, work: Callable[[duckdb.DuckDBPyConnection], None]) -> bool:
    """Runs work on the warehouse, opened at once with the ledger table; False, having done
    nothing, when another process holds the file (a tick never waits for a run's write lock)
    or the file fails: the rows stay in the cursor for a later tick."""
    try:
        # lock_wait_seconds=0: one try, and the lock error straight away.
        with warehouse.model_copy(update={"lock_wait_seconds": 0}).get_connection() as connection:
            create_alert_deliveries(connection)
            work(connection)
        return True
    except duckdb.Error as error:
        busy = isinstance(error, duckdb.IOException) and "lock" in str(error).lower()
        (log.info if busy else log.warning)(f"Alert ledger not written this tick, kept for the next: {error}")
        return False


def write_ledger(connection: duckdb.DuckDBPyConnection, state: AlertState) -> None:
    """Writes the state's unwritten ledger rows (a row written before is skipped), then forgets them."""
    if state.unwritten:
        with transaction(connection):
            connection.executemany((SQL / "insert_alert_deliveries.sql").read_text(), state.unwritten)
    state.unwritten = []


def recorded_alert_keys(connection: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> set[str]:
    """The keys among these that the ledger already holds."""
    if not keys:
        return set()
    set_variables(connection, {"alert_keys": list(keys)})
    return {key for (key,) in connection.execute((SQL / "recorded_alert_keys.sql").read_text()).fetchall()}


def deliver_alerts(
    state: AlertState,
    alerts: Sequence[tuple[str, dict]],
    settings: AlertSettings,
    warehouse: WarehouseResource,
    log: Logger,
) -> str:
    """One tick's delivery: queue the new alerts (once per key), post what is due within the
    budget, write the ledger when the file is free. Never raises for the webhook or the file:
    the cursor it leaves in `state` must reach Dagster. A summary for the tick."""
    recorded: set[str] = set()
    before = len(state.unwritten)

    def write_and_read_keys(connection: duckdb.DuckDBPyConnection) -> None:
        write_ledger(connection, state)
        recorded.update(recorded_alert_keys(connection, [key for key, _ in alerts]))

    if alerts or state.unwritten:
        with_ledger(warehouse, log, write_and_read_keys)
    written = before - len(state.unwritten)
    queued = enqueue(state, alerts, recorded)
    outcomes = deliver_due(state, settings, log)
    if state.unwritten:
        before = len(state.unwritten)
        if with_ledger(warehouse, log, lambda connection: write_ledger(connection, state)):
            written += before
    attempted = ", ".join(f"{count} {status}" for status, count in outcomes.items() if count) or "none"
    return (
        f"{queued} new alert(s), {len(alerts) - queued} already alerted; attempts: {attempted}; "
        f"{len(state.pending)} pending; {written} ledger row(s) written, {len(state.unwritten)} waiting for the file."
    )
