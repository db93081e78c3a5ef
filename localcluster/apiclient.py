"""The one interface every local-cluster component uses to talk to the API server.

Controllers, virtual nodes, kubelets, kube-proxies and the cloud-LB emulator all see the cluster
only through ``ApiClient``, exactly as real components see a real API server through client-go:
they list, watch and write objects, and never reach into the server's storage. That keeps the
emulated timing honest (every change travels through the same watch machinery external clients
use) and lets each component be tested against an in-process server.

Two implementations exist (``localcluster.apiserver``): an in-process one that calls the store
directly, and an HTTP one (aiohttp, over TCP or a unix socket) that node agents use from inside
their network namespaces.

Objects are plain JSON-shaped dicts, as on the wire. Resources are named by their plural
(``"pods"``, ``"deployments"``, ``"replicasets"``, ``"endpointslices"``, ``"services"``,
``"nodes"``, ``"events"``, ``"namespaces"``, ``"controllerrevisions"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, TypedDict

JsonObject = dict[str, Any]
PatchType = Literal["merge", "json", "strategic"]


class WatchEvent(TypedDict):
    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
    object: JsonObject


class ApiError(Exception):
    """The server answered with a Kubernetes ``Status`` failure; ``code``/``reason`` as upstream
    (404 NotFound, 409 Conflict / AlreadyExists, 410 Expired/Gone, 422 Invalid, ...), so callers
    can branch on the reason the same way client-go callers do."""

    def __init__(self, code: int, reason: str, message: str, status: JsonObject | None = None):
        self.code = code
        self.reason = reason
        self.status = status or {}
        super().__init__(f"{code} {reason}: {message}")


class ApiClient(Protocol):
    async def get(self, resource: str, name: str, namespace: str | None = None) -> JsonObject: ...

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        """Objects and the list's resourceVersion (to start a watch from)."""
        ...

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version``; raises ApiError(410) when it is too old."""
        ...

    async def create(
        self, resource: str, obj: JsonObject, namespace: str | None = None
    ) -> JsonObject: ...

    async def update(
        self,
        resource: str,
        obj: JsonObject,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject:
        """Replace; ApiError(409) when obj's resourceVersion is stale."""
        ...

    async def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        patch_type: PatchType = "merge",
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject: ...

    async def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> JsonObject:
        """Graceful for Pods: returns the Pod with deletionTimestamp set until its node confirms
        (a delete with grace_period_seconds=0, which is how a kubelet confirms)."""
        ...
