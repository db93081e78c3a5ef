"""Metrics on hand-made failures and requests: windows, disruption seconds, latency, timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer import metrics
from analyzer.pipeline import analyze_run
from analyzer.schema import (
    CONNECTIONS,
    ENDPOINTS,
    FAILURES,
    PODS,
    REQUESTS,
    WINDOWS,
    Cause,
    check_frame,
)
from analyzer.tracebuilder import build_run
from tests.analyzer.test_joins import conn, make_frame, pod, request

S = 1_000_000_000
MS = 1_000_000


def failure(
    start_s: float, cause: Cause, reused: bool = False, dur_ms: float = 5.0
) -> dict[str, Any]:
    start = int(start_s * S)
    return {
        "request_id": int(start_s * 1000),
        "start_ns": start,
        "end_ns": start + int(dur_ms * MS),
        "error_kind": "refused",
        "cause": cause.value,
        "confidence": 0.9,
        "evidence": "x",
        "pod_method": "none",
        "conn_reused": reused,
    }


def test_windows_merge_failures_closer_than_the_gap() -> None:
    failures = make_frame(
        FAILURES,
        [
            failure(10.0, Cause.ENDPOINT_LAG),
            failure(10.5, Cause.ENDPOINT_LAG),
            failure(11.2, Cause.KEEPALIVE_RACE, reused=True),
            failure(20.0, Cause.NOT_READY),
        ],
    )
    windows = check_frame(metrics.disruption_windows(failures), WINDOWS, "test")
    assert windows["failed"].tolist() == [3, 1]
    assert windows["new_failed"].tolist() == [2, 1]
    assert windows["reused_failed"].tolist() == [1, 0]
    assert windows["dominant_cause"].tolist() == ["endpoint-lag", "not-ready"]
    assert json.loads(windows["causes"].iloc[0]) == {"endpoint-lag": 2, "keepalive-race": 1}
    assert windows["start_ns"].iloc[0] == 10 * S
    assert windows["end_ns"].iloc[0] == int(11.2 * S) + 5 * MS
    # a smaller gap splits the first window
    assert len(metrics.disruption_windows(failures, merge_gap_ns=600 * MS)) == 3


def test_windows_of_no_failures_is_an_empty_table() -> None:
    assert metrics.disruption_windows(FAILURES.empty()).empty


def test_disruption_seconds_count_seconds_per_connection_kind() -> None:
    failures = make_frame(
        FAILURES,
        [
            failure(10.1, Cause.ENDPOINT_LAG),
            failure(10.9, Cause.ENDPOINT_LAG),
            failure(11.0, Cause.ENDPOINT_LAG),
            failure(10.5, Cause.KEEPALIVE_RACE, reused=True),
        ],
    )
    assert metrics.disruption_seconds(failures) == {"new": 2, "reused": 1}


def test_failed_by_cause_lists_every_cause() -> None:
    failures = make_frame(FAILURES, [failure(1.0, Cause.OVERLOAD), failure(2.0, Cause.OVERLOAD)])
    counts = metrics.failed_by_cause(failures)
    assert set(counts) == {c.value for c in Cause}
    assert counts["overload"] == 2 and sum(counts.values()) == 2


def test_latency_per_second_uses_successes_only() -> None:
    rows = [
        request(i, 10.0 + i / 100, end_ns=int((10.0 + i / 100) * S) + (i + 1) * MS)
        for i in range(100)
    ]
    rows.append(request(500, 10.5, error_kind="read-timeout", end_ns=int(15.5 * S)))
    latency = metrics.latency_per_second(make_frame(REQUESTS, rows))
    first = latency.iloc[0]
    assert first["second_ns"] == 10 * S
    assert first["requests"] == 101 and first["failed"] == 1
    assert first["max_ms"] == 100.0
    assert 49.0 <= first["p50_ms"] <= 52.0


def test_timings_readiness_lead_propagation_and_drain() -> None:
    pods = make_frame(
        PODS,
        [
            pod("old", "10.244.1.5", 0.0, ready_ns=1.0, deletion_ns=20.0, deleted_ns=40.0),
            pod("new", "10.244.1.6", 15.0, started_ns=16.0, ready_ns=18.0),
        ],
    )
    endpoints = make_frame(
        ENDPOINTS,
        [
            {
                "service": "web",
                "slice": "s",
                "ip": "10.244.1.5",
                "pod": "old",
                "ready": True,
                "serving": True,
                "from_ns": 1 * S,
                "to_ns": int(20.1 * S),
            },
            {
                "service": "web",
                "slice": "s",
                "ip": "10.244.1.5",
                "pod": "old",
                "ready": False,
                "serving": True,
                "terminating": True,
                "from_ns": int(20.1 * S),
                "to_ns": 30 * S,
            },
        ],
    )
    reqs = make_frame(
        REQUESTS,
        [
            request(1, 18.5, pod="new", end_ns=int(18.55 * S)),
            request(2, 24.0, pod="old", end_ns=int(24.5 * S)),
        ],
    ).assign(pod_matched=lambda f: f["pod"])
    spans = metrics.served_spans(reqs)
    assert spans.to_dict("index") == {
        "new": {"first_ns": int(18.55 * S), "last_ns": int(18.55 * S)},
        "old": {"first_ns": int(24.5 * S), "last_ns": int(24.5 * S)},
    }
    lead = metrics.readiness_lead(pods, spans, since_ns=5 * S)
    assert lead.to_dict() == {"new": 550.0}

    leaving = metrics.endpoint_leaving_ns(pods, endpoints)
    assert leaving.to_dict() == {"old": int(20.1 * S)}
    node_conns = make_frame(
        CONNECTIONS,
        [
            conn(1, 5000, 21.0, 21.1, capture="node-1", server_ip="10.244.1.5"),
            conn(2, 5001, 22.1, 22.2, capture="node-1", server_ip="10.244.1.5"),
            conn(3, 5002, 20.5, 26.0, capture="node-2", server_ip="10.244.1.5"),
            # masqueraded by node 10.1.0.13: that node's rules still chose the Pod at 23 s
            conn(
                4, 5003, 23.1, 23.2, capture="node-2", server_ip="10.244.1.5", client_ip="10.1.0.13"
            ),
        ],
    ).assign(pod="old", synack_ns=lambda f: f["syn_ns"] + 1000, server_fin_ns=lambda f: f["end_ns"])
    # the Pod's FIN at 26 s ends that connection; the client's last ACK comes 7 s later
    node_conns.loc[node_conns["conn_key"] == 3, "end_ns"] = 33 * S
    # node-1 still routes to the Pod at 27 s, after it stopped accepting: refused, no SYN-ACK
    refused = conn(5, 5004, 27.0, 27.001, capture="node-1", server_ip="10.244.1.5")
    node_conns = pd.concat(
        [
            node_conns,
            make_frame(CONNECTIONS, [{**refused, "outcome": "refused"}]).assign(pod="old"),
        ],
        ignore_index=True,
    )
    captures = {"node-1": "n1", "node-2": "n2"}
    prop = metrics.endpoint_propagation(leaving, node_conns, captures, {"10.0.0.2"})
    by_node = dict(zip(prop["node"], prop["propagation_ms"].round(3), strict=True))
    assert by_node == {"n1": 6900.0, "n2": 400.0, "10.1.0.13": 3000.0}

    drain = metrics.drain_duration(pods, spans, node_conns)
    # the Pod's last packet is its FIN at 26 s: neither the client's late ACK nor the refused
    # SYN is the Pod draining
    assert drain.to_dict() == {"old": 6000.0}


def test_timing_stats_of_nothing_says_so() -> None:
    assert metrics.timing_stats(pd.Series([], dtype="float64")) == {
        "n": 0,
        "p50_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }
    stats = metrics.timing_stats(pd.Series([1.0, 2.0, 3.0]))
    assert stats["n"] == 3 and stats["p50_ms"] == 2.0 and stats["max_ms"] == 3.0


def test_forwarding_addresses_are_named_by_the_pods_host_ip_and_others_left_out() -> None:
    """A masquerading source equal to a node's hostIP names that node (Pods carry nodeName and
    hostIP: no Node objects needed); a capture's node stays; any other address is no node."""
    pods = pd.DataFrame(
        {
            "pod": ["a", "b", "c"],
            "node": ["node-1", "node-2", "node-2"],
            "host_ip": ["10.1.0.11", "10.1.0.12", "10.1.0.12"],
        }
    )
    propagation = pd.DataFrame(
        {
            "pod": ["a", "a", "b", "b", "c"],
            "node": ["10.1.0.11", "10.1.0.12", "node-3", "10.9.0.1", "10.9.0.1"],
            "propagation_ms": [100.0, 300.0, 50.0, 900.0, 800.0],
        }
    )
    named, left_out = metrics.name_forwarding_nodes(propagation, pods, {"node-3"})
    assert dict(zip(named["node"], named["propagation_ms"], strict=True)) == {
        "node-1": 100.0,
        "node-2": 300.0,
        "node-3": 50.0,
    }
    assert sorted(left_out) == ["10.9.0.1", "10.9.0.1"]


