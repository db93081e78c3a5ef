"""The rollout model: Pods and their lifecycle times, EndpointSlice state over time, each node's
programmed rules (the slice as of ``t − proxy delay``) and the LB's view of node health.

Times are float seconds since load start. Everything here is the *truth*: the traffic model asks
it where a new connection lands and what the Pod did then; events, truth.jsonl and packets are
derived from the same objects, so every trace agrees with every other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from analyzer.tracebuilder.recipes import Recipe

INF = math.inf
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

NAMESPACE = "default"
APP = "demo"
TEMPLATE_HASH = {1: "6d8f9c7b5", 2: "7f4c9d8b6"}
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class Addresses:
    """The run's address plan (documentation ranges for the LB, private ranges elsewhere)."""

    ipv6: bool

    @property
    def version(self) -> int:
        return 6 if self.ipv6 else 4

    @property
    def client(self) -> str:
        return "fd00:0:0:1::2" if self.ipv6 else "10.0.0.2"

    @property
    def lb(self) -> str:
        return "2001:db8::10" if self.ipv6 else "203.0.113.10"

    def node(self, node: int) -> str:
        return f"fd00:0:1::{11 + node:x}" if self.ipv6 else f"10.1.0.{11 + node}"

    def pod(self, node: int, index: int) -> str:
        return (
            f"fd00:244:{node + 1:x}::{10 + index:x}"
            if self.ipv6
            else f"10.244.{node + 1}.{10 + index}"
        )


class EndpointState(IntEnum):
    """An endpoint's conditions in the slice (absent = not listed)."""

    ABSENT = 0
    NOT_READY = 1  # ready F, serving F, terminating F
    READY = 2  # ready T, serving T, terminating F
    TERMINATING_SERVING = 3  # ready F, serving T, terminating T
    TERMINATING = 4  # ready F, serving F, terminating T


@dataclass
class Pod:
    index: int
    name: str
    uid: str
    revision: int
    node: int
    ip: str
    created: float
    scheduled: float
    started: float
    listening: float
    app_ready: float
    ready: float
    deletion: float = INF
    prestop_start: float = INF
    prestop_end: float = INF
    sigterm: float = INF
    sigkill: float = INF
    stop_accepting: float = INF
    idle_close: float = INF  # the server closes idle keep-alive connections
    exited: float = INF
    gone: float = INF  # sandbox torn down, Pod object deleted

    @property
    def version(self) -> str:
        return f"v{self.revision}"

    @property
    def replicaset(self) -> str:
        return f"{APP}-{TEMPLATE_HASH[self.revision]}"


@dataclass
class Cluster:
    recipe: Recipe
    pods: list[Pod]
    rollout_complete: float
    slice_times: F64  # change k applies from slice_times[k] (k = 0 is -inf)
    slice_states: I64  # (changes, pods) EndpointState
    node_delay: F64
    rule_cand: list[I64]  # per node: (changes, pods) candidate pod indices, -1 padded
    rule_count: list[I64]  # per node: (changes,) number of candidates
    rule_any_ready: list[npt.NDArray[np.bool_]]  # per node: any ready endpoint in the cluster
    lb_times: F64
    lb_active: npt.NDArray[np.bool_]  # (changes, nodes)
    lb_transitions: list[tuple[float, int, bool]] = field(default_factory=list)
    health_transitions: list[tuple[float, int, bool]] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return self.recipe.nodes

    def pod_array(self, attr: str) -> F64:
        return np.array([getattr(p, attr) for p in self.pods], dtype=np.float64)

    @property
    def addresses(self) -> Addresses:
        return Addresses(self.recipe.ipv6)

    def node_ip(self, node: int) -> str:
        return self.addresses.node(node)

    def rules_epoch(self, node: int, t: F64) -> I64:
        return np.searchsorted(self.slice_times + self.node_delay[node], t, "right") - 1

    def slice_at(self, t: float) -> I64:
        k = int(np.searchsorted(self.slice_times, t, "right")) - 1
        states: I64 = self.slice_states[k]
        return states

    def route(self, t: F64, u_node: F64, u_pod: F64) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
        """Where new connections at times ``t`` land: (node the LB picked, Pod or -1, whether
        the cluster then had any ready endpoint in that node's view)."""
        k = np.searchsorted(self.lb_times, t, "right") - 1
        active = self.lb_active[k]
        none = ~active.any(axis=1)
        active[none] = True  # no healthy target: the LB fails open (GCE, NLB)
        n_active = active.sum(axis=1)
        pick = np.minimum((u_node * n_active).astype(np.int64), n_active - 1)
        node = np.argmax(np.cumsum(active, axis=1) > pick[:, None], axis=1).astype(np.int64)
        pod = np.full(len(t), -1, dtype=np.int64)
        any_ready = np.zeros(len(t), dtype=bool)
        for n in range(self.nodes):
            sel = np.flatnonzero(node == n)
            if not len(sel):
                continue
            e = self.rules_epoch(n, t[sel])
            count = self.rule_count[n][e]
            slot = np.minimum((u_pod[sel] * count).astype(np.int64), np.maximum(count - 1, 0))
            pod[sel] = np.where(count > 0, self.rule_cand[n][e, slot], -1)
            any_ready[sel] = self.rule_any_ready[n][e]
        return node, pod, any_ready

    def ready_count(self, t: F64) -> I64:
        k = np.searchsorted(self.slice_times, t, "right") - 1
        counts: I64 = (self.slice_states == EndpointState.READY).sum(axis=1)
        return counts[k]


