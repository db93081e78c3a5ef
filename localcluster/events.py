"""The client-side event recorder of every component (controllers, scheduler, kubelet), as
client-go's ``tools/record`` EventRecorder + broadcaster: core/v1 Events, one object per
occurrence, so `kubectl describe` shows what the components did.

``emit`` never waits: the Event is stamped when it happens and queued, and one sender posts the
queue in order, off the component's sync path (a Pod's lifecycle or a controller's sync never
waits for, or fails because of, its Events). A full queue drops the Event, as upstream's
broadcaster does (``maxQueuedEvents`` = 1000, ``DropIfChannelFull``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from kubewire import format_time
from localcluster.apiclient import ApiClient, JsonObject

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
MAX_QUEUED_EVENTS = 1000  # client-go's record.maxQueuedEvents


def event_for(
    involved: JsonObject, reason: str, message: str, component: str, event_type: EventType
) -> JsonObject:
    """The Event object about ``involved``, in its namespace (cluster-scoped objects: default)."""
    meta = involved.get("metadata", {})
    stamp = format_time()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta.get('name', 'object')}.",
            "namespace": meta.get("namespace") or "default",
        },
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


class EventRecorder:
    """Events of one component; the sender task starts with the first Event."""

    def __init__(self, client: ApiClient, component: str) -> None:
        self.client = client
        self.component = component
        self._queue: asyncio.Queue[JsonObject] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._sender: asyncio.Task[None] | None = None

    def emit(
        self,
        involved: JsonObject,
        reason: str,
        message: str,
        event_type: EventType = "Normal",
    ) -> None:
        event = event_for(involved, reason, message, self.component, event_type)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("%s: event backlog full; dropped %s", self.component, reason)
            return
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self.client.create("events", event, event["metadata"]["namespace"])
            except Exception as exc:  # an Event lost is a log line, never a failed sync
                log.debug("%s: event %s not recorded: %r", self.component, event["reason"], exc)

    async def close(self) -> None:
        """Stops the sender; Events still queued are dropped (the component is going away)."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
