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
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from analyzer.schema import TruthEvent
from analyzer.tracebuilder.model import (
    APP,
    EXIT_CODE_SIGKILL,
    INF,
    NAMESPACE,
    PLEG_LAG_S,
    SERVICE_PORT,
    TARGET_PORT,
    TEMPLATE_HASH,
    Cluster,
    EndpointState,
    Note,
    Pod,
    Restart,
)
from analyzer.tracebuilder.recipes import Recipe
from kubewire import format_time

WATCH_START_S = -2.0  # the watcher starts (initial list) before the load
KUBELET_SYNC_S = 1.0  # the kubelet's next pod sync: a crash back-off shows as waiting then
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
        return format_time(self.ns(t) // 1_000_000_000)


def _meta(name: str, uid: str, created: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": NAMESPACE, "uid": uid, "creationTimestamp": created, **extra}


def _container_spec(r: Recipe, p: Pod) -> Obj:
    """The app container's spec: image, port, probes and preStop hook as the recipe sets them."""
    container: Obj = {
        "name": "app",
        "image": f"demoapp:{p.version}",
        "ports": [{"containerPort": TARGET_PORT, "protocol": "TCP"}],
    }
    if r.readiness != "none":
        probe = {"httpGet": {"path": "/ready", "port": TARGET_PORT}}
        if r.readiness == "tcp":
            probe = {"tcpSocket": {"port": TARGET_PORT}}
        container["readinessProbe"] = {
            **probe,
            "periodSeconds": max(1, round(r.probe_period_s)),
            "failureThreshold": r.readiness_failures,
        }
    liveness: Obj = {
        "httpGet": {"path": "/healthz", "port": TARGET_PORT},
        "periodSeconds": max(1, round(r.liveness_period_s)),
        "failureThreshold": r.liveness_failures,
    }
    if r.liveness_grace_s is not None:
        liveness["terminationGracePeriodSeconds"] = int(r.liveness_grace_s)
    container["livenessProbe"] = liveness
    if r.prestop_s > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": round(r.prestop_s)}}}
    return container


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
    spec: Obj = {
        "containers": [_container_spec(r, p)],
        "terminationGracePeriodSeconds": int(r.grace_s),
        "restartPolicy": "Always",
    }
    status: Obj = {"phase": "Pending", "qosClass": "BestEffort"}
    conditions: list[Obj] = []
    if t >= p.scheduled:
        spec["nodeName"] = f"node-{p.node + 1}"
        conditions.append(_cond("PodScheduled", True, p.scheduled, clock))
    if t >= p.started:
        ready, since = p.ready_at(t)
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
        status["containerStatuses"] = [_container_status(p, t, ready, clock)]
    status["conditions"] = conditions
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def _container_id(p: Pod, run: int) -> str:
    return f"containerd://{p.uid.replace('-', '')}{run:032x}"


def _terminated(p: Pod, run: int, started: float, x: Restart) -> Obj:
    return {
        "exitCode": x.exit_code,
        "reason": "Error",
        "startedAt": started,
        "finishedAt": x.exited,
        "containerID": _container_id(p, run),
    }


def _container_status(p: Pod, t: float, ready: bool, clock: Clock) -> Obj:
    """The app container's status at ``t`` as the kubelet reports it: the current run (or the
    ended one the kubelet has seen exit, then CrashLoopBackOff while it waits), restartCount and
    lastState.terminated of the previous run."""
    runs = [p.started] + [x.started for x in p.restarts]
    run = sum(1 for s in runs[1:] if s <= t)  # restartCount
    ended = [(k, x) for k, x in enumerate(p.restarts) if x.exited + PLEG_LAG_S <= t < x.started]
    last: Obj | None = None
    if run > 0:
        last = _terminated(p, run - 1, runs[run - 1], p.restarts[run - 1])
    state: Obj = {"running": {"startedAt": runs[run]}}
    if ended:
        k, x = ended[0]
        state = {"terminated": _terminated(p, k, runs[k], x)}
        if x.backoff > 0 and t >= x.exited + PLEG_LAG_S + KUBELET_SYNC_S:
            last = state["terminated"]
            message = (
                f"back-off {x.backoff:.0f}s restarting failed container=app "
                f"pod={p.name}_{NAMESPACE}({p.uid})"
            )
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
    elif t >= p.exited:
        killed = p.sigkill < INF
        state = {
            "terminated": {
                "exitCode": EXIT_CODE_SIGKILL if killed else 0,
                "reason": "Error" if killed else "Completed",
                "startedAt": runs[run],
                "finishedAt": p.exited,
                "containerID": _container_id(p, run),
            }
        }
    status: Obj = {
        "name": "app",
        "image": f"demoapp:{p.version}",
        "imageID": "",
        "containerID": _container_id(p, run),
        "ready": ready and "running" in state,
        "started": "running" in state,
        "restartCount": run,
        "state": _stamped(state, clock),
    }
    if last is not None:
        status["lastState"] = {"terminated": _stamped({"t": last}, clock)["t"]}
    return status


def _stamped(obj: Obj, clock: Clock) -> Obj:
    """Model times (floats under ``startedAt`` / ``finishedAt``) → RFC 3339 strings."""
    out: Obj = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out[key] = _stamped(value, clock)
        elif key in ("startedAt", "finishedAt"):
            out[key] = clock.rfc3339(value)
        else:
            out[key] = value
    return out


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


def _pod_changes(p: Pod) -> list[float]:
    """Every time the Pod object changes after its creation: status updates and deletion."""
    times = {p.scheduled, p.started, p.deletion, p.prestop_start, p.exited}
    times |= {t for t, _ in p.ready_transitions()}
    for x in p.restarts:
        times |= {x.exited + PLEG_LAG_S, x.started}
        if x.backoff > 0:
            times.add(x.exited + PLEG_LAG_S + KUBELET_SYNC_S)
    first = max(p.created, WATCH_START_S)
    return sorted(t for t in times if first < t < min(p.gone, INF))


def _pod_events(c: Cluster, clock: Clock) -> Iterator[Event]:
    for p in c.pods:
        first = max(p.created, WATCH_START_S)
        yield first, "ADDED", "Pod", _pod_object(c, p, first, clock)
        for t in _pod_changes(p):
            yield t, "MODIFIED", "Pod", _pod_object(c, p, t, clock)
        if p.gone < INF:
            yield p.gone, "DELETED", "Pod", _pod_object(c, p, p.gone, clock)


def _note_events(c: Cluster, clock: Clock) -> Iterator[Event]:
    """The kubelet's core/v1 Events about each Pod; repeats of one (reason, message) update
    the same Event's count and lastTimestamp, as the kubelet's event correlator does."""
    for p in c.pods:
        seen: dict[tuple[str, str], Obj] = {}
        for note in sorted(p.notes, key=lambda n: n.t):
            key = (note.reason, note.message)
            before = seen.get(key)
            event = _event_object(p, note, len(seen), clock) if before is None else before
            event = {**event, "count": event.get("count", 0) + 1}
            event["lastTimestamp"] = clock.rfc3339(note.t)
            yield note.t, "ADDED" if before is None else "MODIFIED", "Event", event
            seen[key] = event


def _event_object(p: Pod, note: Note, serial: int, clock: Clock) -> Obj:
    name = f"{p.name}.{0x187A3C5E00000000 + serial:x}"
    node = f"node-{p.node + 1}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": _meta(name, str(uuid.uuid5(uuid.NAMESPACE_URL, name)), clock.rfc3339(note.t)),
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": NAMESPACE,
            "name": p.name,
            "uid": p.uid,
            "fieldPath": "spec.containers{app}",
        },
        "reason": note.reason,
        "message": note.message,
        "source": {"component": "kubelet", "host": node},
        "firstTimestamp": clock.rfc3339(note.t),
        "type": note.type,
        "eventTime": None,
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    }


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


