"""The ``rolltrace`` command line. Each command lives in its own ``rolltrace/commands/*.py`` module and
is listed here, so commands stay independent and this file stays a table of contents.

A command's module is imported only when that command runs or its help is shown: ``rolltrace
--help`` lists every command from the summaries below and so costs little more than importing
typer (``bench/cli_startup.py``). Help is click's plain layout, not typer's rich panels: rendering
those imports rich, markdown-it and rich's traceback module, which take longer than typer itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from rolltrace import version_line

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter


@dataclass(frozen=True)
class LazyCommand:
    """A command known by name and summary before its module is imported."""

    modules: tuple[str, ...]  # rolltrace.commands.* modules whose register(app) adds the command
    summary: str  # the first paragraph of its help: its line in `rolltrace --help`


# In the order `rolltrace --help` lists them (after `version`).
LAZY_COMMANDS: dict[str, LazyCommand] = {
    "analyze": LazyCommand(
        ("analyze",),
        "Analyze a run: attribute every failed request to a cause, write analysis/, gate on "
        "budgets.",
    ),
    "demo": LazyCommand(
        ("demo",),
        "Run a rollout with a preStop that is too short, then one long enough; compare.",
    ),
    "validate": LazyCommand(
        ("validate",),
        "Check a run directory: every file, line, row and field the analysis will read.",
    ),
    "run": LazyCommand(("run",), "Run a rollout under load, record every trace, analyze it."),
    "tune": LazyCommand(
        ("tune",),
        "Find the cheapest safe value of one or two settings by running the scenario: writes "
        "tune.json, tune.html and patch.yaml.",
    ),
    "import": LazyCommand(
        ("importing",),
        "Build a run directory from your own traces: a capture, watch output, a load tool's log.",
    ),
    "observe": LazyCommand(
        ("observe",),
        "Load, capture and watch an existing Service while your own tooling rolls it out "
        "(kubectl, Helm, Argo CD, Flagger); then analyze and report. Changes nothing.",
    ),
    "report": LazyCommand(
        ("report",),
        "Write the disruption report of a run: analysis/report.html, report.md, figures/*.png.",
    ),
    "compare": LazyCommand(
        ("report",),
        "Compare runs side by side: failures by cause, overlaid timelines, and whether each "
        "difference is larger than the run-to-run spread.",
    ),
    "score": LazyCommand(
        ("score",),
        "Score the analyzer's cause of each failed request against ground truth (truth.jsonl).",
    ),
    "scenario": LazyCommand(("scenario",), "Work with scenario files."),
    "cluster": LazyCommand(
        ("cluster", "cluster_exec"), "Run the embedded local Kubernetes cluster."
    ),
    "watch": LazyCommand(
        ("watch",),
        "Record Pods, EndpointSlices, Services, Deployments, ReplicaSets and Events with "
        "receive times, until Ctrl-C or --duration: the precise watch for `rolltrace import "
        "--watch`.",
    ),
}

#: click wraps help at 80 columns by default; a wider terminal shows whole summaries, as typer's
#: rich help did (click still uses the terminal's width when it is narrower)
HELP_MAX_WIDTH = 120

# For the app and for the apps lazy commands are registered on: plain help (see above), no
# shell-completion options, tracebacks as Python prints them.
_APP_SETTINGS: dict[str, Any] = {
    "context_settings": {"max_content_width": HELP_MAX_WIDTH},
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}


@cache
def commands_of(modules: tuple[str, ...]) -> dict[str, Command]:
    """Imports the modules and returns the click commands their ``register(app)`` add; once per
    process, because a module may register onto a shared sub-app (``cluster exec``)."""
    holder = typer.Typer(**_APP_SETTINGS)
    for module in modules:
        importlib.import_module(f"rolltrace.commands.{module}").register(holder)
    return dict(typer.main.get_group(holder).commands)


class LazyCommands(MutableMapping[str, "Command"]):
    """A group's commands by name: the eager ones as given, a lazy one imported on first lookup.
    Iterating lists every name without importing anything (typer's typo suggestions use it)."""

    def __init__(self, eager: MutableMapping[str, Command]) -> None:
        self.eager = eager

    def __getitem__(self, name: str) -> Command:
        if name in self.eager:
            return self.eager[name]
        if name in LAZY_COMMANDS:
            return commands_of(LAZY_COMMANDS[name].modules)[name]
        raise KeyError(name)

    def __setitem__(self, name: str, command: Command) -> None:
        self.eager[name] = command

    def __delitem__(self, name: str) -> None:
        del self.eager[name]

    def __iter__(self) -> Iterator[str]:
        yield from self.eager
        yield from (name for name in LAZY_COMMANDS if name not in self.eager)

    def __len__(self) -> int:
        return len(self.eager.keys() | LAZY_COMMANDS.keys())

    def short_help(self, name: str, limit: int) -> str:
        """The command's line in the listing; a lazy one's from its summary, not its module."""
        command = self.eager.get(name)
        if command is None:
            command = TyperCommand(name=name, help=LAZY_COMMANDS[name].summary)
        return command.get_short_help_str(limit)


class LazyGroup(TyperGroup):
    """The root group: lists the lazy commands without importing them, imports one when used."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lazy = LazyCommands(self.commands)
        self.commands = self.lazy

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.lazy)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))  # click's spacing, as typer's own
        with formatter.section("Commands"):
            formatter.write_dl([(name, self.lazy.short_help(name, limit)) for name in names])


app = typer.Typer(
    name="rolltrace",
    help="Measure and explain request disruption during Kubernetes rolling updates.",
    no_args_is_help=True,
    cls=LazyGroup,
    **_APP_SETTINGS,
)


@app.callback()
def _root() -> None:
    """Measure and explain request disruption during Kubernetes rolling updates."""


@app.command()
def version() -> None:
    """Print rolltrace's version and the trace-format schema version it reads and writes."""
    typer.echo(version_line())


def main() -> None:
    app()
