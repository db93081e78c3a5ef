"""Failures decided at an L7 hop (``analyzer.hop_paths`` and the hop rules of
``analyzer.attribution``): a client's 502 traced through the hop's access log to the Pod the
hop's failed attempt went to.

One hand-made run tells the story: an ingress in front of three Pods, one deleted (the hop
still sends to it), one serving (the hop reuses a pooled connection the app closed), one still
starting. The hop log is rendered from the documented formats (``accesslog_render``): the
local ingress's JSON lines (exact join) and ingress-nginx's default ``upstreaminfo`` (coarse
join)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analyzer import joins, load_run
from analyzer.advice import (
    APP_KEEPALIVE_PATH,
    KEEPALIVE_OVER_IDLE_S,
    PRESTOP_PATH,
    AdviceInputs,
    Recommendation,
    RolloutSettings,
    recommend,
)
from analyzer.hop_paths import HopJoin, hop_settings, join_failures, upstream_closed_ms
from analyzer.pipeline import analyze
from analyzer.readers.accesslog import read_access_log
from analyzer.readers.requests import write_requests
from analyzer.report.facts import run_facts
from analyzer.report.render import sections
from analyzer.rundir import RunMeta, RunPaths, write_run_meta
from analyzer.schema import CONNECTIONS, FAILURES, PODS, REQUESTS, Cause, PodMatch, check_frame
from rolltrace.cli import app
from rolltrace.scenario import load_scenario
from tests.analyzer.accesslog_render import rolltrace_line, upstreaminfo_line, write_log
from tests.analyzer.handmade import (
    endpoint,
    endpoint_slice,
    event,
    pod,
    replicaset,
    tcp_pcap,
    write_lines,
)
from tests.analyzer.test_joins import make_frame, request

#: A library scenario with an ingress: the advice's ``--set`` paths must apply to it.
SCENARIO_FILE = Path(__file__).resolve().parents[2] / "scenarios" / "ingress-endpoint-lag.yaml"

T0_S = 1_700_000_000
S = 1_000_000_000
OLD, SERVING, STARTING = "10.244.1.5", "10.244.2.6", "10.244.3.7"
SYNC_S = 1.0


@dataclass(frozen=True)
class HopCall:
    """One failed client request and the hop's log of it."""

    rid: int
    t_s: float  # after T0
    port: int
    seq: int
    upstream: str | None  # None: the hop tried no upstream
    connect: str  # '-': no connection; '0.000': a pooled one
    expected: Cause  # with the JSON log
    expected_default: Cause  # with ingress-nginx's default log
    status: int = 502  # the hop's answer, and its attempt's
    duration_s: float = 0.005  # the client's request


CALLS = [
    # 300 ms after web-old's endpoint left: the hop's list still held it, the SYN was refused
    HopCall(10, 1.3, 41000, 1, OLD, "-", Cause.PROXY_ENDPOINT_LAG, Cause.PROXY_ENDPOINT_LAG),
    # a pooled connection to a serving Pod closed under the request: the default log has no
    # connect time, so it cannot tell a pooled connection from a new one
    HopCall(11, 5.0, 41001, 3, SERVING, "0.000", Cause.BACKEND_KEEPALIVE_RACE, Cause.UNEXPLAINED),
    # a Pod still starting refused: the L4 cause of what the Pod was doing
    HopCall(12, 5.5, 41002, 1, STARTING, "-", Cause.NOT_READY, Cause.NOT_READY),
    # port 41000 again, a later connection: joined to its own line, not to request 10's
    HopCall(13, 9.0, 41000, 1, SERVING, "0.000", Cause.BACKEND_KEEPALIVE_RACE, Cause.UNEXPLAINED),
    # no upstream to try: the hop's endpoint list was empty (ingress-nginx answers 503)
    HopCall(14, 7.0, 41003, 1, None, "-", Cause.NO_ENDPOINTS, Cause.NO_ENDPOINTS, status=503),
    # 50 ms before the deletion was observed, a pooled connection failed at once: web-old's
    # drain closed it as the hop's request crossed; the default log cannot place it
    HopCall(15, 0.95, 41004, 2, OLD, "0.000", Cause.PROXY_ENDPOINT_LAG, Cause.UNEXPLAINED),
    # the hop's read timed out at a serving Pod: too slow (the default log's bare 504 is
    # decided by the client's latency: a congested second)
    HopCall(16, 6.0, 41005, 2, SERVING, "0.000", Cause.OVERLOAD, Cause.OVERLOAD, 504, 1.01),
]


