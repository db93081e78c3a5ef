"""The LB emulator's L7 mode (``lb.mode: l7``), an AWS Application Load Balancer on real nginx.

The LB process ends client connections on the Service's external IP (the address sits on the
LB namespace's loopback and nginx listens on it; no DNAT is installed) and sends each request
to one active target (round robin, ALB's default) over its own HTTP/1.1 keep-alive pool. What
nginx expresses directly: the pool and its idle timeout (``upstream { keepalive;
keepalive_timeout; }``, ``Connection: ""``), the client idle timeout, no retries
(``proxy_next_upstream off``: ALB does not send a request a target failed to another one), the
10 s connect timeout, and the statuses ALB documents for those failures, each produced by the
failure itself: 502 when the target refuses, closes or resets the connection (a pooled
connection the app closed when idle included), 504 when it does not answer within the idle
timeout or the connection is not made within the connect timeout. What the LB process adds
(``balancer.py``, shared with the L4 mode): health checks, registration and deregistration
delays and thresholds, and which targets are active; each change of the active set renders
this file again and applies it with one reload. Draining: the reload's old worker keeps the
requests it holds while new requests go to the new worker's targets; at the end of the
deregistration delay (at once without draining) the LB closes what is still open to the
deregistered target (``ss -K``), which nginx answers 502, as ALB does for a request the delay
cut; ``worker_shutdown_timeout`` bounds the old worker just after. A listener without
registered targets answers 503, as ALB does.

Why nginx: it is the proxy ALB's semantics map onto almost one directive each, the local
ingress already runs it (``localcluster.nginxcommon`` is shared), and its access log has the
upstream attempt's address, status and times the analyzer reads (``ROLLTRACE_LOG_FORMAT``).
HAProxy would do as well for the pool and the timeouts (``http-reuse``, ``timeout server``),
but adds a second proxy and log format to the project; a userspace proxy would give exact
per-target draining, but its pool and its reaction to a connection closed by the app would be
ours, not a real proxy's, and that race is what the L7 mode is for. Where nginx differs from
ALB: a reload also closes the idle client keep-alive connections the old worker holds and
starts the new worker with an empty target pool; ``worker_shutdown_timeout`` bounds every
request of the old worker, not only the deregistered target's (docs/local-cluster.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from localcluster.config import LBConfig
from localcluster.dataplane import ip
from localcluster.lb.rules import Frontend
from localcluster.nginxcommon import Nginx, NginxPaths, keepalive_directives, main_context, seconds
from localcluster.state import HOPS_DIR

HOP = "lb"  # the hop's name: its access log is <state dir>/hops/lb.log
# ALB documents no cap on idle target connections or on requests per connection: both are set
# high enough that nginx never closes a pooled connection for room or for its age in requests.
KEEPALIVE_POOL = 1024
KEEPALIVE_REQUESTS = 1_000_000
WORKER_CONNECTIONS = 16384  # as the local ingress: far above what a run opens
# An old worker outlives the deregistration delay by this much, so the LB's own cut at the
# delay (ss -K) decides how a request still held ends: a 502, as ALB answers it.
SHUTDOWN_MARGIN_S = 1.0


@dataclass(frozen=True)
class L7Settings:
    idle_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    drain_s: float = 0.0  # how long an old worker keeps its requests after a reload; 0: no bound

    @classmethod
    def from_config(cls, lb: LBConfig) -> L7Settings:
        drain = lb.deregistration_delay_s if lb.draining else 0.0
        return cls(lb.idle_timeout_s, lb.connect_timeout_s, drain)


def l7_paths(state_dir: Path) -> NginxPaths:
    """nginx's files under ``<state>/lb``; the access log where runs collect hop logs."""
    return NginxPaths(state_dir / "lb", state_dir / HOPS_DIR / f"{HOP}.log")


def upstream_name(frontend: Frontend) -> str:
    return f"{frontend.service.replace('/', '-')}-{frontend.port}"


