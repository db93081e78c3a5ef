"""``rolltrace report RUN`` and ``rolltrace compare RUN_A RUN_B [...]``: the disruption report of
a run and the comparison of several, as self-contained HTML plus Markdown for pull requests.

Exit codes follow ``rolltrace analyze``: 0 written, 2 a run is unusable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from analyzer.errors import AnalyzerError
from rolltrace.commands import not_a_directory

if TYPE_CHECKING:
    from analyzer.report import ReportPaths

EXIT_UNUSABLE = 2


def _print_paths(paths: ReportPaths) -> None:
    typer.echo(f"report: {paths.html}")
    typer.echo(f"markdown: {paths.markdown}")
    typer.echo(f"figures: {len(paths.figures)} in {paths.html.parent / 'figures'}")


def report(
    run: Annotated[Path, typer.Argument(help="Run directory (contains run.json).")],
) -> None:
    """Write the disruption report of a run: analysis/report.html, report.md, figures/*.png.

    The run is analyzed first when its analysis is missing or stale.
    """
    # imported here: the report layer (pandas, matplotlib) must not load for `rolltrace --help`
    from analyzer.report import render_report
    from analyzer.run import load_analysis
    from analyzer.rundir import RunPaths

    run_paths = RunPaths(run)
    try:
        paths = render_report(load_analysis(run_paths), run_paths)
    except AnalyzerError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]cannot report on {run}:[/red] {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    _print_paths(paths)


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for compare.html/.md and figures.")
    ] = Path("rolltrace-compare"),
) -> None:
    """Compare runs side by side: failures by cause, overlaid timelines, and whether each
    difference is larger than the run-to-run spread.

    Runs are grouped by scenario; the first scenario named is the baseline. Give at least two
    runs of each scenario to learn whether a difference is real.
    """
    from analyzer.report import render_comparison  # here: see report()

    err = Console(stderr=True, soft_wrap=True)
    if len(runs) < 2:
        err.print("[red]error:[/red] compare needs at least two runs")
        raise typer.Exit(EXIT_UNUSABLE)
    unusable = not_a_directory("--output", output)
    if unusable:
        err.print(f"[red]error:[/red] {unusable}")
        raise typer.Exit(EXIT_UNUSABLE)
    try:
        paths = render_comparison(runs, output)
    except AnalyzerError as exc:
        err.print(f"[red]cannot compare:[/red] {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    _print_paths(paths)


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(compare)
