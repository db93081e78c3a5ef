"""The strict judge: one true cause per failed request from hand-made truth, the arithmetic of
precision / recall / confusion, and `rolltrace score`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from rolltrace.cli import app
from rolltrace.scoring import (
    UNDECIDED,
    TruthState,
    follow,
    judge,
    per_cause_scores,
    score_verdicts,
    truth_state,
)
from tests.analyzer.test_pipeline import minimal_run

S = 1_000_000_000
CLIENT, VIP, NODE1, NODE2 = "198.18.1.2", "198.18.2.1", "198.18.0.11", "198.18.0.12"
POD_A, POD_B, POD_C = "198.18.128.5", "198.18.129.5", "198.18.129.6"


class Truth:
    """truth.jsonl lines of a tiny cluster: two nodes, Pods that start, serve, stop, exit."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = [
            self.line(0, "lb", "lb-health-changed", target="node-1", address=f"{NODE1}:30080",
                      healthy=True),
            self.line(0, "lb", "lb-health-changed", target="node-2", address=f"{NODE2}:30080",
                      healthy=True),
        ]  # fmt: skip

    @staticmethod
    def line(t: float, source: str, event: str, **fields: Any) -> dict[str, Any]:
        return {"ts_ns": int(t * S), "source": source, "event": event, **fields}

    def kubelet(self, t: float, pod: str, event: str, ip: str, **fields: Any) -> Truth:
        node = "node-1" if ip == POD_A else "node-2"
        self.lines.append(
            self.line(t, f"kubelet/{node}", event, pod=pod, node=node, ip=ip, **fields)
        )
        return self

    def app(self, t: float, pod: str, event: str, **fields: Any) -> Truth:
        self.lines.append(self.line(t, f"demoapp/{pod}", event, pod=pod, **fields))
        return self

    def started(self, pod: str, ip: str, t: float, restart_count: int = 0) -> Truth:
        """A container run that listens and serves at once."""
        self.kubelet(t, pod, "process-started", ip, restart_count=restart_count)
        return self.app(t + 0.1, pod, "listening").app(t + 0.1, pod, "ready-to-serve")

    def rules(self, t: float, node: str, *pods: str) -> Truth:
        endpoints = [{"pod": p, "ip": "x"} for p in pods]
        self.lines.append(self.line(t, f"kube-proxy/{node}", "rules-programmed", node=node,
                                    service="default/web", endpoints=endpoints))  # fmt: skip
        return self

    def nat(self, t: float, sport: int, node_ip: str, pod_ip: str | None) -> Truth:
        """The LB's DNAT to a node and (unless the node dropped the SYN) the node's to a Pod;
        under Local policy the Pod sees the client's own address."""
        tuple_ = {"src": CLIENT, "sport": sport}
        self.lines.append(self.line(t, "conntrack", "nat-new", node=None, **tuple_, dst=VIP,
                                    dport=80, target_ip=node_ip, target_port=30080,
                                    peer_ip=CLIENT, peer_port=sport))  # fmt: skip
        if pod_ip is not None:
            node = "node-1" if node_ip == NODE1 else "node-2"
            self.lines.append(self.line(t, "conntrack", "nat-new", node=node, **tuple_,
                                        dst=node_ip, dport=30080, target_ip=pod_ip,
                                        target_port=8080, peer_ip=CLIENT, peer_port=sport))  # fmt: skip
        return self

    def state(self, tmp_path: Path) -> TruthState:
        path = tmp_path / "truth.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        return truth_state(path)


def request(rid: int, kind: str, start: float, sport: int, *, conn: int | None = None,
            end: float | None = None, pod: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "request_id": rid, "conn_id": rid if conn is None else conn,
        "start_ns": int(start * S), "end_ns": int((end or start + 0.01) * S),
        "local_ip": CLIENT, "local_port": sport, "remote_ip": VIP, "remote_port": 80,
        "error_kind": kind, "pod": pod,
    }  # fmt: skip


