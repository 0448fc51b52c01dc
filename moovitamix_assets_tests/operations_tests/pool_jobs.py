"""A tiny job in the `duckdb` pool, run through the recovery executor: a run to kill while it
holds the pool's slot, or a run that must get through after it.

    python -m moovitamix_assets_tests.operations_tests.pool_jobs SECONDS

runs it on the instance of $DAGSTER_HOME, holding the slot for SECONDS, and prints the run's id.
"""

import sys
import time

import dagster as dg

from moovitamix_assets.operations.executor import in_process_executor_with_recovery
from moovitamix_assets.resources.warehouse import DUCKDB_POOL


@dg.op(pool=DUCKDB_POOL, config_schema={"seconds": dg.Field(float, default_value=0.0)})
def hold_the_pool(context: dg.OpExecutionContext) -> None:
    time.sleep(context.op_config["seconds"])


@dg.job(executor_def=in_process_executor_with_recovery)
def pool_job() -> None:
    hold_the_pool()


def run_pool_job(instance: dg.DagsterInstance, seconds: float = 0.0) -> dg.JobExecutionResult:
    """One run of pool_job on the instance, in this process, through its own executor."""
    return dg.execute_job(
        dg.reconstructable(pool_job),
        instance=instance,
        run_config={"ops": {"hold_the_pool": {"config": {"seconds": seconds}}}},
    )


if __name__ == "__main__":
    with dg.DagsterInstance.get() as instance:
        result = run_pool_job(instance, float(sys.argv[1]))
    print(result.run_id, flush=True)
    sys.exit(0 if result.success else 1)
