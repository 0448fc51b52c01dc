"""History, not just today: every version of users and tracks, every listen with the day it first appeared.

`apply_history` folds one snapshot day, staged in core_staging.* by the write-audit-publish
of core, into the history tables, inside the transaction that publishes core (so core and
its history always move together). It only reads the day staged and the history so far:
storage and work grow with what changed, not with the number of days kept.

- core.users_history / core.tracks_history: type-2 histories, one row per version.
- core.listen_events: every listen once, with the snapshot that first served it.
- quality.history_rewrites: listen histories that did not only grow at the end.
- core.history_days: the days applied, in date order, with what each changed.

`audit_history` checks the result, as blocking audits inside the publish transaction and as
Dagster asset checks of the publish step (history_checks.py).
"""

import dataclasses
import datetime as dt
import time
from pathlib import Path

import duckdb

from moovitamix_assets.constants import CORE, CORE_STAGING
from moovitamix_assets.contract import LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.resources.warehouse import run_sql_file, table_exists, utc_now

SQL = Path(__file__).parent / "sql"

HISTORY_SCHEMA = CORE
QUALITY_SCHEMA = "quality"
STAGING_SCHEMA = CORE_STAGING

# The versioned entities and their id column.
VERSIONED = {USERS: "user_id", TRACKS: "track_id"}
LISTEN_EVENTS = "listen_events"
HISTORY_DAYS = "history_days"
HISTORY_REWRITES = "history_rewrites"

# Columns the history tables add to core's, and the one core has that they do not.
VERSION_COLUMNS = ("valid_from", "valid_to", "record_hash")
SNAPSHOT_COLUMN = "snapshot_date"


def history_table(entity: str, schema: str = HISTORY_SCHEMA) -> str:
    """core.users_history, core.tracks_history."""
    return f"{schema}.{entity}_history"


class HistoryOrderError(ValueError):
    """A day older than the newest one applied: history is built in date order."""


@dataclasses.dataclass
class HistoryStats:
    """What applying one day changed, for the publish step's metadata."""

    snapshot_date: dt.date
    users_versions_added: int
    users_versions_closed: int
    tracks_versions_added: int
    tracks_versions_closed: int
    listen_events_added: int
    history_rewrites: int
    reapplied: bool  # the day was the newest applied already: taken out, then applied again
    seconds: float
    findings: list = dataclasses.field(default_factory=list)  # the audits, when apply_and_audit_history ran them

    def as_metadata(self) -> dict:
        return {
            "history_snapshot_date": self.snapshot_date.isoformat(),
            "users_versions_added": self.users_versions_added,
            "users_versions_closed": self.users_versions_closed,
            "tracks_versions_added": self.tracks_versions_added,
            "tracks_versions_closed": self.tracks_versions_closed,
            "listen_events_added": self.listen_events_added,
            "history_rewrites": self.history_rewrites,
            "history_seconds": round(self.seconds, 3),
        }


def create_history_tables(
    connection: duckdb.DuckDBPyConnection, schema: str = HISTORY_SCHEMA, quality: str = QUALITY_SCHEMA
) -> None:
    run_sql_file(connection, SQL / "history_create.sql", history=schema, quality=quality)
    if schema == HISTORY_SCHEMA:
        run_sql_file(connection, SQL / "history_as_of.sql")


def applied_days(connection: duckdb.DuckDBPyConnection, schema: str = HISTORY_SCHEMA) -> list[dt.date]:
    """The days applied to the history, oldest first."""
    if not table_exists(connection, f"{schema}.{HISTORY_DAYS}"):
        return []
    rows = connection.execute(f"SELECT snapshot_date FROM {schema}.{HISTORY_DAYS} ORDER BY 1").fetchall()
    return [day for (day,) in rows]


def apply_history(connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date, run_id: str) -> HistoryStats:
    """Folds the day staged in core_staging.* into the history tables.

    Runs INSIDE the caller's open transaction (the publish of core): it neither begins nor
    commits. A day older than the newest applied is refused (HistoryOrderError): history is
    built in date order, and rebuild_history rebuilds it from scratch. The newest day itself
    may come again (a re-run): it is taken out first, so the tables end as after one
    application.
    """
    return apply_history_to(connection, snapshot_date, run_id, HISTORY_SCHEMA, QUALITY_SCHEMA)