def verdicts(state: TruthState, *requests: dict[str, Any], said: str = "unexplained",
             extra: tuple[dict[str, Any], ...] = ()) -> pd.DataFrame:  # fmt: skip
    """Judge each of ``requests`` as failed, the analyzer saying ``said``; ``extra`` are other
    requests of the run (e.g. the one that opened a connection)."""
    frame = pd.DataFrame([*requests, *extra])
    failures = pd.DataFrame(
        [{"request_id": r["request_id"], "error_kind": r["error_kind"], "cause": said,
          "evidence": ""} for r in requests]
    )  # fmt: skip
    return judge(failures, frame, state)


def truth_of(state: TruthState, *requests: dict[str, Any], **kw: Any) -> list[str]:
    return list(verdicts(state, *requests, **kw)["truth"])


def deleted_pod_a(truth: Truth, sigkill: bool = False) -> Truth:
    """web-a is deleted at 10 s: preStop, SIGTERM at 11 s, stops accepting, exits at 12 s
    (or is SIGKILLed at 12 s)."""
    truth.kubelet(10, "web-a", "prestop-start", POD_A, cause="deletion")
    truth.kubelet(11, "web-a", "sigterm", POD_A, cause="deletion")
    truth.app(11.01, "web-a", "stopped-accepting")
    if sigkill:
        truth.kubelet(12, "web-a", "sigkill", POD_A, cause="deletion")
    else:
        truth.app(12, "web-a", "exited", exit_code=0)
    return truth.kubelet(12.01, "web-a", "exited", POD_A, exit_code=0)


def cluster() -> Truth:
    truth = Truth().started("web-a", POD_A, 1).started("web-b", POD_B, 1)
    return truth.rules(2, "node-1", "web-a", "web-b").rules(2, "node-2", "web-a", "web-b")


# -- connections that failed to open ---------------------------------------------------------
def test_refused_by_a_deleted_pod_that_stopped_accepting_is_endpoint_lag(tmp_path: Path) -> None:
    state = deleted_pod_a(cluster()).nat(11.5, 40001, NODE1, POD_A).state(tmp_path)
    assert truth_of(state, request(1, "refused", 11.5, 40001)) == ["endpoint-lag"]


def test_refused_before_the_first_listen_is_not_ready(tmp_path: Path) -> None:
    truth = cluster().kubelet(20, "web-c", "process-started", POD_A, restart_count=0)
    truth.app(21, "web-c", "listening").kubelet(40, "web-c", "exited", POD_A, exit_code=1)
    state = truth.nat(20.5, 40002, NODE1, POD_A).state(tmp_path)
    assert truth_of(state, request(1, "refused", 20.5, 40002)) == ["not-ready"]


def test_refused_while_a_crashed_container_restarts_is_container_restart(tmp_path: Path) -> None:
    truth = cluster().kubelet(5, "web-a", "exited", POD_A, exit_code=3)
    truth.kubelet(6, "web-a", "process-started", POD_A, restart_count=1)
    state = truth.nat(6.05, 40003, NODE1, POD_A).state(tmp_path)
    assert truth_of(state, request(1, "refused", 6.05, 40003)) == ["container-restart"]


def test_a_syn_the_node_dropped_is_lb_lag_or_no_endpoints(tmp_path: Path) -> None:
    truth = cluster().rules(30, "node-1").nat(31, 40004, NODE1, None)
    state = truth.state(tmp_path)
    assert truth_of(state, request(1, "connect-timeout", 31, 40004)) == [UNDECIDED]
    state.local_policy = True  # externalTrafficPolicy: Local, from run.json
    assert truth_of(state, request(1, "connect-timeout", 31, 40004)) == ["lb-lag"]
    empty = cluster().rules(30, "node-1").rules(30, "node-2").nat(31, 40004, NODE1, None)
    empty.lines.append(Truth.line(40, "conntrack", "nat-recorder-error", message="ENOBUFS"))
    lossy = truth_of(empty.state(tmp_path), request(1, "connect-timeout", 31, 40004))
    assert lossy == [UNDECIDED], "a lossy recorder proves no drop"
    empty.lines.pop()
    got = truth_of(empty.state(tmp_path), request(1, "connect-timeout", 31, 40004))
    assert got == ["no-endpoints"]


