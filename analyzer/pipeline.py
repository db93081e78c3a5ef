"""Analyze a run directory: read every trace, join, attribute, measure, write ``analysis/``.

This is the one place that touches files for the analysis; the stages it calls are pure. Missing
or damaged optional inputs (packets, events) never stop the analysis: it goes on with what is
left, falls back to inference, and says in ``summary["inputs"]`` what was present, missing or
damaged — a report that silently lost its packets would claim more than it knows. Only a run
without run.json or usable requests is unusable (``UnusableRunError``, exit code 2).

``summary.json`` records a fingerprint of the inputs so ``load_run`` can tell whether the tables
in ``analysis/`` still describe the run's files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer import advice, attribution, hop_paths, hops, joins, metrics
from analyzer.connections import (
    ConnectionTracker,
    PacketOrderError,
    number_connections,
    rows_where,
)
from analyzer.errors import TraceError, UnusableRunError
from analyzer.events import (
    endpoint_membership,
    pod_lifecycle,
    pod_state_intervals,
    scan_events,
)
from analyzer.memory import release_freed_memory, small_pages
from analyzer.readers.accesslog import read_access_log
from analyzer.readers.kubectl import EVENT_TIMES_KEY
from analyzer.readers.pcap import (
    PACKETS_TEXT,
    PacketChunk,
    iter_packet_chunks,
    packets_parquet_metadata,
    read_pcap,
)
from analyzer.readers.requests import load_requests
from analyzer.rundir import (
    RunMeta,
    RunPaths,
    atomic_write_bytes,
    lb_unhealthy_after_ms,
    read_run_meta,
    readiness_detection_ms,
    terminating_fallback,
    traffic_policy,
)
from analyzer.schema import (
    CONNECTIONS,
    ENDPOINTS,
    FAILURES,
    HOP_ATTEMPTS,
    HOP_REQUESTS,
    MASKED_RETRIES,
    PACKETS,
    POD_STATES,
    PODS,
    REQUESTS,
    SCHEMA_VERSION,
    WINDOWS,
    ErrorKind,
    PodMatch,
    TableSchema,
    check_frame,
    read_back_metadata,
)

#: Bumped whenever attribution or metrics change meaning, so cached analyses are recomputed.
ANALYZER_VERSION = "4"

#: Tables written to analysis/tables/, with the schema each is checked against (None: not a
#: canonical table, documented in docs/api.md).
TABLES: dict[str, TableSchema | None] = {
    "requests": REQUESTS,
    "packets": PACKETS,
    "connections": CONNECTIONS,
    "pods": PODS,
    "pod_states": POD_STATES,
    "endpoints": ENDPOINTS,
    "failures": FAILURES,
    "windows": WINDOWS,
    "latency": None,
    "timings": None,
    "hop_requests": HOP_REQUESTS,
    "hop_attempts": HOP_ATTEMPTS,
    "masked_retries": MASKED_RETRIES,
}


class InputsReport(TypedDict):
    present: list[str]
    missing: list[str]
    damaged: list[dict[str, str]]
    fingerprint: dict[str, list[int]]


class Summary(TypedDict):
    """summary.json (documented field by field in docs/api.md)."""

    schema_version: str
    analyzer_version: str
    run_id: str
    status: str
    analysis_status: str
    degraded_because: list[str]
    requests_total: int
    requests_failed: int
    failure_rate: float
    latency: metrics.TimingStats
    failed_by_cause: dict[str, int]
    windows: list[dict[str, Any]]
    disruption_seconds: dict[str, int]
    timings: dict[str, Any]
    pod_match: dict[str, int]
    mean_confidence: float | None
    evidence_examples: dict[str, str]
    inputs: InputsReport
    recommendations: list[dict[str, Any]]
    masked_retries: dict[str, hops.HopRetries]


@dataclass
class Analysis:
    """Everything one analysis produced: the tables, the summary and the CPU time per stage.

    ``tables`` is a mapping so that an analysis read back from ``analysis/tables`` can read
    each table only when asked for (``analyzer.run.load_analysis``)."""

    meta: RunMeta
    tables: Mapping[str, pd.DataFrame]
    summary: Summary
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per stage


@dataclass
class _Inputs:
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    damaged: list[dict[str, str]] = field(default_factory=list)

    def damage(self, error: TraceError, kept: str) -> None:
        self.damaged.append(
            {"file": error.path, "where": error.location, "error": error.message, "kept": kept}
        )


def input_fingerprint(paths: RunPaths) -> dict[str, list[int]]:
    """Size and mtime of every input file: a cached analysis is stale when any of them changed."""
    files = [paths.run_json, paths.requests, paths.events, *paths.captures(), *paths.hop_logs()]
    out: dict[str, list[int]] = {}
    for file in files:
        if file.exists():
            stat = file.stat()
            out[str(file.relative_to(paths.root))] = [stat.st_size, stat.st_mtime_ns]
    return out


def _read_meta(paths: RunPaths) -> RunMeta:
    if not paths.run_json.exists():
        raise UnusableRunError(f"{paths.run_json}: missing (a run directory needs run.json)")
    try:
        return read_run_meta(paths.run_json)
    except TraceError as exc:
        raise UnusableRunError(f"unusable run.json: {exc}") from None


def _read_requests(paths: RunPaths, inputs: _Inputs) -> pd.DataFrame:
    if not paths.requests.exists():
        raise UnusableRunError(f"{paths.requests}: missing (a run directory needs requests)")
    try:
        frame, problems = load_requests(paths.requests, _PASSED_THROUGH_TEXT)
    except TraceError as exc:
        raise UnusableRunError(f"unusable requests: {exc}") from None
    inputs.present.append("requests.parquet")
    bad_rows = set()
    for problem in problems:
        if problem.severity != "error":
            continue
        inputs.damaged.append(
            {
                "file": problem.file,
                "where": problem.location,
                "error": problem.message,
                "kept": "other rows",
            }
        )
        if problem.location.startswith("row "):
            bad_rows.add(int(problem.location.split()[1]))
        else:
            raise UnusableRunError(f"unusable requests: {problem.to_trace_error()}")
    if bad_rows:
        frame = frame.drop(index=sorted(bad_rows)).reset_index(drop=True)
    return frame.astype(dict.fromkeys(_PASSED_THROUGH_TEXT, "category"))


#: Text columns of the requests that no stage computes with (they reach the requests table as
#: they came): held as categoricals, a few distinct values each, they cost a byte or two per
#: request instead of a string each (0.8 GB at ten million requests). The tables keep their
#: text: see ``_write_table`` and ``_Tables``.
_PASSED_THROUGH_TEXT = ("user_kind", "method", "path", "pod_version", "error_detail", "remote_ip")


def _text_dtypes(frame: pd.DataFrame) -> dict[str, Any]:
    """The dtype of the text each categorical column of ``frame`` stands for."""
    return {
        str(name): dtype.categories.dtype
        for name, dtype in frame.dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype)
    }


#: Takes each chunk of packets as it is read: the table writer's stream, or a list's append.
PacketSink = Callable[[PacketChunk], None]


def _server_ports(meta: RunMeta, requests: pd.DataFrame) -> set[int]:
    """The ports the Service listens on: they tell the client side of connections whose
    handshake a capture missed."""
    ports = {int(p) for p in requests["remote_port"].unique()}
    for key in ("port", "target_port", "node_port"):
        if isinstance(meta.service.get(key), int):
            ports.add(int(meta.service[key]))
    return ports


def _read_packets(
    paths: RunPaths, inputs: _Inputs, server_ports: set[int], sink: PacketSink
) -> pd.DataFrame:
    """The connections of every capture, read chunk by chunk (``iter_pcap``): each chunk goes
    to ``sink`` and to its capture's connection tracker, so that memory holds one chunk of
    packets and the connections, never all the packets."""
    parts, read_any = [], False
    for capture in paths.captures():
        tracked = _CaptureConnections(capture, server_ports)
        try:
            for chunk in iter_packet_chunks(capture):
                sink(chunk)
                tracked.add(chunk)
            inputs.present.append(str(capture.relative_to(paths.root)))
            read_any = True
        except TraceError as exc:
            inputs.damage(exc, f"{tracked.packets} packets before the damage")
            read_any = read_any or tracked.packets > 0
        parts.append(tracked.rows())  # now, so that this capture's tracker is freed
    if not read_any:
        inputs.missing.append("packets/*.pcap")
    return number_connections(parts)


class _CaptureConnections:
    """One capture's connections, tracked as its chunks stream by. A capture in which a flow
    goes back in time from one chunk to the next (``PacketOrderError``) is tracked again from
    the whole file: slower and whole in memory, but its connections are the whole table's."""

    def __init__(self, capture: Path, server_ports: set[int]) -> None:
        self.capture, self.server_ports = capture, server_ports
        self.tracker: ConnectionTracker | None = ConnectionTracker(server_ports)
        self.packets = 0

    def add(self, chunk: PacketChunk) -> None:
        self.packets += len(chunk)
        if self.tracker is not None:
            try:
                self.tracker.add(chunk)
            except PacketOrderError:
                self.tracker = None

    def rows(self) -> pd.DataFrame:
        if self.tracker is None:
            self.tracker = ConnectionTracker(self.server_ports)
            self.tracker.add(read_pcap(self.capture, on_damage="keep"))
        return self.tracker.rows()


