"""The in-process ``ApiClient``: direct store calls, for controllers and tests in the server's
own event loop. Processes outside the server use ``localcluster.apiserver.httpclient``."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

from localcluster.apiclient import JsonObject, PatchType, WatchEvent
from localcluster.apiserver import errors
from localcluster.apiserver.selectors import SelectorError, compile_selectors
from localcluster.apiserver.store import Store


def _matcher(label_selector: str | None, field_selector: str | None) -> Any:
    try:
        return compile_selectors(label_selector, field_selector)
    except SelectorError as exc:
        raise errors.bad_request(str(exc)) from exc


class InProcessClient:
    """Calls the store directly; every object crossing the boundary is copied, so callers may
    mutate what they get without corrupting stored state."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, resource: str, name: str, namespace: str | None = None) -> JsonObject:
        return copy.deepcopy(self._store.get(resource, namespace, name))

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        page = self._store.list(resource, namespace, _matcher(label_selector, field_selector))
        return copy.deepcopy(page.items), page.resource_version

    async def watch(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        watcher = self._store.watch(
            resource, namespace, resource_version, _matcher(label_selector, field_selector)
        )
        async for event in watcher.events(timeout_s=timeout_seconds):
            yield {"type": event["type"], "object": copy.deepcopy(event["object"])}

    async def create(
        self, resource: str, obj: JsonObject, namespace: str | None = None
    ) -> JsonObject:
        return copy.deepcopy(self._store.create(resource, namespace, obj))

    async def update(
        self,
        resource: str,
        obj: JsonObject,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject:
        return copy.deepcopy(self._store.update(resource, namespace, obj, subresource))

    async def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        patch_type: PatchType = "merge",
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject:
        return copy.deepcopy(
            self._store.patch(resource, namespace, name, patch, patch_type, subresource)
        )

    async def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> JsonObject:
        return copy.deepcopy(self._store.delete(resource, namespace, name, grace_period_seconds))
