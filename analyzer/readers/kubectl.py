"""kubectl watch streams → events.jsonl records, with times derived from the objects themselves.

``kubectl get KIND -w -o json --output-watch-events`` prints one compact JSON watch event per line
(``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}``), one kind per stream,
with or without ``-n`` (``-A`` mixes namespaces: callers pick theirs). Without
``--output-watch-events`` it prints the bare objects, pretty-printed: also read, but a deletion
then looks like any other change (see ``read_kubectl_streams``).

kubectl records no receive time, so each record's time comes from the objects, with their real
semantics:

* a field written by the change an event shows dates it: a new condition's
  ``lastTransitionTime``/``lastUpdateTime``, a container's ``startedAt``/``finishedAt``, the
  Pod's ``startTime``, a new deletion request (``deletionTimestamp`` is *now + grace period*,
  so the request was at ``deletionTimestamp − deletionGracePeriodSeconds``). These have
  one-second resolution (a fraction, when the writer gave one, narrows it), so the change
  happened within a second after the stamp: the record's ``time_source`` is ``object-field``;
* every timestamp an object carries is a lower bound of the moment that version was written
  (``creationTimestamp``, old conditions, the EndpointSlice's
  ``endpoints.kubernetes.io/last-change-trigger-time``, ``managedFields[].time``);
* all streams' events are put in ``metadata.resourceVersion`` order. We rely on resourceVersions
  being etcd revisions, integers comparable across kinds in one cluster, although upstream asks
  clients to treat them as opaque; when one is not an integer, each stream keeps its own (file)
  order and only bounds within itself. In that order an event happened after every earlier
  event's lower bound and before every later event's upper bound, which bounds the events no
  field dates (an EndpointSlice update, a ReplicaSet's status): ``time_source`` ``bounded``.

Each record carries its estimate as ``recv_ns`` (so the events readers order and use it like a
receive time), the bounds as ``earliest_ns``/``latest_ns`` (null: unbounded on that side) and the
``time_source``. Estimates never decrease in resourceVersion order, so the analysis sees the
transitions in the order the API server made them. An event no field dates is put as early as
its bounds allow (right after the event before it): such events are reactions (an EndpointSlice
following a Pod's readiness) that land milliseconds after their cause.

Damaged input never raises: each unusable line is a ``TraceError`` naming the file, line and
field, collected in ``problems``; the importer marks the run degraded with them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate
from pathlib import Path
from typing import Any

from analyzer.errors import TraceError
from analyzer.events import _encodable, event_problem, iter_jsonl
from kubewire import parse_time

#: run.json key under which the importer records how the watch's times were obtained
#: (``KubectlStreams.event_times``); present means the event times are coarse.
EVENT_TIMES_KEY = "event_times"
WATCH_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"

_SECOND_NS = 1_000_000_000
#: The kubelet learns of a container start or exit at its next PLEG relist (upstream
#: ``genericPlegRelistPeriod``: one second), so a status carrying ``startedAt``/``finishedAt``
#: is written up to this long after the runtime's stamp, on top of the stamp's resolution.
PLEG_RELIST_NS = _SECOND_NS
#: Stamps must fit int64 ns (as events.jsonl's times) with room for a resolution and a lag.
_LATEST_STAMP_S = (2**63 - 1) / 1e9 - 10
_NEVER_BEFORE = -(2**63)  # sentinel: no lower bound
_NEVER_AFTER = 2**63  # sentinel: no upper bound
_REVISION = re.compile(r"[0-9]{1,18}")  # ASCII digits only, within int64
_FRACTION = re.compile(r"T\d\d:\d\d:\d\d\.(\d+)")
_CONTAINER_GROUPS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")


class TimeSource(StrEnum):
    """How a watch record's time was obtained (``time_source``; absent means ``receive``)."""

    RECEIVE = "receive"  # stamped by the watcher when the bytes arrived (rolltrace's own)
    OBJECT_FIELD = "object-field"  # a timestamp the change itself wrote (1 s resolution)
    BOUNDED = "bounded"  # no field dates it: between its neighbours in resourceVersion order


@dataclass(frozen=True)
class _Stamp:
    """A time an object field gives: ``ns`` (truncated to ``resolution_ns``), and how long after
    the stamped moment the write carrying it may land (``lag_ns``); None: a lower bound only, it
    does not date the change that shows it."""

    ns: int
    resolution_ns: int
    lag_ns: int | None

    @property
    def latest_write_ns(self) -> int:
        return self.ns + self.resolution_ns + (self.lag_ns or 0)


