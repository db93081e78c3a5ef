"""The rollout model: Pods and their lifecycle times, EndpointSlice state over time, each node's
programmed rules (the slice as of ``t − proxy delay``) and the LB's view of node health.

Times are float seconds since load start. Everything here is the *truth*: the traffic model asks
it where a new connection lands and what the Pod did then; events, truth.jsonl and packets are
derived from the same objects, so every trace agrees with every other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from analyzer.tracebuilder.recipes import Incident, Recipe

INF = math.inf
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

NAMESPACE = "default"
APP = "demo"
TEMPLATE_HASH = {1: "6d8f9c7b5", 2: "7f4c9d8b6"}
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SERVICE_PORT = 80
TARGET_PORT = 8080
PROBE_OFFSET_S = 0.005  # a probe's answer is seen this long after it was sent
PLEG_LAG_S = 0.5  # the kubelet's PLEG relists containers every 1 s: it sees an exit within that
RESTART_S = 0.3  # kubelet sync → new container running (image present, sandbox and IP kept)
BACKOFF_INITIAL_S = 10.0  # kubelet crash back-off: the first restart is immediate, then 10 s,
BACKOFF_MAX_S = 300.0  # doubling up to 5 min
EXIT_CODE_SIGTERM, EXIT_CODE_SIGKILL, EXIT_CODE_CRASH = 143, 137, 1
_RUN_KEY_STRIDE = 1e6  # run lookup key: pod × stride + start (times are within ±1e5 s)


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


@dataclass(frozen=True)
class Note:
    """Something the kubelet reports about a Pod as a core/v1 Event (Unhealthy, Killing, ...)."""

    t: float
    reason: str
    message: str
    type: str  # Normal or Warning


@dataclass(frozen=True)
class Restart:
    """The end of one container run while the Pod lives on, and the start of the next run."""

    hang: float  # the app stopped answering (INF: it did not)
    sigterm: float  # the kubelet killed it (INF: it exited on its own)
    exited: float
    exit_code: int
    signal: int | None
    backoff: float  # CrashLoopBackOff wait before the next run
    started: float  # the next run
    listening: float
    app_ready: float


@dataclass(frozen=True)
class Run:
    """One container run of a Pod, as the traffic meets it (the Pod's IP and sandbox outlive it).

    ``restarted``: the run began with a restart (failures while it starts are container-restart);
    ``restarts_after``: it ends in a restart, not with the Pod's deletion; ``killed_at_grace``: it
    ended by SIGKILL at the end of the grace period.
    """

    pod: int
    started: float
    listening: float
    app_ready: float
    hang: float
    stop_accepting: float
    idle_close: float
    exited: float
    restarted: bool
    restarts_after: bool
    killed_at_grace: bool


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
    restarts: list[Restart] = field(default_factory=list)
    unable: list[tuple[float, float, str]] = field(default_factory=list)  # (from, to, answer)
    unready: list[tuple[float, float]] = field(default_factory=list)  # Ready=False, not deleted
    notes: list[Note] = field(default_factory=list)

    @property
    def version(self) -> str:
        return f"v{self.revision}"

    @property
    def replicaset(self) -> str:
        return f"{APP}-{TEMPLATE_HASH[self.revision]}"

    def runs(self) -> list[Run]:
        """Every container run, in order: restarts split the Pod's life into several."""
        begins = [(self.started, self.listening, self.app_ready)]
        begins += [(x.started, x.listening, x.app_ready) for x in self.restarts]
        ends = [(x.hang, x.exited, x.exited, x.exited, True, False) for x in self.restarts]
        killed = self.sigkill < INF  # SIGKILL at the end of the grace period
        ends.append((INF, self.stop_accepting, self.idle_close, self.exited, False, killed))
        return [
            Run(self.index, *begin, *end[:4], k > 0, end[4], end[5])
            for k, (begin, end) in enumerate(zip(begins, ends, strict=True))
        ]

    def ready_transitions(self) -> list[tuple[float, bool]]:
        """(time, Ready) at each change of the Ready condition, in time order (incidents happen
        between the first Ready and the deletion: ``apply_incidents`` checks it)."""
        flips = [(self.ready, True)]
        for a, b in _merged(self.unready):
            flips += [(a, False), (b, True)]
        end = min(self.prestop_start, self.exited)
        if end < INF:
            flips.append((end, False))
        return flips

    def ready_at(self, t: float) -> tuple[bool, float]:
        """Whether the Pod is Ready at ``t`` and since when that holds (its start when never)."""
        state, since = False, self.started
        for when, value in self.ready_transitions():
            if when > t:
                break
            state, since = value, when
        return state, since


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


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
    runs: list[Run] = field(init=False)  # every Pod's container runs, Pod by Pod

    def __post_init__(self) -> None:
        self.runs = [run for p in self.pods for run in p.runs()]
        pod = np.array([run.pod for run in self.runs], dtype=np.int64)
        start = np.array([run.started for run in self.runs])
        self._run_key = pod * _RUN_KEY_STRIDE + start
        self._run_first = np.searchsorted(pod, np.arange(len(self.pods)), "left")

    def run_at(self, pod: I64, t: F64) -> I64:
        """Index into ``runs`` of each Pod's container run at ``t`` (the last one started, its
        first before it started); -1 where there is no Pod."""
        safe = np.maximum(pod, 0)
        found = np.searchsorted(self._run_key, safe * _RUN_KEY_STRIDE + t, "right") - 1
        found = np.maximum(found, self._run_first[safe])
        run: I64 = np.where(pod >= 0, found, -1).astype(np.int64)
        return run

    def run_array(self, attr: str) -> F64:
        return np.array([getattr(run, attr) for run in self.runs], dtype=np.float64)

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
        ready=_first_ready(r, started, listening, app_ready),
    )


