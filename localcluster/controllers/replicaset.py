"""The ReplicaSet controller: keeps as many active Pods as ``spec.replicas`` and reports how
many are ready and available.

Pure parts: which Pods go first on scale-down (``controller.ActivePodsWithRanks`` order) and the
status counts (``replicaset.calculateStatus``). The adapter (``ReplicaSetController``) follows
upstream's ``syncReplicaSet``: act only when earlier creates/deletes have been observed
("expectations", so a lagging cache never doubles a scale-up), then write status.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from kubewire import parse_time
from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.controllers.informer import Informers, WorkQueue, run_worker
from localcluster.events import EventRecorder
from localcluster.objects import (
    ObjectKey,
    controller_ref,
    is_controlled_by,
    is_deleting,
    key_of,
    labels_of,
    owner_reference,
    pod_is_active,
    pod_is_available,
    pod_is_ready,
    pod_ready_since,
    restart_count,
    seconds_until_available,
    selector_matches,
)

POD_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}
EXPECTATIONS_TIMEOUT_S = 30.0  # upstream: ExpectationsTimeout = 5 min; ours are in-process


def deletion_order(
    pods: Sequence[JsonObject], related: Iterable[JsonObject] = ()
) -> list[JsonObject]:
    """Pods sorted so the best victims come first, in ``controller.ActivePodsWithRanks`` order:
    unassigned before assigned; Pending < Unknown < Running; not ready before ready; lower
    ``pod-deletion-cost`` first; Pods doubled up on a node (counting ``related`` Pods of the
    same owner family) first; ready for a shorter time first; more restarts first; newer first.
    Ready times and creation times are compared exactly (upstream's LogarithmicScaleDown buckets
    them; with exact times, the newest still goes first)."""
    per_node = Counter(
        p.get("spec", {}).get("nodeName") for p in [*pods, *related] if pod_is_active(p)
    )

    def rank(pod: JsonObject) -> tuple[Any, ...]:
        node = pod.get("spec", {}).get("nodeName")
        ready = pod_is_ready(pod)
        ready_since = pod_ready_since(pod) if ready else None
        cost = int((pod.get("metadata", {}).get("annotations") or {}).get(POD_DELETION_COST, 0))
        created = parse_time(pod.get("metadata", {}).get("creationTimestamp")) or 0.0
        return (
            1 if node else 0,
            _PHASE_RANK.get(str(pod.get("status", {}).get("phase")), 0),
            1 if ready else 0,
            cost,
            -(per_node[node] if node else 0),
            -(ready_since or 0.0),
            -restart_count(pod),
            -created,
        )

    return sorted(pods, key=rank)


def replicaset_status(rs: JsonObject, pods: Sequence[JsonObject], now: float) -> JsonObject:
    """``calculateStatus``: counts over the RS's active Pods; fullyLabeledReplicas are those
    carrying every template label; available honours the RS's minReadySeconds."""
    template_labels = (rs.get("spec", {}).get("template", {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    min_ready = int(rs.get("spec", {}).get("minReadySeconds") or 0)
    active = [p for p in pods if pod_is_active(p)]
    status: JsonObject = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(
            1 for p in active if all(labels_of(p).get(k) == v for k, v in template_labels.items())
        ),
        "readyReplicas": sum(1 for p in active if pod_is_ready(p)),
        "availableReplicas": sum(1 for p in active if pod_is_available(p, min_ready, now)),
        "observedGeneration": int(rs.get("metadata", {}).get("generation") or 0),
    }
    # upstream's ReplicaSetStatus fields are omitempty except replicas
    result = {k: v for k, v in status.items() if v or k == "replicas"}
    if rs.get("status", {}).get("conditions"):
        result["conditions"] = rs["status"]["conditions"]
    return result


def next_availability_check(rs: JsonObject, pods: Sequence[JsonObject], now: float) -> float | None:
    """Seconds until the next Ready Pod crosses minReadySeconds (upstream requeues the RS
    after minReadySeconds for the same reason: no event marks that moment)."""
    min_ready = int(rs.get("spec", {}).get("minReadySeconds") or 0)
    waits = [
        w
        for p in pods
        if pod_is_active(p) and pod_is_ready(p)
        if (w := seconds_until_available(p, min_ready, now)) is not None
    ]
    return min(waits) + 0.01 if waits else None


def pod_from_template(rs: JsonObject) -> JsonObject:
    """``controller.GetPodFromTemplate``: template labels/annotations, generateName
    ``<rs>-``, and a controller reference to the RS."""
    template = copy.deepcopy(rs.get("spec", {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    meta: JsonObject = {
        "generateName": f"{rs['metadata']['name']}-",
        "namespace": rs["metadata"].get("namespace"),
        "labels": template_meta.get("labels") or {},
        "ownerReferences": [owner_reference(rs, "ReplicaSet", "apps/v1")],
    }
    if template_meta.get("annotations"):
        meta["annotations"] = template_meta["annotations"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}


class Expectations:
    """``controller.UIDTrackingControllerExpectations``: creates (a count: the server names
    them) and deletes (by name) issued but not yet seen in the cache. They are registered
    *before* the writes, because the watch can deliver a write's event before the write call
    returns; a key is not acted on again until they are observed (or time out)."""

    def __init__(self) -> None:
        self._adds: dict[ObjectKey, int] = {}
        self._deletes: dict[ObjectKey, set[str]] = {}
        self._since: dict[ObjectKey, float] = {}

    def expect(self, owner: ObjectKey, adds: int = 0, deletes: Iterable[str] = ()) -> None:
        self._adds[owner] = self._adds.get(owner, 0) + adds
        self._deletes.setdefault(owner, set()).update(deletes)
        self._since[owner] = time.monotonic()

    def observed_add(self, owner: ObjectKey) -> None:
        if self._adds.get(owner, 0) > 0:
            self._adds[owner] -= 1

    def observed_delete(self, owner: ObjectKey, name: str) -> None:
        self._deletes.get(owner, set()).discard(name)

    def satisfied(self, owner: ObjectKey) -> bool:
        if self._adds.get(owner, 0) <= 0 and not self._deletes.get(owner):
            return True
        return time.monotonic() - self._since.get(owner, 0.0) > EXPECTATIONS_TIMEOUT_S

    def forget(self, owner: ObjectKey) -> None:
        self._adds.pop(owner, None)
        self._deletes.pop(owner, None)
        self._since.pop(owner, None)


class ReplicaSetController:
    name = "replicaset"
    burst_replicas = 500  # upstream's BurstReplicas: the most Pods created / deleted per sync

    def __init__(self, client: ApiClient, informers: Informers, events: EventRecorder) -> None:
        self.client = client
        self.events = events
        self.rs = informers["replicasets"]
        self.pods = informers["pods"]
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.expectations = Expectations()
        self.rs.add_handler(self._on_rs)
        self.pods.add_handler(self._on_pod)

    def _on_rs(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        obj = new or old
        assert obj is not None
        self.queue.add(key_of(obj))

    def _owner_key(self, pod: JsonObject) -> ObjectKey | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return None
        return (str(pod["metadata"].get("namespace") or ""), str(ref.get("name")))

    def _on_pod(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        pod = new or old
        assert pod is not None
        owner = self._owner_key(pod)
        if owner is None:
            return
        name = pod["metadata"]["name"]
        if kind == "ADDED":
            self.expectations.observed_add(owner)
        if kind == "DELETED" or (new is not None and is_deleting(new)):
            self.expectations.observed_delete(owner, name)
        self.queue.add(owner)

    def owned_pods(self, rs: JsonObject) -> list[JsonObject]:
        selector = rs.get("spec", {}).get("selector")
        return [
            p
            for p in self.pods.in_namespace(rs["metadata"].get("namespace") or "")
            if is_controlled_by(p, rs) and selector_matches(selector, labels_of(p))
        ]

    def _related_pods(self, rs: JsonObject) -> list[JsonObject]:
        """Pods of the other ReplicaSets with the same controller (upstream's relatedPods:
        the ranking prefers victims on nodes crowded by the whole Deployment)."""
        owner = controller_ref(rs)
        if owner is None:
            return []
        namespace = rs["metadata"].get("namespace") or ""
        siblings = {
            other["metadata"]["uid"]
            for other in self.rs.in_namespace(namespace)
            if (ref := controller_ref(other)) is not None
            and ref.get("uid") == owner.get("uid")
            and other["metadata"]["uid"] != rs["metadata"]["uid"]
        }
        return [
            p
            for p in self.pods.in_namespace(namespace)
            if (ref := controller_ref(p)) is not None and ref.get("uid") in siblings
        ]

    async def reconcile(self, key: ObjectKey) -> float | None:
        rs = self.rs.cache.get(key)
        if rs is None:
            self.expectations.forget(key)
            return None
        pods = self.owned_pods(rs)
        active = [p for p in pods if pod_is_active(p)]
        if self.expectations.satisfied(key) and not is_deleting(rs):
            active = await self._manage(key, rs, active)
        now = time.time()
        status = replicaset_status(rs, active, now)
        if status != rs.get("status"):
            updated = copy.deepcopy(rs)
            updated["status"] = status
            await self.client.update("replicasets", updated, key[0], subresource="status")
        return next_availability_check(rs, active, now)

    async def _manage(
        self, key: ObjectKey, rs: JsonObject, active: list[JsonObject]
    ) -> list[JsonObject]:
        """``manageReplicas``: create or delete the difference; returns the active Pods as
        they are after this sync (created ones in, deleted ones out) for the status."""
        diff = len(active) - int(rs.get("spec", {}).get("replicas") or 0)
        if diff < 0:
            count = min(-diff, self.burst_replicas)
            template = pod_from_template(rs)
            self.expectations.expect(key, adds=count)
            created = await asyncio.gather(
                *(
                    self.client.create("pods", copy.deepcopy(template), key[0])
                    for _ in range(count)
                ),
                return_exceptions=True,
            )
            made = [c for c in created if isinstance(c, dict)]
            errors = [c for c in created if isinstance(c, BaseException)]
            for pod in made:
                self.events.emit(rs, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
            for _ in errors:
                self.expectations.observed_add(key)  # a failed create is never observed
            if errors:
                raise errors[0]
            return [*active, *made]
        if diff > 0:
            victims = deletion_order(active, self._related_pods(rs))[
                : min(diff, self.burst_replicas)
            ]
            names = [v["metadata"]["name"] for v in victims]
            self.expectations.expect(key, deletes=names)
            results = await asyncio.gather(
                *(self.client.delete("pods", n, key[0]) for n in names), return_exceptions=True
            )
            for name, result in zip(names, results, strict=True):
                if isinstance(result, ApiError) and result.code == 404:
                    self.expectations.observed_delete(key, name)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self.events.emit(rs, "SuccessfulDelete", f"Deleted pod: {name}")
            return [p for p in active if p["metadata"]["name"] not in names]
        return active

    async def run(self) -> None:
        await run_worker(self.name, self.queue, self.reconcile)
