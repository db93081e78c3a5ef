"""The analyzer's exceptions. Small on purpose: callers decide by class, people read the message.

Every error about input names *where* the damage is (file, and byte offset, line or row, and
field when there is one), because the user's next step is to open that file at that place.
"""

from __future__ import annotations


class AnalyzerError(Exception):
    """Base of everything the analyzer raises on purpose (never a bare ValueError/KeyError)."""


class TraceError(AnalyzerError):
    """A trace file is malformed at a known place.

    ``location`` is human-readable and specific: ``"byte 1234"``, ``"line 17"``, ``"row 42"``.
    Readers that can salvage a prefix attach what they kept (``kept``) so that callers can go on
    with a partial table and still tell the user exactly what was lost.
    """

    def __init__(
        self,
        path: str,
        location: str,
        message: str,
        field: str | None = None,
        kept: object = None,
    ) -> None:
        self.path = path
        self.location = location
        self.field = field
        self.message = message
        self.kept = kept
        where = f"{path}: {location}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


class UnusableRunError(AnalyzerError):
    """The run directory cannot be analyzed at all (missing run.json or requests): exit code 2."""


class BudgetExpressionError(AnalyzerError):
    """A ``--fail-on`` expression does not parse or names an unknown metric or cause."""
