"""Small, pure accessors for JSON-shaped Kubernetes objects shared by every component.

Components see objects as plain dicts (as on the wire); these helpers keep the upstream rules
that several controllers depend on in one place: what counts as an active / ready / available
Pod (``k8s.io/kubernetes/pkg/api/v1/pod`` ``IsPodReady`` / ``IsPodAvailable``), which owner is
the controller (``metav1.GetControllerOf``), and how a ``LabelSelector`` matches labels
(``metav1.LabelSelectorAsSelector``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubewire import format_micro_time, parse_time
from localcluster.apiclient import JsonObject

ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


def key_of(obj: JsonObject) -> ObjectKey:
    m = obj.get("metadata") or {}
    return (str(m.get("namespace") or ""), str(m.get("name") or ""))


def labels_of(obj: JsonObject) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def annotations_of(obj: JsonObject) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def is_deleting(obj: JsonObject) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def format_time(epoch_s: float) -> str:
    """RFC 3339 with microseconds. Upstream serializes whole seconds, but sub-second times keep
    minReadySeconds and probe timing exact under ``time_scale``; Go's RFC 3339 parser (kubectl)
    and the Python client both accept the fraction."""
    return format_micro_time(epoch_s)


def controller_ref(obj: JsonObject) -> JsonObject | None:
    """The ownerReference with ``controller: true`` (``metav1.GetControllerOf``)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            result: JsonObject = ref
            return result
    return None


def owner_reference(owner: JsonObject, kind: str, api_version: str) -> JsonObject:
    """A controller reference to ``owner`` (``metav1.NewControllerRef``)."""
    m = owner["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": m["name"],
        "uid": m["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_controlled_by(obj: JsonObject, owner: JsonObject) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown label selector operator {op!r}")


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` (matchLabels + matchExpressions). An empty selector matches nothing
    here: upstream workload controllers reject empty selectors, and matching everything would
    let one ReplicaSet adopt every Pod."""
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    return all(_expression_matches(e, labels) for e in expressions)


def labels_match(match_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality-only selector (a Service's ``spec.selector``); empty matches nothing."""
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def pod_condition(pod: JsonObject, condition_type: str) -> JsonObject | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == condition_type:
            result: JsonObject = cond
            return result
    return None


def pod_is_ready(pod: JsonObject) -> bool:
    cond = pod_condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def pod_ready_since(pod: JsonObject) -> float | None:
    cond = pod_condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def pod_is_available(pod: JsonObject, min_ready_seconds: float, now: float) -> bool:
    """``podutil.IsPodAvailable``: Ready, and Ready for longer than minReadySeconds (strictly:
    upstream uses ``LastTransitionTime.Add(minReadySeconds).Before(now)``)."""
    if not pod_is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = pod_ready_since(pod)
    return since is not None and since + min_ready_seconds < now


def seconds_until_available(pod: JsonObject, min_ready_seconds: float, now: float) -> float | None:
    """When a Ready-but-not-yet-available Pod becomes available (to requeue its owner then)."""
    since = pod_ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return None
    remaining = since + min_ready_seconds - now
    return remaining if remaining >= 0 else None


def pod_is_active(pod: JsonObject) -> bool:
    """``controller.IsPodActive``: not finished and not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_deleting(pod)


def restart_count(pod: JsonObject) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses), default=0)
