"""The resources every asset gets, built from the environment in one place."""

import os

import dagster as dg

from moovitamix_assets.core.checks import QualityPolicy
from moovitamix_assets.ingestion.assets import SnapshotPolicy
from moovitamix_assets.ml.registry import model_store_from_env
from moovitamix_assets.ml.sensors import DriftPolicy
from moovitamix_assets.monitoring.alerts import alert_settings_from_env
from moovitamix_assets.monitoring.lake import lake_from_env
from moovitamix_assets.resources.api import MoovitamixApiResource
from moovitamix_assets.resources.warehouse import warehouse_from_env

API_URL_ENV = "MOOVITAMIX_API_URL"
API_TOKEN_ENV = "MOOVITAMIX_API_TOKEN"
DEFAULT_API_URL = "http://127.0.0.1:8000"
ALLOW_ANY_SNAPSHOT_DATE_ENV = "MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE"


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "api": MoovitamixApiResource(
            base_url=os.getenv(API_URL_ENV, DEFAULT_API_URL),
            # An EnvVar, not the value: Dagster resolves it at run time and never shows it.
            api_token=dg.EnvVar(API_TOKEN_ENV) if os.getenv(API_TOKEN_ENV) else None,
        ),
        "warehouse": warehouse_from_env(),
        "quality_policy": QualityPolicy(),
        "snapshot_policy": SnapshotPolicy(allow_any_date=os.getenv(ALLOW_ANY_SNAPSHOT_DATE_ENV) == "1"),
        "model_store": model_store_from_env(),
        "drift_policy": DriftPolicy(),
        "alert_settings": alert_settings_from_env(),
        "lake": lake_from_env(),
    }
