"""Events as client-go's EventRecorder emits them: fire-and-forget, off the sync path (a
controller never waits for, or fails because of, its Events)."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from localcluster.apiclient import ApiClient, JsonObject
from localcluster.apiserver.events import event_for

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, client: ApiClient, component: str) -> None:
        self.client = client
        self.component = component
        self._pending: set[asyncio.Task[None]] = set()

    def emit(
        self,
        involved: JsonObject,
        reason: str,
        message: str,
        event_type: Literal["Normal", "Warning"] = "Normal",
    ) -> None:
        event = event_for(involved, reason, message, self.component, event_type)
        task = asyncio.create_task(self._create(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _create(self, event: JsonObject) -> None:
        try:
            await self.client.create("events", event, event["metadata"]["namespace"])
        except Exception as exc:  # an Event lost is a log line, never a failed sync
            log.debug("event not recorded: %s", exc)

    def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