def _probe_after(start: float, t: float, period: float) -> float:
    """When the first periodic probe (counted from the container start) at or after ``t``
    answers."""
    return start + max(0, math.ceil((t - start) / period)) * period + PROBE_OFFSET_S


def _first_ready(r: Recipe, started: float, listening: float, app_ready: float) -> float:
    """When the kubelet marks a fresh container Ready: at the first readiness probe that passes
    (``http`` once the app serves, ``tcp`` once it listens), at once without a probe."""
    if r.readiness == "none":
        return started + PROBE_OFFSET_S
    gate = app_ready if r.readiness == "http" else listening
    return _probe_after(started, gate, r.probe_period_s)


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


def _run_start(p: Pod, t: float) -> float:
    return max([p.started] + [x.started for x in p.restarts if x.started <= t])


def _probe_target(p: Pod) -> str:
    return f"[{p.ip}]:{TARGET_PORT}" if ":" in p.ip else f"{p.ip}:{TARGET_PORT}"


def _readiness_failure(r: Recipe, p: Pod, answer: str) -> str | None:
    """The kubelet's message for a failing readiness probe, or None when the probe passes."""
    target = _probe_target(p)
    if answer == "503":
        return None if r.readiness != "http" else "HTTP probe failed with statuscode: 503"
    if answer == "hang":
        if r.readiness != "http":  # the kernel still completes TCP handshakes for a hung app
            return None
        return (
            f'Get "http://{target}/ready": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"
        )
    refused = f"dial tcp {target}: connect: connection refused"
    return f'Get "http://{target}/ready": {refused}' if r.readiness == "http" else refused


def _failing_readiness(r: Recipe, p: Pod, a: float, b: float, answer: str) -> float:
    """Readiness probes failing while the app cannot serve over [a, b): their Events, and when
    the Pod goes NotReady (INF: not within [a, b) — no probe, or too few failures)."""
    message = _readiness_failure(r, p, answer)
    if r.readiness == "none" or message is None:
        return INF
    start, period = _run_start(p, a), r.probe_period_s
    first = _probe_after(start, a, period)
    for t in np.arange(first, b, period):
        p.notes.append(Note(float(t), "Unhealthy", f"Readiness probe failed: {message}", "Warning"))
    notready = first + (r.readiness_failures - 1) * period
    return notready if notready < b else INF


def _restart(
    r: Recipe, p: Pod, exited: float, code: int, notready: float, hang: float, sigterm: float
) -> float:
    """The kubelet restarts the container that exited at ``exited`` (after its crash back-off);
    the Pod is NotReady from ``notready`` until the new run passes its readiness probe. Returns
    that time."""
    backoff = 0.0
    if p.restarts:
        backoff = min(BACKOFF_INITIAL_S * 2 ** (len(p.restarts) - 1), BACKOFF_MAX_S)
        message = f"Back-off restarting failed container app in pod {p.name}_{NAMESPACE}({p.uid})"
        p.notes.append(Note(exited + PLEG_LAG_S, "BackOff", message, "Warning"))
    started = exited + PLEG_LAG_S + backoff + RESTART_S
    listening = started + r.listen_delay_s
    app_ready = listening + r.warmup_s
    signal = {EXIT_CODE_SIGTERM: 15, EXIT_CODE_SIGKILL: 9}.get(code)
    p.restarts.append(
        Restart(hang, sigterm, exited, code, signal, backoff, started, listening, app_ready)
    )
    ready = _first_ready(r, started, listening, app_ready)
    p.unready.append((min(notready, exited + PLEG_LAG_S), ready))
    return ready


