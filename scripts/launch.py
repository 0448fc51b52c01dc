"""Launches a job, or a selection of assets, in the Dagster instance `make dev` runs, and waits for it.

    .venv/bin/python scripts/launch.py --job daily_ingestion --partition 2026-11-25
    .venv/bin/python scripts/launch.py --select group:core
    .venv/bin/python scripts/launch.py --job rollback_champion --config rollback.yaml
    .venv/bin/python scripts/launch.py --job retrain_recommender --no-wait

The run goes where the UI's Launch and Materialize buttons send it: through the UI's GraphQL
API to the instance's run queue, then the daemon runs it from the code location. So it is
listed under its job, alerts see it, and Re-execute works, unlike `dagster job execute -m`
or `dagster asset materialize -m`, which run in the calling process with no code-location
origin. It waits for the run to end (Ctrl-C stops waiting, not the run) and prints its
link, how it ended, the rows each asset materialized (from the run's materialization
metadata: the DuckDB file is never opened here) and its checks.

Exit status: 0 the run succeeded (or was launched, with --no-wait); 1 it failed or was
canceled; 2 it could not be launched (the UI is not running, an unknown job, asset or
group, a config the job refuses), or it waits for a daemon that is not running.
"""

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import requests
import yaml

# The UI's address, as the alerts link to it (MOOVITAMIX_UI_URL, or MOOVITAMIX_UI_PORT).
from moovitamix_assets.monitoring.alerts import ui_url_from_env

PARTITION_TAG = "dagster/partition"
LAUNCHED_BY_TAG = "moovitamix/launched_by"
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}
POLL_SECONDS = 1.0
# A run still queued after this long, with no daemon to dequeue it, is reported.
QUEUED_PATIENCE_SECONDS = 20.0
LOCATION_LOAD_SECONDS = 180.0

WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on RepositoryLocation { name repositories { name jobs { name } } }
                                     ... on PythonError { message } } } }
  ... on PythonError { message } } }
"""
ASSET_NODES = "{ assetNodes { assetKey { path } groupName jobNames isMaterializable isPartitioned } }"
LAUNCH = """
mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PythonError { message }
  ... on Error { message } } }
"""
RUN = """
query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status jobName startTime endTime } } }
"""
RUN_RESULTS = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run {
  assetMaterializations { assetKey { path } metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }
"""
RUN_LOGS = """
query ($runId: ID!, $cursor: String) { logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
  __typename
  ... on EventConnection { cursor hasMore events { __typename
    ... on ExecutionStepFailureEvent { stepKey error { message causes { message } } }
    ... on RunFailureEvent { message }
    ... on AssetCheckEvaluationEvent { evaluation { checkName success severity assetKey { path } } } } } } }
"""
DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"


class LaunchError(Exception):
    """The run could not be launched or followed: one line that says why and what to do."""