def _http_directives(settings: L7Settings) -> list[str]:
    idle = seconds(settings.idle_timeout_s)
    return [
        f"    keepalive_timeout {idle};",  # the client side of the idle timeout
        f"    client_header_timeout {idle};",
        f"    client_body_timeout {idle};",
        f"    send_timeout {idle};",
        f"    keepalive_requests {KEEPALIVE_REQUESTS};",
        "    proxy_next_upstream off;",  # ALB does not retry a request on another target
        f"    proxy_connect_timeout {seconds(settings.connect_timeout_s)};",
        f"    proxy_read_timeout {idle};",
        f"    proxy_send_timeout {idle};",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',  # keep the target connection for the pool
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Port $server_port;",
        "    proxy_set_header X-Request-ID $request_id;",
    ]


def _frontend_blocks(frontend: Frontend, settings: L7Settings) -> list[str]:
    listen = f"        listen {frontend.ip}:{frontend.port};"
    if not frontend.targets:  # ALB: no registered target answers 503
        return ["    server {", listen, "        location / { return 503; }", "    }"]
    name = upstream_name(frontend)
    return [
        f"    upstream {name} {{",
        *(f"        server {addr}:{port} max_fails=0;" for addr, port in frontend.targets),
        *keepalive_directives(KEEPALIVE_POOL, settings.idle_timeout_s, KEEPALIVE_REQUESTS),
        "    }",
        "    server {",
        listen,
        f"        location / {{ proxy_pass http://{name}; }}",
        "    }",
    ]


def render_l7_conf(frontends: Sequence[Frontend], settings: L7Settings, paths: NginxPaths) -> str:
    """The whole nginx.conf for the TCP frontends (an ALB listens for HTTP only)."""
    shutdown = seconds(settings.drain_s + SHUTDOWN_MARGIN_S)
    main = [f"worker_shutdown_timeout {shutdown};"] if settings.drain_s else []
    lines = [*main_context(paths, WORKER_CONNECTIONS, main), *_http_directives(settings)]
    for frontend in frontends:
        if frontend.protocol == "tcp":
            lines += _frontend_blocks(frontend, settings)
    return "\n".join([*lines, "}", ""])


class NginxForwarder:
    """The L7 forwarding of the LB process (in the LB namespace): the external IPs on the
    loopback, nginx serving them, and the cut of a deregistered target's connections."""

    def __init__(self, settings: L7Settings, paths: NginxPaths) -> None:
        self._settings = settings
        self._nginx = Nginx(paths)
        self._addresses: set[str] = set()
        self._applied: str | None = None

    async def forward(self, frontends: Sequence[Frontend]) -> None:
        wanted = {f.ip for f in frontends}
        for address in sorted(wanted - self._addresses):  # before nginx listens on them
            await ip.run_async(ip.ip(None, "addr", "replace", f"{address}/32", "dev", "lo"))
            self._addresses.add(address)
        text = render_l7_conf(frontends, self._settings, self._nginx.paths)
        if text != self._applied:
            if self._applied is None:
                self._nginx.prepare()
            await self._nginx.install(text)
            self._applied = text
        await self._remove_addresses(self._addresses - wanted)

    async def cut(self, address: str, ports: Iterable[int]) -> None:
        """Close the LB's connections to a deregistered target (nginx then answers 502 for a
        request still on one, as ALB does once the deregistration delay is over)."""
        for port in ports:
            argv = ["ss", "-K", "-t", "dst", address, "dport", "=", f":{port}"]
            await ip.run_async(argv, check=False)

    async def close(self) -> None:
        await self._nginx.stop()
        with contextlib.suppress(Exception):
            await self._remove_addresses(set(self._addresses))

    async def _remove_addresses(self, addresses: set[str]) -> None:
        for address in sorted(addresses):
            argv = ip.ip(None, "addr", "del", f"{address}/32", "dev", "lo")
            await ip.run_async(argv, check=False)
            self._addresses.discard(address)
