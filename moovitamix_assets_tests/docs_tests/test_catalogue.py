"""The catalogue the assets show in the UI is the warehouse's: catalogue.json is what the generator
writes for a freshly materialized warehouse, and every asset that writes a table carries it."""

import json

import dagster as dg

from moovitamix_assets.catalogue import CATALOGUE_PATH, load_catalogue, with_catalogue

REGENERATE = "moovitamix_assets/catalogue.json differs from the warehouse: run scripts/generate_schema_doc.py"

# The assets that write a table, and the table (every other asset writes files).
TABLES = {
    **{f"{schema}/{entity}": f"{schema}.{entity}" for schema in ("raw", "core_staging", "core") for entity in ("users", "tracks", "listen_history")},
    "ml/training_set": "ml.training_set",
    "ml/recommender_model": "ml.model_registry",
    "ml/user_recommendations": "ml.user_recommendations",
    "monitoring/pipeline_health": "monitoring.health_reports",
}


def test_the_catalogue_file_matches_a_freshly_materialized_warehouse(schema_doc_script, fresh_warehouse):
    assert schema_doc_script.render_catalogue_of(fresh_warehouse) == CATALOGUE_PATH.read_text(), REGENERATE


def test_every_asset_that_writes_a_table_carries_its_description_and_its_columns():
    from moovitamix_assets.definitions import defs

    catalogue = load_catalogue()
    graph = defs.resolve_asset_graph()
    shown = {}
    for key in graph.get_all_asset_keys():
        metadata = graph.get(key).metadata
        if "dagster/column_schema" in metadata:
            shown[key.to_user_string()] = metadata["dagster/table_name"]
            table = catalogue[metadata["dagster/table_name"]]
            columns = metadata["dagster/column_schema"].columns
            assert [[column.name, column.type, column.description] for column in columns] == table["columns"]
            assert all(column.description for column in columns), key
            assert table["description"] and table["description"] in graph.get(key).description
    assert TABLES.items() <= shown.items()


def test_an_asset_keeps_its_own_description_first_and_an_asset_without_a_table_is_unchanged():
    @dg.asset(key=["core", "users"], description="Users, typed.")
    def users():
        ...

    @dg.asset(key=["lake", "files"], description="Files.")
    def files():
        ...

    catalogue = {"core.users": {"description": "One row per user.", "columns": [["user_id", "BIGINT", "The id."]]}}
    described, untouched = with_catalogue([users, files], catalogue)
    spec = next(iter(described.specs))
    assert spec.description == "Users, typed.\n\n`core.users`: One row per user."
    assert spec.metadata["dagster/table_name"] == "core.users"
    assert spec.metadata["dagster/column_schema"] == dg.TableSchema(
        columns=[dg.TableColumn("user_id", "BIGINT", description="The id.")]
    )
    assert next(iter(untouched.specs)).description == "Files." and not next(iter(untouched.specs)).metadata
    assert json.loads(CATALOGUE_PATH.read_text())  # the committed file is JSON
