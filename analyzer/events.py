"""events.jsonl → pod lifecycle (``PODS``), pod state intervals (``POD_STATES``) and endpoint
membership (``ENDPOINTS``).

Each line of events.jsonl is one watch event with the time the watcher received it (format in
docs/trace-format.md). Receive times, not object timestamps, order everything: Kubernetes
timestamps have one-second resolution and come from another clock (docs/trace-format.md).

A watch can break. The watcher then writes a ``GAP`` marker (events of that kind between
``since_ns`` and ``recv_ns`` may be missing) and/or a ``RELIST`` marker followed by ``LIST``
lines (a fresh snapshot). A transition that could have happened inside such a hole is not given
a precise time it does not have: its time is when it was *detected* (an upper bound) and its
``*_late`` flag is set. An object missing from a relist snapshot was deleted during the hole.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analyzer.errors import TraceError
from analyzer.schema import ENDPOINTS, POD_STATES, PODS, Cause, PodState, TruthEvent, check_frame
from kubewire import EndpointState, parse_time, slice_endpoints

EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "LIST", "RELIST", "GAP", "BOOKMARK")
OBJECT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "LIST"})  # lines that carry an object
KINDS = ("Pod", "EndpointSlice", "Service", "Deployment", "ReplicaSet", "Event")
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_MAX_NS = 2**63 - 1
_REVISION = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() accepts "²"

EVENT_COLUMNS: dict[str, str] = {
    "line": "int64",  # 1-based line number in events.jsonl
    "recv_ns": "int64",
    "type": "string",
    "kind": "string",
    "namespace": "string",
    "name": "string",
    "uid": "string",
    "resource_version": "string",
    "since_ns": "Int64",  # GAP only
    "reason": "string",  # GAP only
    "object": "object",  # the Kubernetes object as a dict; None for markers
}
"""Columns of ``read_events``' frame (one row per line, sorted by recv_ns, ties in file order)."""


# --------------------------------------------------------------------------------------------
# JSONL lines


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | TraceError]]:
    """Yield (1-based line number, object or the TraceError saying why the line is unusable).

    Blank lines are skipped. Reading is per line, so one damaged line (a torn last write, a
    stray byte) costs that line only.
    """
    name = str(path)
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                yield number, _parse_json_line(raw, number, name)
    except OSError as exc:
        yield 0, TraceError(name, "file", f"cannot read: {exc.strerror or exc}")


def _parse_json_line(raw: bytes, number: int, path: str) -> dict[str, Any] | TraceError:
    where = f"line {number}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return TraceError(path, where, f"not UTF-8 (byte {exc.start} of the line)")
    try:
        value = json.loads(text)
    except RecursionError:
        return TraceError(path, where, "JSON nested too deeply")
    except ValueError as exc:
        return TraceError(path, where, f"not valid JSON: {exc}")
    if not isinstance(value, dict):
        return TraceError(path, where, f"expected a JSON object, got {type(value).__name__}")
    if b"\\ud" in raw.lower() and not _encodable(value):
        return TraceError(path, where, "unpaired UTF-16 surrogate escape (not encodable text)")
    return value


def _encodable(value: object) -> bool:
    """JSON allows ``"\\ud800"`` alone; UTF-8 (and so Arrow and Parquet) does not."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_ns(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_NS


class _LineError(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


def _expect(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise _LineError(field, message)


def _opt(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` when absent or of type ``kind`` (an int must fit int64 and not be a bool);
    otherwise a ``_LineError`` naming the key path."""
    value = obj.get(key)
    if value is None or (kind is not int and type(value) is kind):  # the common case, fast
        return value
    if kind is int and (
        isinstance(value, bool) or (isinstance(value, int) and abs(value) > _MAX_NS)
    ):
        raise _LineError(f"{where}.{key}" if where else key, f"{value!r} is not a 64-bit integer")
    if value is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        field = f"{where}.{key}" if where else key
        raise _LineError(field, f"expected {names}, got {type(value).__name__}")
    return value


