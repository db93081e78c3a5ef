"""``rolltrace run SCENARIO [-o runs/]``: the product's main job, with a live progress display."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from analyzer.budget import parse_budget
from rolltrace.commands import not_a_directory

# The runner, the backends, the manifests and the scenario model pull in pydantic, pyarrow,
# aiohttp and the kubernetes client: they are imported where used, so that `rolltrace --help`
# and the other commands start fast.
if TYPE_CHECKING:
    from kubewire import RolloutState
    from rolltrace.runner.experiment import RunOutcome
    from rolltrace.scenario import Scenario


class LiveProgress:
    """Renders phase, load and rollout state in place (rich Live), one line per update."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.current = "starting"
        self.started = time.monotonic()
        self.load: dict[str, float] = {}
        self.rollout: RolloutState | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        elapsed = time.monotonic() - self.started
        table.add_row(f"[bold]{escape(self.title)}[/bold]", f"{elapsed:5.1f} s", self.current)
        if self.load:
            table.add_row(
                "load",
                f"{self.load.get('rps', 0):.0f} req/s",
                f"{int(self.load.get('requests', 0))} requests, "
                f"[red]{int(self.load.get('failed', 0))} failed[/red]",
            )
        if self.rollout is not None:
            r = self.rollout
            table.add_row(
                "rollout",
                f"{r.updated} updated",
                f"{r.ready} ready, {r.available} available, {r.replicas} pods total",
            )
        return table

    def phase(self, name: str) -> None:
        self.current = name.replace("_", " ")
        self.console.log(f"{escape(self.title)}: {self.current}")
        self.live.update(self._render())

    def tick(self, load: dict[str, float], rollout: RolloutState | None) -> None:
        self.load = load or self.load
        self.rollout = rollout or self.rollout
        self.live.update(self._render())

    def note(self, message: str) -> None:
        self.console.log(escape(message))


def run_scenario(
    scenario: Scenario,
    output: Path,
    console: Console,
    analyze: bool = True,
    target_existing: str | None = None,
) -> list[RunOutcome]:
    """Run every repetition of a scenario; one run directory each, plus index.json."""
    from rolltrace.runner.backends import backend_for
    from rolltrace.runner.experiment import Experiment

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    outcomes = []
    for repetition in range(1, scenario.repetitions + 1):
        suffix = f"-r{repetition}" if scenario.repetitions > 1 else ""
        run_dir = output / f"{scenario.name}-{stamp}{suffix}"
        progress = LiveProgress(console, f"{scenario.name}{suffix}")
        backend = backend_for(scenario, on_progress=progress.note)
        with progress.live:
            outcome = Experiment(
                scenario,
                run_dir,
                backend,
                progress,
                analyze=analyze,
                target_existing=target_existing,
            ).run()
        outcomes.append(outcome)
        print_outcome(console, outcome)
        if outcome.interrupted:  # Ctrl-C stops the repetitions too
            break
    if scenario.repetitions > 1:
        index = output / f"{scenario.name}-{stamp}.index.json"
        index.write_text(json.dumps({
            "scenario": scenario.name,
            "runs": [str(o.paths.root) for o in outcomes],
            "failed": [(o.summary or {}).get("requests_failed") for o in outcomes],
        }, indent=2))  # fmt: skip
    return outcomes


def print_outcome(console: Console, outcome: RunOutcome) -> None:
    meta, summary = outcome.meta, outcome.summary or {}
    console.print(f"[bold]{escape(str(outcome.paths.root))}[/bold]: status {meta.status}")
    for reason in meta.status_reasons:
        console.print(f"  · {escape(reason)}")
    if meta.load is not None:
        console.print(
            f"  load: {meta.load.delivered_rate:.0f} req/s delivered of "
            f"{meta.load.asked_rate:g} asked"
        )
    if summary:
        causes = {k: v for k, v in summary.get("failed_by_cause", {}).items() if v}
        console.print(
            f"  {summary.get('requests_total', 0)} requests, "
            f"{summary.get('requests_failed', 0)} failed"
            + (f" — {', '.join(f'{k}: {v}' for k, v in causes.items())}" if causes else "")
        )


