"""Run the model for a recipe and write a complete run directory (docs/trace-format.md), backend
synthetic."""

from __future__ import annotations

import dataclasses
import logging
import math
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.pcap_writer import PacketFileWriter, open_pcap, open_pcapng
from analyzer.readers.requests import write_requests
from analyzer.rundir import Capture, RunMeta, RunPaths, atomic_write_bytes, write_run_meta
from analyzer.schema import REQUESTS, SCHEMA_VERSION, RunStatus, TruthEvent, check_frame
from analyzer.tracebuilder.model import SERVICE_PORT, TARGET_PORT, Cluster, build_cluster
from analyzer.tracebuilder.packets import WINDOW_SEGMENTS, capture_chunks, capture_names
from analyzer.tracebuilder.recipes import Recipe, get_recipe
from analyzer.tracebuilder.traffic import CAUSES, ERRORS, Traffic, generate
from analyzer.tracebuilder.watch import Clock, dump_jsonl, truth_lines, watch_lines

T0_NS = 1_790_000_000_000_000_000  # 2026-09-21: one fixed epoch keeps builds reproducible
WINDOW_MERGE_S = 1.0
log = logging.getLogger(__name__)  # progress of large builds (bench/analyze_large.py)

_ERROR_DETAIL = {
    "refused": "ConnectionRefusedError(111, 'Connection refused')",
    "connect-timeout": "ConnectTimeout: connect() timed out",
    "reset": "ConnectionResetError(104, 'Connection reset by peer')",
    "eof": "RemoteDisconnected('Remote end closed connection without response')",
    "read-timeout": "ReadTimeout: no response within the read timeout",
    "http-5xx": "HTTP 503 Service Unavailable",
}


@dataclass(frozen=True)
class BuiltRun:
    """A written run directory and the truth it was built from (all times realtime ns).

    ``causes``: one row per failed request (request_id, cause, error_kind, pod, node).
    ``windows``: per cause, failures merged when less than 1 s apart (cause, start_ns, end_ns,
    failed). ``timings``: injected timings (metric, pod, node, value_ms): ``propagation`` per
    node (endpoint change → that node's rules), ``readiness_lead`` per new Pod (Ready → able to
    serve; positive = Ready too early), ``prestop`` and ``drain`` (SIGTERM → exit) per old Pod.
    ``pods``: the model's lifecycle times per Pod (of its first container run and its final
    termination) and how many times its container was restarted.
    """

    path: Path
    paths: RunPaths
    recipe: Recipe
    seed: int
    requests: pd.DataFrame
    causes: pd.DataFrame
    windows: pd.DataFrame
    timings: pd.DataFrame
    pods: pd.DataFrame


def build_run(
    path: str | Path,
    recipe: str | Recipe,
    *,
    seed: int = 0,
    rate: float | None = None,
    duration_s: float | None = None,
    window_segments: int = WINDOW_SEGMENTS,
    **overrides: Any,
) -> BuiltRun:
    """Build ``recipe`` (a catalogue name or a Recipe) into the run directory ``path``.

    The captures are written in time windows of about ``window_segments`` TCP segments each;
    the files do not depend on it, the builder's memory does."""
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if rate is not None:
        overrides["rate"] = rate
    if duration_s is not None:
        overrides["duration_s"] = duration_s
    r = base.with_overrides(**overrides)
    rng = np.random.default_rng(seed)
    cluster = build_cluster(r, rng)
    traffic = generate(cluster, rng)
    log.info("traffic: %d requests, %d connections", len(traffic.requests), len(traffic.conns))
    clock = Clock(T0_NS)
    paths = RunPaths(path)
    paths.packets_dir.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(exist_ok=True)

    requests = _requests_frame(cluster, traffic, clock)
    write_requests(paths.requests, requests)
    log.info("requests.parquet written")
    captures = _write_captures(cluster, traffic, paths, r, window_segments)
    atomic_write_bytes(paths.events, dump_jsonl(watch_lines(cluster, clock, rng)))
    causes = _causes(cluster, traffic, requests)
    cause_lines = [
        {
            "ts_ns": int(t),
            "source": "builder",
            "event": TruthEvent.REQUEST_CAUSE.value,
            "request_id": int(i),
            "cause": c,
        }
        for t, i, c in zip(causes["start_ns"], causes["request_id"], causes["cause"], strict=True)
    ]
    truth = sorted(truth_lines(cluster, clock) + cause_lines, key=lambda line: line["ts_ns"])
    atomic_write_bytes(paths.truth, dump_jsonl(truth))
    write_run_meta(paths.run_json, _run_meta(cluster, clock, captures, seed))
    return BuiltRun(
        path=Path(path),
        paths=paths,
        recipe=r,
        seed=seed,
        requests=requests,
        causes=causes.drop(columns="start_ns"),
        windows=_windows(causes),
        timings=_timings(cluster),
        pods=_pods(cluster, clock),
    )


