"""The trace builder writes valid run directories whose traces agree with each other and with
the injected truth, for every recipe and every trace option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.utils import PcapReader

from analyzer import tcp_connections
from analyzer.events import endpoint_membership, pod_lifecycle, read_events, read_truth
from analyzer.pcap import read_pcap
from analyzer.requests import read_requests
from analyzer.rundir import read_run_meta
from analyzer.schema import REQUESTS, Cause, check_frame
from analyzer.tracebuilder import BuiltRun, build_run, get_recipe, recipe_names
from analyzer.tracebuilder.model import build_cluster
from analyzer.tracebuilder.packets import capture_frames
from analyzer.tracebuilder.traffic import generate
from analyzer.validate import validate_run

SMALL = {"duration_s": 25.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltRun]:
    root = tmp_path_factory.mktemp("built")
    return {name: build_run(root / name, name, seed=1, **SMALL) for name in recipe_names()}


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
    """Each cause shows the packet signature DESIGN §4 names for it."""
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
            "drain_idle": st.sampled_from(["fin", "connection-close"]),
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
    recipe = get_recipe("clean").with_overrides(rate=60.0, duration_s=20.0, **settings_)
    rng = np.random.default_rng(seed)
    cluster = build_cluster(recipe, rng)
    traffic = generate(cluster, rng)
    q = traffic.requests.sort_values(["conn_id", "start"])
    same = q["conn_id"].to_numpy()[1:] == q["conn_id"].to_numpy()[:-1]
    assert (q["start"].to_numpy()[1:][same] >= q["end"].to_numpy()[:-1][same]).all()
    assert (q["end"] >= q["start"]).all() and (q["start"] < recipe.duration_s).all()
    c = traffic.conns
    last = np.fmax(np.fmax(c["close_t"], c["race_t"]), c["syn"] + recipe.connect_timeout_s)
    c = c.assign(last=last).sort_values(["port", "syn"])
    same = c["port"].to_numpy()[1:] == c["port"].to_numpy()[:-1]
    assert (c["syn"].to_numpy()[1:][same] > c["last"].to_numpy()[:-1][same]).all()
    client = capture_frames(cluster, traffic, 0)["client"].assign(capture="client")
    client = client.astype({"capture": "string", "src": "string", "dst": "string"})
    assert len(tcp_connections(client, {80})) == traffic.conns["conn_id"].nunique()
