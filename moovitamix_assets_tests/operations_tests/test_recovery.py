"""A run whose process dies never wedges the runs after it: its worker is found gone, the run is
marked failed and its `duckdb` pool slot freed, whether the next run comes from the CLI (it
recovers before its first step) or from the daemon (the recovery sensor does it)."""

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import dagster as dg
import duckdb
import pytest
import requests

from moovitamix_api.data import expected_counts
from moovitamix_assets.operations.recovery import (
    SLOTS_FREED,
    RunWorker,
    recover_dead_runs,
    run_worker,
    worker_is_gone,
)
from moovitamix_assets.resources.warehouse import DUCKDB_POOL
from moovitamix_assets_tests.operations_tests.pool_jobs import run_pool_job

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST = socket.gethostname()
DAY, NEXT_DAY = "2026-11-01", "2026-11-02"
# Each page of the killed run's pull takes seconds: it is killed inside its raw step.
SLOW_PAGES_MS = 2000
WORKER_EVENTS = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.ENGINE_EVENT}


@pytest.fixture
def dagster_home(tmp_path) -> Path:
    """A Dagster instance configured as `make dev` configures it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    # Its storage created now: a daemon and a run that both create it at once collide.
    dg.DagsterInstance.from_config(str(home)).dispose()
    return home


@contextlib.contextmanager
def started(command: list, env: dict, log: Path, stop_signal: int = signal.SIGKILL) -> Iterator[subprocess.Popen]:
    """The command in its own session; when the block exits, its whole process group gets
    stop_signal, then SIGKILL if it is still there after 30 s."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(part) for part in command], cwd=ROOT, env=env,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, stop_signal)
        try:
            process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def claimed_slots(instance: dg.DagsterInstance) -> list:
    return instance.event_log_storage.get_concurrency_info(DUCKDB_POOL).claimed_slots


def wait_for_a_step_holding_the_pool(home: Path, process: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    """The id of the run (the only one) once it holds the duckdb slot and has started that step."""
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            for run_id in {slot.run_id for slot in claimed_slots(instance)}:
                if instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records:
                    return run_id
            assert time.monotonic() < deadline, f"no step took the pool within {timeout} s: {log.read_text()[-3000:]}"
            time.sleep(0.1)


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout} s: {log.read_text()[-3000:]}"
        time.sleep(0.2)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def ingestion_env(home: Path, tmp_path: Path, base_url: str) -> dict:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_API_URL": base_url,
        "MOOVITAMIX_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "MOOVITAMIX_STAGING_PATH": str(tmp_path / "staging"),
        "MOOVITAMIX_LAKE_PATH": str(tmp_path / "lake"),
        "MOOVITAMIX_MODEL_DIR": str(tmp_path / "models"),
        "MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE": "1",  # the emulator is pinned to past days
    }


def daily_ingestion(day: str, verb: str = "execute") -> list:
    """The CLI command that runs (execute) or queues for the daemon (launch) a day's ingestion."""
    location = ["-m", "moovitamix_assets.definitions"] if verb == "execute" else ["-w", "workspace.yaml"]
    return [
        BIN / "dagster", "job", verb, *location, "-j", "daily_ingestion",
        "--tags", json.dumps({"dagster/partition": day}),
    ]  # fmt: skip


def next_day_without_latency(base_url: str) -> None:
    response = requests.post(f"{base_url}/_admin/state", json={"as_of": NEXT_DAY, "latency_ms": 0}, timeout=10)
    response.raise_for_status()


def runs_of_day(instance: dg.DagsterInstance, day: str) -> list:
    return [run for run in instance.get_runs() if run.tags.get("dagster/partition") == day]


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return failure.message


def assert_killed_mid_step(instance: dg.DagsterInstance, run_id: str) -> None:
    """The run had started a step (in the pool) that never ended."""
    def steps(event_type):
        return {event.step_key for event in instance.all_logs(run_id, of_type=event_type)}

    started_steps = steps(dg.DagsterEventType.STEP_START)
    ended_steps = steps(dg.DagsterEventType.STEP_SUCCESS) | steps(dg.DagsterEventType.STEP_FAILURE)
    assert started_steps - ended_steps, (started_steps, ended_steps)


def assert_next_day_landed(emulator_settings, database: Path) -> None:
    """The next day whole in raw and in core; the killed day's raw partition absent or whole."""
    expected = expected_counts(emulator_settings.replace(as_of=dt.date.fromisoformat(NEXT_DAY)))
    killed_day = expected_counts(emulator_settings)
    with duckdb.connect(str(database), read_only=True) as connection:
        def count(sql: str, params=()) -> int:
            return connection.execute(sql, params).fetchall()[0][0]

        for entity in ("users", "tracks", "listen_history"):
            raw = f"SELECT count(*) FROM raw.{entity} WHERE snapshot_date = ?"
            assert count(raw, [NEXT_DAY]) == expected[entity]["served"], entity
            assert count(raw, [DAY]) in (0, killed_day[entity]["served"]), entity
        assert count("SELECT count(*) FROM core.users") == expected["users"]["served"] == 1160
        assert count("SELECT count(*) FROM core.tracks") == expected["tracks"]["served"] == 1064
        assert count("SELECT count(*) FROM core.listen_history") == expected["listen_history"]["listens"]