def _events() -> list[dict[str, Any]]:
    old = pod("web-old", "uid-old", node="node-1", ip=OLD, running=True, ready=True)
    serving = pod("web-new", "uid-new", node="node-1", ip=SERVING, running=True, ready=True)
    starting = pod("web-late", "uid-late", node="node-1", ip=STARTING, running=True, ready=False)
    both = (endpoint(OLD, "web-old"), endpoint(SERVING, "web-new"))
    t0 = T0_S * S
    return [
        event("LIST", t0 - 2 * S, replicaset("web-5d9f", 1, "5d9f")),
        event("LIST", t0 - 2 * S, old),
        event("LIST", t0 - 2 * S, serving),
        event("LIST", t0 - 2 * S, endpoint_slice("web-x", *both)),
        event(
            "MODIFIED",
            t0 + S,
            pod("web-old", "uid-old", node="node-1", ip=OLD, ready=True, deleting=True),
        ),
        event("MODIFIED", t0 + S, endpoint_slice("web-x", endpoint(SERVING, "web-new"))),
        event("ADDED", t0 + 4 * S, starting),
    ]


def _requests() -> pd.DataFrame:
    """Successes answered by web-new through the run, and the failed calls (502 from the hop,
    which names no Pod)."""
    rows = [
        request(i, T0_S + 0.5 * i, local_port=42000 + i, status_code=200, pod="web-new")
        for i in range(1, 9)
        if 0.5 * i not in {c.t_s for c in CALLS}
    ]
    rows += [
        request(
            c.rid,
            T0_S + c.t_s,
            local_port=c.port,
            conn_id=c.rid,
            conn_seq=c.seq,
            conn_new=c.seq == 1,
            end_ns=int((T0_S + c.t_s + c.duration_s) * S),
            status_code=c.status,
            error_kind="http-5xx",
        )
        for c in CALLS
    ]
    return make_frame(REQUESTS, rows)


def _attempt(c: HopCall) -> dict[str, object]:
    """The upstream variables of the call's one attempt (none when it tried no upstream)."""
    if c.upstream is None:
        return dict.fromkeys(("upstream_addr", "upstream_status", "upstream_response_time"))
    return {
        "upstream_addr": f"{c.upstream}:8080",
        "upstream_status": c.status,
        "upstream_response_time": f"{c.duration_s - 0.004:.3f}",
    }


def _json_line(c: HopCall) -> str:
    return rolltrace_line(
        msec=f"{T0_S + c.t_s + c.duration_s - 0.001:.3f}",
        remote_port=c.port,
        connection_requests=c.seq,
        status=c.status,
        request_time=f"{c.duration_s - 0.002:.3f}",
        upstream_connect_time=None if c.upstream is None else c.connect,
        upstream_header_time=None if c.upstream is None else "-",
        **_attempt(c),
    )


def _default_line(c: HopCall) -> str:
    end = datetime.fromtimestamp(int(T0_S + c.t_s + c.duration_s - 0.001), UTC)
    return upstreaminfo_line(
        time_local=end.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        status=c.status,
        request_time=f"{c.duration_s - 0.002:.3f}",
        upstream_response_length=None if c.upstream is None else 0,
        **_attempt(c),
    )


def _make_run(root: Path, json_log: bool, scenario: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True)
    meta = RunMeta(
        schema_version="1.0",
        run_id="hop-story",
        status="complete",
        backend="synthetic",
        phases={"load_start": T0_S * S, "rollout_trigger": T0_S * S + S},
        service={"name": "web", "external_ip": "203.0.113.10", "port": 80},
        scenario=scenario or {},
        namespace="default",
    )
    write_run_meta(root, meta)
    write_requests(root / "requests.parquet", _requests())
    write_lines(root / "events.jsonl", _events())
    lines = [(_json_line if json_log else _default_line)(c) for c in CALLS]
    lines.insert(1, (rolltrace_line if json_log else upstreaminfo_line)())  # a 200 elsewhere
    write_log(RunPaths(root).hop_log("ingress"), lines)
    return root


