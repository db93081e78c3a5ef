"""Recipes: the settings of one synthetic rollout, and the catalogue of named ones.

A recipe is the rollout's *configuration* (probes, preStop, drain, propagation delays, LB
health checks, load), never a list of failures: failures follow from running the model with it,
exactly as they would in a cluster. That is what keeps the injected causes honest.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from analyzer.schema import Cause

Readiness = Literal["http", "tcp", "none"]
"""When the kubelet marks a new Pod Ready: ``http`` after the app can serve, ``tcp`` once it
listens (still warming up), ``none`` as soon as the container runs (no probe)."""

OnSigterm = Literal["drain", "exit", "ignore"]
"""The app on SIGTERM: ``drain`` stops accepting, closes idle keep-alive connections, finishes
in-flight requests, then exits; ``exit`` exits at once (in-flight requests are cut); ``ignore``
keeps serving until SIGKILL at the end of the grace period."""

DrainIdle = Literal["connection-close", "fin", "rst"]
"""A draining app's idle keep-alive connections: ``connection-close`` answers the next request
on each with ``Connection: close`` (race-free), ``fin`` closes them at SIGTERM (a request already
on its way crosses the FIN: the keep-alive race), ``rst`` aborts them at SIGTERM with a bare RST
(``SO_LINGER`` 0: no FIN at all; a request crossing it is answered by a second RST)."""

WarmupAnswer = Literal["503", "reset"]
"""A listening app that cannot serve yet: answers ``503``, or accepts and then resets the
connection (a front that accepts before its backend is up)."""

IncidentKind = Literal["hang", "crash", "unready"]
"""What happens to a running Pod without its deletion: ``hang`` the app stops answering (the
liveness probe fails until the kubelet kills the container), ``crash`` the app exits non-zero on
its own, ``unready`` the app cannot serve for a while (its readiness probe fails meanwhile)."""


@dataclass(frozen=True)
class Incident:
    """One incident of one Pod (``pod`` indexes the model's Pods: 0..replicas-1 are the first
    revision's). The kubelet's reaction (probes, kill, restart, back-off) follows from the
    recipe's probe settings, as in a cluster. It must hit a Ready Pod and be over (the Pod Ready
    again) before the rollout starts; the builder refuses it otherwise."""

    pod: int
    at_s: float
    kind: IncidentKind
    duration_s: float = 0.0  # unready: how long the app cannot serve
    answer: Literal["503", "refuse"] = "503"  # unready: what new requests / connections meet
    crashes: int = 1  # crash: exits in a row; each restarted run crashes again crash_after_s in
    crash_after_s: float = 0.5


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    causes: tuple[Cause, ...] = ()  # what the recipe is meant to inject (documentation and tests)
    # cluster and rollout
    nodes: int = 3
    replicas: int = 3
    max_surge: int = 1
    max_unavailable: int = 0
    traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    new_pod_node_shift: int = 0  # new Pod i goes to node (i + shift) % nodes; old Pod i to i
    # new Pods
    container_start_s: float = 1.0  # created → process started
    listen_delay_s: float = 0.3  # process started → listening
    warmup_s: float = 0.0  # listening → able to serve (503 meanwhile)
    readiness: Readiness = "http"
    probe_period_s: float = 1.0
    readiness_failures: int = 3  # failureThreshold (upstream default)
    liveness_period_s: float = 1.0
    liveness_failures: int = 3  # failureThreshold (upstream default)
    liveness_grace_s: float | None = None  # probe-level terminationGracePeriodSeconds
    warmup_answer: WarmupAnswer = "503"
    incidents: tuple[Incident, ...] = ()  # restarts and readiness flaps without deletion
    # old Pods
    prestop_s: float = 5.0
    on_sigterm: OnSigterm = "drain"
    drain_s: float = 0.5  # drain: SIGTERM → exit
    drain_idle: DrainIdle = "connection-close"
    grace_s: float = 30.0
    # propagation
    endpoint_delay_s: float = 0.05  # Pod change → EndpointSlice change
    proxy_delay_s: tuple[float, ...] = (0.4, 0.8, 1.2)  # per node (cycled): slice → rules
    terminating_fallback: bool = True  # KEP-1669
    lb_interval_s: float = 2.0
    lb_unhealthy_threshold: int = 2
    lb_healthy_threshold: int = 1
    # load
    rate: float = 100.0  # requests per second, both user kinds together
    duration_s: float = 40.0
    rollout_at_s: float = 5.0
    keepalive_share: float = 0.5
    keepalive_users: int = 10
    latency_ms: float = 4.0  # median service time
    latency_sigma: float = 0.4
    slow_share: float = 0.0  # share of requests to /slow
    slow_latency_ms: float = 800.0
    pod_capacity_rps: float = float("inf")
    slowdown: tuple[float, float, float] | None = None  # (from_s, to_s, capacity divisor)
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    race_window_ms: float = 0.15  # one-way delay: a FIN and a request can cross in flight
    rtt_ms: float = 0.3
    cut_with_rst_share: float = 0.5  # in-flight cuts seen as RST (else FIN without response)
    # trace options
    watch_gap: tuple[float, float] | None = None  # seconds since load start: events lost
    duplicate_client_packets: bool = False  # loopback / -i any: every packet captured twice
    linktype: str = "ethernet"
    pcapng: bool = False
    nanosecond: bool = True
    snaplen: int = 262144  # e.g. 96: headers only, as ``tcpdump -s 96`` (much smaller files)
    node_captures: bool = True
    ipv6: bool = False  # every address IPv6 (client, LB, nodes, Pods), as on a v6-only cluster

    def with_overrides(self, **overrides: Any) -> Recipe:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown recipe settings {unknown}; known: {sorted(known)}")
        return replace(self, **overrides)


_CATALOGUE: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "clean",
            "Every remedy applied: http readiness, preStop 5 s > propagation, drain on SIGTERM, "
            "maxUnavailable 0. Zero failures expected.",
        ),
        Recipe(
            "not-ready",
            "No readiness probe: Pods are Ready when the container starts, 1.5 s before the app "
            "listens (SYN → RST from the new Pod) and 1.5 s more before it serves (503 naming it).",
            causes=(Cause.NOT_READY,),
            readiness="none",
            listen_delay_s=1.5,
            warmup_s=1.5,
        ),
        Recipe(
            "endpoint-lag",
            "No preStop; the app drains on SIGTERM, so it stops accepting while nodes still route "
            "new connections to it for 1–3 s: SYN → RST from the old Pod's IP.",
            causes=(Cause.ENDPOINT_LAG,),
            prestop_s=0.0,
            proxy_delay_s=(1.0, 2.0, 3.0),
            drain_s=5.0,
        ),
        Recipe(
            "inflight-cut",
            "The app exits at once on SIGTERM after the preStop sleep; slow requests (/slow, 0.8 s) "
            "in flight are cut: FIN or RST without a response after the request was sent.",
            causes=(Cause.INFLIGHT_CUT,),
            on_sigterm="exit",
            slow_share=0.5,
            keepalive_share=0.8,
            keepalive_users=40,
        ),
        Recipe(
            "keepalive-race",
            "Draining app closes idle keep-alive connections at SIGTERM; many keep-alive users and "
            "a 30 ms one-way delay make requests cross the server's FIN: the reused connection "
            "answers the request with RST.",
            causes=(Cause.KEEPALIVE_RACE,),
            keepalive_share=1.0,
            keepalive_users=200,
            rate=400.0,
            race_window_ms=30.0,
            drain_idle="fin",
            duration_s=30.0,
        ),
        Recipe(
            "lb-lag",
            "externalTrafficPolicy Local, 2 replicas on 3 nodes; the new Pods land on other nodes, "
            "so node-1 loses its only endpoint while the LB (2 s × 3 checks) still sends to it; no "
            "terminating-endpoint fallback: SYNs dropped, connect timeouts.",
            causes=(Cause.LB_LAG,),
            traffic_policy="Local",
            replicas=2,
            new_pod_node_shift=1,
            terminating_fallback=False,  # before KEP-1669: the node drops at once
            keepalive_share=0.0,
            lb_unhealthy_threshold=3,
            connect_timeout_s=2.0,
        ),
        Recipe(
            "no-endpoints",
            "1 replica, maxSurge 0 / maxUnavailable 1: the only Pod goes before its successor is "
            "Ready; with no endpoint at all kube-proxy rejects new connections (RST from the "
            "Service address, refused).",
            causes=(Cause.NO_ENDPOINTS,),
            replicas=1,
            max_surge=0,
            max_unavailable=1,
            container_start_s=3.0,
            prestop_s=2.0,  # longer than propagation: the gap is "no endpoint", not endpoint lag
            terminating_fallback=False,
            keepalive_share=0.0,
        ),
        Recipe(
            "overload",
            "maxUnavailable 1 / maxSurge 0 with Pods that carry 45 % of the load each: two ready "
            "Pods of three cannot keep up, latency climbs until requests hit the 0.5 s read "
            "timeout.",
            causes=(Cause.OVERLOAD,),
            max_surge=0,
            max_unavailable=1,
            pod_capacity_rps=45.0,
            container_start_s=5.0,
            read_timeout_s=0.5,
            drain_s=1.0,  # longer than the read timeout: queued requests are not cut
            duration_s=60.0,
        ),
        Recipe(
            "mixed",
            "No probe, no preStop, exit on SIGTERM, slow requests, keep-alive race window: "
            "not-ready, endpoint-lag, inflight-cut and keepalive-race in one rollout.",
            causes=(Cause.NOT_READY, Cause.ENDPOINT_LAG, Cause.INFLIGHT_CUT, Cause.KEEPALIVE_RACE),
            readiness="none",
            listen_delay_s=1.0,
            warmup_s=1.0,
            prestop_s=0.0,
            on_sigterm="exit",
            proxy_delay_s=(1.0, 2.0, 3.0),
            slow_share=0.3,
            keepalive_users=100,
            rate=200.0,
            race_window_ms=20.0,
        ),
        Recipe(
            "mixed-local",
            "Local policy with new Pods on other nodes, no preStop, drain on SIGTERM: lb-lag and "
            "endpoint-lag together.",
            causes=(Cause.LB_LAG, Cause.ENDPOINT_LAG),
            traffic_policy="Local",
            replicas=2,
            new_pod_node_shift=1,
            prestop_s=0.0,
            drain_s=5.0,
            proxy_delay_s=(1.0, 2.0, 3.0),
            lb_unhealthy_threshold=3,
            keepalive_share=0.2,
            connect_timeout_s=2.0,
        ),
        Recipe(
            "mixed-capacity",
            "2 replicas, maxSurge 0 / maxUnavailable 1, Pods that carry 70 % of the load, no "
            "preStop: overload while one Pod serves alone, endpoint-lag as each old Pod goes.",
            causes=(Cause.OVERLOAD, Cause.ENDPOINT_LAG),
            replicas=2,
            max_surge=0,
            max_unavailable=1,
            pod_capacity_rps=70.0,
            container_start_s=4.0,
            read_timeout_s=0.5,
            prestop_s=0.0,
            drain_s=1.0,
            proxy_delay_s=(0.5, 1.0, 1.5),
        ),
    )
}

_CATALOGUE.update(
    (r.name, r)
    for r in (
        Recipe(
            "liveness-kill",
            "The app on Pod 0 hangs at 6 s: requests get no answer (the TCP readiness probe still "
            "passes: the kernel completes handshakes), the liveness probe fails 3 times and the "
            "kubelet kills the container (SIGTERM; the hung app cannot run its handler: SIGKILL "
            "2 s later, exit 137). The hung requests are reset at the kill; the Pod goes NotReady "
            "and new connections are refused until the rules drop it; it restarts (restartCount "
            "1) and is Ready again.",
            causes=(Cause.CONTAINER_RESTART,),
            incidents=(Incident(0, 6.0, "hang"),),
            readiness="tcp",
            liveness_grace_s=2.0,
            rollout_at_s=20.0,
            duration_s=35.0,
        ),
        Recipe(
            "crash-loop",
            "The app on Pod 1 exits 1 at 6 s, is restarted at once, crashes again 0.5 s after "
            "starting and waits 10 s in CrashLoopBackOff before the run that lasts: requests in "
            "flight at the exit are cut, new connections refused until the rules drop the Pod.",
            causes=(Cause.CONTAINER_RESTART,),
            incidents=(Incident(1, 6.0, "crash", crashes=2),),
            slow_share=0.3,  # requests in flight at the exit
            drain_s=3.0,  # longer than any slow request: the rollout itself cuts none
            keepalive_users=40,
            rollout_at_s=22.0,
            duration_s=40.0,
        ),
        Recipe(
            "killed-at-grace",
            "terminationGracePeriodSeconds 6 < preStop 5 s + a 4 s drain: the kubelet SIGKILLs "
            "each old Pod 6 s after its deletion (exit 137); slow requests in flight then are cut.",
            causes=(Cause.KILLED_AT_GRACE,),
            grace_s=6.0,
            drain_s=4.0,
            slow_share=0.5,
            keepalive_share=0.8,
            keepalive_users=40,
        ),
        Recipe(
            "warmup-503",
            "TCP readiness (Ready once the app listens) and a 20 s warm-up: new Pods answer 503 "
            "for 20 s while Ready, long after any 10 s 'just became Ready' allowance.",
            causes=(Cause.NOT_READY,),
            readiness="tcp",
            warmup_s=20.0,
        ),
        Recipe(
            "warmup-reset",
            "TCP readiness and an 18 s warm-up during which the app accepts connections and resets "
            "them when the request arrives: cuts of requests on new connections, right after the "
            "handshake.",
            causes=(Cause.NOT_READY,),
            readiness="tcp",
            warmup_s=18.0,
            warmup_answer="reset",
        ),
        Recipe(
            "readiness-flap",
            "Pods 0 and 1 cannot serve for 5 s several times (Pod 0 answers 503, Pod 1 refuses "
            "connections); after 2 failed probes they go NotReady, Ready again when the probe "
            "passes; the endpoint follows, each node's rules lag it.",
            causes=(Cause.NOT_READY,),
            readiness_failures=2,
            incidents=(
                Incident(0, 4.0, "unready", duration_s=5.0),
                Incident(0, 12.0, "unready", duration_s=5.0),
                Incident(0, 20.0, "unready", duration_s=4.0),
                Incident(1, 6.0, "unready", duration_s=5.0, answer="refuse"),
                Incident(1, 15.0, "unready", duration_s=5.0, answer="refuse"),
            ),
            rollout_at_s=30.0,
            duration_s=45.0,
        ),
        Recipe(
            "local-one-replica",
            "externalTrafficPolicy Local with one replica: the new Pod lands on node-2, node-3 "
            "never has one (the LB never sends there). Without the terminating fallback node-1 "
            "drops new connections as soon as its rules lose the old Pod, until the LB's checks "
            "(2 s × 3) mark it down.",
            causes=(Cause.LB_LAG,),
            traffic_policy="Local",
            replicas=1,
            new_pod_node_shift=1,
            terminating_fallback=False,
            keepalive_share=0.0,
            lb_unhealthy_threshold=3,
            connect_timeout_s=2.0,
        ),
        Recipe(
            "local-one-replica-fallback",
            "As local-one-replica with the KEP-1669 fallback: node-1 keeps sending to the "
            "terminating Pod, which stops accepting at SIGTERM after a 1 s preStop (refused: "
            "endpoint-lag) and exits 1 s later; node-1's rules (1.5 s behind) still send to it "
            "once it is gone (SYNs unanswered: endpoint-lag, while node-3, which never had a "
            "Pod, lacks an endpoint too), then node-1 drops until the LB marks it down (lb-lag).",
            causes=(Cause.LB_LAG, Cause.ENDPOINT_LAG),
            traffic_policy="Local",
            replicas=1,
            new_pod_node_shift=1,
            prestop_s=1.0,
            drain_s=1.0,
            proxy_delay_s=(1.5, 0.8, 1.2),
            keepalive_share=0.0,
            lb_unhealthy_threshold=3,
            connect_timeout_s=2.0,
        ),
        Recipe(
            "local-one-replica-recreate",
            "Local policy, one replica, maxSurge 0: the only Pod goes first (no endpoint "
            "anywhere: kube-proxy rejects, no-endpoints), then the new Pod on node-2 is Ready "
            "while the LB still sends to node-1, which drops (lb-lag); node-3 never has a Pod.",
            causes=(Cause.NO_ENDPOINTS, Cause.LB_LAG),
            traffic_policy="Local",
            replicas=1,
            new_pod_node_shift=1,
            max_surge=0,
            max_unavailable=1,
            container_start_s=3.0,
            terminating_fallback=False,
            keepalive_share=0.0,
            lb_unhealthy_threshold=3,
            connect_timeout_s=2.0,
        ),
        Recipe(
            "overload-slow",
            "Every replica ready, but a slow dependency cuts each Pod's capacity from 40 to 25 "
            "requests/s between 8 and 14 s: the backlog grows until requests hit the 1 s read "
            "timeout, and drains before the (clean) rollout.",
            causes=(Cause.OVERLOAD,),
            pod_capacity_rps=40.0,
            slowdown=(8.0, 14.0, 1.6),
            read_timeout_s=1.0,
            rollout_at_s=28.0,
            duration_s=45.0,
        ),
        Recipe(
            "keepalive-race-rst",
            "As keepalive-race, but the draining app aborts idle keep-alive connections with a "
            "bare RST (SO_LINGER 0), no FIN: a request crossing it is answered by a second RST.",
            causes=(Cause.KEEPALIVE_RACE,),
            keepalive_share=1.0,
            keepalive_users=200,
            rate=400.0,
            race_window_ms=30.0,
            drain_idle="rst",
            duration_s=30.0,
        ),
        Recipe(
            "endpoint-lag-slow-node",
            "No preStop, drain on SIGTERM; node-3's rules lag the EndpointSlice by 40 s (the "
            "others 1 and 2 s): it keeps sending new connections to the old Pods, refused while "
            "they drain, unanswered once they are gone.",
            causes=(Cause.ENDPOINT_LAG,),
            prestop_s=0.0,
            drain_s=5.0,
            proxy_delay_s=(1.0, 2.0, 40.0),
            duration_s=60.0,
        ),
        Recipe(
            "mixed-restarts",
            "Before the rollout: Pod 0 hangs (liveness kill), Pod 1 crash-loops, Pod 2 flaps "
            "(503, then refusing); the rollout's grace period (4 s) is shorter than preStop 3 s + "
            "a 3 s drain: container-restart, not-ready and killed-at-grace.",
            causes=(Cause.CONTAINER_RESTART, Cause.NOT_READY, Cause.KILLED_AT_GRACE),
            incidents=(
                Incident(0, 5.0, "hang"),
                Incident(1, 8.0, "crash", crashes=2),
                Incident(2, 12.0, "unready", duration_s=5.0),
                Incident(2, 19.0, "unready", duration_s=4.0, answer="refuse"),
            ),
            liveness_grace_s=1.0,
            readiness_failures=2,
            prestop_s=3.0,
            grace_s=4.0,
            drain_s=3.0,
            slow_share=0.3,
            keepalive_users=40,
            rollout_at_s=28.0,
            duration_s=45.0,
        ),
        Recipe(
            "mixed-edge",
            "TCP readiness with a 15 s warm-up that resets requests, idle keep-alive connections "
            "aborted with a bare RST at SIGTERM, no preStop and one node whose rules lag 40 s: "
            "not-ready, keepalive-race and endpoint-lag.",
            causes=(Cause.NOT_READY, Cause.KEEPALIVE_RACE, Cause.ENDPOINT_LAG),
            readiness="tcp",
            warmup_s=15.0,
            warmup_answer="reset",
            prestop_s=0.0,
            drain_s=5.0,
            drain_idle="rst",
            proxy_delay_s=(1.0, 2.0, 40.0),
            keepalive_users=200,
            rate=300.0,
            race_window_ms=50.0,
            duration_s=60.0,
        ),
    )
)


def recipe_names() -> list[str]:
    return list(_CATALOGUE)


def get_recipe(name: str) -> Recipe:
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(_CATALOGUE)}") from None
