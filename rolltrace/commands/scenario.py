"""``rolltrace scenario check FILE [--set k=v]``: validate a scenario and show what it resolves to."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape

scenario_app = typer.Typer(help="Work with scenario files.", no_args_is_help=True)


@scenario_app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="Scenario YAML files."),  # noqa: B008
    overrides: list[str] = typer.Option(  # noqa: B008
        [], "--set", help="Override a field: key.path=value (YAML value)."
    ),
    show: bool = typer.Option(False, "--show", help="Print the resolved scenario."),
) -> None:
    """Validate scenario files; errors name the file, line and field. Exit 1 on any error."""
    from rolltrace.scenario import ScenarioError, load_scenario  # pydantic: not for --help

    console = Console(stderr=True)
    failed = False
    for path in files:
        try:
            scenario = load_scenario(path, overrides)
        except ScenarioError as exc:
            failed = True
            console.print(f"[red]✗[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            continue
        console.print(f"[green]✓[/green] {escape(str(path))}: {scenario.name}", highlight=False)
        if show:
            typer.echo(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    raise typer.Exit(1 if failed else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(scenario_app, name="scenario")
