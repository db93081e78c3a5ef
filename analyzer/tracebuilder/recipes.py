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

DrainIdle = Literal["connection-close", "fin"]
"""A draining app's idle keep-alive connections: ``connection-close`` answers the next request
on each with ``Connection: close`` (race-free), ``fin`` closes them at SIGTERM (a request already
on its way crosses the FIN: the keep-alive race)."""


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


def recipe_names() -> list[str]:
    return list(_CATALOGUE)


def get_recipe(name: str) -> Recipe:
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(_CATALOGUE)}") from None
