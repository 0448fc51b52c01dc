"""The audits of a staged core day: duplicates, nulls, types, orphans, volume, completeness, drift.

They run on core_staging.* (write-audit-publish: see build.py), each result with counts
and a sample of the offending ids. Severity means what it says:

- a *report* check (non-blocking) fails with WARN on any finding, so it is seen; it never
  stops anything downstream;
- a *gate* check (blocking) passes while a finding stays under the quality policy's
  threshold and fails with ERROR above it. A failed gate stops the day: core is not
  published and keeps the previous complete day, so the ML downstream does not move.

Duplicates and orphans have both a report (any finding) and a gate (above the allowed
rate); completeness and volume are gates only.
"""

import dataclasses
import datetime as dt
from typing import Optional, Sequence

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE_STAGING
from moovitamix_assets.contract import CONTRACT_FIELDS, ENTITIES, KEY_COLUMN, KEY_FIELD, LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.core.build import SQL, SnapshotChoice, staging_table
from moovitamix_assets.ingestion.snapshots import SNAPSHOT_MANIFEST, latest_complete_snapshot
from moovitamix_assets.resources.warehouse import REJECTED_RECORDS, raw_table, run_sql_file, table_exists, utc_now

SAMPLE_SIZE = 10

# The orphan audits: the listen column, and the entity it must exist in.
ORPHAN_KEYS = (("user_id", USERS), ("track_id", TRACKS))


class QualityPolicy(dg.ConfigurableResource):
    """How much of a bad thing the pipeline tolerates before it refuses to publish the day."""

    max_duplicate_rate: float = 0.01
    max_orphan_rate: float = 0.01
    max_row_count_change: float = 0.5  # row_count_stable reports a change beyond this (WARN)
    max_volume_drop: float = 0.1  # volume_above_floor refuses a day with this much fewer records


@dataclasses.dataclass
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


def served_count(connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: dt.date) -> int:
    (served,) = connection.execute(
        f"SELECT count(*) FROM {raw_table(entity)} WHERE snapshot_date = ?", [snapshot_date]
    ).fetchall()[0]
    return served


def staged_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey([CORE_STAGING, entity])


def report(check_name: str, entity: str, finding: Finding, **extra_metadata) -> dg.AssetCheckResult:
    """A report check: passes when nothing was found, else fails with WARN."""
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=staged_key(entity),
        passed=finding.count == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=finding.metadata(**extra_metadata),
    )


def gate(check_name: str, entity: str, passed: bool, message: str, metadata: dict) -> dg.AssetCheckResult:
    """A gate check: fails with ERROR, its message saying why the day is refused."""
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=staged_key(entity),
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=message,
        metadata={**metadata, "message": message},
    )


def rejected(
    connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: dt.date, reason_prefixes: Sequence[str]
) -> tuple[Finding, dict[str, int]]:
    """Records of a snapshot rejected for any reason starting with one of the prefixes."""
    matching = f"""
        SELECT served_position, record, reason_code
        FROM {REJECTED_RECORDS}, unnest(string_split(reason, '; ')) AS r(reason_code)
        WHERE entity = $entity AND snapshot_date = $snapshot_date
          AND list_has_any([split_part(reason_code, ':', 1)], $prefixes)
    """
    params = {"entity": entity, "snapshot_date": snapshot_date, "prefixes": list(reason_prefixes)}
    (count,) = connection.execute(f"SELECT count(DISTINCT served_position) FROM ({matching})", params).fetchall()[0]
    by_reason = dict(
        connection.execute(f"SELECT reason_code, count(*) FROM ({matching}) GROUP BY ALL ORDER BY 1", params).fetchall()
    )
    sample = first_values(
        connection,
        f"SELECT DISTINCT json_extract_string(record, '{KEY_FIELD[entity]}') AS key FROM ({matching}) ORDER BY key",
        params,
    )
    return Finding(count, served_count(connection, entity, snapshot_date), sample), by_reason