class DagsterUi:
    """The UI's GraphQL API."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/runs/{run_id}"

    def query(self, query: str, **variables: Any) -> dict:
        try:
            response = self.session.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
            )
        except requests.ConnectionError:
            raise LaunchError(
                f"The Dagster UI is not running at {self.url}: start it with `make dev` (in another terminal), "
                "then run this again."
            ) from None
        try:
            response.raise_for_status()
            body = response.json()
        except ValueError:
            raise LaunchError(f"{self.url} does not answer as the Dagster UI (not JSON): is MOOVITAMIX_UI_URL right?") from None
        except requests.HTTPError:
            raise LaunchError(
                f"{self.url} answered HTTP {response.status_code}: is it the Dagster UI (MOOVITAMIX_UI_URL)?"
            ) from None
        if body.get("errors"):
            raise LaunchError(f"the UI refused the query: {body['errors'][0]['message']}")
        return body["data"]

    def repositories(self) -> list[dict]:
        """Every loaded repository; waits while a code location is still loading (just after `make dev`)."""
        deadline = time.monotonic() + LOCATION_LOAD_SECONDS
        said = False
        while True:
            workspace = self.query(WORKSPACE)["workspaceOrError"]
            if workspace["__typename"] != "Workspace":
                raise LaunchError(f"the UI cannot read its workspace: {first_line(workspace.get('message'))}")
            entries = workspace["locationEntries"]
            loading = [entry["name"] for entry in entries if entry["loadStatus"] == "LOADING"]
            if not loading:
                break
            if time.monotonic() > deadline:
                raise LaunchError(f"code location {', '.join(loading)} still loading after {LOCATION_LOAD_SECONDS:.0f} s")
            if not said:
                print(f"Waiting for code location {', '.join(loading)} to load...", flush=True)
                said = True
            time.sleep(2)
        repositories = []
        for entry in entries:
            location = entry["locationOrLoadError"] or {}
            if location.get("__typename") == "PythonError":
                raise LaunchError(f"code location {entry['name']} failed to load: {first_line(location['message'])}")
            for repository in location.get("repositories", []):
                repositories.append({**repository, "location": location["name"]})
        return repositories


def first_line(text: Optional[str]) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def job_selector(ui: DagsterUi, job: str) -> dict:
    repositories = ui.repositories()
    for repository in repositories:
        if job in {known["name"] for known in repository["jobs"]}:
            return {"repositoryLocationName": repository["location"], "repositoryName": repository["name"], "jobName": job}
    jobs = sorted({known["name"] for repository in repositories for known in repository["jobs"] if not known["name"].startswith("__")})
    raise LaunchError(f"no job named {job!r}; the jobs are: {', '.join(jobs)}")


def resolve_selection(nodes: list[dict], selection: str) -> list[dict]:
    """Comma-separated `group:<name>`, `key:<a/b>` or `<a/b>` -> the materializable asset nodes they name."""
    materializable = [node for node in nodes if node["isMaterializable"]]
    chosen: dict[tuple, dict] = {}
    for token in (part.strip() for part in selection.split(",")):
        if not token:
            continue
        if token.startswith("group:"):
            found = [node for node in materializable if node["groupName"] == token.removeprefix("group:")]
        else:
            path = token.removeprefix("key:").split("/")
            found = [node for node in materializable if node["assetKey"]["path"] == path]
        if not found:
            groups = sorted({node["groupName"] for node in materializable})
            raise LaunchError(f"{token!r} names no asset; groups: {', '.join(groups)}; or an asset key such as core/users")
        chosen.update((tuple(node["assetKey"]["path"]), node) for node in found)
    if not chosen:
        raise LaunchError("the selection is empty")
    return list(chosen.values())


def asset_selector(ui: DagsterUi, selection: str, partition: Optional[str]) -> dict:
    repositories = ui.repositories()
    nodes = resolve_selection(ui.query(ASSET_NODES)["assetNodes"], selection)
    # The job the UI's Materialize button uses: the hidden asset job every selected asset is in.
    jobs = set.intersection(*(set(node["jobNames"]) for node in nodes))
    asset_jobs = sorted(job for job in jobs if job.startswith("__ASSET_JOB"))
    if not asset_jobs:
        raise LaunchError(f"{selection!r}: these assets cannot be materialized in one run")
    if partition is None and any(node["isPartitioned"] for node in nodes):
        partitioned = [node_name(node) for node in nodes if node["isPartitioned"]]
        today = dt.datetime.now(dt.timezone.utc).date()
        raise LaunchError(f"{', '.join(partitioned)} are partitioned by day: add --partition YYYY-MM-DD (today, UTC: {today})")
    location = next(repository for repository in repositories if asset_jobs[0] in {job["name"] for job in repository["jobs"]})
    return {
        "repositoryLocationName": location["location"],
        "repositoryName": location["name"],
        "jobName": asset_jobs[0],
        "assetSelection": [{"path": node["assetKey"]["path"]} for node in nodes],
    }


def node_name(node: dict) -> str:
    return "/".join(node["assetKey"]["path"])


def launch(ui: DagsterUi, selector: dict, partition: Optional[str], config: Optional[dict]) -> str:
    tags = [{"key": LAUNCHED_BY_TAG, "value": "scripts/launch.py"}]
    if partition:
        tags.append({"key": PARTITION_TAG, "value": partition})
    params = {"selector": selector, "executionMetadata": {"tags": tags}, "runConfigData": config or {}}
    result = ui.query(LAUNCH, params=params)["launchRun"]
    if result["__typename"] == "LaunchRunSuccess":
        return result["run"]["runId"]
    if result["__typename"] == "RunConfigValidationInvalid":
        raise LaunchError("the run config is invalid: " + "; ".join(error["message"] for error in result["errors"]))
    raise LaunchError(f"the UI refused the run ({result['__typename']}): {first_line(result.get('message'))}")


def daemon_running(ui: DagsterUi) -> bool:
    statuses = ui.query(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return any(status["daemonType"] == "QUEUED_RUN_COORDINATOR" and status["healthy"] for status in statuses)


def wait_for(ui: DagsterUi, run_id: str) -> dict:
    """Polls the run until it ends, printing each status it passes through."""
    status, queued_since, checked_daemon = None, time.monotonic(), False
    while True:
        run = ui.query(RUN, runId=run_id)["runOrError"]
        if run["__typename"] != "Run":
            raise LaunchError(f"run {run_id} is gone from the instance ({run['__typename']})")
        if run["status"] != status:
            status = run["status"]
            print(f"  {time.strftime('%H:%M:%S')} {status}", flush=True)
        if status in ENDED:
            return run
        if status == "QUEUED" and not checked_daemon and time.monotonic() - queued_since > QUEUED_PATIENCE_SECONDS:
            checked_daemon = True
            if not daemon_running(ui):
                raise LaunchError(
                    "The run is queued but the Dagster daemon is not running: start `make dev` (it runs the UI and "
                    "the daemon); the run starts as soon as the daemon does."
                )
        time.sleep(POLL_SECONDS)


def run_events(ui: DagsterUi, run_id: str) -> list[dict]:
    events, cursor = [], None
    while True:
        connection = ui.query(RUN_LOGS, runId=run_id, cursor=cursor)["logsForRun"]
        if connection["__typename"] != "EventConnection":
            return events
        events += connection["events"]
        cursor = connection["cursor"]
        if not connection["hasMore"]:
            return events


def summary(ui: DagsterUi, run_id: str, run: dict) -> list[str]:
    """What the run did, from its events: rows per asset, checks, and why it failed."""
    seconds = (run["endTime"] or time.time()) - (run["startTime"] or run["endTime"] or time.time())
    lines = [f"{run['status']} in {seconds:.0f} s: {ui.run_url(run_id)}"]
    materializations = ui.query(RUN_RESULTS, runId=run_id)["runOrError"].get("assetMaterializations", [])
    latest = {"/".join(event["assetKey"]["path"]): event["metadataEntries"] for event in materializations}
    width = max((len(name) for name in latest), default=0)
    for name, entries in sorted(latest.items()):
        values = {entry["label"]: entry.get("intValue", entry.get("text")) for entry in entries}
        rows = values.get("dagster/row_count")
        table = values.get("dagster/table_name")
        lines.append(
            f"  {name:<{width}}  "
            + (f"{int(rows):>10,} rows" if rows is not None else f"{'materialized':>15}")
            + (f" in {table}" if table else "")
        )
    events = run_events(ui, run_id)
    checks = [event["evaluation"] for event in events if event["__typename"] == "AssetCheckEvaluationEvent"]
    if checks:
        failed = [check for check in checks if not check["success"]]
        lines.append(f"  checks: {len(checks) - len(failed)} passed, {len(failed)} failed")
        lines += [
            f"    {check['severity']} {'/'.join(check['assetKey']['path'])} {check['checkName']}" for check in failed
        ]
    for event in events:
        if event["__typename"] == "ExecutionStepFailureEvent":
            error = event["error"] or {}
            cause = (error.get("causes") or [error])[-1]
            # "pkg.module.SomeError: text" -> "SomeError: text"
            message = re.sub(r"^(?:\w+\.)+(\w+): ", r"\1: ", first_line(cause.get("message")))
            lines.append(f"  step {event['stepKey']} failed: {message}")
    if run["status"] != "SUCCESS" and not any("failed:" in line for line in lines):
        failure = next((event for event in events if event["__typename"] == "RunFailureEvent"), None)
        if failure:
            lines.append(f"  {first_line(failure['message'])}")
    return lines


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("-j", "--job", help="a job of the code location, e.g. daily_ingestion")
    what.add_argument("--select", help="assets: group:<name>, <asset/key>, comma-separated")
    parser.add_argument("--partition", help="the day to run, YYYY-MM-DD (partitioned jobs and assets)")
    parser.add_argument("-c", "--config", type=Path, help="a YAML run config file")
    parser.add_argument("--no-wait", action="store_true", help="launch, print the link and return")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    arguments = parse_arguments(argv)
    ui = DagsterUi(ui_url_from_env())
    try:
        config = yaml.safe_load(arguments.config.read_text()) if arguments.config else None
        if arguments.job:
            selector, what = job_selector(ui, arguments.job), arguments.job
        else:
            selector, what = asset_selector(ui, arguments.select, arguments.partition), arguments.select
        run_id = launch(ui, selector, arguments.partition, config)
        print(f"Launched {what}" + (f" for {arguments.partition}" if arguments.partition else "") + f": {ui.run_url(run_id)}", flush=True)
        if arguments.no_wait:
            return 0
        try:
            run = wait_for(ui, run_id)
        except KeyboardInterrupt:
            print(f"Stopped waiting; the run goes on: {ui.run_url(run_id)}", file=sys.stderr)
            return 130
        print("\n".join(summary(ui, run_id, run)), flush=True)
        return 0 if run["status"] == "SUCCESS" else 1
    except LaunchError as error:
        print(error, file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
