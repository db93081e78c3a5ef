"""The dynamic sync mode on real nginx with Debian's Lua module, on loopback: the controller's
own ``Nginx`` and renderer, backends that are small HTTP servers on 127.0.0.1.

An endpoint change POSTed to the configuration endpoint reaches traffic within a worker sync
and without a reload; a backend without endpoints is answered 503; upstream connections are
kept alive; and ``proxy_next_upstream`` retries behave as in reload mode (each retry another
peer, at most min(peers, tries) attempts), checked on both modes side by side.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from localcluster.ingress.nginx import IngressNginx
from localcluster.ingress.nginxconf import (
    LUA_MODULES,
    LuaBalancer,
    NginxSettings,
    SyncMode,
    backends_document,
    render_nginx_conf,
    truth_path,
)
from localcluster.ingress.plan import CATCH_ALL_HOST, IngressPlan, Location, Server, Upstream
from localcluster.nginxcommon import NginxPaths
from tests.conftest import require

UPSTREAM = "default-web-80"
WORKER_SYNC_S = 0.3  # shorter than ingress-nginx's 1 s, so the test waits less; same mechanism
# how late a worker's timer may fire and the test's own polling see it on a loaded 2-core machine
SWITCH_SLACK_S = 0.5
START_TIMEOUT_S = 5.0
REQUESTS = 12  # an even number: round robin over two peers gives each half


def require_lua_module() -> None:
    """The dynamic mode needs Debian's libnginx-mod-http-lua (and lua-cjson): never skipped."""
    require("nginx")
    missing = [str(module) for module in LUA_MODULES if not module.exists()]
    if missing:
        pytest.fail(
            "missing capability: Debian's libnginx-mod-http-lua and lua-cjson "
            f"(scripts/install-system-deps): {', '.join(missing)}"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Backend:
    """An HTTP server on loopback that answers its own address and remembers each client
    connection (nginx's upstream connections) by its source port."""

    def __init__(self) -> None:
        self.connections: set[int] = set()
        self.address = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> Backend:
        async def answer(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.connections.add(peer[1] if peer else 0)
            return web.Response(text=self.address)

        app = web.Application()
        app.router.add_get("/", answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.address = f"127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _plan(*servers: str) -> IngressPlan:
    location = Location("/", "prefix", UPSTREAM)
    return IngressPlan((Server(CATCH_ALL_HOST, (location,)),), (Upstream(UPSTREAM, servers),))


class Proxy:
    """One nginx as the controller runs it, in either mode, with what the test reads of it."""

    def __init__(self, root: Path, mode: SyncMode, tries: int = 3) -> None:
        self.paths = NginxPaths(root)
        self.nginx = IngressNginx(self.paths)
        self.settings = NginxSettings(http_port=_free_port(), proxy_next_upstream_tries=tries)
        dynamic = mode is SyncMode.DYNAMIC
        balancer = LuaBalancer("ingress/test", _free_port(), WORKER_SYNC_S) if dynamic else None
        self.balancer = balancer
        self.url = f"http://127.0.0.1:{self.settings.http_port}/"

    async def start(self, plan: IngressPlan) -> None:
        self.nginx.prepare()
        self.paths.conf.write_text(
            render_nginx_conf(plan, self.settings, self.paths, self.balancer)
        )
        await self.nginx.start()
        await self.nginx.wait_started()
        if self.balancer is not None:
            await self.post(plan)

    async def post(self, plan: IngressPlan) -> int:
        assert self.balancer is not None
        return await self.nginx.post_backends(self.balancer.status_port, backends_document(plan))

    async def get(self, session: aiohttp.ClientSession) -> tuple[int, str]:
        async with session.get(self.url) as response:
            return response.status, await response.text()

    def access_log(self) -> list[dict[str, Any]]:
        lines = self.paths.access_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def reloads_and_workers(self) -> tuple[int, int]:
        """From nginx's error log (notice level): reloads, and worker processes started."""
        text = self.paths.error_log.read_text()
        return text.count("reconfiguring"), len(re.findall(r"start worker process \d+", text))

    def worker_switches(self) -> list[dict[str, Any]]:
        truth = truth_path(self.paths)
        if not truth.exists():
            return []
        lines = truth.read_text().splitlines()
        return [json.loads(line) for line in lines if "ingress-worker-synced" in line]

    async def switched(self, version: int) -> float:
        """When (realtime) the worker recorded switching to ``version``, waited for."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (found := [s for s in self.worker_switches() if s["version"] == version]):
            assert time.monotonic() < deadline, f"no worker switched to version {version}"
            await asyncio.sleep(0.01)
        return float(found[0]["ts_ns"]) / 1e9


@asynccontextmanager
async def _running(
    tmp_path: Path, mode: SyncMode, plan: IngressPlan, tries: int = 3
) -> AsyncIterator[tuple[Proxy, aiohttp.ClientSession]]:
    proxy = Proxy(tmp_path, mode, tries)
    try:
        await proxy.start(plan)
        # a fresh connection per request: the client side's keep-alive is not under test
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield proxy, session
    finally:
        await proxy.nginx.stop()


async def _until_answers(
    proxy: Proxy, session: aiohttp.ClientSession, wanted: Callable[[int, str], bool]
) -> float:
    """Requests until one is answered as wanted (bounded by time); returns when it was."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        status, body = await proxy.get(session)
        if wanted(status, body):
            return time.monotonic()
        assert time.monotonic() < deadline, f"never answered as wanted; last: {status} {body}"
        await asyncio.sleep(0.01)


async def test_endpoint_changes_reach_traffic_without_a_reload(tmp_path: Path) -> None:
    require_lua_module()
    a, b = await Backend().start(), await Backend().start()
    try:
        async with _running(tmp_path, SyncMode.DYNAMIC, _plan(a.address, b.address)) as (
            proxy,
            session,
        ):
            await _until_answers(proxy, session, lambda status, _: status == 200)
            bodies = [(await proxy.get(session))[1] for _ in range(REQUESTS)]
            assert bodies.count(a.address) == bodies.count(b.address) == REQUESTS // 2
            assert len(a.connections) == len(b.connections) == 1  # upstream keep-alive

            posted_at = time.time()
            version = await proxy.post(_plan(b.address))
            switched_at = await proxy.switched(version)
            assert switched_at - posted_at <= WORKER_SYNC_S + SWITCH_SLACK_S
            bodies = [(await proxy.get(session))[1] for _ in range(REQUESTS)]
            assert set(bodies) == {b.address}

            await proxy.post(_plan())  # no endpoint left: the balancer answers 503 itself
            await _until_answers(proxy, session, lambda status, _: status == 503)
    finally:
        await a.stop()
        await b.stop()
    assert proxy.access_log()[-1]["upstream_addr"] == ""  # read once nginx stopped: all written
    assert proxy.reloads_and_workers() == (0, 1)
    switches = proxy.worker_switches()
    assert [s["version"] for s in switches] == [version - 1, version, version + 1]
    assert len({s["worker_pid"] for s in switches}) == 1
    assert all(s["source"] == "ingress/test" for s in switches)


def _attempts(entry: dict[str, Any]) -> list[str]:
    return [a.strip() for a in str(entry["upstream_addr"]).split(",")]


@pytest.mark.parametrize("mode", list(SyncMode))
async def test_retries_go_to_another_peer_as_in_reload_mode(tmp_path: Path, mode: SyncMode) -> None:
    """A refused peer is retried on the other one (every request succeeds; no peer twice);
    with both refused, each is tried once; with ``tries`` 1, nothing is retried."""
    require_lua_module()
    dead, also_dead = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    live = await Backend().start()
    try:
        async with _running(tmp_path / "one", mode, _plan(dead, live.address)) as (proxy, session):
            await _until_answers(proxy, session, lambda status, _: status == 200)
            statuses = [(await proxy.get(session))[0] for _ in range(REQUESTS)]
        entries = proxy.access_log()[-REQUESTS:]  # once nginx stopped: every line written
        assert set(statuses) == {200}
        assert {tuple(_attempts(e)) for e in entries} == {(dead, live.address), (live.address,)}

        async with _running(tmp_path / "two", mode, _plan(dead, also_dead)) as (proxy, session):
            await _until_answers(proxy, session, lambda status, _: status == 502)
        entries = proxy.access_log()[-1:]
        assert sorted(_attempts(entries[0])) == sorted([dead, also_dead])

        plan = _plan(dead, live.address)
        async with _running(tmp_path / "three", mode, plan, tries=1) as (proxy, session):
            await _until_answers(proxy, session, lambda status, _: status == 200)
            statuses = [(await proxy.get(session))[0] for _ in range(REQUESTS)]
        entries = proxy.access_log()[-REQUESTS:]
        assert sorted(set(statuses)) == [200, 502]
        assert all(len(_attempts(e)) == 1 for e in entries)
    finally:
        await live.stop()
