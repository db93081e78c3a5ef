"""Recording Kubernetes Events the way client-go's EventRecorder does (core/v1, one object per
occurrence), so `kubectl describe` shows what controllers and nodes did."""

from __future__ import annotations

from typing import Literal

from kubewire import format_time
from localcluster.apiclient import ApiClient, JsonObject


def event_for(
    involved: JsonObject,
    reason: str,
    message: str,
    component: str,
    event_type: Literal["Normal", "Warning"] = "Normal",
) -> JsonObject:
    meta = involved.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    stamp = format_time()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {
            "kind": involved.get("kind", ""),
            "apiVersion": involved.get("apiVersion", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def record_event(
    client: ApiClient,
    involved: JsonObject,
    reason: str,
    message: str,
    component: str,
    event_type: Literal["Normal", "Warning"] = "Normal",
) -> JsonObject:
    """Creates the Event in the involved object's namespace (cluster-scoped objects: default)."""
    event = event_for(involved, reason, message, component, event_type)
    return await client.create("events", event, event["metadata"]["namespace"])
