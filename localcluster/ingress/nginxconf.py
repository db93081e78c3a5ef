"""nginx.conf from an ``IngressPlan``: pure text, validated by ``nginx -t`` in the tests.

Settings default to ingress-nginx's ConfigMap defaults (docs/user-guide/nginx-configuration/
configmap.md): ``proxy-next-upstream: error timeout``, ``proxy-next-upstream-tries: 3``,
``proxy-next-upstream-timeout: 0``, ``proxy-connect-timeout: 5``, ``proxy-read-timeout`` and
``proxy-send-timeout: 60``, ``upstream-keepalive-connections: 320``,
``upstream-keepalive-timeout: 60``, ``upstream-keepalive-requests: 10000``, client
``keep-alive: 75`` and ``keep-alive-requests: 1000``. Upstream servers get ``max_fails=0`` as
ingress-nginx renders them, so nginx never takes a server out by itself: the endpoint list is
the controller's alone.

Every path nginx writes (pid, logs, temp files) is under the Pod's directory (``NginxPaths``),
so two controller Pods never share a file and the access log stays with the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localcluster.ingress.plan import CATCH_ALL_HOST, IngressPlan, Location, Server

# The access log format: one JSON object per line; analyzer readers parse exactly these names.
LOG_FORMAT = """log_format rolltrace escape=json '{"msec":$msec,"remote_addr":"$remote_addr","remote_port":"$remote_port","request":"$request","status":$status,"request_time":$request_time,"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status","upstream_connect_time":"$upstream_connect_time","upstream_header_time":"$upstream_header_time","upstream_response_time":"$upstream_response_time","connection":$connection,"connection_requests":$connection_requests,"request_id":"$request_id","host":"$host"}';"""
NEXT_UPSTREAM_CONDITIONS = frozenset(
    {"error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
     "http_403", "http_404", "http_429", "non_idempotent", "off"}
)  # fmt: skip
WORKER_CONNECTIONS = 16384  # ingress-nginx's max-worker-connections default
# One worker: the local cluster runs on a couple of cores shared with every Pod; ingress-nginx's
# default is one per core (worker-processes: auto).
WORKER_PROCESSES = 1


@dataclass(frozen=True)
class NginxSettings:
    """The ingress-nginx ConfigMap keys this controller honours (defaults as upstream's)."""

    proxy_next_upstream: tuple[str, ...] = ("error", "timeout")
    proxy_next_upstream_tries: int = 3
    proxy_next_upstream_timeout_s: float = 0.0  # 0: no limit
    proxy_connect_timeout_s: float = 5.0
    proxy_read_timeout_s: float = 60.0
    proxy_send_timeout_s: float = 60.0
    upstream_keepalive_connections: int = 320
    upstream_keepalive_timeout_s: float = 60.0
    upstream_keepalive_requests: int = 10_000
    keep_alive_s: float = 75.0
    keep_alive_requests: int = 1000
    http_port: int = 80

    def __post_init__(self) -> None:
        unknown = set(self.proxy_next_upstream) - NEXT_UPSTREAM_CONDITIONS
        if unknown or not self.proxy_next_upstream:
            raise ValueError(
                f"proxy_next_upstream: unknown condition(s) {sorted(unknown)}; "
                f"known: {sorted(NEXT_UPSTREAM_CONDITIONS)}"
            )
        if self.proxy_next_upstream_tries < 0:
            raise ValueError("proxy_next_upstream_tries must be >= 0 (0: unlimited)")


@dataclass(frozen=True)
class NginxPaths:
    """Where one nginx keeps its files: all under the Pod's directory."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def access_log(self) -> Path:
        return self.root / "access.log"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms"


def _upstream_block(name: str, servers: tuple[str, ...], settings: NginxSettings) -> list[str]:
    return [
        f"    upstream {name} {{",
        *(f"        server {server} max_fails=0;" for server in servers),
        f"        keepalive {settings.upstream_keepalive_connections};",
        f"        keepalive_timeout {_seconds(settings.upstream_keepalive_timeout_s)};",
        f"        keepalive_requests {settings.upstream_keepalive_requests};",
        "    }",
    ]


def _location_block(location: Location, routable: set[str]) -> list[str]:
    modifier = "= " if location.match == "exact" else ""
    if location.upstream is None or location.upstream not in routable:
        action = ["            return 503;"]  # no such Service/port, or no ready endpoint
    else:
        action = [f"            proxy_pass http://{location.upstream};"]
    return [f"        location {modifier}{location.path} {{", *action, "        }"]


def _server_block(server: Server, routable: set[str], settings: NginxSettings) -> list[str]:
    is_default = server.host == CATCH_ALL_HOST
    listen = f"listen {settings.http_port}{' default_server' if is_default else ''};"
    lines = ["    server {", f"        {listen}", f"        server_name {server.host};"]
    for location in server.locations:
        lines += _location_block(location, routable)
    if not any(loc.path == "/" and loc.match == "prefix" for loc in server.locations):
        lines += ["        location / {", "            return 404;", "        }"]  # default backend
    return [*lines, "    }"]


def _proxy_directives(settings: NginxSettings) -> list[str]:
    tries = settings.proxy_next_upstream_tries
    return [
        f"    proxy_next_upstream {' '.join(settings.proxy_next_upstream)};",
        f"    proxy_next_upstream_tries {tries};",
        f"    proxy_next_upstream_timeout {_seconds(settings.proxy_next_upstream_timeout_s)};",
        f"    proxy_connect_timeout {_seconds(settings.proxy_connect_timeout_s)};",
        f"    proxy_read_timeout {_seconds(settings.proxy_read_timeout_s)};",
        f"    proxy_send_timeout {_seconds(settings.proxy_send_timeout_s)};",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',  # upstream keep-alive needs no "close" forwarded
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Request-ID $request_id;",
        "    proxy_set_header X-Forwarded-For $remote_addr;",
    ]


def render_nginx_conf(plan: IngressPlan, settings: NginxSettings, paths: NginxPaths) -> str:
    """The whole nginx.conf. ``user root``: the Pod's directory lives under the cluster's
    0700 state directory, which nginx's default worker user could not enter."""
    temp = paths.temp
    routable = {u.name for u in plan.upstreams if u.servers}
    lines = [
        "daemon off;",
        "user root;",
        f"worker_processes {WORKER_PROCESSES};",
        f"pid {paths.pid};",
        f"error_log {paths.error_log} notice;",
        f"events {{ worker_connections {WORKER_CONNECTIONS}; }}",
        "http {",
        f"    {LOG_FORMAT}",
        f"    access_log {paths.access_log} rolltrace;",
        *(
            f"    {kind}_temp_path {temp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
        f"    keepalive_timeout {_seconds(settings.keep_alive_s)};",
        f"    keepalive_requests {settings.keep_alive_requests};",
        *_proxy_directives(settings),
    ]
    for upstream in plan.upstreams:
        if upstream.servers:  # nginx refuses an empty upstream block
            lines += _upstream_block(upstream.name, upstream.servers, settings)
    for server in plan.servers:
        lines += _server_block(server, routable, settings)
    return "\n".join([*lines, "}", ""])
