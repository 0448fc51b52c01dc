"""One partition per day: each holds that day's full snapshot of the API.

The API serves only the current snapshot, so a day can be pulled only on that day: a day
missed stays missing for good. The partitions therefore begin on the first day this
deployment ran (`make dev` records it in $DAGSTER_HOME/first_snapshot_date and sets
MOOVITAMIX_FIRST_SNAPSHOT_DATE), not on a fixed date: a new instance shows today's
partition to fill, not hundreds of "missing" days that nothing could fill. Without the
setting (the tests, an emulator pinned to a past date) they begin on FIRST_SNAPSHOT_DATE.
"""

import os

import dagster as dg

from moovitamix_assets.constants import FIRST_SNAPSHOT_DATE

FIRST_SNAPSHOT_DATE_ENV = "MOOVITAMIX_FIRST_SNAPSHOT_DATE"

# end_offset=1: today's partition exists as soon as the day starts, so the 02:00 UTC tick
# can pull today's snapshot (the API has no as-of parameter: a pull is always "now").
daily_snapshots = dg.DailyPartitionsDefinition(
    start_date=os.getenv(FIRST_SNAPSHOT_DATE_ENV) or FIRST_SNAPSHOT_DATE, timezone="UTC", end_offset=1
)
