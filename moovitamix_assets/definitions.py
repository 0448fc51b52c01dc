"""The Moovitamix code location: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.core.checks import core_checks
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.ingestion.schedules import daily_ingestion_job, daily_ingestion_schedule
from moovitamix_assets.resources import resources_from_env

# Declared here because Dagster creates the default automation sensor STOPPED.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the core tables after a raw snapshot lands, whoever materialized it.",
)

defs = dg.Definitions(
    assets=[*raw_snapshot_assets, *core_assets],
    asset_checks=[*core_checks],
    jobs=[daily_ingestion_job],
    schedules=[daily_ingestion_schedule],
    sensors=[automation_sensor],
    resources=resources_from_env(),
    # Steps run one after another in the run's process: DuckDB allows one writer per file,
    # and for this workload the in-process executor is several times faster.
    executor=dg.in_process_executor,
)
