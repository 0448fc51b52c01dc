"""One freshness policy for everything that must follow the daily snapshot."""

from datetime import timedelta
from typing import Iterable, Sequence

import dagster as dg

# Daily data: a warning once a day has passed without a new materialization (the 02:00
# UTC run is late), a failure past 26 hours (a day's ingestion is missing).
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=24)
)


def with_daily_freshness(assets: Iterable[dg.AssetsDefinition]) -> Sequence[dg.AssetsDefinition]:
    return dg.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=DAILY_FRESHNESS), assets)
