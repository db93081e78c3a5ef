"""Joins on hand-made frames: requests ↔ client connections ↔ node connections ↔ Pods."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analyzer import joins
from analyzer.schema import (
    CONNECTIONS,
    POD_STATES,
    PODS,
    REQUESTS,
    ErrorKind,
    PodMatch,
    TableSchema,
)

S = 1_000_000_000
MS = 1_000_000


def make_frame(schema: TableSchema, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A frame of ``schema`` from partial rows: absent columns get NA, or a zero-ish default."""
    defaults = {"int64": 0, "float64": 0.0, "bool": False, "string": ""}
    data = {}
    for col in schema.columns:
        fill = defaults[col.dtype if col.dtype in defaults else "int64"]
        if col.nullable:
            fill = float("nan") if col.dtype == "float64" else pd.NA
        data[col.name] = pd.Series([r.get(col.name, fill) for r in rows], dtype=col.dtype)
    extra = {k for r in rows for k in r} - set(schema.names)
    for name in sorted(extra):
        data[name] = pd.Series([r.get(name) for r in rows])
    return pd.DataFrame(data)


def request(rid: int, start_s: float, **kw: Any) -> dict[str, Any]:
    start = int(start_s * S)
    row = {
        "request_id": rid,
        "user_kind": "keepalive",
        "scheduled_ns": start,
        "start_ns": start,
        "end_ns": start + 5 * MS,
        "local_ip": "10.0.0.2",
        "local_port": 40000 + rid,
        "remote_ip": "203.0.113.10",
        "remote_port": 80,
        "conn_id": rid,
        "conn_new": True,
        "conn_seq": 1,
        "method": "GET",
        "path": "/",
        "error_kind": "ok",
    }
    row.update(kw)
    return row


def conn(key: int, port: int, syn_s: float, end_s: float, **kw: Any) -> dict[str, Any]:
    row = {
        "conn_key": key,
        "capture": "client",
        "client_ip": "10.0.0.2",
        "client_port": port,
        "server_ip": "203.0.113.10",
        "server_port": 80,
        "syn_ns": int(syn_s * S),
        "syn_count": 1,
        "end_ns": int(end_s * S),
        "outcome": "closed-by-client",
    }
    row.update(kw)
    return row


def pod(name: str, ip: str, created_s: float, **times_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pod": name,
        "namespace": "default",
        "uid": name,
        "node": "node-1",
        "ip": ip,
        "created_ns": int(created_s * S),
    }
    row.update({k: int(v * S) for k, v in times_s.items()})
    return row


def test_request_joins_its_connection_by_port_and_time_and_reuse_inherits() -> None:
    # port 40001 is used twice: the second connection must not capture the first's requests
    reqs = make_frame(
        REQUESTS,
        [
            request(1, 10.0, local_port=40001, conn_id=7),
            request(2, 11.0, local_port=40001, conn_id=7, conn_new=False, conn_seq=2),
            request(3, 30.0, local_port=40001, conn_id=8),
            request(4, 31.0, local_port=40009, conn_id=9),  # never captured
        ],
    )
    conns = make_frame(
        CONNECTIONS,
        [conn(100, 40001, 10.0001, 12.0), conn(101, 40001, 30.0001, 31.0)],
    )
    keys = joins.request_connections(reqs, conns)
    assert keys.tolist() == [100, 100, 101, pd.NA]


def test_reused_request_follows_first_request_even_after_port_reuse() -> None:
    # the connection's second request starts after a later connection reused the port: the join
    # by conn_id keeps it on the connection its first request opened
    reqs = make_frame(
        REQUESTS,
        [
            request(1, 10.0, local_port=40001, conn_id=7),
            request(2, 20.5, local_port=40001, conn_id=7, conn_new=False, conn_seq=2),
        ],
    )
    conns = make_frame(CONNECTIONS, [conn(100, 40001, 10.0, 21.0), conn(101, 40001, 20.0, 20.2)])
    assert joins.request_connections(reqs, conns).tolist() == [100, 100]


