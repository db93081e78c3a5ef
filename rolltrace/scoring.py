"""A strict judge: the one true cause of each failed request, from the local cluster's truth alone.

The analyzer decides causes from what a real cluster shows; the local cluster also records what
really happened (truth.jsonl): every NAT choice the kernel took (LB and nodes, ``nat-new``),
which Pod held which IP, each container run's start, listening, serving, stop and exit with its
reason, the app's idle closes and warm-up resets per peer, each node's rules and the LB's
targets. Listening and serving come from the app's own lines when it writes them (the demo
app); any other app is judged from the kubelet's reading of the socket table (listening from
the listener's first sighting to its last, serving meanwhile). From those alone this module follows each failed request to the Pod (or node) its
connection really reached and names exactly one cause by the error kind:

- a connection that failed to open: what the SYN met — a Pod being deleted and no longer
  listening (endpoint-lag; lb-lag when the LB itself chose the Pod), a restarted container not
  listening (container-restart), a Pod not yet listening for the first time (not-ready), a node
  dropping it for want of a local endpoint (lb-lag) or no endpoint anywhere (no-endpoints), a
  listening Pod that did not answer in time (overload);
- a connection cut (reset, eof) or a read that timed out when the Pod went away: what cut it —
  the app's idle close (keepalive-race), a warm-up reset (not-ready), the container's exit:
  after the deletion's SIGTERM (inflight-cut), by the SIGKILL at the grace period's end
  (killed-at-grace), or without deletion (container-restart);
- a 5xx: the app's state when it answered (warming up or not serving → not-ready; warming up
  after a restart → container-restart);
- a read timeout on a live, serving Pod: overload.

A request that met an L7 hop (the NAT sent its connection to an ingress controller's Pod, or,
for the L7 LB, the client connected to the LB itself, which no NAT records) is followed through
the hop's access log (hops/<hop>.log): its line is the one of the client as the hop saw it
(address and port) within the request's time, and the verdict is what the last failed upstream
attempt met at the Pod that held its address then — a Pod being deleted that no longer accepted
or closed the pooled connection while draining (proxy-endpoint-lag: the hop's own endpoint list
still held it), the app's idle close of the hop's pooled connection (backend-keepalive-race), or
the rules above for what the Pod was doing. A request the hop never logged, cut on a client
connection opened before the hop's nginx reloaded, met a connection the reload's old worker
closed (keepalive-race). Each such verdict names the hop that decided it; a request the hop
succeeded after retries is no failure, and ``masked_from_truth`` counts those per hop.

Where truth cannot decide (no NAT record of the connection, an event none of these explain), the
request's truth is ``undecided``: counted and reported on its own, never agreement. Trace-builder
runs carry the injected cause of each failed request as ``request-cause`` lines; those are used
directly. Agreement is the share of decided failures whose analyzer cause is the true one.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analyzer.errors import TraceError
from analyzer.events import scan_truth
from analyzer.hops import CLIENT_CLOSED_STATUS, succeeded
from analyzer.rundir import RunPaths, read_run_meta, traffic_policy
from analyzer.schema import (
    FAILED_ATTEMPT_OUTCOMES,
    L7_LB_HOP,
    AttemptOutcome,
    Cause,
    ErrorKind,
    TruthEvent,
)
from rolltrace.runner.manifests import INGRESS_HOP

UNDECIDED = "undecided"
# conntrack stamps an event when its listener reads it, after the SYN crossed the NAT; under load
# that lags the client's connect() by milliseconds, up to this much
NAT_STAMP_SLACK_NS = 1_000_000_000
# ... and never before it, but for the few ms between a caller's clock reading and its SYN
NAT_STAMP_EARLY_NS = 10_000_000
# the kubelet notes an exit when it reaps the process, after the kernel already reset the
# process's connections (so after the client saw the cut); reaping takes far less than this
EXIT_NOTE_SLACK_NS = 1_000_000_000
# the app writes its exit line right after aborting its last connections (drain timeout), so
# the client may see the reset first by a scheduling delay, far less than this
APP_NOTE_SLACK_NS = 50_000_000

_CONNECT = {ErrorKind.REFUSED, ErrorKind.CONNECT_TIMEOUT, ErrorKind.UNREACHABLE}
_CUT = {ErrorKind.EOF, ErrorKind.RESET}
# a hop's attempt that got no connection, as the client-side error it stands for
_CONNECT_KIND: dict[str, ErrorKind] = {
    AttemptOutcome.CONNECT_ERROR: ErrorKind.REFUSED,
    AttemptOutcome.CONNECT_TIMEOUT: ErrorKind.CONNECT_TIMEOUT,
}
#: the hop's answer when it had no upstream to try (ingress-nginx: a backend without endpoints)
NO_UPSTREAM_STATUS = 503
# A hop logs its request on the same host clock as the client's, just after it wrote the
# answer (or saw the client leave), and nginx's $msec has millisecond resolution: the two
# records of one request differ by scheduling delays on a loaded 2-core host, far below this,
# and two requests of one keep-alive client are further apart than it at the scenarios' rates.
HOP_SLACK_NS = 50_000_000
_DELETION_CAUSES = {"deletion", "forced"}
_Key = tuple[str, int, str, int]


@dataclass
class ContainerRun:
    """One run of a Pod's container, from its start to its exit."""

    started_ns: int
    restart_count: int = 0
    listening_ns: int | None = None
    stopped_ns: int | None = None  # listener closed or process gone
    exited_ns: int | None = None
    # the app's own exit line or the SIGKILL: stamped as the process's sockets closed, unlike
    # the kubelet's exit line, written when it reaps the process
    sockets_closed_ns: int | None = None
    stop_cause: str | None = None  # deletion / forced / liveness / startup; None: crash
    sigkill_ns: int | None = None
    # (from, to) intervals in which the app served requests (to: None while it still did)
    serving: list[tuple[int, int | None]] = field(default_factory=list)
    # the kubelet's reading of the socket table: the listener's first and last sightings
    socket_listening_ns: int | None = None
    socket_stopped_ns: int | None = None
    app_reports: bool = False  # the app writes its own lifecycle lines (the demo app does)

    def settle(self) -> None:
        """An app that reports nothing of itself (any third-party server) is judged from the
        socket table: listening from the listener's first sighting to its last, and serving
        while listening, since nothing finer is known of it."""
        if self.app_reports or self.socket_listening_ns is None:
            return
        self.listening_ns = self.socket_listening_ns
        ends = [t for t in (self.socket_stopped_ns, self.stopped_ns) if t is not None]
        self.stopped_ns = min(ends) if ends else None
        self.serving = [(self.listening_ns, self.stopped_ns)]

    def listening_at(self, t: int) -> bool:
        return (
            self.listening_ns is not None
            and self.listening_ns <= t
            and (self.stopped_ns is None or t < self.stopped_ns)
        )

    def serving_at(self, t: int) -> bool:
        return any(a <= t and (b is None or t < b) for a, b in self.serving)


