"""The pipeline health report, after each ingestion and hourly: volumes, durations, rejects and checks, with a verdict."""

import base64
import datetime as dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb
import pandas as pd

from moovitamix_assets.constants import CORE_STAGING, MONITORING
from moovitamix_assets.contract import ENTITIES
from moovitamix_assets.monitoring.metrics import ASSET_METRICS, CHECK_RESULTS, recorded_result
from moovitamix_assets.resources.warehouse import (
    DUCKDB_POOL,
    REJECTED_RECORDS,
    WarehouseResource,
    run_sql_file,
    table_exists,
    utc_now,
    utc_today,
)

SQL = Path(__file__).parent / "sql"

REPORTS_PATH_ENV = "MOOVITAMIX_REPORTS_PATH"
DEFAULT_REPORTS_PATH = "data/reports"
# Where the charts are served over HTTP (make dev serves the reports folder there), so that
# the report links its chart; unset, the metadata gives the chart's path.
REPORTS_URL_ENV = "MOOVITAMIX_REPORTS_URL"

HEALTH_CRON = "30 * * * *"
# Hourly, and as soon as a day's ingestion has been staged and audited (its figures and
# checks are then recorded), so the first report follows the first ingestion. Deliberately
# not eager(): the report must also come on the days ingestion failed.
HEALTH_AUTOMATION = (
    dg.AutomationCondition.cron_tick_passed(HEALTH_CRON, "UTC") | dg.AutomationCondition.any_deps_updated()
).since_last_handled() & ~dg.AutomationCondition.in_progress()

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"

HEALTH_REPORTS = "monitoring.health_reports"

# A retry rate or a slowdown past these makes a day degraded.
MAX_RETRY_RATE = 0.1
MAX_SLOWDOWN = 2.0


class HealthConfig(dg.Config):
    today: Optional[str] = None  # the day judged (UTC today when unset)
    window_days: int = 30


@dataclass
class Verdict:
    status: str = HEALTHY
    reasons: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.status = FAILING
        self.reasons.append(reason)

    def degrade(self, reason: str) -> None:
        if self.status == HEALTHY:
            self.status = DEGRADED
        self.reasons.append(reason)


def daily_figures(connection: duckdb.DuckDBPyConnection, since: dt.date) -> pd.DataFrame:
    """Per snapshot date and endpoint: the latest pull's records, pages, requests, retries, seconds,
    and the records rejected from that snapshot."""
    if not table_exists(connection, ASSET_METRICS):
        return pd.DataFrame(columns=["snapshot_date", "entity", "records", "pages", "requests", "retries", "seconds", "rejected"])
    figures = connection.execute(
        f"""
        WITH latest_run AS (
            SELECT asset, partition, arg_max(run_id, recorded_at) AS run_id
            FROM {ASSET_METRICS}
            WHERE asset LIKE 'raw/%' AND partition IS NOT NULL AND partition::DATE >= ?
            GROUP BY ALL
        )
        SELECT m.partition::DATE AS snapshot_date, split_part(m.asset, '/', 2) AS entity,
               max(value) FILTER (WHERE metric = 'records') AS records,
               max(value) FILTER (WHERE metric = 'pages') AS pages,
               max(value) FILTER (WHERE metric = 'requests') AS requests,
               max(value) FILTER (WHERE metric = 'retries') AS retries,
               max(value) FILTER (WHERE metric = 'seconds') AS seconds
        FROM {ASSET_METRICS} m JOIN latest_run USING (asset, partition, run_id)
        GROUP BY ALL ORDER BY 1, 2
        """,
        [since],
    ).df()
    rejected = pd.DataFrame(columns=["snapshot_date", "entity", "rejected"])
    if table_exists(connection, REJECTED_RECORDS):
        rejected = connection.execute(
            f"SELECT snapshot_date, entity, count(*) AS rejected FROM {REJECTED_RECORDS} "
            "WHERE snapshot_date >= ? GROUP BY ALL",
            [since],
        ).df()
    figures = figures.merge(rejected, on=["snapshot_date", "entity"], how="left")
    figures["rejected"] = figures["rejected"].fillna(0).astype(int)
    return figures


