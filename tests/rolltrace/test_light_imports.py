"""Cheap imports: the CLI's start-up and ``analyzer.schema`` load none of the heavy libraries.

Checked in a fresh interpreter each time: whatever this test process already imported must not
hide a regression.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

import analyzer
from analyzer.schema import SCHEMA_VERSION
from rolltrace import __version__
from rolltrace.cli import LAZY_COMMANDS, LazyGroup, app, commands_of

# Third-party packages (and our modules) that cost tens to hundreds of ms to import.
HEAVY = (
    "pandas",
    "numpy",
    "pyarrow",
    "matplotlib",
    "scapy",
    "kubernetes",
    "pydantic",
    "aiohttp",
    "analyzer.pipeline",
    "analyzer.report",
)


def loaded_after(statement: str) -> set[str]:
    """Top-level packages and our modules a fresh interpreter holds after ``statement``."""
    probe = f"import sys\n{statement}\nprint(*sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(h for h in HEAVY if h in modules)


def test_analyzer_schema_loads_no_pipeline_no_pandas() -> None:
    modules = loaded_after("import analyzer.schema")
    assert heavy_in(modules) == []
    assert sorted(m for m in modules if m.startswith("analyzer")) == ["analyzer", "analyzer.schema"]


def test_the_cli_module_imports_nothing_heavy() -> None:
    modules = loaded_after("import rolltrace.cli")
    assert heavy_in(modules) == []
    assert command_modules(modules) == []
    assert "asyncio" not in modules  # loads ssl and sockets: only `cluster status` needs it


def test_the_public_api_loads_on_first_use() -> None:
    modules = loaded_after(
        "import analyzer\n"
        "assert 'analyzer.run' not in sys.modules\n"
        "assert callable(analyzer.load_run) and callable(analyzer.read_pcap)\n"
        "assert callable(analyzer.tcp_connections) and analyzer.Run.__name__ == 'Run'\n"
        "assert analyzer.Cause.NOT_READY == 'not-ready' and analyzer.SCHEMA_VERSION\n"
        "from analyzer import *\n"
        "from analyzer import joins\n"
    )
    assert {
        "analyzer.run",
        "analyzer.readers.pcap",
        "analyzer.connections",
        "analyzer.joins",
    } <= modules


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = analyzer.nope
    assert {"load_run", "read_pcap", "iter_pcap", "tcp_connections_chunked", "Run"} <= set(
        dir(analyzer)
    )


def loaded_after_command(*argv: str) -> set[str]:
    """What a fresh interpreter holds after the console script ran ``rolltrace ARGV``."""
    return loaded_after(
        "import contextlib, io\n"
        f"sys.argv = ['rolltrace', *{list(argv)!r}]\n"
        "from rolltrace.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()"
    )


def command_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith("rolltrace.commands."))


def test_help_imports_no_command_module_nor_their_dependencies() -> None:
    modules = loaded_after_command("--help")
    assert command_modules(modules) == []
    assert heavy_in(modules) == []
    assert {"rich", "yaml", "asyncio"}.isdisjoint(modules)


def test_a_commands_help_imports_that_command_only() -> None:
    assert command_modules(loaded_after_command("validate", "--help")) == [
        "rolltrace.commands.validate"
    ]
    assert command_modules(loaded_after_command("cluster", "--help")) == [
        "rolltrace.commands.cluster",
        "rolltrace.commands.cluster_exec",
    ]


def test_help_lists_every_command_with_the_summary_its_module_gives() -> None:
    wide = {**os.environ, "COLUMNS": "200"}  # one line per command
    help_text = subprocess.run(
        [sys.executable, "-m", "rolltrace", "--help"],
        capture_output=True, text=True, check=True, env=wide,
    ).stdout  # fmt: skip
    listing = help_text.split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listing] == ["version", *LAZY_COMMANDS]
    group = typer.main.get_command(app)
    assert isinstance(group, LazyGroup)
    for name, lazy in LAZY_COMMANDS.items():
        command = commands_of(lazy.modules)[name]
        for limit in (40, 200):  # truncated and whole
            assert group.lazy.short_help(name, limit) == command.get_short_help_str(limit)


def test_version_is_answered_without_typer() -> None:
    modules = loaded_after_command("version")
    assert "typer" not in modules
    assert command_modules(modules) == []


def test_version_command_prints_both_versions() -> None:
    expected = f"rolltrace {__version__} (trace format {SCHEMA_VERSION})"
    fast_path = subprocess.run(
        [sys.executable, "-m", "rolltrace", "version"], capture_output=True, text=True, check=True
    )
    assert fast_path.stdout.strip() == expected
    assert CliRunner().invoke(app, ["version"]).stdout.strip() == expected