def test_node_connection_matched_by_preserved_source_then_by_syn_time() -> None:
    client = make_frame(
        CONNECTIONS,
        [conn(1, 40001, 10.0, 11.0), conn(2, 40002, 20.0, 21.0), conn(3, 40003, 40.0, 41.0)],
    )
    node = make_frame(
        CONNECTIONS,
        [
            # source preserved (Local policy): matched by address and port, 1 s later (SYN retry)
            conn(10, 40001, 11.0, 11.5, capture="node-1", server_ip="10.244.1.5", server_port=8080),
            # SNAT: source rewritten to the node, matched by SYN time alone
            conn(
                11,
                61000,
                20.001,
                21.0,
                capture="node-2",
                client_ip="10.1.0.2",
                server_ip="10.244.2.5",
                server_port=8080,
            ),
            # far from any client SYN: no match
            conn(12, 61001, 45.0, 46.0, capture="node-2", client_ip="10.1.0.2"),
        ],
    )
    assert joins.node_connections_for(client, node).tolist() == [10, 11, pd.NA]


def test_pods_by_ip_respects_ip_recycling() -> None:
    pods = make_frame(
        PODS, [pod("old", "10.244.1.5", 0.0, deleted_ns=50.0), pod("new", "10.244.1.5", 60.0)]
    )
    ips = pd.Series(["10.244.1.5", "10.244.1.5", "10.9.9.9"])
    times = pd.Series([10 * S, 70 * S, 10 * S])
    assert joins.pods_by_ip(ips, times, pods).tolist() == ["old", "new", pd.NA]


def test_pod_states_over_a_lifecycle() -> None:
    pods = make_frame(
        PODS,
        [
            pod(
                "p",
                "10.244.1.5",
                10.0,
                started_ns=11.0,
                ready_ns=12.0,
                deletion_ns=20.0,
                terminated_ns=25.0,
                deleted_ns=26.0,
            )
        ],
    )
    times = pd.Series([s * S for s in (5.0, 10.5, 11.5, 15.0, 21.0, 30.0)])
    names = pd.Series(["p"] * 6)
    states = joins.pod_states(names, times, pods)
    assert states["pod_state"].tolist() == [
        "unknown",
        "pending",
        "starting",
        "ready",
        "terminating",
        "gone",
    ]
    assert states["ms_since_deletion"].iloc[4] == 1000.0
    assert states["ms_since_ready"].iloc[3] == 3000.0


def test_attach_pods_prefers_header_then_connection_header_then_node_then_inference() -> None:
    pods = make_frame(
        PODS,
        [
            pod("a", "10.244.1.5", 0.0, ready_ns=1.0, deletion_ns=50.0),
            pod("b", "10.244.1.6", 0.0, ready_ns=55.0),
        ],
    )
    reqs = make_frame(
        REQUESTS,
        [
            request(1, 40.0, pod="a", conn_id=1),
            request(2, 41.0, conn_id=1, conn_new=False, conn_seq=2, error_kind="eof"),
            request(3, 52.0, conn_id=3, error_kind="refused"),
            request(4, 52.0, conn_id=4, error_kind="refused"),
            request(5, 5.0, conn_id=5),  # a success naming no Pod is left alone
        ],
    )
    node_pod = pd.Series([pd.NA, pd.NA, "b", pd.NA, pd.NA], dtype="string")
    out = joins.attach_pods(reqs, node_pod, pods)
    assert out["pod"].tolist() == ["a", "a", "b", "a", pd.NA]
    assert out["pod_method"].tolist() == [
        PodMatch.HEADER,
        PodMatch.HEADER,
        PodMatch.NODE_CAPTURE,
        PodMatch.INFERRED,
        PodMatch.NONE,
    ]


def test_inference_points_5xx_at_the_newest_pod_and_connect_failures_at_the_leaving_one() -> None:
    pods = make_frame(
        PODS,
        [
            pod("old", "10.244.1.5", 0.0, ready_ns=1.0, deletion_ns=50.0),
            pod("new", "10.244.1.6", 45.0, started_ns=46.0, ready_ns=48.0),
        ],
    )
    failed = make_frame(
        REQUESTS,
        [
            request(1, 51.0, error_kind=ErrorKind.HTTP_5XX.value),
            request(2, 51.0, error_kind=ErrorKind.REFUSED.value),
            request(3, 49.0, error_kind=ErrorKind.REFUSED.value),
        ],
    )
    assert joins.infer_pods(failed, pods).tolist() == ["new", "old", "new"]


