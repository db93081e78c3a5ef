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
from typing import Any

from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.controllers.informer import Informers, WorkQueue, run_worker
from localcluster.controllers.objects import (
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

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


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


class EndpointSliceController:
    name = "endpointslice"

    def __init__(self, client: ApiClient, informers: Informers, batch_delay_s: float = 0.0) -> None:
        self.client = client
        self.batch_delay_s = batch_delay_s
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
        if service and labels_of(obj).get(MANAGED_BY_LABEL) == MANAGED_BY and kind == "DELETED":
            self.queue.add((str(obj["metadata"].get("namespace") or ""), service))

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
        endpoints, ports = desired_endpoints(service, list(self.pods.in_namespace(key[0])))
        existing = self._owned_slices(service)
        trigger = format_time(self._trigger_time.get(key, time.time()))
        if not existing:
            await self.client.create(
                "endpointslices", self._new_slice(service, endpoints, ports, trigger), key[0]
            )
            return None
        current, *extra = sorted(existing, key=lambda s: s["metadata"]["name"])
        for duplicate in extra:
            await self.client.delete("endpointslices", duplicate["metadata"]["name"], key[0])
        if current.get("endpoints") == endpoints and current.get("ports") == ports:
            return None
        updated = copy.deepcopy(current)
        updated["endpoints"] = endpoints
        updated["ports"] = ports
        updated["metadata"].setdefault("annotations", {})[TRIGGER_TIME_ANNOTATION] = trigger
        try:
            await self.client.update("endpointslices", updated, key[0])
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