@dataclass
class PodTruth:
    node: str | None = None
    runs: list[ContainerRun] = field(default_factory=list)
    deletion_ns: int | None = None
    idle_closes: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    # the idle connections the app closed because it was shutting down (``draining``)
    draining_closes: set[tuple[tuple[str, int], int]] = field(default_factory=set)
    warmup_resets: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def run_at(self, t: int) -> ContainerRun | None:
        """The run started last at or before ``t`` (it may have exited since)."""
        started = [r for r in self.runs if r.started_ns <= t]
        return started[-1] if started else None

    def current(self) -> ContainerRun | None:
        return self.runs[-1] if self.runs else None


@dataclass(frozen=True)
class NatChoice:
    ts_ns: int
    node: str | None  # whose rules chose; None: the LB
    target_ip: str
    target_port: int
    peer_ip: str
    peer_port: int


@dataclass
class TruthState:
    pods: dict[str, PodTruth] = field(default_factory=lambda: defaultdict(PodTruth))
    # Pod IP -> [(process-started ts, pod)]: who held the IP at a time (IPs are recycled)
    ip_owner: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    node_by_address: dict[str, str] = field(default_factory=dict)  # node IP -> node name
    # client-side tuple -> NAT choices in time order (one list for the LB, one for the nodes)
    lb_nat: dict[_Key, list[NatChoice]] = field(default_factory=dict)
    node_nat: dict[_Key, list[NatChoice]] = field(default_factory=dict)
    nat_recorded: bool = False
    nat_lossy: bool = False  # conntrack reported lost events: a missing entry proves nothing
    # node -> [(ts, endpoint pod names)] in time order
    rules: dict[str, list[tuple[int, set[str]]]] = field(default_factory=dict)
    injected: dict[int, str] = field(default_factory=dict)
    # Pods of an L7 hop (the ingress controller's, by its truth lines' source) -> hop name
    hop_pods: dict[str, str] = field(default_factory=dict)
    # hop Pod -> when its nginx reloaded (an applied sync in reload mode), in time order
    hop_reloads: dict[str, list[int]] = field(default_factory=dict)
    pod_ip: dict[str, str] = field(default_factory=dict)  # the IP a Pod's process last had
    # the run's hop access logs, by hop name (hops/<hop>.log)
    hops: dict[str, HopTrail] = field(default_factory=dict)
    # from run.json: the LB chose Pods itself (IP target mode); externalTrafficPolicy Local
    pod_targets: bool = False
    local_policy: bool = False
    #: truth.jsonl lines the reader left out, located ("truth.jsonl: line 103: not valid
    #: JSON"): verdicts that needed them may be wrong, so the score says how many and which
    damage: list[str] = field(default_factory=list)

    def pod_with_ip(self, ip: str, t: int) -> str | None:
        history = self.ip_owner.get(ip, [])
        index = bisect.bisect_right(history, (t, "\uffff"))
        return history[index - 1][1] if index else None

    def endpoints_anywhere(self, t: int) -> bool:
        return any(_value_at(history, t, set()) for history in self.rules.values())


def _value_at(history: list[tuple[int, Any]], t: int, default: Any) -> Any:
    """The last value recorded at or before ``t`` in a time-ordered history, else ``default``."""
    index = bisect.bisect_right([ts for ts, _ in history], t)
    return history[index - 1][1] if index else default


def _nat_in_force(choices: list[NatChoice], syn_ns: int) -> NatChoice | None:
    """The NAT entry a SYN sent at ``syn_ns`` used: the first one recorded from then on, within
    the recorder's stamping lag; where none was made (a reused client port whose old flow still
    lived keeps that flow's entry) the newest one before. Not the newest within the lag: a
    client port can be reused by a later flow well within it (seen 209 ms later under load)."""
    earliest = syn_ns - NAT_STAMP_EARLY_NS
    stamped = [c for c in choices if earliest <= c.ts_ns <= syn_ns + NAT_STAMP_SLACK_NS]
    if stamped:
        return min(stamped, key=lambda c: c.ts_ns)
    before = [c for c in choices if c.ts_ns < earliest]
    return max(before, key=lambda c: c.ts_ns) if before else None


