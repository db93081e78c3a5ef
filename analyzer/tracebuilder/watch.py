"""The rollout model → Kubernetes watch events (events.jsonl) and ground truth (truth.jsonl).

Objects are laid out as ``kubectl get -w -o json`` shows them (metadata with ownerReferences,
labels, deletionTimestamp = deletion + grace; Pod conditions and containerStatuses; EndpointSlice
endpoints with ready/serving/terminating, targetRef and nodeName), because the events reader must
be tested on what a real API server sends, not on a convenient subset. Object timestamps are
RFC 3339 with one-second resolution, as in Kubernetes; receive times carry the precision.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from analyzer.schema import TruthEvent
from analyzer.tracebuilder.model import (
    APP,
    INF,
    NAMESPACE,
    TEMPLATE_HASH,
    Cluster,
    EndpointState,
    Pod,
)
from analyzer.tracebuilder.packets import SERVICE_PORT, TARGET_PORT

WATCH_START_S = -2.0  # the watcher starts (initial list) before the load
Obj = dict[str, Any]
Event = tuple[float, str, str, Obj]  # (time, type, kind, object)

_SERVICE_UID = "5f0c7d3e-9a1b-4c2d-8e3f-0a1b2c3d4e5f"
_DEPLOYMENT_UID = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9"
_SLICE_NAME = f"{APP}-x7k2p"


class Clock:
    """Model seconds → realtime ns and RFC 3339 (second resolution)."""

    def __init__(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns

    def ns(self, t: float) -> int:
        return self.t0_ns + round(t * 1e9)

    def rfc3339(self, t: float) -> str:
        stamp = datetime.fromtimestamp(self.ns(t) // 1_000_000_000, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(name: str, uid: str, created: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": NAMESPACE, "uid": uid, "creationTimestamp": created, **extra}


def _pod_object(c: Cluster, p: Pod, t: float, clock: Clock) -> Obj:
    """The Pod as the API server would return it at model time ``t``."""
    r = c.recipe
    meta = _meta(
        p.name,
        p.uid,
        clock.rfc3339(p.created),
        labels={"app": APP, "pod-template-hash": TEMPLATE_HASH[p.revision]},
        ownerReferences=[
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": p.replicaset,
                "uid": _rs_uid(p.revision),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    )
    if t >= p.deletion:
        meta["deletionTimestamp"] = clock.rfc3339(p.deletion + r.grace_s)
        meta["deletionGracePeriodSeconds"] = int(r.grace_s)
    container: Obj = {
        "name": "app",
        "image": f"demoapp:{p.version}",
        "ports": [{"containerPort": TARGET_PORT, "protocol": "TCP"}],
    }
    if r.readiness != "none":
        probe = {"httpGet": {"path": "/ready", "port": TARGET_PORT}}
        if r.readiness == "tcp":
            probe = {"tcpSocket": {"port": TARGET_PORT}}
        container["readinessProbe"] = {**probe, "periodSeconds": max(1, round(r.probe_period_s))}
    if r.prestop_s > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": round(r.prestop_s)}}}
    spec: Obj = {
        "containers": [container],
        "terminationGracePeriodSeconds": int(r.grace_s),
        "restartPolicy": "Always",
    }
    status: Obj = {"phase": "Pending", "qosClass": "BestEffort"}
    conditions: list[Obj] = []
    if t >= p.scheduled:
        spec["nodeName"] = f"node-{p.node + 1}"
        conditions.append(_cond("PodScheduled", True, p.scheduled, clock))
    if t >= p.started:
        ready = p.ready <= t < min(p.prestop_start, p.exited)
        since = p.ready if ready else (p.started if t < p.ready else min(p.prestop_start, t))
        conditions += [
            _cond("Initialized", True, p.scheduled, clock),
            _cond("ContainersReady", ready, since, clock),
            _cond("Ready", ready, since, clock),
        ]
        status.update(
            phase="Running",
            hostIP=c.node_ip(p.node),
            podIP=p.ip,
            podIPs=[{"ip": p.ip}],
            startTime=clock.rfc3339(p.scheduled),
        )
        state: Obj = {"running": {"startedAt": clock.rfc3339(p.started)}}
        if t >= p.exited:
            killed = p.sigkill < INF
            state = {
                "terminated": {
                    "exitCode": 137 if killed else 0,
                    "reason": "Error" if killed else "Completed",
                    "startedAt": clock.rfc3339(p.started),
                    "finishedAt": clock.rfc3339(p.exited),
                    "containerID": f"containerd://{p.uid.replace('-', '')}",
                }
            }
        status["containerStatuses"] = [
            {
                "name": "app",
                "image": f"demoapp:{p.version}",
                "imageID": "",
                "containerID": f"containerd://{p.uid.replace('-', '')}",
                "ready": ready,
                "started": t < p.exited,
                "restartCount": 0,
                "state": state,
            }
        ]
    status["conditions"] = conditions
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def _cond(kind: str, ok: bool, since: float, clock: Clock) -> Obj:
    cond: Obj = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": clock.rfc3339(since),
    }
    if not ok and kind in {"Ready", "ContainersReady"}:
        cond["reason"] = "ContainersNotReady"
    return cond


def _rs_uid(revision: int) -> str:
    return f"{revision:08x}-0000-4000-8000-00000000{revision:04x}"


def _pod_events(c: Cluster, clock: Clock) -> Iterator[Event]:
    for p in c.pods:
        if p.created <= WATCH_START_S:
            yield WATCH_START_S, "ADDED", "Pod", _pod_object(c, p, WATCH_START_S, clock)
        else:
            yield p.created, "ADDED", "Pod", _pod_object(c, p, p.created, clock)
            for t in (p.scheduled, p.started, p.ready):
                yield t, "MODIFIED", "Pod", _pod_object(c, p, t, clock)
        for t in (p.deletion, p.prestop_start, p.exited):
            if t < INF:
                yield t, "MODIFIED", "Pod", _pod_object(c, p, t, clock)
        if p.gone < INF:
            yield p.gone, "DELETED", "Pod", _pod_object(c, p, p.gone, clock)


_CONDITIONS = {
    EndpointState.NOT_READY: (False, False, False),
    EndpointState.READY: (True, True, False),
    EndpointState.TERMINATING_SERVING: (False, True, True),
    EndpointState.TERMINATING: (False, False, True),
}


def _slice_object(c: Cluster, states: np.ndarray[Any, Any], clock: Clock) -> Obj:
    endpoints = []
    for p, state in zip(c.pods, states, strict=True):
        if state == EndpointState.ABSENT:
            continue
        ready, serving, terminating = _CONDITIONS[EndpointState(int(state))]
        endpoints.append(
            {
                "addresses": [p.ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": f"node-{p.node + 1}",
                "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": p.name, "uid": p.uid},
            }
        )
    meta = _meta(
        _SLICE_NAME,
        "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
        clock.rfc3339(-3600),
        labels={
            "kubernetes.io/service-name": APP,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        },
        ownerReferences=[{"apiVersion": "v1", "kind": "Service", "name": APP, "uid": _SERVICE_UID}],
    )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": f"IPv{c.addresses.version}",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
    }


def _slice_events(c: Cluster, clock: Clock) -> Iterator[Event]:
    yield WATCH_START_S, "ADDED", "EndpointSlice", _slice_object(c, c.slice_states[0], clock)
    for t, states in zip(c.slice_times[1:], c.slice_states[1:], strict=True):
        yield float(t), "MODIFIED", "EndpointSlice", _slice_object(c, states, clock)


def _workload_events(c: Cluster, clock: Clock) -> Iterator[Event]:
    """Service, Deployment and both ReplicaSets, scaled as the Pods come and go."""
    r = c.recipe
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP, _SERVICE_UID, clock.rfc3339(-3600)),
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": APP},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": TARGET_PORT}],
            "externalTrafficPolicy": r.traffic_policy,
        },
        "status": {"loadBalancer": {"ingress": [{"ip": c.addresses.lb}]}},
    }
    yield WATCH_START_S, "ADDED", "Service", service

    def deployment(revision: int, updated: int) -> Obj:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(
                APP,
                _DEPLOYMENT_UID,
                clock.rfc3339(-3600),
                generation=revision,
                annotations={"deployment.kubernetes.io/revision": str(revision)},
            ),
            "spec": {
                "replicas": r.replicas,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {
                        "maxSurge": r.max_surge,
                        "maxUnavailable": r.max_unavailable,
                    },
                },
                "template": {
                    "spec": {"containers": [{"name": "app", "image": f"demoapp:v{revision}"}]}
                },
            },
            "status": {"replicas": r.replicas, "updatedReplicas": updated},
        }

    def replicaset(revision: int, replicas: int) -> Obj:
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": _meta(
                f"{APP}-{TEMPLATE_HASH[revision]}",
                _rs_uid(revision),
                clock.rfc3339(-3600 if revision == 1 else r.rollout_at_s),
                labels={"app": APP, "pod-template-hash": TEMPLATE_HASH[revision]},
                annotations={"deployment.kubernetes.io/revision": str(revision)},
                ownerReferences=[
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": APP,
                        "uid": _DEPLOYMENT_UID,
                        "controller": True,
                    }
                ],
            ),
            "spec": {"replicas": replicas},
        }

    yield WATCH_START_S, "ADDED", "Deployment", deployment(1, r.replicas)
    yield WATCH_START_S, "ADDED", "ReplicaSet", replicaset(1, r.replicas)
    yield r.rollout_at_s - 0.005, "MODIFIED", "Deployment", deployment(2, 0)  # the trigger
    scale = sorted(
        [(p.created, 2, +1) for p in c.pods if p.created > 0]
        + [(p.deletion, 1, -1) for p in c.pods if p.deletion < INF]
    )
    size = {1: r.replicas, 2: 0}
    for t, revision, step in scale:
        size[revision] += step
        etype = "ADDED" if revision == 2 and size[2] == 1 and step > 0 else "MODIFIED"
        yield t - 0.001, etype, "ReplicaSet", replicaset(revision, size[revision])
    yield c.rollout_complete, "MODIFIED", "Deployment", deployment(2, r.replicas)


def watch_lines(c: Cluster, clock: Clock, rng: np.random.Generator) -> list[Obj]:
    """events.jsonl lines in receive order, with the recipe's watch gap applied."""
    events = [*_workload_events(c, clock), *_pod_events(c, clock), *_slice_events(c, clock)]
    delays = rng.uniform(0.003, 0.015, len(events))
    timed = sorted(
        ((e[0] + d, i, e) for i, (e, d) in enumerate(zip(events, delays, strict=True))),
        key=lambda x: (x[0], x[1]),
    )
    gap = c.recipe.watch_gap
    lines: list[Obj] = []
    current: dict[tuple[str, str], Obj] = {}
    version = 1000
    gap_done = gap is None
    for recv, _, (_, etype, kind, obj) in timed:
        if not gap_done and gap is not None and recv >= gap[1]:
            lines += _relist(current, gap, clock)
            gap_done = True
        version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(version)
        key = (kind, obj["metadata"]["name"])
        if etype == "DELETED":
            current.pop(key, None)
        else:
            current[key] = obj
        if gap is not None and gap[0] <= recv < gap[1] and kind in {"Pod", "EndpointSlice"}:
            continue
        lines.append({"type": etype, "recv_ns": clock.ns(recv), "kind": kind, "object": obj})
    if not gap_done and gap is not None:
        lines += _relist(current, gap, clock)
    return lines


