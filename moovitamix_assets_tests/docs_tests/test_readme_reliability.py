"""The README's reliability table names, on every line, a test that exists: a claim without a test is caught here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "moovitamix_assets_tests"


def reliability_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Reliability") :]
    section = section[: section.index("\n## ", 1)]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| input") and "---" not in line]


def named_tests(cell: str, last_file: str | None) -> list[tuple[str, str | None]]:
    """(file, test name or None for a whole file) for each backticked reference; `…::name` is
    in the file named last, on this line or one above."""
    references = []
    for reference in re.findall(r"`([^`]+)`", cell):
        path, _, name = reference.partition("::")
        if path != "…":
            last_file = path.split(" ")[0]
        references.append((last_file, name or None))
    return references


def test_every_reliability_line_names_tests_that_exist():
    rows = reliability_rows()
    assert len(rows) >= 20
    last_file = None
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[-1]
        references = named_tests(cell, last_file)
        assert references, f"no test named on: {row[:80]}"
        last_file = references[-1][0]
        for path, name in references:
            source = (TESTS / path).read_text()
            if name is None:
                continue
            assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{path} has no {name}"
