"""Records Kubernetes watch events into events.jsonl, with the time each one arrived.

One thread per resource stream (Pods, EndpointSlices, Services, Deployments, ReplicaSets,
Events) lists, then watches from the list's resourceVersion with the official ``kubernetes``
client. Events are read as raw JSON lines straight off the response (``_preload_content=False``)
and stamped the moment their bytes arrive: a queue or model deserialization in between would
shift every receive time, and receive times are what the analyzer orders transitions by
(object timestamps have one-second resolution).

When a watch breaks, the stream resumes from the last resourceVersion it saw, so nothing is
lost or duplicated (the resourceVersion and ERROR-event rules are ``kubewire.listwatch``'s,
shared with the local cluster's informer; the relist diff is not used here, the analyzer reads
the ``LIST`` lines after a ``RELIST`` marker itself). When the server answers 410 Gone (history compacted), events may have been
missed: the stream writes a ``GAP`` marker (since the last event it had), a ``RELIST`` marker and
the relisted objects as ``LIST`` lines, so that the analyzer can mark transitions first seen
after the gap as detected late instead of inventing times. A stream still broken when the run
stops (the API server died) writes a ``GAP`` too, since its last event: what happened after it
was not seen. Line format: docs/trace-format.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubewire.listwatch import WatchExpired, raise_for_watch_error
from kubewire.listwatch import resource_version as object_resource_version
from rolltrace.runner.kube import forbidden_message

WATCHED_KINDS = ("Pod", "EndpointSlice", "Service", "Deployment", "ReplicaSet", "Event")
#: Kinds a label selector narrows: the workload's own objects. EndpointSlices carry the
#: Service's name (the analyzer scopes by it) and Events no labels of what they describe, so
#: both are recorded for the whole namespace.
SELECTABLE_KINDS = frozenset({"Pod", "Service", "Deployment", "ReplicaSet"})
#: What RBAC calls each kind (resource.group), for messages naming a refused call.
RESOURCES = {
    "Pod": "pods",
    "EndpointSlice": "endpointslices.discovery.k8s.io",
    "Service": "services",
    "Deployment": "deployments.apps",
    "ReplicaSet": "replicasets.apps",
    "Event": "events",
    "Namespace": "namespaces",
}
_RETRY_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)


def _list_function(api_client: k8s.ApiClient, kind: str) -> Callable[..., Any]:
    core, apps = k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client)
    discovery = k8s.DiscoveryV1Api(api_client)
    functions: dict[str, Callable[..., Any]] = {
        "Pod": core.list_namespaced_pod,
        "EndpointSlice": discovery.list_namespaced_endpoint_slice,
        "Service": core.list_namespaced_service,
        "Deployment": apps.list_namespaced_deployment,
        "ReplicaSet": apps.list_namespaced_replica_set,
        "Event": core.list_namespaced_event,
    }
    return functions[kind]


class EventLog:
    """Appends JSON lines to events.jsonl; one lock keeps lines whole across stream threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass
