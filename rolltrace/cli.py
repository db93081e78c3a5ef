"""The ``rolltrace`` command line. Each command lives in its own ``rolltrace/cmd_*.py`` module and
is registered here, so commands stay independent and this file stays a table of contents."""

from __future__ import annotations

import importlib

import typer

from analyzer.schema import SCHEMA_VERSION
from rolltrace import __version__

app = typer.Typer(
    name="rolltrace",
    help="Measure and explain request disruption during Kubernetes rolling updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules under rolltrace/ whose register(app) adds their command or command group.
_COMMAND_MODULES: list[str] = [
    "cmd_analyze",
    "cmd_demo",
    "cmd_validate",
    "cmd_scenario",
    "cmd_run",
    "cmd_cluster",
    "cmd_cluster_exec",
    "cmd_report",
    "cmd_score",
]


def _register() -> None:
    for module_name in _COMMAND_MODULES:
        module = importlib.import_module(f"rolltrace.{module_name}")
        module.register(app)


@app.callback()
def _root() -> None:
    """Measure and explain request disruption during Kubernetes rolling updates."""


@app.command()
def version() -> None:
    """Print rolltrace's version and the trace-format schema version it reads and writes."""
    typer.echo(f"rolltrace {__version__} (trace format {SCHEMA_VERSION})")


_register()


def main() -> None:
    app()