@dataclass
class _Watched:
    """What events.jsonl says: Pods (first transitions and state intervals), endpoints and the
    watch's GAP markers as rows (since_ns, recv_ns)."""

    pods: pd.DataFrame
    pod_states: pd.DataFrame
    endpoints: pd.DataFrame
    gaps: np.ndarray


def _read_events(paths: RunPaths, inputs: _Inputs) -> _Watched:
    no_gaps = np.empty((0, 2), dtype="float64")
    if not paths.events.exists():
        inputs.missing.append("events.jsonl")
        return _Watched(PODS.empty(), POD_STATES.empty(), ENDPOINTS.empty(), no_gaps)
    scan = scan_events(paths.events)
    inputs.present.append("events.jsonl")
    for problem in scan.problems:
        inputs.damage(problem, "every other line")
    events = scan.frame
    gap_rows = events[events["type"] == "GAP"]
    gaps = np.column_stack(
        [
            pd.to_numeric(gap_rows["since_ns"]).to_numpy(dtype="float64", na_value=np.nan),
            gap_rows["recv_ns"].to_numpy(dtype="float64"),
        ]
    )
    gaps = gaps[~np.isnan(gaps).any(axis=1)] if len(gaps) else no_gaps
    return _Watched(
        pod_lifecycle(events), pod_state_intervals(events), endpoint_membership(events), gaps
    )