class StreamStats:
    kind: str
    events: int = 0
    relists: int = 0
    gaps: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class _StreamWatcher(threading.Thread):
    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        namespace: str,
        log: EventLog,
        stop: threading.Event,
        watch_timeout_s: int,
    ) -> None:
        super().__init__(name=f"watch-{kind}", daemon=True)
        self.kind = kind
        self._list = list_fn
        self._namespace = namespace
        self._log = log
        self._stopping = stop
        self._watch_timeout_s = watch_timeout_s
        self._response: Any = None
        self._last_recv_ns = time.time_ns()
        self.stats = StreamStats(kind)
        self.ready = threading.Event()
        #: set at every event written: wakes a poll that waits on this kind (``waiter``)
        self.changed = threading.Event()

    def run(self) -> None:
        failures = 0
        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist(initial=not self.ready.is_set())
                    self.ready.set()
                resource_version = self._watch(resource_version)
                failures = 0
            except WatchExpired as gone:
                self.stats.gaps += 1
                self._log.write(
                    {
                        "type": "GAP",
                        "recv_ns": time.time_ns(),
                        "kind": self.kind,
                        "since_ns": self._last_recv_ns,
                        "reason": str(gone),
                    }
                )
                resource_version = None
            except Exception as exc:  # a broken connection: resume from where we were
                if self._stopping.is_set():
                    break
                self.stats.reconnects += 1
                self.stats.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                self._stopping.wait(_RETRY_BACKOFF_S[min(failures, len(_RETRY_BACKOFF_S) - 1)])
                failures += 1
        if failures:
            self._write_open_gap()
        self.ready.set()

    def _write_open_gap(self) -> None:
        """The stream was broken when the run stopped: nothing after its last event was seen."""
        self.stats.gaps += 1
        last_error = self.stats.errors[-1] if self.stats.errors else "unknown error"
        self._log.write(
            {
                "type": "GAP",
                "recv_ns": time.time_ns(),
                "kind": self.kind,
                "since_ns": self._last_recv_ns,
                "reason": f"watch broken until the run stopped: {last_error}",
            }
        )

    def _relist(self, initial: bool) -> str:
        if not initial:
            self.stats.relists += 1
            self._log.write({"type": "RELIST", "recv_ns": time.time_ns(), "kind": self.kind})
        response = self._list(self._namespace, _preload_content=False)
        recv_ns = time.time_ns()
        body = json.loads(response.data)
        api_version = body.get("apiVersion", "v1")
        for item in body.get("items", []):
            item.setdefault("kind", self.kind)
            item.setdefault("apiVersion", api_version)
            self._log.write({"type": "LIST", "recv_ns": recv_ns, "kind": self.kind, "object": item})
        self._last_recv_ns = recv_ns
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, resource_version: str) -> str:
        try:
            self._response = self._list(
                self._namespace, watch=True, resource_version=resource_version,
                allow_watch_bookmarks=True, timeout_seconds=self._watch_timeout_s,
                _preload_content=False,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(f"410 Gone for resourceVersion {resource_version}") from None
            raise
        try:
            for recv_ns, raw in _lines(self._response):
                if self._stopping.is_set():
                    break
                event = json.loads(raw)
                raise_for_watch_error(event)  # 410: WatchExpired (relist); else resume
                obj = event.get("object") or {}
                resource_version = object_resource_version(obj) or resource_version
                if event.get("type") == "BOOKMARK":
                    continue
                self._log.write(
                    {"type": event["type"], "recv_ns": recv_ns, "kind": self.kind, "object": obj}
                )
                self._last_recv_ns = recv_ns
                self.stats.events += 1
                self.changed.set()
        finally:
            self._response.release_conn()
            self._response = None
        return resource_version

    def interrupt(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed: nothing to interrupt
                response.shutdown()


def _lines(response: Any) -> Iterator[tuple[int, bytes]]:
    """Complete lines from a streaming response, each stamped when its last bytes arrived."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        recv_ns = time.time_ns()
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield recv_ns, line


class ClusterWatcher:
    """Watches every kind of ``WATCHED_KINDS`` in one namespace into ``events_path``."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        events_path: Path,
        kinds: tuple[str, ...] = WATCHED_KINDS,
        watch_timeout_s: int = 300,
        list_function: Callable[[k8s.ApiClient, str], Callable[..., Any]] = _list_function,
        label_selector: str | None = None,
    ) -> None:
        """``list_function`` maps (client, kind) to the list/watch call; tests wrap it to
        inject API failures (a 410 on resume) that a real server produces only under load.
        ``label_selector`` narrows the ``SELECTABLE_KINDS``."""
        self._log = EventLog(events_path)
        self._stopping = threading.Event()
        self._threads = [
            _StreamWatcher(
                kind,
                _selected(list_function(api_client, kind), kind, label_selector),
                namespace,
                self._log,
                self._stopping,
                watch_timeout_s,
            )
            for kind in kinds
        ]

    def start(self, ready_timeout_s: float = 30.0) -> None:
        """Start every stream and wait until each has its initial list written."""
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + ready_timeout_s
        for thread in self._threads:
            thread.ready.wait(max(0.0, deadline - time.monotonic()))

    def waiter(self, kind: str) -> Callable[[float], None]:
        """A pause for a loop that polls the state of ``kind``: it ends after the given seconds
        or as soon as an event of that kind arrived, so the next read sees a change at once
        instead of up to a pause later (each late read was dead time in every run)."""
        stream = next(thread for thread in self._threads if thread.kind == kind)

        def pause(seconds: float) -> None:
            stream.changed.wait(seconds)
            stream.changed.clear()  # before the caller's read, which sees what came before

        return pause

    def stop(self, timeout_s: float = 5.0) -> dict[str, StreamStats]:
        self._stopping.set()
        for thread in self._threads:
            thread.interrupt()
        for thread in self._threads:
            thread.join(timeout_s)
        self._log.close()
        return {t.kind: t.stats for t in self._threads}

    @property
    def lines(self) -> int:
        return self._log.lines

    @property
    def stream_stats(self) -> dict[str, StreamStats]:
        """Each stream's counts so far (for progress lines while it runs)."""
        return {t.kind: t.stats for t in self._threads}


def _selected(list_fn: Callable[..., Any], kind: str, selector: str | None) -> Callable[..., Any]:
    if selector and kind in SELECTABLE_KINDS:
        return functools.partial(list_fn, label_selector=selector)
    return list_fn


def check_access(
    api_client: k8s.ApiClient,
    namespace: str,
    kinds: tuple[str, ...] = WATCHED_KINDS,
    list_function: Callable[[k8s.ApiClient, str], Callable[..., Any]] = _list_function,
) -> None:
    """List and open a watch of every kind once, so that a refused verb is reported before
    recording starts (a stream refused later would only retry) naming the verb and resource.

    Raises ``AccessError`` (403, 401, a missing namespace, a kind not served, an unreachable
    server). Listing in a namespace that does not exist succeeds (empty), so the namespace is
    read first; a Role without ``get`` on namespaces (rbac.yaml has none) skips that check."""
    try:
        k8s.CoreV1Api(api_client).read_namespace(namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise AccessError(f"namespace {namespace!r} does not exist") from None
        if exc.status != 403:
            raise AccessError(_refusal(exc, "get", "Namespace", namespace)) from None
    except Exception as exc:  # urllib3: no connection, TLS, DNS
        raise AccessError(f"cannot reach the API server: {exc}"[:300]) from None
    for kind in kinds:
        call = list_function(api_client, kind)
        for verb, options in (
            ("list", {"limit": 1}),
            ("watch", {"watch": True, "timeout_seconds": 1, "_preload_content": False}),
        ):
            try:
                response = call(namespace, **options)
            except ApiException as exc:
                raise AccessError(_refusal(exc, verb, kind, namespace)) from None
            except Exception as exc:  # urllib3: no connection, TLS, DNS
                raise AccessError(f"cannot reach the API server: {exc}"[:300]) from None
            if verb == "watch":  # the stream is open: close it, never reuse its connection
                response.close()
                response.release_conn()


class AccessError(RuntimeError):
    """The API server refused or could not serve a call the watcher needs: says which."""


def _refusal(exc: ApiException, verb: str, kind: str, namespace: str) -> str:
    resource = RESOURCES.get(kind, kind)
    where = f"{verb} {resource} in namespace {namespace!r}"
    if exc.status == 403:
        return f"cannot {where}: {forbidden_message(exc, namespace)}"
    if exc.status == 401:
        return f"cannot {where}: the API server rejected the kubeconfig's credentials (401)"
    if exc.status == 404:
        return f"cannot {where}: the API server does not serve {resource} (404)"
    return f"cannot {where}: {exc.status} {exc.reason}"
