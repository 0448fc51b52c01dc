"""Core tables, write-audit-publish: one complete day staged and audited, then published whole.

`core_staging` types the newest complete raw day into core_staging.users / tracks /
listen_history and audits them (checks.py) in the same step; a failed gate fails the
step, so `core` does not run. `core` copies the three staged tables into core.* in one
transaction, after checking that staging recorded every gate of that day as passed.
"""

import time
from typing import Iterator

import dagster as dg

from moovitamix_assets.constants import CORE, CORE_STAGING, RAW
from moovitamix_assets.contract import ENTITIES, LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.core.build import (
    choose_snapshot,
    publish_core_tables,
    stage_core_tables,
    staged_snapshot_date,
    staging_table,
)
from moovitamix_assets.core.checks import (
    QualityPolicy,
    audit_entity,
    check_specs,
    record_gates,
    recorded_gate_failures,
    start_audit,
)
from moovitamix_assets.core.history import HistoryStats, apply_and_audit_history
from moovitamix_assets.core.history_checks import HISTORY_ASSET_KEYS, check_result, history_check_specs
from moovitamix_assets.monitoring.metrics import record_asset_metrics, record_check_results
from moovitamix_assets.resources.warehouse import DUCKDB_POOL, WarehouseResource, core_table

# eager() also waits until no upstream partition is missing; a history of daily snapshots
# always misses some days, so that clause is dropped: any new raw snapshot restages core.
STAGING_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
# Publish after a staging whose gates all passed (a failed gate is ERROR; reports are WARN
# and do not hold it back).
PUBLISH_AUTOMATION = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()

DESCRIPTIONS = {
    USERS: "Users of the latest complete snapshot, typed: one row per user_id.",
    TRACKS: "Tracks of the latest complete snapshot, typed, duration also in seconds: one row per track_id.",
    LISTEN_HISTORY: "Listens of the latest complete snapshot, one row per listen: (user_id, position), position 1 the oldest.",
}  # fmt: skip
# The history the publish step updates in the same transaction as the current tables.
HISTORY_DESCRIPTIONS = {
    "users_history": "Every version of every user (type-2): valid_from, valid_to (NULL while current), record_hash.",
    "tracks_history": "Every version of every track (type-2): valid_from, valid_to (NULL while current), record_hash.",
    "listen_events": "Every listen ever observed, once: (user_id, position) with the day it first appeared.",
}  # fmt: skip


def column_schema(connection, table: str) -> dg.TableSchema:
    schema, name = table.split(".")
    columns = connection.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() "
        "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema, name],
    ).fetchall()
    return dg.TableSchema(
        columns=[dg.TableColumn(column, str(data_type), description=comment) for column, data_type, comment in columns]
    )


@dg.multi_asset(
    name="core_staging",
    specs=[
        dg.AssetSpec(
            [CORE_STAGING, entity],
            group_name=CORE,
            deps=[dg.AssetKey([RAW, e]) for e in ENTITIES],
            kinds={"duckdb"},
            automation_condition=STAGING_AUTOMATION,
            description=f"{entity} of the newest complete raw day, typed into {staging_table(entity)} and audited before publish.",
        )
        for entity in ENTITIES
    ],
    check_specs=[spec for entity in ENTITIES for spec in check_specs(entity)],
    pool=DUCKDB_POOL,
)
def core_staging(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, quality_policy: QualityPolicy
) -> Iterator[dg.MaterializeResult]:
    """Stages the newest complete day of all three endpoints, rejected records set aside, and audits it."""
    started = time.monotonic()
    run_id = context.run.run_id
    with warehouse.get_connection() as connection:
        choice = choose_snapshot(connection)
        if not choice.complete:
            context.log.error(
                f"{choice.newest_pulled} lacks {', '.join(choice.missing)}: staging {choice.staged}, the newest "
                "complete day, and refusing to publish (snapshot_complete)."
            )
        start_audit(connection)
        builds = stage_core_tables(connection, choice.staged, run_id)
        seconds = time.monotonic() - started
        results = []
        for entity, build in builds.items():
            if build.rejected:
                context.log.warning(
                    f"{build.rejected} of {build.served} {entity} records of {build.snapshot_date} "
                    f"rejected: {build.rejected_by_reason}; see quality.rejected_records."
                )
            checks = record_check_results(connection, run_id, audit_entity(connection, entity, choice, quality_policy))
            record_gates(connection, choice.staged, checks, run_id)
            metadata = {
                "dagster/row_count": build.rows,
                "dagster/table_name": staging_table(entity),
                "snapshot_date": build.snapshot_date,
                "newest_pulled_date": choice.newest_pulled.isoformat(),
                "rows": build.rows,
                "records_served": build.served,
                "records_accepted": build.accepted,
                "records_rejected": build.rejected,
                "duplicates_reduced": build.rejected_by_reason.get("duplicate_id", 0),
                "rejects_by_reason": dg.MetadataValue.json(build.rejected_by_reason),
                "seconds": round(seconds, 3),
                "rows_per_second": round(build.rows / seconds, 1) if seconds else 0.0,
                # One number per kind of reason, zero included, so the UI plots each over time.
                **{f"rejected_{kind}": count for kind, count in build.rejects_by_kind().items()},
            }
            record_asset_metrics(connection, run_id, f"{CORE_STAGING}/{entity}", None, metadata)
            results.append(dg.MaterializeResult(asset_key=[CORE_STAGING, entity], metadata=metadata, check_results=checks))
    yield from results


