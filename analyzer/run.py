"""``load_run`` / ``load_analysis``: a run directory's analysis, analyzing it first when needed.

Notebooks, tests, users and ``rolltrace report RUN`` start here. The analysis is cached in
``analysis/``: when the tables there were written by this analyzer version from the run's
current files, they are read back instead of recomputed (a run of a million requests analyzes
in seconds, but reads in less).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pandas as pd

from analyzer.pipeline import (
    ANALYZER_VERSION,
    TABLES,
    Analysis,
    Summary,
    analyze,
    input_fingerprint,
)
from analyzer.rundir import RunMeta, RunPaths, read_run_meta
from analyzer.schema import SCHEMA_VERSION


class _WrittenTables(Mapping[str, pd.DataFrame]):
    """The tables of ``analysis/tables``, each read the first time it is asked for: callers
    rarely need all of them, and the packets table alone is most of a big run's memory."""

    def __init__(self, paths: RunPaths) -> None:
        self._paths = paths
        self._read: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(name)
        if name not in self._read:
            self._read[name] = pd.read_parquet(self._paths.table(name))
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(TABLES)

    def __len__(self) -> int:
        return len(TABLES)


class _Table:
    """A table of a Run, as an attribute (``run.failures``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, run: Run, owner: type | None = None) -> pd.DataFrame:
        return run.table(self.name)


class Run:
    """One analyzed run: the canonical tables (see ``analyzer.schema``) and ``summary.json``."""

    requests = _Table()
    packets = _Table()
    connections = _Table()
    pods = _Table()
    pod_states = _Table()
    endpoints = _Table()
    failures = _Table()
    windows = _Table()
    latency = _Table()
    timings = _Table()
    hop_requests = _Table()
    hop_attempts = _Table()
    masked_retries = _Table()

    def __init__(self, paths: RunPaths, analysis: Analysis) -> None:
        self.paths = paths
        self.path: Path = paths.root
        self.analysis = analysis
        self.meta: RunMeta = analysis.meta
        self.summary: Summary = analysis.summary

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise KeyError(f"no table {name!r}; tables: {', '.join(TABLES)}")
        return self.analysis.tables[name]


def _cached_summary(paths: RunPaths) -> Summary | None:
    """summary.json when it and every table are present and describe the current inputs."""
    if not paths.summary.exists() or not all(paths.table(n).exists() for n in TABLES):
        return None
    try:
        summary = cast(Summary, json.loads(paths.summary.read_text()))
    except (OSError, ValueError):
        return None
    current: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "analyzer_version": ANALYZER_VERSION,
        "fingerprint": input_fingerprint(paths),
    }
    cached = {
        "schema_version": summary.get("schema_version"),
        "analyzer_version": summary.get("analyzer_version"),
        "fingerprint": summary.get("inputs", {}).get("fingerprint"),
    }
    return summary if cached == current else None


def load_analysis(paths: RunPaths, *, refresh: bool = False) -> Analysis:
    """The run's analysis as written in ``analysis/`` (tables read when first asked for), or a
    fresh one, written, when it is absent or stale (``refresh=True``: always fresh).

    Raises ``UnusableRunError`` when the run lacks run.json or usable requests.
    """
    summary = None if refresh else _cached_summary(paths)
    if summary is None:
        return analyze(paths)
    return Analysis(read_run_meta(paths.run_json), _WrittenTables(paths), summary)


def load_run(path: str | os.PathLike[str], *, refresh: bool = False) -> Run:
    """Load a run directory's analysis, computing and writing it when absent or stale.

    Raises ``UnusableRunError`` when the run lacks run.json or usable requests.
    """
    paths = RunPaths(path)
    return Run(paths, load_analysis(paths, refresh=refresh))