def _check_list_of_dicts(obj: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    items = _opt(obj, key, list, where) or []
    for i, item in enumerate(items):
        _expect(isinstance(item, dict), f"{where}.{key}[{i}]", "expected an object")
    return list(items)


def _check_pod(obj: dict[str, Any]) -> None:
    spec = _opt(obj, "spec", dict, "object") or {}
    _opt(spec, "nodeName", str, "object.spec")
    status = _opt(obj, "status", dict, "object") or {}
    _opt(status, "podIP", str, "object.status")
    _opt(status, "hostIP", str, "object.status")
    _opt(status, "phase", str, "object.status")
    for i, cond in enumerate(_check_list_of_dicts(status, "conditions", "object.status")):
        _opt(cond, "type", str, f"object.status.conditions[{i}]")
        _opt(cond, "status", str, f"object.status.conditions[{i}]")
    for i, cs in enumerate(_check_list_of_dicts(status, "containerStatuses", "object.status")):
        state = _opt(cs, "state", dict, f"object.status.containerStatuses[{i}]") or {}
        for key in ("running", "terminated", "waiting"):
            _opt(state, key, dict, f"object.status.containerStatuses[{i}].state")


def _check_endpoint_slice(obj: dict[str, Any]) -> None:
    for i, ep in enumerate(_check_list_of_dicts(obj, "endpoints", "object")):
        where = f"object.endpoints[{i}]"
        addresses = _opt(ep, "addresses", list, where) or []
        for j, address in enumerate(addresses):
            _expect(isinstance(address, str), f"{where}.addresses[{j}]", "expected a string")
        conditions = _opt(ep, "conditions", dict, where) or {}
        for key in ("ready", "serving", "terminating"):
            _opt(conditions, key, bool, f"{where}.conditions")
        target = _opt(ep, "targetRef", dict, where) or {}
        _opt(target, "name", str, f"{where}.targetRef")
        _opt(ep, "nodeName", str, where)


def _check_metadata(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise _LineError("object.metadata", "missing or not a JSON object")
    name = meta.get("name")
    _expect(isinstance(name, str) and name != "", "object.metadata.name", "missing or empty")
    for key in ("namespace", "uid", "resourceVersion", "deletionTimestamp"):
        _opt(meta, key, str, "object.metadata")
    _opt(meta, "deletionGracePeriodSeconds", int, "object.metadata")
    for key in ("labels", "annotations"):
        mapping = _opt(meta, key, dict, "object.metadata") or {}
        for k, v in mapping.items():
            _expect(isinstance(v, str), f"object.metadata.{key}.{k}", "expected a string")
    for i, ref in enumerate(_check_list_of_dicts(meta, "ownerReferences", "object.metadata")):
        _opt(ref, "kind", str, f"object.metadata.ownerReferences[{i}]")
        _opt(ref, "name", str, f"object.metadata.ownerReferences[{i}]")
    object_kind = obj.get("kind")
    _expect(
        object_kind is None or object_kind == kind,
        "object.kind",
        f"{object_kind!r} does not match the line's kind {kind!r}",
    )
    return meta


_KIND_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "Pod": _check_pod,
    "EndpointSlice": _check_endpoint_slice,
}


def event_row(value: dict[str, Any]) -> dict[str, Any]:
    """Check one parsed events.jsonl line and turn it into a row of ``EVENT_COLUMNS``.

    Raises ``_LineError`` (field, message); ``scan_events`` adds the file and line.
    """
    etype = value.get("type")
    _expect(etype in EVENT_TYPES, "type", f"{etype!r} is not one of {', '.join(EVENT_TYPES)}")
    recv = value.get("recv_ns")
    _expect(_is_ns(recv), "recv_ns", f"{recv!r} is not a non-negative integer (ns)")
    kind = value.get("kind")
    _expect(isinstance(kind, str) and kind != "", "kind", f"{kind!r} is not a kind name")
    row: dict[str, Any] = {
        "recv_ns": recv,
        "type": etype,
        "kind": kind,
        "namespace": None,
        "name": None,
        "uid": None,
        "resource_version": None,
        "since_ns": None,
        "reason": None,
        "object": None,
    }
    obj = value.get("object")
    if etype in OBJECT_TYPES:
        _expect(isinstance(obj, dict), "object", "missing or not a JSON object")
    elif etype == "BOOKMARK":
        _expect(obj is None or isinstance(obj, dict), "object", "not a JSON object")
    if etype == "GAP":
        since = value.get("since_ns")
        _expect(_is_ns(since), "since_ns", f"{since!r} is not a non-negative integer (ns)")
        _expect(since <= recv, "since_ns", "after recv_ns")  # type: ignore[operator]
        reason = value.get("reason")
        _expect(reason is None or isinstance(reason, str), "reason", "expected a string")
        row.update(since_ns=since, reason=reason)
    if etype in OBJECT_TYPES:
        assert isinstance(obj, dict) and isinstance(kind, str)
        meta = _check_metadata(obj, kind)
        kind_check = _KIND_CHECKS.get(kind)
        if kind_check is not None:
            kind_check(obj)
        row.update(
            namespace=meta.get("namespace"),
            name=meta["name"],
            uid=meta.get("uid"),
            resource_version=meta.get("resourceVersion"),
            object=obj,
        )
    return row


def event_problem(value: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) saying why ``value`` is not a valid events.jsonl line, None when it is:
    for writers of foreign watch records (``analyzer.readers.kubectl``) that locate the problem
    in their own input."""
    try:
        event_row(value)
    except _LineError as exc:
        return exc.field, exc.message
    return None


@dataclass
class EventsScan:
    """What ``scan_events`` read: the good lines as a frame, and one TraceError per bad line."""

    frame: pd.DataFrame
    problems: list[TraceError] = field(default_factory=list)


def scan_events(path: str | os.PathLike[str]) -> EventsScan:
    """Read every line, keeping good ones and reporting bad ones (the tolerant reader)."""
    return _scan_jsonl(path, event_row, EVENT_COLUMNS, "recv_ns")


def read_events(path: str | os.PathLike[str], *, tolerant: bool = False) -> pd.DataFrame:
    """Read events.jsonl as a frame of ``EVENT_COLUMNS``.

    Strict (default): the first bad line raises a ``TraceError`` naming the line and field, with
    the good lines attached as ``kept``. Tolerant: bad lines are dropped (``scan_events`` says
    which), so a run with one torn line still yields its pod and endpoint tables.
    """
    return _strict(scan_events(path), tolerant)


# --------------------------------------------------------------------------------------------
# walking the events of one kind, with gap and relist bookkeeping


@dataclass
class _Watch:
    """Per kind: when the watch last lost events, and what a running relist has shown so far.

    A transition observed at time t of an object last observed at ``prev`` is *late* when a
    hole ended after ``prev``: it may have happened inside the hole. An object seen for the
    first time is late when it arrives after a hole other than by ``ADDED``: a relist snapshot
    (``LIST``) or a ``MODIFIED``/``DELETED`` whose ``ADDED`` was lost. An ``ADDED`` is a live
    event (objects created inside a hole come back as ``LIST`` lines, not as ``ADDED``).
    """

    last_hole_end: int | None = None
    seen_any: bool = False
    relist_keys: set[str] | None = None
    relist_detected_ns: int = 0

    def late(self, prev_seen: int | None, etype: str) -> bool:
        if self.last_hole_end is None:
            return False
        if prev_seen is None:
            return etype != "ADDED"
        return self.last_hole_end > prev_seen


_RelistDone = Callable[[set[str], int], None]  # (keys the snapshot showed, detection time)


def _walk(
    events: pd.DataFrame,
    kind: str,
    key_of: Callable[[dict[str, Any]], str],
    on_object: Callable[[str, str, dict[str, Any], int, _Watch], None],
    on_relist_done: _RelistDone,
) -> None:
    """Feed every event of ``kind`` in receive order to ``on_object(key, type, obj, t, watch)``;
    call ``on_relist_done`` when a relist snapshot is complete."""
    watch = _Watch()
    subset = events[events["kind"] == kind]
    for etype, recv, obj in zip(subset["type"], subset["recv_ns"], subset["object"], strict=True):
        t = int(recv)
        if watch.relist_keys is not None and etype != "LIST":
            on_relist_done(watch.relist_keys, watch.relist_detected_ns)
            watch.relist_keys = None
        if etype == "GAP":
            watch.last_hole_end = max(t, watch.last_hole_end or t)
        elif etype == "RELIST":
            if watch.seen_any:  # a relist before anything was seen is the initial list
                watch.last_hole_end = max(t, watch.last_hole_end or t)
                watch.relist_keys = set()
                watch.relist_detected_ns = t
        elif etype in OBJECT_TYPES and isinstance(obj, dict):
            key = key_of(obj)
            if watch.relist_keys is not None:
                watch.relist_keys.add(key)
                watch.relist_detected_ns = t
            on_object(key, str(etype), obj, t, watch)
            watch.seen_any = True
    if watch.relist_keys is not None:
        on_relist_done(watch.relist_keys, watch.relist_detected_ns)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _object_key(obj: dict[str, Any]) -> str:
    meta = _meta(obj)
    uid = meta.get("uid")
    if isinstance(uid, str) and uid:
        return uid
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


# --------------------------------------------------------------------------------------------
# pods


@dataclass
class _Pod:
    pod: str
    namespace: str
    uid: str
    created_ns: int
    node: str | None = None
    ip: str | None = None
    host_ip: str | None = None
    replicaset: str | None = None
    template_hash: str | None = None
    scheduled_ns: int | None = None
    started_ns: int | None = None
    ready_ns: int | None = None
    unready_ns: int | None = None
    deletion_ns: int | None = None
    deletion_grace_s: int | None = None
    terminated_ns: int | None = None
    deleted_ns: int | None = None
    ready_late: bool = False
    deletion_late: bool = False
    deleted_late: bool = False
    is_ready: bool = False
    last_seen_ns: int | None = None  # None until the first observation has been applied


def _condition(status: dict[str, Any], name: str) -> str | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == name:
            value = cond.get("status")
            return value if isinstance(value, str) else None
    return None


def _observe_pod(pod: _Pod, etype: str, obj: dict[str, Any], t: int, late: bool) -> None:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    pod.node = pod.node or spec.get("nodeName") or None
    pod.ip = pod.ip or status.get("podIP") or None
    pod.host_ip = pod.host_ip or status.get("hostIP") or None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("name"):
            pod.replicaset = ref["name"]
    pod.template_hash = (meta.get("labels") or {}).get("pod-template-hash", pod.template_hash)
    if pod.scheduled_ns is None and (
        spec.get("nodeName") or _condition(status, "PodScheduled") == "True"
    ):
        pod.scheduled_ns = t
    containers = status.get("containerStatuses") or []
    states = [c.get("state") or {} for c in containers]
    if pod.started_ns is None and any(s.get("running") is not None for s in states):
        pod.started_ns = t
    ready = _condition(status, "Ready") == "True"
    if ready and pod.ready_ns is None:
        pod.ready_ns, pod.ready_late = t, late
    if not ready and pod.is_ready and pod.unready_ns is None:
        pod.unready_ns = t
    pod.is_ready = ready
    if meta.get("deletionTimestamp") and pod.deletion_ns is None:
        pod.deletion_ns, pod.deletion_late = t, late
    grace = meta.get("deletionGracePeriodSeconds")
    if isinstance(grace, int) and pod.deletion_grace_s is None:
        pod.deletion_grace_s = grace
    all_terminated = bool(states) and all(s.get("terminated") is not None for s in states)
    if pod.terminated_ns is None and (
        all_terminated or status.get("phase") in {"Succeeded", "Failed"}
    ):
        pod.terminated_ns = t
    if etype == "DELETED":
        _mark_deleted(pod, t, late)
    pod.last_seen_ns = t


def _mark_deleted(pod: _Pod, t: int, late: bool) -> None:
    """A DELETED without a prior deletionTimestamp (force delete, or the graceful phase fell in
    a hole) still tells that deletion was requested by then: deletion_ns is that upper bound."""
    pod.deleted_ns, pod.deleted_late = t, late
    if pod.deletion_ns is None:
        pod.deletion_ns, pod.deletion_late = t, late


def _replicaset_revisions(
    events: pd.DataFrame,
) -> tuple[dict[tuple[str, str], list[tuple[int, int]]], dict[tuple[str, str], str]]:
    """(namespace, ReplicaSet) → [(recv_ns, revision)] in receive order, and
    (namespace, pod-template-hash) → ReplicaSet name (for Pods without an ownerReference)."""
    revisions: dict[tuple[str, str], list[tuple[int, int]]] = {}
    by_hash: dict[tuple[str, str], str] = {}
    subset = events[(events["kind"] == "ReplicaSet") & events["type"].isin(sorted(OBJECT_TYPES))]
    for recv, obj in zip(subset["recv_ns"], subset["object"], strict=True):
        meta = _meta(obj)
        namespace, name = meta.get("namespace") or "", meta.get("name")
        if not isinstance(name, str):
            continue
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if template_hash:
            by_hash[(namespace, template_hash)] = name
        text = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
        if isinstance(text, str) and _REVISION.fullmatch(text):
            history = revisions.setdefault((namespace, name), [])
            if not history or history[-1][1] != int(text):
                history.append((int(recv), int(text)))
    return revisions, by_hash


def _revision_at(history: list[tuple[int, int]], t: int) -> int | None:
    """The ReplicaSet's revision as of ``t`` (a rollback re-numbers an old ReplicaSet, so its
    Pods created before and after belong to different revisions)."""
    if not history:
        return None
    current = history[0][1]
    for recv, revision in history:
        if recv > t:
            break
        current = revision
    return current


def pod_lifecycle(events: pd.DataFrame) -> pd.DataFrame:
    """One row per Pod (by uid) with the receive times of its transitions (``PODS``)."""
    live: dict[str, _Pod] = {}
    done: list[_Pod] = []

    def on_object(key: str, etype: str, obj: dict[str, Any], t: int, watch: _Watch) -> None:
        pod = live.get(key)
        if pod is None:
            meta = _meta(obj)
            pod = _Pod(
                pod=str(meta.get("name")),
                namespace=str(meta.get("namespace") or ""),
                uid=str(meta.get("uid") or ""),
                created_ns=t,
            )
            live[key] = pod
        late = watch.late(pod.last_seen_ns, etype)
        _observe_pod(pod, etype, obj, t, late)
        if etype == "DELETED":
            done.append(live.pop(key))

    def on_relist_done(shown: set[str], detected_ns: int) -> None:
        for key in [k for k in live if k not in shown]:
            pod = live.pop(key)
            _mark_deleted(pod, detected_ns, True)
            done.append(pod)

    _walk(events, "Pod", _object_key, on_object, on_relist_done)
    revisions, by_hash = _replicaset_revisions(events)
    rows = []
    for pod in [*done, *live.values()]:
        replicaset = pod.replicaset or (
            by_hash.get((pod.namespace, pod.template_hash)) if pod.template_hash else None
        )
        history = revisions.get((pod.namespace, replicaset)) if replicaset else None
        rows.append(
            {
                "pod": pod.pod,
                "namespace": pod.namespace,
                "uid": pod.uid,
                "node": pod.node,
                "ip": pod.ip,
                "host_ip": pod.host_ip,
                "replicaset": replicaset,
                "revision": _revision_at(history or [], pod.created_ns),
                "created_ns": pod.created_ns,
                "scheduled_ns": pod.scheduled_ns,
                "started_ns": pod.started_ns,
                "ready_ns": pod.ready_ns,
                "unready_ns": pod.unready_ns,
                "deletion_ns": pod.deletion_ns,
                "deletion_grace_s": pod.deletion_grace_s,
                "terminated_ns": pod.terminated_ns,
                "deleted_ns": pod.deleted_ns,
                "ready_late": pod.ready_late,
                "deletion_late": pod.deletion_late,
                "deleted_late": pod.deleted_late,
            }
        )
    frame = _typed_frame(rows, PODS.columns).sort_values(["created_ns", "pod"], kind="stable")
    return check_frame(frame.reset_index(drop=True), PODS, "pod_lifecycle")


def _typed_frame(rows: list[dict[str, Any]], columns: tuple[Any, ...]) -> pd.DataFrame:
    return _columns_frame(rows, {c.name: c.dtype for c in columns})


def _columns_frame(rows: list[dict[str, Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    """Rows (dicts) as a frame with the given dtypes; ``pd.array`` per column is a few times
    faster than ``pd.Series`` for the many small frames a run has."""
    data: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        values = [r.get(name) for r in rows]
        array_dtype: Any = dtype  # pandas-stubs overloads pd.array per literal dtype name
        data[name] = (
            pd.Series(values, dtype=object)
            if dtype == "object"
            else pd.array(values, dtype=array_dtype)
        )
    return pd.DataFrame(data)


# --------------------------------------------------------------------------------------------
# pod state intervals


@dataclass(frozen=True)
class _PodSnapshot:
    """What one Pod observation says, reduced to what the ``POD_STATES`` intervals track."""

    state: str
    ready: bool
    running: bool
    restart_count: int
    exit_code: int | None
    exit_reason: str | None
    exit_finished_ns: int | None
    grace_s: int | None


@dataclass
class _PodTrack:
    """One Pod's open interval and what the state machine needs from its past."""

    row: int  # index into the rows list of its open interval
    ever_ran: bool = False
    ever_ready: bool = False
    exited_since_ready: bool = False
    restarts_at_ready: int = 0
    exit_key: tuple[int | None, str | None, int | None] | None = None
    last_seen_ns: int = 0


