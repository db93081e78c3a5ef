"""Hand-written watch events for the events reader's tests: small builders, so each test reads as
the story of one Pod or one EndpointSlice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
