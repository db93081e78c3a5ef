"""Cheap imports: the CLI's start-up and ``analyzer.schema`` load none of the heavy libraries.

Checked in a fresh interpreter each time: whatever this test process already imported must not
hide a regression.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import analyzer
from analyzer.schema import SCHEMA_VERSION
from rolltrace import __version__

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


def test_the_cli_registers_every_command_without_heavy_imports() -> None:
    modules = loaded_after("import rolltrace.cli")
    assert heavy_in(modules) == []
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
    assert {"analyzer.run", "analyzer.pcap", "analyzer.connections", "analyzer.joins"} <= modules


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = analyzer.nope
    assert {"load_run", "read_pcap", "Run"} <= set(dir(analyzer))


def test_version_command_prints_both_versions() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rolltrace", "version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"rolltrace {__version__} (trace format {SCHEMA_VERSION})"
