"""A user's own app names no Pod (no X-Pod-Name) and often has no node captures: every stage
still runs, falls back to inference, and says how requests were tied to Pods."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from analyzer.pipeline import analyze_run
from analyzer.schema import PodMatch
from analyzer.tracebuilder import build_run


def _anonymous(run: Path, *, node_captures: bool, requests: slice = slice(None)) -> Path:
    """Strip what only rolltrace's demo app and local cluster provide."""
    frame = pd.read_parquet(run / "requests.parquet").iloc[requests]
    for column in ("pod", "pod_version"):
        frame[column] = pd.array([None] * len(frame), dtype="string")
    frame.to_parquet(run / "requests.parquet", index=False)
    if not node_captures:
        for capture in (run / "packets").glob("node*"):
            capture.unlink()
    shutil.rmtree(run / "analysis", ignore_errors=True)
    return run


@pytest.mark.parametrize("node_captures", [True, False])
def test_failures_without_pod_names_are_attributed_by_other_means(
    tmp_path: Path, node_captures: bool
) -> None:
    run = tmp_path / "run"
    build_run(run, "endpoint-lag", seed=1, rate=40, duration_s=15)
    summary = analyze_run(_anonymous(run, node_captures=node_captures))
    assert summary["requests_failed"] > 0
    by_method = summary["pod_match"]
    assert by_method[PodMatch.HEADER.value] == 0
    expected = PodMatch.NODE_CAPTURE if node_captures else PodMatch.INFERRED
    assert by_method[expected.value] == summary["requests_failed"]


def test_no_requests_at_all_is_analyzed_not_crashed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    build_run(run, "endpoint-lag", seed=1, rate=40, duration_s=15)
    summary = analyze_run(_anonymous(run, node_captures=False, requests=slice(0, 0)))
    assert summary["requests_total"] == 0
    assert summary["requests_failed"] == 0


def test_no_failures_and_no_pod_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    build_run(run, "clean", seed=1, rate=40, duration_s=15)
    summary = analyze_run(_anonymous(run, node_captures=False))
    assert summary["requests_total"] > 0
    assert summary["requests_failed"] == 0
    assert sum(summary["pod_match"].values()) == 0
