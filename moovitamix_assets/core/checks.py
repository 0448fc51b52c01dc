"""Asset checks on the core tables: duplicates, nulls, types, orphans, drift of counts and fields.

Each result carries counts and a sample of the offending ids. The checks that would
poison the recommender (duplicate ids, orphan keys) fail with ERROR severity above the
rates the quality policy allows, and are blocking; below those rates, and for every
other finding, they fail with WARN severity so that the run goes on and the finding is seen.
"""

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE
from moovitamix_assets.contract import CONTRACT_FIELDS, KEY_COLUMN, KEY_FIELD, LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.core.assets import latest_snapshot_date
from moovitamix_assets.monitoring.metrics import record_check_results
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    REJECTED_RECORDS,
    WarehouseResource,
    core_table,
    raw_table,
)

SAMPLE_SIZE = 10

# The field that identifies a record of each endpoint, and its column in core.
RECORD_KEY = {entity: (KEY_FIELD[entity], KEY_COLUMN[entity]) for entity in (USERS, TRACKS, LISTEN_HISTORY)}


class QualityPolicy(dg.ConfigurableResource):
    """How much of a bad thing the pipeline tolerates before it stops the ML downstream."""

    max_duplicate_rate: float = 0.01
    max_orphan_rate: float = 0.01
    max_row_count_change: float = 0.5


@dataclass
class Finding:
    count: int
    of: int
    sample: list

    @property
    def rate(self) -> float:
        return self.count / self.of if self.of else 0.0

    def metadata(self, **extra) -> dict:
        return {
            "count": self.count,
            "out_of": self.of,
            "rate": round(self.rate, 6),
            "sample_ids": dg.MetadataValue.json(self.sample),
            **extra,
        }


def first_values(connection: duckdb.DuckDBPyConnection, sql: str, params=()) -> list:
    """The first SAMPLE_SIZE values of the query's first column, in its order: a sample of offenders."""
    return [row[0] for row in connection.execute(f"{sql} LIMIT {SAMPLE_SIZE}", params).fetchall()]


def served_count(connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: str) -> int:
    (served,) = connection.execute(
        f"SELECT count(*) FROM {raw_table(entity)} WHERE snapshot_date = ?", [snapshot_date]
    ).fetchone()
    return served


def rejected(
    connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: str, reason_prefixes: Sequence[str]
) -> tuple[Finding, dict[str, int]]:
    """Records of a snapshot rejected for any reason starting with one of the prefixes."""
    key_field = RECORD_KEY[entity][0]
    matching = f"""
        SELECT served_position, record, reason_code
        FROM {REJECTED_RECORDS}, unnest(string_split(reason, '; ')) AS r(reason_code)
        WHERE entity = $entity AND snapshot_date = $snapshot_date
          AND list_has_any([split_part(reason_code, ':', 1)], $prefixes)
    """
    params = {"entity": entity, "snapshot_date": snapshot_date, "prefixes": list(reason_prefixes)}
    (count,) = connection.execute(
        f"SELECT count(DISTINCT served_position) FROM ({matching})", params
    ).fetchone()
    by_reason = dict(
        connection.execute(f"SELECT reason_code, count(*) FROM ({matching}) GROUP BY ALL ORDER BY 1", params).fetchall()
    )
    sample = first_values(
        connection,
        f"SELECT DISTINCT json_extract_string(record, '{key_field}') AS key FROM ({matching}) ORDER BY key",
        params,
    )
    return Finding(count, served_count(connection, entity, snapshot_date), sample), by_reason


def result(
    check_name: str,
    entity: str,
    finding: Finding,
    blocking_rate: Optional[float] = None,
    **extra_metadata,
) -> dg.AssetCheckResult:
    """Passes when nothing was found; fails with ERROR above blocking_rate, else WARN."""
    severity = dg.AssetCheckSeverity.WARN
    if blocking_rate is not None and finding.rate > blocking_rate:
        severity = dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=dg.AssetKey([CORE, entity]),
        passed=finding.count == 0,
        severity=severity,
        metadata=finding.metadata(**extra_metadata),
    )