def _service_scope(meta: RunMeta, watched: _Watched) -> _Watched:
    """Only the Service under test and its Pods: a namespace's other Services would otherwise
    count as ready endpoints and its other Pods become inference candidates. A Pod belongs when
    the Service's slices ever listed it, or its ReplicaSet's other Pods were listed."""
    name = meta.service.get("name")
    pods, endpoints = watched.pods, watched.endpoints
    if not isinstance(name, str) or not (endpoints["service"] == name).any():
        return watched
    endpoints = endpoints[endpoints["service"] == name]
    listed = set(endpoints["pod"].dropna().astype(str).unique())
    replicasets = set(pods.loc[pods["pod"].isin(listed), "replicaset"].dropna().astype(str))
    keep = pods["pod"].isin(listed) | pods["replicaset"].isin(replicasets)
    states = watched.pod_states[watched.pod_states["uid"].isin(pods.loc[keep, "uid"])]
    return _Watched(pods[keep], states, endpoints, watched.gaps)


def _captures_by_point(meta: RunMeta, captured: set[str]) -> tuple[set[str], dict[str, str]]:
    """Client capture names and node capture name → node, from run.json (or by file name)."""
    client: set[str] = set()
    nodes: dict[str, str] = {}
    for capture in meta.captures:
        name = Path(capture.file).stem
        if capture.point == "client":
            client.add(name)
        else:
            nodes[name] = capture.node or name
    for name in captured - client - set(nodes):
        if name.startswith("node"):
            nodes[name] = name
        else:
            client.add(name)
    return client, nodes


def _service_context(
    meta: RunMeta,
    pods: pd.DataFrame,
    endpoints: pd.DataFrame,
    node_names: list[str],
    propagation: pd.DataFrame,
    lag_by_node: dict[str, float] | None = None,
    syn_interval_ms: float = 0.0,
) -> attribution.ServiceContext:
    """What attribution needs to know beyond the tables, from run.json and the run's measured
    propagation (its maximum is how long a node's rules were seen to trail the slices)."""
    policy = traffic_policy(meta.service, meta.scenario)
    replicas = meta.service.get("replicas") or meta.scenario.get("replicas")
    if replicas is None and isinstance(meta.scenario.get("deployment"), dict):
        replicas = meta.scenario["deployment"].get("replicas")
    if replicas is None and not endpoints.empty:
        # the ready count just before the rollout is the capacity the Deployment asked for
        trigger = meta.phase("rollout_trigger")
        if trigger is not None:
            at = attribution.cluster_state_at(
                pd.Series([trigger]), endpoints, attribution.ServiceContext(None, False, ())
            )
            replicas = int(at["ready_endpoints"].iloc[0]) or None
    nodes = sorted({*node_names, *pods["node"].dropna().astype(str)})
    lag = pd.to_numeric(propagation["propagation_ms"], errors="coerce").dropna()
    fallback = terminating_fallback(meta.scenario) is not False
    # a measured lag is the last SYN seen through a node after one transition: another
    # transition's rules change may come up to one SYN interval later
    rules_lag = float(lag.max()) + syn_interval_ms if len(lag) else attribution.DEFAULT_RULES_LAG_MS
    lb_after = lb_unhealthy_after_ms(meta.scenario)
    return attribution.ServiceContext(
        desired_replicas=None if replicas is None else int(replicas),
        local_policy=policy.lower() == "local",
        nodes=tuple(nodes),
        lb_targets_pods=str(meta.service.get("lb_targets", "nodes")).lower() == "pods",
        rules_lag_ms=max(rules_lag, 0.0),
        readiness_detect_ms=readiness_detection_ms(meta.scenario),
        # the LB's health check follows the node's rules, so its lag adds to the check's own
        lb_unhealthy_after_ms=None if lb_after is None else lb_after + rules_lag,
        terminating_fallback=fallback,
        # a failed SYN after a node's last forward seen is itself proof it was not forwarded
        rules_lag_by_node_ms=lag_by_node or {},
        rules_lag_spread_ms=syn_interval_ms,
        event_uncertainty_ms=attribution.event_time_uncertainty_ms(
            meta.extra_fields().get(EVENT_TIMES_KEY)
        ),
    )