# -- reading truth.jsonl ---------------------------------------------------------------------
def _on_lifecycle(
    pod: PodTruth, event: str, ts: int, fields: dict[str, Any], by_kubelet: bool
) -> None:
    """Container lifecycle lines from the kubelet and the app, folded into the Pod's runs."""
    if event == TruthEvent.PROCESS_STARTED:
        pod.runs.append(ContainerRun(ts, int(fields.get("restart_count") or 0)))
        return
    run = pod.current()
    cause = fields.get("cause")
    if cause in _DELETION_CAUSES and pod.deletion_ns is None:
        pod.deletion_ns = ts
    if run is None:
        return
    if by_kubelet and event in (TruthEvent.LISTENING, TruthEvent.STOPPED_ACCEPTING):
        _on_socket_table(run, event, ts)
        return
    run.app_reports = run.app_reports or not by_kubelet
    if event in (TruthEvent.PRESTOP_START, TruthEvent.SIGTERM, TruthEvent.SIGKILL):
        run.stop_cause = run.stop_cause or (str(cause) if cause else None)
    if event == TruthEvent.SIGKILL or (event == TruthEvent.EXITED and not by_kubelet):
        run.sockets_closed_ns = run.sockets_closed_ns or ts
    if event == TruthEvent.SIGKILL:
        run.sigkill_ns = run.sigkill_ns or ts
    elif event == TruthEvent.LISTENING:
        run.listening_ns = run.listening_ns or ts
    elif event == TruthEvent.READY_TO_SERVE and not run.serving_at(ts):
        run.serving.append((ts, None))
    elif event in (TruthEvent.NOT_SERVING, TruthEvent.STOPPED_ACCEPTING, TruthEvent.EXITED):
        run.serving = [(a, ts if b is None else b) for a, b in run.serving]
        if event != TruthEvent.NOT_SERVING:
            run.stopped_ns = run.stopped_ns or ts
        if event == TruthEvent.EXITED:
            run.exited_ns = run.exited_ns or ts


def _on_socket_table(run: ContainerRun, event: str, ts: int) -> None:
    if event == TruthEvent.LISTENING:
        run.socket_listening_ns = run.socket_listening_ns or ts
    else:
        run.socket_stopped_ns = run.socket_stopped_ns or ts


def _on_nat(state: TruthState, ts: int, node: str | None, fields: dict[str, Any]) -> None:
    state.nat_recorded = True
    key = (str(fields["src"]), int(fields["sport"]), str(fields["dst"]), int(fields["dport"]))
    choice = NatChoice(
        ts, node, str(fields["target_ip"]), int(fields["target_port"]),
        str(fields["peer_ip"]), int(fields["peer_port"]),
    )  # fmt: skip
    (state.lb_nat if node is None else state.node_nat).setdefault(key, []).append(choice)


def _on_app_peer_event(pod: PodTruth, event: str, ts: int, fields: dict[str, Any]) -> None:
    peer = (str(fields["peer_ip"]), int(fields["peer_port"]))
    table = pod.idle_closes if event == TruthEvent.IDLE_CLOSE else pod.warmup_resets
    table.setdefault(peer, []).append(ts)
    if event == TruthEvent.IDLE_CLOSE and fields.get("draining"):
        pod.draining_closes.add((peer, ts))


def truth_state(path: Path) -> TruthState:
    """The ground-truth state from truth.jsonl, read and checked by the analyzer's reader
    (which sorts by time). Damaged lines are left out and listed in ``damage``."""
    scan = scan_truth(path)
    state = TruthState(damage=[str(problem) for problem in scan.problems])
    for row in scan.frame.to_dict("records"):
        event, ts, fields = str(row["event"]), int(row["ts_ns"]), row["fields"]
        pod_name = row["pod"] if isinstance(row["pod"], str) else None
        node = row["node"] if isinstance(row["node"], str) else None
        if event == TruthEvent.REQUEST_CAUSE:
            state.injected[int(fields["request_id"])] = str(fields["cause"])
        elif event == TruthEvent.NAT_NEW:
            _on_nat(state, ts, node, fields)
        elif event == TruthEvent.NAT_RECORDER_ERROR:
            state.nat_lossy = True
        elif event == TruthEvent.RULES_PROGRAMMED and node:
            pods = {str(e.get("pod")) for e in fields["endpoints"]}
            state.rules.setdefault(node, []).append((ts, pods))
        elif event == TruthEvent.LB_HEALTH_CHANGED and "address" in fields:
            state.node_by_address[str(fields["address"]).rsplit(":", 1)[0]] = str(fields["target"])
        elif event == TruthEvent.INGRESS_SYNCED:
            hop_pod = str(row["source"]).partition("/")[2]
            state.hop_pods[hop_pod] = INGRESS_HOP
            if fields.get("reloaded", True):  # reload mode reloads at every applied sync
                state.hop_reloads.setdefault(hop_pod, []).append(ts)
        elif pod_name and event in (TruthEvent.IDLE_CLOSE, TruthEvent.WARMUP_RESET):
            _on_app_peer_event(state.pods[pod_name], event, ts, fields)
        elif pod_name:
            pod = state.pods[pod_name]
            by_kubelet = str(row["source"]).startswith("kubelet/")
            if node and by_kubelet:
                pod.node = node
            if event == TruthEvent.PROCESS_STARTED and isinstance(fields.get("ip"), str):
                state.ip_owner.setdefault(fields["ip"], []).append((ts, pod_name))
                state.pod_ip[pod_name] = fields["ip"]
            _on_lifecycle(pod, event, ts, fields, by_kubelet)
    for pod_truth in state.pods.values():
        for run in pod_truth.runs:
            run.settle()
    return state


