"""The command line: scripts/launch.py submits runs to the instance `make dev` runs, through its UI.

The documented commands (README.md and docs/operations.md) run as written against a real
`make dev` in test_make_dev.py; here, what needs no UI: the one line it prints when the UI
is not running, and how it reads a selection of assets.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Exactly as README.md and docs/operations.md show them; test_doc_commands.py maps each to the
# test of test_make_dev.py that runs them.
README_COMMANDS = [
    '.venv/bin/python scripts/launch.py --job daily_ingestion --partition "$(date -u +%F)"',
    ".venv/bin/python scripts/launch.py --select group:core",
    ".venv/bin/python scripts/launch.py --job retrain_recommender",
    ".venv/bin/python scripts/launch.py --job rollback_champion --config rollback.yaml",
    ".venv/bin/python scripts/launch.py --select ml/user_recommendations",
    ".venv/bin/python scripts/launch.py --select monitoring/pipeline_health",
]


def load_launch_script():
    spec = importlib.util.spec_from_file_location("launch", ROOT / "scripts" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_the_ui_it_says_so_in_one_line_and_how_to_start_it():
    port = closed_port()
    environment = {key: value for key, value in os.environ.items() if key != "MOOVITAMIX_UI_URL"}
    finished = subprocess.run(
        [sys.executable, "scripts/launch.py", "--job", "daily_ingestion", "--partition", "2026-11-25"],
        cwd=ROOT, env={**environment, "MOOVITAMIX_UI_PORT": str(port)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr == (
        f"The Dagster UI is not running at http://127.0.0.1:{port}: start it with `make dev` (in another terminal), "
        "then run this again.\n"
    )


NODES = [
    {"assetKey": {"path": ["raw", "users"]}, "groupName": "raw", "isMaterializable": True, "isPartitioned": True, "jobNames": ["__ASSET_JOB", "daily_ingestion"]},
    {"assetKey": {"path": ["core", "users"]}, "groupName": "core", "isMaterializable": True, "isPartitioned": False, "jobNames": ["__ASSET_JOB", "daily_ingestion"]},
    {"assetKey": {"path": ["core", "tracks"]}, "groupName": "core", "isMaterializable": True, "isPartitioned": False, "jobNames": ["__ASSET_JOB", "daily_ingestion"]},
    {"assetKey": {"path": ["api", "source"]}, "groupName": "raw", "isMaterializable": False, "isPartitioned": False, "jobNames": []},
]  # fmt: skip


def test_a_selection_names_groups_and_asset_keys_and_refuses_what_it_does_not_know():
    launch = load_launch_script()

    def paths(selection):
        return sorted("/".join(node["assetKey"]["path"]) for node in launch.resolve_selection(NODES, selection))

    assert paths("group:core") == ["core/tracks", "core/users"]
    assert paths("raw/users, key:core/users") == ["core/users", "raw/users"]
    assert paths("group:raw") == ["raw/users"]  # a source is not materializable
    with pytest.raises(launch.LaunchError, match=r"'group:nope' names no asset; groups: core, raw"):
        launch.resolve_selection(NODES, "group:nope")
    with pytest.raises(launch.LaunchError, match=r"'core/user' names no asset"):
        launch.resolve_selection(NODES, "core/users,core/user")