def _rfc3339_ns(text: object) -> int | None:
    """An object timestamp in ns (1 s resolution: a bound, never an ordering)."""
    if not isinstance(text, str):
        return None
    try:
        seconds = parse_time(text)
    except ValueError:
        return None
    return None if seconds is None else int(seconds * 1e9)


def _latest_exit(containers: list[Any]) -> tuple[int | None, str | None, int | None]:
    """(exitCode, reason, finishedAt ns) of the most recent container exit the statuses show:
    ``state.terminated`` (exited now) before ``lastState.terminated`` (exited, restarted)."""
    exits = []
    for cs in containers:
        if not isinstance(cs, dict):
            continue
        for where in ("state", "lastState"):
            terminated = (cs.get(where) or {}).get("terminated")
            if isinstance(terminated, dict):
                code = terminated.get("exitCode")
                code = code if isinstance(code, int) and not isinstance(code, bool) else None
                reason = terminated.get("reason")
                finished = _rfc3339_ns(terminated.get("finishedAt"))
                exits.append((finished or 0, where == "state", code, reason, finished))
                break
    if not exits:
        return None, None, None
    _, _, code, reason, finished = max(exits, key=lambda e: (e[0], e[1]))
    return code, reason if isinstance(reason, str) else None, finished


def _snapshot(etype: str, obj: dict[str, Any], track: _PodTrack) -> _PodSnapshot:
    """Reduce one observation to a snapshot and advance the Pod's state machine (``track``)."""
    meta, status = _meta(obj), obj.get("status") or {}
    containers = [c for c in status.get("containerStatuses") or [] if isinstance(c, dict)]
    states = [c.get("state") or {} for c in containers]
    running = bool(states) and all(s.get("running") is not None for s in states)
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    condition = _condition(status, "Ready")
    ready = (
        condition == "True"
        if condition is not None
        else (bool(containers) and all(c.get("ready") is True for c in containers))
    )
    if track.ever_ran and not running:
        track.exited_since_ready = True
    track.ever_ran = track.ever_ran or any(s.get("running") is not None for s in states)
    if ready:
        track.ever_ready, track.exited_since_ready, track.restarts_at_ready = True, False, restarts
    finished = bool(states) and all(s.get("terminated") is not None for s in states)
    deleting = bool(meta.get("deletionTimestamp"))
    over = etype == "DELETED" or status.get("phase") in {"Succeeded", "Failed"}
    state = _state(over or (finished and deleting), deleting, ready, restarts, track)
    code, reason, finished_ns = _latest_exit(containers)
    grace = meta.get("deletionGracePeriodSeconds") if meta.get("deletionTimestamp") else None
    return _PodSnapshot(
        state.value,
        ready,
        running,
        restarts,
        code,
        reason,
        finished_ns,
        grace if isinstance(grace, int) else None,
    )