def test_a_connection_with_no_nat_record_is_undecided_not_agreement(tmp_path: Path) -> None:
    state = cluster().nat(5, 40005, NODE1, POD_A).state(tmp_path)
    frame = verdicts(state, request(1, "refused", 5, 49999), said="unexplained")
    assert list(frame["truth"]) == [UNDECIDED]
    score = score_verdicts("run", frame)
    assert (score.undecided, score.decided, score.agreed) == (1, 0, 0)
    assert score.confusion == {UNDECIDED: {"unexplained": 1}}


# -- connections that were cut ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("sigkill", "expected"), [(False, "inflight-cut"), (True, "killed-at-grace")]
)
def test_a_cut_by_the_deletion_exit_is_inflight_cut_or_killed_at_grace(
    tmp_path: Path, sigkill: bool, expected: str
) -> None:
    state = deleted_pod_a(cluster(), sigkill).nat(9, 40006, NODE1, POD_A).state(tmp_path)
    cut = request(2, "reset", 11.9, 40006, conn=7, end=12.0)
    opener = request(1, "ok", 9, 40006, conn=7)
    assert truth_of(state, cut, extra=(opener,)) == [expected]


def test_a_cut_by_an_undeleted_exit_is_container_restart(tmp_path: Path) -> None:
    truth = cluster().kubelet(14, "web-a", "sigterm", POD_A, cause="liveness")
    truth.kubelet(14.2, "web-a", "exited", POD_A, exit_code=None, signal=15)
    state = truth.nat(9, 40007, NODE1, POD_A).state(tmp_path)
    cut = request(2, "eof", 14.1, 40007, conn=7, end=14.2)
    assert truth_of(state, cut, extra=(request(1, "ok", 9, 40007, conn=7),)) == [
        "container-restart"
    ]


def test_a_cut_by_a_crash_is_container_restart(tmp_path: Path) -> None:
    truth = cluster().app(14, "web-a", "exited", exit_code=1, reason="crash")
    truth.kubelet(14.05, "web-a", "exited", POD_A, exit_code=1)
    state = truth.nat(9, 40015, NODE1, POD_A).state(tmp_path)
    cut = request(2, "reset", 13.9, 40015, conn=7, end=14.001)
    opener = request(1, "ok", 9, 40015, conn=7)
    assert truth_of(state, cut, extra=(opener,)) == ["container-restart"]


def test_the_apps_idle_close_of_this_peer_is_keepalive_race(tmp_path: Path) -> None:
    truth = cluster().nat(3, 40008, NODE1, POD_A)
    truth.app(8, "web-a", "idle-close", peer_ip=CLIENT, peer_port=40008, how="rst")
    truth.app(8, "web-a", "idle-close", peer_ip=CLIENT, peer_port=40999, how="fin")
    state = truth.state(tmp_path)
    cut = request(2, "reset", 8.0, 40008, conn=7, end=8.001)
    assert truth_of(state, cut, extra=(request(1, "ok", 3, 40008, conn=7),)) == ["keepalive-race"]
    # another connection's close, and no exit: truth cannot say what cut this one
    other = request(4, "reset", 8.0, 40009, conn=9, end=8.001)
    truth.nat(3, 40009, NODE1, POD_A)
    assert truth_of(truth.state(tmp_path), other) == [UNDECIDED]


