"""The trace builder: complete, valid run directories with known, injected disruptions.

Tests of the readers, joins and attribution need runs whose truth is known exactly. The builder
runs a small discrete-event model of a rolling update (Pods with created / started / listening /
app-ready / Ready / deletion / preStop / SIGTERM / stopped-accepting / exited times; the
EndpointSlice over time; each node's rules = the slice as of ``t − proxy delay``; the LB's
health-checked view of nodes under Local policy; constant-arrival-rate keep-alive and
new-connection users) and *derives* every file from it: requests.parquet, packets/client.pcap
(client ↔ LB address), packets/node-N.pcap (after the NAT: client or SNAT address ↔ Pod
IP:8080), events.jsonl (watch events laid out like ``kubectl get -w -o json``), truth.jsonl
(lifecycle ``TruthEvent`` lines plus one ``request-cause`` line per failed request) and run.json
(backend ``synthetic``). A failure's cause is what the model did, never a label painted on.

Usage::

    built = build_run(tmp_path / "run", "endpoint-lag", seed=3, rate=200, duration_s=30)
    built.causes    # request_id, cause, error_kind, pod, node — one row per failed request
    built.windows   # cause, start_ns, end_ns, failed — failures merged when < 1 s apart
    built.timings   # metric (propagation, readiness_lead, prestop, drain), pod, node, value_ms

Any ``Recipe`` field can be overridden by keyword (``build_run(p, "clean", keepalive_share=1)``),
including trace options: ``watch_gap=(10.0, 14.0)`` (events of Pods and EndpointSlices lost
between those seconds, then GAP + RELIST + LIST lines), ``duplicate_client_packets=True``
(every client packet twice, as on a loopback / ``-i any`` capture), ``linktype`` (any name of
``analyzer.pcap_writer.LINKTYPES``), ``pcapng=True``, ``nanosecond=False``, ``snaplen=96``
(headers only, smaller files), ``node_captures=False``, ``ipv6=True`` (every address IPv6).

Scale: the captures are made and written in time windows (``window_segments``, about 250k TCP
segments each; the files are the same whatever the window), so packets cost memory only per
window: ``build_run(p, "mixed", rate=10_000, duration_s=100, keepalive_users=3500,
replicas=100, max_surge=10, nodes=10)`` writes 1M requests and 9.6M packets in about 30 s CPU
at 1.0 GB peak (2.1 GB when every packet was held); ten times as long, 10M requests and 96M
packets (14.5 GB of pcap), in about 4 min CPU at 7.0 GB peak, all of it the per-request tables
(the traffic model and requests.parquet), which still grow with the run. New-connection traffic
is decided and turned into packets with numpy; only keep-alive connection boundaries are walked
in Python. (Keep-alive users send one request at a time, so give them a period — users /
(rate × keepalive_share) — longer than the slow requests, or they fall behind and send fewer
requests than scheduled, as real ones would.)

Client ports: the client hands each connection a local port from the Linux ephemeral range
(32768–60999), never one an open connection holds, and a port comes back only 1 s after its
connection's last segment (as ``net.ipv4.tcp_tw_reuse`` allows for a TIME_WAIT port), least
recently freed first. A build that needs more ports at once fails with ValueError, as connect()
would with EADDRNOTAVAIL, rather than hand one port to two open connections: at ~28k ports this
caps short new connections near 28,000 per second.

Recipe catalogue (``recipe_names()``) and the signature each one produces:

``clean``
    Every remedy applied (http readiness probe, preStop 5 s > propagation, drain on SIGTERM,
    maxUnavailable 0). Zero failures.
``not-ready``
    No readiness probe: Ready when the container starts, 1.5 s before the app listens — new
    connections get SYN → RST from the new Pod (``refused``) — then 1.5 s of warm-up answering
    HTTP 503 with X-Pod-Name of the new Pod (``http-5xx``).
``endpoint-lag``
    No preStop; the app stops accepting at SIGTERM while nodes (1, 2, 3 s proxy delay) still
    route new connections to it: SYN → RST from the old Pod's IP (``refused``, node capture shows
    the Pod). After the sandbox is gone, SYNs to it go unanswered (``connect-timeout``).
``inflight-cut``
    The app exits at once on SIGTERM; slow requests (/slow, 0.8 s) in flight on established
    connections are cut after their bytes were sent: server FIN without response (``eof``) or RST
    (``reset``).
``keepalive-race``
    The draining app closes idle keep-alive connections with a FIN at SIGTERM
    (``drain_idle="fin"``; every other recipe drains race-free by answering the next request
    with ``Connection: close``); with a 30 ms one-way delay a
    request crosses the server's FIN and is answered by RST: ``eof`` / ``reset`` on the first
    bytes of a reused connection, server FIN just before.
``lb-lag``
    externalTrafficPolicy Local, 2 replicas on 3 nodes, new Pods on other nodes, no
    terminating-endpoint fallback: node-1 loses its only endpoint and drops new connections while
    the LB (2 s × 3 failed checks) still sends to it: SYN + retransmissions unanswered
    (``connect-timeout``), nothing on any node capture.
``no-endpoints``
    1 replica, maxSurge 0 / maxUnavailable 1: the only Pod leaves the endpoints before its
    successor is Ready. Decision: kube-proxy's reject rule for a Service without endpoints is
    modelled as a TCP RST from the Service address (the client error is ``refused``, as with the
    ICMP port-unreachable real kube-proxy sends); nothing reaches any node capture. The reject
    rule applies whatever the traffic policy; under Local policy a node drops (``connect-timeout``)
    only when *other* nodes still have endpoints (kube-proxy's "no local endpoints" DROP).
``overload``
    maxUnavailable 1 / maxSurge 0 with Pods that carry 45 % of the load each: while two of three
    are ready, queueing delay climbs (latency per second rises) until requests hit the 0.5 s read
    timeout (``read-timeout``); all requests still reach ready Pods.
``mixed``
    No probe, no preStop, exit on SIGTERM, slow requests, a 20 ms race window: ``not-ready``,
    ``endpoint-lag``, ``inflight-cut`` and ``keepalive-race`` in one rollout.
``mixed-local``
    Local policy, new Pods on other nodes, no preStop, drain: ``lb-lag`` and ``endpoint-lag``.
``mixed-capacity``
    2 replicas, maxUnavailable 1 / maxSurge 0, Pods that carry 70 % of the load, no preStop:
    ``overload`` (read timeouts while one Pod serves alone) and ``endpoint-lag``.

Failure classes beyond a plain rollout (a recipe's ``incidents`` play restarts and readiness
flaps on running Pods; the kubelet's probes, kill, back-off and restart follow from the probe
settings, and each container run is its own process: connections belong to one run):

``liveness-kill``
    A hung app (TCP readiness still passes): 3 failed liveness probes, ``Unhealthy`` then
    ``Killing`` Events, SIGTERM, SIGKILL 2 s later (exit 137), restartCount 1, Ready again. Held
    requests reset at the kill, new connections refused until the rules drop the NotReady Pod
    (``container-restart``).
``crash-loop``
    Exit 1 twice, the second restart after 10 s of ``CrashLoopBackOff``: in-flight requests cut,
    refusals from the Pod's IP during propagation (``container-restart``).
``killed-at-grace``
    Grace 6 s < preStop 5 s + drain 4 s: SIGKILL (137) cuts slow requests in flight
    (``killed-at-grace``).
``warmup-503`` / ``warmup-reset``
    TCP readiness, 20 s / 18 s warm-up answering 503 / accepting then resetting (``not-ready``).
``readiness-flap``
    Two Pods NotReady and Ready again several times, answering 503 or refusing meanwhile
    (``not-ready``).
``local-one-replica`` / ``-fallback`` / ``-recreate``
    Local policy, one replica, node-3 never has a Pod: ``lb-lag`` (plus ``endpoint-lag`` with the
    KEP-1669 fallback, ``no-endpoints`` when the only Pod goes first).
``overload-slow``
    Every endpoint ready, capacity cut by a slow dependency: read timeouts (``overload``).
``keepalive-race-rst``
    Idle keep-alive connections aborted with a bare RST at SIGTERM (``keepalive-race``).
``endpoint-lag-slow-node``
    One node's rules lag 40 s (``endpoint-lag``).
``mixed-restarts`` / ``mixed-edge``
    ``container-restart`` + ``not-ready`` + ``killed-at-grace``; ``not-ready`` (warm-up resets) +
    ``keepalive-race`` (RST) + ``endpoint-lag`` (40 s node).

Routing: the LB picks uniformly among nodes it considers healthy (all of them when none is:
fail-open, as GCE and NLB do); a node picks uniformly among the endpoints its rules hold (ready
ones; serving-terminating ones when none is ready and the KEP-1669 fallback is on). Established
connections stay on their Pod (conntrack).
"""

from analyzer.tracebuilder.build import BuiltRun, build_run
from analyzer.tracebuilder.recipes import Recipe, get_recipe, recipe_names

__all__ = ["BuiltRun", "Recipe", "build_run", "get_recipe", "recipe_names"]