def _service_object(c: Cluster, clock: Clock) -> Obj:
    """The LoadBalancer Service in front of the Pods, with the recipe's traffic policy (Local
    policy is what makes lb-lag possible)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP, _SERVICE_UID, clock.rfc3339(-3600)),
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": APP},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": TARGET_PORT}],
            "externalTrafficPolicy": c.recipe.traffic_policy,
        },
        "status": {"loadBalancer": {"ingress": [{"ip": c.addresses.lb}]}},
    }


def _deployment_object(r: Recipe, clock: Clock, revision: int, updated: int) -> Obj:
    """The Deployment at ``revision`` with ``updated`` Pods of it: the analyzer reads the
    rollout trigger and completion from these changes."""
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


def _replicaset_object(r: Recipe, clock: Clock, revision: int, replicas: int) -> Obj:
    """The ReplicaSet of ``revision`` scaled to ``replicas``, owned by the Deployment as the
    Deployment controller would create it."""
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


def _workload_events(c: Cluster, clock: Clock) -> Iterator[Event]:
    """Service, Deployment and both ReplicaSets, scaled as the Pods come and go."""
    r = c.recipe
    yield WATCH_START_S, "ADDED", "Service", _service_object(c, clock)
    yield WATCH_START_S, "ADDED", "Deployment", _deployment_object(r, clock, 1, r.replicas)
    yield WATCH_START_S, "ADDED", "ReplicaSet", _replicaset_object(r, clock, 1, r.replicas)
    trigger = _deployment_object(r, clock, 2, 0)
    yield r.rollout_at_s - 0.005, "MODIFIED", "Deployment", trigger
    scale = sorted(
        [(p.created, 2, +1) for p in c.pods if p.created > 0]
        + [(p.deletion, 1, -1) for p in c.pods if p.deletion < INF]
    )
    size = {1: r.replicas, 2: 0}
    for t, revision, step in scale:
        size[revision] += step
        etype = "ADDED" if revision == 2 and size[2] == 1 and step > 0 else "MODIFIED"
        yield t - 0.001, etype, "ReplicaSet", _replicaset_object(r, clock, revision, size[revision])
    complete = _deployment_object(r, clock, 2, r.replicas)
    yield c.rollout_complete, "MODIFIED", "Deployment", complete


def watch_lines(c: Cluster, clock: Clock, rng: np.random.Generator) -> list[Obj]:
    """events.jsonl lines in receive order, with the recipe's watch gap applied."""
    events = [
        *_workload_events(c, clock),
        *_pod_events(c, clock),
        *_note_events(c, clock),
        *_slice_events(c, clock),
    ]
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
        _pod_truth(p, partial(add, source=f"kubelet/{node}", pod=p.name, node=node))
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