def test_a_warm_up_reset_is_not_ready(tmp_path: Path) -> None:
    truth = cluster().kubelet(20, "web-c", "process-started", POD_A).app(20.1, "web-c", "listening")
    truth.nat(20.5, 40010, NODE1, POD_A)
    truth.app(20.51, "web-c", "warmup-reset", peer_ip=CLIENT, peer_port=40010)
    state = truth.state(tmp_path)
    assert truth_of(state, request(1, "reset", 20.5, 40010, end=20.52)) == ["not-ready"]


# -- answers ---------------------------------------------------------------------------------
def test_a_5xx_while_warming_is_not_ready_and_after_a_restart_container_restart(
    tmp_path: Path,
) -> None:
    truth = cluster().kubelet(20, "web-c", "process-started", POD_A).app(20.1, "web-c", "listening")
    truth.kubelet(25, "web-c", "exited", POD_A, exit_code=1)
    truth.kubelet(26, "web-c", "process-started", POD_A, restart_count=1)
    truth.app(26.1, "web-c", "listening")
    state = truth.state(tmp_path)
    first = request(1, "http-5xx", 20.5, 41000, pod="web-c")
    again = request(2, "http-5xx", 26.5, 41001, pod="web-c")
    assert truth_of(state, first, again) == ["not-ready", "container-restart"]


def test_a_5xx_during_a_readiness_flap_is_not_ready(tmp_path: Path) -> None:
    truth = cluster().app(5, "web-b", "not-serving", reason="flap")
    truth.app(7, "web-b", "ready-to-serve")
    state = truth.state(tmp_path)
    flap = request(1, "http-5xx", 6, 41002, pod="web-b")
    assert truth_of(state, flap) == ["not-ready"]
    assert truth_of(state, request(2, "http-5xx", 8, 41003, pod="web-b")) == [UNDECIDED]


def test_a_read_timeout_on_a_serving_pod_is_overload(tmp_path: Path) -> None:
    state = cluster().nat(4, 40011, NODE2, POD_B).state(tmp_path)
    assert truth_of(state, request(1, "read-timeout", 4, 40011, end=9)) == ["overload"]


def test_a_read_timeout_that_ended_before_the_pods_exit_is_not_a_cut(tmp_path: Path) -> None:
    """The app exits (its own line) at 12 s and the kubelet reaps it at 12.01 s: a timeout
    that fired at 11.1 s on a Pod still serving was overload; one the exit beat was a cut."""
    state = deleted_pod_a(cluster()).nat(10.5, 40016, NODE1, POD_A).state(tmp_path)
    waited = request(1, "read-timeout", 10.6, 40016, end=11.1)
    assert truth_of(state, waited) == ["overload"]
    cut = request(2, "read-timeout", 10.6, 40016, end=12.001)
    assert truth_of(state, cut) == ["inflight-cut"]


# -- port reuse and IP recycling -------------------------------------------------------------
def test_a_reused_client_port_follows_the_nat_entry_in_force_at_its_syn(tmp_path: Path) -> None:
    truth = deleted_pod_a(cluster())
    truth.nat(3, 40012, NODE1, POD_A)  # an earlier flow from the same port, to the old Pod
    truth.kubelet(12.5, "web-c", "process-started", POD_C)
    truth.nat(13, 40012, NODE2, POD_C)
    state = truth.state(tmp_path)
    # at 13 s the port's entry goes to web-c, not yet listening (first start)
    assert truth_of(state, request(1, "refused", 13, 40012)) == ["not-ready"]
    # the same port at 11.5 s still used the 3 s entry: web-a, deleted, not accepting
    assert truth_of(state, request(2, "refused", 11.5, 40012)) == ["endpoint-lag"]


