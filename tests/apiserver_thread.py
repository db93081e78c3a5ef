"""Runs the local cluster's API server in a background thread for tests of synchronous clients
(the official ``kubernetes`` client, kubectl, rolltrace's watcher)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localcluster.apiserver import ApiServer


@contextmanager
def api_server_thread(kubeconfig: Path, **server_args: Any) -> Iterator[ApiServer]:
    loop = asyncio.new_event_loop()
    server = ApiServer(**server_args)
    started = threading.Event()
    stopping: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stopping
        stopping = asyncio.Event()
        async with server:
            server.write_kubeconfig(kubeconfig)
            started.set()
            await stopping.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(15):
        raise RuntimeError("API server did not start within 15 s")
    try:
        yield server
    finally:
        assert stopping is not None
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        loop.close()
