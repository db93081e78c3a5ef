"""Hand-made run-directory parts for the readers' and validator's tests: small builders, so each
test reads as the story of one Pod, one EndpointSlice or one connection."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.readers.requests import write_requests
from analyzer.rundir import RunMeta, write_run_meta
from analyzer.schema import REQUESTS

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000  # one second in ns


def pod(
    name: str = "web-abc",
    uid: str = "uid-1",
    *,
    node: str | None = None,
    ip: str | None = None,
    running: bool = False,
    ready: bool | None = None,
    terminated: bool = False,
    deleting: bool = False,
    grace: int | None = None,
    replicaset: str | None = "web-5d9f",
    template_hash: str = "5d9f",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "uid": uid,
        "labels": {"app": "web", "pod-template-hash": template_hash},
    }
    if replicaset:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": replicaset}]
    if deleting:
        meta["deletionTimestamp"] = "2023-11-14T22:13:30Z"
        meta["deletionGracePeriodSeconds"] = 30 if grace is None else grace
    status: dict[str, Any] = {"phase": "Running" if running else "Pending"}
    conditions = []
    if node:
        conditions.append({"type": "PodScheduled", "status": "True"})
    if ready is not None:
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status["conditions"] = conditions
    if ip:
        status["podIP"] = ip
    if running or terminated:
        state = {"terminated": {"exitCode": 0}} if terminated else {"running": {}}
        status["containerStatuses"] = [{"name": "app", "state": state}]
    spec = {"nodeName": node} if node else {}
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def restarted(
    obj: dict[str, Any],
    restarts: int,
    *,
    exit_code: int = 137,
    reason: str = "Error",
    finished: str | None = None,
    running: bool = True,
) -> dict[str, Any]:
    """``obj`` (a ``pod()``) after its container exited ``restarts`` times: restartCount and
    lastState.terminated as the kubelet reports them; ``running=False``: still in back-off
    (state.waiting CrashLoopBackOff) instead of running again."""
    terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason}
    if finished is not None:
        terminated["finishedAt"] = finished
    state: dict[str, Any] = (
        {"running": {}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}
    )
    status = {
        "name": "app",
        "restartCount": restarts,
        "ready": False,
        "state": state,
        "lastState": {"terminated": terminated},
    }
    return {**obj, "status": {**obj["status"], "containerStatuses": [status]}}


def killed(obj: dict[str, Any], exit_code: int = 137) -> dict[str, Any]:
    """``obj`` (a ``pod()``) with its container terminated with ``exit_code``."""
    status = {
        "name": "app",
        "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "reason": "Error"}},
    }
    return {**obj, "status": {**obj["status"], "containerStatuses": [status]}}


def replicaset(name: str, revision: int, template_hash: str) -> dict[str, Any]:
    return {
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"rs-{name}",
            "labels": {"pod-template-hash": template_hash},
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        },
    }


def endpoint(
    ip: str,
    pod_name: str,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    for key, value in (("ready", ready), ("serving", serving), ("terminating", terminating)):
        if value is not None:
            conditions[key] = value
    return {
        "addresses": [ip],
        "conditions": conditions,
        "targetRef": {"kind": "Pod", "name": pod_name},
        "nodeName": "node-1",
    }


def endpoint_slice(name: str, *endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"es-{name}",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
    }


def event(etype: str, t: int, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": etype, "recv_ns": t, "kind": obj["kind"], "object": obj}


def gap(kind: str, since: int, t: int) -> dict[str, Any]:
    return {"type": "GAP", "recv_ns": t, "kind": kind, "since_ns": since, "reason": "watch closed"}


def relist(kind: str, t: int) -> dict[str, Any]:
    return {"type": "RELIST", "recv_ns": t, "kind": kind}


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def sample_requests(n: int = 6) -> pd.DataFrame:
    """Two keep-alive connections of n/2 requests each, the last one failed with a reset."""
    half = n // 2
    rows = []
    for i in range(n):
        seq = i % half + 1
        start = T0 + i * 1_000_000
        rows.append(
            {
                "request_id": i,
                "user_kind": "keepalive",
                "scheduled_ns": start - 10,
                "start_ns": start,
                "connect_ns": start + 100 if seq == 1 else None,
                "first_byte_ns": start + 500 if i < n - 1 else None,
                "end_ns": start + 900,
                "local_ip": "10.9.0.2",
                "local_port": 40000 + i // half,
                "remote_ip": "10.96.0.10",
                "remote_port": 80,
                "conn_id": i // half,
                "conn_new": seq == 1,
                "conn_seq": seq,
                "method": "GET",
                "path": "/",
                "status_code": 200 if i < n - 1 else None,
                "error_kind": "ok" if i < n - 1 else "reset",
                "error_detail": None if i < n - 1 else "Connection reset by peer",
                "pod": "web-1",
                "pod_version": "v1",
            }
        )
    frame = pd.DataFrame(rows)
    return frame.astype({c.name: c.dtype for c in REQUESTS.columns})


def tcp_pcap(segments: list[tuple[int, int]]) -> bytes:
    """A classic little-endian µs pcap (Ethernet, IPv4, TCP) of (ts_ns, tcp flags) segments from
    10.9.0.2:40000 to 10.96.0.10:80, written by hand so the validator's tests do not depend on
    the project's own pcap writer."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts_ns, flags in segments:
        tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, flags, 65535, 0, 0)
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(tcp),
            1,
            0,
            64,
            6,
            0,
            bytes([10, 9, 0, 2]),
            bytes([10, 96, 0, 10]),
        )
        frame = b"\x00" * 12 + b"\x08\x00" + ip + tcp
        seconds, rest = divmod(ts_ns, 1_000_000_000)
        out.append(struct.pack("<IIII", seconds, rest // 1000, len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)


def make_run(root: Path) -> Path:
    """A small, complete and valid run directory: one Pod's life, its endpoint, six requests,
    a client capture and a few truth lines."""
    root.mkdir(parents=True, exist_ok=True)
    requests = sample_requests()
    meta = RunMeta(
        schema_version="1.0",
        run_id="handmade",
        status="complete",
        backend="synthetic",
        phases={
            "load_start": T0 - S,
            "rollout_trigger": T0,
            "rollout_complete": T0 + 2 * S,
            "load_stop": T0 + 3 * S,
        },
        service={"external_ip": "10.96.0.10", "port": 80, "target_port": 8080},
        captures=[{"file": "packets/client.pcap", "point": "client", "kernel_drops": 0}],
        namespace="default",
    )
    write_run_meta(root, meta)
    write_requests(root / "requests.parquet", requests)
    write_lines(
        root / "events.jsonl",
        [
            event("LIST", T0 - 2 * S, replicaset("web-5d9f", 1, "5d9f")),
            event("LIST", T0 - 2 * S, pod(node="node-1", ip="10.1.0.5", running=True, ready=True)),
            event("LIST", T0 - 2 * S, endpoint_slice("web-x", endpoint("10.1.0.5", "web-abc"))),
            event("MODIFIED", T0 + S, pod(node="node-1", ip="10.1.0.5", ready=True, deleting=True)),
        ],
    )
    write_lines(
        root / "truth.jsonl",
        [
            {"ts_ns": T0 + S, "source": "kubelet/node-1", "event": "sigterm", "pod": "web-abc"},
            {
                "ts_ns": T0 + S,
                "source": "kube-proxy/node-1",
                "event": "rules-programmed",
                "node": "node-1",
                "service": "default/web",
                "endpoints": [{"pod": "web-abc", "ip": "10.1.0.5"}],
            },
        ],
    )
    (root / "packets").mkdir(exist_ok=True)
    (root / "packets" / "client.pcap").write_bytes(tcp_pcap([(T0, 0x02), (T0 + 1000, 0x12)]))
    return root
