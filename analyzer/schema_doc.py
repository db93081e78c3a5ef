"""Render ``analyzer.schema`` as the Markdown tables of docs/trace-format.md.

The column tables in the document are generated, never hand-edited: the document marks each
generated block with ``<!-- schema:NAME -->`` … ``<!-- /schema:NAME -->`` and this module
rewrites what is between the markers. ``tests/analyzer/test_schema_docs.py`` fails when the
document and the schema disagree, so a new column cannot ship undocumented.

    python -m analyzer.schema_doc --check docs/trace-format.md   # exit 1 when stale
    python -m analyzer.schema_doc --write docs/trace-format.md   # regenerate in place
"""

from __future__ import annotations

import sys
from enum import StrEnum

from analyzer.generated_doc import GeneratedDocument, table_cell
from analyzer.schema import (
    ALL_TABLES,
    AttemptOutcome,
    Cause,
    ConnectionOutcome,
    ErrorKind,
    PodMatch,
    RunStatus,
    TableSchema,
    TruthEvent,
)

ENUMS: dict[str, type[StrEnum]] = {
    e.__name__: e
    for e in (ErrorKind, Cause, ConnectionOutcome, RunStatus, PodMatch, TruthEvent, AttemptOutcome)
}


def render_table(schema: TableSchema) -> str:
    """One table's columns as a Markdown table (name, dtype, unit, clock, nullable, meaning)."""
    lines = [
        f"{schema.doc}",
        "",
        "| column | dtype | unit | clock | nullable | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for col in schema.columns:
        meaning = col.doc
        if col.enum is not None:
            meaning = (meaning + " " if meaning else "") + f"Values: `{col.enum.__name__}`."
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{col.name}`",
                    f"`{col.dtype}`",
                    col.unit,
                    col.clock.value if col.clock else "",
                    "yes" if col.nullable else "no",
                    table_cell(meaning),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def render_enum(enum: type[StrEnum]) -> str:
    """An enum's values, one bullet each, in declaration order."""
    return "".join(f"- `{member.value}`\n" for member in enum)


def render_block(name: str) -> str:
    """The generated text for block ``table.<name>`` or ``enum.<Name>``."""
    family, _, key = name.partition(".")
    if family == "table" and key in ALL_TABLES:
        return render_table(ALL_TABLES[key])
    if family == "enum" and key in ENUMS:
        return render_enum(ENUMS[key])
    raise KeyError(
        f"unknown schema block {name!r} (tables: {sorted(ALL_TABLES)}, enums: {sorted(ENUMS)})"
    )


def expected_blocks() -> list[str]:
    """Every block the document must contain: all tables and all enums."""
    return [f"table.{name}" for name in ALL_TABLES] + [f"enum.{name}" for name in ENUMS]


TRACE_FORMAT = GeneratedDocument("schema", render_block, expected_blocks)


def update_document(text: str) -> str:
    """``text`` with every marked block regenerated from the schema."""
    return TRACE_FORMAT.update(text)


def missing_blocks(text: str) -> list[str]:
    return TRACE_FORMAT.missing(text)


def main(argv: list[str] | None = None) -> int:
    return TRACE_FORMAT.main(argv, prog="python -m analyzer.schema_doc", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
