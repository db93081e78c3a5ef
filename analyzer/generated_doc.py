"""Markdown documents whose reference blocks are generated from code.

A document marks each generated block with ``<!-- MARKER:NAME -->`` … ``<!-- /MARKER:NAME -->``;
everything outside the markers is hand-written and kept as is. The trace format
(``analyzer.schema_doc``, marker ``schema``) and the scenario reference (``rolltrace.scenario_doc``,
marker ``scenario``) share this, so both get the same ``--check`` / ``--write`` command line and
a test can fail when a document and its code drift apart.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def table_cell(text: str) -> str:
    """``text`` safe inside one cell of a Markdown table (no column break, one line)."""
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class GeneratedDocument:
    """How to render a document's blocks: ``render_block(name)`` gives one block's text and
    ``expected_blocks`` names every block the document must contain."""

    marker: str
    render_block: Callable[[str], str]
    expected_blocks: Callable[[], list[str]]

    def _pattern(self) -> re.Pattern[str]:
        marker = re.escape(self.marker)
        return re.compile(
            rf"(<!-- {marker}:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /{marker}:(?P=name) -->)",
            re.S,
        )

    def update(self, text: str) -> str:
        """``text`` with every marked block regenerated."""
        return self._pattern().sub(
            lambda m: m.group(1) + self.render_block(m.group("name")) + m.group(4), text
        )

    def missing(self, text: str) -> list[str]:
        """Expected blocks that ``text`` has no markers for."""
        present = {m.group("name") for m in self._pattern().finditer(text)}
        return [name for name in self.expected_blocks() if name not in present]

    def all_blocks(self) -> str:
        """Every expected block with its markers: the start of a new document."""
        return "".join(
            f"<!-- {self.marker}:{name} -->\n{self.render_block(name)}"
            f"<!-- /{self.marker}:{name} -->\n\n"
            for name in self.expected_blocks()
        )

    def main(self, argv: Sequence[str] | None, prog: str, description: str | None) -> int:
        """``[--check | --write] [DOCUMENT]``: print all blocks, or exit 1 when the document is
        stale or lacks a block (``--check``), or regenerate it in place (``--write``)."""
        parser = argparse.ArgumentParser(prog=prog, description=description)
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--check", action="store_true", help="exit 1 when the document is stale")
        mode.add_argument("--write", action="store_true", help="regenerate the blocks in place")
        parser.add_argument("document", nargs="?", type=Path)
        args = parser.parse_args(argv)
        if args.document is None:
            sys.stdout.write(self.all_blocks())
            return 0
        text = args.document.read_text(encoding="utf-8")
        updated = self.update(text)
        missing = self.missing(text)
        if missing:
            sys.stderr.write(f"{args.document}: no block for {', '.join(missing)}\n")
        if args.write:
            args.document.write_text(updated, encoding="utf-8")
            return 1 if missing else 0
        stale = updated != text
        if stale:
            sys.stderr.write(f"{args.document}: generated blocks are stale; run with --write\n")
        return 1 if (stale or missing) else 0