def _unready(r: Recipe, p: Pod, inc: Incident) -> float:
    a, b = inc.at_s, inc.at_s + inc.duration_s
    p.unable.append((a, b, inc.answer))
    notready = _failing_readiness(r, p, a, b, inc.answer)
    if notready == INF:
        return b
    ready = _probe_after(_run_start(p, a), b, r.probe_period_s)
    p.unready.append((notready, ready))
    return ready


def _hang(r: Recipe, p: Pod, inc: Incident) -> float:
    """The app hangs; the liveness probe fails ``liveness_failures`` times and the kubelet kills
    the container: an app that exits on SIGTERM dies at once (143); one with a SIGTERM handler
    cannot run it while hung and is SIGKILLed at the grace period's end (137)."""
    start, period = _run_start(p, inc.at_s), r.liveness_period_s
    first = _probe_after(start, inc.at_s, period)
    message = (
        f'Liveness probe failed: Get "http://{_probe_target(p)}/healthz": context '
        "deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    )
    for k in range(r.liveness_failures):
        p.notes.append(Note(first + k * period, "Unhealthy", message, "Warning"))
    kill = first + (r.liveness_failures - 1) * period
    p.notes.append(
        Note(kill, "Killing", "Container app failed liveness probe, will be restarted", "Normal")
    )
    if r.on_sigterm == "exit":
        exited, code = kill + 0.005, EXIT_CODE_SIGTERM
    else:
        grace = r.grace_s if r.liveness_grace_s is None else r.liveness_grace_s
        exited, code = kill + grace, EXIT_CODE_SIGKILL
    notready = _failing_readiness(r, p, inc.at_s, exited, "hang")
    return _restart(r, p, exited, code, notready, inc.at_s, kill)


def _crash(r: Recipe, p: Pod, inc: Incident) -> float:
    """The app exits with 1 on its own, ``crashes`` times in a row (CrashLoopBackOff)."""
    exited, ready = inc.at_s, inc.at_s
    for k in range(inc.crashes):
        if k > 0 and exited < p.restarts[-1].listening:  # it crashed before it listened
            p.restarts[-1] = replace(p.restarts[-1], listening=INF, app_ready=INF)
        ready = _restart(r, p, exited, EXIT_CODE_CRASH, INF, INF, INF)
        exited = p.restarts[-1].started + inc.crash_after_s
    return ready


def apply_incidents(r: Recipe, pods: list[Pod]) -> None:
    """Play the recipe's incidents on their Pods. Each must hit a Ready Pod and be over (the Pod
    Ready again) before the rollout starts: the Deployment controller would otherwise count the
    Pod unavailable and pace the rollout differently than ``plan_rollout`` does."""
    handlers = {"unready": _unready, "hang": _hang, "crash": _crash}
    for inc in sorted(r.incidents, key=lambda i: (i.pod, i.at_s)):
        if not 0 <= inc.pod < len(pods):
            raise ValueError(f"incident {inc}: no Pod {inc.pod} (there are {len(pods)})")
        p = pods[inc.pod]
        if not p.ready <= inc.at_s:
            raise ValueError(f"incident {inc}: the Pod is not Ready yet")
        over = handlers[inc.kind](r, p, inc)
        if over >= min(r.rollout_at_s, p.deletion):
            raise ValueError(f"incident {inc}: not over (at {over:.1f} s) before the rollout")


def endpoint_changes(r: Recipe, pods: list[Pod]) -> tuple[F64, I64]:
    """The EndpointSlice over time: (change times, (changes, pods) EndpointState)."""
    changes: list[tuple[float, int, EndpointState]] = []
    d = r.endpoint_delay_s
    for p in pods:
        if p.created > 0:
            changes.append((p.started + d, p.index, EndpointState.NOT_READY))
            changes.append((p.ready + d, p.index, EndpointState.READY))
        for a, b in _merged(p.unready):  # ready false, serving false, not terminating
            changes.append((a + d, p.index, EndpointState.NOT_READY))
            changes.append((b + d, p.index, EndpointState.READY))
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
    apply_incidents(r, pods)
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