def unmet_expectations(scenario: Scenario, summary: dict[str, Any]) -> list[str]:
    """The scenario's expectations that do NOT hold (empty list: all hold)."""
    broken = []
    for text in scenario.expect:
        budget = parse_budget(text)
        if not budget.exceeded(summary):  # `exceeded` means "the expression is true"
            broken.append(f"{text} (was {budget.value(summary):g})")
    return broken


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        scenario_file: Annotated[
            Path | None,
            typer.Argument(help="Scenario YAML file (optional with --manifest: the defaults)."),
        ] = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="Where runs go.")] = Path(
            "runs"
        ),
        manifests: Annotated[
            list[Path] | None,
            typer.Option(
                "--manifest",
                help="Your own Deployment and LoadBalancer Service (YAML, multi-document "
                "allowed; repeatable): applied instead of the demo app's, with their probes, "
                "hooks, strategy and policy. See docs/try-your-own-app.md.",
            ),
        ] = None,
        overrides: Annotated[
            list[str] | None, typer.Option("--set", help="Override a field: key.path=value.")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the manifests and plan; change nothing.")
        ] = False,
        check: Annotated[
            bool, typer.Option("--check/--no-check", help="Exit 1 when expectations fail.")
        ] = True,
        target_existing: Annotated[
            str | None,
            typer.Option(
                "--target-existing",
                help="Run on your own Deployment of this name (real clusters): no manifests "
                "are applied, its LoadBalancer Service is found by selector, and only it is "
                "patched to trigger the rollout.",
            ),
        ] = None,
    ) -> None:
        """Run a rollout under load, record every trace, analyze it."""
        from rolltrace.scenario import ScenarioError

        console = Console(stderr=True, log_path=False)
        try:
            scenario, warnings = _load(scenario_file, manifests or [], overrides or [])
        except ScenarioError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
        if target_existing is not None and scenario.manifests.files:
            console.print("[red]--target-existing runs on a Deployment that is already "
                          "there, --manifest (manifests:) applies your own: give one or the "
                          "other[/red]")  # fmt: skip
            raise typer.Exit(2)
        for warning in warnings:
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        if dry_run:
            _print_plan(scenario)
            return
        unusable = not_a_directory("--output", output)
        if unusable:
            console.print(f"[red]{escape(unusable)}[/red]")
            raise typer.Exit(2)
        outcomes = run_scenario(scenario, output, console, target_existing=target_existing)
        failures = []
        for outcome in outcomes:
            if outcome.summary is None:
                failures.append(f"{outcome.paths.root}: no analysis ({outcome.meta.status})")
                continue
            failures += [
                f"{outcome.paths.root}: expected {b}"
                for b in unmet_expectations(scenario, outcome.summary)
            ]
        for failure in failures:
            console.print(f"[red]✗[/red] {escape(failure)}")
        if check and failures:
            raise typer.Exit(1)


def _load(
    scenario_file: Path | None, manifests: list[Path], overrides: list[str]
) -> tuple[Scenario, list[str]]:
    """The scenario (the file, or the defaults named after the user's Deployment) with its
    manifests read and checked, and the warnings to show; ScenarioError when unusable."""
    from rolltrace.runner.manifests import prepare, read_documents
    from rolltrace.scenario import ScenarioError, load_scenario, parse_scenario

    if scenario_file is not None:
        scenario = load_scenario(scenario_file, overrides)
    elif manifests:
        names = [d.name for f in manifests for d in read_documents(f) if d.kind == "Deployment"]
        name = re.sub(r"[^a-z0-9-]", "-", (names or ["my-app"])[0].lower())[:63]
        scenario = parse_scenario(yaml.safe_dump({"name": name}), "--manifest", overrides)
    else:
        raise ScenarioError("give a scenario file, or your own manifests with --manifest")
    if manifests:
        files = [*scenario.manifests.files, *(str(f.resolve()) for f in manifests)]
        scenario = scenario.model_copy(
            update={"manifests": scenario.manifests.model_copy(update={"files": files})}
        )
    scenario, warnings = prepare(scenario)
    budgets = (parse_budget(text).warning for text in scenario.expect)
    return scenario, [*warnings, *(f"expect: {w}" for w in budgets if w)]


def _print_plan(scenario: Scenario) -> None:
    from rolltrace.runner.manifests import ingress_objects, workload_objects

    typer.echo("# rolltrace run --dry-run: nothing is changed")
    typer.echo(f"# cluster: {scenario.cluster.model_dump(mode='json')}")
    typer.echo(f"# load: {scenario.load.model_dump(mode='json')}")
    typer.echo(
        f"# rollout: {scenario.rollout.model_dump(mode='json')}, "
        f"repetitions: {scenario.repetitions}"
    )
    if scenario.manifests.files:
        typer.echo(f"# manifests: {', '.join(scenario.manifests.files)}")
        for section in ("workload", "pod", "strategy", "service"):
            settings = getattr(scenario, section).model_dump(mode="json", exclude={"app"})
            typer.echo(f"# {section}, as the manifests set it: {settings}")
    service_obj, deployment_obj = workload_objects(scenario)
    hop = ingress_objects(scenario, service_obj, "KUBECONFIG-IN-NETWORK")  # the run's, at start
    typer.echo(yaml.safe_dump_all([service_obj, deployment_obj, *hop], sort_keys=False))
