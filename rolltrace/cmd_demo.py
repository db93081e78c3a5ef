"""``rolltrace demo`` — INTERIM: shows the analyzer on two synthetic runs built by the trace builder.

Until the experiment runner and the local cluster land, there is no rollout to run for real, so
the demo builds two run directories with ``analyzer.tracebuilder`` — the same rollout with a
preStop sleep shorter than endpoint propagation, and one long enough — analyzes both exactly as
``rolltrace analyze`` would, and compares them. The real demo replaces this module.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from analyzer.pipeline import Summary, analyze_run
from analyzer.tracebuilder.build import build_run

INTERIM_NOTE = (
    "INTERIM demo: the runs are synthetic (built by analyzer.tracebuilder), not a real rollout; "
    "the local-cluster demo replaces it."
)

#: (run name, what it shows, preStop sleep): the trace builder's ``endpoint-lag`` rollout
#: (kube-proxy on the three nodes lags 1, 2 and 3 s), once as is and once with a preStop sleep
#: longer than that lag — the remedy the demo is meant to show working.
DEMO_RECIPE = "endpoint-lag"
DEMO_RUNS: tuple[tuple[str, str, float], ...] = (
    ("demo-prestop-0s", "no preStop: the app stops accepting while nodes still route to it", 0.0),
    ("demo-prestop-5s", "preStop sleep 5 s, longer than the 3 s propagation", 5.0),
)


def _ms(stats: dict[str, Any]) -> str:
    return "—" if not stats.get("n") else f"{stats['p50_ms']:.0f} / {stats['max_ms']:.0f} ms"


def _comparison(results: list[tuple[str, Path, Summary]]) -> Table:
    table = Table(title="Same rollout, two preStop settings", show_lines=False)
    table.add_column("")
    for name, _, _ in results:
        table.add_column(name)
    rows: list[tuple[str, list[str]]] = [
        ("requests", [str(s["requests_total"]) for _, _, s in results]),
        ("failed", [f"{s['requests_failed']} ({s['failure_rate']:.3%})" for _, _, s in results]),
        (
            "causes",
            [
                ", ".join(f"{c} {n}" for c, n in s["failed_by_cause"].items() if n) or "none"
                for _, _, s in results
            ],
        ),
        (
            "disruption s (new/reused)",
            [
                f"{s['disruption_seconds']['new']} / {s['disruption_seconds']['reused']}"
                for _, _, s in results
            ],
        ),
        (
            "endpoint propagation p50/max",
            [_ms(s["timings"]["propagation"]) for _, _, s in results],
        ),
        ("drain p50/max", [_ms(s["timings"]["drain"]) for _, _, s in results]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table


def demo(
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where to write the two run directories.")
    ] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Trace-builder seed.")] = 1,
) -> None:
    """INTERIM: build two synthetic runs (preStop too short / long enough), analyze, compare.

    Until the local cluster and experiment runner exist, this uses the trace builder instead of
    a real rollout.
    """
    console = Console(soft_wrap=True)
    console.print(f"[yellow]{INTERIM_NOTE}[/yellow]")
    results: list[tuple[str, Path, Summary]] = []
    for name, what, prestop_s in DEMO_RUNS:
        path = runs_dir / name
        shutil.rmtree(path, ignore_errors=True)
        started = time.monotonic()
        build_run(path, DEMO_RECIPE, seed=seed, prestop_s=prestop_s)
        summary = analyze_run(path)
        console.print(
            f"built and analyzed [bold]{path}[/bold] ({what}) in {time.monotonic() - started:.1f} s"
        )
        results.append((name, path, summary))
    console.print(_comparison(results))
    for _, path, _ in results:
        console.print(f"run: {path}   (details: rolltrace analyze {path})")


def register(app: typer.Typer) -> None:
    app.command(help=f"{INTERIM_NOTE} Builds, analyzes and compares two sample runs.")(demo)
