"""nginx.conf from an ``IngressPlan``: pure text, validated by ``nginx -t`` in the tests.

Settings default to ingress-nginx's ConfigMap defaults (docs/user-guide/nginx-configuration/
configmap.md): ``proxy-next-upstream: error timeout``, ``proxy-next-upstream-tries: 3``,
``proxy-next-upstream-timeout: 0``, ``proxy-connect-timeout: 5``, ``proxy-read-timeout`` and
``proxy-send-timeout: 60``, ``upstream-keepalive-connections: 320``,
``upstream-keepalive-timeout: 60``, ``upstream-keepalive-requests: 10000``, client
``keep-alive: 75`` and ``keep-alive-requests: 1000``. Upstream servers get ``max_fails=0`` as
ingress-nginx renders them, so nginx never takes a server out by itself: the endpoint list is
the controller's alone.

Every path nginx writes (pid, logs, temp files) is under the Pod's directory
(``localcluster.nginxcommon.NginxPaths``), so two controller Pods never share a file and the
access log stays with the run.

Two sync modes (``SyncMode``). In reload mode every endpoint is a ``server`` line of its own
``upstream`` block, so any endpoint change is a new text and a reload. In dynamic mode, as
ingress-nginx's template (rootfs/etc/nginx/template/nginx.tmpl) renders it, every location
proxies to one ``upstream_balancer`` whose peer ``balancer_by_lua`` picks from lists the
controller POSTs to a local-only configuration server (``LuaBalancer``; the Lua code is in
``lua/rolltrace/``): the text depends only on servers, locations and the upstream names they
route to, so only a change of those reloads nginx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypedDict

from localcluster.ingress.plan import CATCH_ALL_HOST, IngressPlan, Location, Server
from localcluster.nginxcommon import LOG_FORMAT as LOG_FORMAT  # the hops' one format, re-exported
from localcluster.nginxcommon import NginxPaths, keepalive_directives, main_context, seconds

NEXT_UPSTREAM_CONDITIONS = frozenset(
    {"error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
     "http_403", "http_404", "http_429", "non_idempotent", "off"}
)  # fmt: skip
WORKER_CONNECTIONS = 16384  # ingress-nginx's max-worker-connections default
TRUTH_FILE = "truth.jsonl"  # in the Pod's directory: the controller's and its Lua workers' lines
BALANCER_UPSTREAM = "upstream_balancer"  # ingress-nginx's name for its one Lua-balanced upstream
LUA_DIR = Path(__file__).with_name("lua")
# Debian's libnginx-mod-http-lua and the NDK it needs, by absolute path (nginx runs with ``-p``
# set to the Pod's directory); Debian's nginx loads them only through /etc/nginx's includes.
LUA_MODULES = (
    Path("/usr/lib/nginx/modules/ndk_http_module.so"),
    Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
)
# ingress-nginx's sizes: lua_shared_dict configuration_data 20M, and a configuration server whose
# request bodies (every backend's endpoints) stay in memory up to 21M.
CONFIGURATION_DICT_SIZE = "20m"
CONFIGURATION_BODY_SIZE = "21m"


class SyncMode(StrEnum):
    RELOAD = "reload"  # every change: a new nginx.conf and a reload
    DYNAMIC = "dynamic"  # endpoint changes: a POST to the Lua balancer; structure: a reload


@dataclass(frozen=True)
class LuaBalancer:
    """The dynamic mode's Lua side: where its configuration endpoint listens, how often each
    worker picks up a new list, and the truth source its workers' lines carry."""

    truth_source: str
    status_port: int = 10246  # ingress-nginx's --status-port: the endpoint, on 127.0.0.1 only
    # ingress-nginx's BACKENDS_SYNC_INTERVAL (rootfs/etc/nginx/lua/balancer.lua)
    worker_sync_s: float = 1.0


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


def truth_path(paths: NginxPaths) -> Path:
    return paths.root / TRUTH_FILE


def _keepalive_directives(settings: NginxSettings) -> list[str]:
    return keepalive_directives(
        settings.upstream_keepalive_connections,
        settings.upstream_keepalive_timeout_s,
        settings.upstream_keepalive_requests,
    )


def _upstream_block(name: str, servers: tuple[str, ...], settings: NginxSettings) -> list[str]:
    return [
        f"    upstream {name} {{",
        *(f"        server {server} max_fails=0;" for server in servers),
        *_keepalive_directives(settings),
        "    }",
    ]


LocationAction = Callable[[Location], list[str]]


def _reload_action(routable: set[str]) -> LocationAction:
    """Reload mode: a backend without a ready endpoint has no upstream block; nginx answers
    503 itself."""

    def action(location: Location) -> list[str]:
        if location.upstream is None or location.upstream not in routable:
            return ["            return 503;"]  # no such Service/port, or no ready endpoint
        return [f"            proxy_pass http://{location.upstream};"]

    return action


def _dynamic_action(location: Location) -> list[str]:
    """Dynamic mode: the location names its backend; the Lua balancer answers 503 while that
    backend has no endpoint (its rewrite phase) and picks the peer otherwise."""
    if location.upstream is None:
        return ["            return 503;"]  # no such Service/port: structure, not endpoints
    return [
        f'            set $proxy_upstream_name "{location.upstream}";',
        '            rewrite_by_lua_block { require("rolltrace.balancer").rewrite() }',
        f"            proxy_pass http://{BALANCER_UPSTREAM};",
    ]


