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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from analyzer import attribution, joins, metrics
from analyzer.connections import tcp_connections
from analyzer.errors import TraceError, UnusableRunError
from analyzer.events import endpoint_membership, pod_lifecycle, scan_events
from analyzer.pcap import read_pcap
from analyzer.requests import load_requests
from analyzer.rundir import RunMeta, RunPaths, atomic_write_bytes, read_run_meta, traffic_policy
from analyzer.schema import (
    CONNECTIONS,
    ENDPOINTS,
    FAILURES,
    PACKETS,
    PODS,
    REQUESTS,
    SCHEMA_VERSION,
    WINDOWS,
    PodMatch,
    TableSchema,
    check_frame,
)

#: Bumped whenever attribution or metrics change meaning, so cached analyses are recomputed.
ANALYZER_VERSION = "1"

#: Tables written to analysis/tables/, with the schema each is checked against (None: not a
#: canonical table, documented in docs/api.md).
TABLES: dict[str, TableSchema | None] = {
    "requests": REQUESTS,
    "packets": PACKETS,
    "connections": CONNECTIONS,
    "pods": PODS,
    "endpoints": ENDPOINTS,
    "failures": FAILURES,
    "windows": WINDOWS,
    "latency": None,
    "timings": None,
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


@dataclass
class Analysis:
    """Everything one analysis produced: the tables and the summary."""

    meta: RunMeta
    tables: dict[str, pd.DataFrame]
    summary: Summary


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
    files = [paths.run_json, paths.requests, paths.events, *paths.captures()]
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
        frame, problems = load_requests(paths.requests)
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
    return frame


def _read_packets(paths: RunPaths, inputs: _Inputs) -> pd.DataFrame:
    frames = []
    for capture in paths.captures():
        name = str(capture.relative_to(paths.root))
        try:
            frames.append(read_pcap(capture))
            inputs.present.append(name)
        except TraceError as exc:
            kept = exc.kept if isinstance(exc.kept, pd.DataFrame) else None
            inputs.damage(exc, f"{0 if kept is None else len(kept)} packets before the damage")
            if kept is not None and not kept.empty:
                frames.append(kept)
    if not frames:
        inputs.missing.append("packets/*.pcap")
        return PACKETS.empty()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _read_events(paths: RunPaths, inputs: _Inputs) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Pods, endpoints and the watch's GAP markers as rows (since_ns, recv_ns)."""
    no_gaps = np.empty((0, 2), dtype="float64")
    if not paths.events.exists():
        inputs.missing.append("events.jsonl")
        return PODS.empty(), ENDPOINTS.empty(), no_gaps
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
    return pod_lifecycle(events), endpoint_membership(events), gaps


def _service_scope(
    meta: RunMeta, pods: pd.DataFrame, endpoints: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Only the Service under test and its Pods: a namespace's other Services would otherwise
    count as ready endpoints and its other Pods become inference candidates. A Pod belongs when
    the Service's slices ever listed it, or its ReplicaSet's other Pods were listed."""
    name = meta.service.get("name")
    if not isinstance(name, str) or not (endpoints["service"] == name).any():
        return pods, endpoints
    endpoints = endpoints[endpoints["service"] == name]
    listed = set(endpoints["pod"].dropna().astype(str))
    replicasets = set(pods.loc[pods["pod"].isin(listed), "replicaset"].dropna().astype(str))
    keep = pods["pod"].isin(listed) | pods["replicaset"].isin(replicasets)
    return pods[keep], endpoints


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
    meta: RunMeta, pods: pd.DataFrame, endpoints: pd.DataFrame, node_names: list[str]
) -> attribution.ServiceContext:
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
    return attribution.ServiceContext(
        desired_replicas=None if replicas is None else int(replicas),
        local_policy=policy.lower() == "local",
        nodes=tuple(nodes),
        lb_targets_pods=str(meta.service.get("lb_targets", "nodes")).lower() == "pods",
    )


def _join_requests(
    requests: pd.DataFrame,
    client_conns: pd.DataFrame,
    node_conns: pd.DataFrame,
    pods: pd.DataFrame,
) -> pd.DataFrame:
    """requests + ``conn_key`` (client capture), ``node_conn_key``, ``pod_matched``, ``pod_method``."""
    conn_key = joins.request_connections(requests, client_conns)
    node_key_by_client = joins.node_connections_for(client_conns, node_conns)
    node_key_by_client.index = client_conns["conn_key"].to_numpy()
    node_key = joins.lookup(conn_key, node_key_by_client.dropna()).astype("Int64")
    node_info = node_conns.set_index("conn_key")
    node_pod = pd.Series(pd.NA, index=requests.index, dtype="string")
    if not node_info.empty and node_key.notna().any():
        node_pod = joins.pods_by_ip(
            joins.lookup(node_key, node_info["server_ip"]),
            joins.lookup(node_key, node_info["syn_ns"]),
            pods,
        )
    joined = requests.assign(conn_key=conn_key, node_conn_key=node_key)
    matched = joins.attach_pods(joined, node_pod, pods)
    return joined.assign(pod_matched=matched["pod"], pod_method=matched["pod_method"])


def compute(
    path: str | os.PathLike[str],
    on_table: Callable[[str, pd.DataFrame], None] | None = None,
) -> Analysis:
    """Read and analyze a run directory (no writes). ``on_table`` is handed the big input-side
    tables (packets, connections) as soon as they exist, so a writer can overlap with the rest."""
    paths = RunPaths(path)
    meta = _read_meta(paths)
    inputs = _Inputs(present=["run.json"])
    requests = _read_requests(paths, inputs)
    packets = _read_packets(paths, inputs)
    pods, endpoints, gaps = _read_events(paths, inputs)
    pods, endpoints = _service_scope(meta, pods, endpoints)

    server_ports = {int(p) for p in requests["remote_port"].unique()}
    for key in ("port", "target_port", "node_port"):
        if isinstance(meta.service.get(key), int):
            server_ports.add(int(meta.service[key]))
    if on_table is not None:
        on_table("packets", packets)
    connections = (
        tcp_connections(packets, server_ports) if not packets.empty else CONNECTIONS.empty()
    )
    if on_table is not None:
        on_table("connections", connections)
    client_names, capture_nodes = _captures_by_point(meta, set(connections["capture"].unique()))
    remote_ips = set(requests["remote_ip"].astype(str).unique())
    client_conns = connections[
        connections["capture"].isin(client_names) & connections["server_ip"].isin(remote_ips)
    ]
    node_conns = connections[connections["capture"].isin(capture_nodes.keys())]
    node_conns = node_conns.assign(
        pod=joins.pods_by_ip(node_conns["server_ip"], node_conns["syn_ns"], pods)
    )

    joined = _join_requests(requests, client_conns, node_conns, pods)
    context = _service_context(meta, pods, endpoints, list(capture_nodes.values()))
    has_packets = not client_conns.empty
    features = attribution.failure_features(
        joined, client_conns, pods, endpoints, context, has_packets, gaps
    )
    failures = attribution.decide(features, context)
    windows = metrics.disruption_windows(failures)
    total = len(requests)
    latency = metrics.latency_per_second(requests)

    first_start = int(requests["start_ns"].min()) if total else 0
    load_start = meta.phase("load_start") or first_start
    lead = metrics.readiness_lead(pods, joined, load_start)
    leaving = metrics.endpoint_leaving_ns(pods, endpoints)
    client_ips = set(requests["local_ip"].dropna().astype(str).unique())
    if node_conns.empty:
        propagation = metrics.propagation_from_responses(leaving, joined)
    else:
        propagation = metrics.endpoint_propagation(leaving, node_conns, capture_nodes, client_ips)
    drain = metrics.drain_duration(pods, joined, node_conns)
    timings_table = pd.concat(
        [
            pd.DataFrame(
                {
                    "timing": "readiness_lead",
                    "pod": lead.index,
                    "node": pd.NA,
                    "ms": lead.to_numpy(),
                }
            ),
            pd.DataFrame(
                {
                    "timing": "propagation",
                    "pod": propagation["pod"],
                    "node": propagation["node"],
                    "ms": propagation["propagation_ms"],
                }
            ),
            pd.DataFrame(
                {"timing": "drain", "pod": drain.index, "node": pd.NA, "ms": drain.to_numpy()}
            ),
        ],
        ignore_index=True,
    ).astype({"timing": "string", "pod": "string", "node": "string", "ms": "float64"})

    failed = len(failures)
    timings: dict[str, Any] = {
        "readiness_lead": metrics.timing_stats(lead),
        "propagation": metrics.timing_stats(propagation["propagation_ms"]),
        "propagation_by_node": {
            str(node): metrics.timing_stats(group["propagation_ms"])
            for node, group in propagation.groupby("node")
        },
        "drain": metrics.timing_stats(drain),
    }
    if node_conns.empty:
        timings["note"] = (
            "no node-side capture: propagation is only seen through responses naming a Pod "
            "after its endpoint left (a lower bound, no per-node figures)"
        )
    summary: Summary = {
        "schema_version": SCHEMA_VERSION,
        "analyzer_version": ANALYZER_VERSION,
        "run_id": meta.run_id,
        "status": meta.status.value,
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
    }
    tables = {
        "requests": joined,
        "packets": packets,
        "connections": connections,
        "pods": pods,
        "endpoints": endpoints,
        "failures": failures,
        "windows": windows,
        "latency": latency,
        "timings": timings_table,
    }
    return Analysis(meta=meta, tables=tables, summary=summary)


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
    """Checks and writes tables on two threads as they are handed over, then the rest and
    summary.json last (its presence marks a complete analysis). Arrow encodes Parquet without
    holding the GIL, and packets.parquet alone takes seconds for ten million packets."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.pending: dict[str, Future[None]] = {}

    def __call__(self, name: str, frame: pd.DataFrame) -> None:
        if not self.pending:
            self.paths.tables.mkdir(parents=True, exist_ok=True)
            self.paths.summary.unlink(missing_ok=True)
        schema = TABLES[name]
        if schema is not None:
            check_frame(frame, schema, f"analysis/tables/{name}.parquet")
        self.pending[name] = self.pool.submit(frame.to_parquet, self.paths.table(name), index=False)

    def finish(self, analysis: Analysis) -> None:
        rest = [(n, f) for n, f in analysis.tables.items() if n not in self.pending]
        for name, frame in sorted(rest, key=lambda item: -len(item[1])):
            self(name, frame)
        for future in self.pending.values():
            future.result()
        text = json.dumps(analysis.summary, indent=2, default=_json_default) + "\n"
        atomic_write_bytes(self.paths.summary, text.encode())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def analyze(path: str | os.PathLike[str]) -> Analysis:
    """Analyze a run directory and write ``analysis/``, writing tables while computing."""
    writer = _TableWriter(RunPaths(path))
    try:
        analysis = compute(path, on_table=writer)
        writer.finish(analysis)
    finally:
        writer.close()
    return analysis


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def analyze_run(path: str | os.PathLike[str]) -> Summary:
    """Analyze a run directory and write ``analysis/tables/*.parquet`` and ``summary.json``."""
    return analyze(path).summary
