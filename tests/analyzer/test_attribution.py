"""Attribution rules, one by one, on hand-made evidence (docs/causes.md lists the same rules)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from analyzer import attribution
from analyzer.attribution import ServiceContext, decide
from analyzer.schema import ENDPOINTS, FAILURES, Cause, PodMatch, check_frame
from tests.analyzer.test_joins import make_frame

S = 1_000_000_000
MS = 1_000_000
CLUSTER = ServiceContext(desired_replicas=3, local_policy=False, nodes=("node-1", "node-2"))
LOCAL = ServiceContext(desired_replicas=3, local_policy=True, nodes=("node-1", "node-2"))


def evidence(**kw: Any) -> dict[str, Any]:
    """One failed request's evidence; defaults describe a healthy moment with nothing known."""
    row: dict[str, Any] = {
        "request_id": 1,
        "start_ns": 100 * S,
        "end_ns": 100 * S + 2 * MS,
        "error_kind": "refused",
        "status_code": pd.NA,
        "first_byte_ns": pd.NA,
        "pod": pd.NA,
        "pod_method": PodMatch.NONE.value,
        "pod_state": pd.NA,
        "node": pd.NA,
        "ms_since_deletion": np.nan,
        "ms_since_ready": np.nan,
        "conn_age_ms": np.nan,
        "conn_reused": False,
        "conn_outcome": pd.NA,
        "server_close_ms": np.nan,
        "has_packets": True,
        "idle_ms": np.nan,
        "pod_deleted_by_end": False,
        "pod_served_before": False,
        "ready_endpoints": 3,
        "no_endpoints_recently": False,
        "capacity_short_recently": False,
        "fin_then_rst": False,
        "nodes_lacking_local": 0,
    }
    row.update(kw)
    return row


def decide_one(context: ServiceContext = CLUSTER, **kw: Any) -> pd.Series:
    frame = pd.DataFrame([evidence(**kw)])
    for col in ("ms_since_deletion", "ms_since_ready", "conn_age_ms", "server_close_ms", "idle_ms"):
        frame[col] = frame[col].astype("Float64")
    frame["first_byte_ns"] = frame["first_byte_ns"].astype("Int64")
    out = decide(frame, context)
    check_frame(out, FAILURES, "test")
    return out.iloc[0]


LEAVING_POD = {"pod": "old", "pod_state": "terminating", "ms_since_deletion": 800.0}
NEW_POD = {"pod": "new", "pod_state": "ready", "ms_since_ready": 400.0}


def test_a_pod_that_already_served_is_not_blamed_as_not_ready() -> None:
    """Seen on the local cluster under heavy host load: SYNs to a Pod that had been serving
    for seconds went unanswered. Recent readiness alone must not make that not-ready."""
    timeout = {"error_kind": "connect-timeout", "pod_method": PodMatch.NODE_CAPTURE.value}
    fresh = decide_one(**timeout, **NEW_POD)
    assert fresh["cause"] == Cause.NOT_READY
    serving = decide_one(**timeout, **NEW_POD, pod_served_before=True)
    assert serving["cause"] != Cause.NOT_READY