def _state(gone: bool, deleting: bool, ready: bool, restarts: int, track: _PodTrack) -> PodState:
    """The Pod's state, most decisive first (see ``PodState``)."""
    if gone:
        return PodState.GONE
    if deleting:
        return PodState.TERMINATING
    if ready:
        return PodState.READY
    if track.exited_since_ready or restarts > track.restarts_at_ready:
        return PodState.RESTARTING
    if track.ever_ready:
        return PodState.UNREADY
    return PodState.STARTING if track.ever_ran else PodState.PENDING


def _exit_bound(snap: _PodSnapshot, prev_seen: int | None, t: int) -> int:
    """Earliest moment a newly seen exit can have happened: after the previous observation (which
    did not show it) and not before its finishedAt; never after it was seen."""
    lower = prev_seen if prev_seen is not None else t
    finished = snap.exit_finished_ns
    if finished is not None and lower < finished <= t:
        return finished
    return min(lower, t)


def _interval_row(
    obj: dict[str, Any], snap: _PodSnapshot, previous: dict[str, Any], exit_ns: int | None
) -> dict[str, Any]:
    """The ``POD_STATES`` columns one observation gives (node, IP and grace carry over)."""
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    return {
        "pod": str(meta.get("name")),
        "uid": str(meta.get("uid") or ""),
        "node": spec.get("nodeName") or previous.get("node"),
        "ip": status.get("podIP") or previous.get("ip"),
        "state": snap.state,
        "ready": snap.ready,
        "container_running": snap.running,
        "restart_count": snap.restart_count,
        "last_exit_code": snap.exit_code,
        "last_exit_reason": snap.exit_reason,
        "last_exit_ns": exit_ns,
        "deletion_grace_s": snap.grace_s or previous.get("deletion_grace_s"),
    }