def test_transitions_seen_after_a_watch_gap_count_from_the_gap_start() -> None:
    gaps = np.array([[20.0 * S, 25.0 * S]])
    times = np.array([10.0 * S, 25.5 * S, 40.0 * S, np.nan])
    assert joins.earliest_possible(times, gaps).tolist()[:3] == [10.0 * S, 20.0 * S, 40.0 * S]
    pods = make_frame(PODS, [pod("p", "10.244.1.5", 25.5, started_ns=25.5, ready_ns=25.5)])
    names, at = pd.Series(["p"]), pd.Series([22 * S])
    assert joins.pod_states(names, at, pods)["pod_state"].tolist() == ["unknown"]
    assert joins.pod_states(names, at, pods, gaps)["pod_state"].tolist() == ["ready"]


def test_inference_skips_a_pod_that_was_demonstrably_accepting_new_connections() -> None:
    pods = make_frame(
        PODS,
        [
            pod("old", "10.244.1.5", 0.0, ready_ns=1.0, deletion_ns=50.0),
            pod("new", "10.244.1.6", 49.0, started_ns=49.5, ready_ns=49.6),
        ],
    )
    failed = make_frame(REQUESTS, [request(1, 51.0, error_kind=ErrorKind.REFUSED.value)])
    # the old Pod (in its preStop sleep) served new connections just before and after 51 s
    served = pd.DataFrame({"pod": ["old", "old"], "t": [int(50.6 * S), int(51.4 * S)]})
    assert joins.infer_pods(failed, pods, served).tolist() == ["new"]
    # served only before: it had stopped accepting, so it is the one that refused
    served_before = served.iloc[:1]
    assert joins.infer_pods(failed, pods, served_before).tolist() == ["old"]


def test_inference_looks_past_a_later_deleted_pod_still_in_its_prestop() -> None:
    """Seen on the local cluster (prestop-too-short): Pod A was deleted first and has stopped
    accepting; Pod B was deleted later and still serves through its preStop sleep. A refused
    connection then is A's, not the newest Pod's, although B is the last one deleted."""
    pods = make_frame(
        PODS,
        [
            pod("a", "10.244.1.5", 0.0, ready_ns=1.0, deletion_ns=40.0),
            pod("b", "10.244.1.6", 0.0, ready_ns=1.0, deletion_ns=50.0),
            pod("new", "10.244.1.7", 45.0, started_ns=45.5, ready_ns=46.0),
        ],
    )
    failed = make_frame(REQUESTS, [request(1, 51.0, error_kind=ErrorKind.REFUSED.value)])
    served = pd.DataFrame(
        {"pod": ["b", "b", "a"], "t": [int(50.6 * S), int(51.4 * S), int(50.2 * S)]}
    )
    assert joins.infer_pods(failed, pods, served).tolist() == ["a"]


def test_source_preserving_path_never_guesses_a_node_connection() -> None:
    """Local policy preserves the client's address: a client SYN with no exact node-side match
    was dropped before any Pod (lb-lag), and the SYN-time fallback must not tie it to another
    client's connection that happened to start within 5 ms."""
    client = make_frame(CONNECTIONS, [conn(1, 40001, 10.0, 11.0), conn(2, 40002, 20.0, 21.0)])
    node = make_frame(
        CONNECTIONS,
        [
            conn(10, 40001, 10.001, 11.0, capture="node-1", server_ip="10.244.1.5"),
            # another client connection's node side, 1 ms after the dropped SYN of port 40002
            conn(11, 40999, 20.001, 21.0, capture="node-2", server_ip="10.244.2.5"),
        ],
    )
    assert joins.node_connections_for(client, node).tolist() == [10, pd.NA]


