"""``rolltrace demo``: the remedy measured — a preStop too short, then long enough.

Runs ``scenarios/prestop-too-short.yaml`` and ``scenarios/prestop-enough.yaml`` back to back on
the local cluster (real namespaces, nftables, processes and Locust traffic), analyzes both and
prints what failed, why, the measured endpoint propagation and the preStop it recommends.

Where the local cluster cannot run (no root, no ``nft``/``ip``), or with ``--synthetic``, the
demo says so and shows the analyzer on two runs built by ``analyzer.tracebuilder`` instead.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from rolltrace.commands import not_a_directory
from rolltrace.commands.run import run_scenario

# The pipeline and the trace builder (pandas, pyarrow, scapy), the scenario model and the local
# cluster's prerequisites check (pydantic) are imported where used: `rolltrace --help` must not
# load them.
if TYPE_CHECKING:
    from analyzer.pipeline import Summary

SYNTHETIC_NOTE = (
    "synthetic demo: the runs are built by analyzer.tracebuilder (injected disruptions), "
    "not a real rollout"
)
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"  # the repository's library
DEMO_SCENARIOS = ("prestop-too-short", "prestop-enough")

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


def prestop_recommendation(summary: Summary) -> dict[str, Any] | None:
    """The analysis' own preStop recommendation (summary.json ``recommendations``), when it
    names a value: the demo prints the advice the report gives, not a second rule."""
    for rec in summary["recommendations"]:
        for change in rec["changes"]:
            if change["setting"] == "pod.pre_stop.sleep_s":
                return {**change, "how_sure": rec["how_sure"]}
    return None


def _synthetic(runs_dir: Path, seed: int, console: Console) -> list[tuple[str, Path, Summary]]:
    from analyzer.pipeline import analyze_run
    from analyzer.tracebuilder.build import build_run

    console.print(f"[yellow]{SYNTHETIC_NOTE}[/yellow]")
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
    return results


def _local(runs_dir: Path, console: Console) -> list[tuple[str, Path, Summary]]:
    from rolltrace.scenario import load_scenario

    results: list[tuple[str, Path, Summary]] = []
    for name in DEMO_SCENARIOS:
        # one repetition each: the demo shows the effect; the test suite checks repeatability
        scenario = load_scenario(SCENARIO_DIR / f"{name}.yaml", ["repetitions=1"])
        console.print(f"[bold]{name}[/bold]: {' '.join(scenario.description.split())}")
        (outcome,) = run_scenario(scenario, runs_dir, console)
        if outcome.summary is None:
            raise typer.Exit(1)
        results.append((name, outcome.paths.root, cast("Summary", outcome.summary)))
    return results


def demo(
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where to write the two run directories.")
    ] = Path("runs"),
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Use built runs instead of the local cluster.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Trace-builder seed (--synthetic).")] = 1,
) -> None:
    """Run a rollout with a preStop that is too short, then one long enough; compare."""
    from localcluster.dataplane.cluster import missing_prerequisites

    console = Console(soft_wrap=True, log_path=False)
    unusable = not_a_directory("--runs-dir", runs_dir)
    if unusable:
        console.print(f"[red]error:[/red] {unusable}")
        raise typer.Exit(2)
    missing = [] if synthetic else missing_prerequisites()
    if missing:
        console.print(
            "[yellow]the local cluster cannot run here: missing "
            + ", ".join(missing)
            + "; falling back to the synthetic demo[/yellow]"
        )
    started = time.monotonic()
    if synthetic or missing:
        results = _synthetic(runs_dir, seed, console)
    else:
        results = _local(runs_dir, console)
    console.print(_comparison(results))
    too_short = results[0][2]
    advice = prestop_recommendation(too_short)
    if advice is not None:
        console.print(
            f"measured endpoint propagation max: "
            f"{too_short['timings']['propagation']['max_ms'] / 1000:.1f} s → recommended "
            f"[bold]preStop: sleep {advice['to']}[/bold] ({advice['how_sure']}), and "
            f"terminationGracePeriodSeconds above preStop + drain"
        )
    for _, path, _ in results:
        console.print(f"run: {path}   (details: rolltrace analyze {path}; rolltrace report {path})")
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")


def register(app: typer.Typer) -> None:
    app.command()(demo)
