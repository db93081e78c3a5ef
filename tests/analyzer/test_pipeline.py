"""The pipeline on minimal run directories: what is required, what may be missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer import load_run
from analyzer.errors import UnusableRunError
from analyzer.pipeline import TABLES, analyze, analyze_run
from analyzer.readers.requests import write_requests
from analyzer.rundir import RunMeta, RunPaths, write_run_meta
from analyzer.schema import (
    ALL_TABLES,
    REQUESTS,
    SCHEMA_VERSION,
    Cause,
    RunStatus,
    check_frame,
)
from tests.analyzer.test_joins import make_frame, request

S = 1_000_000_000


def minimal_run(root: Path, failures: int = 2) -> Path:
    """run.json and requests.parquet only: no packets, no events."""
    root.mkdir(parents=True, exist_ok=True)
    write_run_meta(
        root,
        RunMeta(
            schema_version=SCHEMA_VERSION,
            run_id="minimal",
            status=RunStatus.COMPLETE,
            backend="synthetic",
        ),
    )
    rows = [request(i, 10.0 + i / 10, status_code=200) for i in range(50)]
    rows += [
        request(100 + i, 12.0 + i, error_kind="read-timeout", end_ns=int((13.0 + i) * S))
        for i in range(failures)
    ]
    write_requests(root / "requests.parquet", make_frame(REQUESTS, rows))
    return root


def test_requests_only_run_is_analyzed_and_says_what_is_missing(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    summary = analyze_run(run_dir)
    assert summary["requests_total"] == 52
    assert summary["requests_failed"] == 2
    assert summary["failed_by_cause"][Cause.UNEXPLAINED.value] == 2
    assert set(summary["failed_by_cause"]) == {c.value for c in Cause}
    assert "packets/*.pcap" in summary["inputs"]["missing"]
    assert "events.jsonl" in summary["inputs"]["missing"]
    assert summary["timings"]["propagation"]["n"] == 0
    assert summary["latency"]["n"] == 50 and summary["latency"]["p50_ms"] == 5.0
    written = json.loads((run_dir / "analysis" / "summary.json").read_text())
    assert written["requests_failed"] == 2
    for table in ("requests", "failures", "windows", "pods", "pod_states", "endpoints", "packets"):
        assert (run_dir / "analysis" / "tables" / f"{table}.parquet").exists()


def test_the_pod_state_intervals_are_written_and_each_stage_is_timed(tmp_path: Path) -> None:
    from tests.analyzer.handmade import make_run

    run_dir = make_run(tmp_path / "run")
    analysis = analyze(RunPaths(run_dir))
    states = pd.read_parquet(run_dir / "analysis" / "tables" / "pod_states.parquet")
    assert states["state"].tolist() == ["ready", "terminating"]
    assert set(analysis.cpu_s) == {"read", "joins", "attribution", "metrics", "write"}
    assert all(seconds >= 0 for seconds in analysis.cpu_s.values())


def test_analyze_writes_only_what_it_is_asked_to(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    paths = RunPaths(run_dir)
    quiet = analyze(paths, write_tables=False, write_summary=False)
    assert not paths.analysis.exists()
    assert "write" not in quiet.cpu_s
    assert quiet.summary["requests_failed"] == len(quiet.tables["failures"]) == 2
    analyze(paths)
    minimal_run(run_dir, failures=3)  # the written tables now describe older inputs
    fresh = analyze(paths, write_tables=False)
    assert json.loads(paths.summary.read_text()) == fresh.summary
    assert not any(paths.table(name).exists() for name in TABLES)  # never beside old tables
    assert len(load_run(run_dir).failures) == 3


def test_load_run_reuses_the_cache_until_an_input_changes(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    first = load_run(run_dir)
    assert len(first.failures) == 2
    summary_file = run_dir / "analysis" / "summary.json"
    stamp = summary_file.stat().st_mtime_ns
    again = load_run(run_dir)
    assert summary_file.stat().st_mtime_ns == stamp  # read back, not recomputed
    assert again.failures["request_id"].tolist() == first.failures["request_id"].tolist()
    for name, schema in ALL_TABLES.items():  # tables read back still honour their contracts
        check_frame(getattr(again, name), schema, "load_run from cache")
    minimal_run(run_dir, failures=3)  # rewrite the requests: the cache is stale
    assert len(load_run(run_dir).failures) == 3


def test_a_cached_run_reads_only_the_tables_asked_for(tmp_path: Path) -> None:
    """The packets table is most of a big run's memory and a report never needs it."""
    run_dir = minimal_run(tmp_path / "run")
    load_run(run_dir)
    run = load_run(run_dir)  # from the cache
    (run_dir / "analysis" / "tables" / "packets.parquet").unlink()
    assert len(run.failures) == 2  # read without touching packets.parquet
    with pytest.raises(FileNotFoundError):
        run.packets  # noqa: B018 (the read is the point)
    with pytest.raises(KeyError, match="no table 'packet'"):
        run.table("packet")


@pytest.mark.parametrize("missing", ["run.json", "requests.parquet"])
def test_run_without_its_required_files_is_unusable_and_names_the_file(
    tmp_path: Path, missing: str
) -> None:
    run_dir = minimal_run(tmp_path / "run")
    (run_dir / missing).unlink()
    with pytest.raises(UnusableRunError, match=re.escape(missing)):
        analyze_run(run_dir)