def test_a_port_reused_within_the_stamping_lag_keeps_each_flow_apart(tmp_path: Path) -> None:
    """Seen under load: a client port reused 209 ms after its first flow, well within the lag
    the recorder's stamps may have. Each SYN takes the first entry stamped from its time on."""
    truth = cluster().nat(5.0, 40015, NODE1, POD_A).nat(5.2, 40015, NODE2, POD_B)
    state = truth.state(tmp_path)
    first, again = request(1, "ok", 5.0, 40015), request(2, "ok", 5.2, 40015)
    assert follow(state, first, int(5.0 * S)).pod == "web-a"
    assert follow(state, again, int(5.2 * S)).pod == "web-b"
    # a stamp a few ms after the caller's clock reading is still its SYN's
    assert follow(state, again, int(5.195 * S)).pod == "web-b"


def test_a_recycled_pod_ip_names_the_pod_that_held_it_at_the_syn(tmp_path: Path) -> None:
    truth = deleted_pod_a(cluster())
    truth.kubelet(15, "web-d", "process-started", POD_A)  # web-a's IP, handed out again
    truth.nat(11.5, 40013, NODE1, POD_A).nat(15.05, 40014, NODE1, POD_A)
    state = truth.state(tmp_path)
    before, after = request(1, "refused", 11.5, 40013), request(2, "refused", 15.05, 40014)
    assert truth_of(state, before, after) == ["endpoint-lag", "not-ready"]


# -- scoring arithmetic ----------------------------------------------------------------------
def test_precision_recall_and_support_per_cause() -> None:
    pairs = [("endpoint-lag", "endpoint-lag")] * 3 + [("endpoint-lag", "not-ready")]
    pairs += [("not-ready", "not-ready"), ("overload", "unexplained")]
    scores = per_cause_scores(pairs)
    assert (scores["endpoint-lag"].precision, scores["endpoint-lag"].recall) == (1.0, 0.75)
    assert scores["endpoint-lag"].support == 4
    assert (scores["not-ready"].precision, scores["not-ready"].recall) == (0.5, 1.0)
    assert (scores["overload"].recall, scores["unexplained"].precision) == (0.0, 0.0)
    assert scores["unexplained"].support == 0


def test_score_counts_agreement_over_decided_failures_and_fills_the_confusion() -> None:
    frame = pd.DataFrame(
        {"truth": ["endpoint-lag", "endpoint-lag", "not-ready", UNDECIDED],
         "analyzer": ["endpoint-lag", "unexplained", "not-ready", "overload"]}
    )  # fmt: skip
    score = score_verdicts("run", frame)
    assert (score.failed, score.decided, score.agreed) == (4, 3, 2)
    assert score.agreement == pytest.approx(2 / 3)
    assert score.confusion == {
        "endpoint-lag": {"endpoint-lag": 1, "unexplained": 1},
        "not-ready": {"not-ready": 1},
        UNDECIDED: {"overload": 1},
    }
    assert [d["analyzer"] for d in score.disagreements] == ["unexplained"]


# -- rolltrace score -------------------------------------------------------------------------
runner = CliRunner()


