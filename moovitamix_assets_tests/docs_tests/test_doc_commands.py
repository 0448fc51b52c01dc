"""Every shell command of the README and docs/ runs in a test as written, or is mapped to the test that covers it.

A command is a line of a ```bash (or sh, shell, console) block, continuations joined and
the trailing `# comment` dropped. The quick, safe ones run here against a copy of a freshly
built warehouse; the others name the test that runs them. A document that gains a command
which is neither fails test_every_documented_command_is_run_or_covered.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import yaml

from moovitamix_assets_tests.docs_tests.conftest import ROOT
from moovitamix_assets_tests.test_cli import README_COMMANDS

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
BIN = Path(sys.executable).parent

ROLLBACK = ".venv/bin/dagster job execute -m moovitamix_assets.definitions -j rollback_champion -c rollback.yaml"
RECOMMEND_NOW = ".venv/bin/dagster asset materialize -m moovitamix_assets.definitions --select ml/user_recommendations"
HEALTH_NOW = ".venv/bin/dagster asset materialize -m moovitamix_assets.definitions --select monitoring/pipeline_health"

# Run as written (with .venv/bin/ resolved to this interpreter's) by the test named.
RUN_HERE = {
    ROLLBACK: "test_rollback_then_recommendations_then_health_run_as_written",
    RECOMMEND_NOW: "test_rollback_then_recommendations_then_health_run_as_written",
    HEALTH_NOW: "test_rollback_then_recommendations_then_health_run_as_written",
}

# Slow, long-running or environment-changing commands: the test (path::function) or
# script that runs them.
CLI_TEST = "moovitamix_assets_tests/test_make_dev.py::test_the_documented_commands_run_as_written_in_the_dev_instance"
COVERED = {
    "make dev": "moovitamix_assets_tests/test_make_dev.py::test_make_dev_serves_the_api_the_ui_and_the_services_on_their_ports",
    "make ingest": "moovitamix_assets_tests/test_make_dev.py::test_make_ingest_runs_today_in_the_dev_instance_and_ends_with_its_link_and_counts",
    "make test": ".ci/run",
    **{" ".join(command.split()): CLI_TEST for command in README_COMMANDS},
    'curl -s "http://127.0.0.1:8001/users/42/recommendations?k=3"': (
        "moovitamix_assets_tests/serving_tests/test_service.py::test_the_readmes_curl_runs_as_written"
    ),
    ".venv/bin/python scripts/generate_schema_doc.py": (
        "moovitamix_assets_tests/docs_tests/test_schema_doc.py::test_schema_doc_matches_a_freshly_materialized_warehouse"
    ),
}

# Emulator commands: started as written plus `--port <free>` by
# test_emulator_commands_start_as_written.
EMULATOR_PREFIX = ".venv/bin/moovitamix-api"


def code_blocks(path: Path, languages: set[str]) -> list[str]:
    return [body for language, body in FENCE.findall(path.read_text()) if language in languages]


def shell_commands(path: Path) -> list[str]:
    commands = []
    for body in code_blocks(path, SHELL_LANGUAGES):
        for line in body.replace("\\\n", " ").splitlines():
            command = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


def documented_commands() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in DOCUMENTS:
        for command in shell_commands(path):
            found.setdefault(command, []).append(path.relative_to(ROOT).as_posix())
    return found


def test_every_documented_command_is_run_or_covered():
    documented = documented_commands()
    assert documented, "no shell command found: is the extraction broken?"
    orphans = {
        command: where
        for command, where in documented.items()
        if command not in RUN_HERE | COVERED and not command.startswith(EMULATOR_PREFIX)
    }
    assert not orphans, f"documented commands neither run nor mapped to a covering test: {orphans}"
    stale = sorted(set(RUN_HERE | COVERED) - set(documented))
    assert not stale, f"mapped commands no document shows any more: {stale}"
    for command, target in COVERED.items():
        path, _, function = target.partition("::")
        assert (ROOT / path).is_file(), f"{command!r} is mapped to {path}, which does not exist"
        if function:
            assert f"def {function}(" in (ROOT / path).read_text(), f"{command!r} is mapped to {target}, which does not exist"
    for command, function in RUN_HERE.items():
        assert f"def {function}(" in Path(__file__).read_text()


def test_every_sql_block_of_the_docs_runs_on_a_fresh_warehouse(fresh_warehouse):
    blocks = [(path.name, block) for path in DOCUMENTS for block in code_blocks(path, {"sql"})]
    assert blocks
    with duckdb.connect(str(fresh_warehouse), read_only=True) as connection:
        for name, block in blocks:
            connection.execute(block).fetchall()


def test_the_architecture_names_every_asset_check_job_schedule_and_sensor():
    from moovitamix_assets.definitions import defs

    text = (ROOT / "docs" / "architecture.md").read_text()
    graph = defs.resolve_asset_graph()
    names = [key.to_user_string() for key in graph.get_all_asset_keys()]
    names += [key.name for key in graph.asset_check_keys]
    names += [job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    names += [schedule.name for schedule in defs.schedules or []]
    names += [sensor.name for sensor in defs.sensors or []]
    missing = sorted({name for name in names if name not in text})
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def run_as_written(command: str, cwd: Path, environment: dict) -> None:
    arguments = shlex.split(command)
    if arguments[0].startswith(".venv/bin/"):
        arguments[0] = str(BIN / arguments[0].removeprefix(".venv/bin/"))
    finished = subprocess.run(arguments, cwd=cwd, env=environment, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, f"{command}\n{finished.stderr[-3000:]}"


def test_rollback_then_recommendations_then_health_run_as_written(fresh_warehouse, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    shutil.copy(fresh_warehouse, database)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_DUCKDB_PATH": str(database),
        "MOOVITAMIX_MODEL_DIR": str(tmp_path / "models"),
        "MOOVITAMIX_REPORTS_PATH": str(tmp_path / "reports"),
        "MOOVITAMIX_LAKE_PATH": str(tmp_path / "lake"),
    }
    with duckdb.connect(str(database), read_only=True) as connection:
        (champion,) = connection.execute("SELECT version FROM ml.model_registry WHERE status = 'champion'").fetchall()[0]
        (other,) = connection.execute("SELECT version FROM ml.model_registry WHERE status <> 'champion'").fetchall()[0]
        (reports,) = connection.execute("SELECT count(*) FROM monitoring.health_reports").fetchall()[0]

    # rollback.yaml as operations.md shows it, with a version this warehouse holds.
    (documented,) = code_blocks(ROOT / "docs" / "operations.md", {"yaml"})
    config = yaml.safe_load(documented)
    config["ops"]["rollback_to_version"]["config"]["version"] = other
    (tmp_path / "rollback.yaml").write_text(yaml.safe_dump(config))

    operations = shell_commands(ROOT / "docs" / "operations.md")
    for command in (ROLLBACK, RECOMMEND_NOW, HEALTH_NOW):
        assert command in operations
        run_as_written(command, tmp_path, environment)

    with duckdb.connect(str(database), read_only=True) as connection:
        assert connection.execute("SELECT version FROM ml.model_registry WHERE status = 'champion'").fetchall() == [(other,)]
        assert connection.execute(
            "SELECT version, previous FROM ml.champion_history ORDER BY promoted_at DESC LIMIT 1"
        ).fetchall() == [(other, champion)]
        assert connection.execute("SELECT DISTINCT model_version FROM ml.user_recommendations").fetchall() == [(other,)]
        assert connection.execute("SELECT count(*) FROM monitoring.health_reports").fetchall() == [(reports + 1,)]


def test_emulator_commands_start_as_written():
    import requests

    from moovitamix_assets_tests.test_make_dev import free_port, wait_for

    commands = [command for command in documented_commands() if command.startswith(EMULATOR_PREFIX)]
    assert len(commands) == 3
    for command in commands:
        port = free_port()
        arguments = shlex.split(command)
        arguments[0] = str(BIN / "moovitamix-api")
        process = subprocess.Popen([*arguments, "--port", str(port)], cwd=ROOT)
        try:
            page = wait_for(f"http://127.0.0.1:{port}/users?size=1", timeout=60).json()
            state = requests.get(f"http://127.0.0.1:{port}/_admin/state", timeout=10).json()
        finally:
            process.terminate()
            process.wait(timeout=30)
        assert len(page["items"]) == 1
        if "--users 1000000" in command:
            assert page["total"] >= 1_000_000 and state["effective_as_of"] == "2026-11-01"
        if "--profile upstream" in command:
            assert state["settings"]["profile"] == "upstream" and page["total"] == 1000
