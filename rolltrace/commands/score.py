"""``rolltrace score RUN [--min 0.95]``: judge a local-cluster run's causes against its truth.

Exit codes: 0 agreement ≥ --min, 1 below it, 2 the run cannot be scored (no truth.jsonl, or it
cannot be analyzed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from analyzer.errors import AnalyzerError

if TYPE_CHECKING:
    from rolltrace.scoring import Score

EXIT_OK, EXIT_BELOW, EXIT_UNUSABLE = 0, 1, 2


def print_score(console: Console, score: Score) -> None:
    console.print(
        f"[bold]{score.run}[/bold]: {score.failed} failed, {score.decided} decided by truth, "
        f"{score.undecided} undecided; agreement [bold]{score.agreement:.2%}[/bold]"
    )
    causes = Table(title="per cause (truth decided)")
    for column in ("cause", "precision", "recall", "support"):
        causes.add_column(column, justify="left" if column == "cause" else "right")
    for cause, s in score.per_cause.items():
        causes.add_row(cause, f"{s.precision:.2f}", f"{s.recall:.2f}", str(s.support))
    console.print(causes)
    predicted = sorted({a for row in score.confusion.values() for a in row})
    matrix = Table(title="confusion (rows: truth, columns: analyzer)")
    matrix.add_column("truth \\ analyzer")
    for cause in predicted:
        matrix.add_column(cause, justify="right")
    for truth, row in sorted(score.confusion.items()):
        matrix.add_row(truth, *(str(row.get(cause, "")) for cause in predicted))
    console.print(matrix)
    for hop, decided in sorted(score.by_hop.items()):
        if hop:
            console.print(f"decided at hop {hop}: {decided} failure(s)")
    for hop, masked in score.masked.items():
        by_cause = ", ".join(f"{c} {n}" for c, n in masked["by_cause"].items()) or "none"
        console.print(f"masked by retries at hop {hop}: {masked['masked']} ({by_cause})")


def score(
    run: Annotated[Path, typer.Argument(help="Run directory of a local-cluster run.")],
    minimum: Annotated[
        float, typer.Option("--min", help="Exit 1 when agreement is below this share.")
    ] = 0.95,
) -> None:
    """Score the analyzer's cause of each failed request against ground truth (truth.jsonl).

    Writes analysis/score.json (agreement, per_cause precision/recall/support, confusion, and
    for runs with an L7 hop the failures each hop decided and the requests its retries masked).
    Judges the failures table the last `rolltrace analyze` wrote; analyzes the run first when
    it has none.
    """
    # imported here, not at the top: the pipeline, the run directory's models and the judge
    # (pandas, pyarrow, pydantic) must not load for `rolltrace --help`
    from analyzer.pipeline import analyze_run
    from analyzer.rundir import RunPaths, atomic_write_bytes
    from rolltrace.scoring import score_run

    err = Console(stderr=True, soft_wrap=True)
    paths = RunPaths(run)
    if not paths.truth.exists():
        err.print(f"[red]cannot score {run}:[/red] {paths.truth} is missing (ground truth is "
                  "recorded by the local cluster and the trace builder only)")  # fmt: skip
        raise typer.Exit(EXIT_UNUSABLE)
    if not paths.table("failures").exists():
        err.print(f"{run} is not analyzed yet: analyzing it first")
        try:
            analyze_run(run)
        except AnalyzerError as exc:
            err.print(f"[red]cannot score {run}:[/red] analysis failed: {exc}")
            raise typer.Exit(EXIT_UNUSABLE) from None
    result = score_run(run)
    out = paths.analysis / "score.json"
    atomic_write_bytes(out, json.dumps(result.to_json(), indent=2, default=str).encode())
    print_score(Console(soft_wrap=True), result)
    if result.truth_damage:
        err.print(f"[yellow]truth.jsonl is damaged: {len(result.truth_damage)} line(s) left "
                  f"out, verdicts that needed them may be wrong[/yellow] (first: "
                  f"{result.truth_damage[0]})")  # fmt: skip
    typer.echo(f"score: {out}")
    if result.agreement < minimum:
        err.print(f"[red]agreement {result.agreement:.2%} is below --min {minimum:.2%}[/red]")
        raise typer.Exit(EXIT_BELOW)


def register(app: typer.Typer) -> None:
    app.command()(score)