def latest_checks(connection: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The latest evaluation of every check."""
    if not table_exists(connection, CHECK_RESULTS):
        return pd.DataFrame(columns=["asset", "check_name", "passed", "severity", "count", "recorded_at"])
    return connection.execute(
        f"""
        SELECT asset, check_name, arg_max(passed, recorded_at) AS passed, arg_max(severity, recorded_at) AS severity,
               arg_max(count, recorded_at) AS count, max(recorded_at) AS recorded_at
        FROM {CHECK_RESULTS} GROUP BY ALL ORDER BY asset, check_name
        """
    ).df()


def assess(figures: pd.DataFrame, checks: pd.DataFrame, today: dt.date) -> Verdict:
    """healthy, degraded or failing, with the reasons, from the figures of the window."""
    verdict = Verdict()
    latest = figures["snapshot_date"].max() if len(figures) else None
    latest = pd.Timestamp(latest).date() if latest is not None else None
    if latest is None:
        verdict.fail(
            "no snapshot ingested in the window: ingest today's with `make ingest` (or Jobs > daily_ingestion > "
            "Materialize); the daily schedule takes over at 02:00 UTC"
        )
        return verdict
    if latest < today - dt.timedelta(days=1):
        verdict.fail(f"no snapshot since {latest} (today is {today})")
    elif latest < today:
        verdict.degrade(f"today's snapshot ({today}) has not landed yet; latest is {latest}")
    day = figures[figures["snapshot_date"].map(lambda d: pd.Timestamp(d).date()) == latest]
    missing = sorted(set(ENTITIES) - set(day["entity"]))
    if missing:
        verdict.fail(f"{latest}: no pull of {', '.join(missing)}")
    for row in day.itertuples():
        if row.rejected:
            verdict.degrade(f"{latest}: {row.rejected} of {int(row.records)} {row.entity} records rejected")
        if row.requests and row.retries / row.requests > MAX_RETRY_RATE:
            verdict.degrade(f"{latest}: {int(row.retries)} retries for {int(row.requests)} requests on /{row.entity}")
        history = figures[(figures["entity"] == row.entity) & (figures["snapshot_date"] < day["snapshot_date"].iloc[0])]
        if len(history) >= 3 and row.seconds > MAX_SLOWDOWN * history["seconds"].median():
            verdict.degrade(
                f"{latest}: /{row.entity} took {row.seconds:.1f} s, over {MAX_SLOWDOWN:g}x the usual {history['seconds'].median():.1f} s"
            )
    for row in checks[~checks["passed"].astype(bool)].itertuples():
        count = f" ({int(row.count)})" if pd.notna(row.count) else ""
        message = f"check {row.check_name} on {row.asset} failed{count}"
        if row.severity == "ERROR":
            verdict.fail(message + ", blocking")
        else:
            verdict.degrade(message)
    return verdict


def chart_figure(figures: pd.DataFrame):
    """Records, seconds and rejects per endpoint and day, over the days that exist (half a day of
    margin each side: a single day is a point in the middle, not on a five-year axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    days = pd.to_datetime(figures["snapshot_date"])
    first, last = days.min(), days.max()
    panels = (("records", "records pulled"), ("seconds", "pull seconds"), ("rejected", "records rejected"))
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 8), sharex=True)
    for axis, (column, title) in zip(axes, panels):
        for entity, rows in figures.groupby("entity"):
            axis.plot(pd.to_datetime(rows["snapshot_date"]), rows[column], marker="o", label=entity)
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        highest = float(figures[column].max())
        axis.set_ylim(0, highest * 1.15 if highest > 0 else 1)
    axes[-1].set_xlim(first - pd.Timedelta(hours=12), last + pd.Timedelta(hours=12))
    axes[-1].xaxis.set_major_locator(mdates.DayLocator(interval=max(1, ((last - first).days + 1) // 10)))
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    axes[0].legend(fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def render_chart(figures: pd.DataFrame) -> bytes:
    """The chart as PNG."""
    import matplotlib.pyplot as plt

    figure = chart_figure(figures)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def chart_link(chart_path: Path) -> Optional[str]:
    """The chart's URL where the reports folder is served (MOOVITAMIX_REPORTS_URL), else None."""
    base = os.getenv(REPORTS_URL_ENV)
    return f"{base.rstrip('/')}/{chart_path.name}" if base else None


def render_markdown(verdict: Verdict, figures: pd.DataFrame, checks: pd.DataFrame, today: dt.date) -> str:
    lines = [f"## Pipeline health on {today}: **{verdict.status.upper()}**", ""]
    lines += [f"- {reason}" for reason in verdict.reasons] or ["- every figure and check within bounds"]
    if len(figures):
        latest = figures["snapshot_date"].max()
        lines += ["", f"### Snapshot {pd.Timestamp(latest).date()}", "",
                  "| endpoint | records | rejected | pages | requests | retries | seconds | records/s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for row in figures[figures["snapshot_date"] == latest].itertuples():
            rate = row.records / row.seconds if row.seconds else 0
            lines.append(
                f"| {row.entity} | {int(row.records)} | {row.rejected} | {int(row.pages)} | {int(row.requests)} "
                f"| {int(row.retries)} | {row.seconds:.1f} | {rate:,.0f} |"
            )
    failed = checks[~checks["passed"].astype(bool)]
    lines += ["", f"### Checks: {len(checks) - len(failed)} of {len(checks)} passing"]
    for row in failed.itertuples():
        lines.append(f"- {row.severity} {row.asset} `{row.check_name}`: {'' if pd.isna(row.count) else int(row.count)}")
    return "\n".join(lines)


@dg.asset(
    key=[MONITORING, "pipeline_health"],
    group_name=MONITORING,
    pool=DUCKDB_POOL,
    kinds={"duckdb"},
    # What it reports on: the staged day's figures and checks. Not a requirement (a report is
    # made whatever their state), the trigger of the report that follows an ingestion.
    deps=[dg.AssetKey([CORE_STAGING, entity]) for entity in ENTITIES],
    automation_condition=HEALTH_AUTOMATION,
)
def pipeline_health(
    context: dg.AssetExecutionContext, config: HealthConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Health of the last 30 days of ingestion: volumes, durations, rejects, checks, and a verdict."""
    today = dt.date.fromisoformat(config.today) if config.today else utc_today()
    with warehouse.get_connection() as connection:
        figures = daily_figures(connection, today - dt.timedelta(days=config.window_days))
        checks = latest_checks(connection)
        verdict = assess(figures, checks, today)
        markdown = render_markdown(verdict, figures, checks, today)
        run_sql_file(connection, SQL / "create_monitoring_tables.sql")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS monitoring.health_reports (generated_at TIMESTAMP NOT NULL, "
            "report_date DATE NOT NULL, verdict VARCHAR NOT NULL, reasons JSON NOT NULL, markdown VARCHAR NOT NULL);"
            # The descriptions the catalogue carries (docs/schema.md is generated from them).
            "COMMENT ON TABLE monitoring.health_reports IS 'Every pipeline health report: the verdict on the "
            "last window_days of ingestion, with its reasons and the report as shown in the UI.';"
            "COMMENT ON COLUMN monitoring.health_reports.generated_at IS 'When the report was made (UTC).';"
            "COMMENT ON COLUMN monitoring.health_reports.report_date IS 'The day judged.';"
            "COMMENT ON COLUMN monitoring.health_reports.verdict IS 'healthy, degraded or failing.';"
            "COMMENT ON COLUMN monitoring.health_reports.reasons IS 'Why it is not healthy: a JSON list of sentences.';"
            "COMMENT ON COLUMN monitoring.health_reports.markdown IS 'The report as shown in the UI, without the chart.';"
        )
        connection.execute(
            f"INSERT INTO {HEALTH_REPORTS} VALUES (?, ?, ?, ?, ?)",
            [utc_now(), today, verdict.status, json.dumps(verdict.reasons), markdown],
        )
    chart = render_chart(figures) if len(figures) else b""
    chart_path = Path(os.getenv(REPORTS_PATH_ENV, DEFAULT_REPORTS_PATH)) / f"pipeline_health_{today}.png"
    link = chart_link(chart_path) if chart else None
    if chart:
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        chart_path.write_bytes(chart)
        if link:
            markdown += f"\n\n[Open the chart of volumes, durations and rejects]({link})"
        # Inline too: the UI renders a data: image, so the report reads whole where it is shown.
        markdown += f"\n\n![volumes, durations and rejects](data:image/png;base64,{base64.b64encode(chart).decode()})"
    if verdict.status != HEALTHY:
        context.log.warning(f"pipeline {verdict.status}: {'; '.join(verdict.reasons)}")
    latest = figures[figures["snapshot_date"] == figures["snapshot_date"].max()] if len(figures) else figures
    return recorded_result(
        context,
        warehouse,
        {
            "verdict": verdict.status,
            "reasons": dg.MetadataValue.json(verdict.reasons),
            "report": dg.MetadataValue.md(markdown),
            "chart": (dg.MetadataValue.url(link) if link else dg.MetadataValue.path(str(chart_path))) if chart else "no data",
            "healthy": int(verdict.status == HEALTHY),
            "failed_checks": int((~checks["passed"].astype(bool)).sum()),
            **{f"records_{row.entity}": int(row.records) for row in latest.itertuples()},
            **{f"rejected_{row.entity}": int(row.rejected) for row in latest.itertuples()},
        },
    )
