"""The drift sensor: asks for a retrain when no model exists yet, or the data has moved since the last training."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb

from moovitamix_assets.constants import CORE, ML
from moovitamix_assets.contract import LISTEN_HISTORY, TRACKS, USERS
from moovitamix_assets.ml.registry import RegistryEntry, latest_entry
from moovitamix_assets.ml.schedules import retrain_recommender_job
from moovitamix_assets.resources.warehouse import WarehouseResource, core_table, table_exists


class DriftPolicy(dg.ConfigurableResource):
    """How far the data may move from what the last model was trained on before a retrain."""

    max_new_listens_share: float = 0.2
    max_new_users_share: float = 0.1
    max_new_tracks_share: float = 0.1
    # Share of users with new listens who played one of the tracks recommended to them.
    min_hit_rate: float = 0.01
    min_users_for_hit_rate: int = 50


@dataclass
class DriftMeasure:
    snapshot_date: Optional[str]
    listens: int
    users: int
    tracks: int
    reference: Optional[RegistryEntry]
    hit_rate: Optional[float] = None
    users_with_new_listens: int = 0
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "snapshot_date": self.snapshot_date,
            "listens": self.listens,
            "users": self.users,
            "tracks": self.tracks,
            "reference_version": self.reference.version if self.reference else None,
            "hit_rate": self.hit_rate,
            "users_with_new_listens": self.users_with_new_listens,
            "reasons": self.reasons,
        }


def recommendation_hit_rate(connection: duckdb.DuckDBPyConnection, snapshot_date: str) -> tuple[Optional[float], int]:
    """Of the users who listened to something new since their latest list made on an earlier
    snapshot, the share who played at least one of its tracks."""
    lists = [
        table for table in ("user_recommendations", "previous_user_recommendations")
        if table_exists(connection, f"ml.{table}")
    ]
    for table in lists:
        row = connection.execute(
            f"SELECT max(snapshot_date) FROM ml.{table}"
        ).fetchone()
        if row[0] is None or row[0].isoformat() >= snapshot_date:
            continue
        hit_rate, users = connection.execute(
            f"""
            WITH lists AS (SELECT DISTINCT user_id, history_length FROM ml.{table}),
            new_listens AS (
                SELECT l.user_id, l.track_id FROM {core_table(LISTEN_HISTORY)} l
                JOIN lists USING (user_id) WHERE l.position > lists.history_length
            ),
            per_user AS (
                SELECT n.user_id, bool_or(r.track_id IS NOT NULL) AS hit
                FROM new_listens n
                LEFT JOIN ml.{table} r ON r.user_id = n.user_id AND r.track_id = n.track_id
                GROUP BY n.user_id
            )
            SELECT avg(hit::INTEGER), count(*) FROM per_user
            """
        ).fetchone()
        return (float(hit_rate) if hit_rate is not None else None), users
    return None, 0


def measure_drift(connection: duckdb.DuckDBPyConnection, policy: DriftPolicy) -> DriftMeasure:
    snapshot, listens, users, tracks = connection.execute(
        f"""
        SELECT max(l.snapshot_date), count(*), count(DISTINCT l.user_id), count(DISTINCT l.track_id)
        FROM {core_table(LISTEN_HISTORY)} l
        SEMI JOIN {core_table(USERS)} u ON u.user_id = l.user_id
        SEMI JOIN {core_table(TRACKS)} t ON t.track_id = l.track_id
        """
    ).fetchone()
    measure = DriftMeasure(snapshot.isoformat() if snapshot else None, listens, users, tracks, latest_entry(connection))
    if measure.snapshot_date is None:
        return measure
    reference = measure.reference
    if reference is None:
        measure.reasons.append("no model has been trained yet")
        return measure
    for name, now, then, limit in (
        ("listens", listens, reference.data_listens, policy.max_new_listens_share),
        ("users", users, reference.data_users, policy.max_new_users_share),
        ("tracks", tracks, reference.data_tracks, policy.max_new_tracks_share),
    ):
        share = (now - then) / then if then else 1.0
        if share > limit:
            measure.reasons.append(
                f"{share:.1%} more {name} than model {reference.version} was trained on ({now} vs {then}; limit {limit:.0%})"
            )
    measure.hit_rate, measure.users_with_new_listens = recommendation_hit_rate(connection, measure.snapshot_date)
    if (
        measure.hit_rate is not None
        and measure.users_with_new_listens >= policy.min_users_for_hit_rate
        and measure.hit_rate < policy.min_hit_rate
    ):
        measure.reasons.append(
            f"hit rate of the previous recommendations {measure.hit_rate:.2%} is below {policy.min_hit_rate:.2%} "
            f"({measure.users_with_new_listens} users with new listens)"
        )
    return measure


# What the drift measure depends on: a new core snapshot, a new model, new recommendations.
WATCHED_ASSETS = [
    dg.AssetKey([CORE, LISTEN_HISTORY]),
    dg.AssetKey([ML, "recommender_model"]),
    dg.AssetKey([ML, "user_recommendations"]),
]
NO_CORE_YET = (
    "No core tables yet: ingest today's snapshot (`make ingest`, or Jobs > daily_ingestion > Materialize); "
    "the first model is trained as soon as they exist."
)


@dataclass
class DriftCursor:
    """The sensor's memory: the last retrain it asked for, and the watched assets' latest
    materializations when it last measured."""

    requested: str = ""
    seen: Optional[str] = None

    @classmethod
    def parse(cls, cursor: Optional[str]) -> "DriftCursor":
        if not cursor:
            return cls()
        try:
            return cls(**json.loads(cursor))
        except ValueError:  # a cursor from before: the trigger alone
            return cls(requested=cursor)

    def to_cursor(self) -> str:
        return json.dumps({"requested": self.requested, "seen": self.seen})


def watched_materializations(context: dg.SensorEvaluationContext) -> Optional[list[Optional[int]]]:
    """The storage id of each watched asset's latest materialization (None: never), from the
    instance, without opening the warehouse; None when the context has no instance (a test
    that builds one), which then measures every time."""
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:
        return None
    records = {record.asset_entry.asset_key: record.asset_entry for record in instance.get_asset_records(WATCHED_ASSETS)}
    return [
        entry.last_materialization_storage_id if (entry := records.get(key)) is not None else None
        for key in WATCHED_ASSETS
    ]


def _skip(message: str, before: DriftCursor, after: DriftCursor) -> dg.SensorResult | dg.SkipReason:
    if after == before:
        return dg.SkipReason(message)
    return dg.SensorResult(skip_reason=message, cursor=after.to_cursor())


@dg.sensor(
    job=retrain_recommender_job,
    # Often, so that a first model follows the first core tables within a minute; cheap, as the
    # warehouse is read only when a watched asset was materialized since the last measure.
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retrain when no model exists yet, when listens, users or tracks grew past a share, "
    "or when recommendations stop being played; measures after each new core snapshot, model or recommendations.",
)
def recommender_drift_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, drift_policy: DriftPolicy
) -> dg.SensorResult | dg.SkipReason:
    before = DriftCursor.parse(context.cursor)
    watched = watched_materializations(context)
    if watched is not None and watched[0] is None:
        return dg.SkipReason(NO_CORE_YET)
    state = DriftCursor(requested=before.requested, seen=json.dumps(watched) if watched is not None else None)
    if watched is not None and state.seen == before.seen:
        return dg.SkipReason("nothing new since the last measure: no core snapshot, model or recommendations")
    if not Path(warehouse.database).exists():
        return dg.SkipReason(f"No warehouse at {warehouse.database} yet. {NO_CORE_YET}")
    try:
        connection = duckdb.connect(warehouse.database, read_only=True)
    except (duckdb.IOException, duckdb.CatalogException) as error:
        # Not remembered as seen: measured again at the next tick.
        return dg.SkipReason(f"the warehouse is being written by a run; measuring at a later tick ({error})")
    try:
        if not table_exists(connection, core_table(LISTEN_HISTORY)):
            return _skip(NO_CORE_YET, before, state)
        measure = measure_drift(connection, drift_policy)
    finally:
        connection.close()
    if not measure.reasons:
        return _skip(f"no drift: {json.dumps(measure.as_dict())}", before, state)
    # One drift, one retrain: the same data measured against the same latest model asks once.
    trigger = f"{measure.reference.version if measure.reference else 'none'}@{measure.snapshot_date}"
    if before.requested == trigger:
        return _skip(f"retrain already requested for {trigger}", before, state)
    context.log.info(f"drift: {'; '.join(measure.reasons)}")
    state.requested = trigger
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-{trigger}",
                tags={"moovitamix/drift_reasons": "; ".join(measure.reasons)[:4000]},
            )
        ],
        cursor=state.to_cursor(),
    )
