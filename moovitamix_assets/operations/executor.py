"""The in-process executor, preceded in every run by the recovery of dead runs.

The daemon's recovery sensor does not see a run executed from the CLI with no daemon up, and a
step waiting for a slot held by a dead run waits forever. An executor is the one place every run
of a job passes, whoever launched it, after the run starts and before any step claims a pool
slot (the in-process executor initializes resources and claims slots inside its `execute`).
"""

import os
import socket
import sys
from collections.abc import Iterator

import dagster as dg

# The event types an executor yields (Dagster's own executors use them; they are not in `dg`).
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._utils.error import serializable_error_info_from_exc_info

from moovitamix_assets.operations.recovery import WORKER_HOST_METADATA, recover_dead_runs


class RecoveringExecutor(dg.Executor):
    """Reports this run's worker (pid, host), ends the runs whose worker is gone and frees their
    slots, then hands the plan to the executor it wraps."""

    def __init__(self, executor: dg.Executor):
        self._executor = executor

    @property
    def retries(self):
        return self._executor.retries

    @property
    def step_dependency_config(self):
        return self._executor.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[DagsterEvent]:
        hostname = socket.gethostname()
        yield DagsterEvent.engine_event(
            plan_context,
            f"Run worker: pid {os.getpid()} on {hostname}",
            EngineEventData({"pid": str(os.getpid()), WORKER_HOST_METADATA: hostname}),
        )
        try:
            recoveries = recover_dead_runs(
                plan_context.instance, found_by=f"run {plan_context.run_id} before its first step", this_host=hostname
            )
        except Exception:  # recovery is a courtesy to this run: it must never stop it
            yield DagsterEvent.engine_event(
                plan_context,
                "Could not look for dead runs; going on",
                EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
            )
            recoveries = []
        for recovery in recoveries:
            yield DagsterEvent.engine_event(
                plan_context,
                f"Recovered run {recovery.run_id} ({recovery.job_name}): {recovery.message}",
                EngineEventData({"recovered_run_id": recovery.run_id, "action": recovery.action}),
            )
        yield from self._executor.execute(plan_context, execution_plan)


@dg.executor(name="in_process_with_recovery", config_schema=dg.in_process_executor.config_schema)
def in_process_executor_with_recovery(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Executes all steps in the run's process, as `dg.in_process_executor` (same config), after
    ending the runs whose worker died and freeing their pool slots."""
    return RecoveringExecutor(dg.in_process_executor.executor_creation_fn(init_context))