def pod_state_intervals(events: pd.DataFrame) -> pd.DataFrame:
    """Every Pod's state as intervals over receive time (``POD_STATES``), from every observed
    transition: container starts and exits, restarts, Ready flips, deletion and removal.

    Unlike ``PODS`` (first transitions only) this keeps a container killed by its liveness
    probe, a crash loop, or a readiness flap visible: they come and go without a deletion."""
    rows: list[dict[str, Any]] = []
    tracks: dict[str, _PodTrack] = {}

    def open_row(key: str, base: dict[str, Any], t: int, late: bool) -> None:
        if key in tracks:
            rows[tracks[key].row]["to_ns"] = t
        rows.append({**base, "from_ns": t, "to_ns": None, "from_late": late})

    def on_object(key: str, etype: str, obj: dict[str, Any], t: int, watch: _Watch) -> None:
        track = tracks.get(key)
        prev_seen = track.last_seen_ns if track else None
        late = watch.late(prev_seen, etype)
        track = track or _PodTrack(row=-1)
        snap = _snapshot(etype, obj, track)
        previous = rows[track.row] if track.row >= 0 else {}
        exit_key = (snap.exit_code, snap.exit_reason, snap.exit_finished_ns)
        new_exit = snap.exit_code is not None and exit_key != track.exit_key
        # a restart whose exit the statuses do not describe (no terminated state) is one too
        unseen_exit = snap.exit_code is None and snap.restart_count > int(
            previous.get("restart_count", 0)
        )
        exit_ns = (
            _exit_bound(snap, prev_seen, t)
            if new_exit or unseen_exit
            else previous.get("last_exit_ns")
        )
        base = _interval_row(obj, snap, previous, exit_ns)
        changed = any(previous.get(k) != v for k, v in base.items())
        if changed:
            open_row(key, base, t, late)
            track.row = len(rows) - 1
        track.exit_key, track.last_seen_ns = exit_key, t
        tracks[key] = track
        if etype == "DELETED":
            del tracks[key]

    def on_relist_done(shown: set[str], detected_ns: int) -> None:
        for key in [k for k in tracks if k not in shown]:
            previous = rows[tracks[key].row]
            if previous["state"] != PodState.GONE.value:
                open_row(key, {**previous, "state": PodState.GONE.value}, detected_ns, True)
            del tracks[key]

    _walk(events, "Pod", _object_key, on_object, on_relist_done)
    frame = _typed_frame(rows, POD_STATES.columns)
    frame = frame.sort_values(["from_ns", "pod"], kind="stable").reset_index(drop=True)
    return check_frame(frame, POD_STATES, "pod_state_intervals")