# --- a worker, alive or gone ---------------------------------------------------------------


def test_a_worker_is_gone_once_killed_and_never_confused_with_a_younger_process():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.2)
        worker = RunWorker(pid=sleeper.pid, hostname=HOST, reported_at=time.time())
        assert worker_is_gone(worker, HOST) is False
        # The same pid reported before this process existed: the reporter died, the pid was reused.
        assert worker_is_gone(RunWorker(sleeper.pid, HOST, reported_at=time.time() - 3600), HOST) is True
        # A worker on another host cannot be judged from here.
        assert worker_is_gone(RunWorker(sleeper.pid, "another-host", worker.reported_at), HOST) is None
        sleeper.send_signal(signal.SIGKILL)
        time.sleep(0.2)
        assert worker_is_gone(worker, HOST) is True  # a zombie: not yet waited for
        sleeper.wait(timeout=10)
        assert worker_is_gone(worker, HOST) is True
        # Reported by RUN_START only (no host): taken as this host's.
        assert worker_is_gone(RunWorker(sleeper.pid, None, worker.reported_at), HOST) is True
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_a_run_through_the_recovery_executor_reports_its_worker_and_host(dagster_home):
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        before = time.time()
        result = run_pool_job(instance)
        assert result.success
        worker = run_worker(instance.all_logs(result.run_id, of_type=WORKER_EVENTS))
    assert (worker.pid, worker.hostname) == (os.getpid(), HOST)
    assert before <= worker.reported_at <= time.time()


def test_the_daily_job_recovers_and_retries_a_bounded_number_of_times(dagster_home):
    from moovitamix_assets.definitions import defs
    from moovitamix_assets.operations.executor import in_process_executor_with_recovery

    job = defs.resolve_job_def("daily_ingestion")
    assert job.executor_def is in_process_executor_with_recovery
    # The daemon re-executes a failed run from its failure, twice at most: it counts the
    # retries over the run's group, so a day that keeps failing stops there.
    assert {key: job.tags[key] for key in ("dagster/max_retries", "dagster/retry_strategy")} == {
        "dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE",
    }  # fmt: skip
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert (instance.run_retries_enabled, instance.run_retries_max_retries) == (True, 0)  # other jobs: never
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
    sensor = defs.resolve_sensor_def("dead_run_recovery_sensor")
    assert (sensor.default_status, sensor.minimum_interval_seconds) == (dg.DefaultSensorStatus.RUNNING, 30)


# --- dead runs on a real instance ----------------------------------------------------------


def pool_job_command(seconds: float) -> list:
    return [sys.executable, "-m", "moovitamix_assets_tests.operations_tests.pool_jobs", str(seconds)]


def start_holding_the_pool(home: Path, log: Path) -> contextlib.AbstractContextManager:
    return started(pool_job_command(600), {**os.environ, "DAGSTER_HOME": str(home)}, log)


def test_a_dead_run_is_marked_failed_its_slot_freed_and_the_next_run_goes_through(dagster_home, tmp_path):
    log = tmp_path / "holder.log"
    with start_holding_the_pool(dagster_home, log) as holder:
        run_id = wait_for_a_step_holding_the_pool(dagster_home, holder, log)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            # Alive: left alone, however often it is looked at.
            assert recover_dead_runs(instance, found_by="the test") == []
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            assert [slot.run_id for slot in claimed_slots(instance)] == [run_id]
            kill(holder)

            # The next run recovers before its step claims the slot, and goes through (a step
            # blocked by the pool would wait for ever: killed at the timeout).
            finished = subprocess.run(
                pool_job_command(0), cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert finished.returncode == 0, finished.stderr[-3000:]
            next_run_id = finished.stdout.split()[-1]
            assert instance.get_run_by_id(next_run_id).status == dg.DagsterRunStatus.SUCCESS
            dead = instance.get_run_by_id(run_id)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            assert dead.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
            assert failure_message(instance, run_id) == (
                f"The run's worker process (pid {holder.pid} on {HOST}) is gone: killed or crashed without "
                f"ending the run. Marked failed, its pool slots freed, by run {next_run_id} before its first step."
            )
            assert claimed_slots(instance) == []
            # Once recovered, nothing is left to do.
            assert recover_dead_runs(instance, found_by="the test") == []


def test_slots_still_held_by_a_run_that_ended_are_freed(dagster_home, tmp_path):
    log = tmp_path / "holder.log"
    with start_holding_the_pool(dagster_home, log) as holder:
        run_id = wait_for_a_step_holding_the_pool(dagster_home, holder, log)
        kill(holder)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # As a code server does when its run's process dies: the run fails, its slot stays claimed.
        instance.report_run_failed(instance.get_run_by_id(run_id))
        assert [slot.run_id for slot in claimed_slots(instance)] == [run_id]

        (recovery,) = recover_dead_runs(instance, found_by="the test")
        assert (recovery.run_id, recovery.action) == (run_id, SLOTS_FREED)
        assert recovery.message == f"Run {run_id} ended (FAILURE) but still held pool slots: freed by the test."
        assert claimed_slots(instance) == []
        assert len(instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)) == 1  # not failed twice