def test_a_reply_only_view_and_an_answered_handshake_never_claim_an_unanswered_syn() -> None:
    """Masquerade with new ports, captured on ``-i any`` of a bridged node: each Pod reply is
    seen again on the bridge, de-NATed to the client's address and port. That reply-only copy
    must not claim the client connection by address and port, and the answered node connection
    left over must not be pinned, by SYN time, on a client SYN that no Pod answered."""
    client = make_frame(
        CONNECTIONS,
        [
            conn(1, 50722, 10.0, 11.0, outcome="syn-timeout"),  # its SYN went to a gone Pod
            conn(2, 50728, 10.0005, 10.01, synack_ns=int(10.0006 * S)),  # served
        ],
    )
    answered = {"synack_ns": int(10.0007 * S), "bytes_c2s": 89, "capture": "node-3"}
    node = make_frame(
        CONNECTIONS,
        [
            # the Pod-side view of connection 2, source rewritten to the node
            conn(
                10,
                24025,
                10.0006,
                10.01,
                client_ip="10.1.0.3",
                server_ip="10.244.2.5",
                server_port=8080,
                **answered,
            ),
            # the bridge's copy of its replies: the client's own address, no client packet
            conn(
                11,
                50728,
                10.0007,
                10.01,
                server_ip="10.244.2.5",
                server_port=8080,
                syn_count=0,
                capture="node-3",
            ),
        ],
    )
    assert joins.node_connections_for(client, node).tolist() == [pd.NA, 10]


def test_an_unanswered_syn_is_not_matched_by_port_to_a_connection_a_pod_answered() -> None:
    """Masquerade keeping the port: the client's SYN went to a Pod that had exited (no node-side
    trace: its netns is gone) and timed out; a later connection of another client on the same
    port, answered by the new Pod, must not be taken for it."""
    client = make_frame(CONNECTIONS, [conn(1, 41000, 10.0, 11.0, outcome="syn-timeout")])
    served = {"client_ip": "10.1.0.1", "server_ip": "10.244.1.9", "server_port": 8080}
    node = make_frame(
        CONNECTIONS,
        [conn(10, 41000, 11.2, 11.3, capture="node-1", synack_ns=int(11.2001 * S), **served)],
    )
    assert joins.node_connections_for(client, node).tolist() == [pd.NA]
    answered = make_frame(CONNECTIONS, [conn(1, 41000, 10.0, 11.0, synack_ns=int(10.0002 * S))])
    assert joins.node_connections_for(answered, node).tolist() == [10]  # same outcome: matched


def test_a_refused_syn_long_after_a_deletion_still_points_at_the_deleted_pod() -> None:
    """A node's rules may lag far beyond 30 s: a refused or unanswered SYN has no inference
    horizon, but a recent deletion and a new Pod not listening yet come first, and a cut (from
    a Pod that still runs) keeps the horizon."""
    pods = make_frame(
        PODS,
        [
            pod("old", "10.244.1.5", 0.0, ready_ns=1.0, deletion_ns=10.0),
            pod("new", "10.244.1.6", 49.0, started_ns=49.5, ready_ns=50.0),
        ],
    )
    failed = make_frame(
        REQUESTS,
        [
            request(1, 55.0, error_kind=ErrorKind.CONNECT_TIMEOUT.value),
            request(2, 55.0, error_kind=ErrorKind.RESET.value),
            request(3, 12.0, error_kind=ErrorKind.REFUSED.value),
        ],
    )
    served = pd.DataFrame({"pod": ["new", "new"], "t": [int(54.5 * S), int(55.5 * S)]})
    inferred = joins.infer_pods(failed, pods, served)
    assert inferred.iloc[0] == "old" and inferred.iloc[2] == "old"
    assert pd.isna(inferred.iloc[1])
    # a new Pod not accepting yet beats a Pod deleted long ago
    assert joins.infer_pods(failed.iloc[:1], pods).tolist() == ["new"]