# -- following a connection ------------------------------------------------------------------
@dataclass(frozen=True)
class Reached:
    """Where a connection's SYN went, by the NAT entries in force at it."""

    lb: NatChoice | None
    node: str | None  # the node the LB chose (None: the LB chose a Pod, or unknown)
    pod: str | None
    peer: tuple[str, int] | None  # the client as the Pod saw it


def follow(state: TruthState, request: dict[str, Any], syn_ns: int) -> Reached:
    """Follow a connection through the LB's NAT and then the node's to the Pod that held the
    target IP at the SYN."""
    if pd.isna(request["local_port"]) or pd.isna(request["local_ip"]):
        return Reached(None, None, None, None)
    client = (str(request["local_ip"]), int(request["local_port"]))
    lb = _nat_in_force(
        state.lb_nat.get((*client, str(request["remote_ip"]), int(request["remote_port"])), []),
        syn_ns,
    )
    if lb is None:
        return Reached(None, None, None, None)
    pod = state.pod_with_ip(lb.target_ip, syn_ns)
    if pod is not None:  # the LB sends to Pods directly (IP target mode)
        return Reached(lb, None, pod, (lb.peer_ip, lb.peer_port))
    node_name = state.node_by_address.get(lb.target_ip)
    hop = _nat_in_force(state.node_nat.get((*client, lb.target_ip, lb.target_port), []), syn_ns)
    if hop is None or hop.ts_ns + NAT_STAMP_SLACK_NS < lb.ts_ns:  # the node never passed it
        return Reached(lb, node_name, None, None)
    pod = state.pod_with_ip(hop.target_ip, syn_ns)
    return Reached(lb, hop.node or node_name, pod, (hop.peer_ip, hop.peer_port))


# -- the rules -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    cause: str  # a Cause, or UNDECIDED
    why: str
    hop: str = ""  # the L7 hop whose attempt decided it ("": none, the L4 path)


def _restart_or_first_start(pod: PodTruth, run: ContainerRun | None, t: int) -> Verdict:
    """Why a Pod not being deleted did not accept at ``t``."""
    first_run = run is None or (run is pod.runs[0] and run.restart_count == 0)
    if first_run and (run is None or run.listening_ns is None or t < run.listening_ns):
        return Verdict(Cause.NOT_READY, "the Pod's app was not listening yet (first start)")
    return Verdict(Cause.CONTAINER_RESTART, "the container had exited or was restarting")


def _dropped_at_node(state: TruthState, node: str | None, t: int) -> Verdict:
    """The LB sent the SYN to ``node`` and no Pod got it: the node had nowhere to send it."""
    if node is None:
        return Verdict(UNDECIDED, "the LB's target is neither a known node nor a Pod")
    if state.nat_lossy:
        return Verdict(UNDECIDED, "conntrack lost events: the node's entry may be missing")
    if not state.endpoints_anywhere(t):
        return Verdict(Cause.NO_ENDPOINTS, "no node's rules held an endpoint")
    if state.local_policy:
        return Verdict(Cause.LB_LAG, f"the LB sent it to {node}, which had no local endpoint")
    return Verdict(UNDECIDED, f"{node}'s rules sent it nowhere though others had endpoints")


def on_syn(state: TruthState, reached: Reached, t: int, kind: str) -> Verdict:
    """What a SYN met at ``t``: the Pod and its app's state then, or the node that dropped it."""
    if reached.lb is None:
        if state.nat_recorded and not state.endpoints_anywhere(t):
            return Verdict(Cause.NO_ENDPOINTS, "no node's rules held an endpoint")
        return Verdict(UNDECIDED, "no NAT entry records where this connection went")
    if reached.pod is None:
        return _dropped_at_node(state, reached.node, t)
    lag = Cause.LB_LAG if state.pod_targets else Cause.ENDPOINT_LAG
    return syn_at_pod(state, reached.pod, t, kind, lag)


def syn_at_pod(state: TruthState, pod_name: str, t: int, kind: str, lag: Cause) -> Verdict:
    """What a SYN to ``pod_name`` met at ``t``; ``lag`` names whose stale list sent it to a
    Pod being deleted (a node's rules, the LB's targets, an L7 hop's endpoints)."""
    pod = state.pods.get(pod_name, PodTruth())
    run = pod.run_at(t)
    if run is not None and run.listening_at(t):
        if kind == ErrorKind.CONNECT_TIMEOUT:
            return Verdict(Cause.OVERLOAD, f"{pod_name} was listening but did not accept")
        return Verdict(UNDECIDED, f"{pod_name} was listening, yet the connect failed")
    if pod.deletion_ns is not None and pod.deletion_ns <= t:
        return Verdict(lag, f"{pod_name} was being deleted and no longer accepted")
    return _restart_or_first_start(pod, run, t)