def _join_requests(
    requests: pd.DataFrame,
    client_conns: pd.DataFrame,
    node_conns: pd.DataFrame,
    pods: pd.DataFrame,
    pod_states: pd.DataFrame,
    through_l7_hop: bool = False,
) -> pd.DataFrame:
    """requests + ``conn_key`` (client capture), ``node_conn_key``, ``pod_matched``, ``pod_method``
    (``through_l7_hop``: as ``joins.attach_pods``); ``node_conns`` carry their ``pod``."""
    conn_key = joins.request_connections(requests, client_conns)
    node_key_by_client = joins.node_connections_for(client_conns, node_conns)
    node_key_by_client.index = client_conns["conn_key"].to_numpy()
    node_key = joins.lookup(conn_key, node_key_by_client.dropna()).astype("Int64")
    # each node connection's Pod was found once (``_joins``): a request takes its connection's
    node_pod = joins.lookup(node_key, node_conns["pod"].set_axis(node_conns["conn_key"]))
    del node_key_by_client
    release_freed_memory()  # the connection joins' frames, before the Pods are attached
    joined = requests.assign(conn_key=conn_key, node_conn_key=node_key)
    matched = joins.attach_pods(joined, node_pod, pods, pod_states, through_l7_hop)
    return joined.assign(pod_matched=matched["pod"], pod_method=matched["pod_method"])


class _StageClock:
    """CPU seconds (user + system, this process and its threads) spent per analysis stage, so
    ``bench/analyze.py`` can show where the time goes. At each stage's end the memory the stage
    freed goes back to the system (``release_freed_memory``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            release_freed_memory()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.process_time() - started


@dataclass
class _Joined:
    """The connection tables and the requests joined to them and to their Pods.

    ``connections`` is the whole table, or its file once it went to analysis/tables and no
    later stage reads it (no hop log): the client and node rows the stages read are kept apart,
    and holding the whole table beside them would double what connections cost. ``spans``:
    each Pod's first and last successful response (``metrics.served_spans``), which the
    attribution and the timings both read."""

    connections: pd.DataFrame | Path
    client_conns: pd.DataFrame
    node_conns: pd.DataFrame
    capture_nodes: dict[str, str]
    requests: pd.DataFrame
    spans: pd.DataFrame


def _joins(
    meta: RunMeta,
    requests: pd.DataFrame,
    connections: pd.DataFrame,
    watched: _Watched,
    writer: _TableWriter | None,
    through_l7_hop: bool = False,
) -> _Joined:
    if writer is not None:
        writer("connections", connections)
    client_names, capture_nodes = _captures_by_point(meta, set(connections["capture"].unique()))
    remote_ips = set(requests["remote_ip"].dropna().unique())
    client_conns = rows_where(
        connections,
        connections["capture"].isin(client_names) & connections["server_ip"].isin(remote_ips),
    )
    node_conns = rows_where(connections, connections["capture"].isin(capture_nodes.keys()))
    node_conns = node_conns.assign(
        pod=joins.pods_by_ip(node_conns["server_ip"], node_conns["syn_ns"], watched.pods)
    )
    # the hop attribution reads the whole table; otherwise it is read back only when asked for,
    # and dropped here, before the requests' joins make their millions of rows
    kept = connections if writer is None or through_l7_hop else writer.paths.table("connections")
    del connections
    release_freed_memory()  # what the masks and the Pod lookup of millions of rows left
    joined = _join_requests(
        requests, client_conns, node_conns, watched.pods, watched.pod_states, through_l7_hop
    )
    spans = metrics.served_spans(joined)
    return _Joined(kept, client_conns, node_conns, capture_nodes, joined, spans)


def _propagation(watched: _Watched, j: _Joined) -> pd.DataFrame:
    """Endpoint propagation per Pod and node: from node captures, else from responses."""
    leaving = metrics.endpoint_leaving_ns(watched.pods, watched.endpoints)
    if j.node_conns.empty:
        return metrics.propagation_from_responses(leaving, j.requests)
    client_ips = set(j.requests["local_ip"].dropna().astype(str).unique())
    return metrics.endpoint_propagation(leaving, j.node_conns, j.capture_nodes, client_ips)


def _rules_lag_by_node(watched: _Watched, j: _Joined, fallback: bool) -> dict[str, float]:
    """Per forwarding node, how long after a Pod's endpoint stopped being usable to it (not
    ready; not serving either where the terminating fallback applies) its rules still sent new
    connections there: the longest such lag seen on node captures."""
    if j.node_conns.empty:
        return {}
    usable_end = metrics.endpoint_leaving_ns(watched.pods, watched.endpoints, serving=fallback)
    client_ips = set(j.requests["local_ip"].dropna().astype(str).unique())
    lag = metrics.endpoint_propagation(usable_end, j.node_conns, j.capture_nodes, client_ips)
    longest = lag.dropna(subset=["node", "propagation_ms"]).groupby("node")["propagation_ms"].max()
    return {str(node): max(float(ms), 0.0) for node, ms in longest.items()}


def _timings(
    meta: RunMeta, watched: _Watched, j: _Joined, propagation: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The timings table and summary section: readiness lead, propagation (per node name, the
    samples of no node left out and counted), drain, and the bounds the advice rests on."""
    first_start = int(j.requests["start_ns"].min()) if len(j.requests) else 0
    load_start = meta.phase("load_start") or first_start
    lead = metrics.readiness_lead(watched.pods, j.spans, load_start)
    drain = metrics.drain_duration(watched.pods, j.spans, j.node_conns)
    named, left_out = metrics.name_forwarding_nodes(
        propagation, watched.pods, set(j.capture_nodes.values())
    )
    parts = [
        pd.DataFrame(
            {"timing": "readiness_lead", "pod": lead.index, "node": pd.NA, "ms": lead.to_numpy()}
        ),
        pd.DataFrame(
            {
                "timing": "propagation",
                "pod": named["pod"],
                "node": named["node"],
                "ms": named["propagation_ms"],
            }
        ),
        pd.DataFrame(
            {"timing": "drain", "pod": drain.index, "node": pd.NA, "ms": drain.to_numpy()}
        ),
    ]
    table = pd.concat(parts, ignore_index=True).astype(
        {"timing": "string", "pod": "string", "node": "string", "ms": "float64"}
    )
    timings: dict[str, Any] = {
        "readiness_lead": metrics.timing_stats(lead),
        "propagation": metrics.timing_stats(named["propagation_ms"]),
        "propagation_bound": metrics.node_aware_upper_bound(named["propagation_ms"], named["node"]),
        "propagation_by_node": {
            str(node): metrics.timing_stats(group["propagation_ms"])
            for node, group in named.groupby("node")
        },
        "propagation_left_out": {"samples": len(left_out), "addresses": sorted(set(left_out))},
        "drain": metrics.timing_stats(drain),
        "drain_bound": metrics.upper_prediction_bound(pd.Series(drain, dtype="float64")),
    }
    if j.node_conns.empty:
        timings["note"] = (
            "no node-side capture: propagation is only seen through responses naming a Pod "
            "after its endpoint left (a lower bound, no per-node figures)"
        )
    return table, timings


