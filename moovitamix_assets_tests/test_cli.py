"""The README's command-line materializations, run as written (through bash) against the emulator."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from moovitamix_assets_tests.pipeline import scalar

ROOT = Path(__file__).resolve().parents[1]

# Exactly as README.md shows them; test_doc_commands.py maps each to this test.
README_COMMANDS = [
    'export DAGSTER_HOME=$PWD/.dagster_home',
    '.venv/bin/dagster asset materialize -m moovitamix_assets.definitions --select group:raw --partition "$(date -u +%F)"',
    ".venv/bin/dagster asset materialize -m moovitamix_assets.definitions --select group:core",
    ".venv/bin/dagster job execute -m moovitamix_assets.definitions -j retrain_recommender",
]


@pytest.mark.slow
def test_cli_materializes_a_partition_then_core_then_retrains(emulator_url, tmp_path):
    # A copy of the project's root layout: $PWD/.dagster_home must not be the developer's.
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    (workdir / ".dagster_home").mkdir()
    shutil.copy(ROOT / "dagster.yaml", workdir / ".dagster_home" / "dagster.yaml")
    database = tmp_path / "warehouse.duckdb"
    environment = {
        **os.environ,
        "MOOVITAMIX_API_URL": emulator_url,
        "MOOVITAMIX_DUCKDB_PATH": str(database),
        "MOOVITAMIX_MODEL_DIR": str(tmp_path / "models"),
        "MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE": "1",  # the test emulator is pinned to 2026-11-01
    }
    script = " && ".join(["set -e", *README_COMMANDS])
    finished = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=environment, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert scalar(database, "SELECT count(*) FROM raw.users WHERE snapshot_date = current_date") == 1155
    assert scalar(database, "SELECT count(*) FROM core.users") == 1155
    assert scalar(database, "SELECT count(DISTINCT user_id) FROM ml.user_recommendations") == 1155
    assert scalar(database, "SELECT count(*) FROM ml.model_registry WHERE status = 'champion'") == 1
