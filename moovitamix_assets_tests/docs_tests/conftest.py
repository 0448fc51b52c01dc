"""One freshly built warehouse for the documentation tests, built as scripts/generate_schema_doc.py builds it."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_schema_doc_script():
    spec = importlib.util.spec_from_file_location("generate_schema_doc", ROOT / "scripts" / "generate_schema_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def schema_doc_script():
    return load_schema_doc_script()


@pytest.fixture(scope="session")
def fresh_warehouse(tmp_path_factory, schema_doc_script) -> Path:
    """A DuckDB file holding every table of the pipeline; read it, or copy it before changing it."""
    return schema_doc_script.build_database(tmp_path_factory.mktemp("fresh_warehouse"))
