"""The API server's storage: every object in memory, one global resourceVersion, and a bounded
per-resource event history that watches resume from.

All mutation happens synchronously on the event loop thread, and every committed change is
pushed to the live watchers' queues before the write returns. That is what makes "list at RV,
then watch from RV" gap-free: there is no await between reading the history and registering a
watcher, so no event can fall between them. Stored objects are never mutated in place (each
write stores a new dict), so readers may hold references; clients copy before handing objects
to user code.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import json
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from kubewire import format_time
from localcluster.apiclient import JsonObject, WatchEvent
from localcluster.apiserver import errors
from localcluster.apiserver.defaults import apply_defaults
from localcluster.apiserver.patch import PatchError, apply_patch
from localcluster.apiserver.resources import ResourceType, lookup
from localcluster.apiserver.selectors import Matcher
from localcluster.apiserver.validation import validate

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
QueuedType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # upstream's: no vowels, no look-alikes
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class StoredEvent:
    rv: int
    type: EventType
    obj: JsonObject
    previous: JsonObject | None  # the object before a MODIFIED, to turn selector exits into DELETED


def _selector_view(event: StoredEvent, matches: Matcher) -> EventType | None:
    """How a filtered watcher sees an event (upstream watch-cache semantics)."""
    now_matches = matches(event.obj)
    if event.type != "MODIFIED" or event.previous is None:
        return event.type if now_matches else None
    before = matches(event.previous)
    if now_matches and before:
        return "MODIFIED"
    if now_matches:
        return "ADDED"
    if before:
        return "DELETED"
    return None


@dataclass(eq=False)
class Watcher:
    """One live watch: a queue the store pushes into, drained by the consumer."""

    store: Store
    resource: str
    namespace: str | None
    matches: Matcher
    queue: asyncio.Queue[tuple[QueuedType, JsonObject] | None] = field(
        default_factory=asyncio.Queue
    )
    closed: bool = False

    def offer(self, event: StoredEvent) -> None:
        if self.closed:
            return
        if self.namespace and event.obj.get("metadata", {}).get("namespace") != self.namespace:
            return
        seen_as = _selector_view(event, self.matches)
        if seen_as is not None:
            self.queue.put_nowait((seen_as, event.obj))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store.watchers.get(self.resource, set()).discard(self)
            self.queue.put_nowait(None)

    async def events(
        self, timeout_s: float | None = None, bookmark_interval_s: float | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Yields events until closed or ``timeout_s``; when idle for ``bookmark_interval_s``
        yields a BOOKMARK at the store's current RV (safe: the queue is empty, so every event
        up to that RV has been delivered)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        try:
            while True:
                waits = [bookmark_interval_s] if bookmark_interval_s else []
                if deadline is not None:
                    waits.append(deadline - loop.time())
                wait = min(waits) if waits else None
                if wait is not None and wait <= 0:
                    return
                try:
                    item = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        return
                    yield {"type": "BOOKMARK", "object": self.store.bookmark_object(self.resource)}
                    continue
                if item is None:
                    return
                yield {"type": item[0], "object": item[1]}
        finally:
            self.close()


@dataclass
class ListPage:
    items: list[JsonObject]
    resource_version: str
    continue_token: str
    remaining: int | None


class Store:
    def __init__(self, history_size: int = 10_000, service_cidr: str = "198.18.128.0/17") -> None:
        self.rv = 0
        self.history_size = history_size
        self.objects: dict[str, dict[tuple[str, str], JsonObject]] = {}
        self.history: dict[str, deque[StoredEvent]] = {}
        self.evicted_rv: dict[str, int] = {}
        self.watchers: dict[str, set[Watcher]] = {}
        self._service_ips = ipaddress.ip_network(service_cidr).hosts()
        self._used_node_ports: set[int] = set()
        self._rng = random.Random()
        for name in DEFAULT_NAMESPACES:
            self.create("namespaces", None, {"metadata": {"name": name}})

    # ---- plumbing -------------------------------------------------------------------------
    def _table(self, resource: str) -> dict[tuple[str, str], JsonObject]:
        lookup(resource)
        return self.objects.setdefault(resource, {})

    def _commit(
        self, resource: str, type_: EventType, obj: JsonObject, previous: JsonObject | None
    ) -> None:
        history = self.history.setdefault(resource, deque())
        event = StoredEvent(self.rv, type_, obj, previous)
        if len(history) >= self.history_size:
            self.evicted_rv[resource] = history.popleft().rv
        history.append(event)
        for watcher in list(self.watchers.get(resource, ())):
            watcher.offer(event)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "default") if rtype.namespaced else "", name)

    def bookmark_object(self, resource: str) -> JsonObject:
        rtype = lookup(resource)
        return {
            "kind": rtype.kind,
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self.rv)},
        }

    # ---- reads ----------------------------------------------------------------------------
    def get(self, resource: str, namespace: str | None, name: str) -> JsonObject:
        rtype = lookup(resource)
        obj = self._table(resource).get(self._key(rtype, namespace, name))
        if obj is None:
            raise errors.not_found(resource, name, rtype.group)
        return obj

    def list(
        self,
        resource: str,
        namespace: str | None,
        matches: Matcher,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListPage:
        """Objects sorted by (namespace, name). A continue token resumes after the last key
        returned; later pages show the current state (upstream serves them from the first
        page's snapshot — a documented difference)."""
        table = self._table(resource)
        start: tuple[str, str] | None = None
        list_rv = str(self.rv)
        if continue_token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start = (decoded["start"][0], decoded["start"][1])
                list_rv = str(decoded["rv"])
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise errors.bad_request("continue key is not valid") from exc
        selected: list[tuple[tuple[str, str], JsonObject]] = []
        for key in sorted(table):
            if start is not None and key <= start:
                continue
            if namespace and key[0] != namespace:
                continue
            if matches(table[key]):
                selected.append((key, table[key]))
        token, remaining = "", None
        if limit and limit > 0 and len(selected) > limit:
            remaining = len(selected) - limit
            selected = selected[:limit]
            last = selected[-1][0]
            token = base64.urlsafe_b64encode(
                json.dumps({"rv": list_rv, "start": list(last)}).encode()
            ).decode()
        return ListPage([obj for _, obj in selected], list_rv, token, remaining)

    def watch(
        self,
        resource: str,
        namespace: str | None,
        resource_version: str | None,
        matches: Matcher,
        send_initial_events: bool = False,
    ) -> Watcher:
        """Registers a watcher and pre-fills its queue: the current state as ADDED when no RV
        (or "0") is given, else every retained event after the RV; 410 Expired when events
        after the RV have already been dropped from the history.

        ``send_initial_events`` is the streaming list of KEP-3157 (kubectl 1.37's reflectors
        use it): the current state as ADDED, then a BOOKMARK annotated
        ``k8s.io/initial-events-end`` at the current RV, then live events."""
        lookup(resource)
        watcher = Watcher(self, resource, namespace, matches)
        if send_initial_events or resource_version in (None, "", "0"):
            page = self.list(resource, namespace, matches)
            for obj in page.items:
                watcher.queue.put_nowait(("ADDED", obj))
            if send_initial_events:
                bookmark = self.bookmark_object(resource)
                bookmark["metadata"]["annotations"] = {INITIAL_EVENTS_END: "true"}
                watcher.queue.put_nowait(("BOOKMARK", bookmark))
        else:
            try:
                since = int(resource_version or "")
            except ValueError as exc:
                raise errors.bad_request(f"invalid resource version {resource_version!r}") from exc
            if since < self.evicted_rv.get(resource, 0):
                raise errors.gone(f"too old resource version: {since} ({self.rv})")
            if since > self.rv:
                # From an earlier server (RVs restart with the process): resuming would skip
                # events silently, so make the client relist (upstream: ResourceVersionTooLarge).
                raise errors.gone(f"too large resource version: {since} ({self.rv})")
            for event in self.history.get(resource, ()):
                if event.rv > since:
                    watcher.offer(event)
        self.watchers.setdefault(resource, set()).add(watcher)
        return watcher

    def close_watchers(self) -> None:
        for watchers in list(self.watchers.values()):
            for watcher in list(watchers):
                watcher.close()

    # ---- writes ---------------------------------------------------------------------------
    def _allocate_service_addresses(self, obj: JsonObject, previous: JsonObject | None) -> None:
        spec = obj["spec"]
        old_spec = previous.get("spec", {}) if previous else {}
        if old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
            spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
        elif spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
            ip = str(next(self._service_ips))
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            return
        old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                port["nodePort"] = old_ports.get(port.get("port")) or self._free_node_port()
            self._used_node_ports.add(port["nodePort"])
        if spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local":
            spec.setdefault(
                "healthCheckNodePort", old_spec.get("healthCheckNodePort") or self._free_node_port()
            )
            self._used_node_ports.add(spec["healthCheckNodePort"])

    def _free_node_port(self) -> int:
        for port in range(30000, 32768):
            if port not in self._used_node_ports:
                self._used_node_ports.add(port)
                return port
        raise errors.api_error(500, "InternalError", "no free node ports")

    def create(
        self, resource: str, namespace: str | None, obj: JsonObject, dry_run: bool = False
    ) -> JsonObject:
        """``dry_run`` (every write has it, as upstream's ``dryRun=All``): validate and return
        the would-be object without storing it or notifying watchers."""
        rtype = lookup(resource)
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(self._rng.choice(_GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        if rtype.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
            if ("", ns) not in self._table("namespaces"):
                raise errors.not_found("namespaces", ns)
        else:
            meta.pop("namespace", None)
        new["kind"] = rtype.kind
        new["apiVersion"] = rtype.api_version
        table = self._table(resource)
        key = self._key(rtype, namespace or meta.get("namespace"), meta["name"])
        if key in table:
            raise errors.already_exists(resource, meta["name"], rtype.group)
        apply_defaults(resource, new)
        validate(resource, rtype.kind, new)
        if resource == "services":
            self._allocate_service_addresses(new, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = format_time()
        if rtype.tracks_generation:
            meta["generation"] = 1
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        table[key] = new
        self._commit(resource, "ADDED", new, None)
        return new

    def update(
        self,
        resource: str,
        namespace: str | None,
        obj: JsonObject,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        rtype = lookup(resource)
        meta_in = obj.get("metadata") or {}
        name = meta_in.get("name", "")
        current = self.get(resource, namespace or meta_in.get("namespace"), name)
        wanted_rv = meta_in.get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(resource, name, rtype.group)
        if subresource == "scale":
            return self._write_scale(rtype, current, obj, dry_run)
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(obj.get("status", {}))
            apply_defaults(resource, new)  # a status write is defaulted too, as upstream
        elif subresource is None:
            new = copy.deepcopy(obj)
            new["kind"], new["apiVersion"] = rtype.kind, rtype.api_version
            if rtype.has_status and resource != "namespaces":
                new["status"] = copy.deepcopy(current.get("status", {}))
            meta = new.setdefault("metadata", {})
            for preserved in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
            ):
                if preserved in current["metadata"]:
                    meta[preserved] = current["metadata"][preserved]
                else:
                    meta.pop(preserved, None)
            apply_defaults(resource, new)
            validate(resource, rtype.kind, new, current)
            if resource == "services":
                self._allocate_service_addresses(new, current)
        else:
            raise errors.not_found(f"{resource}/{subresource}", name, rtype.group)
        return self._replace(rtype, current, new, dry_run)

    def _replace(
        self, rtype: ResourceType, current: JsonObject, new: JsonObject, dry_run: bool = False
    ) -> JsonObject:
        """Commits ``new`` over ``current``: generation bump on spec change (deployments also on
        annotation change, as upstream), finalizer-driven removal, MODIFIED event."""
        meta = new["metadata"]
        old_meta = current["metadata"]
        if "generation" in old_meta:
            changed = new.get("spec") != current.get("spec")
            if rtype.plural == "deployments":
                changed = changed or meta.get("annotations") != old_meta.get("annotations")
            meta["generation"] = old_meta["generation"] + (1 if changed else 0)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == current:
            return current  # a no-op write does not bump the resourceVersion, as upstream
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        key = self._key(rtype, meta.get("namespace"), meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rtype.plural != "pods":
            del self.objects[rtype.plural][key]
            self._commit(rtype.plural, "DELETED", new, None)
            return new
        self.objects[rtype.plural][key] = new
        self._commit(rtype.plural, "MODIFIED", new, current)
        return new

    def scale_of(self, resource: str, namespace: str | None, name: str) -> JsonObject:
        rtype = lookup(resource)
        if "scale" not in rtype.subresources:
            raise errors.not_found(f"{resource}/scale", name, rtype.group)
        return self._scale_view(self.get(resource, namespace, name))

    @staticmethod
    def _scale_view(obj: JsonObject) -> JsonObject:
        selector = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    def _write_scale(
        self, rtype: ResourceType, current: JsonObject, scale: JsonObject, dry_run: bool
    ) -> JsonObject:
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                "Scale", current["metadata"]["name"], "spec.replicas: must be >= 0"
            )
        new = copy.deepcopy(current)
        new["spec"]["replicas"] = replicas
        self._replace(rtype, current, new, dry_run)
        if dry_run:
            return {**self._scale_view(current), "spec": {"replicas": replicas}}
        return self.scale_of(
            rtype.plural, current["metadata"].get("namespace"), current["metadata"]["name"]
        )

    def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        current = (
            self.scale_of(resource, namespace, name)
            if subresource == "scale"
            else self.get(resource, namespace, name)
        )
        try:
            patched = apply_patch(current, patch, patch_type)
        except PatchError as exc:
            raise errors.invalid(lookup(resource).kind, name, str(exc)) from exc
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch did not produce an object")
        meta = patched.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise errors.bad_request("the name of the object cannot be changed by a patch")
        meta["name"] = name
        meta.setdefault("resourceVersion", current["metadata"]["resourceVersion"])
        return self.update(resource, namespace, patched, subresource, dry_run)

    def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        """Pods are deleted gracefully (deletionTimestamp set; removed when their node confirms
        with grace 0, or at once when unscheduled or finished); objects with finalizers wait for
        them; everything else goes at once. Orphan propagation strips the ownerReference from
        dependents here; Background/Foreground dependents are the garbage collector's job."""
        rtype = lookup(resource)
        current = self.get(resource, namespace, name)
        if dry_run:
            return current
        meta = current["metadata"]
        if resource == "pods":
            spec, status = current.get("spec", {}), current.get("status", {})
            grace = (
                spec.get("terminationGracePeriodSeconds", 30)
                if grace_period_seconds is None
                else grace_period_seconds
            )
            if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
                grace = 0
            if grace > 0:
                if (
                    meta.get("deletionTimestamp")
                    and meta.get("deletionGracePeriodSeconds", grace) <= grace
                ):
                    return current
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = format_time(time.time() + grace)
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                return self._replace(rtype, current, new)
        elif meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = format_time()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._replace(rtype, current, new)
        if propagation_policy == "Orphan":
            self._orphan_dependents(meta["uid"])
        if resource == "namespaces":
            self._delete_namespace_contents(name)
        removed = copy.deepcopy(current)
        removed["metadata"]["resourceVersion"] = self._next_rv()
        del self.objects[resource][self._key(rtype, meta.get("namespace"), name)]
        self._commit(resource, "DELETED", removed, None)
        return removed

    def _orphan_dependents(self, owner_uid: str) -> None:
        for resource, table in self.objects.items():
            for obj in list(table.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [
                        r for r in refs if r.get("uid") != owner_uid
                    ]
                    self._replace(lookup(resource), obj, new)

    def _delete_namespace_contents(self, namespace: str) -> None:
        """Upstream's namespace controller empties a Terminating namespace; here it happens at
        once (Pods included, without grace)."""
        for resource, table in self.objects.items():
            for key in [k for k in table if k[0] == namespace and lookup(resource).namespaced]:
                self.delete(resource, namespace, key[1], grace_period_seconds=0)