def _exit_verdict(pod_name: str, run: ContainerRun) -> Verdict:
    if run.stop_cause in _DELETION_CAUSES:
        if run.sigkill_ns is not None and run.sigkill_ns <= (run.exited_ns or run.sigkill_ns):
            return Verdict(Cause.KILLED_AT_GRACE, f"{pod_name} was SIGKILLed at the grace end")
        return Verdict(Cause.INFLIGHT_CUT, f"{pod_name}'s app exited after the deletion SIGTERM")
    why = (run.stop_cause and f"a {run.stop_cause} kill") or "a crash"
    return Verdict(Cause.CONTAINER_RESTART, f"{pod_name}'s container exited ({why}) undeleted")


def _first_peer_event(
    events: dict[tuple[str, int], list[int]], peer: Any, lo: int, hi: int
) -> int | None:
    found = [ts for ts in events.get(peer, []) if lo <= ts <= hi] if peer else []
    return found[0] if found else None


def _process_end(run: ContainerRun) -> tuple[int, int] | None:
    """When the run's process closed its sockets, and how late its record may be stamped."""
    if run.sockets_closed_ns is not None:
        return run.sockets_closed_ns, APP_NOTE_SLACK_NS
    if run.exited_ns is not None:
        return run.exited_ns, EXIT_NOTE_SLACK_NS
    return None


def on_cut(state: TruthState, reached: Reached, syn_ns: int, end_ns: int) -> Verdict | None:
    """What ended an established connection between its SYN and the request's end: the app's
    idle close or warm-up reset for this peer, or its container's exit (earliest wins); None
    when nothing did."""
    if reached.pod is None:
        return None
    pod = state.pods.get(reached.pod, PodTruth())
    run = pod.run_at(syn_ns)
    found: list[tuple[int, Verdict]] = []
    idle = _first_peer_event(pod.idle_closes, reached.peer, syn_ns, end_ns)
    if idle is not None:
        found.append((idle, Verdict(Cause.KEEPALIVE_RACE, "the app closed the idle connection")))
    reset = _first_peer_event(pod.warmup_resets, reached.peer, syn_ns, end_ns)
    if reset is not None:
        found.append((reset, Verdict(Cause.NOT_READY, "the warming-up app reset the request")))
    gone = None if run is None else _process_end(run)
    if run is not None and gone is not None and syn_ns <= gone[0] <= end_ns + gone[1]:
        found.append((gone[0], _exit_verdict(reached.pod, run)))
    return min(found, key=lambda f: f[0])[1] if found else None


def on_5xx(state: TruthState, pod_name: str | None, t: int) -> Verdict:
    """Who answered 5xx, and in what state its app was."""
    if pod_name is None:
        return Verdict(UNDECIDED, "no Pod is known to have answered")
    pod = state.pods.get(pod_name, PodTruth())
    run = pod.run_at(t)
    if run is None or run.serving_at(t):
        return Verdict(UNDECIDED, f"{pod_name} was serving when it answered 5xx")
    served_before = any(a <= t for a, _ in run.serving)
    if not served_before and run is not pod.runs[0]:
        return Verdict(Cause.CONTAINER_RESTART, f"{pod_name}'s restarted app was warming up")
    return Verdict(Cause.NOT_READY, f"{pod_name}'s app was warming up or not serving")


def true_cause(state: TruthState, request: dict[str, Any], syn_ns: int) -> Verdict:
    """The one cause truth gives a failed request, or UNDECIDED with the reason."""
    kind, start, end = str(request["error_kind"]), int(request["start_ns"]), int(request["end_ns"])
    reached = follow(state, request, syn_ns)
    hop_verdict = through_hop(state, request, reached, syn_ns)
    if hop_verdict is not None:
        return hop_verdict
    if kind in _CONNECT:
        return on_syn(state, reached, start, kind)
    if kind == ErrorKind.HTTP_5XX:
        header = request.get("pod")
        return on_5xx(state, header if isinstance(header, str) else reached.pod, start)
    cut = on_cut(state, reached, syn_ns, end)
    if cut is not None:
        return cut
    if kind == ErrorKind.READ_TIMEOUT and reached.pod is not None:
        run = state.pods.get(reached.pod, PodTruth()).run_at(start)
        if run is not None and run.serving_at(start):
            return Verdict(Cause.OVERLOAD, f"{reached.pod} was serving but did not answer in time")
    if reached.lb is None:
        return Verdict(UNDECIDED, "no NAT entry records where this connection went")
    return Verdict(UNDECIDED, f"nothing in truth ended this {kind} (Pod {reached.pod})")


# -- following a request through an L7 hop ---------------------------------------------------
@dataclass(frozen=True)
class HopLine:
    """One request of a hop's access log and its upstream attempts, in order."""

    line: int
    start_ns: int
    end_ns: int
    status: int
    attempts: list[dict[str, Any]]


