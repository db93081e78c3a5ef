"""A logging relay in front of the local API server, for tests that must prove what a client
sent: it listens on TCP (inside the network namespace it is started in, e.g. the local
cluster's client namespace, where a real cluster's endpoint would be reachable) and forwards
each request, streaming (watches included), to the API server's unix socket, which every
namespace can reach. One line per request goes to the log: ``METHOD PATH?QUERY``.

    python -m tests.e2e.apiaudit --listen 127.0.0.1:18080 --socket API.sock --log audit.log

Runs until SIGTERM; it serves only what its one client sends, so it bounds no traffic itself.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TextIO

from aiohttp import ClientSession, UnixConnector, web

# hop-by-hop or re-framed by aiohttp on each side: never copied across
_DROPPED = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def relay(socket_path: str, log: TextIO) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        log.write(f"{request.method} {request.path_qs}\n")
        log.flush()
        session: ClientSession = request.app["session"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        body = await request.read()
        async with session.request(
            request.method, f"http://localhost{request.path_qs}", headers=headers, data=body
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _DROPPED:
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def open_session(app: web.Application) -> None:
        connector = UnixConnector(path=socket_path)
        app["session"] = ClientSession(connector=connector, auto_decompress=False, timeout=None)

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


async def serve(listen: str, socket_path: str, log_path: Path) -> None:
    host, port = listen.rsplit(":", 1)
    with log_path.open("a") as log:
        runner = web.AppRunner(relay(socket_path, log), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, int(port)).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--socket", required=True, help="the API server's unix socket")
    parser.add_argument("--log", required=True, type=Path, help="where request lines go")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.socket, args.log))


if __name__ == "__main__":
    main()