def duplicates(connection: duckdb.DuckDBPyConnection, entity: str, snapshot_date: dt.date) -> tuple[Finding, int]:
    """Duplicate records rejected, plus any duplicate key left in staging (never expected)."""
    finding, _ = rejected(connection, entity, snapshot_date, ["duplicate_id"])
    if entity == LISTEN_HISTORY:
        # Positions are 1..n per history: (user_id, position) repeats exactly when a user's
        # rows outnumber their last position. Grouping by user scans the listens once and
        # keeps a group per user, not one per listen.
        duplicate_groups = (
            f"SELECT user_id FROM {staging_table(entity)} GROUP BY user_id HAVING count(*) <> max(position)"
        )
    else:
        key = KEY_COLUMN[entity]
        duplicate_groups = f"SELECT {key} FROM {staging_table(entity)} GROUP BY {key} HAVING count(*) > 1"
    (left,) = connection.execute(f"SELECT count(*) FROM ({duplicate_groups})").fetchall()[0]
    return Finding(finding.count + left, finding.of, finding.sample), left


def check_duplicates(connection, entity, snapshot_date, policy: QualityPolicy) -> list[dg.AssetCheckResult]:
    finding, left = duplicates(connection, entity, snapshot_date)
    over = left > 0 or finding.rate > policy.max_duplicate_rate
    rule = "latest updated_at kept, then the record served last"
    return [
        report("no_duplicate_ids", entity, finding, duplicates_left_in_staging=left, rule=rule),
        gate(
            "duplicate_rate_within_limit", entity, not over,
            f"{finding.count} of {finding.of} {entity} records were duplicates ({finding.rate:.2%}; "
            f"{left} left in staging), allowed up to {policy.max_duplicate_rate:.2%}",
            finding.metadata(max_rate=policy.max_duplicate_rate, duplicates_left_in_staging=left),
        ),
    ]  # fmt: skip


def check_required_fields(connection, entity, snapshot_date) -> dg.AssetCheckResult:
    finding, by_reason = rejected(connection, entity, snapshot_date, ["missing_field", "null_field"])
    return report("required_fields_present", entity, finding, by_field=dg.MetadataValue.json(by_reason))


def check_values_typed(connection, entity, snapshot_date) -> dg.AssetCheckResult:
    finding, by_reason = rejected(
        connection, entity, snapshot_date,
        ["invalid_type", "invalid_id", "unparseable_timestamp", "invalid_duration"],
    )  # fmt: skip
    return report("values_typed", entity, finding, by_reason=dg.MetadataValue.json(by_reason))


def check_updated_after_created(connection, entity) -> dg.AssetCheckResult:
    key_column = KEY_COLUMN[entity]
    created, updated = (
        ("created_at", "updated_at") if entity != LISTEN_HISTORY else ("history_created_at", "history_updated_at")
    )
    table = staging_table(entity)
    (count, total) = connection.execute(
        f"SELECT count(DISTINCT {key_column}) FILTER (WHERE {updated} < {created}), "
        f"count(DISTINCT {key_column}) FROM {table}"
    ).fetchall()[0]
    sample = first_values(
        connection, f"SELECT DISTINCT {key_column} FROM {table} WHERE {updated} < {created} ORDER BY 1"
    )
    return report("updated_at_not_before_created_at", entity, Finding(count, total, sample))


def previous_complete(connection, entity: str, snapshot_date: dt.date) -> tuple[Optional[dt.date], Optional[int]]:
    """The complete day before this one, and the records its pull of `entity` served."""
    previous = latest_complete_snapshot(connection, before=snapshot_date)
    if previous is None:
        return None, None
    (records,) = connection.execute(
        f"SELECT records FROM {SNAPSHOT_MANIFEST} WHERE snapshot_date = ? AND entity = ?", [previous, entity]
    ).fetchall()[0]
    return previous, records


def check_row_count_stable(connection, entity, snapshot_date, policy: QualityPolicy) -> dg.AssetCheckResult:
    served = served_count(connection, entity, snapshot_date)
    previous_date, previous_count = previous_complete(connection, entity, snapshot_date)
    change = abs(served - previous_count) / previous_count if previous_count else 0.0
    return dg.AssetCheckResult(
        check_name="row_count_stable",
        asset_key=staged_key(entity),
        passed=previous_count is None or change <= policy.max_row_count_change,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "records": served,
            "previous_snapshot_date": previous_date.isoformat() if previous_date else "none",
            "previous_records": previous_count if previous_count is not None else -1,
            "relative_change": round(change, 6),
            "max_relative_change": policy.max_row_count_change,
        },
    )


