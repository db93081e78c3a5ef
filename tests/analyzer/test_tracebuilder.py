"""The trace builder writes valid run directories whose traces agree with each other and with
the injected truth, for every recipe and every trace option."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.utils import PcapReader

from analyzer import tcp_connections
from analyzer.events import endpoint_membership, pod_lifecycle, read_events, read_truth
from analyzer.readers.pcap import read_pcap
from analyzer.readers.requests import read_requests
from analyzer.rundir import read_run_meta
from analyzer.schema import REQUESTS, Cause, ErrorKind, check_frame
from analyzer.tracebuilder import BuiltRun, build_run, get_recipe, recipe_names
from analyzer.tracebuilder.model import build_cluster
from analyzer.tracebuilder.packets import capture_frames
from analyzer.tracebuilder.recipes import Incident
from analyzer.tracebuilder.traffic import (
    EPHEMERAL_PORTS,
    ERRORS,
    PORT_REUSE_GAP_S,
    client_ports,
    generate,
)
from analyzer.validate import validate_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltRun]:
    root = tmp_path_factory.mktemp("built")
    return {name: build_run(root / name, name, seed=1) for name in recipe_names()}


def client_connections(built: BuiltRun) -> pd.DataFrame:
    return tcp_connections(read_pcap(built.paths.packets_dir / "client.pcap"), {80})


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_files_validate_and_agree(runs: dict[str, BuiltRun], name: str) -> None:
    built = runs[name]
    requests = check_frame(read_requests(built.paths.requests), REQUESTS, "test")
    errors = [p for p in validate_run(built.path) if p.severity == "error"]
    assert not errors, errors
    meta = read_run_meta(built.path)
    assert meta.backend == "synthetic" and meta.status == "complete"
    phases = [meta.phases[k] for k in ("load_start", "rollout_trigger", "rollout_complete")]
    assert phases == sorted(phases)
    assert {c.file for c in meta.captures} == {f"packets/{p.name}" for p in built.paths.captures()}

    # every new connection's client port and start time is a SYN in the client capture
    conns = client_connections(built)
    syns = set(zip(conns["client_port"], conns["syn_ns"], strict=True))
    new = requests[requests["conn_new"]]
    assert set(zip(new["local_port"], new["start_ns"], strict=True)) == syns
    assert len(new) == len(conns) == requests["conn_id"].nunique()
    assert (requests.groupby("conn_id")["conn_seq"].min() == 1).all()

    # events parse and name exactly the model's Pods, with their nodes and IPs
    events = read_events(built.paths.events)
    pods = pod_lifecycle(events).set_index("pod")
    truth_pods = built.pods.set_index("pod")
    assert set(pods.index) == set(truth_pods.index)
    assert (pods["node"] == truth_pods.loc[pods.index, "node"]).all()
    assert (pods["ip"] == truth_pods.loc[pods.index, "ip"]).all()
    assert set(endpoint_membership(events)["pod"].dropna()) <= set(truth_pods.index)

    # truth: request-cause lines are exactly the failed requests, which exist
    truth = read_truth(built.paths.truth)
    cause_lines = truth[truth["event"] == "request-cause"]
    ids = [f["request_id"] for f in cause_lines["fields"]]
    assert sorted(ids) == sorted(built.causes["request_id"])
    failed = requests[requests["error_kind"] != "ok"]
    assert set(failed["request_id"]) == set(ids)
    assert set(ids) <= set(requests["request_id"])

    # the recipe injects what it says it injects, and nothing else
    assert set(built.causes["cause"]) == {str(c) for c in get_recipe(name).causes}


def test_failure_signatures(runs: dict[str, BuiltRun]) -> None:
    """Each cause shows the packet signature docs/causes.md names for it."""
    for name in ("mixed", "mixed-local", "no-endpoints", "lb-lag"):
        built = runs[name]
        requests = built.requests.set_index("request_id")
        conns = client_connections(built).set_index(["client_port", "syn_ns"])
        causes = built.causes.set_index("request_id")
        failed = requests.loc[causes.index]
        by_conn = requests.groupby("conn_id")["start_ns"].min()
        keys = list(
            zip(failed["local_port"], by_conn.loc[failed["conn_id"]].to_numpy(), strict=True)
        )
        outcome = conns.loc[keys, "outcome"].to_numpy()
        kind = failed["error_kind"].to_numpy()
        assert (outcome[kind == "refused"] == "refused").all()
        assert (outcome[kind == "connect-timeout"] == "syn-timeout").all()
        assert (conns.loc[keys, "syn_count"].to_numpy()[kind == "connect-timeout"] > 1).all()
        race = (causes["cause"] == Cause.KEEPALIVE_RACE).to_numpy()
        assert (failed["conn_seq"].to_numpy()[race] > 1).all()
        server_fin = conns.loc[keys, "server_fin_ns"].to_numpy()[race]
        assert (server_fin <= failed["end_ns"].to_numpy()[race]).all()
        cut = (causes["cause"] == Cause.INFLIGHT_CUT).to_numpy()
        cut_conns = conns.loc[keys][cut]
        assert (cut_conns["bytes_c2s"] > 0).all()
        assert cut_conns["outcome"].isin(["reset-by-server", "closed-by-server"]).all()


def test_pods_seen_by_node_captures(runs: dict[str, BuiltRun]) -> None:
    built = runs["endpoint-lag"]
    old = built.pods[built.pods["revision"] == 1]
    nodes = pd.concat(
        [read_pcap(p) for p in built.paths.captures() if p.stem.startswith("node-")],
        ignore_index=True,
    )
    refused = tcp_connections(nodes, {8080})
    refused = refused[refused["outcome"] == "refused"]
    assert len(refused) == (built.causes["error_kind"] == "refused").sum()
    assert set(refused["server_ip"]) <= set(old["ip"])
    assert (refused["server_port"] == 8080).all()
    lb_lag = runs["lb-lag"]
    assert not lb_lag.causes.empty and (lb_lag.causes["cause"] == "lb-lag").all()


def test_not_ready_503_names_the_new_pod(runs: dict[str, BuiltRun]) -> None:
    built = runs["not-ready"]
    fivexx = built.requests[built.requests["error_kind"] == "http-5xx"]
    assert len(fivexx) and (fivexx["status_code"] == 503).all()
    new_pods = set(built.pods.loc[built.pods["revision"] == 2, "pod"])
    assert set(fivexx["pod"]) <= new_pods
    lead = built.timings[built.timings["metric"] == "readiness_lead"]["value_ms"]
    assert (lead > 1000).all()  # Ready well before the app could serve


def test_overload_latency_climbs_while_capacity_is_short(runs: dict[str, BuiltRun]) -> None:
    built = runs["overload"]
    q = built.requests
    latency = (q["end_ns"] - q["start_ns"]) / 1e6
    trigger = read_run_meta(built.path).phases["rollout_trigger"]
    before = latency[q["start_ns"] < trigger].median()
    window = built.windows[built.windows["cause"] == "overload"].iloc[0]
    during = latency[(q["start_ns"] >= window["start_ns"]) & (q["start_ns"] <= window["end_ns"])]
    assert during.median() > 20 * before
    assert (built.causes["error_kind"] == "read-timeout").all()


def test_truth_tables(runs: dict[str, BuiltRun]) -> None:
    built = runs["mixed-local"]
    prop = built.timings[built.timings["metric"] == "propagation"]
    assert list(prop["value_ms"]) == [1000.0, 2000.0, 3000.0]
    windows = built.windows
    assert set(windows["cause"]) == {"lb-lag", "endpoint-lag"}
    assert windows["failed"].sum() == len(built.causes)
    assert (windows["end_ns"] >= windows["start_ns"]).all()


def test_same_seed_same_bytes_other_seed_other_run(tmp_path: Path) -> None:
    a = build_run(tmp_path / "a", "mixed", seed=7, duration_s=15.0)
    b = build_run(tmp_path / "b", "mixed", seed=7, duration_s=15.0)
    c = build_run(tmp_path / "c", "mixed", seed=8, duration_s=15.0)
    files = ["run.json", "requests.parquet", "events.jsonl", "truth.jsonl", "packets/client.pcap"]
    for f in files:
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
    assert not a.requests.equals(c.requests)


def test_watch_gap_is_marked_and_relisted(tmp_path: Path) -> None:
    built = build_run(tmp_path / "gap", "endpoint-lag", duration_s=20.0, watch_gap=(4.0, 9.0))
    events = read_events(built.paths.events)
    assert {"GAP", "RELIST", "LIST"} <= set(events["type"])
    pods = pod_lifecycle(events)
    # the old Pods' deletions fell into the hole: detected late, at the relist
    assert pods["deletion_late"].any()


def test_duplicates_link_types_and_pcapng(tmp_path: Path) -> None:
    plain = build_run(tmp_path / "plain", "inflight-cut", duration_s=10.0)
    reference = read_pcap(plain.paths.packets_dir / "client.pcap")
    dup = build_run(
        tmp_path / "dup", "inflight-cut", duration_s=10.0, duplicate_client_packets=True
    )
    again = read_pcap(dup.paths.packets_dir / "client.pcap")
    assert again.attrs["duplicates_dropped"] == len(reference)
    variants: list[dict[str, object]] = [
        {"linktype": "sll2", "pcapng": True},
        {"linktype": "raw", "nanosecond": False},
        {"linktype": "null", "snaplen": 96},
    ]
    for options in variants:
        other = build_run(tmp_path / str(options), "inflight-cut", duration_s=10.0, **options)
        suffix = ".pcapng" if options.get("pcapng") else ".pcap"
        packets = read_pcap(other.paths.packets_dir / f"client{suffix}")
        assert len(packets) == len(reference)
        tolerance = 0 if options.get("nanosecond", True) else 1000
        assert (np.abs(packets["ts_ns"] - reference["ts_ns"]) <= tolerance).all()


def test_ipv6_run(tmp_path: Path) -> None:
    built = build_run(tmp_path / "v6", "mixed-local", duration_s=20.0, ipv6=True)
    assert not [p for p in validate_run(built.path) if p.severity == "error"]
    assert (built.requests["local_ip"].str.contains(":")).all()
    packets = pd.concat([read_pcap(p) for p in built.paths.captures()], ignore_index=True)
    assert (packets["ip_version"] == 6).all()
    conns = tcp_connections(packets[packets["capture"] == "client"], {80})
    assert len(conns) == built.requests["conn_id"].nunique()
    pods = pod_lifecycle(read_events(built.paths.events))
    assert set(pods["ip"]) == set(built.pods["ip"]) and pods["ip"].str.contains(":").all()
    assert set(built.causes["cause"]) == {"lb-lag", "endpoint-lag"}


def test_scapy_reads_the_same_segments(runs: dict[str, BuiltRun]) -> None:
    path = runs["mixed"].paths.packets_dir / "node-1.pcap"
    ours = read_pcap(path).head(300)
    with PcapReader(str(path)) as reader:
        theirs = [pkt for _, pkt in zip(range(300), reader, strict=False)]
    got = [
        (
            p[IP].src,
            p[IP].dst,
            p[TCP].sport,
            p[TCP].dport,
            int(p[TCP].flags),
            p[TCP].seq,
            p[TCP].ack,
        )
        for p in theirs
    ]
    expected = list(
        zip(
            ours["src"],
            ours["dst"],
            ours["sport"],
            ours["dport"],
            ours["flags"],
            ours["seq"],
            ours["ack"],
            strict=True,
        )
    )
    assert got == expected


def test_load_stopping_before_the_rollout_completes_is_a_partial_run(tmp_path: Path) -> None:
    built = build_run(tmp_path / "short", "clean", duration_s=8.0)
    meta = read_run_meta(built.path)
    assert meta.status == "partial" and meta.status_reasons
    assert "rollout_complete" not in meta.phases
    assert not [p for p in validate_run(built.path) if p.severity == "error"]


def test_bad_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe"):
        build_run(tmp_path / "x", "nope")
    with pytest.raises(ValueError, match="unknown recipe settings"):
        build_run(tmp_path / "y", "clean", preStop=3)


@pytest.mark.parametrize(
    ("incident", "problem"),
    [
        (Incident(7, 1.0, "crash"), "no Pod 7"),
        (Incident(0, 4.0, "crash", crashes=3), "before the rollout"),  # back-off 10 s, 20 s
        (Incident(0, 2.0, "hang"), "before the rollout"),  # SIGKILL after the 30 s grace
    ],
)
def test_incidents_that_would_overlap_the_rollout_are_refused(
    tmp_path: Path, incident: Incident, problem: str
) -> None:
    """plan_rollout assumes every old Pod is available until its deletion: an incident still
    running at the trigger would pace a real rollout differently, so the builder refuses it."""
    with pytest.raises(ValueError, match=problem):
        build_run(tmp_path / "run", "clean", incidents=(incident,))


INCIDENTS: list[tuple[Incident, ...]] = [
    (),
    (Incident(0, 1.0, "crash"),),
    (Incident(0, 0.5, "unready", duration_s=2.0, answer="refuse"),),
    (Incident(0, 0.5, "unready", duration_s=2.0), Incident(0, 3.0, "crash", crashes=1)),
]


@settings(max_examples=25, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "nodes": st.integers(1, 4),
            "replicas": st.integers(1, 4),
            "max_surge": st.integers(1, 2),
            "max_unavailable": st.integers(0, 2),
            "traffic_policy": st.sampled_from(["Cluster", "Local"]),
            "readiness": st.sampled_from(["http", "tcp", "none"]),
            "on_sigterm": st.sampled_from(["drain", "exit", "ignore"]),
            "drain_idle": st.sampled_from(["fin", "connection-close", "rst"]),
            "warmup_s": st.sampled_from([0.0, 2.0]),
            "warmup_answer": st.sampled_from(["503", "reset"]),
            "incidents": st.sampled_from(INCIDENTS),
            "slowdown": st.sampled_from([None, (2.0, 6.0, 2.0)]),
            "prestop_s": st.sampled_from([0.0, 1.0, 5.0]),
            "grace_s": st.sampled_from([2.0, 30.0]),
            "keepalive_share": st.sampled_from([0.0, 0.5, 1.0]),
            "keepalive_users": st.integers(1, 20),
            "slow_share": st.sampled_from([0.0, 0.3]),
            "pod_capacity_rps": st.sampled_from([float("inf"), 30.0]),
            "new_pod_node_shift": st.integers(0, 2),
            "terminating_fallback": st.booleans(),
        }
    ),
    st.integers(0, 2**16),
)
def test_any_settings_give_consistent_traces(settings_: dict[str, object], seed: int) -> None:
    """Whatever the rollout settings, the model's traffic is physically consistent: a keep-alive
    connection carries one request at a time, a client port is reused only after its previous
    connection ended, and the client capture yields exactly one connection per conn_id."""
    recipe = get_recipe("clean").with_overrides(
        rate=60.0, duration_s=20.0, rollout_at_s=8.0, **settings_
    )
    rng = np.random.default_rng(seed)
    cluster = build_cluster(recipe, rng)
    traffic = generate(cluster, rng)
    q = traffic.requests.sort_values(["conn_id", "start"])
    same = q["conn_id"].to_numpy()[1:] == q["conn_id"].to_numpy()[:-1]
    assert (q["start"].to_numpy()[1:][same] >= q["end"].to_numpy()[:-1][same]).all()
    assert (q["end"] >= q["start"]).all() and (q["start"] < recipe.duration_s).all()
    failed = q["error"] != ERRORS.index(ErrorKind.OK)
    assert (failed == (q["cause"] >= 0)).all()  # every failure has its cause, and only they
    c = traffic.conns
    last = np.fmax(np.fmax(c["close_t"], c["race_t"]), c["syn"] + recipe.connect_timeout_s)
    c = c.assign(last=last).sort_values(["port", "syn"])
    same = c["port"].to_numpy()[1:] == c["port"].to_numpy()[:-1]
    assert (c["syn"].to_numpy()[1:][same] > c["last"].to_numpy()[:-1][same]).all()
    client = capture_frames(cluster, traffic, 0)["client"].assign(capture="client")
    client = client.astype({"capture": "string", "src": "string", "dst": "string"})
    assert len(tcp_connections(client, {80})) == traffic.conns["conn_id"].nunique()


def test_concurrent_connections_of_the_client_never_share_a_port() -> None:
    """More keep-alive users than the old keep-alive port pool (7,232) plus new connections at
    once: every connection open at the same time has its own port from the Linux ephemeral
    range, and a port comes back only after its connection's last segment plus the gap."""
    recipe = get_recipe("clean").with_overrides(
        rate=2500.0, duration_s=4.0, rollout_at_s=1.0, keepalive_users=7500, keepalive_share=0.6
    )
    rng = np.random.default_rng(5)
    traffic = generate(build_cluster(recipe, rng), rng)
    c, q = traffic.conns, traffic.requests
    assert c["port"].between(*EPHEMERAL_PORTS).all()
    request_end = q.groupby("conn_id")["end"].max().reindex(c["conn_id"]).to_numpy()
    ends = [c["close_t"], c["race_t"], c["syn"] + recipe.connect_timeout_s, request_end]
    last = np.fmax.reduce(np.vstack([np.asarray(e, dtype=float) for e in ends]), axis=0)
    c = c.assign(last=last).sort_values(["port", "syn"])
    same = c["port"].to_numpy()[1:] == c["port"].to_numpy()[:-1]
    free_again = c["last"].to_numpy()[:-1][same] + PORT_REUSE_GAP_S
    assert (c["syn"].to_numpy()[1:][same] >= free_again).all()
    assert c["port"].nunique() > 7232  # the keep-alive users alone hold more ports than that


