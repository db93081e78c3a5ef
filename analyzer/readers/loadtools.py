"""Request logs of load tools → the requests table (``analyzer.schema.REQUESTS``).

A user who rolled out on their own cluster has their load tool's results, not rolltrace's
requests.parquet. Each reader here turns one tool's documented output into request rows
(formats and samples in docs/trace-format.md, "Request logs of load tools"):

- ``k6``: ``k6 run --out json=FILE``: one ``Point`` line per metric sample; the ``http_req_*``
  samples of one request share its end time and tags (k6 stamps every sample of a request with
  the request's end, ``Trail.EndTime``).
- ``vegeta``: ``vegeta encode --to json``: one result object per line (start ``timestamp``,
  ``latency`` in ns, ``code``, ``error``).
- ``parquet`` (alias ``locust``): rolltrace's own requests.parquet, which the Locust recorder
  (``loadgen.recorder``) writes for rolltrace's users and for any locustfile that imports
  ``loadgen.locustfile``.

k6 and vegeta record no client port, so their rows carry ``local_port`` NA and a provisional
connection per request (``conn_id`` = ``request_id``); ``rolltrace import`` joins them to the
packets by time and destination. Their error texts are Go's ``net`` errors, mapped to
``ErrorKind`` by ``error_kind_from_text``. A ``url`` whose host is a name (not an address) keeps
the name in ``remote_ip``; the importer replaces it with the Service's address.

Every damaged line is a ``Problem`` naming the file, the line (from 1) and the field; the line
is left out and the rest is read.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from analyzer.errors import TraceError
from analyzer.events import iter_jsonl
from analyzer.readers.requests import load_requests
from analyzer.rundir import Problem
from analyzer.schema import ErrorKind


class RequestFormat(StrEnum):
    """The request-log formats ``read_request_log`` understands (``--requests-format``)."""

    K6 = "k6"
    VEGETA = "vegeta"
    PARQUET = "parquet"
    LOCUST = "locust"  # the Locust recorder writes rolltrace's Parquet


@dataclass
class RequestLog:
    """A request log read into the requests table, and what the reader could not know."""

    frame: pd.DataFrame
    format: RequestFormat
    has_ports: bool  # the tool recorded each request's client port (joins to packets exactly)
    problems: list[Problem] = field(default_factory=list)


_PARQUET_MAGIC = b"PAR1"
MAX_DURATION_MS = 86_400_000.0
"""A day: no request of a rollout lasts longer; a larger value is not a request's duration."""
# A request's phases (at most four durations) are added to or taken from its logged time: the
# time must leave room for them within int64 ns since the epoch
_ROOM_NS = 4 * int(MAX_DURATION_MS * 1_000_000)
_LATEST_NS = 2**63 - 1 - _ROOM_NS
# k6's metrics that describe one HTTP request (https://grafana.com/docs/k6/latest/using-k6/metrics/reference/)
_K6_METRICS = (
    "http_req_duration",
    "http_req_blocked",
    "http_req_connecting",
    "http_req_tls_handshaking",
    "http_req_sending",
    "http_req_waiting",
    "http_req_receiving",
)
# k6's error codes (lib/netext/httpext/error_codes.go): dial timeout, refused, reset, timeout
_K6_ERROR_CODES = {
    "1211": ErrorKind.CONNECT_TIMEOUT,
    "1212": ErrorKind.REFUSED,
    "1220": ErrorKind.RESET,
    "1050": ErrorKind.READ_TIMEOUT,
}
_CONNECT_FAILURES = [
    k.value for k in (ErrorKind.REFUSED, ErrorKind.CONNECT_TIMEOUT, ErrorKind.UNREACHABLE)
]
# Go's net error texts, most specific first (both k6 and vegeta print them)
_ERROR_TEXTS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"connection refused", re.I), ErrorKind.REFUSED),
    (re.compile(r"no route to host|network is unreachable", re.I), ErrorKind.UNREACHABLE),
    (
        re.compile(r"dial.*(i/o timeout|deadline exceeded)|dial: i/o timeout", re.I),
        ErrorKind.CONNECT_TIMEOUT,
    ),
    (re.compile(r"connection reset by peer|broken pipe", re.I), ErrorKind.RESET),
    (re.compile(r"\bEOF\b|server closed idle connection|unexpected EOF", re.I), ErrorKind.EOF),
    (re.compile(r"timeout|deadline exceeded", re.I), ErrorKind.READ_TIMEOUT),
)