# --- the daily ingestion, killed mid-write, then the next day --------------------------------


@pytest.mark.slow
def test_a_run_killed_mid_write_does_not_wedge_the_next_day_from_the_cli(
    emulator, emulator_settings, dagster_home, tmp_path
):
    base_url = emulator(latency_ms=SLOW_PAGES_MS)
    env = ingestion_env(dagster_home, tmp_path, base_url)
    log = tmp_path / "killed_run.log"
    with started(daily_ingestion(DAY), env, log) as dying:
        dead_run_id = wait_for_a_step_holding_the_pool(dagster_home, dying, log)
        kill(dying)

    next_day_without_latency(base_url)
    # No daemon: only the run itself can free the slot. A wedged run is killed at the timeout.
    finished = subprocess.run(
        [str(part) for part in daily_ingestion(NEXT_DAY)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert_killed_mid_step(instance, dead_run_id)
        (next_run,) = runs_of_day(instance, NEXT_DAY)
        assert next_run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(dead_run_id).status == dg.DagsterRunStatus.FAILURE
        assert failure_message(instance, dead_run_id) == (
            f"The run's worker process (pid {dying.pid} on {HOST}) is gone: killed or crashed without "
            f"ending the run. Marked failed, its pool slots freed, by run {next_run.run_id} before its first step."
        )
        assert claimed_slots(instance) == []
    assert_next_day_landed(emulator_settings, tmp_path / "warehouse.duckdb")


@pytest.mark.slow
def test_a_run_killed_mid_write_does_not_wedge_the_next_day_from_the_daemon(
    emulator, emulator_settings, dagster_home, tmp_path
):
    base_url = emulator(latency_ms=SLOW_PAGES_MS)
    env = ingestion_env(dagster_home, tmp_path, base_url)
    log = tmp_path / "killed_run.log"
    # The daemon (schedules, sensors, the run queue) up as under `make dev` when a run dies:
    # killed after the recovery sensor's first tick, the run is found at its next one.
    daemon_log = tmp_path / "daemon.log"
    with started([BIN / "dagster-daemon", "run", "-w", "workspace.yaml"], env, daemon_log, signal.SIGTERM) as daemon:
        wait_for_line(daemon_log, "Sensor dead_run_recovery_sensor skipped: No dead run.", daemon)
        with started(daily_ingestion(DAY), env, log) as dying:
            dead_run_id = wait_for_a_step_holding_the_pool(dagster_home, dying, log)
            kill(dying)

        next_day_without_latency(base_url)
        launched = subprocess.run(
            [str(part) for part in daily_ingestion(NEXT_DAY, verb="launch")], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr[-3000:]

        # Queued: the run queue holds it while the dead run's slot is claimed, until the sensor
        # (every 30 s) frees it; then the daemon launches it. (A run that never starts cannot
        # recover anything itself: the sensor is what frees it.)
        deadline = time.monotonic() + 150
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            while True:
                (next_run,) = runs_of_day(instance, NEXT_DAY)
                if next_run.is_finished or time.monotonic() > deadline:
                    break
                assert daemon.poll() is None, daemon_log.read_text()[-3000:]
                time.sleep(1)
            assert next_run.status == dg.DagsterRunStatus.SUCCESS, daemon_log.read_text()[-3000:]
            assert_killed_mid_step(instance, dead_run_id)
            assert instance.get_run_by_id(dead_run_id).status == dg.DagsterRunStatus.FAILURE
            assert failure_message(instance, dead_run_id) == (
                f"The run's worker process (pid {dying.pid} on {HOST}) is gone: killed or crashed without "
                "ending the run. Marked failed, its pool slots freed, by dead_run_recovery_sensor."
            )
            (failed,) = instance.all_logs(dead_run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            (start,) = instance.all_logs(next_run.run_id, of_type=dg.DagsterEventType.RUN_START)
            assert start.timestamp > failed.timestamp
            assert claimed_slots(instance) == []
    assert_next_day_landed(emulator_settings, tmp_path / "warehouse.duckdb")