def test_a_client_out_of_ports_fails_naming_the_range() -> None:
    """connect() fails with EADDRNOTAVAIL when every ephemeral port is held: so does the
    builder, rather than hand out a port twice."""
    lo, hi = EPHEMERAL_PORTS
    size = hi - lo + 1
    syn = np.linspace(0.0, 1.0, size)
    ports = client_ports(syn, syn + 10.0)
    assert np.array_equal(np.sort(ports), np.arange(lo, hi + 1))
    with pytest.raises(ValueError, match="ephemeral range"):
        client_ports(np.r_[syn, 2.0], np.r_[syn + 10.0, 3.0])
    later = np.r_[syn, 11.0 + PORT_REUSE_GAP_S]  # the first port is free again by then
    assert client_ports(later, np.r_[syn + 10.0, 12.0])[-1] == lo


# --------------------------------------------------------------------------------------------
# the failure classes beyond rollouts: each trace read back shows its mechanism


def pod_objects(built: BuiltRun, pod: str) -> list[tuple[int, dict[str, Any]]]:
    """(receive time, object) of every Pod event of ``pod``, in receive order."""
    events = read_events(built.paths.events)
    mine = events[(events["kind"] == "Pod") & (events["name"] == pod)]
    return list(zip(mine["recv_ns"], mine["object"], strict=True))