SETTINGS = {
    "cluster": {"ingress": {"sync_interval_s": SYNC_S, "upstream_keepalive_timeout_s": 60}},
    "workload": {"app": {"keepalive_timeout_s": 5}},
}


def _failures(root: Path) -> pd.DataFrame:
    failures = analyze(RunPaths(root), write_tables=False, write_summary=False).tables["failures"]
    check_frame(failures, FAILURES, "test")
    return failures.set_index("request_id")


def test_hop_failures_get_their_cause_from_the_hop_attempt(tmp_path: Path) -> None:
    failures = _failures(_make_run(tmp_path / "run", json_log=True, scenario=SETTINGS))
    for c in CALLS:
        row = failures.loc[c.rid]
        assert row["cause"] == c.expected.value, (c, row["evidence"])
        assert row["hop"] == "ingress" and row["hop_join"] == HopJoin.EXACT.value
        to = f"{c.upstream}:8080" if c.upstream else "- (Pod unknown)"
        assert row["path"].startswith(f"client → ingress → {to}")
        if c.upstream:
            assert row["pod_method"] == PodMatch.HOP_LOG.value
    lag = failures.loc[10]
    assert lag["pod"] == "web-old" and lag["confidence"] == 0.9
    assert "300 ms after the Pod's endpoint left" in lag["evidence"]
    assert "within the hop's sync interval of 1000 ms" in lag["evidence"]
    race = failures.loc[11]
    assert race["pod"] == "web-new" and "keep-alive timeout 5000 ms is below" in str(
        race["evidence"]
    )


def test_without_settings_the_evidence_does_not_compare_them(tmp_path: Path) -> None:
    failures = _failures(_make_run(tmp_path / "run", json_log=True))
    assert [failures.loc[c.rid, "cause"] for c in CALLS] == [c.expected.value for c in CALLS]
    assert "sync interval" not in str(failures.loc[10, "evidence"])
    assert "keep-alive timeout" not in str(failures.loc[11, "evidence"])


def test_an_ingress_nginx_default_log_is_joined_coarsely(tmp_path: Path) -> None:
    failures = _failures(_make_run(tmp_path / "run", json_log=False, scenario=SETTINGS))
    for c in CALLS:
        row = failures.loc[c.rid]
        assert row["cause"] == c.expected_default.value, (c, row["evidence"])
        assert row["hop_join"] == HopJoin.COARSE.value and row["hop"] == "ingress"
    assert failures.loc[10, "confidence"] == 0.6  # a guess within the second: lower
    assert "coarse join" in str(failures.loc[10, "evidence"])


def test_the_exact_join_never_crosses_a_port_reuse(tmp_path: Path) -> None:
    log = read_access_log(
        write_log(tmp_path / "ingress.log", [_json_line(c) for c in reversed(CALLS)])
    )
    failed = _requests().query("error_kind != 'ok'")
    joined = join_failures(failed, log.requests)
    lines = dict(zip(failed.loc[joined.index, "request_id"], joined["line"], strict=True))
    # the log was written in reverse: the last call is line 1, request 10 the last line
    assert lines == {c.rid: len(CALLS) - i for i, c in enumerate(CALLS)}


def test_a_hop_line_outside_the_client_request_is_not_joined(tmp_path: Path) -> None:
    late = HopCall(10, 3.0, 41000, 1, OLD, "-", Cause.UNEXPLAINED, Cause.UNEXPLAINED)
    log = read_access_log(write_log(tmp_path / "ingress.log", [_json_line(late)]))
    failed = _requests().query("error_kind != 'ok'")
    assert join_failures(failed, log.requests).empty


def test_the_report_shows_each_failed_request_path(tmp_path: Path) -> None:
    run = load_run(_make_run(tmp_path / "run", json_log=True, scenario=SETTINGS))
    parts = sections(run_facts(run), has_truth=False)
    (examples,) = [s for s in parts if s.title == "Example failed requests"]
    assert examples.table is not None
    header, rows = examples.table
    paths = [row[header.index("path")] for row in rows]
    assert f"client → ingress → {OLD}:8080 (web-old)" in paths