@dataclass
class HopTrail:
    """A hop's access log, by the hop's client (address, port) as the hop saw it."""

    by_client: dict[tuple[str, int], list[HopLine]] = field(default_factory=dict)
    lines: list[HopLine] = field(default_factory=list)

    def find(
        self, client: tuple[str, int], start_ns: int, end_ns: int, status: int | None
    ) -> HopLine | None:
        """The logged request of that client that lies within the client's request (with the
        hop's log resolution and scheduling slack). Lines of one keep-alive connection can
        share a logged millisecond, so among several the one with the client's status wins
        (``status`` None: the client got no response, so the hop's 499 or 5xx), then the
        nearest end."""
        fits = [
            h for h in self.by_client.get(client, [])
            if h.start_ns >= start_ns - HOP_SLACK_NS and h.end_ns <= end_ns + HOP_SLACK_NS
        ]  # fmt: skip

        def mismatch(h: HopLine) -> bool:
            return h.status != status if status is not None else h.status < CLIENT_CLOSED_STATUS

        return min(fits, key=lambda h: (mismatch(h), abs(h.end_ns - end_ns))) if fits else None


def hop_trail(path: Path, hop: str) -> HopTrail:
    """A hop log read with the analyzer's access-log reader (parsing only: which attempt went
    where with what status is the log's own record, not an inference)."""
    from analyzer.readers.accesslog import read_access_log

    log = read_access_log(path, hop)
    attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for attempt in _records(log.attempts.sort_values(["line", "attempt"])):
        attempts[int(attempt["line"])].append(attempt)
    trail = HopTrail()
    for row in _records(log.requests):
        entry = HopLine(int(row["line"]), int(row["start_ns"]), int(row["end_ns"]),
                        int(row["status"]), attempts.get(int(row["line"]), []))  # fmt: skip
        trail.lines.append(entry)
        if isinstance(row["client_ip"], str) and not pd.isna(row["client_port"]):
            trail.by_client.setdefault((row["client_ip"], int(row["client_port"])), []).append(
                entry
            )
    return trail


def _attempt_times(line: HopLine) -> list[tuple[dict[str, Any], int, int]]:
    """Each attempt with when it began and ended: nginx tries them one after another from the
    request's start, each taking its logged upstream time."""
    out, t = [], line.start_ns
    for attempt in line.attempts:
        took = attempt["response_ms"]
        took_ns = 0 if pd.isna(took) else int(float(took) * 1e6)
        out.append((attempt, t, t + took_ns))
        t += took_ns
    return out


def _closes_near(pod: PodTruth, hop_ip: str | None, begin: int, end: int) -> list[tuple[int, bool]]:
    """The app's idle closes of the hop's connections (``hop_ip`` None: any peer) around an
    attempt, each with whether the app was draining for its shutdown."""
    return [
        (ts, (peer, ts) in pod.draining_closes)
        for peer, times in pod.idle_closes.items()
        if hop_ip is None or peer[0] == hop_ip
        for ts in times
        if begin - HOP_SLACK_NS <= ts <= end + HOP_SLACK_NS
    ]


def on_attempt(
    state: TruthState, attempt: dict[str, Any], begin: int, end: int, hop_ip: str | None
) -> Verdict:
    """What one failed upstream attempt met at the Pod that held its address: the hop's view
    of a Pod is its own endpoint list, so a Pod being deleted that no longer accepted, or that
    closed the pooled connection while draining, is ``proxy-endpoint-lag``; the app's idle
    close of the pooled connection the hop reused is ``backend-keepalive-race``; otherwise the
    rules for what the Pod was doing, as for a direct connection."""
    outcome = str(attempt["outcome"])
    if outcome == AttemptOutcome.NO_SERVER:
        return Verdict(Cause.NO_ENDPOINTS, "the hop's endpoint list was empty")
    ip = attempt["upstream_ip"]
    pod_name = state.pod_with_ip(str(ip), begin) if isinstance(ip, str) else None
    if pod_name is None:
        return Verdict(UNDECIDED, f"no Pod is known to have held {attempt['upstream_addr']}")
    pod = state.pods.get(pod_name, PodTruth())
    unconnected = outcome == AttemptOutcome.UNKNOWN and pd.isna(attempt["connect_ms"])
    if outcome in _CONNECT_KIND or unconnected:  # unconnected: the client left while it tried
        kind = _CONNECT_KIND.get(outcome, ErrorKind.CONNECT_TIMEOUT)
        return syn_at_pod(state, pod_name, begin, kind, Cause.PROXY_ENDPOINT_LAG)
    if outcome in (AttemptOutcome.HTTP_5XX, AttemptOutcome.FAILED_5XX):
        return on_5xx(state, pod_name, begin)
    closes = _closes_near(pod, hop_ip, begin, end)
    if closes:
        if max(closes)[1]:
            return Verdict(Cause.PROXY_ENDPOINT_LAG, f"{pod_name}, being deleted, closed the "
                           "pooled connection the hop still sent on")  # fmt: skip
        return Verdict(Cause.BACKEND_KEEPALIVE_RACE, f"{pod_name}'s app closed the idle pooled "
                       "connection the hop reused")  # fmt: skip
    cut = on_cut(state, Reached(None, pod.node, pod_name, None), begin, end)
    if cut is not None:
        return cut
    run = pod.run_at(begin)
    if outcome == AttemptOutcome.RESPONSE_TIMEOUT and run is not None and run.serving_at(begin):
        return Verdict(Cause.OVERLOAD, f"{pod_name} was serving but did not answer in time")
    return Verdict(UNDECIDED, f"nothing in truth ended the hop's {outcome} attempt at {pod_name}")