def _ns(clock: Clock, seconds: pd.Series | np.ndarray[Any, Any]) -> pd.arrays.IntegerArray:
    values = np.asarray(seconds, dtype=np.float64)
    missing = np.isnan(values)
    ns = clock.t0_ns + np.round(np.where(missing, 0.0, values) * 1e9).astype(np.int64)
    return pd.arrays.IntegerArray(ns, missing)


def _requests_frame(cluster: Cluster, traffic: Traffic, clock: Clock) -> pd.DataFrame:
    q = traffic.requests
    addr = cluster.addresses
    conns = traffic.conns.set_index("conn_id")
    error = np.array([e.value for e in ERRORS], dtype=object)[q["error"].to_numpy()]
    status = q["status"].to_numpy()
    answered = status >= 0
    names = np.array([p.name for p in cluster.pods] + [None], dtype=object)
    versions = np.array([p.version for p in cluster.pods] + [None], dtype=object)
    pod = q["pod"].to_numpy()
    header = np.where(answered, pod, -1)  # index -1 is None: no response, no X-Pod-Name
    header_pod, header_version = names[header], versions[header]
    detail = np.array([_ERROR_DETAIL.get(e) for e in error], dtype=object)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(len(q), dtype=np.int64),
            "user_kind": pd.array(q["user_kind"].to_numpy(), dtype="string"),
            "scheduled_ns": _ns(clock, q["scheduled"]).to_numpy(np.int64),
            "start_ns": _ns(clock, q["start"]).to_numpy(np.int64),
            "connect_ns": _ns(clock, q["connect"]),
            "first_byte_ns": _ns(clock, q["first_byte"]),
            "end_ns": _ns(clock, q["end"]).to_numpy(np.int64),
            "local_ip": pd.array(np.full(len(q), addr.client, dtype=object), dtype="string"),
            "local_port": pd.array(conns.loc[q["conn_id"], "port"].to_numpy(), dtype="Int64"),
            "remote_ip": pd.array(np.full(len(q), addr.lb, dtype=object), dtype="string"),
            "remote_port": np.full(len(q), SERVICE_PORT, dtype=np.int64),
            "conn_id": q["conn_id"].to_numpy(np.int64),
            "conn_new": q["conn_new"].to_numpy(bool),
            "conn_seq": q["conn_seq"].to_numpy(np.int64),
            "method": pd.array(np.full(len(q), "GET", dtype=object), dtype="string"),
            "path": pd.array(np.where(q["slow"].to_numpy(bool), "/slow", "/"), dtype="string"),
            "status_code": pd.arrays.IntegerArray(status.astype(np.int64), ~answered),
            "error_kind": pd.array(error, dtype="string"),
            "error_detail": pd.array(detail, dtype="string"),
            "pod": pd.array(header_pod, dtype="string"),
            "pod_version": pd.array(header_version, dtype="string"),
        }
    )
    return check_frame(frame, REQUESTS, "tracebuilder")


def _write_captures(
    cluster: Cluster, traffic: Traffic, paths: RunPaths, r: Recipe, window_segments: int
) -> list[Capture]:
    """Write every capture window by window (``capture_chunks``): memory follows the window,
    not the run."""
    suffix = ".pcapng" if r.pcapng else ".pcap"
    names = capture_names(cluster)
    files = {name: paths.packets_dir / f"{name}{suffix}" for name in names}
    with ExitStack() as stack:
        writers = {
            name: stack.enter_context(_open_capture(file, r)) for name, file in files.items()
        }
        for name, frame in capture_chunks(cluster, traffic, T0_NS, window_segments=window_segments):
            if name == "client" and r.duplicate_client_packets:
                frame = frame.loc[np.repeat(np.arange(len(frame)), 2)].reset_index(drop=True)
            writers[name].write(frame)
            if name == "client":
                log.info("captures: %d client packets written", writers[name].written)
    return [
        Capture(
            file=f"packets/{file.name}",
            point="client" if name == "client" else "node",
            node=None if name == "client" else name,
        )
        for name, file in files.items()
    ]


def _open_capture(file: Path, r: Recipe) -> AbstractContextManager[PacketFileWriter]:
    if r.pcapng:
        tsresol = 9 if r.nanosecond else 6
        return open_pcapng(file, linktype=r.linktype, tsresol=tsresol, snaplen=r.snaplen)
    return open_pcap(file, linktype=r.linktype, nanosecond=r.nanosecond, snaplen=r.snaplen)