def check_volume(connection, entity, snapshot_date, policy: QualityPolicy) -> dg.AssetCheckResult:
    """Refuses an empty day, or one with more than max_volume_drop fewer records than the previous complete day."""
    served = served_count(connection, entity, snapshot_date)
    previous_date, previous_count = previous_complete(connection, entity, snapshot_date)
    floor = (1 - policy.max_volume_drop) * previous_count if previous_count else 0
    passed = served > 0 and served >= floor
    if served == 0:
        message = f"{snapshot_date}: the API served no {entity} at all"
    else:
        message = f"{snapshot_date}: {served} {entity} records"
    if previous_count is not None:
        message += (
            f", {previous_count} on {previous_date} (the floor is {floor:.0f}: at most "
            f"{policy.max_volume_drop:.0%} fewer)"
        )
    return gate(
        "volume_above_floor", entity, passed, message,
        {
            "records": served,
            "previous_snapshot_date": previous_date.isoformat() if previous_date else "none",
            "previous_records": previous_count if previous_count is not None else -1,
            "floor": round(floor, 1),
            "max_volume_drop": policy.max_volume_drop,
        },
    )  # fmt: skip


def check_snapshot_complete(entity: str, choice: SnapshotChoice) -> dg.AssetCheckResult:
    """Refuses to move core when the newest pulled day lacks an endpoint: core stays on the previous complete day."""
    if choice.complete:
        message = f"{choice.staged}: users, tracks and listen_history all loaded whole"
    else:
        message = (
            f"{choice.newest_pulled} is incomplete ({', '.join(choice.missing)} not loaded): core stays "
            f"entirely on {choice.staged}, the newest complete day"
        )
    return gate(
        "snapshot_complete", entity, choice.complete, message,
        {
            "staged_snapshot_date": choice.staged.isoformat(),
            "newest_pulled_date": choice.newest_pulled.isoformat(),
            "missing_endpoints": dg.MetadataValue.json(list(choice.missing)),
        },
    )  # fmt: skip


def check_fields_match_contract(connection, entity, snapshot_date) -> dg.AssetCheckResult:
    keys = dict(
        connection.execute(
            f"SELECT key, count(*) FROM {raw_table(entity)}, unnest(json_keys(record)) AS k(key) "
            f"WHERE snapshot_date = ? GROUP BY key",
            [snapshot_date],
        ).fetchall()
    )
    served = served_count(connection, entity, snapshot_date)
    expected = CONTRACT_FIELDS[entity]
    missing = {name: served - keys.get(name, 0) for name in expected if keys.get(name, 0) < served}
    added = {name: count for name, count in keys.items() if name not in expected}
    return dg.AssetCheckResult(
        check_name="fields_match_contract",
        asset_key=staged_key(entity),
        passed=not missing and not added,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "records": served,
            "fields_missing": dg.MetadataValue.json(missing),
            "fields_added": dg.MetadataValue.json(added),
        },
    )


def orphans(connection, key_column: str, parent: str) -> Finding:
    """Staged listens whose user or track is not in the same day's staged users or tracks."""
    listens = staging_table(LISTEN_HISTORY)
    orphan_filter = f"{key_column} NOT IN (SELECT {KEY_COLUMN[parent]} FROM {staging_table(parent)})"
    (count, total) = connection.execute(
        f"SELECT count(*) FILTER (WHERE {orphan_filter}), count(*) FROM {listens}"
    ).fetchall()[0]
    sample = first_values(connection, f"SELECT DISTINCT {key_column} FROM {listens} WHERE {orphan_filter} ORDER BY 1")
    return Finding(count, total, sample)


def check_orphans(connection, key_column: str, parent: str, policy: QualityPolicy) -> list[dg.AssetCheckResult]:
    finding = orphans(connection, key_column, parent)
    return [
        report(f"no_orphan_{key_column}s", LISTEN_HISTORY, finding, max_rate=policy.max_orphan_rate),
        gate(
            f"orphan_{key_column}_rate_within_limit", LISTEN_HISTORY, finding.rate <= policy.max_orphan_rate,
            f"{finding.count} of {finding.of} listens ({finding.rate:.2%}) name a {key_column} missing from "
            f"the day's {parent}, allowed up to {policy.max_orphan_rate:.2%}",
            finding.metadata(max_rate=policy.max_orphan_rate),
        ),
    ]  # fmt: skip