def _relist(
    current: dict[tuple[str, str], Obj], gap: tuple[float, float], clock: Clock
) -> list[Obj]:
    """What a watcher writes after a 410 Gone: GAP, RELIST, then a LIST line per object."""
    lines: list[Obj] = []
    for i, kind in enumerate(("Pod", "EndpointSlice")):
        at = gap[1] + 0.001 * i
        lines.append(
            {
                "type": "GAP",
                "recv_ns": clock.ns(at),
                "kind": kind,
                "since_ns": clock.ns(gap[0]),
                "reason": "watch expired: 410 Gone",
            }
        )
        lines.append({"type": "RELIST", "recv_ns": clock.ns(at), "kind": kind})
        for (k, _), obj in sorted(current.items(), key=lambda item: item[0]):
            if k == kind:
                lines.append({"type": "LIST", "recv_ns": clock.ns(at), "kind": kind, "object": obj})
    return lines


def truth_lines(c: Cluster, clock: Clock) -> list[Obj]:
    """Lifecycle ground truth (TruthEvent names) in time order; request causes come separately."""
    rows: list[tuple[float, Obj]] = []

    def add(t: float, source: str, event: TruthEvent, **fields: Any) -> None:
        if t < INF and t > WATCH_START_S:
            rows.append((t, {"source": source, "event": event.value, **fields}))

    for p in c.pods:
        node = f"node-{p.node + 1}"
        kubelet = f"kubelet/{node}"
        for t, event in (
            (p.started, TruthEvent.PROCESS_STARTED),
            (p.listening, TruthEvent.LISTENING),
            (p.app_ready, TruthEvent.READY_TO_SERVE),
            (p.prestop_start, TruthEvent.PRESTOP_START),
            (p.prestop_end, TruthEvent.PRESTOP_END),
            (p.sigterm, TruthEvent.SIGTERM),
            (p.sigkill, TruthEvent.SIGKILL),
            (p.stop_accepting, TruthEvent.STOPPED_ACCEPTING),
            (p.exited, TruthEvent.EXITED),
        ):
            add(t, kubelet, event, pod=p.name, node=node)
    for n in range(c.nodes):
        node = f"node-{n + 1}"
        for k in range(1, len(c.slice_times)):
            members = [
                {"pod": c.pods[i].name, "ip": c.pods[i].ip}
                for i in c.rule_cand[n][k][: c.rule_count[n][k]]
            ]
            add(
                float(c.slice_times[k] + c.node_delay[n]),
                f"kube-proxy/{node}",
                TruthEvent.RULES_PROGRAMMED,
                node=node,
                service=APP,
                endpoints=members,
            )
    for t, n, healthy in c.health_transitions:
        node = f"node-{n + 1}"
        local = sum(
            1
            for p in c.pods
            if p.node == n and c.slice_at(t - c.node_delay[n])[p.index] == EndpointState.READY
        )
        add(
            t,
            f"kube-proxy/{node}",
            TruthEvent.HEALTHCHECK_CHANGED,
            node=node,
            healthy=healthy,
            local_endpoints=local,
        )
    for t, n, healthy in c.lb_transitions:
        add(t, "lb", TruthEvent.LB_HEALTH_CHANGED, target=f"node-{n + 1}", healthy=healthy)
    rows.sort(key=lambda row: row[0])
    return [{"ts_ns": clock.ns(t), **row} for t, row in rows]


def dump_jsonl(lines: list[Obj]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