def _causes(cluster: Cluster, traffic: Traffic, requests: pd.DataFrame) -> pd.DataFrame:
    q = traffic.requests
    failed = np.flatnonzero(q["cause"].to_numpy() >= 0)
    pod = q["pod"].to_numpy()[failed]
    names = np.array([p.name for p in cluster.pods] + [None], dtype=object)
    nodes = np.array([f"node-{p.node + 1}" for p in cluster.pods] + [None], dtype=object)
    return pd.DataFrame(
        {
            "request_id": requests["request_id"].to_numpy()[failed],
            "start_ns": requests["start_ns"].to_numpy()[failed],
            "cause": pd.array(
                np.array([c.value for c in CAUSES], dtype=object)[q["cause"].to_numpy()[failed]],
                dtype="string",
            ),
            "error_kind": requests["error_kind"].to_numpy()[failed],
            "pod": pd.array(names[pod], dtype="string"),
            "node": pd.array(nodes[pod], dtype="string"),
        }
    )


def _windows(causes: pd.DataFrame) -> pd.DataFrame:
    rows = []
    gap = int(WINDOW_MERGE_S * 1e9)
    for cause, group in causes.groupby("cause", sort=True):
        t = np.sort(group["start_ns"].to_numpy())
        breaks = np.flatnonzero(np.diff(t) > gap)
        first = np.r_[0, breaks + 1]
        last = np.r_[breaks, len(t) - 1]
        for a, b in zip(first, last, strict=True):
            rows.append((str(cause), int(t[a]), int(t[b]), int(b - a + 1)))
    frame = pd.DataFrame(rows, columns=["cause", "start_ns", "end_ns", "failed"])
    return frame.astype({"start_ns": "int64", "end_ns": "int64", "failed": "int64"})


def _timings(cluster: Cluster) -> pd.DataFrame:
    rows: list[tuple[str, str | None, str | None, float]] = []
    for n in range(cluster.nodes):
        rows.append(("propagation", None, f"node-{n + 1}", float(cluster.node_delay[n]) * 1000))
    for p in cluster.pods:
        node = f"node-{p.node + 1}"
        if p.created > 0:
            rows.append(("readiness_lead", p.name, node, (p.app_ready - p.ready) * 1000))
        if math.isfinite(p.deletion):
            rows.append(("prestop", p.name, node, (p.prestop_end - p.prestop_start) * 1000))
            rows.append(("drain", p.name, node, (p.exited - p.sigterm) * 1000))
    return pd.DataFrame(rows, columns=["metric", "pod", "node", "value_ms"])


def _pods(cluster: Cluster, clock: Clock) -> pd.DataFrame:
    times = [
        "created",
        "started",
        "listening",
        "app_ready",
        "ready",
        "deletion",
        "prestop_start",
        "prestop_end",
        "sigterm",
        "sigkill",
        "stop_accepting",
        "exited",
        "gone",
    ]
    frame = pd.DataFrame(
        {
            "pod": [p.name for p in cluster.pods],
            "uid": [p.uid for p in cluster.pods],
            "revision": [p.revision for p in cluster.pods],
            "node": [f"node-{p.node + 1}" for p in cluster.pods],
            "ip": [p.ip for p in cluster.pods],
            "restarts": [len(p.restarts) for p in cluster.pods],
        }
    )
    for name in times:
        values = cluster.pod_array(name)
        frame[f"{name}_ns"] = _ns(clock, np.where(np.isfinite(values), values, np.nan))
    return frame


def _run_meta(cluster: Cluster, clock: Clock, captures: list[Capture], seed: int) -> RunMeta:
    r = cluster.recipe
    scenario = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in dataclasses.asdict(r).items()
    }
    scenario["causes"] = [str(c) for c in r.causes]
    phases = {
        "load_start": clock.ns(0.0),
        "rollout_trigger": clock.ns(r.rollout_at_s),
        "rollout_complete": clock.ns(cluster.rollout_complete),
        "load_stop": clock.ns(r.duration_s),
    }
    reasons = []
    if cluster.rollout_complete > r.duration_s:
        # what a runner would record when the load stops first: the completion was not seen
        del phases["rollout_complete"]
        reasons.append("load stopped before the rollout completed")
    return RunMeta(
        schema_version=SCHEMA_VERSION,
        run_id=f"synthetic-{r.name}-{seed}",
        status=RunStatus.PARTIAL if reasons else RunStatus.COMPLETE,
        status_reasons=reasons,
        backend="synthetic",
        scenario={"recipe": r.name, "seed": seed, **scenario},
        tool_versions={"rolltrace-tracebuilder": "1"},
        clock={"source": "synthetic", "note": "every trace is on one model clock"},
        phases=phases,
        service={
            "name": "demo",
            "namespace": "default",
            "type": "LoadBalancer",
            "external_ip": cluster.addresses.lb,
            "port": SERVICE_PORT,
            "target_port": TARGET_PORT,
            "external_traffic_policy": r.traffic_policy,
        },
        captures=captures,
        namespace="default",
    )