def check_duplicate_ids(connection, entity, snapshot_date, policy: QualityPolicy) -> dg.AssetCheckResult:
    finding, _ = rejected(connection, entity, snapshot_date, ["duplicate_id"])
    key_column = RECORD_KEY[entity][1]
    (left_in_core,) = connection.execute(
        f"SELECT count(*) FROM (SELECT {key_column} FROM {core_table(entity)} "
        f"GROUP BY ALL HAVING count(*) > 1)"
        if entity != LISTEN_HISTORY
        else f"SELECT count(*) FROM (SELECT user_id, position FROM {core_table(entity)} "
        f"GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()
    if left_in_core:
        finding = Finding(finding.count + left_in_core, finding.of, finding.sample)
        blocking_rate = -1.0  # a duplicate left in core is always an error
    else:
        blocking_rate = policy.max_duplicate_rate
    return result(
        "no_duplicate_ids", entity, finding, blocking_rate,
        duplicates_left_in_core=left_in_core, max_rate=policy.max_duplicate_rate,
        rule="latest updated_at kept, then the record served last",
    )


def check_required_fields(connection, entity, snapshot_date) -> dg.AssetCheckResult:
    finding, by_reason = rejected(connection, entity, snapshot_date, ["missing_field", "null_field"])
    return result("required_fields_present", entity, finding, by_field=dg.MetadataValue.json(by_reason))


def check_values_typed(connection, entity, snapshot_date) -> dg.AssetCheckResult:
    finding, by_reason = rejected(
        connection, entity, snapshot_date,
        ["invalid_type", "invalid_id", "unparseable_timestamp", "invalid_duration"],
    )
    return result("values_typed", entity, finding, by_reason=dg.MetadataValue.json(by_reason))


def check_updated_after_created(connection, entity) -> dg.AssetCheckResult:
    key_column = RECORD_KEY[entity][1]
    created, updated = ("created_at", "updated_at") if entity != LISTEN_HISTORY else (
        "history_created_at", "history_updated_at")
    table = core_table(entity)
    (count, total) = connection.execute(
        f"SELECT count(DISTINCT {key_column}) FILTER (WHERE {updated} < {created}), "
        f"count(DISTINCT {key_column}) FROM {table}"
    ).fetchone()
    sample = first_values(
        connection, f"SELECT DISTINCT {key_column} FROM {table} WHERE {updated} < {created} ORDER BY 1"
    )
    return result("updated_at_not_before_created_at", entity, Finding(count, total, sample))


def check_row_count_stable(connection, entity, snapshot_date, policy: QualityPolicy) -> dg.AssetCheckResult:
    served = served_count(connection, entity, snapshot_date)
    previous = connection.execute(
        f"SELECT snapshot_date, count(*) FROM {raw_table(entity)} WHERE snapshot_date < ? "
        f"GROUP BY 1 ORDER BY 1 DESC LIMIT 1",
        [snapshot_date],
    ).fetchone()
    previous_date, previous_count = (previous[0].isoformat(), previous[1]) if previous else (None, None)
    change = abs(served - previous_count) / previous_count if previous_count else 0.0
    passed = previous_count is None or change <= policy.max_row_count_change
    return dg.AssetCheckResult(
        check_name="row_count_stable",
        asset_key=dg.AssetKey([CORE, entity]),
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "records": served,
            "previous_snapshot_date": previous_date or "none",
            "previous_records": previous_count if previous_count is not None else -1,
            "relative_change": round(change, 6),
            "max_relative_change": policy.max_row_count_change,
        },
    )


def check_fields_match_contract(connection, entity, snapshot_date) -> dg.AssetCheckResult:
    keys = dict(connection.execute(
        f"SELECT key, count(*) FROM {raw_table(entity)}, unnest(json_keys(record)) AS k(key) "
        f"WHERE snapshot_date = ? GROUP BY key",
        [snapshot_date],
    ).fetchall())
    served = served_count(connection, entity, snapshot_date)
    expected = CONTRACT_FIELDS[entity]
    missing = {name: served - keys.get(name, 0) for name in expected if keys.get(name, 0) < served}
    added = {name: count for name, count in keys.items() if name not in expected}
    return dg.AssetCheckResult(
        check_name="fields_match_contract",
        asset_key=dg.AssetKey([CORE, entity]),
        passed=not missing and not added,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "records": served,
            "fields_missing": dg.MetadataValue.json(missing),
            "fields_added": dg.MetadataValue.json(added),
        },
    )