# --------------------------------------------------------------------------------------------
# endpoints
# (conditions and duplicates read by kubewire.endpointslice, as the local kube-proxy reads them)


@dataclass
class _Slice:
    service: str
    name: str
    open_rows: dict[str, int]  # address → index into rows of its open interval
    states: dict[str, EndpointState]
    last_seen_ns: int


def endpoint_membership(events: pd.DataFrame) -> pd.DataFrame:
    """Intervals of each (EndpointSlice, address) in one (ready, serving, terminating) state."""
    rows: list[dict[str, Any]] = []
    slices: dict[str, _Slice] = {}

    def close(sl: _Slice, address: str, t: int) -> None:
        rows[sl.open_rows.pop(address)]["to_ns"] = t
        sl.states.pop(address, None)

    def on_object(key: str, etype: str, obj: dict[str, Any], t: int, watch: _Watch) -> None:
        meta = _meta(obj)
        sl = slices.get(key)
        late = watch.late(sl.last_seen_ns if sl else None, etype)
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, "")
        if sl is None:
            sl = slices[key] = _Slice(service, str(meta.get("name")), {}, {}, t)
        sl.service = service or sl.service
        sl.last_seen_ns = t
        current = {} if etype == "DELETED" else slice_endpoints(obj)
        for address in [a for a in sl.states if current.get(a) != sl.states[a]]:
            close(sl, address, t)
        for address, state in current.items():
            if address in sl.states:
                continue
            sl.states[address] = state
            sl.open_rows[address] = len(rows)
            rows.append(
                {
                    "service": sl.service,
                    "slice": sl.name,
                    "ip": address,
                    "pod": state.pod,
                    "node": state.node,
                    "ready": state.ready,
                    "serving": state.serving,
                    "terminating": state.terminating,
                    "from_ns": t,
                    "to_ns": None,
                    "from_late": late,
                }
            )
        if etype == "DELETED":
            del slices[key]

    def on_relist_done(shown: set[str], detected_ns: int) -> None:
        for key in [k for k in slices if k not in shown]:
            sl = slices.pop(key)
            for address in list(sl.open_rows):
                close(sl, address, detected_ns)

    _walk(events, "EndpointSlice", _object_key, on_object, on_relist_done)
    frame = _typed_frame(rows, ENDPOINTS.columns)
    frame = frame.sort_values(["from_ns", "slice", "ip"], kind="stable").reset_index(drop=True)
    return check_frame(frame, ENDPOINTS, "endpoint_membership")