def audit_entity(
    connection: duckdb.DuckDBPyConnection, entity: str, choice: SnapshotChoice, policy: QualityPolicy
) -> list[dg.AssetCheckResult]:
    """Every check of one staged core table, gates and reports."""
    day = choice.staged
    results = [
        check_snapshot_complete(entity, choice),
        check_volume(connection, entity, day, policy),
        *check_duplicates(connection, entity, day, policy),
        check_required_fields(connection, entity, day),
        check_values_typed(connection, entity, day),
        check_updated_after_created(connection, entity),
        check_row_count_stable(connection, entity, day, policy),
        check_fields_match_contract(connection, entity, day),
    ]
    if entity == LISTEN_HISTORY:
        for key_column, parent in ORPHAN_KEYS:
            results += check_orphans(connection, key_column, parent, policy)
    return results


def check_specs(entity: str) -> list[dg.AssetCheckSpec]:
    """The checks audit_entity yields for `entity`, declared on its staging asset."""

    def spec(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(name, asset=staged_key(entity), description=description, blocking=blocking)

    specs = [
        spec("snapshot_complete", "Gate: the newest pulled day has every endpoint; else core stays on the last complete day.", True),
        spec("volume_above_floor", "Gate: records present and no more than the allowed drop below the previous complete day.", True),
        spec("no_duplicate_ids", "Report: no id served twice (WARN on any)."),
        spec("duplicate_rate_within_limit", "Gate: duplicates at or under the allowed rate, none left in staging.", True),
        spec("required_fields_present", "Report: no record lacked a required field or carried a null in one."),
        spec("values_typed", "Report: every id, timestamp and duration could be typed."),
        spec("updated_at_not_before_created_at", "Report: no record was updated before it was created."),
        spec("row_count_stable", "Report: the record count is near the previous complete day's."),
        spec("fields_match_contract", "Report: records carry exactly the contract's fields."),
    ]  # fmt: skip
    if entity == LISTEN_HISTORY:
        for key_column, parent in ORPHAN_KEYS:
            specs += [
                spec(f"no_orphan_{key_column}s", f"Report: every listen's {key_column} is in the day's {parent} (WARN on any)."),
                spec(f"orphan_{key_column}_rate_within_limit", f"Gate: listens with an unknown {key_column} at or under the allowed rate.", True),
            ]  # fmt: skip
    return specs


STAGING_AUDITS = "core_staging.audits"


def start_audit(connection: duckdb.DuckDBPyConnection) -> None:
    """Forgets the gates of the previous staging: until this one's are written, nothing may be published."""
    run_sql_file(connection, SQL / "create_staging_audits.sql")
    connection.execute(f"DELETE FROM {STAGING_AUDITS}")


def record_gates(
    connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date, results: Sequence[dg.AssetCheckResult], run_id: str
) -> None:
    rows = [
        (snapshot_date, r.asset_key.to_user_string(), r.check_name, r.passed, r.description, run_id, utc_now())
        for r in results
        if r.severity == dg.AssetCheckSeverity.ERROR
    ]
    connection.executemany(f"INSERT INTO {STAGING_AUDITS} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def recorded_gate_failures(connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date) -> list[str]:
    """What keeps the staged day from being published, from the gates its staging recorded
    (empty when every gate of every staged table passed)."""
    expected = {(staged_key(entity).to_user_string(), spec.name) for entity in ENTITIES for spec in check_specs(entity) if spec.blocking}
    rows = (
        connection.execute(
            f"SELECT asset, check_name, passed, message FROM {STAGING_AUDITS} WHERE snapshot_date = ?", [snapshot_date]
        ).fetchall()
        if table_exists(connection, STAGING_AUDITS)
        else []
    )
    failures = [f"{asset} {name}: {message}" for asset, name, passed, message in rows if not passed]
    missing = sorted(expected - {(asset, name) for asset, name, _, _ in rows})
    if missing:
        failures.append(
            f"no audit recorded for {len(missing)} gate(s) of {snapshot_date} (e.g. {' '.join(missing[0])}): "
            "materialize core_staging again"
        )
    return failures