@dataclass
class _Event:
    """One usable watch event, where it came from and what its object's timestamps say."""

    stream: int
    path: str
    line: int
    type: str
    kind: str
    obj: dict[str, Any]
    stamps: dict[str, _Stamp]
    revision: int | None
    lower: int = _NEVER_BEFORE  # what the object says, then its bounds in order
    upper: int = _NEVER_AFTER
    dated: bool = False  # a field this change wrote dates it
    acts: bool = False  # a spec change (generation grew): a cause controllers react to
    estimate: int = 0


@dataclass
class KubectlStreams:
    """What ``read_kubectl_streams`` made: events.jsonl records in order, one located
    ``TraceError`` per unusable line, and notes for people on how far to trust the times."""

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[TraceError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def event_times(self) -> dict[str, Any]:
        """The run.json entry (under ``EVENT_TIMES_KEY``) that marks the run's event times
        coarse and says how coarse, for the report to state."""
        sources = [r["time_source"] for r in self.records]
        spans = sorted(
            (r["latest_ns"] - r["earliest_ns"]) / 1e6
            for r in self.records
            if r["earliest_ns"] is not None and r["latest_ns"] is not None
        )
        return {
            "source": "kubectl",
            "coarse": True,
            "records": len(self.records),
            "object_field": sources.count(TimeSource.OBJECT_FIELD.value),
            "bounded": sources.count(TimeSource.BOUNDED.value),
            "unbounded_side": len(self.records) - len(spans),
            "median_uncertainty_ms": round(spans[len(spans) // 2], 1) if spans else None,
            "max_uncertainty_ms": round(spans[-1], 1) if spans else None,
            "notes": list(self.notes),
            "precise_alternative": "rolltrace watch (records receive times)",
        }


def looks_like_kubectl_stream(path: str | os.PathLike[str]) -> bool:
    """Whether a watch file is kubectl's output rather than events.jsonl: its first object has
    no ``recv_ns`` (for importers choosing a reader; a damaged file reads as events.jsonl)."""
    first = _first_line(Path(path))
    if first == b"{":
        return True  # kubectl's pretty-printed objects
    try:
        value = json.loads(first or b"")
    except ValueError:
        return False
    return isinstance(value, dict) and "recv_ns" not in value and "object" in value


def read_kubectl_streams(
    paths: Sequence[str | os.PathLike[str]], namespace: str | None = None
) -> KubectlStreams:
    """Read kubectl watch streams (one per kind) into events.jsonl records, time-ordered.

    ``namespace``: keep only objects of that namespace (every stream's events still bound the
    times). An event seen in two streams (``pods`` with and without ``-A``) is kept once.
    """
    result = KubectlStreams()
    events: list[_Event] = []
    for stream, path in enumerate(paths):
        events += _read_stream(Path(path), stream, result)
    events = _unique(events)
    ordered = _order(events, result)
    for event in _timed(ordered, result):
        meta = event.obj["metadata"]
        if namespace is not None and meta.get("namespace") not in (namespace, None):
            continue
        result.records.append(_record(event))
    return result


# --------------------------------------------------------------------------------------------
# reading the streams


def _read_stream(path: Path, stream: int, result: KubectlStreams) -> list[_Event]:
    """Every usable event of one stream; a problem per unusable line."""
    name = str(path)
    pretty = _first_line(path) == b"{"  # kubectl pretty-prints each object from a "{" line
    values = _pretty_values(path) if pretty else iter_jsonl(path)
    events: list[_Event] = []
    seen: set[str] = set()
    for line, value in values:
        if isinstance(value, TraceError):
            result.problems.append(value)
            continue
        for etype, obj in _watch_events(value, pretty, seen):
            event = _event(name, stream, line, etype, obj, result)
            if event is not None:
                events.append(event)
    if pretty and events:
        result.notes.append(
            f"{name}: printed without --output-watch-events, so deletions are not marked "
            "(a DELETED looks like a MODIFIED): when Pods were removed is unknown"
        )
    return events


def _first_line(path: Path) -> bytes | None:
    """The first non-blank line, stripped; None when there is none or the file is unreadable
    (the reader then reports it)."""
    try:
        with path.open("rb") as handle:
            return next((raw.strip() for raw in handle if raw.strip()), None)
    except OSError:
        return None


def _pretty_values(path: Path) -> Iterator[tuple[int, dict[str, Any] | TraceError]]:
    """Pretty-printed JSON objects one after the other (kubectl without
    ``--output-watch-events``); after a damaged one, reading resumes at the next line that
    opens an object in column 0, as kubectl prints each."""
    name = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        yield 0, TraceError(name, "file", f"cannot read: {exc.strerror or exc}")
        return
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        yield line, TraceError(name, f"line {line}", "not UTF-8")
        return
    decoder = json.JSONDecoder()
    at, line, counted = 0, 1, 0
    while (at := _skip_space(text, at)) < len(text):
        line, counted = line + text.count("\n", counted, at), at
        start = at
        try:
            value, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError) as exc:
            yield line, TraceError(name, f"line {line}", f"not valid JSON: {exc}"[:300])
            resume = text.find("\n{", at + 1)
            at = len(text) if resume < 0 else resume + 1
            continue
        if not isinstance(value, dict):
            yield line, TraceError(name, f"line {line}", "expected a JSON object")
        elif "\\ud" in text[start:at].lower() and not _encodable(value):
            yield line, TraceError(name, f"line {line}", "unpaired UTF-16 surrogate escape")
        else:
            yield line, value


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _watch_events(value: dict[str, Any], pretty: bool, seen: set[str]) -> list[tuple[Any, Any]]:
    """(type, object) pairs a parsed value holds, unchecked (``_event`` checks them): a watch
    event, or in the pretty form a bare object (ADDED the first time an object is seen,
    MODIFIED after) or a ``List``'s items."""
    if not pretty or "object" in value:
        return [(value.get("type"), value.get("object"))]
    items = value.get("items") if value.get("kind") == "List" else [value]
    pairs: list[tuple[Any, Any]] = []
    for item in items if isinstance(items, list) else [items]:
        meta = item.get("metadata") if isinstance(item, dict) else None
        key = (
            repr([item.get("kind"), meta.get("namespace"), meta.get("name")])
            if (isinstance(item, dict) and isinstance(meta, dict))
            else ""
        )
        pairs.append(("MODIFIED" if key in seen else "ADDED", item))
        seen.add(key)
    return pairs


def _event(
    path: str, stream: int, line: int, etype: Any, obj: Any, result: KubectlStreams
) -> _Event | None:
    """Check one watch event; None (and a located problem unless it is a bookmark) when it
    carries no usable object."""
    where = f"line {line}"
    if etype not in WATCH_TYPES:
        shown = f"{etype!r}"[:80]
        result.problems.append(
            TraceError(path, where, f"{shown} is not one of {', '.join(WATCH_TYPES)}", "type")
        )
        return None
    if etype == "BOOKMARK":
        return None
    if etype == "ERROR":
        message = obj.get("message") if isinstance(obj, dict) else None
        text = f"the watch reported an error, events after it may be missing: {message!r}"
        result.problems.append(TraceError(path, where, text[:300], "object.message"))
        return None
    if not isinstance(obj, dict):
        result.problems.append(TraceError(path, where, "missing or not a JSON object", "object"))
        return None
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        result.problems.append(TraceError(path, where, "missing or not a kind name", "object.kind"))
        return None
    bad = event_problem({"type": etype, "recv_ns": 0, "kind": kind, "object": obj})
    stamps, bad_stamp = _stamps(obj) if bad is None else ({}, bad)
    if bad_stamp is not None:
        result.problems.append(TraceError(path, where, bad_stamp[1], bad_stamp[0]))
        return None
    return _Event(stream, path, line, etype, kind, obj, stamps, _revision(obj))


def _revision(obj: dict[str, Any]) -> int | None:
    """The resourceVersion as the etcd revision it is (an int64), when it is one."""
    text = obj["metadata"].get("resourceVersion")
    return int(text) if isinstance(text, str) and _REVISION.fullmatch(text) else None


# --------------------------------------------------------------------------------------------
# what an object's timestamps say


class _BadStamp(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


def _stamp_ns(text: Any, field: str) -> tuple[int, int] | None:
    """(ns, resolution ns) of an RFC 3339 field; None when unset."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise _BadStamp(field, f"expected an RFC 3339 string, got {type(text).__name__}")
    try:
        seconds = parse_time(text)
    except (ValueError, OverflowError, OSError):
        raise _BadStamp(field, f"{text[:60]!r} is not an RFC 3339 time") from None
    if seconds is None or not 0 <= seconds < _LATEST_STAMP_S:
        raise _BadStamp(field, f"{text[:60]!r} is out of range")
    fraction = _FRACTION.search(text)
    digits = min(len(fraction.group(1)), 9) if fraction else 0
    return int(seconds * 1e9), _SECOND_NS // 10**digits


def _stamps(obj: dict[str, Any]) -> tuple[dict[str, _Stamp], tuple[str, str] | None]:
    """Every timestamp of an object, keyed by what it dates (condition type, container name),
    or the (field, message) of the first unreadable one."""
    found: dict[str, _Stamp] = {}

    def add(key: str, text: Any, field: str, lag_ns: int | None = 0, shift_ns: int = 0) -> None:
        stamp = _stamp_ns(text, field)
        if stamp is not None:
            ns, resolution = stamp
            found[key] = _Stamp(max(0, ns - shift_ns), resolution, lag_ns)

    try:
        _metadata_stamps(obj["metadata"], add)
        status = obj.get("status")
        if isinstance(status, dict):
            _status_stamps(status, add)
    except _BadStamp as bad:
        return {}, (bad.field, bad.message)
    return found, None


def _metadata_stamps(meta: dict[str, Any], add: Any) -> None:
    add("created", meta.get("creationTimestamp"), "object.metadata.creationTimestamp", None)
    grace = meta.get("deletionGracePeriodSeconds")
    grace_ns = grace * _SECOND_NS if isinstance(grace, int) and 0 <= grace < 2**31 else 0
    add(
        "deletion",
        meta.get("deletionTimestamp"),
        "object.metadata.deletionTimestamp",
        shift_ns=grace_ns,  # deletionTimestamp is the request's time + the grace period
    )
    annotations = meta.get("annotations") or {}
    field = f"object.metadata.annotations.{TRIGGER_TIME_ANNOTATION}"
    add("trigger", annotations.get(TRIGGER_TIME_ANNOTATION), field, None)
    managed = meta.get("managedFields")
    for i, entry in enumerate(managed if isinstance(managed, list) else []):
        if isinstance(entry, dict):
            add(
                f"managed[{i}]", entry.get("time"), f"object.metadata.managedFields[{i}].time", None
            )


def _status_stamps(status: dict[str, Any], add: Any) -> None:
    add("startTime", status.get("startTime"), "object.status.startTime")
    conditions = status.get("conditions")
    for i, cond in enumerate(conditions if isinstance(conditions, list) else []):
        if not isinstance(cond, dict):
            continue
        for key in ("lastTransitionTime", "lastUpdateTime"):
            where = f"object.status.conditions[{i}].{key}"
            add(f"condition[{cond.get('type')}].{key}", cond.get(key), where)
    for group in _CONTAINER_GROUPS:
        statuses = status.get(group)
        for i, cs in enumerate(statuses if isinstance(statuses, list) else []):
            if isinstance(cs, dict):
                _container_stamps(cs, f"{group}[{cs.get('name', i)}]", f"{group}[{i}]", add)


def _container_stamps(cs: dict[str, Any], key: str, where: str, add: Any) -> None:
    for state_key in ("state", "lastState"):
        state = cs.get(state_key)
        if not isinstance(state, dict):
            continue
        for phase, fields in (("running", ("startedAt",)), ("terminated", ("finishedAt",))):
            detail = state.get(phase)
            if not isinstance(detail, dict):
                continue
            for name in fields:
                field = f"object.status.{where}.{state_key}.{phase}.{name}"
                add(f"{key}.{state_key}.{phase}.{name}", detail.get(name), field, PLEG_RELIST_NS)


# --------------------------------------------------------------------------------------------
# ordering and timing


def _identity(event: _Event) -> tuple[str, str]:
    meta = event.obj["metadata"]
    uid = meta.get("uid")
    name = uid if isinstance(uid, str) and uid else f"{meta.get('namespace')}/{meta['name']}"
    return event.kind, name


def _unique(events: list[_Event]) -> list[_Event]:
    """Drop an object version already read from another stream (same kind, object and
    resourceVersion): ``pods`` watched with and without ``-A`` overlap."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for event in events:
        version = event.obj["metadata"].get("resourceVersion")
        key = (*_identity(event), version if isinstance(version, str) else f"#{id(event)}")
        if key not in seen:
            seen.add(key)
            kept.append(event)
    return kept


def _order(events: list[_Event], result: KubectlStreams) -> list[list[_Event]]:
    """The events in the order the API server made them: one sequence by resourceVersion, or,
    when some resourceVersion is not an integer, one sequence per stream in file order."""
    if all(e.revision is not None for e in events):
        return [sorted(events, key=lambda e: (e.revision, e.stream, e.line))]
    odd = next(e for e in events if e.revision is None)
    result.notes.append(
        f"{odd.path}: line {odd.line}: resourceVersion is not an integer, so streams are not "
        "ordered against each other: each is ordered by its file and timed on its own"
    )
    streams: dict[int, list[_Event]] = {}
    for event in events:
        streams.setdefault(event.stream, []).append(event)
    return list(streams.values())


def _timed(sequences: list[list[_Event]], result: KubectlStreams) -> list[_Event]:
    """Time every sequence (see the module docstring) and merge them by estimated time."""
    merged: list[_Event] = []
    for sequence in sequences:
        _own_bounds(sequence)
        merged += _bound(sequence, result)
    return sorted(merged, key=lambda e: e.estimate) if len(sequences) > 1 else merged


def _own_bounds(sequence: list[_Event]) -> None:
    """What each event's own object says: written after all its timestamps, and within the
    resolution (and report lag) of the newest field this change wrote (none on an object's first
    appearance: a listed object may be in a state reached long after its last stamp)."""
    previous: dict[tuple[str, str], _Event] = {}
    for event in sequence:
        key = _identity(event)
        before = previous.get(key)
        previous[key] = event
        if event.stamps:
            event.lower = max(s.ns for s in event.stamps.values())
        if before is None:
            continue
        event.acts = _generation(event) > _generation(before)
        written = [
            s for k, s in event.stamps.items() if s.lag_ns is not None and before.stamps.get(k) != s
        ]
        if written:
            newest = max(written, key=lambda s: s.ns)
            if newest.latest_write_ns >= event.lower:  # else it did not date this write
                event.upper, event.dated = newest.latest_write_ns, True
                event.estimate = newest.ns + newest.resolution_ns // 2


def _generation(event: _Event) -> int:
    value = event.obj["metadata"].get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _bound(sequence: list[_Event], result: KubectlStreams) -> list[_Event]:
    """Bound each event by its neighbours in order and estimate a time that never decreases
    (replacing ``lower``/``upper`` by the bounds); returns the events that could be timed.

    A dated event's estimate is the middle of its stamp's resolution: the moment the field
    records (the Pod became Ready, the container exited), not when the API heard of it. An
    undated one is a reaction to the event before it (placed as early as its bounds allow),
    unless it changed a spec (a rollout's trigger, a scale): controllers react to it within
    milliseconds, so it is placed with the next dated event."""
    earliest = list(accumulate((e.lower for e in sequence), max))
    latest = list(accumulate((e.upper for e in reversed(sequence)), min))[::-1]
    next_dated = _next_dated_estimates(sequence)
    timed: list[_Event] = []
    estimate = _NEVER_BEFORE
    contradictions = 0
    for event, low, high, then in zip(sequence, earliest, latest, next_dated, strict=True):
        if low == _NEVER_BEFORE and high == _NEVER_AFTER:
            text = "no timestamp in any stream bounds this event: its time is unknown"
            result.problems.append(TraceError(event.path, f"line {event.line}", text))
            continue
        if low > high:
            contradictions += 1
            low, high = high, low
        if event.dated:
            guess = event.estimate
        elif (event.acts and then != _NEVER_AFTER) or low == _NEVER_BEFORE:
            guess = min(then, high)
        else:
            guess = low
        estimate = max(estimate, min(max(guess, low), high))
        event.lower, event.upper, event.estimate = low, max(high, estimate), estimate
        timed.append(event)
    if contradictions:
        result.notes.append(
            f"{contradictions} events' timestamps contradict their resourceVersion order "
            "(clocks of nodes and API server apart, or a late status write): bounds widened"
        )
    return timed


def _next_dated_estimates(sequence: list[_Event]) -> list[int]:
    """For each event, the estimate of the first dated event at or after it (or none)."""
    found, upcoming = [], _NEVER_AFTER
    for event in reversed(sequence):
        upcoming = event.estimate if event.dated else upcoming
        found.append(upcoming)
    return found[::-1]


def _record(event: _Event) -> dict[str, Any]:
    """The events.jsonl record of a timed event (docs/trace-format.md)."""
    return {
        "type": event.type,
        "recv_ns": event.estimate,
        "kind": event.kind,
        "object": event.obj,
        "time_source": (TimeSource.OBJECT_FIELD if event.dated else TimeSource.BOUNDED).value,
        "earliest_ns": None if event.lower == _NEVER_BEFORE else event.lower,
        "latest_ns": None if event.upper == _NEVER_AFTER else event.upper,
    }