@dataclass
class _Read:
    """What the run directory holds, read and scoped to the Service under test."""

    meta: RunMeta
    inputs: _Inputs
    requests: pd.DataFrame
    packets: pd.DataFrame | None  # None: streamed to analysis/tables as it was read
    connections: pd.DataFrame | None  # None once handed to the joins (``take_connections``)
    watched: _Watched
    hops: _Hops

    def take_connections(self) -> pd.DataFrame:
        """The connections table, no longer held here: the joins keep what later stages read."""
        connections, self.connections = self.connections, None
        assert connections is not None, "the connections were already taken"
        return connections


@dataclass
class _Hops:
    """The L7 hops' access logs (hops/*.log) as the hop tables."""

    requests: pd.DataFrame
    attempts: pd.DataFrame


def _read_hops(paths: RunPaths, inputs: _Inputs) -> _Hops:
    """Every hop log's requests and attempts; a damaged line costs that line, an unreadable
    file that hop (both in ``inputs.damaged``)."""
    logs = []
    for file in paths.hop_logs():
        try:
            logs.append(read_access_log(file))
        except TraceError as exc:
            inputs.damage(exc, "nothing of this hop")
            continue
        inputs.present.append(str(file.relative_to(paths.root)))
        for problem in logs[-1].problems:
            inputs.damage(problem.to_trace_error(), "every other line")
    if not logs:
        return _Hops(HOP_REQUESTS.empty(), HOP_ATTEMPTS.empty())
    return _Hops(
        pd.concat([log.requests for log in logs], ignore_index=True),
        pd.concat([log.attempts for log in logs], ignore_index=True),
    )


def _read_inputs(paths: RunPaths, packet_sink: PacketSink | None) -> _Read:
    """Read the run; the packets go to ``packet_sink`` chunk by chunk, or are kept whole."""
    meta = _read_meta(paths)
    inputs = _Inputs(present=["run.json"])
    requests = _read_requests(paths, inputs)
    release_freed_memory()  # the table as read, before the packets stream through
    kept: list[PacketChunk] = []
    server_ports = _server_ports(meta, requests)
    connections = _read_packets(paths, inputs, server_ports, packet_sink or kept.append)
    packets = None
    if packet_sink is None:
        frames = [chunk.frame() for chunk in kept]
        packets = pd.concat(frames, ignore_index=True) if frames else PACKETS.empty()
    watched = _service_scope(meta, _read_events(paths, inputs))
    hop_tables = _read_hops(paths, inputs)
    return _Read(meta, inputs, requests, packets, connections, watched, hop_tables)


def _attribute(read: _Read, j: _Joined, propagation: pd.DataFrame) -> pd.DataFrame:
    """The failures table: each failed request's features, then its cause."""
    meta, watched = read.meta, read.watched
    context = _service_context(
        meta,
        watched.pods,
        watched.endpoints,
        list(j.capture_nodes.values()),
        propagation,
        _rules_lag_by_node(watched, j, terminating_fallback(meta.scenario) is not False),
        metrics.syn_interval_ms(j.requests, max(len(j.capture_nodes), 1)),
    )
    requests, hop_facts = _through_hops(read, j)
    features = attribution.failure_features(
        requests,
        j.client_conns,
        watched.pods,
        watched.endpoints,
        context,
        not j.client_conns.empty,
        watched.gaps,
        watched.pod_states,
        hop_facts,
        j.spans,  # the hops change failures' Pods only, not the successes these come from
    )
    return attribution.decide(features, context)


