"""Operating it as a user would: `make dev` from nothing, `make ingest`, the README's commands, and
what the UI then shows, all through one real `make dev` session (the module's fixture), ended by
Ctrl-C.

The session gets free ports through the one setting per service (MOOVITAMIX_API_PORT,
MOOVITAMIX_UI_PORT, MOOVITAMIX_RECS_PORT, MOOVITAMIX_REPORTS_PORT) and no URL: that the API
URL, the alert links and `make ingest` follow the ports is part of what is tested. A fresh
DAGSTER_HOME and data folders in tmp: a first day, as from a clean clone. Every check reads
the UI's GraphQL API or the services' HTTP, never the DuckDB file, which runs may be writing.
"""

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from moovitamix_api.data import expected_counts
from moovitamix_api.settings import EmulatorSettings
from moovitamix_assets_tests.test_cli import README_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
LOCATION = "moovitamix_assets"
# A first model and its recommendations, after the first ingestion, under make dev's daemon.
RECOMMENDATIONS_WITHIN_SECONDS = 120

WORKSPACE_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename
    ... on RepositoryLocation { repositories { jobs { name } schedules { name scheduleState { status } }
                                              sensors { name sensorState { status } } } }
    ... on PythonError { message } } } } } }
"""
RUN_QUERY = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { jobName status
    repositoryOrigin { repositoryLocationName } tags { key value } } } }
"""
JOB_RUNS_QUERY = """
query ($job: String!) { runsOrError(filter: {pipelineName: $job}) { ... on Runs { results { runId status } } } }
"""
RESOURCES_QUERY = """
{ allTopLevelResourceDetailsOrError(repositorySelector: {repositoryLocationName: "moovitamix_assets",
                                                         repositoryName: "__repository__"}) {
    ... on ResourceDetailsList { results { name configuredValues { key value } } } } }
"""
LATEST_MATERIALIZATION = """
query ($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode {
  assetMaterializations(limit: 1) { runId timestamp metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url }
    ... on MarkdownMetadataEntry { mdStr }
    ... on TableSchemaMetadataEntry { schema { columns { name description } } } } } } } }
"""
PARTITION_STATS = """
query ($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode {
  partitionStats { numMaterialized numPartitions numFailed } } } }
"""
CATALOGUE_QUERY = """
{ assetNodes { assetKey { path } description metadataEntries { label __typename
    ... on TextMetadataEntry { text }
    ... on TableSchemaMetadataEntry { schema { columns { name type description } } } } } }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(url, timeout=5)
            if response.ok:
                return response
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(1)


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class AlertReceiver:
    """A Slack-compatible webhook on loopback: keeps every JSON body posted to it."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class DevSession:
    process: subprocess.Popen
    home: Path
    environment: dict
    ports: dict
    receiver: AlertReceiver
    today: str
    facts: dict = field(default_factory=dict)  # what one test learns and a later one uses

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ports['MOOVITAMIX_UI_PORT']}"

    def graphql(self, query: str, **variables) -> dict:
        body = requests.post(f"{self.ui}/graphql", json={"query": query, "variables": variables}, timeout=60).json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def latest_materialization(self, path: str) -> dict:
        node = self.graphql(LATEST_MATERIALIZATION, path=path.split("/"))["assetNodeOrError"]
        events = node["assetMaterializations"]
        if not events:
            return {}
        entries = events[0]["metadataEntries"]
        values = {
            entry["label"]: next((entry[key] for key in ("intValue", "text", "url", "mdStr", "schema") if key in entry), None)
            for entry in entries
        }
        return {"run_id": events[0]["runId"], "timestamp": int(events[0]["timestamp"]) / 1000, **values}

    def run(self, command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=self.environment, capture_output=True, text=True, timeout=300
        )


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[DevSession]:
    tmp = tmp_path_factory.mktemp("make_dev")
    ports = {name: free_port() for name in ("MOOVITAMIX_API_PORT", "MOOVITAMIX_UI_PORT", "MOOVITAMIX_RECS_PORT", "MOOVITAMIX_REPORTS_PORT")}
    receiver = AlertReceiver()
    data = tmp / "data"
    # No URL at all: they must follow the ports. Nothing of the test suite's own settings.
    inherited = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("MOOVITAMIX_", "DAGSTER_"))
    }  # fmt: skip
    environment = {
        **inherited,
        **{name: str(port) for name, port in ports.items()},
        "MOOVITAMIX_DUCKDB_PATH": str(data / "moovitamix.duckdb"),
        "MOOVITAMIX_MODEL_DIR": str(data / "models"),
        "MOOVITAMIX_LAKE_PATH": str(data / "lake"),
        "MOOVITAMIX_REPORTS_PATH": str(data / "reports"),
        "MOOVITAMIX_SERVING_PATH": str(data / "serving"),
        "MOOVITAMIX_STAGING_PATH": str(data / "staging"),
        "MOOVITAMIX_ALERT_WEBHOOK_URL": receiver.url,
    }
    home = tmp / "dagster_home"
    # Its own session and process group: the SIGINT of test_ctrl_c_stops_everything reaches
    # make as Ctrl-C would.
    process = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DAGSTER_HOME={home}"], cwd=ROOT, env=environment, start_new_session=True,
        stdout=open(tmp / "dev.log", "wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    session = DevSession(process, home, environment, ports, receiver, dt.datetime.now(dt.timezone.utc).date().isoformat())
    try:
        yield session
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        receiver.server.shutdown()


def expected_today(dev: DevSession) -> dict:
    """What the emulator `make dev` starts serves today (its defaults, following the clock)."""
    return expected_counts(EmulatorSettings(as_of=dt.date.fromisoformat(dev.today)))


def test_make_dev_serves_the_api_the_ui_and_the_services_on_their_ports(dev):
    wait_for(f"{dev.ui}/server_info", timeout=180)
    deadline = time.monotonic() + 120
    while True:
        (entry,) = dev.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        if entry["loadStatus"] == "LOADED" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert entry["name"] == LOCATION
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    (repository,) = location["repositories"]
    assert {"daily_ingestion", "retrain_recommender"} <= {job["name"] for job in repository["jobs"]}
    assert {schedule["scheduleState"]["status"] for schedule in repository["schedules"]} == {"RUNNING"}
    sensors = {sensor["name"]: sensor["sensorState"]["status"] for sensor in repository["sensors"]}
    assert sensors["automation_sensor"] == sensors["recommender_drift_sensor"] == "RUNNING"

    # Each service on its port, and the URLs that follow from them: the pipeline pulls from
    # the emulator make dev started, alerts link to the UI it serves.
    page = wait_for(f"http://127.0.0.1:{dev.ports['MOOVITAMIX_API_PORT']}/users?size=1", timeout=30).json()
    assert page["total"] == expected_today(dev)["users"]["served"]
    resources = {
        resource["name"]: {value["key"]: value["value"] for value in resource["configuredValues"]}
        for resource in dev.graphql(RESOURCES_QUERY)["allTopLevelResourceDetailsOrError"]["results"]
    }
    assert resources["api"]["base_url"] == json.dumps(f"http://127.0.0.1:{dev.ports['MOOVITAMIX_API_PORT']}")
    assert resources["alert_settings"]["ui_url"] == json.dumps(dev.ui)
    recommendations = requests.get(f"http://127.0.0.1:{dev.ports['MOOVITAMIX_RECS_PORT']}/health", timeout=10)
    assert recommendations.status_code == 503 and recommendations.json()["status"] == "unavailable"  # nothing published yet
    wait_for(f"http://127.0.0.1:{dev.ports['MOOVITAMIX_REPORTS_PORT']}/", timeout=30)

    # A start that says what it serves and what to do next, without warnings about Dagster itself.
    log = (dev.home.parent / "dev.log").read_text()
    assert "First day? In another terminal: make ingest" in log
    assert not re.search(r"SupersessionWarning|DeprecationWarning", log), log[-3000:]

    # A new instance: the raw partitions begin today, the one day that can be filled.
    assert (dev.home / "first_snapshot_date").read_text().strip() == dev.today
    stats = dev.graphql(PARTITION_STATS, path=["raw", "users"])["assetNodeOrError"]["partitionStats"]
    assert stats == {"numMaterialized": 0, "numPartitions": 1, "numFailed": 0}


def test_make_ingest_runs_today_in_the_dev_instance_and_ends_with_its_link_and_counts(dev):
    finished = dev.run("make --no-print-directory ingest")
    dev.facts["ingested_at"] = time.time()
    assert finished.returncode == 0, finished.stdout + finished.stderr
    output = finished.stdout + finished.stderr
    assert not re.search(r"warn|deprecat|supersed", output, re.IGNORECASE), output
    assert len(output.splitlines()) < 30, output
    (run_id,) = re.findall(rf"^Launched daily_ingestion for {dev.today}: {dev.ui}/runs/([0-9a-f-]+)$", finished.stdout, re.M)
    assert re.search(rf"^SUCCESS in \d+ s: {dev.ui}/runs/{run_id}$", finished.stdout, re.M)
    expected = expected_today(dev)
    for asset, rows in (
        ("raw/users", expected["users"]["served"]),
        ("raw/tracks", expected["tracks"]["served"]),
        ("raw/listen_history", expected["listen_history"]["served"]),
        ("core/users", expected["users"]["distinct_ids"]),
        ("core/listen_history", expected["listen_history"]["listens"]),
    ):
        assert re.search(rf"^  {asset} +{rows:,} rows in {asset.replace('/', '.')}$", finished.stdout, re.M), asset
    assert re.search(r"^  checks: \d+ passed, 0 failed$", finished.stdout, re.M)

    # The run is the instance's, from the code location: listed under its job, re-executable.
    run = dev.graphql(RUN_QUERY, runId=run_id)["runOrError"]
    assert (run["jobName"], run["status"]) == ("daily_ingestion", "SUCCESS")
    assert run["repositoryOrigin"]["repositoryLocationName"] == LOCATION
    assert {"key": "dagster/partition", "value": dev.today} in run["tags"]
    job_runs = dev.graphql(JOB_RUNS_QUERY, job="daily_ingestion")["runsOrError"]["results"]
    assert {"runId": run_id, "status": "SUCCESS"} in job_runs
    # Nothing missing: today's partition, filled.
    stats = dev.graphql(PARTITION_STATS, path=["raw", "users"])["assetNodeOrError"]["partitionStats"]
    assert stats == {"numMaterialized": 1, "numPartitions": 1, "numFailed": 0}


def test_recommendations_follow_the_first_ingestion_within_two_minutes(dev):
    assert "ingested_at" in dev.facts, "make ingest did not run"
    deadline = dev.facts["ingested_at"] + RECOMMENDATIONS_WITHIN_SECONDS
    while not (recommendations := dev.latest_materialization("ml/user_recommendations")):
        assert time.time() < deadline, f"no recommendations {RECOMMENDATIONS_WITHIN_SECONDS} s after the first ingestion"
        time.sleep(2)
    assert recommendations["timestamp"] - dev.facts["ingested_at"] < RECOMMENDATIONS_WITHIN_SECONDS
    users = expected_today(dev)["users"]["distinct_ids"]
    assert recommendations["users"] == users and recommendations["dagster/row_count"] == 10 * users
    run = dev.graphql(RUN_QUERY, runId=recommendations["run_id"])["runOrError"]
    assert run["jobName"] == "retrain_recommender"
    assert {"key": "moovitamix/drift_reasons", "value": "no model has been trained yet"} in run["tags"]


def test_the_first_health_report_follows_the_first_ingestion_and_reads_in_the_ui(dev):
    deadline = time.time() + 60
    while not (report := dev.latest_materialization("monitoring/pipeline_health")):
        assert time.time() < deadline, "no health report a minute after the first ingestion"
        time.sleep(2)
    assert report["verdict"] == "healthy"
    users = expected_today(dev)["users"]["served"]
    assert report["report"].startswith(f"## Pipeline health on {dev.today}: **HEALTHY**")
    assert f"| users | {users} | 0 |" in report["report"]
    chart = f"http://127.0.0.1:{dev.ports['MOOVITAMIX_REPORTS_PORT']}/pipeline_health_{dev.today}.png"
    assert report["chart"] == chart and f"]({chart})" in report["report"]
    served = requests.get(chart, timeout=10)
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"


def test_every_table_and_core_column_carries_its_description_in_the_ui(dev):
    described = {}
    for node in dev.graphql(CATALOGUE_QUERY)["assetNodes"]:
        entries = {entry["label"]: entry for entry in node["metadataEntries"]}
        if "dagster/column_schema" in entries:
            columns = entries["dagster/column_schema"]["schema"]["columns"]
            assert all(column["description"] and column["type"] for column in columns), node["assetKey"]
            table = entries["dagster/table_name"]["text"]
            assert f"`{table}`: " in node["description"]
            described["/".join(node["assetKey"]["path"])] = table
    for schema in ("raw", "core_staging", "core"):
        for entity in ("users", "tracks", "listen_history"):
            assert described[f"{schema}/{entity}"] == f"{schema}.{entity}"
    assert described["ml/user_recommendations"] == "ml.user_recommendations"
    assert described["ml/training_set"] == "ml.training_set"
    assert described["monitoring/pipeline_health"] == "monitoring.health_reports"
    # And what the publish reported: the live catalogue of core.*, every column described.
    for entity in ("users", "tracks", "listen_history"):
        columns = dev.latest_materialization(f"core/{entity}")["dagster/column_schema"]["columns"]
        assert columns and all(column["description"] for column in columns), entity


def test_a_failing_cli_run_is_alerted_with_its_link(dev, tmp_path):
    config = tmp_path / "rollback.yaml"
    config.write_text(yaml.safe_dump({"ops": {"rollback_to_version": {"config": {"version": "no-such-version", "reason": "a test"}}}}))
    finished = dev.run(f".venv/bin/python scripts/launch.py --job rollback_champion --config {config}")
    assert finished.returncode == 1, finished.stdout + finished.stderr
    (run_id,) = re.findall(rf"^FAILURE in \d+ s: {dev.ui}/runs/([0-9a-f-]+)$", finished.stdout, re.M)
    assert re.search(r"^  step rollback_to_version failed: .*no-such-version", finished.stdout, re.M)
    deadline = time.monotonic() + 90
    while not (alerts := [body for body in dev.receiver.bodies if body.get("run_id") == run_id]):
        assert time.monotonic() < deadline, "no alert 90 s after the failed run"
        time.sleep(2)
    (alert,) = alerts
    assert (alert["kind"], alert["job"]) == ("run_failure", "rollback_champion")
    assert alert["run_url"] == f"{dev.ui}/runs/{run_id}" and alert["text"].endswith(alert["run_url"])
    assert "no-such-version" in alert["error"]


def test_the_documented_commands_run_as_written_in_the_dev_instance(dev, tmp_path):
    # The project's root layout, in a folder of its own where rollback.yaml can be written.
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    launched = {}
    for command in README_COMMANDS:
        if "rollback_champion" in command:
            # rollback.yaml as docs/operations.md shows it, naming the model the retrain just judged.
            challenger = dev.latest_materialization("ml/recommender_model")["challenger_version"]
            (documented,) = [block for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(), re.S)]
            rollback = yaml.safe_load(documented)
            rollback["ops"]["rollback_to_version"]["config"]["version"] = challenger
            (tmp_path / "rollback.yaml").write_text(yaml.safe_dump(rollback))
        finished = dev.run(command, cwd=tmp_path)
        assert finished.returncode == 0, f"{command}\n{finished.stdout}\n{finished.stderr}"
        (run_id,) = re.findall(rf"^SUCCESS in \d+ s: {dev.ui}/runs/([0-9a-f-]+)$", finished.stdout, re.M)
        run = dev.graphql(RUN_QUERY, runId=run_id)["runOrError"]
        assert run["repositoryOrigin"]["repositoryLocationName"] == LOCATION
        launched[command] = run["jobName"]
    assert sorted(launched.values()) == sorted(
        ["daily_ingestion", "__ASSET_JOB", "retrain_recommender", "rollback_champion", "__ASSET_JOB", "__ASSET_JOB"]
    )


def test_ctrl_c_stops_everything(dev):
    os.killpg(dev.process.pid, signal.SIGINT)
    dev.process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(is_listening(port) for port in dev.ports.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [name for name, port in dev.ports.items() if is_listening(port)], "a service outlived Ctrl-C"
