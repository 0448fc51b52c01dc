"""The model registry: versioned artefacts on disk, their records in ml.model_registry, the champion."""

import json
import os
import pickle
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb

from moovitamix_assets.ml.recommenders import RecommenderModel
from moovitamix_assets.resources.warehouse import run_sql_file, table_exists, utc_now

SQL = Path(__file__).parent / "sql"

MODEL_DIR_ENV = "MOOVITAMIX_MODEL_DIR"
DEFAULT_MODEL_DIR = "data/models"

CHAMPION, RETIRED, REJECTED = "champion", "retired", "rejected"

REGISTRY = "ml.model_registry"


class ModelStore(dg.ConfigurableResource):
    """Where model artefacts are written: one pickle per version."""

    directory: str = DEFAULT_MODEL_DIR

    def save(self, version: str, model: RecommenderModel) -> str:
        path = Path(self.directory) / f"{version}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as file:
            pickle.dump(model, file, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(path)  # a crash never leaves half an artefact under a version's name
        return str(path)

    @staticmethod
    def load(path: str) -> RecommenderModel:
        with open(path, "rb") as file:
            return pickle.load(file)


def model_store_from_env() -> ModelStore:
    return ModelStore(directory=os.getenv(MODEL_DIR_ENV, DEFAULT_MODEL_DIR))


@dataclass
class RegistryEntry:
    version: str
    trained_at: datetime
    algorithm: str
    snapshot_date: str
    params: dict
    metrics: dict
    baseline_metrics: dict
    status: str
    reason: str
    artefact_path: str
    train_seconds: float
    data_listens: int
    data_users: int
    data_tracks: int


COLUMNS = list(RegistryEntry.__dataclass_fields__)


def ensure_tables(connection: duckdb.DuckDBPyConnection) -> None:
    run_sql_file(connection, SQL / "create_ml_tables.sql")


def new_version(algorithm: str, now: Optional[datetime] = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}-{algorithm}"


def _entry(row: tuple) -> RegistryEntry:
    values = dict(zip(COLUMNS, row))
    for name in ("params", "metrics", "baseline_metrics"):
        values[name] = json.loads(values[name])
    values["snapshot_date"] = values["snapshot_date"].isoformat()
    return RegistryEntry(**values)


def get_entry(connection: duckdb.DuckDBPyConnection, version: str) -> Optional[RegistryEntry]:
    row = connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM ml.model_registry WHERE version = ?", [version]
    ).fetchone()
    return _entry(row) if row else None


def latest_entry(connection: duckdb.DuckDBPyConnection) -> Optional[RegistryEntry]:
    """The most recently trained model, whatever its status."""
    if not table_exists(connection, REGISTRY):
        return None
    row = connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM ml.model_registry ORDER BY trained_at DESC, version DESC LIMIT 1"
    ).fetchone()
    return _entry(row) if row else None


def current_champion(connection: duckdb.DuckDBPyConnection) -> Optional[RegistryEntry]:
    if not table_exists(connection, REGISTRY):
        return None
    row = connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM ml.model_registry WHERE status = ?", [CHAMPION]
    ).fetchone()
    return _entry(row) if row else None


def record(connection: duckdb.DuckDBPyConnection, entry: RegistryEntry) -> None:
    """Adds a model; when it is the champion, the previous champion is retired in the same transaction."""
    ensure_tables(connection)
    values = {name: getattr(entry, name) for name in COLUMNS}
    for name in ("params", "metrics", "baseline_metrics"):
        values[name] = json.dumps(values[name], sort_keys=True)
    connection.execute("BEGIN TRANSACTION")
    try:
        if entry.status == CHAMPION:
            _crown(connection, entry.version, entry.reason)
        connection.execute(
            f"INSERT INTO ml.model_registry ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in COLUMNS)})",
            list(values.values()),
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _crown(connection: duckdb.DuckDBPyConnection, version: str, reason: str) -> None:
    previous = connection.execute(
        "SELECT version FROM ml.model_registry WHERE status = ?", [CHAMPION]
    ).fetchone()
    connection.execute(
        "UPDATE ml.model_registry SET status = ?, reason = reason || ' | retired: replaced by ' || ? "
        "WHERE status = ?",
        [RETIRED, version, CHAMPION],
    )
    connection.execute(
        "INSERT INTO ml.champion_history VALUES (?, ?, ?, ?)",
        [utc_now(), version, previous[0] if previous else None, reason],
    )


def rollback_to(connection: duckdb.DuckDBPyConnection, version: str, reason: str) -> RegistryEntry:
    """Makes a previously trained model the champion again (its artefact must still exist)."""
    ensure_tables(connection)
    entry = get_entry(connection, version)
    if entry is None:
        raise ValueError(f"no model version {version!r} in ml.model_registry")
    if entry.status == CHAMPION:
        raise ValueError(f"{version} is already the champion")
    if not Path(entry.artefact_path).exists():
        raise ValueError(f"the artefact of {version} is gone: {entry.artefact_path}")
    connection.execute("BEGIN TRANSACTION")
    try:
        _crown(connection, version, f"rollback: {reason}")
        connection.execute(
            "UPDATE ml.model_registry SET status = ?, reason = reason || ' | rollback: ' || ? "
            "WHERE version = ?",
            [CHAMPION, reason, version],
        )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return get_entry(connection, version)