def _through_hops(read: _Read, j: _Joined) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The joined requests with the Pod each hop's failed attempt went to, and the hop facts
    of the failures a hop logged (None without hop logs: nothing changes)."""
    if read.hops.requests.empty:
        return j.requests, None
    assert isinstance(j.connections, pd.DataFrame)  # kept whole when there are hop logs
    failed = j.requests[j.requests["error_kind"] != ErrorKind.OK.value]
    facts = hop_paths.hop_facts(
        failed,
        read.hops.requests,
        read.hops.attempts,
        read.watched.pods,
        read.watched.endpoints,
        j.connections,
        hop_paths.hop_settings(read.meta.extra_fields(), read.meta.scenario),
    )
    return hop_paths.with_hop_pods(j.requests, facts), facts


def _compute(paths: RunPaths, writer: _TableWriter | None) -> Analysis:
    """Read and analyze a run directory; with a ``writer``, the packets stream to it as they
    are read and the connections go to it as soon as they exist, so writing overlaps with the
    rest (and the packets are never whole in memory). Without one, nothing is written."""
    clock = _StageClock()
    with clock("read"):
        packets_file = writer.stream("packets", _PACKETS_ENCODING) if writer else None
        read = _read_inputs(paths, packets_file)
        if packets_file is not None:
            packets_file.close()
    with clock("joins"):
        through_l7_hop = not read.hops.requests.empty
        # from here only the joins (and the writer, until it is written) hold the connections
        j = _joins(
            read.meta, read.requests, read.take_connections(), read.watched, writer, through_l7_hop
        )
        propagation = _propagation(read.watched, j)
    with clock("attribution"):
        failures = _attribute(read, j, propagation)
    with clock("metrics"):
        windows = metrics.disruption_windows(failures)
        timings_table, timings = _timings(read.meta, read.watched, j, propagation)
        summary = _summary(read.meta, read.requests, failures, windows, timings, read.inputs, paths)
        latency = metrics.latency_per_second(read.requests)
        masked = hops.masked_retries(read.hops.requests, read.hops.attempts)
        summary["masked_retries"] = hops.retries_summary(
            read.hops.requests, read.hops.attempts, masked
        )
        summary["recommendations"] = _recommendations(read, failures, summary)
    tables: dict[str, pd.DataFrame | Path] = {
        "requests": j.requests,
        "packets": paths.table("packets") if read.packets is None else read.packets,
        "connections": j.connections,
        "pods": read.watched.pods,
        "pod_states": read.watched.pod_states,
        "endpoints": read.watched.endpoints,
        "failures": failures,
        "windows": windows,
        "latency": latency,
        "timings": timings_table,
        "hop_requests": read.hops.requests,
        "hop_attempts": read.hops.attempts,
        "masked_retries": masked,
    }
    return Analysis(meta=read.meta, tables=_Tables(tables), summary=summary, cpu_s=clock.seconds)


class _Tables(Mapping[str, pd.DataFrame]):
    """An analysis's tables by name, with their schema's dtypes. A table streamed to its file
    rather than held (packets) is read back from there only when asked for; a table whose
    columns were held as categoricals gets back its text when asked for."""

    def __init__(self, tables: dict[str, pd.DataFrame | Path]) -> None:
        self._tables = tables

    def __getitem__(self, name: str) -> pd.DataFrame:
        table = self._tables[name]
        if isinstance(table, Path):
            table = pd.read_parquet(table)
        elif text := _text_dtypes(table):
            table = table.astype(text)
        self._tables[name] = table
        return table

    def held(self, name: str) -> pd.DataFrame | Path:
        """The table as the analysis holds it (categoricals kept: for the writer)."""
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


def _recommendations(read: _Read, failures: pd.DataFrame, summary: Summary) -> list[dict[str, Any]]:
    """The advice as data (``analyzer.advice``): what to change, from what to what, and why."""
    lag_ms, lag_n = advice.lag_after_deletion(failures)
    facts = advice.AdviceInputs(
        scenario_name=advice.scenario_name(read.meta.scenario, read.meta.run_id),
        failed=len(failures),
        failed_by_cause=summary["failed_by_cause"],
        timings=summary["timings"],
        settings=advice.rollout_settings(
            read.meta.scenario, read.meta.service, read.meta.extra_fields().get("hops")
        ),
        inputs=dict(summary["inputs"]),
        lag_after_deletion_ms=lag_ms,
        lag_samples=lag_n,
        container_exits=advice.container_exits(read.watched.pod_states),
        masked_retries=dict(summary["masked_retries"]),
    )
    return [r.as_json() for r in advice.recommend(facts)]


def _summary(
    meta: RunMeta,
    requests: pd.DataFrame,
    failures: pd.DataFrame,
    windows: pd.DataFrame,
    timings: dict[str, Any],
    inputs: _Inputs,
    paths: RunPaths,
) -> Summary:
    total, failed = len(requests), len(failures)
    degraded = _degradation(meta, inputs, paths)
    return {
        "schema_version": SCHEMA_VERSION,
        "analyzer_version": ANALYZER_VERSION,
        "run_id": meta.run_id,
        "status": meta.status.value,
        "analysis_status": "degraded" if degraded else "complete",
        "degraded_because": degraded,
        "requests_total": total,
        "requests_failed": failed,
        "failure_rate": failed / total if total else 0.0,
        "latency": metrics.timing_stats(metrics.success_latency_ms(requests)),
        "failed_by_cause": metrics.failed_by_cause(failures),
        "windows": _windows_json(windows),
        "disruption_seconds": metrics.disruption_seconds(failures),
        "timings": timings,
        "pod_match": {m.value: int((failures["pod_method"] == m.value).sum()) for m in PodMatch},
        "mean_confidence": round(float(failures["confidence"].mean()), 3) if failed else None,
        "evidence_examples": _evidence_examples(failures),
        "inputs": {
            "present": inputs.present,
            "missing": inputs.missing,
            "damaged": inputs.damaged,
            "fingerprint": input_fingerprint(paths),
        },
        "recommendations": [],
        "masked_retries": {},
    }


def _degradation(meta: RunMeta, inputs: _Inputs, paths: RunPaths) -> list[str]:
    """Why the analysis saw less than happened, one sentence each (empty: it saw everything).

    A damaged file or packets the kernel dropped do not stop the analysis, but every count
    built on them (failures seen in packets, windows, timings) is then a lower bound, and a
    report that says ``complete`` would claim more than it knows."""
    reasons = [
        f"{_in_run(paths, d['file'])}: {d['where']}: {d['error']} (kept {d['kept']})"
        for d in inputs.damaged
    ]
    reasons += [
        f"{capture.file}: the kernel dropped {capture.kernel_drops} packets"
        for capture in meta.captures
        if capture.kernel_drops
    ]
    return reasons


def _in_run(paths: RunPaths, file: str) -> str:
    """A file's path as the run directory's documents name it (relative to the run)."""
    try:
        return str(Path(file).resolve().relative_to(paths.root.resolve()))
    except ValueError:
        return file


def _evidence_examples(failures: pd.DataFrame) -> dict[str, str]:
    """Per cause present, the evidence of its most confident (then earliest) failure."""
    ranked = failures.sort_values(["confidence", "start_ns"], ascending=[False, True])
    first = ranked.drop_duplicates("cause")
    return {str(c): str(e) for c, e in zip(first["cause"], first["evidence"], strict=True)}


def _windows_json(windows: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in windows.to_dict("records"):
        start, end = int(row["start_ns"]), int(row["end_ns"])
        out.append(
            {
                "start_ns": start,
                "end_ns": end,
                "duration_ms": (end - start) / 1e6,
                "failed": int(row["failed"]),
                "new_failed": int(row["new_failed"]),
                "reused_failed": int(row["reused_failed"]),
                "dominant_cause": str(row["dominant_cause"]),
                "causes": json.loads(str(row["causes"])),
            }
        )
    return out


class _TableWriter:
    """Checks and writes tables on two threads as they are handed over, then the rest. The
    stale summary.json goes first and the new one is written last (its presence marks a
    complete analysis). Arrow encodes Parquet without holding the GIL, and packets.parquet
    alone takes seconds for ten million packets."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.pending: dict[str, Future[None]] = {}
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.paths.tables.mkdir(parents=True, exist_ok=True)
            self.paths.summary.unlink(missing_ok=True)
            self.started = True

    def __call__(self, name: str, frame: pd.DataFrame) -> None:
        self._start()
        schema = TABLES[name]
        if schema is not None:
            check_frame(frame, schema, f"analysis/tables/{name}.parquet")
        self.pending[name] = self.pool.submit(_write_table, frame, self.paths.table(name))

    def stream(self, name: str, encoding: dict[str, Any]) -> _TableStream:
        """A table to be written chunk by chunk as it is read (a canonical table: its chunks
        were checked where they were made), with ``pq.ParquetWriter``'s ``encoding`` options."""
        self._start()
        return _TableStream(self, name, encoding)

    def finish(self, tables: _Tables) -> None:
        held = {name: tables.held(name) for name in tables if name not in self.pending}
        frames = {name: table for name, table in held.items() if isinstance(table, pd.DataFrame)}
        for name in sorted(frames, key=lambda name: -len(frames[name])):
            self(name, frames[name])
        for future in self.pending.values():
            future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


