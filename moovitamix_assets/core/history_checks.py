"""Asset checks on the history tables: the audits of history.py.

The audits run inside the publish transaction as blocking audits, on core_staging, and the
publish step reports them as these checks (recorded in monitoring.check_results like every
other check); `history_checks` runs them again on demand against core, for the newest day
applied. A failure is an ERROR: a history that
breaks one of these rules answers as-of questions wrongly.
"""

import datetime as dt
from typing import Iterator

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE
from moovitamix_assets.core.history import AUDITS, HistoryFinding, applied_days, audit_history
from moovitamix_assets.monitoring.metrics import record_check_results
from moovitamix_assets.resources.warehouse import DUCKDB_POOL, WarehouseResource

HISTORY_ASSET_KEYS = {table: dg.AssetKey([CORE, table]) for table in AUDITS}


def check_result(finding: HistoryFinding, snapshot_date: dt.date) -> dg.AssetCheckResult:
    details = {
        name: value if isinstance(value, (int, float, str)) else dg.MetadataValue.json(value)
        for name, value in finding.details.items()
    }
    return dg.AssetCheckResult(
        asset_key=HISTORY_ASSET_KEYS[finding.table],
        check_name=finding.check_name,
        passed=finding.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "snapshot_date": snapshot_date.isoformat(),
            "count": finding.count,
            "sample_ids": dg.MetadataValue.json(finding.sample),
            **details,
        },
    )


def history_check_results(connection: duckdb.DuckDBPyConnection) -> list[dg.AssetCheckResult]:
    """Every history audit on core for the newest day applied; all failed when no day was."""
    days = applied_days(connection)
    if not days:
        return [
            dg.AssetCheckResult(
                asset_key=HISTORY_ASSET_KEYS[table],
                check_name=name,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problem": "no snapshot applied to the history yet: publish core, or run rebuild_history"},
            )
            for table, audits in AUDITS.items()
            for name in audits
        ]
    return [check_result(finding, days[-1]) for finding in audit_history(connection, days[-1], core_schema=CORE)]


def history_check_specs() -> list[dg.AssetCheckSpec]:
    """The audits, as the checks the publish step reports (core/assets.py) and history_checks runs."""
    return [
        dg.AssetCheckSpec(name, asset=HISTORY_ASSET_KEYS[table], description=description)
        for table, audits in AUDITS.items()
        for name, description in audits.items()
    ]


# The same audits run on demand against what core holds (the daily publish reports the
# ones it ran in its transaction: evaluating them again there would read every listen twice).
@dg.multi_asset_check(
    name="history_quality",
    specs=history_check_specs(),
    pool=DUCKDB_POOL,
    can_subset=False,
)
def history_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.AssetCheckResult]:
    """The history's audits on core, for the newest day applied."""
    with warehouse.get_connection() as connection:
        yield from record_check_results(connection, context.run.run_id, history_check_results(connection))