def test_interval_state_is_the_state_at_that_moment_and_late_ones_count_from_the_gap() -> None:
    states = make_frame(
        POD_STATES,
        [
            {"pod": "p", "uid": "p", "state": "ready", "from_ns": 10 * S, "ready": True},
            {"pod": "p", "uid": "p", "state": "restarting", "from_ns": 30 * S, "from_late": True},
            {"pod": "p", "uid": "p", "state": "ready", "from_ns": 35 * S, "ready": True},
        ],
    )
    names = pd.Series(["p", "p", "p", "q", pd.NA], dtype="string")
    at = pd.Series([5 * S, 20 * S, 32 * S, 20 * S, 20 * S])
    assert joins.interval_state_at(names, at, states).tolist()[:3] == [pd.NA, "ready", "restarting"]
    gaps = np.array([[18.0 * S, 30.0 * S]])  # the restart may have happened from 18 s
    late = joins.interval_state_at(names, at, states, gaps)
    assert late.tolist()[1:3] == ["restarting", "restarting"]
    assert late.iloc[3:].isna().all()


def test_a_refusal_with_no_evidence_points_at_a_pod_down_without_deletion() -> None:
    pods = make_frame(
        PODS, [pod("a", "10.244.1.5", 0.0, ready_ns=1.0), pod("b", "10.244.1.6", 0.0)]
    )
    states = make_frame(
        POD_STATES,
        [
            {"pod": "a", "uid": "a", "state": "ready", "from_ns": 1 * S, "to_ns": 20 * S},
            {"pod": "a", "uid": "a", "state": "restarting", "from_ns": 20 * S, "to_ns": 25 * S},
            {"pod": "a", "uid": "a", "state": "ready", "from_ns": 25 * S},
        ],
    )
    failed = make_frame(
        REQUESTS,
        [request(1, 22.0, error_kind="refused"), request(2, 45.0, error_kind="refused")],
    )
    inferred = joins.infer_pods(failed, pods, None, states)
    assert inferred.iloc[0] == "a" and pd.isna(inferred.iloc[1])


def test_lookup_gives_the_same_values_by_arithmetic_hash_and_text() -> None:
    """Integer keys into consecutive integers (connection keys), into scattered integers and
    text keys all give ``table[key]`` with NA for missing and out-of-range keys, and keep the
    table's dtype."""
    keys = pd.Series([12, pd.NA, 10, 99, 11, 9, 12], dtype="Int64")
    consecutive = pd.Series([100, 110, 120], index=[10, 11, 12], dtype="int64")
    scattered = pd.Series([100, 110, 120], index=[10, 11, 7], dtype="int64")
    expect_consecutive = pd.Series([120, pd.NA, 100, pd.NA, 110, pd.NA, 120], dtype="Int64")
    expect_scattered = pd.Series([pd.NA, pd.NA, 100, pd.NA, 110, pd.NA, pd.NA], dtype="Int64")
    pd.testing.assert_series_equal(joins.lookup(keys, consecutive), expect_consecutive)
    pd.testing.assert_series_equal(joins.lookup(keys, scattered), expect_scattered)
    texts = pd.Series(["a", "b", "c"], index=[10, 11, 12], dtype="string")
    got = joins.lookup(keys, texts)
    assert got.dtype == "string"
    assert got.tolist() == ["c", pd.NA, "a", pd.NA, "b", pd.NA, "c"]
    names = pd.Series(["web-1", None, "web-0"], dtype="string")
    by_name = pd.Series([3, 4], index=["web-0", "web-1"], dtype="int64")
    assert joins.lookup(names, by_name).tolist() == [4, pd.NA, 3]
    plain = pd.Series([11, 12], dtype="int64")  # numpy integers, none missing: dtype kept
    pd.testing.assert_series_equal(
        joins.lookup(plain, consecutive), pd.Series([110, 120], dtype="int64")
    )


def test_first_pod_per_connection_is_what_a_groupby_first_gives() -> None:
    """Every request of a connection carries the connection's first Pod header, a connection
    whose responses named none gets NA, and a request without a connection keeps NA."""
    rng = np.random.default_rng(7)
    n = 5_000
    names = np.array(["web-0", "web-1", "web-2", None], dtype=object)
    header = pd.Series(pd.array(names[rng.integers(0, 4, n)], dtype="string"))
    conn_id = pd.Series(pd.array(rng.integers(0, 900, n), dtype="Int64"))
    conn_id[rng.random(n) < 0.05] = pd.NA
    expected = header.groupby(conn_id).transform("first")
    got = joins._first_per_connection(header, conn_id)
    pd.testing.assert_series_equal(got, expected)
    assert got[conn_id.isna()].isna().all()
