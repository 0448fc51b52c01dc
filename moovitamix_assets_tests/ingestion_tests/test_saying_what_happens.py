"""A pull says what it does: progress at INFO, each retry at WARNING with its cause and wait
(rate-limited), and an API that never answers fails the day in seconds with one line."""

import logging
import socket
import time

import dagster as dg
import pytest

from moovitamix_api.data import expected_counts
from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.resources.api import MoovitamixApiClient, MoovitamixApiUnreachable, RetryLog
from moovitamix_assets_tests.pipeline import materialize_day, materialized, scalar

DAY = "2026-11-01"


@pytest.fixture
def database(tmp_path):
    return tmp_path / "warehouse.duckdb"


def closed_port() -> int:
    """A loopback port nothing listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_logs(instance: dg.DagsterInstance, run_id: str, level: int) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id) if entry.level == level and not entry.is_dagster_event]


def test_a_dead_api_fails_the_daily_run_in_seconds_with_one_line(database):
    base_url = f"http://127.0.0.1:{closed_port()}"
    instance = dg.DagsterInstance.ephemeral()
    started = time.monotonic()
    result = materialize_day(base_url, database, DAY, instance=instance, raise_on_error=False)
    seconds = time.monotonic() - started

    assert not result.success
    assert seconds < 30, f"a dead API took {seconds:.1f} s to fail the run"
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "raw_snapshots"
    message = failure.event_specific_data.error.message.split("MoovitamixApiUnreachable: ", 1)[-1]
    assert message.startswith(f"The Moovitamix API at {base_url} cannot be reached: connection refused (")
    assert message.strip().count("\n") == 0
    # Not retried by the step's policy: every endpoint already found out.
    assert not [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert not database.exists()  # the warehouse was never opened
    # Each endpoint gave up with the same cause, in the one attempt budget they share.
    warnings = run_logs(instance, result.run_id, logging.WARNING)
    assert {line.split(":")[0] for line in warnings if "retry 1 of 8" in line} == {
        f"GET /{entity} page 1" for entity in ENTITIES
    }


def test_a_flaky_api_says_each_retry_and_lands_every_record(emulator, emulator_settings, database):
    base_url = emulator(error_rate=0.3)
    instance = dg.DagsterInstance.ephemeral()
    started = time.monotonic()
    result = materialize_day(base_url, database, DAY, instance=instance, backoff_factor=0.01)
    windows = 1 + (time.monotonic() - started) // 10

    expected = expected_counts(emulator_settings)
    for entity in ENTITIES:
        assert scalar(database, f"SELECT count(*) FROM raw.{entity}") == expected[entity]["served"]
    assert scalar(database, "SELECT count(*) FROM core.listen_history") == expected["listen_history"]["listens"]
    retries = sum(materialized(result)[f"raw/{entity}"]["retries"] for entity in ENTITIES)

    warnings = run_logs(instance, result.run_id, logging.WARNING)
    retry_lines = [line for line in warnings if "; retry " in line]
    assert retry_lines and all(
        line.startswith("GET /") and " page " in line and ": HTTP 50" in line and " s" in line for line in retry_lines
    )
    # Rate-limited: at most 5 lines per 10 s window; the others are summed up by cause.
    summed = sum(
        int(line.split(" more retries")[0]) for line in warnings if " more retries in the last " in line
    )
    assert len(retry_lines) + summed == retries
    assert len(retry_lines) <= 5 * windows
    info = run_logs(instance, result.run_id, logging.INFO)
    for entity in ENTITIES:
        pages = -(-expected[entity]["served"] // 100)
        assert any(line.startswith(f"GET /{entity}: {pages} pages, {expected[entity]['served']:,} records in ") for line in info)


def test_retry_lines_are_rate_limited_and_summed_up_by_cause():
    lines = []
    log = logging.getLogger("test_retry_log")
    log.warning = lines.append  # type: ignore[method-assign]
    retry_log = RetryLog(log, lines_per_window=3, window_seconds=60)
    for page in range(1, 11):
        retry_log.retry(f"GET /users page {page}", "HTTP 503" if page % 2 else "HTTP 429", 1, 8, 0.5)
    retry_log.flush()
    assert lines == [
        "GET /users page 1: HTTP 503; retry 1 of 8 in 0.5 s",
        "GET /users page 2: HTTP 429; retry 1 of 8 in 0.5 s",
        "GET /users page 3: HTTP 503; retry 1 of 8 in 0.5 s",
        "7 more retries in the last 0 s: HTTP 429 x4, HTTP 503 x3",
    ]


def test_progress_is_logged_while_a_pull_runs(emulator_url, monkeypatch, caplog):
    import moovitamix_assets.resources.api as api

    monkeypatch.setattr(api, "PROGRESS_SECONDS", 0.0)  # a line per page, instead of every 5 s
    client = MoovitamixApiClient(emulator_url, page_size=100)
    with caplog.at_level(logging.INFO, logger="dagster.builtin.moovitamix_api"):
        pages = list(client.fetch_all_pages("users"))
    progress = [record.getMessage() for record in caplog.records if "records/s" in record.getMessage()]
    assert len(pages) == 12
    assert progress[0].startswith("GET /users: page 1 of 12, 100 records, ")
    assert progress[-1].startswith("GET /users: 12 pages, 1,155 records in ")


def test_an_api_that_answered_once_keeps_the_full_retry_budget(emulator):
    """The circuit opens only on an API that never answered: a storm of 503 is an answer."""
    base_url = emulator(error_rate=1.0)
    client = MoovitamixApiClient(base_url, max_retries=3, backoff_factor=0.01, backoff_max_seconds=0.05)
    with pytest.raises(Exception) as failure:
        list(client.fetch_all_pages("users"))
    assert not isinstance(failure.value, MoovitamixApiUnreachable)
    assert "HTTP 50" in str(failure.value) and "after 3 retries" in str(failure.value)
    assert client.reachability.answered
