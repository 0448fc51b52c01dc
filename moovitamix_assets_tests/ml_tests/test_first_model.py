"""A first day with no waiting: the drift sensor asks for the first model as soon as core exists, and
reads the warehouse only when a core snapshot, a model or recommendations are new."""

import subprocess
import sys

import dagster as dg

from moovitamix_assets.ml.sensors import NO_CORE_YET, DriftPolicy, recommender_drift_sensor
from moovitamix_assets.resources.warehouse import WarehouseResource
from moovitamix_assets_tests.ml_tests.test_ml_assets import train
from moovitamix_assets_tests.pipeline import materialize_day

DAY = "2026-11-01"

HOLD_THE_FILE = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""


class WriterProcess:
    """Another process with the DuckDB file open for writing, as a run holds it."""

    def __init__(self, database):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_FILE, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def __enter__(self):
        assert self.process.stdout.readline().strip() == "holding"
        return self

    def __exit__(self, *exc_info):
        self.process.stdin.close()
        self.process.wait(timeout=30)


def test_the_first_model_is_asked_for_once_core_exists_and_the_file_is_read_only_on_news(emulator_url, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    database = tmp_path / "warehouse.duckdb"
    resources = {"warehouse": WarehouseResource(database=str(database)), "drift_policy": DriftPolicy()}

    def evaluate(cursor=None):
        return recommender_drift_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))

    # Before the first ingestion: says what to do, without a warehouse to blame.
    nothing = evaluate()
    assert isinstance(nothing, dg.SkipReason) and nothing.skip_message == NO_CORE_YET
    assert "make ingest" in NO_CORE_YET and not database.exists()

    materialize_day(emulator_url, database, DAY, instance=instance)
    first = evaluate()
    (request,) = first.run_requests
    assert request.tags["moovitamix/drift_reasons"] == "no model has been trained yet"
    assert request.run_key == f"drift-none@{DAY}"

    # Nothing new since: the file is not even opened (a writer holds it, and that is not said).
    with WriterProcess(database):
        quiet = evaluate(first.cursor)
    assert isinstance(quiet, dg.SkipReason) and quiet.skip_message.startswith("nothing new since the last measure")

    # A model and recommendations are new; while a run writes the file, it waits for a later tick.
    train(emulator_url, database, instance=instance)
    with WriterProcess(database):
        busy = evaluate(first.cursor)
    assert isinstance(busy, dg.SkipReason) and busy.skip_message.startswith("the warehouse is being written by a run")
    measured = evaluate(first.cursor)
    assert isinstance(measured, dg.SensorResult) and not measured.run_requests
    assert measured.skip_reason.skip_message.startswith("no drift")
    after = evaluate(measured.cursor)
    assert isinstance(after, dg.SkipReason) and after.skip_message.startswith("nothing new since the last measure")


def test_a_cursor_from_before_is_read_as_the_last_request():
    from moovitamix_assets.ml.sensors import DriftCursor

    assert DriftCursor.parse("none@2026-11-01") == DriftCursor(requested="none@2026-11-01", seen=None)
    assert DriftCursor.parse(DriftCursor("v1@2026-11-02", "[1, 2, null]").to_cursor()) == DriftCursor("v1@2026-11-02", "[1, 2, null]")
    assert DriftCursor.parse(None) == DriftCursor()