def test_hop_settings_come_from_run_json_before_the_scenario() -> None:
    settings = hop_settings({"hops": {"ingress": {"sync_interval_s": 2.5}}}, SETTINGS)
    assert settings["ingress"].sync_interval_s == 2.5
    assert settings["ingress"].idle_timeout_s == 60
    assert settings["ingress"].app_keepalive_s == 5
    assert hop_settings({}, {})[""].app_keepalive_s is None
    # run.json's list of hops, as `rolltrace run` writes it
    listed = hop_settings({"hops": [{"name": "lb", "upstream_keepalive_timeout_s": 30}]}, {})
    assert listed["lb"].idle_timeout_s == 30 and listed["lb"].sync_interval_s is None


@pytest.mark.parametrize("json_log", [True, False], ids=["rolltrace", "ingress-nginx"])
def test_runs_without_the_hop_log_keep_their_l4_causes(tmp_path: Path, json_log: bool) -> None:
    root = _make_run(tmp_path / "run", json_log=json_log, scenario=SETTINGS)
    RunPaths(root).hop_log("ingress").unlink()
    failures = _failures(root)
    assert len(failures) == len(CALLS)  # the client's failures stay, only their hop is unknown
    assert failures["hop"].isna().all() and failures["path"].isna().all()
    assert (
        not failures["cause"]
        .isin([Cause.PROXY_ENDPOINT_LAG.value, Cause.BACKEND_KEEPALIVE_RACE.value])
        .any()
    )