@pytest.mark.parametrize(
    ("context", "kw", "cause", "min_conf"),
    [
        (CLUSTER, {"no_endpoints_recently": True}, Cause.NO_ENDPOINTS, 0.8),
        (
            CLUSTER,
            {**LEAVING_POD, "pod_method": "node-capture", "no_endpoints_recently": True},
            Cause.ENDPOINT_LAG,
            0.9,
        ),
        (
            CLUSTER,
            {**LEAVING_POD, "pod_method": "node-capture", "conn_outcome": "refused"},
            Cause.ENDPOINT_LAG,
            0.9,
        ),
        (CLUSTER, {**LEAVING_POD, "pod_method": "inferred"}, Cause.ENDPOINT_LAG, 0.5),
        (
            CLUSTER,
            {**LEAVING_POD, "pod_method": "node-capture", "error_kind": "connect-timeout"},
            Cause.ENDPOINT_LAG,
            0.9,
        ),
        (CLUSTER, {**NEW_POD, "pod_method": "node-capture"}, Cause.NOT_READY, 0.8),
        (
            CLUSTER,
            {
                "pod": "new",
                "pod_state": "starting",
                "pod_method": "header",
                "error_kind": "http-5xx",
            },
            Cause.NOT_READY,
            0.8,
        ),
        (
            CLUSTER,
            {**NEW_POD, "pod_method": "header", "error_kind": "http-5xx"},
            Cause.NOT_READY,
            0.8,
        ),
        (
            LOCAL,
            {"error_kind": "connect-timeout", "nodes_lacking_local": 1, "end_ns": 102 * S},
            Cause.LB_LAG,
            0.6,
        ),
        (
            CLUSTER,
            {
                "error_kind": "reset",
                "conn_reused": True,
                "server_close_ms": 12.0,
                "fin_then_rst": True,
                "idle_ms": 900.0,
                "pod": "old",
                "pod_method": "header",
                "pod_state": "terminating",
                "ms_since_deletion": 10.0,
            },
            Cause.KEEPALIVE_RACE,
            0.9,
        ),
        (
            CLUSTER,
            {
                "error_kind": "eof",
                "conn_reused": True,
                "server_close_ms": 300.0,
                "pod": "old",
                "pod_method": "header",
                "pod_state": "ready",
                "ms_since_deletion": -200.0,
                "pod_deleted_by_end": True,
                "end_ns": 100 * S + 300 * MS,
            },
            Cause.INFLIGHT_CUT,
            0.9,
        ),
        (
            CLUSTER,
            {"error_kind": "read-timeout", "capacity_short_recently": True, "end_ns": 101 * S},
            Cause.OVERLOAD,
            0.6,
        ),
        (CLUSTER, {"error_kind": "read-timeout"}, Cause.UNEXPLAINED, 0.0),
        (CLUSTER, {"error_kind": "refused"}, Cause.UNEXPLAINED, 0.0),
    ],
)
def test_each_rule_decides_its_cause(
    context: ServiceContext, kw: dict[str, Any], cause: Cause, min_conf: float
) -> None:
    row = decide_one(context, **kw)
    assert row["cause"] == cause.value, row["evidence"]
    assert row["confidence"] >= min_conf
    assert row["evidence"]


def test_lb_lag_needs_local_policy_and_a_node_without_local_endpoint() -> None:
    kw = {"error_kind": "connect-timeout", "nodes_lacking_local": 1}
    assert decide_one(CLUSTER, **kw)["cause"] == Cause.UNEXPLAINED.value
    assert decide_one(LOCAL, **{**kw, "nodes_lacking_local": 0})["cause"] == Cause.UNEXPLAINED.value


def test_a_pod_seen_on_the_wire_beats_lb_lag() -> None:
    kw = {"error_kind": "connect-timeout", "nodes_lacking_local": 1, "pod_method": "node-capture"}
    assert decide_one(LOCAL, **kw, **LEAVING_POD)["cause"] == Cause.ENDPOINT_LAG.value


def test_keepalive_race_without_packets_falls_back_to_timing_with_less_confidence() -> None:
    kw = {"error_kind": "eof", "conn_reused": True, "has_packets": False, "idle_ms": 500.0}
    row = decide_one(**kw)
    assert row["cause"] == Cause.KEEPALIVE_RACE.value
    assert row["confidence"] < 0.9
    slow = decide_one(**{**kw, "end_ns": 100 * S + 200 * MS})
    assert slow["cause"] == Cause.UNEXPLAINED.value


def test_decide_is_vectorized_over_many_rows_and_keeps_order() -> None:
    rows = [evidence(request_id=i, no_endpoints_recently=i % 2 == 0) for i in range(1000)]
    frame = pd.DataFrame(rows)
    for col in ("ms_since_deletion", "ms_since_ready", "conn_age_ms", "server_close_ms", "idle_ms"):
        frame[col] = frame[col].astype("Float64")
    out = decide(frame, CLUSTER)
    assert out["request_id"].tolist() == list(range(1000))
    expected = [
        Cause.NO_ENDPOINTS.value if i % 2 == 0 else Cause.UNEXPLAINED.value for i in range(1000)
    ]
    assert out["cause"].tolist() == expected