def error_kind_from_text(text: str, status: int | None) -> ErrorKind:
    """The ``ErrorKind`` of one request from its HTTP status and a tool's error text: a
    status means a response arrived, and its class decides (vegeta also puts "503 Service
    Unavailable" in ``error``); without one, the Go ``net`` error names what the socket saw."""
    if status is not None and status >= 100:
        if status >= 500:
            return ErrorKind.HTTP_5XX
        return ErrorKind.HTTP_4XX if status >= 400 else ErrorKind.OK
    for pattern, kind in _ERROR_TEXTS:
        if pattern.search(text):
            return kind
    return ErrorKind.OTHER


def detect_format(path: str | os.PathLike[str]) -> RequestFormat:
    """Which tool wrote ``path``: Parquet by its magic bytes, k6 and vegeta by the keys of the
    first JSON line. A file nothing matches is a ``TraceError`` asking for the format."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(0)
            first = next((line for line in handle if line.strip()), b"")
    except OSError as exc:
        raise TraceError(name, "file", f"cannot read: {exc.strerror or exc}") from None
    if head == _PARQUET_MAGIC:
        return RequestFormat.PARQUET
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        if value.get("type") in {"Metric", "Point"} and "metric" in value:
            return RequestFormat.K6
        if {"timestamp", "latency", "code"} <= value.keys():
            return RequestFormat.VEGETA
    raise TraceError(
        name,
        "line 1",
        "cannot tell which tool wrote this file (not Parquet, not k6 --out json, not vegeta "
        "encode --to json); pass --requests-format",
    )


def read_request_log(
    path: str | os.PathLike[str], fmt: RequestFormat | str | None = None
) -> RequestLog:
    """Read a load tool's request log (``fmt`` None: detect it) as the requests table.

    Raises ``TraceError`` when nothing usable is left (unknown format, no request at all);
    damaged lines are returned as ``problems`` and left out."""
    chosen = RequestFormat(fmt) if fmt is not None else detect_format(path)
    if chosen in {RequestFormat.PARQUET, RequestFormat.LOCUST}:
        frame, problems = load_requests(path)
        errors = [p for p in problems if p.severity == "error"]
        bad_rows = [int(p.location.split()[1]) for p in errors if p.location.startswith("row ")]
        frame = frame.drop(index=bad_rows).reset_index(drop=True)
        return RequestLog(frame, chosen, bool(frame["local_port"].notna().any()), errors)
    reader = _read_k6 if chosen is RequestFormat.K6 else _read_vegeta
    frame, problems = reader(Path(path))
    if frame.empty:
        raise TraceError(str(path), "file", f"no HTTP request in this {chosen.value} file")
    return RequestLog(frame, chosen, False, problems)


def _line_problem(path: Path, line: int, fieldname: str | None, message: str) -> Problem:
    return Problem(str(path), f"line {line}", fieldname, message)


def _json_lines(path: Path, problems: list[Problem]) -> list[tuple[int, dict[str, Any]]]:
    """Every parsable JSON object line with its 1-based number; the others become problems."""
    kept: list[tuple[int, dict[str, Any]]] = []
    for number, value in iter_jsonl(path):
        if isinstance(value, TraceError):
            if number == 0:
                raise value
            problems.append(_line_problem(path, number, value.field, value.message))
        else:
            kept.append((number, value))
    return kept


def _k6_point(number: int, value: dict[str, Any]) -> tuple[str, str, float, dict[str, Any]]:
    """(metric, time, value, tags) of one k6 ``Point`` line, or ValueError naming the field."""
    data = value.get("data")
    if not isinstance(data, dict):
        raise ValueError("data", "expected an object")
    time, sample, tags = data.get("time"), data.get("value"), data.get("tags") or {}
    if not isinstance(time, str):
        raise ValueError("data.time", "expected an RFC 3339 time")
    if isinstance(sample, bool) or not isinstance(sample, int | float):
        raise ValueError("data.value", "expected a number")
    if not 0 <= sample <= MAX_DURATION_MS:  # NaN fails too
        raise ValueError("data.value", f"{sample!r} is not a duration in ms")
    if not isinstance(tags, dict):
        raise ValueError("data.tags", "expected an object")
    return str(value["metric"]), time, float(sample), tags


def _read_k6(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """k6 ``--out json``: pivot each request's ``http_req_*`` Points into one row."""
    problems: list[Problem] = []
    rows: list[tuple[int, str, str, float, str]] = []
    for number, value in _json_lines(path, problems):
        if value.get("type") != "Point" or value.get("metric") not in _K6_METRICS:
            continue  # Metric declarations, checks, iterations, custom metrics
        try:
            metric, time, sample, tags = _k6_point(number, value)
        except ValueError as exc:
            problems.append(_line_problem(path, number, *exc.args))
            continue
        rows.append((number, metric, time, sample, json.dumps(tags, sort_keys=True)))
    points = pd.DataFrame(rows, columns=["line", "metric", "time", "value", "tags"])
    # one request = one (end time, tags) pair; the n-th sample of a metric there is request n
    points["nth"] = points.groupby(["time", "tags", "metric"], sort=False).cumcount()
    grouped = points.groupby(["time", "tags", "nth", "metric"], sort=False)
    wide = grouped["value"].first().unstack("metric")
    first_line = points.groupby(["time", "tags", "nth"], sort=False)["line"].min()
    wide = wide.reindex(columns=list(_K6_METRICS)).assign(line=first_line).reset_index()
    wide = wide[wide["http_req_duration"].notna()].sort_values("line", kind="stable")
    end_ns, bad = _rfc3339_ns(wide["time"])
    for line in wide.loc[bad, "line"]:
        problems.append(_line_problem(path, int(line), "data.time", "not an RFC 3339 time"))
    wide, end_ns = wide[~bad], end_ns[~bad]
    return _k6_frame(wide, end_ns), problems


