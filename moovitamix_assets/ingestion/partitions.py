"""One partition per day: each holds that day's full snapshot of the API."""

import dagster as dg

from moovitamix_assets.constants import FIRST_SNAPSHOT_DATE

# end_offset=1: today's partition exists as soon as the day starts, so the 02:00 UTC tick
# can pull today's snapshot (the API has no as-of parameter: a pull is always "now").
daily_snapshots = dg.DailyPartitionsDefinition(
    start_date=FIRST_SNAPSHOT_DATE, timezone="UTC", end_offset=1
)