def test_cluster_state_counts_ready_endpoints_and_nodes_without_local_ones() -> None:
    def ep(pod: str, node: str, ready: bool, from_s: float, to_s: float | None) -> dict[str, Any]:
        return {
            "service": "web",
            "slice": "web-1",
            "ip": f"10.244.0.{len(pod)}",
            "pod": pod,
            "node": node,
            "ready": ready,
            "serving": ready,
            "terminating": not ready,
            "from_ns": int(from_s * S),
            "to_ns": pd.NA if to_s is None else int(to_s * S),
        }

    endpoints = make_frame(
        ENDPOINTS,
        [
            ep("a", "node-1", True, 0, 50),
            ep("a", "node-1", False, 50, 60),
            ep("bb", "node-2", True, 0, None),
            ep("ccc", "node-2", True, 55, None),
        ],
    )
    times = pd.Series([10 * S, 52 * S, 70 * S])
    state = attribution.cluster_state_at(times, endpoints, LOCAL)
    assert state["ready_endpoints"].tolist() == [2, 1, 2]
    assert not state["no_endpoints_recently"].any()
    alone = endpoints[endpoints["pod"] == "a"]
    times = pd.Series([10 * S, 49 * S, 52 * S, 54.9 * S, 56 * S])
    recent = attribution.cluster_state_at(times, alone, LOCAL)["no_endpoints_recently"]
    # not ready from 50 s; "recent" means within the 5 s a node's rules may lag
    assert recent.tolist() == [False, False, True, True, True]
    back = make_frame(
        ENDPOINTS, [ep("a", "node-1", True, 0, 50), ep("a", "node-1", True, 51, None)]
    )
    recent = attribution.cluster_state_at(pd.Series([55 * S, 57 * S]), back, LOCAL)
    assert recent["no_endpoints_recently"].tolist() == [True, False]
    assert state["nodes_lacking_local"].tolist() == [0, 1, 1]


def test_race_and_cut_are_told_apart_by_the_close_sequence_not_just_its_timing() -> None:
    reused_cut = {"error_kind": "reset", "conn_reused": True, "pod": "old", "pod_method": "header"}
    # a FIN answered by a RST within the crossing window: the request hit a closed socket
    race = decide_one(**reused_cut, server_close_ms=3.0, fin_then_rst=True)
    assert race["cause"] == Cause.KEEPALIVE_RACE.value
    # a close 3 ms into the request without that sequence: the request was in flight
    cut = decide_one(**reused_cut, server_close_ms=3.0, pod_deleted_by_end=True)
    assert cut["cause"] == Cause.INFLIGHT_CUT.value
    # a FIN then RST long after the request started is not a race either
    late = decide_one(
        **reused_cut, server_close_ms=400.0, fin_then_rst=True, pod_deleted_by_end=True
    )
    assert late["cause"] == Cause.INFLIGHT_CUT.value


def test_a_deletion_the_watch_reported_just_after_the_request_still_counts() -> None:
    row = decide_one(
        pod="old", pod_method="node-capture", pod_state="ready", ms_since_deletion=-200.0
    )
    assert row["cause"] == Cause.ENDPOINT_LAG.value


def test_previous_request_end_is_the_same_connections_previous_request() -> None:
    from analyzer.schema import REQUESTS
    from tests.analyzer.test_joins import request

    reqs = make_frame(
        REQUESTS,
        [
            request(1, 10.0, conn_id=1, conn_seq=1, end_ns=11 * S),
            request(2, 10.5, conn_id=2, conn_seq=1, end_ns=12 * S),
            request(3, 13.0, conn_id=1, conn_seq=2, end_ns=14 * S),
            request(4, 15.0, conn_id=1, conn_seq=3, end_ns=16 * S),
        ],
    ).sample(frac=1.0, random_state=3)  # order must not matter
    prev = attribution.previous_request_end(reqs, reqs.index)
    by_id = dict(zip(reqs["request_id"], prev, strict=True))
    assert by_id[1] is pd.NA and by_id[2] is pd.NA
    assert by_id[3] == 11 * S and by_id[4] == 14 * S


def test_pod_target_load_balancer_lag_is_the_lbs() -> None:
    """With an IP-mode LB kube-proxy is not on the path: a SYN refused by a leaving Pod was sent
    there by the LB, which had not deregistered it yet."""
    refused = {"error_kind": "refused", "pod_method": PodMatch.NODE_CAPTURE.value, **LEAVING_POD}
    assert decide_one(**refused)["cause"] == Cause.ENDPOINT_LAG
    pod_lb = ServiceContext(desired_replicas=3, local_policy=False, nodes=(), lb_targets_pods=True)
    decided = decide_one(pod_lb, **refused)
    assert decided["cause"] == Cause.LB_LAG
    assert "targets Pods" in decided["evidence"]