def _location_block(location: Location, action: LocationAction) -> list[str]:
    modifier = "= " if location.match == "exact" else ""
    return [f"        location {modifier}{location.path} {{", *action(location), "        }"]


def _server_block(server: Server, action: LocationAction, settings: NginxSettings) -> list[str]:
    is_default = server.host == CATCH_ALL_HOST
    listen = f"listen {settings.http_port}{' default_server' if is_default else ''};"
    lines = ["    server {", f"        {listen}", f"        server_name {server.host};"]
    for location in server.locations:
        lines += _location_block(location, action)
    if not any(loc.path == "/" and loc.match == "prefix" for loc in server.locations):
        lines += ["        location / {", "            return 404;", "        }"]  # default backend
    return [*lines, "    }"]


def _proxy_directives(settings: NginxSettings) -> list[str]:
    tries = settings.proxy_next_upstream_tries
    return [
        f"    proxy_next_upstream {' '.join(settings.proxy_next_upstream)};",
        f"    proxy_next_upstream_tries {tries};",
        f"    proxy_next_upstream_timeout {seconds(settings.proxy_next_upstream_timeout_s)};",
        f"    proxy_connect_timeout {seconds(settings.proxy_connect_timeout_s)};",
        f"    proxy_read_timeout {seconds(settings.proxy_read_timeout_s)};",
        f"    proxy_send_timeout {seconds(settings.proxy_send_timeout_s)};",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',  # upstream keep-alive needs no "close" forwarded
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Request-ID $request_id;",
        "    proxy_set_header X-Forwarded-For $remote_addr;",
    ]


def _lua_blocks(balancer: LuaBalancer, settings: NginxSettings, paths: NginxPaths) -> list[str]:
    """The Lua balancer's http-level directives, its one upstream (``keepalive`` after
    ``balancer_by_lua``: the keep-alive module wraps the balancer set before it, as in
    ingress-nginx's template) and its configuration server (127.0.0.1 only, not logged)."""
    lua_settings = json.dumps(
        {
            "sync_interval_s": balancer.worker_sync_s,
            "truth_path": str(truth_path(paths)),
            "truth_source": balancer.truth_source,
        }
    )
    module = 'require("rolltrace.balancer")'
    return [
        f'    lua_package_path "{LUA_DIR}/?.lua;;";',
        f"    lua_shared_dict configuration_data {CONFIGURATION_DICT_SIZE};",
        f"    init_by_lua_block {{ {module}.init([==[{lua_settings}]==]) }}",
        f"    init_worker_by_lua_block {{ {module}.init_worker() }}",
        f"    upstream {BALANCER_UPSTREAM} {{",
        "        server 0.0.0.1;  # a placeholder: balancer_by_lua sets every peer",
        f"        balancer_by_lua_block {{ {module}.balance() }}",
        *_keepalive_directives(settings),
        "    }",
        "    server {",
        f"        listen 127.0.0.1:{balancer.status_port};",
        "        access_log off;",
        f"        client_max_body_size {CONFIGURATION_BODY_SIZE};",
        f"        client_body_buffer_size {CONFIGURATION_BODY_SIZE};",
        "        location = /configuration/backends {",
        '            content_by_lua_block { require("rolltrace.configuration").backends() }',
        "        }",
        "        location / {",
        "            return 404;",
        "        }",
        "    }",
    ]


def _http_directives(settings: NginxSettings) -> list[str]:
    return [
        f"    keepalive_timeout {seconds(settings.keep_alive_s)};",
        f"    keepalive_requests {settings.keep_alive_requests};",
        *_proxy_directives(settings),
    ]


def render_nginx_conf(
    plan: IngressPlan,
    settings: NginxSettings,
    paths: NginxPaths,
    balancer: LuaBalancer | None = None,
) -> str:
    """The whole nginx.conf: reload mode without a balancer; dynamic mode with one, where the
    text never depends on the plan's endpoints (``backends_document`` carries them)."""
    modules = [] if balancer is None else [f"load_module {module};" for module in LUA_MODULES]
    lines = [*main_context(paths, WORKER_CONNECTIONS, modules), *_http_directives(settings)]
    action: LocationAction
    if balancer is None:
        action = _reload_action({u.name for u in plan.upstreams if u.servers})
        for upstream in plan.upstreams:
            if upstream.servers:  # nginx refuses an empty upstream block
                lines += _upstream_block(upstream.name, upstream.servers, settings)
    else:
        action = _dynamic_action
        lines += _lua_blocks(balancer, settings, paths)
    for server in plan.servers:
        lines += _server_block(server, action, settings)
    return "\n".join([*lines, "}", ""])


class Endpoint(TypedDict):
    address: str
    port: str


class Backend(TypedDict):
    name: str
    endpoints: list[Endpoint]


def backends_document(plan: IngressPlan) -> list[Backend]:
    """What dynamic mode POSTs: every upstream with its endpoints, in ingress-nginx's
    ``/configuration/backends`` shape (a list of ``{name, endpoints: [{address, port}]}``)."""
    return [
        {
            "name": upstream.name,
            "endpoints": [
                {"address": address, "port": port}
                for address, _, port in (server.rpartition(":") for server in upstream.servers)
            ],
        }
        for upstream in plan.upstreams
    ]