def _pod_truth(p: Pod, add: Callable[..., None]) -> None:
    """A Pod's first run, its restarts and its termination (``add(t, event=...)``)."""
    for t, event in (
        (p.started, TruthEvent.PROCESS_STARTED),
        (p.listening, TruthEvent.LISTENING),
        (p.app_ready, TruthEvent.READY_TO_SERVE),
        (p.prestop_start, TruthEvent.PRESTOP_START),
        (p.prestop_end, TruthEvent.PRESTOP_END),
        (p.sigterm, TruthEvent.SIGTERM),
        (p.sigkill, TruthEvent.SIGKILL),
        (p.stop_accepting, TruthEvent.STOPPED_ACCEPTING),
    ):
        add(t, event=event)
    killed = p.sigkill < INF
    add(
        p.exited,
        event=TruthEvent.EXITED,
        exit_code=EXIT_CODE_SIGKILL if killed else 0,
        signal=9 if killed else None,
    )
    for x in p.restarts:
        _restart_truth(x, add)


def _restart_truth(x: Restart, add: Callable[..., None]) -> None:
    """A run's end without Pod deletion, and the next run's start (``add(t, event=...)``)."""
    add(x.sigterm, event=TruthEvent.SIGTERM)
    if x.signal == 9:
        add(x.exited, event=TruthEvent.SIGKILL)
    add(x.exited, event=TruthEvent.EXITED, exit_code=x.exit_code, signal=x.signal)
    add(x.started, event=TruthEvent.PROCESS_STARTED)
    add(x.listening, event=TruthEvent.LISTENING)
    add(x.app_ready, event=TruthEvent.READY_TO_SERVE)


def dump_jsonl(lines: list[Obj]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