def through_hop(
    state: TruthState, request: dict[str, Any], reached: Reached, syn_ns: int
) -> Verdict | None:
    """The verdict of a failed request that met an L7 hop and whose hop line shows a failed
    upstream attempt: the last failed attempt's (the one whose failure the client got, or
    whose time made the client give up); None
    when the request met no hop, or the hop's own line shows none (then the client's leg to
    the hop is judged as any connection)."""
    hop, client, hop_ip = _hop_of(state, request, reached)
    if hop is None or client is None or hop not in state.hops:
        return None
    trail = state.hops[hop]
    status = request.get("status_code")
    answered = None if status is None or pd.isna(status) else int(status)
    line = trail.find(client, int(request["start_ns"]), int(request["end_ns"]), answered)
    if line is None:
        return _closed_by_reload(state, request, reached.pod, hop, syn_ns)
    if not line.attempts and line.status == NO_UPSTREAM_STATUS:
        return Verdict(Cause.NO_ENDPOINTS, f"the {hop} had no endpoint to send to", hop)
    timed = _attempt_times(line)
    failed = [t for t in timed if t[0]["outcome"] in FAILED_ATTEMPT_OUTCOMES]
    if not failed and timed and line.status >= CLIENT_CLOSED_STATUS:
        failed = timed[-1:]  # no attempt failed: the last one was cut short (client left)
    if not failed:
        return None
    attempt, begin, end = failed[-1]
    verdict = on_attempt(state, attempt, begin, end, hop_ip)
    return Verdict(verdict.cause, f"{hop} line {line.line}: {verdict.why}", hop)


def _closed_by_reload(
    state: TruthState, request: dict[str, Any], hop_pod: str | None, hop: str, syn_ns: int
) -> Verdict | None:
    """A request the hop never logged, cut on a client connection opened before the hop's
    nginx reloaded: the reload leaves the connection to an old worker, which closes it once
    idle (after the request it may be serving), so a later request on it met a connection the
    hop was closing (keepalive-race, decided by the hop)."""
    if hop_pod is None or str(request["error_kind"]) not in _CUT:
        return None
    start = int(request["start_ns"])
    if not any(syn_ns <= t <= start + HOP_SLACK_NS for t in state.hop_reloads.get(hop_pod, [])):
        return None
    why = f"{hop_pod}'s nginx reloaded after this client connection opened, and closed it idle"
    return Verdict(Cause.KEEPALIVE_RACE, why, hop)


def _hop_of(
    state: TruthState, request: dict[str, Any], reached: Reached
) -> tuple[str | None, tuple[str, int] | None, str | None]:
    """Which hop the request met, the client as that hop saw it, and the hop's own address
    toward the Pods (None: not known). An ingress: the NAT sent the connection to one of its
    Pods. An L7 LB: the client connected to the LB itself, so no NAT records the connection
    and the LB saw the client's own address."""
    if reached.pod is not None and reached.pod in state.hop_pods:
        return state.hop_pods[reached.pod], reached.peer, state.pod_ip.get(reached.pod)
    if reached.lb is None and L7_LB_HOP in state.hops and not pd.isna(request["local_port"]):
        return L7_LB_HOP, (str(request["local_ip"]), int(request["local_port"])), None
    return None, None, None


def masked_from_truth(state: TruthState) -> dict[str, dict[str, Any]]:
    """Per hop, the requests a retry masked: the first attempt failed and the hop's client got
    a success; with what truth says each first attempt met (by cause)."""
    out: dict[str, dict[str, Any]] = {}
    for hop, trail in sorted(state.hops.items()):
        causes: Counter[str] = Counter()
        for line in trail.lines:
            first = line.attempts[0] if line.attempts else None
            if first is None or first["outcome"] not in FAILED_ATTEMPT_OUTCOMES:
                continue
            if not succeeded(line.status):
                continue
            (_, begin, end), *_ = _attempt_times(line)
            causes[on_attempt(state, first, begin, end, None).cause] += 1
        out[hop] = {"masked": sum(causes.values()), "by_cause": dict(sorted(causes.items()))}
    return out


# -- scoring ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CauseScore:
    hits: int  # decided failures where analyzer and truth both say this cause
    claimed: int  # decided failures the analyzer gave this cause
    support: int  # decided failures whose true cause this is

    @property
    def precision(self) -> float:
        """0 when the cause occurs but nobody predicted it."""
        return self.hits / self.claimed if self.claimed else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.support if self.support else 0.0


@dataclass
class Score:
    run: str
    failed: int
    agreed: int
    undecided: int
    per_cause: dict[str, CauseScore]
    confusion: dict[str, dict[str, int]]  # truth -> analyzer -> count (undecided included)
    disagreements: list[dict[str, Any]]  # decided failures the analyzer got wrong
    undecided_examples: list[dict[str, Any]]
    truth_damage: list[str] = field(default_factory=list)  # truth lines left out (located)
    #: decided failures per hop that decided them ("" for the L4 path)
    by_hop: dict[str, int] = field(default_factory=dict)
    #: per hop: requests a retry masked, from the hop's log and truth (``masked_from_truth``)
    masked: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def decided(self) -> int:
        return self.failed - self.undecided

    @property
    def agreement(self) -> float:
        """Share of decided failures whose analyzer cause is the true one (1.0 when none)."""
        return self.agreed / self.decided if self.decided else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "failed": self.failed,
            "decided": self.decided,
            "undecided": self.undecided,
            "agreement": self.agreement,
            "per_cause": {
                cause: {
                    "precision": s.precision,
                    "recall": s.recall,
                    "support": s.support,
                    "hits": s.hits,
                    "claimed": s.claimed,
                }
                for cause, s in self.per_cause.items()
            },
            "confusion": self.confusion,
            "disagreements": self.disagreements[:50],
            "undecided_examples": self.undecided_examples[:20],
            "by_hop": self.by_hop,
            "masked": self.masked,
            "truth_damaged_lines": len(self.truth_damage),
            "truth_damage": self.truth_damage[:20],
        }


