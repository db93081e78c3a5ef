"""``load_run``: a run directory as DataFrames, analyzing it first when needed.

Notebooks, tests and users start here. The analysis is cached in ``analysis/``: when the tables
there were written by this analyzer version from the run's current files, they are read back
instead of recomputed (a run of a million requests analyzes in seconds, but reads in less).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd

from analyzer.pipeline import ANALYZER_VERSION, TABLES, Summary, analyze, input_fingerprint
from analyzer.rundir import RunMeta, RunPaths, read_run_meta
from analyzer.schema import SCHEMA_VERSION


@dataclass
class Run:
    """One analyzed run: the canonical tables (see ``analyzer.schema``) and ``summary.json``."""

    path: Path
    meta: RunMeta
    summary: Summary
    requests: pd.DataFrame
    packets: pd.DataFrame
    connections: pd.DataFrame
    pods: pd.DataFrame
    endpoints: pd.DataFrame
    failures: pd.DataFrame
    windows: pd.DataFrame
    latency: pd.DataFrame
    timings: pd.DataFrame


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


def load_run(path: str | os.PathLike[str], *, refresh: bool = False) -> Run:
    """Load a run directory's analysis, computing and writing it when absent or stale.

    Raises ``UnusableRunError`` when the run lacks run.json or usable requests.
    """
    paths = RunPaths(path)
    summary = None if refresh else _cached_summary(paths)
    if summary is None:
        analysis = analyze(paths.root)
        meta, summary, tables = analysis.meta, analysis.summary, analysis.tables
    else:
        meta = read_run_meta(paths.run_json)
        tables = {name: pd.read_parquet(paths.table(name)) for name in TABLES}
    return Run(path=paths.root, meta=meta, summary=summary, **tables)
