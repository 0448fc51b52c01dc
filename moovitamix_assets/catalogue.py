"""The warehouse catalogue on every asset: its table's description, and each column's type and description.

The descriptions are the COMMENTs written next to each CREATE (the .sql files, and the SQL
of ml/assets.py and monitoring/health.py). scripts/generate_schema_doc.py reads them from a
freshly built warehouse into catalogue.json, beside this module, as it writes
docs/schema.md; docs_tests/test_catalogue.py fails when the file and a fresh warehouse
disagree. Attached to the definitions, they show in the UI before anything is materialized;
the UI merges them with the column schema a materialization reports (core's).
"""

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

import dagster as dg

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")

# Assets whose table is not named after their key (the others: key a/b, table a.b).
TABLE_OF_ASSET = {
    "ml/recommender_model": "ml.model_registry",
    "monitoring/pipeline_health": "monitoring.health_reports",
}


def load_catalogue(path: Path = CATALOGUE_PATH) -> dict:
    """{"schema.table": {"description": ..., "columns": [[name, type, description], ...]}}."""
    return json.loads(path.read_text())


def table_of(key: dg.AssetKey, catalogue: dict) -> Optional[str]:
    name = key.to_user_string()
    table = TABLE_OF_ASSET.get(name, ".".join(key.path))
    return table if table in catalogue else None


def column_schema(entry: dict) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, data_type, description=description) for name, data_type, description in entry["columns"]]
    )


def with_catalogue(assets: Iterable[dg.AssetsDefinition], catalogue: Optional[dict] = None) -> Sequence[dg.AssetsDefinition]:
    """The assets, each with its table's name, column schema and description, when it writes a table."""
    catalogue = load_catalogue() if catalogue is None else catalogue

    def describe(spec: dg.AssetSpec) -> dg.AssetSpec:
        table = table_of(spec.key, catalogue)
        if table is None:
            return spec
        entry = catalogue[table]
        description = "\n\n".join(part for part in (spec.description, f"`{table}`: {entry['description']}") if part)
        return spec.replace_attributes(description=description).merge_attributes(
            metadata={"dagster/table_name": table, "dagster/column_schema": column_schema(entry)}
        )

    return dg.map_asset_specs(describe, assets)