def injected_run(root: Path) -> Path:
    """The pipeline's minimal run (two read timeouts, ids 100 and 101) with truth injecting
    their cause, as the trace builder does."""
    run = minimal_run(root)
    lines = [
        Truth.line(1, "builder", "request-cause", request_id=rid, cause="overload")
        for rid in (100, 101)
    ]
    (run / "truth.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def test_score_without_truth_exits_2_naming_the_file(tmp_path: Path) -> None:
    run = injected_run(tmp_path / "run")
    (run / "truth.jsonl").unlink()
    result = runner.invoke(app, ["score", str(run)])
    assert result.exit_code == 2
    assert "truth.jsonl is missing" in result.output


def test_score_analyzes_writes_score_json_and_gates_on_min(tmp_path: Path) -> None:
    run = injected_run(tmp_path / "run")
    result = runner.invoke(app, ["score", str(run), "--min", "0"])
    assert result.exit_code == 0, result.output
    written = json.loads((run / "analysis" / "score.json").read_text())
    assert {"agreement", "per_cause", "confusion"} <= set(written)
    assert sum(written["confusion"]["overload"].values()) == 2
    assert written["per_cause"]["overload"]["support"] == 2
    assert "confusion" in result.output
    strict = runner.invoke(app, ["score", str(run), "--min", "1.01"])
    assert strict.exit_code == 1
    assert "below --min" in strict.output


def test_damaged_truth_is_scored_on_the_good_lines_and_reported(tmp_path: Path) -> None:
    run = injected_run(tmp_path / "run")
    with (run / "truth.jsonl").open("a") as truth:
        truth.write("{garbled\n")
    result = runner.invoke(app, ["score", str(run), "--min", "0"])
    assert result.exit_code == 0, result.output
    assert "truth.jsonl is damaged: 1 line(s) left out" in result.output
    written = json.loads((run / "analysis" / "score.json").read_text())
    assert written["truth_damaged_lines"] == 1
    assert "line 3" in written["truth_damage"][0]
    assert sum(written["confusion"]["overload"].values()) == 2  # the good lines still count


# -- a third-party app: no lines of its own, the kubelet's socket table instead ----------------
def third_party_cluster() -> Truth:
    """web-a and web-b run an app that writes no truth; the kubelet sees each listener appear
    0.3 s after the start. web-a is deleted at 10 s and dies at its SIGTERM (no preStop): the
    listener's last sighting is at 10 s, the kubelet reaps the process at 10.2 s."""
    truth = Truth()
    for pod, ip in (("web-a", POD_A), ("web-b", POD_B)):
        truth.kubelet(1, pod, "process-started", ip, restart_count=0)
        truth.kubelet(1.3, pod, "listening", ip, seen="socket-table")
    truth.rules(2, "node-1", "web-a", "web-b").rules(2, "node-2", "web-a", "web-b")
    truth.kubelet(10, "web-a", "sigterm", POD_A, cause="deletion")
    truth.kubelet(10, "web-a", "stopped-accepting", POD_A, seen="socket-table")
    return truth.kubelet(10.2, "web-a", "exited", POD_A, exit_code=None, signal=15)


def test_a_third_party_app_is_judged_from_the_socket_table(tmp_path: Path) -> None:
    state = third_party_cluster().nat(0.5, 40101, NODE1, POD_A).nat(1.1, 40102, NODE1, POD_A)
    state = state.nat(10.1, 40103, NODE2, POD_A).nat(5, 40104, NODE2, POD_B).state(tmp_path)
    run = state.pods["web-a"].runs[0]
    assert (run.listening_ns, run.stopped_ns) == (int(1.3 * S), 10 * S)
    assert run.serving == [(int(1.3 * S), 10 * S)]  # serving while listening: nothing finer
    assert truth_of(
        state,
        request(1, "refused", 1.1, 40102),  # before the listener's first sighting
        request(2, "refused", 10.1, 40103),  # after its last, the Pod being deleted
        request(3, "connect-timeout", 5, 40104),  # web-b listening but not accepting
        request(4, "read-timeout", 5, 40104, end=7),  # web-b serving but too slow
    ) == ["not-ready", "endpoint-lag", "overload", "overload"]


def test_the_apps_own_lines_win_over_the_socket_table(tmp_path: Path) -> None:
    """The demo app reports listening and warm-up itself: the kubelet's coarser sighting of the
    listener must not open a serving interval during the warm-up."""
    truth = Truth().kubelet(1, "web-b", "process-started", POD_B, restart_count=0)
    truth.app(1.1, "web-b", "listening").kubelet(1.15, "web-b", "listening", POD_B)
    state = truth.app(3, "web-b", "ready-to-serve").state(tmp_path)
    run = state.pods["web-b"].runs[0]
    assert run.listening_ns == int(1.1 * S) and run.serving == [(3 * S, None)]
    assert truth_of(state, request(1, "http-5xx", 2, 40201, pod="web-b")) == ["not-ready"]