def test_damaged_requests_are_unusable(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    (run_dir / "requests.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UnusableRunError, match=r"requests\.parquet"):
        analyze_run(run_dir)


def test_damaged_capture_and_event_line_are_reported_and_the_rest_analyzed(tmp_path: Path) -> None:
    from analyzer.tracebuilder.build import build_run

    built = build_run(tmp_path / "run", "endpoint-lag", seed=3)
    capture = built.paths.packets_dir / "client.pcap"
    data = capture.read_bytes()
    capture.write_bytes(data[: len(data) * 2 // 3] + b"\xff" * 7)  # torn mid-record
    with built.paths.events.open("ab") as events:
        events.write(b'{"type": "MODIFIED", "recv_ns": "soon"}\n')
    summary = analyze_run(built.path)
    damaged = {d["file"].rsplit("/", 1)[-1]: d for d in summary["inputs"]["damaged"]}
    assert damaged["client.pcap"]["where"].startswith("byte ")
    assert "packets before the damage" in damaged["client.pcap"]["kept"]
    assert damaged["events.jsonl"]["where"].startswith("line ")
    assert summary["requests_failed"] == len(built.causes)
    assert summary["failed_by_cause"]["endpoint-lag"] >= 0.95 * len(built.causes)


def test_only_the_service_under_test_and_its_pods_are_analyzed() -> None:
    from analyzer.pipeline import _service_scope, _Watched
    from analyzer.schema import ENDPOINTS, POD_STATES, PODS
    from tests.analyzer.test_joins import pod

    meta = RunMeta(
        schema_version=SCHEMA_VERSION,
        run_id="x",
        status=RunStatus.COMPLETE,
        backend="synthetic",
        service={"name": "web"},
    )
    pods = make_frame(
        PODS,
        [
            pod("web-a-1", "10.244.1.5", 0.0),
            pod("web-a-2", "10.244.1.6", 0.0),  # never listed, same ReplicaSet
            pod("db-0", "10.244.1.7", 0.0),
        ],
    )
    pods["replicaset"] = pd.array(["web-a", "web-a", "db"], dtype="string")
    endpoints = make_frame(
        ENDPOINTS,
        [
            {
                "service": "web",
                "slice": "web-x",
                "ip": "10.244.1.5",
                "pod": "web-a-1",
                "ready": True,
            },
            {"service": "db", "slice": "db-x", "ip": "10.244.1.7", "pod": "db-0", "ready": True},
        ],
    )
    states = make_frame(
        POD_STATES,
        [{"pod": p, "uid": u, "from_ns": 0} for p, u in zip(pods["pod"], pods["uid"], strict=True)],
    )
    no_gaps = np.empty((0, 2))
    scoped = _service_scope(meta, _Watched(pods, states, endpoints, no_gaps))
    assert scoped.pods["pod"].tolist() == ["web-a-1", "web-a-2"]
    assert scoped.pod_states["pod"].tolist() == ["web-a-1", "web-a-2"]
    assert scoped.endpoints["service"].tolist() == ["web"]


def test_attribution_timings_come_from_run_json_and_the_measured_propagation() -> None:
    from analyzer.attribution import DEFAULT_RULES_LAG_MS
    from analyzer.pipeline import _service_context
    from analyzer.schema import ENDPOINTS, PODS

    scenario = {
        "pod": {"readiness_probe": {"period_s": 2, "failure_threshold": 3, "timeout_s": 1}},
        "cluster": {
            "lb": {"hc_interval_s": 8, "hc_timeout_s": 1, "unhealthy_threshold": 3},
            "terminating_fallback": False,
        },
        "service": {"external_traffic_policy": "Local"},
    }
    meta = RunMeta(
        schema_version=SCHEMA_VERSION,
        run_id="x",
        status=RunStatus.COMPLETE,
        backend="synthetic",
        scenario=scenario,
    )
    propagation = pd.DataFrame(
        {
            "pod": ["a", "b", "a"],
            "node": ["node-1", "node-2", "node-2"],
            "propagation_ms": [400.0, 900.0, 1_200.0],
        }
    )
    by_node = {"node-1": 400.0, "node-2": 1_200.0}
    context = _service_context(
        meta, PODS.empty(), ENDPOINTS.empty(), ["node-1"], propagation, by_node
    )
    assert context.local_policy and not context.terminating_fallback
    assert context.readiness_detect_ms == 7_000.0  # 2 s × 3 + 1 s
    assert context.rules_lag_ms == 1_200.0  # the longest measured
    assert context.rules_lag_by_node_ms == by_node
    assert context.lb_unhealthy_after_ms == 25_000.0 + 1_200.0  # 8 s × 3 + 1 s, + rules lag
    bare = RunMeta(
        schema_version=SCHEMA_VERSION, run_id="y", status=RunStatus.COMPLETE, backend="synthetic"
    )
    unknown = _service_context(bare, PODS.empty(), ENDPOINTS.empty(), [], propagation.iloc[:0])
    assert unknown.readiness_detect_ms is None and unknown.lb_unhealthy_after_ms is None
    assert unknown.rules_lag_ms == DEFAULT_RULES_LAG_MS and unknown.terminating_fallback