@dg.multi_asset(
    name="core",
    specs=[
        dg.AssetSpec(
            [CORE, entity],
            group_name=CORE,
            deps=[dg.AssetKey([CORE_STAGING, e]) for e in ENTITIES],
            kinds={"duckdb"},
            automation_condition=PUBLISH_AUTOMATION,
            description=DESCRIPTIONS[entity],
        )
        for entity in ENTITIES
    ]
    + [
        dg.AssetSpec(
            [CORE, table],
            group_name=CORE,
            deps=[dg.AssetKey([CORE_STAGING, e]) for e in ENTITIES],
            kinds={"duckdb"},
            automation_condition=PUBLISH_AUTOMATION,
            description=description,
        )
        for table, description in HISTORY_DESCRIPTIONS.items()
    ],
    check_specs=history_check_specs(),
    pool=DUCKDB_POOL,
)
def core(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult]:
    """Publishes the audited staged day into core.users, core.tracks and core.listen_history, and its
    history into core.users_history, core.tracks_history and core.listen_events, in one transaction."""
    started = time.monotonic()
    history: list[HistoryStats] = []

    def update_history(connection, day) -> None:
        # Applied, then audited on the staged day, inside the publish transaction: a history
        # that breaks its rules rolls the whole publish back.
        history.append(apply_and_audit_history(connection, day, context.run.run_id))

    with warehouse.get_connection() as connection:
        choice = choose_snapshot(connection)
        staged = staged_snapshot_date(connection)
        if staged is not None and staged != choice.staged:
            raise dg.Failure(
                f"core_staging holds {staged} but the newest complete day is {choice.staged}: "
                "materialize core_staging again before publishing."
            )
        rows = publish_core_tables(connection, recorded_gate_failures, within_transaction=update_history)
        seconds = time.monotonic() - started
        results = []
        for entity in ENTITIES:
            metadata = {
                "dagster/row_count": rows[entity],
                "dagster/table_name": core_table(entity),
                "dagster/column_schema": column_schema(connection, core_table(entity)),
                "snapshot_date": choice.staged.isoformat(),
                "rows": rows[entity],
                "publish_seconds": round(seconds, 3),
            }
            record_asset_metrics(connection, context.run.run_id, f"{CORE}/{entity}", None, metadata)
            results.append(dg.MaterializeResult(asset_key=[CORE, entity], metadata=metadata))
        day = history[0].snapshot_date
        audits = record_check_results(connection, context.run.run_id, [check_result(f, day) for f in history[0].findings])
        for table in HISTORY_DESCRIPTIONS:
            (table_rows,) = connection.execute(f"SELECT count(*) FROM {CORE}.{table}").fetchall()[0]
            metadata = {
                "dagster/row_count": table_rows,
                "dagster/table_name": f"{CORE}.{table}",
                "dagster/column_schema": column_schema(connection, f"{CORE}.{table}"),
                **history[0].as_metadata(),
            }
            record_asset_metrics(connection, context.run.run_id, f"{CORE}/{table}", None, metadata)
            checks = [check for check in audits if check.asset_key == HISTORY_ASSET_KEYS[table]]
            results.append(dg.MaterializeResult(asset_key=[CORE, table], metadata=metadata, check_results=checks))
    yield from results


core_assets = [core_staging, core]