def test_runs_recorded_without_host_ip_name_no_address() -> None:
    pods = pd.DataFrame({"pod": ["a"], "node": ["node-1"]})
    assert metrics.node_names_by_address(pods) == {}
    propagation = pd.DataFrame({"pod": ["a"], "node": ["10.1.0.11"], "propagation_ms": [100.0]})
    named, left_out = metrics.name_forwarding_nodes(propagation, pods, set())
    assert named.empty and list(left_out) == ["10.1.0.11"]


def test_student_t_quantiles_match_the_tables() -> None:
    for df, p, table in (
        (1, 0.975, 12.706),
        (2, 0.95, 2.920),
        (8, 0.975, 2.306),
        (30, 0.99, 2.457),
    ):
        assert abs(metrics.student_t_quantile(p, df) - table) < 1e-3


def test_the_upper_bound_of_a_built_run_is_named_and_per_node_figures_use_node_names(
    tmp_path: Path,
) -> None:
    build_run(tmp_path / "run", "endpoint-lag", seed=3, rate=40, duration_s=15)
    summary = analyze_run(tmp_path / "run")
    timings = summary["timings"]
    pods = pd.read_parquet(tmp_path / "run" / "analysis" / "tables" / "pods.parquet")
    assert pods["host_ip"].notna().all()
    assert set(timings["propagation_by_node"]) <= set(pods["node"])
    per_node = sum(s["n"] for s in timings["propagation_by_node"].values())
    assert per_node == timings["propagation"]["n"]  # every sample kept names its node
    bound = timings["propagation_bound"]
    assert bound["n"] == timings["propagation"]["n"] >= metrics.MIN_BOUND_SAMPLES
    assert bound["upper_ms"] > bound["max_ms"] == timings["propagation"]["max_ms"]
    assert "prediction bound" in bound["statistic"] and bound["confidence"] == 0.95
