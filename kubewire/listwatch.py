"""The list + watch bookkeeping of client-go's reflector and informer store, without a transport.

What every watcher of the API must get right, whatever client it talks through
(``k8s.io/client-go/tools/cache``: ``reflector.go``, ``delta_fifo.go``, ``store.go``):

- **resourceVersion**: a list gives the version to watch from; every watch event, BOOKMARK
  included, advances it, so a watch that ends resumes from the last one seen and nothing is
  missed or delivered twice.
- **410 Gone / Expired**: the version is older than the history the server keeps (the watch
  call is refused, or the stream sends one ``ERROR`` event whose Status has code 410). Events
  were missed, so only a relist recovers; any other ``ERROR`` event is a failed watch to resume.
- **relist**: the fresh list replaces the cache, and the difference is delivered as changes
  (``Replace``): an object missing from the list is deleted (client-go's
  ``DeletedFinalStateUnknown``: its last known state), a new one added, a changed one modified.
- **duplicates**: an event that carries the cached object's resourceVersion changes nothing and
  is not delivered again; a delete of an object the cache does not hold is already done
  (``DeltaFIFO.Delete`` ignores it).

Objects are keyed by namespace and name, as client-go's ``MetaNamespaceKeyFunc``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

JsonObject = dict[str, Any]
ObjectKey = tuple[str, str]
ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
GONE = 410  # HTTP 410: metav1.StatusReasonGone / StatusReasonExpired


class WatchExpired(Exception):
    """The watch's resourceVersion is older than the server's retained history: relist."""


class WatchFailed(Exception):
    """The stream sent an ERROR event other than 410: resume the watch from the last version."""


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def raise_for_watch_error(event: Mapping[str, Any]) -> None:
    """Turns a watch ``ERROR`` event (its object is a ``Status``) into the exception to act on."""
    if event.get("type") != "ERROR":
        return
    status = event.get("object") or {}
    message = str(status.get("message") or status)
    if status.get("code") == GONE:
        raise WatchExpired(message)
    raise WatchFailed(message)


@dataclass(frozen=True)
class Change:
    """One change to deliver to handlers; DELETED carries the last known state as ``old``."""

    type: ChangeType
    old: JsonObject | None
    new: JsonObject | None


class ListWatchStore:
    """The cache of one resource stream and the version to resume it from."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, JsonObject] = {}
        self.resource_version = ""
        self.lists = 0

    def replace(self, items: Iterable[JsonObject], list_version: str) -> list[Change]:
        """A (re)list: the cache becomes ``items``; the difference comes back as changes."""
        fresh = {object_key(obj): obj for obj in items}
        changes = [
            Change("DELETED", gone, None) for key, gone in self.objects.items() if key not in fresh
        ]
        for key, obj in fresh.items():
            old = self.objects.get(key)
            if old is None:
                changes.append(Change("ADDED", None, obj))
            elif resource_version(old) != resource_version(obj):
                changes.append(Change("MODIFIED", old, obj))
        self.objects = fresh
        self.resource_version = list_version
        self.lists += 1
        return changes

    def apply(self, event: Mapping[str, Any]) -> Change | None:
        """One watch event; None when it changes nothing (BOOKMARK, duplicate, unknown delete).
        Raises WatchExpired / WatchFailed for an ERROR event."""
        raise_for_watch_error(event)
        obj: JsonObject = event.get("object") or {}
        version = resource_version(obj)
        if version:
            self.resource_version = version
        kind = event.get("type")
        if kind == "BOOKMARK":
            return None
        key = object_key(obj)
        old = self.objects.get(key)
        if kind == "DELETED":
            if old is None:
                return None
            del self.objects[key]
            return Change("DELETED", obj, None)
        if old is not None and version and resource_version(old) == version:
            return None
        self.objects[key] = obj
        return Change("ADDED" if old is None else "MODIFIED", old, obj)
