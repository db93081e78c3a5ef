"""The client-go machinery every controller here is built on: shared informers (one
``localcluster.informer.Informer`` per resource), a work queue keyed by object that coalesces
bursts, and a reconcile loop with per-key retry backoff.

Kept deliberately close to client-go's contract so that the timing seen by the data plane is the
timing a real cluster would produce: a change reaches a controller only through a watch event,
and a controller acts on the latest cached state of the key, not on each event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from localcluster.apiclient import ApiClient, ApiError
from localcluster.informer import Informer

log = logging.getLogger(__name__)

K = TypeVar("K")

RETRY_INITIAL_S = 0.05  # a failed sync's first retry: most failures are 409/404 races
RETRY_MAX_S = 2.0  # per-key cap, so a key stuck on a restarting API server retries often


class Informers:
    """One shared informer per resource (client-go's SharedInformerFactory)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._informers: dict[str, Informer] = {}

    def __getitem__(self, resource: str) -> Informer:
        if resource not in self._informers:
            self._informers[resource] = Informer(self.client, resource)
        return self._informers[resource]

    def all(self) -> list[Informer]:
        return list(self._informers.values())


class WorkQueue(Generic[K]):
    """client-go's rate-limited delaying queue, reduced to what the controllers need: a key is
    queued at most once, a key being processed is re-queued after it is done if it changed
    meanwhile, and ``add_after`` keeps the earliest deadline (so a batching delay collects every
    change in its window into one sync)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._waiting: dict[K, tuple[float, asyncio.TimerHandle]] = {}

    def add(self, key: K) -> None:
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting[1].cancel()
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        current = self._waiting.get(key)
        if current is not None and current[0] <= due:
            return
        if current is not None:
            current[1].cancel()
        self._waiting[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)

    def close(self) -> None:
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()

    def __len__(self) -> int:
        return self._queue.qsize() + len(self._waiting)


Reconcile = Callable[[K], Awaitable[float | None]]


async def run_worker(name: str, queue: WorkQueue[K], reconcile: Reconcile[K]) -> None:
    """Process keys forever. ``reconcile`` returns seconds after which to look again (timers
    such as minReadySeconds or a progress deadline) or None; API failures retry with
    exponential backoff per key, as client-go's rate limiter does."""
    failures: dict[K, int] = {}
    while True:
        key = await queue.get()
        try:
            requeue_after = await reconcile(key)
        except Exception as exc:
            count = failures.get(key, 0)
            failures[key] = count + 1
            if not isinstance(exc, ApiError):
                log.exception("%s: sync %s crashed", name, key)
            elif exc.code not in (404, 409):  # 404/409 are expected races: retried quietly
                log.warning("%s: sync %s failed: %s", name, key, exc)
            queue.add_after(key, min(RETRY_INITIAL_S * 2**count, RETRY_MAX_S))
        else:
            failures.pop(key, None)
            if requeue_after is not None:
                queue.add_after(key, requeue_after)
        finally:
            queue.done(key)


class Controller(Protocol):
    name: str

    @property
    def queue(self) -> WorkQueue[Any]: ...

    async def run(self) -> None: ...
