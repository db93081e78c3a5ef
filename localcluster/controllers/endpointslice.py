"""The EndpointSlice controller: one slice per selector Service listing its Pods' addresses
with KEP-1672 conditions, written at most once per batching window.

The timing matters more than anything else here: a terminating Pod must show up as
``ready: false, serving: <readiness>, terminating: true`` in the same write that a data plane
then propagates, and ``ClusterConfig.endpoint_batch_delay_s`` emulates upstream's
``--endpointslice-updates-batch-period`` (Pod changes wait for the window; Service changes
sync at once).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubewire import SERVICE_NAME_LABEL
from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.controllers.informer import Informers, WorkQueue, run_worker
from localcluster.objects import (
    ObjectKey,
    format_time,
    is_controlled_by,
    is_deleting,
    key_of,
    labels_match,
    labels_of,
    owner_reference,
    pod_is_ready,
)

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
MAX_ENDPOINTS_PER_SLICE = 100
UNOBSERVED_RETRY_S = 0.02


def _pod_ip(pod: JsonObject) -> str | None:
    status = pod.get("status") or {}
    if status.get("podIP"):
        return str(status["podIP"])
    ips = status.get("podIPs") or []
    return str(ips[0]["ip"]) if ips else None


def endpoint_for(service: JsonObject, pod: JsonObject) -> JsonObject:
    """``podToEndpoint``: serving follows readiness even while terminating; ready is serving
    and not terminating (never true for a terminating Pod, for compatibility), unless the
    Service publishes not-ready addresses."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    terminating = is_deleting(pod)
    serving = publish or pod_is_ready(pod)
    ready = publish or (serving and not terminating)
    meta = pod["metadata"]
    endpoint: JsonObject = {
        "addresses": [_pod_ip(pod)],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {
            "kind": "Pod",
            "namespace": meta.get("namespace"),
            "name": meta["name"],
            "uid": meta.get("uid"),
        },
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    return endpoint


def _container_port(pod: JsonObject, name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def slice_ports(service: JsonObject, pod: JsonObject | None) -> list[JsonObject] | None:
    """The Service's ports with targetPort resolved against a Pod's named container ports;
    None when a named port does not resolve (upstream leaves such Pods out)."""
    ports = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target: Any = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and not target.isdigit():
            resolved = _container_port(pod, target) if pod is not None else None
            if resolved is None:
                return None
            target = resolved
        entry: JsonObject = {"port": int(target), "protocol": port.get("protocol", "TCP")}
        if port.get("name") is not None:
            entry["name"] = port["name"]
        if port.get("appProtocol"):
            entry["appProtocol"] = port["appProtocol"]
        ports.append(entry)
    return ports


def desired_endpoints(
    service: JsonObject, pods: Sequence[JsonObject]
) -> tuple[list[JsonObject], list[JsonObject]]:
    """(endpoints, ports) for a Service: Pods it selects that have an IP and have not
    finished, ordered by name so equal sets compare equal."""
    selector = (service.get("spec") or {}).get("selector") or {}
    endpoints: list[JsonObject] = []
    ports: list[JsonObject] | None = None
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if not labels_match(selector, labels_of(pod)) or _pod_ip(pod) is None:
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        pod_ports = slice_ports(service, pod)
        if pod_ports is None:
            continue
        ports = ports if ports is not None else pod_ports
        endpoints.append(endpoint_for(service, pod))
    if ports is None:
        ports = slice_ports(service, None) or []
    return endpoints, ports


@dataclass(frozen=True)
class SlicePlan:
    creates: list[list[JsonObject]]
    updates: dict[str, list[JsonObject]]  # every kept slice with its new endpoints
    deletes: list[str]


def _endpoint_key(endpoint: JsonObject) -> str:
    ref = endpoint.get("targetRef") or {}
    return str(ref.get("uid") or ref.get("name") or endpoint.get("addresses"))


def plan_slices(
    existing: Sequence[tuple[str, Sequence[JsonObject]]],
    desired: Sequence[JsonObject],
    max_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
) -> SlicePlan:
    """Spread endpoints over slices of at most ``max_per_slice`` (upstream's
    --max-endpoints-per-slice, 100), keeping each endpoint in the slice that already holds it
    (so a change rewrites as few slices as possible, like upstream's reconciler), filling free
    room in existing slices before creating new ones, and deleting slices left empty (one
    empty slice stays, as upstream keeps a placeholder)."""
    wanted = {_endpoint_key(e): e for e in desired}
    placed: set[str] = set()
    kept: dict[str, list[JsonObject]] = {}
    for name, endpoints in existing:
        chunk: list[JsonObject] = []
        for endpoint in endpoints:
            key = _endpoint_key(endpoint)
            if key in wanted and key not in placed and len(chunk) < max_per_slice:
                chunk.append(wanted[key])
                placed.add(key)
        kept[name] = chunk
    remaining = [e for e in desired if _endpoint_key(e) not in placed]
    for chunk in kept.values():
        room = max_per_slice - len(chunk)
        chunk.extend(remaining[:room])
        remaining = remaining[room:]
    creates = [remaining[i : i + max_per_slice] for i in range(0, len(remaining), max_per_slice)]
    empty = [name for name, chunk in kept.items() if not chunk]
    if kept and not creates and len(empty) == len(kept):
        empty = empty[1:]  # keep one (empty) slice
    if not kept and not creates:
        creates = [[]]
    updates = {name: chunk for name, chunk in kept.items() if name not in empty}
    return SlicePlan(creates, updates, empty)


class EndpointSliceController:
    name = "endpointslice"

    def __init__(
        self,
        client: ApiClient,
        informers: Informers,
        batch_delay_s: float = 0.0,
        max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
    ) -> None:
        self.client = client
        self.batch_delay_s = batch_delay_s
        self.max_endpoints_per_slice = max_endpoints_per_slice
        self._unobserved: dict[ObjectKey, set[str]] = {}
        self.services = informers["services"]
        self.pods = informers["pods"]
        self.slices = informers["endpointslices"]
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self._trigger_time: dict[ObjectKey, float] = {}
        self.services.add_handler(self._on_service)
        self.pods.add_handler(self._on_pod)
        self.slices.add_handler(self._on_slice)

    def _note_change(self, key: ObjectKey) -> None:
        self._trigger_time[key] = time.time()

    def _on_service(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        obj = new or old
        assert obj is not None
        self._note_change(key_of(obj))
        self.queue.add(key_of(obj))

    def _on_pod(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        pod = new or old
        assert pod is not None
        namespace = str(pod["metadata"].get("namespace") or "")
        label_sets = [labels_of(p) for p in (old, new) if p is not None]
        for service in self.services.in_namespace(namespace):
            selector = (service.get("spec") or {}).get("selector") or {}
            if any(labels_match(selector, labels) for labels in label_sets):
                key = key_of(service)
                self._note_change(key)
                self.queue.add_after(key, self.batch_delay_s)

    def _on_slice(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        obj = new or old
        assert obj is not None
        service = labels_of(obj).get(SERVICE_NAME_LABEL)
        if not service or labels_of(obj).get(MANAGED_BY_LABEL) != MANAGED_BY:
            return
        key = (str(obj["metadata"].get("namespace") or ""), service)
        self._unobserved.get(key, set()).discard(obj["metadata"]["name"])
        if kind == "DELETED":
            self.queue.add(key)

    def _owned_slices(self, service: JsonObject) -> list[JsonObject]:
        namespace = service["metadata"].get("namespace") or ""
        return [
            s
            for s in self.slices.in_namespace(namespace)
            if is_controlled_by(s, service) and labels_of(s).get(MANAGED_BY_LABEL) == MANAGED_BY
        ]

    async def reconcile(self, key: ObjectKey) -> float | None:
        service = self.services.cache.get(key)
        if service is None or not (service.get("spec") or {}).get("selector"):
            self._trigger_time.pop(key, None)
            return None  # the garbage collector removes slices of deleted Services
        if self._unobserved.get(key):
            return UNOBSERVED_RETRY_S  # our own creates are not in the cache yet
        endpoints, ports = desired_endpoints(service, list(self.pods.in_namespace(key[0])))
        existing = sorted(self._owned_slices(service), key=lambda s: s["metadata"]["name"])
        plan = plan_slices(
            [(s["metadata"]["name"], s.get("endpoints") or []) for s in existing],
            endpoints,
            self.max_endpoints_per_slice,
        )
        by_name = {s["metadata"]["name"]: s for s in existing}
        trigger = format_time(self._trigger_time.get(key, time.time()))
        # upstream's reconciler order: creates, then updates, then deletes
        for chunk in plan.creates:
            created = await self.client.create(
                "endpointslices", self._new_slice(service, chunk, ports, trigger), key[0]
            )
            self._unobserved.setdefault(key, set()).add(created["metadata"]["name"])
        for name, chunk in plan.updates.items():
            current = by_name[name]
            if current.get("endpoints") == chunk and current.get("ports") == ports:
                continue
            updated = copy.deepcopy(current)
            updated["endpoints"] = chunk
            updated["ports"] = ports
            updated["metadata"].setdefault("annotations", {})[TRIGGER_TIME_ANNOTATION] = trigger
            await self.client.update("endpointslices", updated, key[0])
        for name in plan.deletes:
            try:
                await self.client.delete("endpointslices", name, key[0])
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return None

    @staticmethod
    def _new_slice(
        service: JsonObject, endpoints: list[JsonObject], ports: list[JsonObject], trigger: str
    ) -> JsonObject:
        name = service["metadata"]["name"]
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{name}-",
                "namespace": service["metadata"].get("namespace"),
                "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
                "annotations": {TRIGGER_TIME_ANNOTATION: trigger},
                "ownerReferences": [owner_reference(service, "Service", "v1")],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }

    async def run(self) -> None:
        await run_worker(self.name, self.queue, self.reconcile)