# --------------------------------------------------------------------------------------------
# truth.jsonl (local cluster and trace builder only; attribution never reads it)

TRUTH_COLUMNS: dict[str, str] = {
    "line": "int64",
    "ts_ns": "int64",
    "source": "string",
    "event": "string",
    "pod": "string",
    "node": "string",
    "fields": "object",  # every other key of the line, as a dict
}

# Fields each truth event must carry (name → accepted types); other keys are free-form.
TRUTH_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    TruthEvent.RULES_PROGRAMMED: {"node": (str,), "service": (str,), "endpoints": (list,)},
    TruthEvent.HEALTHCHECK_CHANGED: {"node": (str,), "healthy": (bool,), "local_endpoints": (int,)},
    TruthEvent.LB_TARGETS_CHANGED: {"targets": (list,)},
    TruthEvent.LB_HEALTH_CHANGED: {"target": (str,), "healthy": (bool,)},
    TruthEvent.REQUEST_CAUSE: {"request_id": (int,), "cause": (str,)},
    TruthEvent.NAT_NEW: {
        "src": (str,),
        "sport": (int,),
        "dst": (str,),
        "dport": (int,),
        "target_ip": (str,),
        "target_port": (int,),
        "peer_ip": (str,),
        "peer_port": (int,),
    },
    TruthEvent.IDLE_CLOSE: {"peer_ip": (str,), "peer_port": (int,), "how": (str,)},
    TruthEvent.WARMUP_RESET: {"peer_ip": (str,), "peer_port": (int,)},
}