def kubelet_events(built: BuiltRun, pod: str) -> list[tuple[str, str, int]]:
    """(reason, message, count) of each core/v1 Event about ``pod``, in receive order."""
    events = read_events(built.paths.events)
    mine = events[events["kind"] == "Event"]
    return [
        (o["reason"], o["message"], o["count"])
        for o in mine["object"]
        if o["involvedObject"]["name"] == pod
    ]


def container(obj: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = obj["status"]["containerStatuses"][0]
    return status


def is_ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])


def truth_of(built: BuiltRun, event: str, pod: str) -> pd.DataFrame:
    truth = read_truth(built.paths.truth)
    return truth[(truth["event"] == event) & (truth["pod"] == pod)]


def pod_intervals(built: BuiltRun, pod: str) -> pd.DataFrame:
    members = endpoint_membership(read_events(built.paths.events))
    return members[members["pod"] == pod].sort_values("from_ns")


NOT_READY_ENDPOINT = (False, False, False)  # ready, serving, terminating


def condition_runs(intervals: pd.DataFrame) -> list[tuple[bool, bool, bool]]:
    """The endpoint's successive (ready, serving, terminating), repeats merged."""
    states = list(
        zip(intervals["ready"], intervals["serving"], intervals["terminating"], strict=True)
    )
    return [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


def test_liveness_kill_restarts_the_container_without_deleting_the_pod(
    runs: dict[str, BuiltRun],
) -> None:
    built = runs["liveness-kill"]
    pod = str(built.pods["pod"].iloc[0])
    objects = pod_objects(built, pod)
    before_deletion = [o for _, o in objects if "deletionTimestamp" not in o["metadata"]]
    counts = [container(o)["restartCount"] for o in before_deletion]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 1
    restarted = next(o for o in before_deletion if container(o)["restartCount"] == 1)
    last = container(restarted)["lastState"]["terminated"]
    assert last["exitCode"] in (137, 143) and last["reason"] == "Error"
    assert last["startedAt"] <= last["finishedAt"]
    ready = [is_ready(o) for o in before_deletion]
    assert ready[0] and ready[-1] and not all(ready)  # NotReady, then Ready again
    reasons = [reason for reason, _, _ in kubelet_events(built, pod)]
    assert "Unhealthy" in reasons and "Killing" in reasons
    assert reasons.index("Unhealthy") < reasons.index("Killing")
    # the endpoint goes not ready (not terminating) and comes back before the rollout
    states = condition_runs(pod_intervals(built, pod))
    assert states[:3] == [(True, True, False), NOT_READY_ENDPOINT, (True, True, False)]
    # the requests the hung app held are reset when the container is killed; new connections
    # are refused from then until the rules drop the NotReady Pod (or the restart listens)
    kill = truth_of(built, "exited", pod)["ts_ns"].min()
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    assert (built.causes["cause"] == Cause.CONTAINER_RESTART).all()
    assert set(failed["error_kind"]) == {"reset", "refused"}
    reset = failed[failed["error_kind"] == "reset"]
    assert (np.abs(reset["end_ns"] - kill) < 10_000_000).all()
    refused = failed[failed["error_kind"] == "refused"]
    slowest = built.timings.query("metric == 'propagation'")["value_ms"].max() * 1e6
    assert (refused["start_ns"] >= kill).all()
    assert (refused["start_ns"] <= kill + 0.6e9 + slowest).all()  # PLEG + slice + rules


def test_crash_loop_backs_off_and_refuses_until_the_rules_drop_the_pod(
    runs: dict[str, BuiltRun],
) -> None:
    built = runs["crash-loop"]
    pod = built.pods.iloc[1]
    objects = pod_objects(built, str(pod["pod"]))
    states = [container(o)["state"] for _, o in objects]
    terminated = [s["terminated"] for s in states if "terminated" in s]
    assert terminated[0]["exitCode"] == 1 and terminated[0]["reason"] == "Error"
    waiting = [s["waiting"]["reason"] for s in states if "waiting" in s]
    assert waiting and set(waiting) == {"CrashLoopBackOff"}
    assert max(container(o)["restartCount"] for _, o in objects) == 2
    assert "BackOff" in [reason for reason, _, _ in kubelet_events(built, str(pod["pod"]))]
    # refusals come from the crashed Pod's own IP, only while some node's rules still held it
    node_packets = pd.concat(
        [read_pcap(p) for p in built.paths.captures() if p.stem.startswith("node-")]
    )
    refused = tcp_connections(node_packets, {8080})
    refused = refused[refused["outcome"] == "refused"]
    assert len(refused) == (built.causes["error_kind"] == "refused").sum() > 0
    assert set(refused["server_ip"]) == {pod["ip"]}
    crash = truth_of(built, "exited", str(pod["pod"]))["ts_ns"].min()
    slowest = built.timings.query("metric == 'propagation'")["value_ms"].max() * 1e6
    assert (refused["syn_ns"] >= crash).all()
    assert (refused["syn_ns"] <= crash + 1.5e9 + slowest).all()  # PLEG + slice + rules
    cuts = built.causes[built.causes["error_kind"].isin(["reset", "eof"])]
    assert len(cuts) > 0 and (cuts["cause"] == Cause.CONTAINER_RESTART).all()


def test_killed_at_grace_cuts_what_was_in_flight_at_the_sigkill(runs: dict[str, BuiltRun]) -> None:
    built = runs["killed-at-grace"]
    old = built.pods[built.pods["revision"] == 1]
    kills = []
    for row in old.itertuples():
        objects = pod_objects(built, str(row.pod))
        deleting = [o for _, o in objects if "deletionTimestamp" in o["metadata"]]
        assert {o["metadata"]["deletionGracePeriodSeconds"] for o in deleting} == {6}
        final = container(deleting[-1])["state"]["terminated"]
        assert final["exitCode"] == 137
        kill = truth_of(built, "sigkill", str(row.pod))["ts_ns"]
        assert len(kill) == 1 and abs(kill.iloc[0] - row.deletion_ns - 6e9) < 0.1e9
        kills.append(int(kill.iloc[0]))
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    start, end = failed["start_ns"].to_numpy(), failed["end_ns"].to_numpy()
    in_flight = np.zeros(len(failed), dtype=bool)
    for kill in kills:
        in_flight |= (start <= kill) & (kill <= end)
    assert len(failed) > 0 and in_flight.all()
    assert set(failed["error_kind"]) <= {"reset", "eof"}


@pytest.mark.parametrize("name", ["warmup-503", "warmup-reset"])
def test_long_warm_up_fails_requests_long_after_ready(runs: dict[str, BuiltRun], name: str) -> None:
    built = runs[name]
    pods = pod_lifecycle(read_events(built.paths.events)).set_index("pod")
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    truth = built.causes.set_index("request_id")
    since_ready = (failed["start_ns"] - pods.loc[truth["pod"], "ready_ns"].to_numpy()) / 1e9
    assert since_ready.max() > 15.0  # far beyond a "just became Ready" allowance
    assert (pods.loc[truth["pod"], "deletion_ns"].isna()).all()  # new Pods, not leaving
    if name == "warmup-503":
        assert (failed["status_code"] == 503).all()
        return
    # accepted, then reset as soon as the request arrived: a cut on a fresh connection
    conns = client_connections(built).set_index(["client_port", "syn_ns"])
    first = built.requests.groupby("conn_id")["start_ns"].min()
    keys = list(zip(failed["local_port"], first.loc[failed["conn_id"]], strict=True))
    cut = conns.loc[keys]
    assert (failed["error_kind"] == "reset").all() and (failed["conn_seq"] == 1).all()
    assert (cut["outcome"] == "reset-by-server").all() and (cut["bytes_c2s"] > 0).all()
    assert ((cut["server_rst_ns"] - cut["established_ns"]) < 10_000_000).all()


def test_readiness_flaps_without_deletion(runs: dict[str, BuiltRun]) -> None:
    built = runs["readiness-flap"]
    rollout = read_run_meta(built.path).phases["rollout_trigger"]
    for index, flips in ((0, 3), (1, 2)):
        pod = str(built.pods["pod"].iloc[index])
        before = pod_intervals(built, pod)
        before = before[before["from_ns"] < rollout]
        states = condition_runs(before)
        assert states.count(NOT_READY_ENDPOINT) == flips, states
        assert not any(terminating for _, _, terminating in states)
        ready = [is_ready(o) for t, o in pod_objects(built, pod) if t < rollout]
        assert sum(1 for a, b in itertools.pairwise(ready) if a and not b) == flips
        messages = [m for r, m, _ in kubelet_events(built, pod) if r == "Unhealthy"]
        assert messages and all(m.startswith("Readiness probe failed") for m in messages)
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    names = built.pods["pod"].iloc[:2].tolist()
    assert set(failed.loc[failed["error_kind"] == "http-5xx", "pod"]) == {names[0]}
    assert set(built.causes.loc[built.causes["error_kind"] == "refused", "pod"]) == {names[1]}
    assert (failed["start_ns"] < rollout).all()


@pytest.mark.parametrize(
    "name", ["local-one-replica", "local-one-replica-fallback", "local-one-replica-recreate"]
)
def test_one_replica_local_policy_never_sends_to_podless_nodes(
    runs: dict[str, BuiltRun], name: str
) -> None:
    built = runs[name]
    truth = read_truth(built.paths.truth)
    lb = truth[truth["event"] == "lb-health-changed"]
    targets = [f["target"] for f in lb["fields"]]
    assert "node-3" not in targets  # unhealthy from the start, never a target
    assert "node-3" not in set(built.pods["node"])
    assert not (built.path / "packets" / "node-3.pcap").exists() or not len(
        read_pcap(built.path / "packets" / "node-3.pcap")
    )
    lb_lag = built.causes[built.causes["cause"] == Cause.LB_LAG]
    assert len(lb_lag) > 0 and (lb_lag["error_kind"] == "connect-timeout").all()
    # the LB sent them to node-1 (the old Pod's) before marking it down
    down = [
        t
        for t, f in zip(lb["ts_ns"], lb["fields"], strict=True)
        if f == {"target": "node-1", "healthy": False}
    ]
    starts = built.requests.set_index("request_id").loc[lb_lag["request_id"], "start_ns"]
    assert len(down) == 1 and (starts < down[0]).all()


def test_slow_pods_overload_while_every_endpoint_is_ready(runs: dict[str, BuiltRun]) -> None:
    built = runs["overload-slow"]
    members = endpoint_membership(read_events(built.paths.events))
    ready = members[members["ready"]]
    to = ready["to_ns"].astype("float64").fillna(np.inf).to_numpy()
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    starts = failed["start_ns"].to_numpy()
    count = (
        (ready["from_ns"].to_numpy()[None, :] <= starts[:, None]) & (starts[:, None] < to)
    ).sum(axis=1)
    assert len(failed) > 0 and (count >= built.recipe.replicas).all()
    assert (failed["error_kind"] == "read-timeout").all()


def test_rst_race_has_no_fin(runs: dict[str, BuiltRun]) -> None:
    built = runs["keepalive-race-rst"]
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    conns = client_connections(built).set_index(["client_port", "syn_ns"])
    first = built.requests.groupby("conn_id")["start_ns"].min()
    keys = list(zip(failed["local_port"], first.loc[failed["conn_id"]], strict=True))
    raced = conns.loc[keys]
    assert len(failed) > 0 and (failed["conn_seq"] > 1).all()
    assert raced["server_fin_ns"].isna().all()
    assert (raced["server_rst_ns"].to_numpy() >= failed["start_ns"].to_numpy()).all()
    assert (raced["outcome"] == "reset-by-server").all()
    assert (failed["error_kind"] == "reset").all()


def test_one_node_lagging_40_s_keeps_sending_to_the_old_pods(runs: dict[str, BuiltRun]) -> None:
    built = runs["endpoint-lag-slow-node"]
    prop = built.timings[built.timings["metric"] == "propagation"].set_index("node")["value_ms"]
    assert prop["node-3"] == 40_000.0
    failed = built.requests.set_index("request_id").loc[built.causes["request_id"]]
    last_deletion = built.pods["deletion_ns"].max()
    assert failed["start_ns"].max() - last_deletion > 30e9  # beyond any 30 s horizon
    node_packets = pd.concat(
        [read_pcap(p) for p in built.paths.captures() if p.stem.startswith("node-")]
    )
    refused = tcp_connections(node_packets, {8080})
    late = refused[(refused["outcome"] == "refused") & (refused["syn_ns"] > last_deletion + 5e9)]
    assert len(late) > 0 and set(late["client_ip"]) == {"10.1.0.13"}  # masqueraded by node-3