def test_rolltrace_import_takes_an_ingress_nginx_log_into_attribution(tmp_path: Path) -> None:
    """The path a user takes: their own request log, watch output and ingress-nginx's default
    access log, given to ``rolltrace import``; the hop's 502s get causes through it."""
    source = _make_run(tmp_path / "source", json_log=False)
    pcap = tmp_path / "client.pcap"
    pcap.write_bytes(tcp_pcap([(T0_S * S, 0x02), (T0_S * S + 1000, 0x12)]))
    out = tmp_path / "imported"
    result = CliRunner().invoke(
        app,
        [
            "import", "-o", str(out), "--pcap", str(pcap),
            "--watch", str(source / "events.jsonl"),
            "--requests", str(source / "requests.parquet"), "--lb", "203.0.113.10:80",
            "--access-log", str(RunPaths(source).hop_log("ingress")), "--hop", "ingress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    failures = _failures(out).sort_values("start_ns")  # the import numbers requests anew
    in_time = sorted(CALLS, key=lambda c: c.t_s)
    assert failures["cause"].tolist() == [c.expected_default.value for c in in_time]
    assert (failures["hop_join"] == HopJoin.COARSE.value).all()


# --------------------------------------------------------------------------------------------
# the advice for the hop causes, applicable as `--set` overrides like every setting advice


def _advice(**kw: Any) -> dict[str, Recommendation]:
    facts = AdviceInputs(**{"scenario_name": "hop", "timings": {}, **kw})
    return {r.topic: r for r in recommend(facts)}


def test_a_backend_race_asks_for_a_keepalive_above_the_hop_idle_timeout() -> None:
    settings = RolloutSettings(hop_idle_timeout_s=60.0, app_keepalive_s=5.0)
    rec = _advice(failed=3, failed_by_cause={"backend-keepalive-race": 3}, settings=settings)[
        "backend keep-alive"
    ]
    (change,) = rec.changes
    assert rec.verdict == "change" and rec.fix_in == "setting"
    assert change.setting == APP_KEEPALIVE_PATH and change.from_value == 5.0
    assert change.to_value == math.ceil(60.0 + KEEPALIVE_OVER_IDLE_S)
    scenario = load_scenario(
        SCENARIO_FILE, overrides=[f"{change.setting}={json.dumps(change.to_value)}"]
    )
    assert scenario.workload.app.keepalive_timeout_s == change.to_value


def test_without_the_hop_idle_timeout_the_backend_race_advice_names_no_value() -> None:
    rec = _advice(
        failed=3, failed_by_cause={"backend-keepalive-race": 3}, settings=RolloutSettings()
    )["backend keep-alive"]
    assert rec.changes == () and rec.fix_in == "app" and rec.verdict == "unknown"


def test_proxy_lag_sizes_prestop_by_the_hop_sync_interval_and_propagation() -> None:
    sync_s, propagation_ms = 2.0, 400.0
    rec = _advice(
        failed=4,
        failed_by_cause={"proxy-endpoint-lag": 4},
        settings=RolloutSettings(prestop_s=0.0, hop_sync_interval_s=sync_s),
        timings={"propagation": {"n": 1, "max_ms": propagation_ms}},
    )["preStop"]
    (change,) = rec.changes
    assert rec.verdict == "change" and change.setting == PRESTOP_PATH
    assert change.to_value == math.ceil(sync_s + propagation_ms / 1000)
    assert "sync interval (2 s)" in rec.reasoning
    assert "4 request(s) failed with proxy-endpoint-lag" in rec.reasoning
    scenario = load_scenario(SCENARIO_FILE, overrides=[f"{change.setting}={change.to_value}"])
    assert scenario.pod.pre_stop is not None
    assert scenario.pod.pre_stop.sleep_s == change.to_value


def test_masked_retries_are_advised_on_without_a_change() -> None:
    masked = {"ingress": {"masked": 5, "cost_ms": {"p50_ms": 1000.0, "p99_ms": 3000.0}}}
    rec = _advice(failed=0, failed_by_cause={}, settings=RolloutSettings(), masked_retries=masked)[
        "retries at L7 hops"
    ]
    assert rec.verdict == "ok" and rec.changes == ()
    assert "idempotent" in rec.advice and "ingress: 5 masked" in rec.reasoning
    assert "p50 1000 ms / p99 3000 ms" in rec.reasoning


def test_packets_show_the_pod_closing_the_pooled_connection_the_hop_reused() -> None:
    at = T0_S * S + 5 * S
    ms = 1_000_000

    def to(ip: str, fin_ns: int, last_data_ns: int) -> dict[str, Any]:
        return {
            "client_ip": "10.244.9.9",  # the hop's own address toward the Pods
            "server_ip": ip,
            "server_port": 8080,
            "server_fin_ns": fin_ns,
            "last_c2s_data_ns": last_data_ns,
        }

    conns = make_frame(
        CONNECTIONS,
        [
            to(SERVING, at - 10 * ms, at + ms),  # closed, then the hop's request came: the race
            to(SERVING, at - 10 * ms, at - 5 * S),  # closed idle, nothing sent after: not it
            to(OLD, at, at + ms),  # another Pod
        ],
    )
    close = upstream_closed_ms(
        pd.Series([SERVING, SERVING], dtype="string"),
        pd.Series([8080, 8080], dtype="Int64"),
        np.array([at, at + 2 * S], dtype="float64"),
        conns,
    )
    assert close[0] == pytest.approx(-10.0, abs=1e-3) and np.isnan(close[1])


def test_behind_an_snat_that_rewrites_ports_the_join_is_timed(tmp_path: Path) -> None:
    """The local cluster's masquerade gives the hop other ports than the client's: the
    connection position, the status and the millisecond window still tie each line."""
    root = _make_run(tmp_path / "run", json_log=True, scenario=SETTINGS)
    rewritten = [_json_line(replace(c, port=c.port + 7000)) for c in CALLS]
    write_log(RunPaths(root).hop_log("ingress"), rewritten)
    failures = _failures(root)
    assert (failures["hop_join"] == HopJoin.TIMED.value).all()
    assert [failures.loc[c.rid, "cause"] for c in CALLS] == [c.expected.value for c in CALLS]
    assert failures.loc[10, "confidence"] == 0.9


def test_through_a_hop_a_header_names_only_its_own_response() -> None:
    """A client's keep-alive connection ends at the hop, which sends each request to a Pod of
    its choosing: a failure on it is not the Pod an earlier response named."""
    reqs = make_frame(
        REQUESTS,
        [
            request(1, 40.0, pod="web-new", conn_id=1),
            request(2, 41.0, conn_id=1, conn_new=False, conn_seq=2, error_kind="http-5xx"),
        ],
    )
    no_pod = pd.Series([pd.NA, pd.NA], dtype="string")
    direct = joins.attach_pods(reqs, no_pod, PODS.empty())
    hop = joins.attach_pods(reqs, no_pod, PODS.empty(), through_l7_hop=True)
    assert direct["pod"].tolist() == ["web-new", "web-new"]
    assert hop["pod"].tolist() == ["web-new", pd.NA]