def _pod_name(rng: np.random.Generator, revision: int) -> str:
    suffix = "".join(rng.choice(list(_SUFFIX_ALPHABET), 5))
    return f"{APP}-{TEMPLATE_HASH[revision]}-{suffix}"


def _uid(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _new_pod(
    r: Recipe, rng: np.random.Generator, index: int, revision: int, node: int, created: float
) -> Pod:
    started = created + r.container_start_s
    listening = started + r.listen_delay_s
    app_ready = listening + r.warmup_s
    gate = {"http": app_ready, "tcp": listening, "none": started}[r.readiness]
    probes = 0.0 if r.readiness == "none" else math.ceil((gate - started) / r.probe_period_s)
    ready = started + probes * r.probe_period_s + 0.005
    return Pod(
        index=index,
        name=_pod_name(rng, revision),
        uid=_uid(rng),
        revision=revision,
        node=node,
        ip=Addresses(r.ipv6).pod(node, index),
        created=created,
        scheduled=created + 0.02,
        started=started,
        listening=listening,
        app_ready=app_ready,
        ready=ready,
    )


def _terminate(r: Recipe, pod: Pod, deletion: float) -> None:
    pod.deletion = deletion
    pod.prestop_start = deletion + 0.02
    pod.prestop_end = pod.prestop_start + r.prestop_s
    pod.sigterm = pod.prestop_end + 0.001
    deadline = pod.prestop_start + r.grace_s
    if r.on_sigterm == "drain":
        stop, idle, exit_ = pod.sigterm, pod.sigterm, pod.sigterm + r.drain_s
    elif r.on_sigterm == "exit":
        stop = idle = exit_ = pod.sigterm + 0.005
    else:
        stop = idle = exit_ = deadline
    if exit_ >= deadline:
        exit_ = pod.sigkill = deadline
    pod.stop_accepting, pod.idle_close, pod.exited = min(stop, exit_), min(idle, exit_), exit_
    pod.gone = exit_ + 0.5


def plan_rollout(r: Recipe, rng: np.random.Generator) -> tuple[list[Pod], float]:
    """Pods of both revisions with every lifecycle time, following the Deployment controller's
    rolling-update arithmetic (terminating Pods do not count towards replicas)."""
    if r.max_surge == 0 and r.max_unavailable == 0:
        raise ValueError("maxSurge and maxUnavailable cannot both be 0")
    pods: list[Pod] = []
    for i in range(r.replicas):
        p = _new_pod(r, rng, i, 1, i % r.nodes, -600.0 + i)
        pods.append(p)
    old = list(pods)
    new: list[Pod] = []
    t = r.rollout_at_s
    for _ in range(10 * r.replicas + 10):
        changed = True
        while changed:
            changed = False
            if len(old) + len(new) < r.replicas + r.max_surge and len(new) < r.replicas:
                node = (len(new) + r.new_pod_node_shift) % r.nodes
                p = _new_pod(r, rng, len(pods), 2, node, t + 0.01 * len(new))
                pods.append(p)
                new.append(p)
                changed = True
            available = len(old) + sum(p.ready <= t for p in new)
            if old and available - 1 >= r.replicas - r.max_unavailable:
                _terminate(r, old.pop(0), t)
                changed = True
        if not old and len(new) == r.replicas:
            complete = max(p.ready for p in new)
            return pods, max(complete, max(p.gone for p in pods if p.revision == 1))
        t = min(p.ready for p in new if p.ready > t) + 0.02
    raise RuntimeError("rollout did not converge")  # pragma: no cover - arithmetic guard


def endpoint_changes(r: Recipe, pods: list[Pod]) -> tuple[F64, I64]:
    """The EndpointSlice over time: (change times, (changes, pods) EndpointState)."""
    changes: list[tuple[float, int, EndpointState]] = []
    d = r.endpoint_delay_s
    for p in pods:
        if p.created > 0:
            changes.append((p.started + d, p.index, EndpointState.NOT_READY))
            changes.append((p.ready + d, p.index, EndpointState.READY))
        if p.deletion < INF:
            changes.append((p.deletion + d, p.index, EndpointState.TERMINATING_SERVING))
            unserving = min(p.stop_accepting + r.probe_period_s, p.exited)
            if unserving < p.gone:
                changes.append((unserving + d, p.index, EndpointState.TERMINATING))
            changes.append((p.gone + d, p.index, EndpointState.ABSENT))
    changes.sort(key=lambda c: c[0])
    state = np.array(
        [EndpointState.READY if p.created <= 0 else EndpointState.ABSENT for p in pods],
        dtype=np.int64,
    )
    times = [-INF]
    states = [state.copy()]
    for t, index, new_state in changes:
        state[index] = new_state
        times.append(t)
        states.append(state.copy())
    return np.array(times), np.array(states, dtype=np.int64)


def _node_rules(
    r: Recipe, pods: list[Pod], states: I64, node: int
) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
    local = np.array([p.node == node for p in pods])
    eligible = local if r.traffic_policy == "Local" else np.ones(len(pods), dtype=bool)
    ready = (states == EndpointState.READY) & eligible
    fallback = (states == EndpointState.TERMINATING_SERVING) & eligible
    use_fallback = ~ready.any(axis=1) & r.terminating_fallback
    chosen = np.where(use_fallback[:, None], fallback, ready)
    count = chosen.sum(axis=1).astype(np.int64)
    order = np.argsort(~chosen, axis=1, kind="stable")
    cand = np.where(np.take_along_axis(chosen, order, axis=1), order, -1).astype(np.int64)
    return cand, count, (states == EndpointState.READY).any(axis=1)


def _lb_health(
    r: Recipe,
    rng: np.random.Generator,
    cluster_times: F64,
    local_ready: list[npt.NDArray[np.bool_]],
    node_delay: F64,
) -> tuple[list[tuple[float, int, bool]], list[tuple[float, int, bool]]]:
    """Health-check probes per node and the LB's marked state (Local policy only)."""
    lb: list[tuple[float, int, bool]] = []
    health: list[tuple[float, int, bool]] = []
    if r.traffic_policy != "Local":
        return lb, health
    for n in range(r.nodes):
        times = cluster_times + node_delay[n]
        flips = np.flatnonzero(local_ready[n][1:] != local_ready[n][:-1]) + 1
        health += [(float(times[k]), n, bool(local_ready[n][k])) for k in flips]
        phase = float(rng.uniform(0, r.lb_interval_s))
        probes = np.arange(-5.0, r.duration_s + 30.0, r.lb_interval_s) + phase
        ok_at = local_ready[n][np.searchsorted(times, probes, "right") - 1]
        marked = bool(ok_at[0])
        run = 0
        for t_probe, ok in zip(probes, ok_at, strict=True):
            run = run + 1 if bool(ok) != marked else 0
            threshold = r.lb_healthy_threshold if ok else r.lb_unhealthy_threshold
            if run >= threshold:
                marked, run = bool(ok), 0
                lb.append((float(t_probe), n, marked))
        if not bool(ok_at[0]):
            lb.insert(0, (-INF, n, False))
    return lb, health


def build_cluster(r: Recipe, rng: np.random.Generator) -> Cluster:
    pods, complete = plan_rollout(r, rng)
    times, states = endpoint_changes(r, pods)
    node_delay = np.array([r.proxy_delay_s[n % len(r.proxy_delay_s)] for n in range(r.nodes)])
    cands, counts, any_ready = [], [], []
    local_ready = []
    for n in range(r.nodes):
        cand, count, anyr = _node_rules(r, pods, states, n)
        cands.append(cand)
        counts.append(count)
        any_ready.append(anyr)
        local = np.array([p.node == n for p in pods])
        local_ready.append(((states == EndpointState.READY) & local).any(axis=1))
    lb, health = _lb_health(r, rng, times, local_ready, node_delay)
    lb_sorted = sorted(lb, key=lambda x: x[0])
    active = np.ones(r.nodes, dtype=bool)
    lb_times, lb_active = [-INF], [active.copy()]
    for t, n, ok in lb_sorted:
        active[n] = ok
        if t == -INF:
            lb_active[0] = active.copy()
            continue
        lb_times.append(t)
        lb_active.append(active.copy())
    return Cluster(
        recipe=r,
        pods=pods,
        rollout_complete=complete,
        slice_times=times,
        slice_states=states,
        node_delay=node_delay,
        rule_cand=cands,
        rule_count=counts,
        rule_any_ready=any_ready,
        lb_times=np.array(lb_times),
        lb_active=np.array(lb_active),
        lb_transitions=[x for x in lb_sorted if x[0] > -INF],
        health_transitions=health,
    )
