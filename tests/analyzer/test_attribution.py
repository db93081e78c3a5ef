"""Attribution rules, one by one, on hand-made evidence (docs/causes.md lists the same rules)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analyzer import attribution
from analyzer.attribution import ServiceContext, decide
from analyzer.schema import (
    CONNECTIONS,
    ENDPOINTS,
    FAILURES,
    POD_STATES,
    PODS,
    REQUESTS,
    Cause,
    PodMatch,
    check_frame,
)
from tests.analyzer.test_joins import conn, make_frame, pod, request

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
        "bare_rst": False,
        "aborted_busy": False,
        "server_idle_close_ms": np.nan,
        "nodes_lacking_local": 0,
        "no_endpoints_possibly": False,  # receive times: possibly = surely
        "nodes_possibly_lacking_local": 0,
        "pod_served_after": False,
        "warmup_limit_ms": np.nan,
        "in_restart": False,
        "pod_unable": False,
        "killed_at_grace": False,
        "last_exit_code": pd.NA,
        "congested": False,
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
NEW_POD = {"pod": "new", "pod_state": "ready", "ms_since_ready": 400.0, "pod_served_after": True}


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
    # not ready from 50 s; "recent" means within the rules lag after endpoints came back
    assert recent.tolist() == [False, False, True, True, True]
    back = make_frame(
        ENDPOINTS, [ep("a", "node-1", True, 0, 50), ep("a", "node-1", True, 51, None)]
    )
    recent = attribution.cluster_state_at(pd.Series([51.5 * S, 53 * S]), back, LOCAL)
    assert recent["no_endpoints_recently"].tolist() == [True, False]
    slow_rules = replace(LOCAL, rules_lag_ms=5_000.0)  # a run that measured 5 s propagation
    recent = attribution.cluster_state_at(pd.Series([55 * S, 57 * S]), back, slow_rules)
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


# --------------------------------------------------------------------------------------------
# docs/causes.md and the code list the same rules in the same order

DOCS = Path(__file__).resolve().parents[2] / "docs" / "causes.md"
_DOC_RULE = re.compile(r"^\| (\d+) \| `([\w-]+)` \| `([\w-]+)` \| .* \| ([0-9.]+) \|$")


def test_the_documented_rule_table_is_the_code_rule_list() -> None:
    documented = [
        (int(m[1]), m[2], m[3], float(m[4]))
        for m in map(_DOC_RULE.match, DOCS.read_text(encoding="utf-8").splitlines())
        if m
    ]
    assert [n for n, *_ in documented] == list(range(1, len(documented) + 1))
    frame = pd.DataFrame([evidence()])
    coded = [(r.template, r.cause.value, r.confidence) for r in attribution.rules(frame, CLUSTER)]
    assert [(t, c, conf) for _, t, c, conf in documented] == coded


# --------------------------------------------------------------------------------------------
# the mechanisms: each rule on hand-made evidence

DIRECT = {"pod": "web-1", "pod_method": PodMatch.NODE_CAPTURE.value, "pod_state": "ready"}


def test_a_refusal_or_cut_while_the_container_restarts_is_container_restart() -> None:
    for kind in ("refused", "reset", "http-5xx"):
        row = decide_one(**DIRECT, error_kind=kind, in_restart=True, pod_served_before=True)
        assert row["cause"] == Cause.CONTAINER_RESTART.value, row["evidence"]
        assert "restarting" in row["evidence"]
    # without the restart the same refusal from a serving Pod is not explained by it
    assert decide_one(**DIRECT, pod_served_before=True)["cause"] == Cause.UNEXPLAINED.value


def test_a_cut_when_the_grace_period_ran_out_is_killed_at_grace_not_inflight_cut() -> None:
    cut = {
        **DIRECT,
        "pod_state": "terminating",
        "error_kind": "reset",
        "ms_since_deletion": 29_000.0,
        "pod_deleted_by_end": True,
        "server_close_ms": 1_200.0,
        "last_exit_code": 137,
    }
    assert decide_one(**cut, killed_at_grace=True)["cause"] == Cause.KILLED_AT_GRACE.value
    assert decide_one(**cut)["cause"] == Cause.INFLIGHT_CUT.value


def test_a_warm_up_longer_than_any_constant_is_not_ready_for_503_refusal_and_reset() -> None:
    warming = {**DIRECT, "ms_since_ready": 25_000.0, "pod_served_after": True}
    for kind in ("http-5xx", "refused", "reset"):
        row = decide_one(**warming, error_kind=kind, server_close_ms=2.0)
        assert row["cause"] == Cause.NOT_READY.value, (kind, row["evidence"])
    # the run's longest observed warm-up also covers a Pod that never got to serve
    never = {**DIRECT, "ms_since_ready": 25_000.0, "error_kind": "http-5xx"}
    assert decide_one(**never, warmup_limit_ms=30_000.0)["cause"] == Cause.NOT_READY.value
    assert decide_one(**never, warmup_limit_ms=20_000.0)["cause"] != Cause.NOT_READY.value


def test_a_readiness_flap_is_not_ready_even_while_capacity_is_short() -> None:
    flap = {**DIRECT, "pod_state": "unready", "pod_served_before": True, "pod_unable": True}
    for kind in ("http-5xx", "refused"):
        row = decide_one(**flap, error_kind=kind, capacity_short_recently=True)
        assert row["cause"] == Cause.NOT_READY.value, row["evidence"]
        assert "readiness flip" in row["evidence"]


def test_slow_pods_with_every_endpoint_present_are_overload_even_if_deleted_later() -> None:
    slow = {"error_kind": "read-timeout", "congested": True, "end_ns": 105 * S}
    assert decide_one(**slow)["cause"] == Cause.OVERLOAD.value
    assert decide_one(**slow, **DIRECT, pod_deleted_by_end=True)["cause"] == Cause.OVERLOAD.value
    assert decide_one(**{**slow, "congested": False})["cause"] == Cause.UNEXPLAINED.value


def test_a_bare_rst_race_needs_an_idle_like_the_servers_idle_close() -> None:
    race = {
        **DIRECT,
        "error_kind": "reset",
        "conn_reused": True,
        "bare_rst": True,
        "server_close_ms": 0.4,
        "server_idle_close_ms": 5_000.0,
    }
    assert decide_one(**race, idle_ms=4_990.0)["cause"] == Cause.KEEPALIVE_RACE.value
    # busy connection: the RST cut a request in flight
    assert decide_one(**race, idle_ms=20.0)["cause"] == Cause.INFLIGHT_CUT.value
    # unknown idle close (none captured): never a race by RST on a live Pod ...
    unknown = {**race, "server_idle_close_ms": np.nan, "idle_ms": 4_990.0}
    assert decide_one(**unknown)["cause"] == Cause.INFLIGHT_CUT.value
    # ... but a Pod shutting down aborts its idle connections: crossing that abort is a race
    aborting = {**unknown, "pod_deleted_by_end": True, "pod_state": "terminating"}
    assert decide_one(**aborting)["cause"] == Cause.KEEPALIVE_RACE.value
    late = {**aborting, "server_close_ms": 300.0}  # the request had long reached the server
    assert decide_one(**late)["cause"] == Cause.INFLIGHT_CUT.value
    # an app that reset busy connections at that same moment was exiting, not closing idle ones
    assert decide_one(**aborting, aborted_busy=True)["cause"] == Cause.INFLIGHT_CUT.value


def test_a_node_lagging_far_beyond_thirty_seconds_is_still_endpoint_lag() -> None:
    row = decide_one(**{**LEAVING_POD, "ms_since_deletion": 45_000.0}, pod_method="node-capture")
    assert row["cause"] == Cause.ENDPOINT_LAG.value
    inferred = decide_one(**{**LEAVING_POD, "ms_since_deletion": 45_000.0}, pod_method="inferred")
    assert inferred["cause"] == Cause.ENDPOINT_LAG.value
    # ... unless the SYN went unanswered while too few Pods queued: a dropped SYN is overload
    queued = decide_one(
        **{**LEAVING_POD, "ms_since_deletion": 45_000.0},
        pod_method="inferred",
        error_kind="connect-timeout",
        capacity_short_recently=True,
    )
    assert queued["cause"] == Cause.OVERLOAD.value


# --------------------------------------------------------------------------------------------
# the facts behind them, from the pod state intervals and the run's own timings


def _intervals(*rows: dict[str, Any]) -> pd.DataFrame:
    filled = []
    for r in rows:
        row = {"uid": r["pod"], "node": "node-1", "ready": r["state"] == "ready"}
        row.update(r)
        row["from_ns"] = int(row["from_ns"] * S)
        for col in ("to_ns", "last_exit_ns"):
            if col in row:
                row[col] = int(row[col] * S)
        filled.append(row)
    return make_frame(POD_STATES, filled)


def _failed(rid: int, start_s: float, kind: str, **kw: Any) -> dict[str, Any]:
    return request(rid, start_s, error_kind=kind, pod=pd.NA, **kw)


def _facts(
    reqs: list[dict[str, Any]],
    pod_intervals: pd.DataFrame,
    pods: pd.DataFrame | None = None,
    context: ServiceContext = CLUSTER,
) -> pd.DataFrame:
    frame = make_frame(REQUESTS, reqs)
    joined = frame.assign(
        conn_key=pd.array([pd.NA] * len(frame), dtype="Int64"),
        pod_matched=frame["pod"].fillna("web-1").astype("string"),
        pod_method=PodMatch.NODE_CAPTURE.value,
    )
    pods = pods if pods is not None else make_frame(PODS, [pod("web-1", "10.1.0.5", 0.0)])
    features = attribution.failure_features(
        joined,
        CONNECTIONS.empty(),
        pods,
        ENDPOINTS.empty(),
        context,
        False,
        None,
        pod_intervals,
    )
    return features.set_index("request_id")


def test_a_refusal_before_the_watch_showed_the_exit_is_in_the_restart_episode() -> None:
    """The container died at ~11 s (the watch saw it at 12 s, finishedAt says 11 s): a refusal
    at 11.5 s is in the episode; one at 9 s (before the exit) and one after Ready again are not."""
    iv = _intervals(
        {"pod": "web-1", "state": "ready", "from_ns": 1, "to_ns": 12},
        {
            "pod": "web-1",
            "state": "restarting",
            "from_ns": 12,
            "to_ns": 15,
            "restart_count": 1,
            "last_exit_code": 137,
            "last_exit_ns": 11,
        },
        {"pod": "web-1", "state": "ready", "from_ns": 15, "restart_count": 1, "last_exit_ns": 11},
    )
    reqs = [request(0, 2.0)] + [
        _failed(i, t, "refused") for i, t in ((1, 9.0), (2, 11.5), (3, 14.0), (4, 16.0))
    ]
    facts = _facts(reqs, iv)
    assert facts["in_restart"].to_dict() == {1: False, 2: True, 3: True, 4: False}
    assert facts.loc[2, "pod_state"] == "ready" and facts.loc[3, "pod_state"] == "restarting"
    decided = decide(facts.reset_index(), CLUSTER).set_index("request_id")
    assert decided.loc[2, "cause"] == Cause.CONTAINER_RESTART.value


def test_a_pod_failing_before_the_watch_showed_it_not_ready_could_not_serve() -> None:
    """Refusals from 6 s, NotReady seen at 7 s: with no new connection served in between, the
    app was already failing while the probe caught up. Reused connections still served."""
    iv = _intervals(
        {"pod": "web-1", "state": "ready", "from_ns": 1, "to_ns": 7},
        {"pod": "web-1", "state": "unready", "from_ns": 7, "to_ns": 11},
        {"pod": "web-1", "state": "ready", "from_ns": 11},
    )
    reqs = [
        request(0, 2.0, pod="web-1"),
        request(1, 6.5, pod="web-1", conn_new=False, conn_seq=2, conn_id=0),
        _failed(2, 6.2, "refused"),
        _failed(3, 8.0, "http-5xx"),
        _failed(4, 4.0, "refused"),  # a new connection was served at 5 s: not failing yet
        request(5, 5.0, pod="web-1"),
        _failed(6, 12.0, "refused"),
    ]
    facts = _facts(reqs, iv)
    assert facts["pod_unable"].to_dict() == {2: True, 3: True, 4: False, 6: False}
    probe = replace(CLUSTER, readiness_detect_ms=500.0)  # the probe flips within 0.5 s
    assert not _facts(reqs, iv, context=probe).loc[2, "pod_unable"]


def test_killed_at_grace_needs_the_cut_at_deletion_plus_grace_and_a_sigkill_exit() -> None:
    pods = make_frame(PODS, [pod("web-1", "10.1.0.5", 0.0, deletion_ns=10.0)])
    pods["deletion_grace_s"] = pd.array([5], dtype="Int64")

    def facts(exit_code: int, gone_s: float = 15.2) -> pd.DataFrame:
        iv = _intervals(
            {"pod": "web-1", "state": "ready", "from_ns": 1, "to_ns": 10},
            {"pod": "web-1", "state": "terminating", "from_ns": 10, "to_ns": gone_s},
            {
                "pod": "web-1",
                "state": "gone",
                "from_ns": gone_s,
                "last_exit_code": exit_code,
                "deletion_grace_s": 5,
            },
        )
        cut_at_kill = _failed(1, 14.0, "reset", end_ns=int(15.01 * S))
        cut_early = _failed(2, 11.0, "reset", end_ns=int(11.2 * S))
        started_after = _failed(3, 15.6, "reset", end_ns=int(15.7 * S))
        # a preStop hook used the grace up: the kubelet still gives the container 2 s more
        cut_late = _failed(4, 16.0, "reset", end_ns=int(16.9 * S))
        reqs = [request(0, 2.0), cut_at_kill, cut_early, started_after, cut_late]
        return _facts(reqs, iv, pods)

    assert facts(137)["killed_at_grace"].to_dict() == {1: True, 2: False, 3: False, 4: False}
    extended = facts(137, gone_s=16.95)["killed_at_grace"].to_dict()
    assert extended == {1: True, 2: False, 3: True, 4: True}
    assert not facts(143)["killed_at_grace"].any()  # exited on SIGTERM by itself


def test_a_node_that_never_had_a_pod_never_lacks_a_local_endpoint() -> None:
    def ep(node: str, from_s: float, to_s: float | None) -> dict[str, Any]:
        return {
            "service": "web",
            "slice": "web-1",
            "ip": f"10.1.0.{len(node)}",
            "pod": "a",
            "node": node,
            "ready": True,
            "from_ns": int(from_s * S),
            "to_ns": pd.NA if to_s is None else int(to_s * S),
        }

    three = ServiceContext(1, True, ("node-1", "node-2", "node-3"))
    endpoints = make_frame(ENDPOINTS, [ep("node-1", 0, 50), ep("node-2", 48, None)])
    times = pd.Series([10 * S, 55 * S, 200 * S])
    lacking = attribution.cluster_state_at(times, endpoints, three)["nodes_lacking_local"]
    assert lacking.tolist() == [0, 1, 1]  # node-3 never counts; node-1 from 50 s
    health_checked = replace(three, lb_unhealthy_after_ms=30_000.0)
    lacking = attribution.cluster_state_at(times, endpoints, health_checked)["nodes_lacking_local"]
    assert lacking.tolist() == [0, 1, 0]  # the LB stopped sending to node-1 by 80 s


def test_congestion_with_every_endpoint_present_is_found_without_a_shortage() -> None:
    reqs = [request(i, 10 + i * 0.1) for i in range(30)]
    reqs += [
        request(100 + i, 20 + i * 0.1, end_ns=int((20 + i * 0.1 + 0.5) * S)) for i in range(10)
    ]
    frame = make_frame(REQUESTS, reqs)
    congested, after_shortage = attribution.congested_seconds(frame, ENDPOINTS.empty(), CLUSTER)
    assert congested.tolist() == [20] and after_shortage.tolist() == []


def test_the_servers_idle_close_is_measured_from_the_connections_it_closed() -> None:
    rows = [
        conn(
            i,
            40000 + i,
            1.0,
            9.0,
            outcome="closed-by-server",
            bytes_s2c=100,
            last_s2c_data_ns=int(2.0 * S),
            server_fin_ns=int((2.0 + 5.0 + i * 0.01) * S),
        )
        for i in range(5)
    ]
    rows.append(conn(9, 40009, 1.0, 9.0, bytes_s2c=100, last_s2c_data_ns=int(2.0 * S)))
    idle = attribution.server_idle_close_ms(make_frame(CONNECTIONS, rows))
    assert 5_000.0 <= idle <= 5_040.0
    assert np.isnan(attribution.server_idle_close_ms(CONNECTIONS.empty()))


def test_resets_at_the_moment_an_app_aborted_busy_connections_are_not_idle_races() -> None:
    def cut(rid: int, start_ms: float, close_ms: float, pod: str = "web-1") -> dict[str, Any]:
        return evidence(
            request_id=rid,
            start_ns=100 * S + int(start_ms * MS),
            error_kind="reset",
            pod=pod,
            bare_rst=True,
            server_close_ms=close_ms,
        )

    frame = pd.DataFrame(
        [
            cut(1, 0.0, 300.0),  # busy: reset 300 ms into its request, at 100.3 s
            cut(2, 290.0, 10.0),  # reset at 100.3 s too, 10 ms into its request
            cut(3, 290.0, 10.0, pod="web-2"),  # another Pod: only idle connections reset
            cut(4, 5_000.0, 10.0),  # the same Pod, much later
        ]
    )
    frame["server_close_ms"] = frame["server_close_ms"].astype("Float64")
    assert attribution._aborted_busy_connections(frame).tolist() == [False, True, False, False]


def test_a_node_lacks_its_new_local_endpoint_until_its_rules_catch_up() -> None:
    """Under Local policy a node sees the slices one rules lag late both ways: it still sends
    to the old Pod just after the loss, and drops traffic until it programs the new one."""

    def ep(pod_name: str, ip: str, from_s: float, to_s: float | None) -> dict[str, Any]:
        return {
            "service": "web",
            "slice": "web-1",
            "ip": ip,
            "pod": pod_name,
            "node": "node-1",
            "ready": True,
            "from_ns": int(from_s * S),
            "to_ns": pd.NA if to_s is None else int(to_s * S),
        }

    context = ServiceContext(1, True, ("node-1",), rules_lag_by_node_ms={"node-1": 500.0})
    endpoints = make_frame(
        ENDPOINTS, [ep("old", "10.1.0.5", 0, 10), ep("new", "10.1.0.6", 12, None)]
    )
    times = pd.Series([int(t * S) for t in (10.3, 11.0, 12.3, 12.6)])
    lacking = attribution.cluster_state_at(times, endpoints, context)["nodes_lacking_local"]
    assert lacking.tolist() == [0, 1, 1, 0]


def test_a_new_local_endpoint_only_possibly_counts_within_the_measured_lags_spread() -> None:
    """A node's measured lag is the last SYN it forwarded by its old rules: they changed up to
    one SYN interval later, so just past that lag the new local endpoint may not be in them yet.
    An unanswered SYN there is possibly lb-lag, ahead of an inferred Pod's endpoint-lag."""
    endpoints = make_frame(
        ENDPOINTS,
        [
            {"service": "web", "slice": "web-1", "ip": ip, "pod": name, "node": "node-1",
             "ready": True, "from_ns": int(start * S), "to_ns": end}
            for name, ip, start, end in (("old", "10.1.0.5", 0, 10 * S), ("new", "10.1.0.6", 12, pd.NA))
        ],
    )  # fmt: skip
    context = ServiceContext(1, True, ("node-1",), rules_lag_by_node_ms={"node-1": 100.0})
    times = pd.Series([int(t * S) for t in (12.05, 12.12, 12.2)])
    spread = replace(context, rules_lag_spread_ms=50.0)
    state = attribution.cluster_state_at(times, endpoints, spread)
    assert state["nodes_lacking_local"].tolist() == [1, 0, 0]
    assert state["nodes_possibly_lacking_local"].tolist() == [1, 1, 0]
    # a node whose lag was not measured takes the run's, which already holds one SYN interval
    unmeasured = replace(spread, rules_lag_by_node_ms={}, rules_lag_ms=100.0)
    state = attribution.cluster_state_at(times, endpoints, unmeasured)
    assert state["nodes_possibly_lacking_local"].tolist() == state["nodes_lacking_local"].tolist()
    row = decide_one(
        spread, error_kind="connect-timeout", nodes_possibly_lacking_local=1,
        pod_method="inferred", **LEAVING_POD,
    )  # fmt: skip
    assert row["cause"] == Cause.LB_LAG.value and row["confidence"] == 0.5
    assert "within one SYN interval (50 ms) past the node's measured rules lag" in row["evidence"]