def _ms_ns(series: pd.Series) -> np.ndarray:
    return np.round(series.fillna(0.0).to_numpy(dtype="float64") * 1e6).astype("int64")


def _k6_frame(wide: pd.DataFrame, end_ns: np.ndarray) -> pd.DataFrame:
    """Request rows from k6's per-request timings: the connection phases come before
    ``http_req_duration`` (sending + waiting + receiving), so the request began at
    end − duration − connecting − TLS; a request that connected opened its connection."""
    tags = [json.loads(text) for text in wide["tags"]]
    connecting, tls = _ms_ns(wide["http_req_connecting"]), _ms_ns(wide["http_req_tls_handshaking"])
    start_ns = end_ns - _ms_ns(wide["http_req_duration"]) - connecting - tls
    status = [_int_or_none(t.get("status")) for t in tags]
    kinds = [
        _K6_ERROR_CODES.get(str(t.get("error_code", "")))
        or error_kind_from_text(str(t.get("error") or ""), code)
        for t, code in zip(tags, status, strict=True)
    ]
    first_byte = end_ns - _ms_ns(wide["http_req_receiving"])
    answered = np.array([code not in (None, 0) for code in status], dtype=bool)
    return _request_frame(
        start_ns=start_ns,
        end_ns=end_ns,
        connect_ns=np.where(connecting > 0, start_ns + connecting, -1),
        first_byte_ns=np.where(answered, first_byte, -1),
        # a request whose connect failed was opening a connection too
        conn_new=(connecting > 0) | np.isin([k.value for k in kinds], _CONNECT_FAILURES),
        urls=[str(t.get("url") or t.get("name") or "") for t in tags],
        methods=[str(t.get("method") or "GET") for t in tags],
        status=status,
        kinds=kinds,
        details=[str(t.get("error") or "") or None for t in tags],
    )


def _int_or_none(value: object) -> int | None:
    """An HTTP status from k6's ``status`` tag; "0" (no response) and anything else: None."""
    text = str(value) if value is not None else ""
    ok = text.isascii() and text.isdigit() and len(text) == 3
    return int(text) if ok and 100 <= int(text) <= 599 else None


