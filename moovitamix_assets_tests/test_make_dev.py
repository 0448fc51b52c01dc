"""`make dev` brings up the emulated API and the Dagster UI with the code location loaded,
`make ingest` runs today's ingestion in it, and Ctrl-C stops both."""

import os
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]

WORKSPACE_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { jobs { name } schedules { name scheduleState { status } } sensors { name sensorState { status } } } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"

# What the UI's Materialize button sends: the run goes through the queue and the daemon.
LAUNCH_RUN = """
mutation ($partition: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "moovitamix_assets", repositoryName: "__repository__", jobName: "daily_ingestion"}
    executionMetadata: {tags: [{key: "dagster/partition", value: $partition}]}
  }) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
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


@pytest.mark.slow
def test_make_dev_serves_the_ui_and_the_api_and_stops_on_ctrl_c(tmp_path):
    api_port, ui_port = free_port(), free_port()
    data = tmp_path / "data"  # nothing of the test's runs lands in the project's data/
    environment = {
        **os.environ,
        "MOOVITAMIX_API_PORT": str(api_port),
        "DAGSTER_PORT": str(ui_port),
        "MOOVITAMIX_UI_PORT": str(ui_port),
        "MOOVITAMIX_RECS_PORT": str(free_port()),
        "MOOVITAMIX_REPORTS_PORT": str(free_port()),
        "MOOVITAMIX_API_URL": f"http://127.0.0.1:{api_port}",
        "MOOVITAMIX_DUCKDB_PATH": str(data / "warehouse.duckdb"),
        "MOOVITAMIX_STAGING_PATH": str(data / "staging"),
        "MOOVITAMIX_MODEL_DIR": str(data / "models"),
        "MOOVITAMIX_LAKE_PATH": str(data / "lake"),
        "MOOVITAMIX_REPORTS_PATH": str(data / "reports"),
        "MOOVITAMIX_SERVING_PATH": str(data / "serving"),
    }
    # Its own session and process group: the signal below reaches make as Ctrl-C would.
    process = subprocess.Popen(
        ["make", "--no-print-directory", "dev", f"DAGSTER_HOME={tmp_path / 'dagster_home'}"],
        cwd=ROOT, env=environment, start_new_session=True,
        stdout=open(tmp_path / "dev.log", "wb"), stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"http://127.0.0.1:{ui_port}/server_info", timeout=180)
        page = wait_for(f"http://127.0.0.1:{api_port}/users?size=1", timeout=30).json()
        assert page["page"] == 1 and len(page["items"]) == 1

        deadline = time.monotonic() + 120
        while True:
            workspace = requests.post(
                f"http://127.0.0.1:{ui_port}/graphql", json={"query": WORKSPACE_QUERY}, timeout=30
            ).json()["data"]["workspaceOrError"]
            (entry,) = workspace["locationEntries"]
            if entry["loadStatus"] == "LOADED" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert entry["name"] == "moovitamix_assets"
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        (repository,) = location["repositories"]
        assert {"daily_ingestion", "retrain_recommender"} <= {job["name"] for job in repository["jobs"]}
        assert {schedule["scheduleState"]["status"] for schedule in repository["schedules"]} == {"RUNNING"}
        sensors = {sensor["name"]: sensor["sensorState"]["status"] for sensor in repository["sensors"]}
        assert sensors["automation_sensor"] == "RUNNING"

        # `make ingest` runs today's partition in the same instance: the UI lists the run.
        ingest = subprocess.run(
            ["make", "--no-print-directory", "ingest", f"DAGSTER_HOME={tmp_path / 'dagster_home'}"],
            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
        )
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        runs = requests.post(
            f"http://127.0.0.1:{ui_port}/graphql", json={"query": RUNS_QUERY}, timeout=30
        ).json()["data"]["runsOrError"]["results"]
        today = datetime.now(timezone.utc).date().isoformat()
        assert {
            "job": "daily_ingestion", "status": "SUCCESS", "partition": today
        } in [
            {"job": run["jobName"], "status": run["status"],
             "partition": next((tag["value"] for tag in run["tags"] if tag["key"] == "dagster/partition"), None)}
            for run in runs
        ]  # fmt: skip

        # The same day again, launched as from the UI: queued, run by the daemon, idempotent.
        launched = requests.post(
            f"http://127.0.0.1:{ui_port}/graphql",
            json={"query": LAUNCH_RUN, "variables": {"partition": today}}, timeout=30,
        ).json()["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = requests.post(
                f"http://127.0.0.1:{ui_port}/graphql", json={"query": RUNS_QUERY}, timeout=30
            ).json()["data"]["runsOrError"]["results"]
            status = next(run["status"] for run in runs if run["runId"] == run_id)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    deadline = time.monotonic() + 30
    while (is_listening(api_port) or is_listening(ui_port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not is_listening(api_port), "the emulator outlived Ctrl-C"
    assert not is_listening(ui_port), "dagster dev outlived Ctrl-C"
