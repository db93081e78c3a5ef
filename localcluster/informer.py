"""The one informer of the local cluster: list + watch one resource into a cache, as client-go's
reflector + shared informer do, for the controllers, kube-proxy, the cloud LB and the kubelet.

The bookkeeping (resourceVersion, 410 handling, the relist diff, duplicates) is
``kubewire.listwatch``; this module is the loop on top of ``ApiClient``:

- list, deliver the difference, mark synced, then watch from the list's resourceVersion;
- a watch the server ends (timeout, restart) resumes at once from the last version seen;
- 410 Gone / Expired relists at once (history was lost, nothing else recovers);
- any other failure waits a backoff (doubling, capped, as client-go's backoff manager), then
  resumes the watch after an API error or relists after a transport error (the connection's
  fate is unknown, so a fresh list is the safe start).

A change reaches a component only through a watch event and handlers run synchronously on it,
so the time a change takes to reach the data plane is the time a real cluster's watch takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from kubewire.listwatch import (
    GONE,
    Change,
    ListWatchStore,
    ObjectKey,
    WatchExpired,
    WatchFailed,
)
from localcluster.apiclient import ApiClient, ApiError, JsonObject

log = logging.getLogger(__name__)

# (event type, old object or None, new object or None); DELETED has new=None and old = the
# object's last known state.
Handler = Callable[[str, JsonObject | None, JsonObject | None], None]

RETRY_INITIAL_S = 0.05  # first pause after a failed list/watch: a restarting server is back soon
RETRY_MAX_S = 2.0  # cap: a component must notice a recovered server within a couple of seconds


class Informer:
    """A cache of one resource kept current by list + watch; handlers run synchronously on
    every change (they should only enqueue keys or set flags)."""

    def __init__(self, client: ApiClient, resource: str, field_selector: str | None = None) -> None:
        self.client = client
        self.resource = resource
        self.field_selector = field_selector
        self.store = ListWatchStore()
        self.synced = asyncio.Event()
        self._handlers: list[Handler] = []

    @property
    def cache(self) -> dict[ObjectKey, JsonObject]:
        return self.store.objects

    @property
    def relists(self) -> int:
        """Lists done so far, the first one included."""
        return self.store.lists

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, namespace: str, name: str) -> JsonObject | None:
        return self.store.objects.get((namespace, name))

    def values(self) -> list[JsonObject]:
        return list(self.store.objects.values())

    def in_namespace(self, namespace: str) -> Iterator[JsonObject]:
        return (obj for (ns, _), obj in list(self.store.objects.items()) if ns == namespace)

    def _deliver(self, change: Change | None) -> None:
        if change is None:
            return
        for handler in self._handlers:
            try:
                handler(change.type, change.old, change.new)
            except Exception:
                log.exception("%s handler failed", self.resource)

    async def _list(self) -> None:
        items, version = await self.client.list(self.resource, field_selector=self.field_selector)
        for change in self.store.replace(items, version):
            self._deliver(change)
        self.synced.set()

    async def _watch(self) -> None:
        """Until the server ends the stream; raises on a failed or expired watch."""
        async for event in self.client.watch(
            self.resource,
            resource_version=self.store.resource_version,
            field_selector=self.field_selector,
        ):
            self._deliver(self.store.apply(event))

    async def run(self) -> None:
        """Until cancelled."""
        delay = RETRY_INITIAL_S
        need_list = True
        while True:
            version_before = self.store.resource_version
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                continue  # the server ended the stream: resume from the last version
            except Exception as exc:  # API, watch-stream and transport errors of any client
                if _expired(exc):
                    need_list = True
                    continue
                if not isinstance(exc, ApiError | WatchFailed):  # the connection's fate unknown
                    need_list = True
                log.warning("%s list/watch failed: %r", self.resource, exc)
            if self.store.resource_version != version_before:  # it made progress before failing
                delay = RETRY_INITIAL_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Stops informer loops and the workers beside them, and waits until each has unwound."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _expired(exc: Exception) -> bool:
    """410 Gone / Expired, raised by the client or sent as an ERROR event in the stream."""
    return isinstance(exc, WatchExpired) or (isinstance(exc, ApiError) and exc.code == GONE)


class ObjectCache(Informer):
    """An informer for a level-triggered consumer (kube-proxy, the cloud LB) that re-reads the
    whole cache on any change: ``on_change`` runs on every change, and once when the first list
    is in, even an empty one, since such a consumer programs its state once at start whatever
    it holds (kube-proxy's ``OnServicesSynced`` / ``OnEndpointSlicesSynced``)."""

    def __init__(self, client: ApiClient, resource: str, on_change: Callable[[], None]) -> None:
        super().__init__(client, resource)
        self._on_change = on_change
        self.add_handler(lambda _kind, _old, _new: on_change())

    async def _list(self) -> None:
        first = not self.synced.is_set()
        await super()._list()
        if first:
            self._on_change()
