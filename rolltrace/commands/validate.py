"""``rolltrace validate RUN``: check a run directory against docs/trace-format.md.

Exit codes (for scripts and CI): 0 valid (warnings allowed unless ``--strict``), 1 problems
found, 2 not a run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from analyzer.rundir import Problem

EXIT_VALID, EXIT_PROBLEMS, EXIT_NOT_A_RUN = 0, 1, 2


def problems_table(problems: list[Problem]) -> Table:
    table = Table(show_lines=False)
    for header in ("severity", "file", "where", "field", "problem"):
        table.add_column(header, overflow="fold")
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        table.add_row(
            f"[{style}]{p.severity}[/{style}]", p.file, p.location, p.field or "", p.message
        )
    return table


def validate(
    run: Annotated[Path, typer.Argument(help="The run directory to check.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat warnings as problems (exit 1).")
    ] = False,
) -> None:
    """Check a run directory: every file, line, row and field the analysis will read."""
    from analyzer.validate import NotARunDirectory, validate_run  # pandas, pyarrow: not for --help

    console = Console(highlight=False)
    try:
        problems = validate_run(run)
    except NotARunDirectory as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(EXIT_NOT_A_RUN) from None
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if problems:
        console.print(problems_table(problems))
    failing = errors > 0 or (strict and warnings > 0)
    verdict = "[red]invalid[/red]" if failing else "[green]valid[/green]"
    console.print(f"{run}: {verdict} ({errors} errors, {warnings} warnings)", soft_wrap=True)
    raise typer.Exit(EXIT_PROBLEMS if failing else EXIT_VALID)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