def apply_history_to(
    connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date, run_id: str, schema: str, quality: str
) -> HistoryStats:
    """apply_history into the history tables of `schema` (rewrites in `quality`): the rebuild builds aside."""
    started = time.monotonic()
    _require_staged_day(connection, snapshot_date)
    create_history_tables(connection, schema, quality)
    days = applied_days(connection, schema)
    newest = days[-1] if days else None
    if newest is not None and snapshot_date < newest:
        raise HistoryOrderError(
            f"cannot apply {snapshot_date} to the history: it already holds {newest}, and history is built in "
            "date order (each day is compared with the one before). To take in an older day, run the "
            "rebuild_history job, which rebuilds the history from every kept snapshot."
        )
    names = {"history": schema, "quality": quality}
    variables = {"snapshot_date": snapshot_date, "run_id": run_id, "recorded_at": utc_now()}
    reapplied = snapshot_date == newest
    if reapplied:
        run_sql_file(connection, SQL / "history_undo_day.sql", variables, **names)
    for entity, key in VERSIONED.items():
        run_sql_file(connection, SQL / "history_versions.sql", variables, entity=entity, key=key, history=schema)
    run_sql_file(connection, SQL / "history_listens.sql", variables, **names)
    counts = _day_counts(connection, snapshot_date, schema, quality)
    connection.execute(
        f"INSERT INTO {schema}.{HISTORY_DAYS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [snapshot_date, *counts, run_id, variables["recorded_at"]],
    )
    return HistoryStats(snapshot_date, *counts, reapplied=reapplied, seconds=time.monotonic() - started)


def _require_staged_day(connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date) -> None:
    for entity in (USERS, TRACKS, LISTEN_HISTORY):
        table = f"{STAGING_SCHEMA}.{entity}"
        if not table_exists(connection, table):
            raise ValueError(f"{table} does not exist: stage the day in core_staging before applying it to the history.")
        other_days = connection.execute(
            f"SELECT DISTINCT snapshot_date FROM {table} WHERE snapshot_date <> ? ORDER BY 1", [snapshot_date]
        ).fetchall()
        if other_days:
            raise ValueError(
                f"{table} holds {', '.join(str(day) for (day,) in other_days)}, not only {snapshot_date}: "
                "the history takes the day staged, and only it."
            )


def _day_counts(connection: duckdb.DuckDBPyConnection, day: dt.date, schema: str, quality: str) -> tuple[int, ...]:
    """users added, closed; tracks added, closed; listen events added; rewrites: all read back by date."""
    return tuple(
        connection.execute(
            f"""
            SELECT
                (SELECT count(*) FROM {history_table(USERS, schema)} WHERE valid_from = $day),
                (SELECT count(*) FROM {history_table(USERS, schema)} WHERE valid_to = $day),
                (SELECT count(*) FROM {history_table(TRACKS, schema)} WHERE valid_from = $day),
                (SELECT count(*) FROM {history_table(TRACKS, schema)} WHERE valid_to = $day),
                (SELECT count(*) FROM {schema}.{LISTEN_EVENTS} WHERE first_seen_date = $day),
                (SELECT count(*) FROM {quality}.{HISTORY_REWRITES} WHERE snapshot_date = $day)
            """,
            {"day": day},
        ).fetchall()[0]
    )


# ---------------------------------------------------------------------------------------
# Audits: pure checks over a connection, as blocking audits and as asset checks.
# ---------------------------------------------------------------------------------------

SAMPLE_SIZE = 10

# Every audit, by history table: what passing means (the asset checks' descriptions).
VERSION_AUDITS = {
    "one_current_version_per_id": "At most one current version (valid_to NULL) per id.",
    "no_overlapping_versions": "The versions of an id follow each other: no two valid on the same day.",
    "current_versions_match_core": "The current versions are exactly the rows of core for the newest day applied.",
}
AUDITS = {
    f"{USERS}_history": VERSION_AUDITS,
    f"{TRACKS}_history": VERSION_AUDITS,
    LISTEN_EVENTS: {
        "listen_events_unique": "Every (user_id, position) once.",
        "new_listen_events_match_growth": "The newest day's events are exactly the growth of the lists that only grew.",
    },
}


