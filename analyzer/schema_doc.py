"""Render ``analyzer.schema`` as the Markdown tables of docs/trace-format.md.

The column tables in the document are generated, never hand-edited: the document marks each
generated block with ``<!-- schema:NAME -->`` … ``<!-- /schema:NAME -->`` and this module
rewrites what is between the markers. ``tests/analyzer/test_schema_docs.py`` fails when the
document and the schema disagree, so a new column cannot ship undocumented.

    python -m analyzer.schema_doc --check docs/trace-format.md   # exit 1 when stale
    python -m analyzer.schema_doc --write docs/trace-format.md   # regenerate in place
"""

from __future__ import annotations

import argparse
import re
import sys
from enum import StrEnum
from pathlib import Path

from analyzer.schema import (
    ALL_TABLES,
    Cause,
    ConnectionOutcome,
    ErrorKind,
    PodMatch,
    RunStatus,
    TableSchema,
    TruthEvent,
)

ENUMS: dict[str, type[StrEnum]] = {
    e.__name__: e for e in (ErrorKind, Cause, ConnectionOutcome, RunStatus, PodMatch, TruthEvent)
}

_BLOCK = re.compile(
    r"(<!-- schema:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /schema:(?P=name) -->)", re.S
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
                    _cell(meaning),
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


def update_document(text: str) -> str:
    """``text`` with every marked block regenerated from the schema."""
    return _BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name")) + m.group(4), text)


def missing_blocks(text: str) -> list[str]:
    present = {m.group("name") for m in _BLOCK.finditer(text)}
    return [name for name in expected_blocks() if name not in present]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analyzer.schema_doc", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the document is stale")
    mode.add_argument("--write", action="store_true", help="regenerate the blocks in place")
    parser.add_argument("document", nargs="?", type=Path, help="docs/trace-format.md")
    args = parser.parse_args(argv)
    if args.document is None:
        for name in expected_blocks():
            sys.stdout.write(
                f"<!-- schema:{name} -->\n{render_block(name)}<!-- /schema:{name} -->\n\n"
            )
        return 0
    text = args.document.read_text(encoding="utf-8")
    updated = update_document(text)
    missing = missing_blocks(text)
    if missing:
        sys.stderr.write(f"{args.document}: no block for {', '.join(missing)}\n")
    if args.write:
        args.document.write_text(updated, encoding="utf-8")
        return 1 if missing else 0
    stale = updated != text
    if stale:
        sys.stderr.write(f"{args.document}: generated tables are stale; run with --write\n")
    return 1 if (stale or missing) else 0


if __name__ == "__main__":
    sys.exit(main())