#: How packets.parquet is encoded: a dictionary only for the text columns (capture, addresses:
#: few values, handed over as Arrow dictionaries), and the integers byte-stream-split, then LZ4:
#: each value's bytes regrouped by position (the high bytes of times, counters and ports are
#: alike row to row) so that the fastest codec shrinks them. For the 1M case that writes the
#: same 160 MB as deltas with Snappy did, with 0.6 s of CPU instead of 0.97 (the delta
#: encoder's block flush was the largest share). Statistics only for the time, the one column
#: a reader filters row groups by.
_PACKETS_ENCODING: dict[str, Any] = {
    "use_dictionary": list(PACKETS_TEXT),
    "column_encoding": dict.fromkeys(
        [name for name in PACKETS.names if name not in PACKETS_TEXT], "BYTE_STREAM_SPLIT"
    ),
    "compression": {name: "none" if name in PACKETS_TEXT else "lz4" for name in PACKETS.names},
    "write_statistics": ["ts_ns"],
}


def _table_encoding(frame: pd.DataFrame) -> dict[str, Any]:
    """How a table is encoded (``pq.write_table``'s options), as packets.parquet is: Arrow's
    defaults try a dictionary on every column and keep min/max statistics of every one, and for
    the requests and connections (a million rows) most of that is wasted. A dictionary only
    for text (a few distinct values: addresses, kinds, paths); deltas for integers (times,
    counters, ports and keys, mostly increasing or close together: 40 % smaller files too);
    no statistics for text, whose min/max no reader filters by. About 0.35 s less CPU for the
    requests and connections of the 1M case."""
    text = [str(name) for name, dtype in frame.dtypes.items() if _is_text(dtype)]
    integers = [
        str(name)
        for name, dtype in frame.dtypes.items()
        if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    ]
    return {
        "use_dictionary": text,
        "column_encoding": dict.fromkeys(integers, "DELTA_BINARY_PACKED"),
        "write_statistics": [str(name) for name in frame.columns if str(name) not in text],
    }