@dataclasses.dataclass
class HistoryFinding:
    """One audit's outcome on one history table: passed when count is 0 (and details agree)."""

    table: str  # users_history, tracks_history or listen_events
    check_name: str
    passed: bool
    count: int
    sample: list
    details: dict = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.table}.{self.check_name}: {self.count} found, e.g. {self.sample[:5]} {self.details or ''}".strip()


def _sample(connection: duckdb.DuckDBPyConnection, sql: str, params=None) -> list:
    return [row[0] for row in connection.execute(f"{sql} LIMIT {SAMPLE_SIZE}", params or {}).fetchall()]


def _count(connection: duckdb.DuckDBPyConnection, sql: str, params=None) -> int:
    return connection.execute(f"SELECT count(*) FROM ({sql})", params or {}).fetchall()[0][0]


def _finding(connection, table: str, check_name: str, offenders_sql: str, params=None, **details) -> HistoryFinding:
    """A finding whose offenders are the distinct values of offenders_sql's one column."""
    distinct = f"SELECT DISTINCT * FROM ({offenders_sql})"
    count = _count(connection, distinct, params)
    return HistoryFinding(table, check_name, count == 0, count, _sample(connection, f"{distinct} ORDER BY 1", params), details)


def audit_history(
    connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date, core_schema: str = CORE, content: bool = True
) -> list[HistoryFinding]:
    """Every history audit, for the day `snapshot_date` whose typed tables are in `core_schema`.

    core_schema is core_staging inside the publish transaction (the day about to be
    published), core after it. Passing means: one current version per id, validity
    intervals that never overlap, every current version equal to the day's core row (and
    every core row to a current version), listen events unique on (user_id, position), and
    the day's new events exactly the growth of the lists that only grew. content=False
    compares that growth by counts only, not listen by listen: the publish transaction does
    so (the full comparison reads every listen twice, minutes at a million users);
    history_checks and the rebuild compare every listen.
    """
    findings = []
    for entity, key in VERSIONED.items():
        table = history_table(entity)
        findings.append(_finding(
            connection, f"{entity}_history", "one_current_version_per_id",
            f"SELECT {key} FROM {table} WHERE valid_to IS NULL GROUP BY {key} HAVING count(*) > 1",
        ))  # fmt: skip
        findings.append(_finding(
            connection, f"{entity}_history", "no_overlapping_versions",
            f"""
            SELECT {key} FROM (
                SELECT {key}, valid_from, valid_to,
                       lead(valid_from) OVER (PARTITION BY {key} ORDER BY valid_from, valid_to NULLS LAST) AS next_from
                FROM {table}
            )
            WHERE valid_to <= valid_from OR (next_from IS NOT NULL AND (valid_to IS NULL OR next_from < valid_to))
            """,
        ))  # fmt: skip
        findings.append(_current_versions_match_core(connection, entity, key, snapshot_date, core_schema))
    findings.append(_finding(
        connection, LISTEN_EVENTS, "listen_events_unique",
        f"SELECT user_id FROM {HISTORY_SCHEMA}.{LISTEN_EVENTS} GROUP BY user_id, position HAVING count(*) > 1",
    ))  # fmt: skip
    findings.append(_new_events_match_growth(connection, snapshot_date, core_schema, content))
    return findings


class HistoryAuditError(RuntimeError):
    """The history, with the day applied, fails an audit: the publish must roll back."""


def apply_and_audit_history(connection: duckdb.DuckDBPyConnection, snapshot_date: dt.date, run_id: str) -> HistoryStats:
    """apply_history, then every audit against the day staged, as blocking audits: what the
    publish transaction runs. Raises HistoryAuditError when one fails, so that the caller's
    transaction rolls back and neither core nor its history moves."""
    stats = apply_history(connection, snapshot_date, run_id)
    stats.findings = audit_history(connection, snapshot_date, core_schema=STAGING_SCHEMA, content=False)
    failed = failed_audits(stats.findings)
    if failed:
        raise HistoryAuditError(f"the history with {snapshot_date} applied fails its audits: " + " | ".join(failed))
    return stats


