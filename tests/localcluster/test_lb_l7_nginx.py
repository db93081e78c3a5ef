"""The L7 LB's nginx, run for real on loopback with the configuration the LB renders, against
small backends in this process: each ALB status comes from the failure itself.

- a pooled connection that the target resets when it is reused: 502, not retried (and the
  nginx fact behind ``proxy_next_upstream off``: with nginx's default ``error``, the same
  failure on a *cached* connection is retried on a new one, even with a single server, so the
  client never sees it);
- a listener without registered targets: 503;
- a target that accepts but never answers: 504 after the idle timeout.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from localcluster.lb.l7 import L7Settings, l7_paths, render_l7_conf
from localcluster.lb.rules import Frontend
from localcluster.nginxcommon import Nginx
from tests.conftest import require

VIP = "127.0.0.31"  # a loopback address stands in for the external IP
PORT = 28090
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def resets_on_reuse() -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """Answers the first request of a connection and keeps it open; resets the connection when
    a second request arrives on it: what a request on a connection the app has just closed
    when idle meets."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(RESPONSE)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        _reset(writer)

    return serve


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # holds the connection until nginx gives up and closes it
    writer.close()


@asynccontextmanager
async def backend(handler: Callable[..., Any]) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def l7_nginx(
    tmp_path: Path, targets: tuple[tuple[str, int], ...], settings: L7Settings, retry: str = ""
) -> AsyncIterator[Path]:
    """nginx with the LB's configuration for one frontend; ``retry`` swaps the LB's
    ``proxy_next_upstream off`` for another value (to show what nginx would do then)."""
    require("nginx")
    paths = l7_paths(tmp_path)
    frontend = Frontend("default/web", VIP, "tcp", PORT, targets)
    text = render_l7_conf([frontend], settings, paths)
    if retry:
        text = text.replace("proxy_next_upstream off;", f"proxy_next_upstream {retry};")
    nginx = Nginx(paths)
    nginx.prepare()
    await nginx.install(text)
    try:
        yield paths.access_log
    finally:
        await nginx.stop()


def _get(count: int = 1) -> list[int]:
    """``count`` requests, each on a new client connection (the pool is nginx's)."""
    statuses = []
    for _ in range(count):
        connection = http.client.HTTPConnection(VIP, PORT, timeout=10)
        connection.request("GET", "/")
        statuses.append(connection.getresponse().status)
        connection.close()
    return statuses


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_reset_pooled_connection_is_a_502_and_not_retried(tmp_path: Path) -> None:
    async with (
        backend(resets_on_reuse()) as port,
        l7_nginx(tmp_path, (("127.0.0.1", port),), L7Settings()) as log,
    ):
        statuses = await asyncio.to_thread(_get, 2)
    assert statuses == [200, 502]
    first, second = _log(log)
    assert first["connection"] != second["connection"]  # two client connections, one pooled
    assert second["upstream_status"] == "502" and "," not in second["upstream_addr"]


async def test_nginx_would_retry_a_failed_cached_connection_with_its_default(
    tmp_path: Path,
) -> None:
    """Why the LB sets ``off``: nginx's default ``error`` retries the failed request on a new
    connection to the same (only) server, since a cached connection's failure does not use up
    a try: the client gets 200 and only the log's two upstream attempts show the failure."""
    async with (
        backend(resets_on_reuse()) as port,
        l7_nginx(tmp_path, (("127.0.0.1", port),), L7Settings(), "error") as log,
    ):
        statuses = await asyncio.to_thread(_get, 2)
    assert statuses == [200, 200]
    retried = _log(log)[1]
    assert retried["upstream_status"] == "502, 200"
    assert retried["upstream_addr"] == f"127.0.0.1:{port}, 127.0.0.1:{port}"


async def test_no_registered_target_is_a_503(tmp_path: Path) -> None:
    async with l7_nginx(tmp_path, (), L7Settings()) as log:
        statuses = await asyncio.to_thread(_get, 1)
    assert statuses == [503]
    assert _log(log)[0]["upstream_addr"] == ""  # answered by the LB itself


async def test_a_target_silent_for_the_idle_timeout_is_a_504(tmp_path: Path) -> None:
    idle_s = 0.5
    async with backend(never_answers) as port:
        settings = L7Settings(idle_timeout_s=idle_s)
        async with l7_nginx(tmp_path, (("127.0.0.1", port),), settings) as log:
            statuses = await asyncio.to_thread(_get, 1)
    assert statuses == [504]
    (entry,) = _log(log)
    assert entry["upstream_status"] == "504"
    assert idle_s <= entry["request_time"] < idle_s + 1.0
