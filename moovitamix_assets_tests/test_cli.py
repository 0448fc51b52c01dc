"""The README's command-line materializations, run as written against the emulator."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moovitamix_assets_tests.pipeline import scalar

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")


@pytest.mark.slow
def test_cli_materializes_a_partition_then_core_then_retrains(emulator_url, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    database = tmp_path / "warehouse.duckdb"
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MOOVITAMIX_API_URL": emulator_url,
        "MOOVITAMIX_DUCKDB_PATH": str(database),
        "MOOVITAMIX_MODEL_DIR": str(tmp_path / "models"),
        "MOOVITAMIX_ALLOW_ANY_SNAPSHOT_DATE": "1",  # the test emulator serves 2026-11-01
    }
    commands = [
        [DAGSTER, "asset", "materialize", "-m", "moovitamix_assets.definitions", "--select", "group:raw", "--partition", "2026-11-01"],
        [DAGSTER, "asset", "materialize", "-m", "moovitamix_assets.definitions", "--select", "group:core"],
        [DAGSTER, "job", "execute", "-m", "moovitamix_assets.definitions", "-j", "retrain_recommender"],
    ]
    for command in commands:
        finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-3000:]
    assert scalar(database, "SELECT count(*) FROM raw.users WHERE snapshot_date = DATE '2026-11-01'") == 1155
    assert scalar(database, "SELECT count(*) FROM core.users") == 1155
    assert scalar(database, "SELECT count(DISTINCT user_id) FROM ml.user_recommendations") == 1155
    assert scalar(database, "SELECT count(*) FROM ml.model_registry WHERE status = 'champion'") == 1
