"""Helpers for tests that run the real pipeline: materialize assets against an emulator and a DuckDB file."""

from pathlib import Path
from typing import Iterable, Optional

import dagster as dg
import duckdb

from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.core.checks import QualityPolicy
from moovitamix_assets.ingestion.assets import RawStaging, raw_snapshot_assets
from moovitamix_assets.ml.registry import ModelStore
from moovitamix_assets.monitoring.lake import LakeResource
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.environment import pipeline_resources
from moovitamix_assets.resources.warehouse import WarehouseResource

# As the daily_ingestion job: raw, then core staged, audited and published with its history.
INGESTION = [*raw_snapshot_assets, *core_assets]


def resources(
    base_url: str, database: Path, quality_policy: Optional[QualityPolicy] = None, **api_options
) -> dict:
    return pipeline_resources(
        api=MoovitamixApiResource(base_url=base_url, **api_options),
        warehouse=WarehouseResource(database=str(database)),
        model_store=ModelStore(directory=str(Path(database).parent / "models")),
        lake=LakeResource(root=str(Path(database).parent / "lake")),
        quality_policy=quality_policy,
        raw_staging=RawStaging(root=str(Path(database).parent / "staging")),
        allow_any_snapshot_date=True,  # the emulator serves a fixed past date in tests
    )


def materialize_day(
    base_url: str,
    database: Path,
    snapshot_date: str,
    assets: Iterable = INGESTION,
    instance: Optional[dg.DagsterInstance] = None,
    raise_on_error: bool = True,
    quality_policy: Optional[QualityPolicy] = None,
    selection: Optional[str] = None,
    **api_options,
) -> dg.ExecuteInProcessResult:
    """selection narrows `assets` (e.g. "key:raw/users": one endpoint of the raw multi-asset)."""
    return dg.materialize(
        list(assets),
        selection=selection,
        partition_key=snapshot_date,
        resources=resources(base_url, database, quality_policy, **api_options),
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Asset path ("raw/users") -> the plain values of its last materialization's metadata in the run."""
    return {
        event.asset_key.to_user_string(): {
            name: value.value for name, value in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def query(database: Path, sql: str, params=()) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql, params).fetchall()


def scalar(database: Path, sql: str, params=()):
    return query(database, sql, params)[0][0]


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """(asset path, check name) -> evaluation, for every check the run evaluated."""
    return {
        ("/".join(evaluation.asset_key.path), evaluation.check_name): evaluation
        for evaluation in result.get_asset_check_evaluations()
    }


def table_fingerprint(database: Path, table: str) -> tuple:
    """Row count and an order-independent checksum of a table's content."""
    return tuple(
        query(database, f"SELECT count(*), sum(hash(COLUMNS(* EXCLUDE (ingested_at, run_id)))) FROM {table}")[0]
        if table.startswith("raw.")
        else query(database, f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {table}")[0]
    )