def per_cause_scores(pairs: list[tuple[str, str]]) -> dict[str, CauseScore]:
    """Precision and recall per cause over decided (truth, analyzer) pairs; a cause nobody
    predicted has precision 0 when it occurs (and 1 when it neither occurs nor is predicted)."""
    truth_counts = Counter(t for t, _ in pairs)
    predicted = Counter(a for _, a in pairs)
    hits = Counter(t for t, a in pairs if t == a)
    return {
        cause: CauseScore(hits=hits[cause], claimed=predicted[cause], support=truth_counts[cause])
        for cause in sorted(set(truth_counts) | set(predicted))
    }


def judge(failures: pd.DataFrame, requests: pd.DataFrame, state: TruthState) -> pd.DataFrame:
    """failures + the true cause and why: columns request_id, error_kind, analyzer, truth, why,
    hop (the L7 hop whose attempt decided the verdict, "" for the L4 path)."""
    syn: dict[Any, int] = requests.groupby("conn_id")["start_ns"].min().to_dict()
    failed = requests[requests["request_id"].isin(failures["request_id"])]
    by_id = {int(r["request_id"]): r for r in _records(failed)}
    rows = []
    for failure in failures.to_dict("records"):
        request_id = int(failure["request_id"])
        if request_id in state.injected:
            verdict = Verdict(state.injected[request_id], "injected by the trace builder")
        else:
            request = by_id[request_id]
            syn_ns = syn.get(request["conn_id"], int(request["start_ns"]))
            verdict = true_cause(state, request, syn_ns)
        rows.append({
            "request_id": request_id, "error_kind": str(failure["error_kind"]),
            "analyzer": str(failure["cause"]), "truth": verdict.cause, "why": verdict.why,
            "hop": verdict.hop, "analyzer_evidence": str(failure.get("evidence", "")),
        })  # fmt: skip
    columns = ["request_id", "error_kind", "analyzer", "truth", "why", "hop", "analyzer_evidence"]
    return pd.DataFrame(rows, columns=columns)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def score_verdicts(
    run: str,
    verdicts: pd.DataFrame,
    truth_damage: list[str] | None = None,
    masked: dict[str, dict[str, Any]] | None = None,
) -> Score:
    decided = verdicts[verdicts["truth"] != UNDECIDED]
    confusion: dict[str, dict[str, int]] = {}
    for truth, analyzer in zip(verdicts["truth"], verdicts["analyzer"], strict=True):
        row = confusion.setdefault(str(truth), {})
        row[str(analyzer)] = row.get(str(analyzer), 0) + 1
    wrong = decided[decided["truth"] != decided["analyzer"]]
    return Score(
        run=run,
        failed=len(verdicts),
        agreed=int((decided["truth"] == decided["analyzer"]).sum()),
        undecided=len(verdicts) - len(decided),
        per_cause=per_cause_scores(list(zip(decided["truth"], decided["analyzer"], strict=True))),
        confusion=confusion,
        disagreements=_records(wrong),
        undecided_examples=_records(verdicts[verdicts["truth"] == UNDECIDED]),
        truth_damage=list(truth_damage or []),
        by_hop={str(hop): int(n) for hop, n in _hop_column(decided).value_counts().items()},
        masked=dict(masked or {}),
    )


def _hop_column(verdicts: pd.DataFrame) -> pd.Series:
    """Which hop decided each verdict ("" for none; verdicts made before hops had none)."""
    if "hop" not in verdicts.columns:
        return pd.Series("", index=verdicts.index, dtype="object")
    return verdicts["hop"].fillna("")


def run_truth_state(paths: RunPaths) -> TruthState:
    """A run's truth plus what run.json says about its LB mode and traffic policy (raises
    FileNotFoundError naming truth.jsonl when the run has none)."""
    if not paths.truth.exists():
        raise FileNotFoundError(f"{paths.truth}: no ground truth (local cluster runs only)")
    state = truth_state(paths.truth)
    meta = read_run_meta(paths.run_json)
    state.pod_targets = meta.service.get("lb_targets") == "pods"
    state.local_policy = traffic_policy(meta.service, meta.scenario) == "Local"
    for log in paths.hop_logs():
        try:
            state.hops[log.stem] = hop_trail(log, log.stem)
        except TraceError as exc:  # unreadable as a whole: the hop's verdicts cannot be made
            state.damage.append(str(exc))
    return state


def score_run(run_dir: Path | str, failures: pd.DataFrame | None = None) -> Score:
    """Judge an analyzed run's failures table (or ``failures``) against truth.jsonl."""
    paths = RunPaths(run_dir)
    state = run_truth_state(paths)
    if failures is None:
        failures = pd.read_parquet(paths.table("failures"))
    requests = pd.read_parquet(paths.requests)
    verdicts = judge(failures, requests, state)
    return score_verdicts(str(paths.root), verdicts, state.damage, masked_from_truth(state))