def _rfc3339_ns(times: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Exact ns since the epoch of RFC 3339 texts (offsets and 9-digit fractions kept), and a
    mask of the unparsable ones (their ns is 0)."""
    parsed = pd.to_datetime(times.astype("string"), format="ISO8601", utc=True, errors="coerce")
    # before 1970 or so late that a request's phases would not fit: no capture shares it (and a
    # year pandas holds only in µs would not convert to ns)
    earliest, latest = pd.Timestamp(_ROOM_NS, tz="UTC"), pd.Timestamp(_LATEST_NS, tz="UTC")
    bad = (parsed.isna() | (parsed < earliest) | (parsed > latest)).to_numpy(dtype=bool)
    ns = parsed.where(~bad, earliest).dt.as_unit("ns").astype("int64").to_numpy(dtype="int64")
    return np.where(bad, 0, ns), bad


def _read_vegeta(path: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """vegeta ``encode --to json``: one result per line; the request began at ``timestamp``
    and took ``latency`` ns."""
    problems: list[Problem] = []
    rows: list[tuple[Any, ...]] = []
    for number, value in _json_lines(path, problems):
        try:
            rows.append((number, *_vegeta_fields(value)))
        except ValueError as exc:
            problems.append(_line_problem(path, number, *exc.args))
    columns = ["line", "timestamp", "latency", "code", "error", "method", "url"]
    table = pd.DataFrame(rows, columns=columns)
    start_ns, bad = _rfc3339_ns(table["timestamp"])
    for line in table.loc[bad, "line"]:
        problems.append(_line_problem(path, int(line), "timestamp", "not an RFC 3339 time"))
    table, start_ns = table[~bad], start_ns[~bad]
    status = [code or None for code in table["code"]]
    end_ns = start_ns + table["latency"].to_numpy(dtype="int64")
    return _request_frame(
        start_ns=start_ns,
        end_ns=end_ns,
        connect_ns=np.full(len(table), -1, dtype="int64"),
        first_byte_ns=np.full(len(table), -1, dtype="int64"),
        conn_new=np.ones(len(table), dtype=bool),
        urls=list(table["url"]),
        methods=list(table["method"]),
        status=status,
        kinds=[error_kind_from_text(e, s) for e, s in zip(table["error"], status, strict=True)],
        details=[e or None for e in table["error"]],
    ), problems


def _vegeta_fields(value: dict[str, Any]) -> tuple[str, int, int, str, str, str]:
    """(timestamp, latency, code, error, method, url), or ValueError(field, message)."""
    timestamp, latency, code = value.get("timestamp"), value.get("latency"), value.get("code")
    texts = [value.get(key) or "" for key in ("error", "method", "url")]
    if not isinstance(timestamp, str):
        raise ValueError("timestamp", "expected an RFC 3339 time")
    for key, number in (("latency", latency), ("code", code)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(key, f"expected an integer, got {type(number).__name__}")
    assert isinstance(latency, int) and isinstance(code, int)  # for mypy, checked above
    if not 0 <= latency <= MAX_DURATION_MS * 1_000_000:
        raise ValueError("latency", f"{latency} is not a duration in ns")
    if not (code == 0 or 100 <= code <= 599):
        raise ValueError("code", f"{code} is not an HTTP status")
    for key, text in zip(("error", "method", "url"), texts, strict=True):
        if not isinstance(text, str):
            raise ValueError(key, f"expected a string, got {type(text).__name__}")
    error, method, url = (str(t) for t in texts)
    return timestamp, latency, code, error, method or "GET", url


def _destination(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a request URL; a host that is a name stays a name."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "", 0, url
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):  # a name stays a name
        host = str(ipaddress.ip_address(host))
    return host, port, parts.path or "/"


def _request_frame(
    *,
    start_ns: np.ndarray,
    end_ns: np.ndarray,
    connect_ns: np.ndarray,
    first_byte_ns: np.ndarray,
    conn_new: np.ndarray,
    urls: list[str],
    methods: list[str],
    status: list[int | None],
    kinds: list[ErrorKind],
    details: list[str | None],
) -> pd.DataFrame:
    """The requests table of a tool that records no port: one provisional connection per
    request (``conn_id`` = ``request_id``) until the importer joins it to the packets; a
    reused connection's position on it is unknown, so ``conn_seq`` is 2 there."""
    count = len(start_ns)
    destinations = [_destination(url) for url in urls]
    ids = np.arange(count, dtype="int64")
    end_ns = np.maximum(end_ns, start_ns)
    conn_new = np.asarray(conn_new, dtype=bool)
    missing = pd.array([pd.NA] * count, dtype="string")
    frame = pd.DataFrame(
        {
            "request_id": ids,
            "user_kind": pd.array(np.where(conn_new, "new-connection", "keepalive"), "string"),
            "scheduled_ns": start_ns,
            "start_ns": start_ns,
            "connect_ns": _optional_ns(connect_ns, start_ns, end_ns),
            "first_byte_ns": _optional_ns(first_byte_ns, start_ns, end_ns),
            "end_ns": end_ns,
            "local_ip": missing,
            "local_port": pd.array([pd.NA] * count, dtype="Int64"),
            "remote_ip": pd.array([d[0] for d in destinations], dtype="string"),
            "remote_port": np.array([d[1] for d in destinations], dtype="int64"),
            "conn_id": ids,
            "conn_new": conn_new,
            "conn_seq": np.where(conn_new, 1, 2).astype("int64"),
            "method": pd.array(methods, dtype="string"),
            "path": pd.array([d[2] for d in destinations], dtype="string"),
            "status_code": pd.array(status, dtype="Int64"),
            "error_kind": pd.array([k.value for k in kinds], dtype="string"),
            "error_detail": pd.array(details, dtype="string"),
            "pod": missing.copy(),
            "pod_version": missing.copy(),
        }
    )
    return frame


def _optional_ns(
    values: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray
) -> pd.arrays.IntegerArray:
    """A nullable time (-1: none) within the request (a tool's phases, rounded to its
    resolution or inconsistent, may reach past either end)."""
    return pd.arrays.IntegerArray(np.clip(values, start_ns, end_ns), values < 0)
