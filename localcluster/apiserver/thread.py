"""An ApiServer on its own event loop in a background thread, for synchronous callers: the
official ``kubernetes`` client, kubectl subprocesses and benchmarks drive a real port while the
test or tool itself stays synchronous."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from localcluster.apiserver.server import ApiServer

T = TypeVar("T")


class ServerThread:
    """``with ServerThread(ApiServer(...)) as thread:`` serves until the block exits;
    ``thread.run(coro)`` runs a coroutine (e.g. in-process client calls) on the server loop."""

    def __init__(self, server: ApiServer, kubeconfig: str | Path | None = None) -> None:
        self.server = server
        self.kubeconfig = Path(kubeconfig) if kubeconfig else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="apiserver", daemon=True
        )

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.run(self.server.start())
        if self.kubeconfig:
            self.server.write_kubeconfig(self.kubeconfig)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
