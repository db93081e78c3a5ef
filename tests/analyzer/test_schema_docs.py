"""docs/trace-format.md must document the current schema: its column tables are generated from
analyzer/schema.py, and this test fails when someone changes one without the other."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.schema import ALL_TABLES, Column, TableSchema
from analyzer.schema_doc import (
    ENUMS,
    main,
    missing_blocks,
    render_enum,
    render_table,
    update_document,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "trace-format.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_is_versioned_with_the_schema_version(doc: str) -> None:
    from analyzer.schema import SCHEMA_VERSION

    assert doc.startswith(f"# Trace format {SCHEMA_VERSION}\n")


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_doc_contains_current_rendering_of_every_table(doc: str, name: str) -> None:
    assert render_table(ALL_TABLES[name]) in doc, (
        f"docs/trace-format.md is stale for table {name!r}: "
        "run `python -m analyzer.schema_doc --write docs/trace-format.md`"
    )


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_doc_lists_every_enum_value(doc: str, name: str) -> None:
    assert render_enum(ENUMS[name]) in doc


def test_doc_has_no_stale_or_missing_block(doc: str) -> None:
    assert missing_blocks(doc) == []
    assert update_document(doc) == doc
    assert main(["--check", str(DOC)]) == 0


def test_rendering_follows_a_schema_change(tmp_path: Path) -> None:
    schema = TableSchema(
        "demo",
        "A demo table.",
        (Column("a_ns", "Int64", "When | why.", unit="ns", nullable=True),),
    )
    rendered = render_table(schema)
    assert "| `a_ns` | `Int64` | ns |  | yes | When \\| why. |" in rendered
    stale = tmp_path / "doc.md"
    stale.write_text("<!-- schema:enum.RunStatus -->\n- `old`\n<!-- /schema:enum.RunStatus -->\n")
    assert main(["--check", str(stale)]) == 1
    assert main(["--write", str(stale)]) == 1  # written, but other blocks are missing
    assert render_enum(ENUMS["RunStatus"]) in stale.read_text()
