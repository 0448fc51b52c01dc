"""The pipeline health report and the alerts carry the right numbers for a planted bad day."""

import datetime as dt

import dagster as dg
import requests

from moovitamix_api.data import expected_counts
from moovitamix_assets.monitoring.alerts import AlertSettings, check_failure_alerts
from moovitamix_assets.monitoring.health import pipeline_health
from moovitamix_assets_tests.pipeline import materialize_day, query, resources


def report(base_url, database, today, instance):
    result = dg.materialize(
        [pipeline_health],
        resources=resources(base_url, database),
        instance=instance,
        run_config={"ops": {"monitoring__pipeline_health": {"config": {"today": today}}}},
    )
    return {key: value.value for key, value in result.asset_materializations_for_node("monitoring__pipeline_health")[0].metadata.items()}


def test_health_report_and_alerts_on_a_good_then_a_bad_day(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("MOOVITAMIX_REPORTS_PATH", str(tmp_path / "reports"))
    database = tmp_path / "warehouse.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    base_url = emulator()

    materialize_day(base_url, database, "2026-11-01", instance=instance)
    good = report(base_url, database, "2026-11-01", instance)
    assert good["verdict"] == "healthy", good["reasons"]
    assert good["records_users"] == 1155 and good["rejected_users"] == 0
    assert good["failed_checks"] == 0
    assert (tmp_path / "reports" / "pipeline_health_2026-11-01.png").read_bytes()[:4] == b"\x89PNG"

    # The next day, 3% of users come with a null email: they are rejected, so their
    # listens are orphans, above the 1% the quality policy allows: the gate fails the
    # staging step and core is not published.
    faults = {"as_of": "2026-11-02", "null_rate": 0.03}
    requests.post(f"{base_url}/_admin/state", json=faults, timeout=10).raise_for_status()
    bad_run = materialize_day(base_url, database, "2026-11-02", instance=instance, raise_on_error=False)
    assert not bad_run.success
    expected = expected_counts(emulator.settings.replace(**faults))
    bad = report(base_url, database, "2026-11-02", instance)

    assert bad["verdict"] == "failing"
    assert bad["records_users"] == expected["users"]["served"]
    assert bad["rejected_users"] == expected["users"]["nulls"] > 0
    assert bad["rejected_tracks"] == expected["tracks"]["nulls"]
    assert f"2026-11-02: {expected['users']['nulls']} of {expected['users']['served']} users records rejected" in bad["reasons"]
    orphans = query(
        database,
        "SELECT count FROM monitoring.check_results WHERE check_name = 'orphan_user_id_rate_within_limit' "
        "ORDER BY recorded_at DESC LIMIT 1",
    )[0][0]
    # The report check says it, the gate says it blocks.
    assert f"check no_orphan_user_ids on core_staging/listen_history failed ({orphans})" in bad["reasons"]
    assert f"check orphan_user_id_rate_within_limit on core_staging/listen_history failed ({orphans}), blocking" in bad["reasons"]
    assert "| users | 1" in bad["report"]  # the snapshot table is in the markdown
    assert query(database, "SELECT verdict FROM monitoring.health_reports ORDER BY generated_at") == [
        ("healthy",), ("failing",)
    ]

    # The check-failure alert of that run carries the same numbers and a link to the run.
    alerts = check_failure_alerts(instance, bad_run.run_id, AlertSettings(ui_url="http://127.0.0.1:3000"))
    orphan_alert = next(alert for alert in alerts if alert["check"] == "orphan_user_id_rate_within_limit")
    assert (orphan_alert["asset"], orphan_alert["severity"]) == ("core_staging/listen_history", "ERROR")
    assert orphan_alert["metadata"]["count"] == orphans
    assert next(alert for alert in alerts if alert["check"] == "no_orphan_user_ids")["severity"] == "WARN"
    assert orphan_alert["run_url"] == f"http://127.0.0.1:3000/runs/{bad_run.run_id}"
    assert orphan_alert["partition"] == "2026-11-02"
    nulls_alert = next(
        alert for alert in alerts if alert["check"] == "required_fields_present" and alert["asset"] == "core_staging/users"
    )
    assert nulls_alert["metadata"]["count"] == expected["users"]["nulls"]


def test_metrics_are_queryable_across_days(emulator, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    base_url = emulator()
    materialize_day(base_url, database, "2026-11-01")
    requests.post(f"{base_url}/_admin/state", json={"as_of": "2026-11-02"}, timeout=10).raise_for_status()
    materialize_day(base_url, database, "2026-11-02")
    records = dict(
        query(
            database,
            "SELECT partition, value FROM monitoring.asset_metrics WHERE asset = 'raw/users' AND metric = 'records' ORDER BY 1",
        )
    )
    later = expected_counts(emulator.settings, as_of=dt.date(2026, 11, 2))["users"]["served"]
    assert records == {"2026-11-01": 1155.0, "2026-11-02": float(later)}
    metrics = {row[0] for row in query(database, "SELECT DISTINCT metric FROM monitoring.asset_metrics WHERE asset = 'raw/users'")}
    assert {"records", "pages", "requests", "retries", "seconds", "records_per_second"} <= metrics
    def metrics_of(asset: str) -> set:
        return {row[0] for row in query(database, "SELECT DISTINCT metric FROM monitoring.asset_metrics WHERE asset = ?", [asset])}

    assert {"rows", "records_rejected", "rejected_null_field", "rejected_duplicate_id"} <= metrics_of("core_staging/users")
    assert {"rows", "publish_seconds"} <= metrics_of("core/users")
    # Each day: 9 checks on each staged table, 4 more (orphans) on listen_history.
    # Per day: 9 per staged table, 2 x 2 on orphans, 8 on the history.
    assert query(database, "SELECT count(*), bool_and(passed) FROM monitoring.check_results") == [(2 * (3 * 9 + 4 + 8), True)]
