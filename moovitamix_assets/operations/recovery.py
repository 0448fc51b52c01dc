"""Runs whose process died (SIGKILL, the OOM killer, a reboot) are ended and their pool slots freed,
so that they never wedge the runs after them.

Left alone, Dagster keeps such a run STARTED with its `duckdb` slot claimed, and every later
step of the pool waits for that slot forever: run monitoring cannot see the death (the default
run launcher has no worker health check, and a run executed from the CLI has no launcher at
all), and it frees the slots of ended runs only.

A run's worker reports itself: the RUN_START event carries the pid of the process that wrote
it, and `in_process_executor_with_recovery` adds the host. A live process with that pid that
was created no later than the report is that worker, since a pid is reused only once its
process is gone; a pid with no process, a zombie, or a younger process means the worker died.
"""

import socket
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import dagster as dg
import psutil

# The run's failure reason, as Dagster's own run monitoring records it: not a step's failure,
# so run retries apply even where they are switched off for asset failures.
from dagster._core.events import JobFailureData, RunFailureReason

# The engine event metadata key under which a run worker reports its host (its pid is the event's).
WORKER_HOST_METADATA = "run_worker_host"

# A process's create time (boot time + clock ticks) and an event's timestamp (time.time()) are
# two readings of the clock; a worker is never confused with a process started a second later.
CLOCK_TOLERANCE_SECONDS = 1.0

# Runs whose worker should be alive: STARTING runs have no worker report yet and hold no slot
# (run monitoring's start timeout ends them).
RUNS_WITH_A_WORKER = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]

MARKED_FAILED = "marked failed"
MARKED_CANCELED = "marked canceled"
SLOTS_FREED = "slots freed"


@dataclass(frozen=True)
class RunWorker:
    """The process that executes a run's steps, as that process last reported itself."""

    pid: int
    # None when only RUN_START reported it (a run outside the recovery executor): the warehouse
    # is one DuckDB file on one machine, so such a run is taken to have run on this host.
    hostname: Optional[str]
    reported_at: float  # POSIX time at which the process was alive


@dataclass(frozen=True)
class Recovery:
    """What was done to one run, and why."""

    run_id: str
    job_name: Optional[str]
    action: str  # MARKED_FAILED, MARKED_CANCELED or SLOTS_FREED
    message: str


def run_worker(events: Iterable[dg.EventLogEntry]) -> Optional[RunWorker]:
    """The run's worker according to its event log (in order): the latest RUN_START or host report;
    None before the run started."""
    worker = None
    for event in events:
        dagster_event = event.dagster_event
        if dagster_event is None or dagster_event.pid is None:
            continue
        if dagster_event.event_type == dg.DagsterEventType.RUN_START:
            hostname = None
        elif (
            dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
            and WORKER_HOST_METADATA in dagster_event.engine_event_data.metadata
        ):
            hostname = str(dagster_event.engine_event_data.metadata[WORKER_HOST_METADATA].value)
        else:
            continue
        worker = RunWorker(pid=dagster_event.pid, hostname=hostname, reported_at=event.timestamp)
    return worker


def process_create_time(pid: int) -> Optional[float]:
    """When the process with this pid was created; None when there is none, or only its zombie
    (it executes nothing: a killed child whose parent has not yet waited for it)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None


def worker_is_gone(
    worker: RunWorker,
    this_host: str,
    create_time_of: Callable[[int], Optional[float]] = process_create_time,
) -> Optional[bool]:
    """True when the worker's process no longer exists, False when it does, None when this host
    cannot tell (the worker ran on another one)."""
    if worker.hostname is not None and worker.hostname != this_host:
        return None
    created = create_time_of(worker.pid)
    return created is None or created > worker.reported_at + CLOCK_TOLERANCE_SECONDS


def recover_dead_runs(
    instance: dg.DagsterInstance,
    found_by: str,
    this_host: Optional[str] = None,
    create_time_of: Callable[[int], Optional[float]] = process_create_time,
) -> list[Recovery]:
    """Ends every run of the instance whose worker is gone on this host (FAILURE; CANCELED when it
    was being canceled) and frees its pool slots, then frees the slots still held by runs that
    have ended or no longer exist. `found_by` names the caller in the messages."""
    this_host = this_host or socket.gethostname()
    recoveries = []
    for run in instance.get_runs(dg.RunsFilter(statuses=RUNS_WITH_A_WORKER)):
        worker = run_worker(
            instance.all_logs(run.run_id, of_type={dg.DagsterEventType.RUN_START, dg.DagsterEventType.ENGINE_EVENT})
        )
        if worker is not None and worker_is_gone(worker, this_host, create_time_of):
            recovery = end_dead_run(instance, run, worker, this_host, found_by)
            if recovery:
                recoveries.append(recovery)
    recoveries.extend(free_slots_of_ended_runs(instance, found_by))
    return recoveries


def end_dead_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, worker: RunWorker, this_host: str, found_by: str
) -> Optional[Recovery]:
    current = instance.get_run_by_id(run.run_id)
    if current is None or current.is_finished:  # ended meanwhile (its code server saw the death)
        return None
    canceling = current.status == dg.DagsterRunStatus.CANCELING
    action = MARKED_CANCELED if canceling else MARKED_FAILED
    message = (
        f"The run's worker process (pid {worker.pid} on {worker.hostname or this_host}) is gone: killed "
        f"or crashed without ending the run. {action.capitalize()}, its pool slots freed, by {found_by}."
    )
    if canceling:
        instance.report_run_canceled(current, message)
    else:
        instance.report_run_failed(
            current, message, JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
        )
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return Recovery(run_id=run.run_id, job_name=run.job_name, action=action, message=message)


def free_slots_of_ended_runs(instance: dg.DagsterInstance, found_by: str) -> list[Recovery]:
    """Frees the pool slots (and queued slot claims) of runs that ended or were deleted: a run ended
    from outside (by its code server, run monitoring, or a person in the UI) keeps them otherwise,
    until the daemon's free_slots_after_run_end_seconds, and there is no daemon behind the CLI."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders: set[str] = set()
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        holders |= {slot.run_id for slot in info.claimed_slots}
        holders |= {step.run_id for step in info.pending_steps}
    if not holders:
        return []
    runs = {run.run_id: run for run in instance.get_runs(dg.RunsFilter(run_ids=sorted(holders)))}
    recoveries = []
    for run_id in sorted(holders):
        run = runs.get(run_id)
        if run is not None and not run.is_finished:
            continue
        storage.free_concurrency_slots_for_run(run_id)
        state = f"ended ({run.status.value})" if run else "no longer exists"
        recoveries.append(
            Recovery(
                run_id=run_id,
                job_name=run.job_name if run else None,
                action=SLOTS_FREED,
                message=f"Run {run_id} {state} but still held pool slots: freed by {found_by}.",
            )
        )
    return recoveries
