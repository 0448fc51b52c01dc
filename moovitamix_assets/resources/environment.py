"""The resources every asset gets: the one list of them, and its values from the environment."""

import os
from pathlib import Path
from typing import Optional

import dagster as dg

from moovitamix_assets.core.checks import QualityPolicy
from moovitamix_assets.ingestion.assets import RawStaging, SnapshotPolicy, raw_staging_from_env
from moovitamix_assets.ml.registry import ModelStore, model_store_from_env
from moovitamix_assets.ml.sensors import DriftPolicy
from moovitamix_assets.ml.serving import ServingStore, serving_store_from_env
from moovitamix_assets.monitoring.alerts import AlertSettings, alert_settings_from_env
from moovitamix_assets.monitoring.lake import LakeResource, lake_from_env
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.warehouse import WarehouseResource, warehouse_from_env

API_URL_ENV = "MOOVITAMIX_API_URL"
API_TOKEN_ENV = "MOOVITAMIX_API_TOKEN"
DEFAULT_API_URL = "http://127.0.0.1:8000"
ALLOW_ANY_SNAPSHOT_DATE_ENV = "MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE"


def pipeline_resources(
    *,
    api: MoovitamixApiResource,
    warehouse: WarehouseResource,
    model_store: ModelStore,
    lake: Optional[LakeResource] = None,
    alert_settings: Optional[AlertSettings] = None,
    quality_policy: Optional[QualityPolicy] = None,
    raw_staging: Optional[RawStaging] = None,
    serving_store: Optional[ServingStore] = None,
    allow_any_snapshot_date: bool = False,
) -> dict[str, dg.ConfigurableResource]:
    """Every resource key the assets, checks and sensors ask for; the policies at their defaults
    unless given. Deployments (below), tests and scripts all build their resources here."""
    return {
        "api": api,
        "warehouse": warehouse,
        "quality_policy": quality_policy or QualityPolicy(),
        "snapshot_policy": SnapshotPolicy(allow_any_date=allow_any_snapshot_date),
        "raw_staging": raw_staging or RawStaging(),
        "model_store": model_store,
        "drift_policy": DriftPolicy(),
        "alert_settings": alert_settings or AlertSettings(),
        "lake": lake or LakeResource(),
        # By default beside the model artefacts (data/models -> data/serving), so a test's
        # temporary model directory brings its own serving folder.
        "serving_store": serving_store or ServingStore(path=str(Path(model_store.directory).parent / "serving")),
    }


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return pipeline_resources(
        api=MoovitamixApiResource(
            base_url=os.getenv(API_URL_ENV, DEFAULT_API_URL),
            # An EnvVar, not the value: Dagster resolves it at run time and never shows it.
            api_token=dg.EnvVar(API_TOKEN_ENV) if os.getenv(API_TOKEN_ENV) else None,
        ),
        warehouse=warehouse_from_env(),
        model_store=model_store_from_env(),
        lake=lake_from_env(),
        raw_staging=raw_staging_from_env(),
        alert_settings=alert_settings_from_env(),
        serving_store=serving_store_from_env(),
        allow_any_snapshot_date=os.getenv(ALLOW_ANY_SNAPSHOT_DATE_ENV) == "1",
    )
