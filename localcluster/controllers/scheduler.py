"""The scheduler: binds each unscheduled Pod to the least-loaded Node that fits.

Fit covers what rollout scenarios and the demo manifests use: the Node is Ready and
schedulable, matches the Pod's ``nodeSelector`` and its required node affinity
(``requiredDuringSchedulingIgnoredDuringExecution`` terms, ORed; expressions In / NotIn /
Exists / DoesNotExist / Gt / Lt, ANDed). Among fitting Nodes the one with the fewest
non-terminated Pods wins, ties by name (a deterministic stand-in for upstream's scoring). A Pod
that fits nowhere stays Pending with ``PodScheduled=False, reason Unschedulable``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from localcluster.apiclient import ApiClient, JsonObject
from localcluster.controllers.informer import Informers, WorkQueue, run_worker
from localcluster.events import EventRecorder
from localcluster.objects import ObjectKey, format_time, is_deleting, key_of, labels_of

RETRY_UNSCHEDULABLE_S = 1.0


def node_is_usable(node: JsonObject) -> bool:
    if (node.get("spec") or {}).get("unschedulable") or is_deleting(node):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _requirement_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            left, right = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return left > right if op == "Gt" else left < right
    return False


def node_fits(pod: JsonObject, node: JsonObject) -> bool:
    spec = pod.get("spec") or {}
    labels = labels_of(node)
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": node["metadata"]["name"]}
    return any(
        all(_requirement_matches(e, labels) for e in term.get("matchExpressions") or [])
        and all(_requirement_matches(e, fields) for e in term.get("matchFields") or [])
        for term in terms
    )


def choose_node(
    pod: JsonObject, nodes: Sequence[JsonObject], load: Mapping[str, int]
) -> str | None:
    fitting = [str(n["metadata"]["name"]) for n in nodes if node_is_usable(n) and node_fits(pod, n)]
    if not fitting:
        return None
    return min(fitting, key=lambda name: (load.get(name, 0), name))


def unschedulable_message(pod: JsonObject, nodes: Sequence[JsonObject]) -> str:
    """Upstream's shape: ``0/3 nodes are available: 3 node(s) didn't match ...``."""
    not_ready = sum(1 for n in nodes if not node_is_usable(n))
    mismatched = sum(1 for n in nodes if node_is_usable(n) and not node_fits(pod, n))
    reasons = []
    if mismatched:
        reasons.append(f"{mismatched} node(s) didn't match Pod's node affinity/selector")
    if not_ready:
        reasons.append(f"{not_ready} node(s) were not ready or unschedulable")
    detail = ", ".join(reasons) if reasons else "no nodes registered"
    return f"0/{len(nodes)} nodes are available: {detail}."


class Scheduler:
    name = "scheduler"

    def __init__(self, client: ApiClient, informers: Informers, events: EventRecorder) -> None:
        self.client = client
        self.events = events
        self.pods = informers["pods"]
        self.nodes = informers["nodes"]
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self._bound: dict[ObjectKey, str] = {}  # binds not yet seen in the cache
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)

    def _on_pod(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        if new is None:
            if old is not None:
                self._bound.pop(key_of(old), None)
            return
        if (new.get("spec") or {}).get("nodeName"):
            self._bound.pop(key_of(new), None)
        elif not is_deleting(new):
            self.queue.add(key_of(new))

    def _on_node(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        for key, pod in list(self.pods.cache.items()):
            if not (pod.get("spec") or {}).get("nodeName"):
                self.queue.add(key)

    def _load(self) -> Counter[str]:
        load: Counter[str] = Counter()
        for key, pod in self.pods.cache.items():
            node = (pod.get("spec") or {}).get("nodeName") or self._bound.get(key)
            if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                load[node] += 1
        return load

    async def reconcile(self, key: ObjectKey) -> float | None:
        pod = self.pods.cache.get(key)
        if (
            pod is None
            or (pod.get("spec") or {}).get("nodeName")
            or key in self._bound
            or is_deleting(pod)
        ):
            return None
        nodes = list(self.nodes.cache.values())
        node = choose_node(pod, nodes, self._load())
        now = format_time(time.time())
        if node is None:
            message = unschedulable_message(pod, nodes)
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            if await self._set_condition(key, pod, condition):
                self.events.emit(pod, "FailedScheduling", message, "Warning")
            return RETRY_UNSCHEDULABLE_S
        # upstream POSTs pods/binding; a patch of spec.nodeName is the same write here.
        self._bound[key] = node
        try:
            await self.client.patch("pods", key[1], {"spec": {"nodeName": node}}, "merge", key[0])
        except Exception:
            self._bound.pop(key, None)
            raise
        condition = {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": now,
        }
        await self._set_condition(key, pod, condition)
        self.events.emit(pod, "Scheduled", f"Successfully assigned {key[0]}/{key[1]} to {node}")
        return None

    async def _set_condition(self, key: ObjectKey, pod: JsonObject, condition: JsonObject) -> bool:
        """Writes PodScheduled unless it already says the same; True when it wrote."""
        current = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "PodScheduled"
            ),
            None,
        )
        if (
            current is not None
            and current.get("status") == condition["status"]
            and current.get("reason") == condition.get("reason")
        ):
            return False
        patch = {"status": {"conditions": [condition]}}
        await self.client.patch("pods", key[1], patch, "strategic", key[0], subresource="status")
        return True

    async def run(self) -> None:
        await run_worker(self.name, self.queue, self.reconcile)
