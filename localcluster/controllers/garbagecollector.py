"""The garbage collector: deletes objects whose owners are all gone (background cascading
deletion), so deleting a Deployment removes its ReplicaSets, then their Pods (gracefully, via
their nodes), and deleting a Service removes its EndpointSlices.

Like upstream's, it never trusts its cache alone before deleting: an owner missing from the
cache is looked up on the server, because a dependent can be observed before its owner.
"""

from __future__ import annotations

from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.controllers.informer import Informers, WorkQueue, run_worker
from localcluster.informer import Handler
from localcluster.objects import is_deleting, key_of

# owner kind → resource plural (the owners the local cluster's objects can have)
OWNER_RESOURCES = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "Service": "services",
    "Node": "nodes",
    "Pod": "pods",
}

GcKey = tuple[str, str, str]  # (resource, namespace, name)


class GarbageCollector:
    name = "garbagecollector"

    def __init__(
        self,
        client: ApiClient,
        informers: Informers,
        dependents: tuple[str, ...] = ("replicasets", "pods", "endpointslices"),
    ) -> None:
        self.client = client
        self.informers = informers
        self.dependents = dependents
        self.queue: WorkQueue[GcKey] = WorkQueue()
        self._by_owner: dict[str, set[GcKey]] = {}
        for resource in dependents:
            informers[resource].add_handler(self._dependent_handler(resource))
        for resource in {OWNER_RESOURCES[k] for k in ("Deployment", "ReplicaSet", "Service")}:
            informers[resource].add_handler(self._on_owner)

    def _dependent_handler(self, resource: str) -> Handler:
        def handle(kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
            obj = new or old
            assert obj is not None
            key = (resource, *key_of(obj))
            for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
                uid = str(ref.get("uid"))
                if new is None:
                    self._by_owner.get(uid, set()).discard(key)
                else:
                    self._by_owner.setdefault(uid, set()).add(key)
            if new is not None and (new.get("metadata") or {}).get("ownerReferences"):
                self.queue.add(key)

        return handle

    def _on_owner(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        if kind != "DELETED" or old is None:
            return
        for key in list(self._by_owner.pop(str(old["metadata"].get("uid")), set())):
            self.queue.add(key)

    async def _owner_exists(self, namespace: str, ref: JsonObject) -> bool:
        resource = OWNER_RESOURCES.get(str(ref.get("kind")))
        if resource is None:
            return True  # unknown kinds are never collected
        owner_ns = "" if resource == "nodes" else namespace
        cached = self.informers[resource].get(owner_ns, str(ref.get("name")))
        if cached is not None and cached["metadata"].get("uid") == ref.get("uid"):
            return True
        try:
            live = await self.client.get(resource, str(ref.get("name")), owner_ns or None)
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return bool(live["metadata"].get("uid") == ref.get("uid"))

    async def reconcile(self, key: GcKey) -> float | None:
        resource, namespace, name = key
        obj = self.informers[resource].get(namespace, name)
        if obj is None or is_deleting(obj):
            return None
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        if not refs:
            return None
        for ref in refs:
            if await self._owner_exists(namespace, ref):
                return None
        try:
            await self.client.delete(resource, name, namespace or None)
        except ApiError as exc:
            if exc.code != 404:
                raise
        return None

    async def run(self) -> None:
        await run_worker(self.name, self.queue, self.reconcile)