def _is_text(dtype: Any) -> bool:
    """Whether a column holds text: strings, Python objects (text in the tables) or
    categoricals (text held as codes, ``_PASSED_THROUGH_TEXT``)."""
    return isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype)


#: Rows per row group: what ``pq.write_table`` (so ``DataFrame.to_parquet``) puts in one.
_ROW_GROUP_ROWS = 1024 * 1024


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    """``frame.to_parquet(path)``, its categorical columns read back as the text they stand
    for: the file carries the Arrow types and pandas metadata of a frame that held the text, so
    a reader gets the schema's dtypes. They go to Parquet as Arrow dictionaries, which its
    dictionary pages take as they are: the text is never made per row, nor hashed again (as
    packets.parquet's addresses). Encoded as ``_table_encoding`` says."""
    text = _text_dtypes(frame)
    encoding = _table_encoding(frame)
    if not text:
        frame.to_parquet(path, index=False, **encoding)
        return
    read_back = pa.Schema.from_pandas(frame.iloc[:0].astype(text), preserve_index=False)
    written = pa.Schema.from_pandas(frame.iloc[:0], preserve_index=False)
    with pq.ParquetWriter(path, written, **encoding) as out:
        for start in range(0, max(len(frame), 1), _ROW_GROUP_ROWS):
            rows = frame.iloc[start : start + _ROW_GROUP_ROWS]
            out.write_table(pa.Table.from_pandas(rows, preserve_index=False))
        out.add_key_value_metadata(read_back_metadata(read_back))


class _TableStream:
    """One table written in order as its chunks come, on the writer's pool: a chunk is handed
    over once the one before it is written, so at most one waits while the next is read."""

    def __init__(self, writer: _TableWriter, name: str, encoding: dict[str, Any]) -> None:
        self.writer, self.name, self.encoding = writer, name, encoding
        self.file: pq.ParquetWriter | None = None
        self.last: Future[None] | None = None

    def __call__(self, chunk: PacketChunk) -> None:
        table = chunk.arrow()
        if self.last is not None:
            self.last.result()
        self.last = self.writer.pool.submit(self._write, table)

    def _write(self, table: pa.Table) -> None:
        if self.file is None:
            path = self.writer.paths.table(self.name)
            self.file = pq.ParquetWriter(path, table.schema, **self.encoding)
        self.file.write_table(table)

    def close(self) -> None:
        """Finish the file (an empty table if no chunk came); ``finish`` then leaves it be."""
        if self.last is None:
            schema = TABLES[self.name]
            assert schema is not None  # only canonical tables are streamed
            self.writer(self.name, schema.empty())
            return
        self.last.result()
        assert self.file is not None  # the first chunk's write opened it
        self.file.add_key_value_metadata(packets_parquet_metadata())  # strings, not dictionaries
        self.file.close()
        self.writer.pending[self.name] = self.last


def _write_summary(paths: RunPaths, summary: Summary) -> None:
    text = json.dumps(summary, indent=2, default=_json_default) + "\n"
    atomic_write_bytes(paths.summary, text.encode())


def analyze(paths: RunPaths, *, write_tables: bool = True, write_summary: bool = True) -> Analysis:
    """Analyze a run directory: the one entry point (``rolltrace analyze``, ``rolltrace run``,
    ``load_run``). With ``write_tables`` the tables go to ``analysis/tables/`` while the
    analysis computes; with ``write_summary`` summary.json is written after them (alone, it
    replaces the tables there: they belong to an older analysis). Nothing is written with both
    off.
    """
    with small_pages():
        return _analyze(paths, write_tables, write_summary)


def _analyze(paths: RunPaths, write_tables: bool, write_summary: bool) -> Analysis:
    writer = _TableWriter(paths) if write_tables else None
    try:
        analysis = _compute(paths, writer)
        started = time.process_time()
        if writer is not None:
            assert isinstance(analysis.tables, _Tables)  # as ``_compute`` makes them
            writer.finish(analysis.tables)
        if write_summary:
            if writer is None:  # beside older tables it would pass for a cached analysis
                for name in TABLES:
                    paths.table(name).unlink(missing_ok=True)
            _write_summary(paths, analysis.summary)
        if writer is not None or write_summary:
            # the writer's threads count too (process time); the big tables started during joins
            analysis.cpu_s["write"] = time.process_time() - started
    finally:
        if writer is not None:
            writer.close()
    return analysis


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def analyze_run(path: str | os.PathLike[str]) -> Summary:
    """``analyze`` of the run directory at ``path``, writing everything; returns the summary
    (the public API docs/api.md names)."""
    return analyze(RunPaths(path)).summary