def failed_audits(findings: list[HistoryFinding]) -> list[str]:
    """What failed, one line each: the form the publish step's blocking audit returns."""
    return [finding.describe() for finding in findings if not finding.passed]


def _current_versions_match_core(connection, entity: str, key: str, snapshot_date: dt.date, core_schema: str):
    """Current versions and the day's core rows, compared column by column (every column but the history's own)."""
    table, core = history_table(entity), f"{core_schema}.{entity}"
    columns = [
        name
        for (name,) in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [HISTORY_SCHEMA, f"{entity}_history"],
        ).fetchall()
        if name not in VERSION_COLUMNS
    ]
    fields = ", ".join(columns)
    core_days = [day for (day,) in connection.execute(f"SELECT DISTINCT {SNAPSHOT_COLUMN} FROM {core} ORDER BY 1").fetchall()]
    current = f"SELECT {fields} FROM {table} WHERE valid_to IS NULL"
    served = f"SELECT {fields} FROM {core}"
    finding = _finding(
        connection, f"{entity}_history", "current_versions_match_core",
        f"SELECT {key} FROM (({current} EXCEPT {served}) UNION ALL ({served} EXCEPT {current}))",
        core_table=core, core_snapshot_dates=[str(day) for day in core_days],
    )  # fmt: skip
    if core_days and core_days != [snapshot_date]:
        # Compared with another day's core, the versions would differ for no fault of theirs.
        finding.passed = False
        finding.details["problem"] = f"{core} holds {', '.join(map(str, core_days))}, not {snapshot_date}"
    return finding


def _new_events_match_growth(connection, snapshot_date: dt.date, core_schema: str, content: bool = True) -> HistoryFinding:
    """The day's new events are the growth of the lists, and only that.

    For every user never found rewritten up to the day, the list served must be the events
    (each earlier event at its position, then exactly the events first seen that day past
    the earlier ones). Every event first seen that day, whoever its user, must be served that
    day at its position. Rewritten lists are counted apart (they add no events that day).
    """
    events = f"{HISTORY_SCHEMA}.{LISTEN_EVENTS}"
    listens = f"{core_schema}.{LISTEN_HISTORY}"
    rewrites = f"{QUALITY_SCHEMA}.{HISTORY_REWRITES}"
    params = {"day": snapshot_date}
    never_rewritten = f"user_id NOT IN (SELECT user_id FROM {rewrites} WHERE snapshot_date <= $day)"
    served_not_kept = f"""
        SELECT user_id, position, track_id FROM {listens} WHERE {never_rewritten}
        EXCEPT SELECT user_id, position, track_id FROM {events} WHERE first_seen_date <= $day
    """
    new_not_served = f"""
        SELECT user_id, position, track_id FROM {events} WHERE first_seen_date = $day
        EXCEPT SELECT user_id, position, track_id FROM {listens}
    """
    (expected_growth, new_events, rewritten_today) = connection.execute(
        f"""
        WITH served AS (
            SELECT user_id, count(*) AS listens FROM {listens} WHERE {never_rewritten} GROUP BY user_id
        ),
        before AS (
            SELECT user_id, count(*) AS listens FROM {events}
            WHERE first_seen_date < $day AND {never_rewritten} GROUP BY user_id
        )
        SELECT
            (SELECT coalesce(sum(served.listens - coalesce(before.listens, 0)), 0)
             FROM served LEFT JOIN before USING (user_id)),
            (SELECT count(*) FROM {events} WHERE first_seen_date = $day AND {never_rewritten}),
            (SELECT count(*) FROM {rewrites} WHERE snapshot_date = $day)
        """,
        params,
    ).fetchall()[0]
    details = dict(expected_growth=int(expected_growth), new_events_of_grown_lists=new_events, rewrites=rewritten_today)
    if not content:
        difference = abs(int(expected_growth) - new_events)
        return HistoryFinding(LISTEN_EVENTS, "new_listen_events_match_growth", difference == 0, difference, [], details)
    finding = _finding(
        connection, LISTEN_EVENTS, "new_listen_events_match_growth",
        f"SELECT user_id FROM ({served_not_kept}) UNION ALL SELECT user_id FROM ({new_not_served})",
        params, **details,
    )  # fmt: skip
    if expected_growth != new_events:
        finding.passed = False
    return finding
