"""``rolltrace analyze RUN``: analyze a run directory, print a short summary, gate on budgets.

Exit codes are a CI contract: 0 every budget holds, 1 a budget is exceeded, 2 the input is
unusable (missing run.json or requests, damaged beyond use) or a budget does not parse.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from analyzer.budget import Budget, exceeded_budgets, parse_budget
from analyzer.errors import AnalyzerError, BudgetExpressionError, UnusableRunError

if TYPE_CHECKING:
    from analyzer.pipeline import Summary

EXIT_OK, EXIT_BUDGET, EXIT_UNUSABLE = 0, 1, 2


def _fmt_timing(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "not measured"
    return f"p50 {stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms, max {stats['max_ms']:.0f} ms (n={stats['n']})"


def print_summary(console: Console, run: Path, summary: Summary) -> None:
    """The terminal view: totals, causes, windows, timings, and what input was missing."""
    failed, total = summary["requests_failed"], summary["requests_total"]
    console.print(f"[bold]{run}[/bold] ({summary['status']})")
    for reason in summary.get("degraded_because", []):
        console.print(f"[yellow]analysis degraded:[/yellow] {reason} (counts are lower bounds)")
    console.print(f"{failed} of {total} requests failed ({summary['failure_rate']:.4%})")
    console.print(f"latency of successes: {_fmt_timing(dict(summary['latency']))}")
    if failed:
        causes = Table("cause", "failed", "share", "for example", title="Failed requests by cause")
        examples = summary.get("evidence_examples", {})
        for cause, count in sorted(summary["failed_by_cause"].items(), key=lambda kv: -kv[1]):
            if count:
                causes.add_row(cause, str(count), f"{count / failed:.0%}", examples.get(cause, ""))
        console.print(causes)
    seconds = summary["disruption_seconds"]
    console.print(
        f"disruption: {len(summary['windows'])} window(s); "
        f"{seconds['new']} s for new connections, {seconds['reused']} s for reused ones"
    )
    for window in summary["windows"][:10]:
        console.print(
            f"  window {window['duration_ms'] / 1000:.2f} s, {window['failed']} failed, "
            f"mostly {window['dominant_cause']}"
        )
    timings = summary["timings"]
    for name, label in (
        ("readiness_lead", "readiness lead (Ready → first success)"),
        ("propagation", "endpoint propagation (not ready → last new connection)"),
        ("drain", "drain (deletion → last response/connection)"),
    ):
        console.print(f"{label}: {_fmt_timing(timings[name])}")
    inputs = summary["inputs"]
    if inputs["missing"]:
        console.print(f"[yellow]missing inputs:[/yellow] {', '.join(inputs['missing'])}")
    for damage in inputs["damaged"]:
        console.print(
            f"[yellow]damaged:[/yellow] {damage['file']}: {damage['where']}: {damage['error']} "
            f"(kept {damage['kept']})"
        )


def analyze(
    run: Annotated[Path, typer.Argument(help="Run directory (contains run.json).")],
    fail_on: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-on",
            help="Budget: exit 1 when true. METRIC OP NUMBER with METRIC one of failed, total, "
            "rate, windows, cause:<cause>, disruption:new|reused; e.g. 'rate>0.001'. Repeatable.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json instead.")] = False,
) -> None:
    """Analyze a run: attribute every failed request to a cause, write analysis/, gate on budgets.

    Exit 0 when every budget holds, 1 when one is exceeded, 2 when the run is unusable.
    """
    # the analysis does no linear algebra worth a thread pool, and OpenBLAS's threads (one per
    # core, started as numpy loads) spin after each of its small calls; a user's setting stands
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # imported here, not at the top: the pipeline (pandas, pyarrow, scapy) must not load for
    # `rolltrace --help`
    from analyzer.pipeline import analyze
    from analyzer.rundir import RunPaths

    # what the imports made lives as long as the process: out of the cycle collector's way,
    # its full passes over a million-row analysis no longer walk every module object again
    gc.freeze()
    err = Console(stderr=True, soft_wrap=True)
    try:
        budgets: list[Budget] = [parse_budget(text) for text in fail_on or []]
    except BudgetExpressionError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    for budget in budgets:
        if budget.warning:
            err.print(f"[yellow]warning:[/yellow] {budget.warning}")
    try:
        summary = analyze(RunPaths(run)).summary
    except UnusableRunError as exc:
        err.print(f"[red]unusable run:[/red] {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    except AnalyzerError as exc:
        err.print(f"[red]cannot analyze {run}:[/red] {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(Console(soft_wrap=True), run, summary)
    broken = exceeded_budgets(budgets, summary)
    for budget in broken:
        err.print(f"[red]budget exceeded:[/red] {budget.text} (value {budget.value(summary):g})")
    if broken:
        raise typer.Exit(EXIT_BUDGET)
    if budgets and not as_json:
        Console().print(f"[green]{len(budgets)} budget(s) hold[/green]")


def register(app: typer.Typer) -> None:
    app.command()(analyze)