def truth_row(value: dict[str, Any]) -> dict[str, Any]:
    """Check one parsed truth.jsonl line and turn it into a row of ``TRUTH_COLUMNS``.

    An event name outside ``TruthEvent`` is accepted (a newer cluster may record more); the
    validator warns about it.
    """
    ts = value.get("ts_ns")
    _expect(_is_ns(ts), "ts_ns", f"{ts!r} is not a non-negative integer (ns)")
    source = value.get("source")
    _expect(isinstance(source, str) and source != "", "source", f"{source!r} is not a name")
    name = value.get("event")
    _expect(isinstance(name, str) and name != "", "event", f"{name!r} is not an event name")
    for key in ("pod", "node"):
        _opt(value, key, str, "")
    for key, types in TRUTH_FIELDS.get(str(name), {}).items():
        got = value.get(key)
        ok = isinstance(got, types) and not (isinstance(got, bool) and bool not in types)
        _expect(ok, key, f"{name} needs {key} ({types[0].__name__}), got {got!r}"[:200])
    if name == TruthEvent.RULES_PROGRAMMED:
        for i, ep in enumerate(value["endpoints"]):
            _expect(
                isinstance(ep, dict) and isinstance(ep.get("ip"), str),
                f"endpoints[{i}]",
                "expected an object with an 'ip' string",
            )
    if name == TruthEvent.LB_TARGETS_CHANGED:
        for i, target in enumerate(value["targets"]):
            _expect(isinstance(target, str), f"targets[{i}]", "expected a string")
    if name == TruthEvent.REQUEST_CAUSE:
        _expect(value["cause"] in set(Cause), "cause", f"{value['cause']!r} is not a Cause")
    rest = {k: v for k, v in value.items() if k not in {"ts_ns", "source", "event", "pod", "node"}}
    return {
        "ts_ns": ts,
        "source": source,
        "event": name,
        "pod": value.get("pod"),
        "node": value.get("node"),
        "fields": rest,
    }


def _scan_jsonl(
    path: str | os.PathLike[str],
    to_row: Callable[[dict[str, Any]], dict[str, Any]],
    columns: dict[str, str],
    order_by: str,
) -> EventsScan:
    rows: list[dict[str, Any]] = []
    problems: list[TraceError] = []
    name = str(path)
    with _collector_paused():
        for number, parsed in iter_jsonl(path):
            if isinstance(parsed, TraceError):
                problems.append(parsed)
                continue
            try:
                row = to_row(parsed)
            except _LineError as exc:
                problems.append(TraceError(name, f"line {number}", exc.message, field=exc.field))
                continue
            row["line"] = number
            rows.append(row)
    return EventsScan(_frame(rows, columns, order_by), problems)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a file's lines are parsed. Parsed JSON is trees,
    never cycles, so the collector has nothing to find in them; but every few hundred new dicts
    it runs, and its full passes walk every object parsed so far: 0.15 s of the 10,000-line
    watch of the 1M case (18 MB of JSON). Objects freed meanwhile are still freed (reference
    counting); the collector resumes as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _frame(rows: list[dict[str, Any]], columns: dict[str, str], order_by: str) -> pd.DataFrame:
    frame = _columns_frame(rows, columns)
    return frame.sort_values(order_by, kind="stable").reset_index(drop=True)


def _strict(scan: EventsScan, tolerant: bool) -> pd.DataFrame:
    if scan.problems and not tolerant:
        first = scan.problems[0]
        raise TraceError(first.path, first.location, first.message, first.field, kept=scan.frame)
    return scan.frame


def scan_truth(path: str | os.PathLike[str]) -> EventsScan:
    """Read truth.jsonl, keeping good lines and reporting bad ones."""
    return _scan_jsonl(path, truth_row, TRUTH_COLUMNS, "ts_ns")


def read_truth(path: str | os.PathLike[str], *, tolerant: bool = False) -> pd.DataFrame:
    """truth.jsonl as a frame of ``TRUTH_COLUMNS`` sorted by ts_ns (strict/tolerant as
    ``read_events``)."""
    return _strict(scan_truth(path), tolerant)