def check_orphans(connection, key_column: str, parent: str, policy: QualityPolicy) -> dg.AssetCheckResult:
    parent_key = RECORD_KEY[parent][1]
    listens = core_table(LISTEN_HISTORY)
    orphan_filter = f"{key_column} NOT IN (SELECT {parent_key} FROM {core_table(parent)})"
    (count, total, distinct_ids) = connection.execute(
        f"SELECT count(*) FILTER (WHERE {orphan_filter}), count(*), "
        f"count(DISTINCT {key_column}) FILTER (WHERE {orphan_filter}) FROM {listens}"
    ).fetchone()
    sample = first_values(connection, f"SELECT DISTINCT {key_column} FROM {listens} WHERE {orphan_filter} ORDER BY 1")
    return result(
        f"no_orphan_{key_column}s", LISTEN_HISTORY, Finding(count, total, sample),
        policy.max_orphan_rate, orphan_ids=distinct_ids, max_rate=policy.max_orphan_rate,
    )


def spec(entity: str, name: str, description: str, blocking: bool = False, additional_deps=()) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name, asset=dg.AssetKey([CORE, entity]), description=description,
        blocking=blocking, additional_deps=list(additional_deps),
    )


def common_specs(entity: str) -> list[dg.AssetCheckSpec]:
    return [
        spec(entity, "no_duplicate_ids", "No id served twice; blocking above the allowed rate.", blocking=True),
        spec(entity, "required_fields_present", "No record lacked a required field or carried a null in one."),
        spec(entity, "values_typed", "Every id, timestamp and duration could be typed."),
        spec(entity, "updated_at_not_before_created_at", "No record was updated before it was created."),
        spec(entity, "row_count_stable", "The record count is near the previous snapshot's."),
        spec(entity, "fields_match_contract", "Records carry exactly the contract's fields."),
    ]


def build_core_checks(entity: str) -> dg.AssetChecksDefinition:
    specs = common_specs(entity)
    if entity == LISTEN_HISTORY:
        specs += [
            spec(entity, "no_orphan_user_ids", "Every listen's user_id is in core.users; blocking above the allowed rate.",
                 blocking=True, additional_deps=[dg.AssetKey([CORE, USERS])]),
            spec(entity, "no_orphan_track_ids", "Every listen's track_id is in core.tracks; blocking above the allowed rate.",
                 blocking=True, additional_deps=[dg.AssetKey([CORE, TRACKS])]),
        ]

    @dg.multi_asset_check(name=f"{entity}_quality", specs=specs, pool=DUCKDB_POOL, can_subset=False)
    def core_checks(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, quality_policy: QualityPolicy
    ) -> Iterator[dg.AssetCheckResult]:
        with warehouse.get_connection() as connection:
            snapshot_date = latest_snapshot_date(connection, entity)
            results = [
                check_duplicate_ids(connection, entity, snapshot_date, quality_policy),
                check_required_fields(connection, entity, snapshot_date),
                check_values_typed(connection, entity, snapshot_date),
                check_updated_after_created(connection, entity),
                check_row_count_stable(connection, entity, snapshot_date, quality_policy),
                check_fields_match_contract(connection, entity, snapshot_date),
            ]
            if entity == LISTEN_HISTORY:
                results.append(check_orphans(connection, "user_id", USERS, quality_policy))
                results.append(check_orphans(connection, "track_id", TRACKS, quality_policy))
            yield from record_check_results(connection, context.run.run_id, results)

    return core_checks


core_checks = [build_core_checks(entity) for entity in (USERS, TRACKS, LISTEN_HISTORY)]
