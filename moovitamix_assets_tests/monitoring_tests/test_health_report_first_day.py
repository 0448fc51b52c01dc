"""The first health report follows the first ingestion (then every hour), reads whole in the UI
(verdict, table, chart inline and linked), and its chart spans the days that exist."""

import datetime as dt

import dagster as dg
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from moovitamix_assets.core.assets import core_assets
from moovitamix_assets.ingestion.assets import raw_snapshot_assets
from moovitamix_assets.monitoring.health import chart_figure, pipeline_health
from moovitamix_assets_tests.pipeline import materialize_day, resources

DAY = "2026-11-01"
HEALTH = dg.AssetKey(["monitoring", "pipeline_health"])


def test_the_report_follows_each_ingestion_and_the_hour(emulator_url, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(
        assets=[*raw_snapshot_assets, *core_assets, pipeline_health], resources=resources(emulator_url, database)
    )
    start = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.timezone.utc)

    def requested(cursor, minutes):
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=cursor, evaluation_time=start + dt.timedelta(minutes=minutes)
        )
        return result.get_num_requested(HEALTH), result.cursor

    first, cursor = requested(None, 0)
    assert first == 0  # nothing to report on yet, and the hour has not struck
    materialize_day(emulator_url, database, DAY, instance=instance)
    after_ingestion, cursor = requested(cursor, 1)
    assert after_ingestion == 1  # not at 10:30: now
    handled, cursor = requested(cursor, 2)
    assert handled == 0
    hourly, cursor = requested(cursor, 31)  # 10:30 passed
    assert hourly == 1


def test_the_report_reads_in_the_ui_and_links_its_chart(emulator_url, tmp_path, monkeypatch):
    monkeypatch.setenv("MOOVITAMIX_REPORTS_PATH", str(tmp_path / "reports"))
    monkeypatch.setenv("MOOVITAMIX_REPORTS_URL", "http://127.0.0.1:8002")
    database = tmp_path / "warehouse.duckdb"
    instance = dg.DagsterInstance.ephemeral()

    def report():
        result = dg.materialize(
            [pipeline_health],
            resources=resources(emulator_url, database),
            instance=instance,
            run_config={"ops": {"monitoring__pipeline_health": {"config": {"today": DAY}}}},
        )
        return result.asset_materializations_for_node("monitoring__pipeline_health")[0].metadata

    # Before any ingestion: failing, and it says what to do.
    empty = report()
    assert empty["verdict"].value == "failing"
    assert "make ingest" in empty["report"].value and empty["chart"].value == "no data"

    materialize_day(emulator_url, database, DAY, instance=instance)
    metadata = report()
    markdown = metadata["report"]
    assert isinstance(markdown, dg.MarkdownMetadataValue)
    assert markdown.value.startswith(f"## Pipeline health on {DAY}: **HEALTHY**")
    assert "| users | 1155 | 0 | 12 | 13 | 0 |" in markdown.value
    link = f"http://127.0.0.1:8002/pipeline_health_{DAY}.png"
    assert metadata["chart"] == dg.MetadataValue.url(link)
    assert f"[Open the chart of volumes, durations and rejects]({link})" in markdown.value
    assert "![volumes, durations and rejects](data:image/png;base64,iVBORw0KGgo" in markdown.value
    assert (tmp_path / "reports" / f"pipeline_health_{DAY}.png").read_bytes()[:4] == b"\x89PNG"


def figures_of(days: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"snapshot_date": dt.date.fromisoformat(day), "entity": entity, "records": 10, "seconds": 1.0, "rejected": 0}
            for day in days
            for entity in ("users", "tracks")
        ]
    )


def test_the_chart_spans_the_days_that_exist():
    for days in (["2026-11-01"], ["2026-11-01", "2026-11-02", "2026-11-05"]):
        figure = chart_figure(figures_of(days))
        low, high = (mdates.num2date(value).replace(tzinfo=None) for value in figure.axes[-1].get_xlim())
        plt.close(figure)
        assert low == dt.datetime.fromisoformat(days[0]) - dt.timedelta(hours=12)
        assert high == dt.datetime.fromisoformat(days[-1]) + dt.timedelta(hours=12)
