"""A list-then-watch cache of one resource (client-go's reflector, reduced): node agents keep
their own view of Services and EndpointSlices and react to every change, relisting when the
watch breaks or expires (410), exactly as real kube-proxies and cloud controllers do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from localcluster.apiclient import ApiClient

log = logging.getLogger(__name__)

RELIST_BACKOFF_S = 0.2


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class ObjectCache:
    def __init__(
        self, client: ApiClient, resource: str, on_change: Callable[[], None] | None = None
    ) -> None:
        self._client = client
        self.resource = resource
        self._on_change = on_change or (lambda: None)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()

    def values(self) -> list[dict[str, Any]]:
        return list(self.objects.values())

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            try:
                items, version = await self._client.list(self.resource)
                self.objects = {object_key(o): o for o in items}
                self.synced.set()
                self._on_change()
                async for event in self._client.watch(self.resource, resource_version=version):
                    obj = event["object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.objects[object_key(obj)] = obj
                    elif event["type"] == "DELETED":
                        self.objects.pop(object_key(obj), None)
                    else:
                        continue
                    self._on_change()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of list/watch: relist, as client-go does
                log.info("%s watch broke (%r); relisting", self.resource, exc)
            await asyncio.sleep(RELIST_BACKOFF_S)
