"""Writes one row per request, in the requests.parquet schema, from Locust's ``request`` event.

The recorder is a plain listener on ``environment.events.request`` (Locust's extension point),
so it works the same under the headless runner, distributed workers and the web UI. Rows are
kept as column lists and flushed to Parquet in batches because per-row writes would cost more
than the requests themselves; ``bench/loadgen_recorder.py`` measures the overhead.

The column list mirrors ``analyzer.schema.REQUESTS``; loadgen may not import the analyzer
(docs/architecture.md#rooms-and-import-rules), so ``tests/loadgen/test_runner.py`` checks the
written file against that schema.

Requests of a user's own locustfile (``HttpUser``, ``FastHttpUser``) carry none of those wire
details; they are recorded from Locust's own event fields (``foreign_row``). One line attaches
the recorder to any locustfile: ``import loadgen.locustfile`` (it registers the hooks and the
``--rt-output`` option; its user classes stay out of the importing file's namespace).

Every ``progress_interval`` seconds a small JSON file (totals and the last second's counts) is
rewritten next to the output, for the runner's live display. The first is written when the
recorder starts, as Locust starts its users: it tells the runner the load has begun.
"""

from __future__ import annotations

import json
import operator
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loadgen.httpclient import CONNECT_ERRORS, IO_ERRORS, classify_status

COLUMNS: dict[str, pa.DataType] = {
    "request_id": pa.int64(),
    "user_kind": pa.string(),
    "scheduled_ns": pa.int64(),
    "start_ns": pa.int64(),
    "connect_ns": pa.int64(),
    "first_byte_ns": pa.int64(),
    "end_ns": pa.int64(),
    "local_ip": pa.string(),
    "local_port": pa.int64(),
    "remote_ip": pa.string(),
    "remote_port": pa.int64(),
    "conn_id": pa.int64(),
    "conn_new": pa.bool_(),
    "conn_seq": pa.int64(),
    "method": pa.string(),
    "path": pa.string(),
    "status_code": pa.int64(),
    "error_kind": pa.string(),
    "error_detail": pa.string(),
    "pod": pa.string(),
    "pod_version": pa.string(),
}
SCHEMA = pa.schema(list(COLUMNS.items()))
# Distributed workers number requests and connections independently; a worker's index is put
# in the high bits so ids stay unique once the parts are merged.
_WORKER_ID_SHIFT = 40


# Columns the users put in each request event's context, in file order; the recorder assigns
# request_id itself. Extracting them with one C-level itemgetter per request keeps the
# recorder's share of Locust's per-request cost small (bench/loadgen_recorder.py).
_CONTEXT_COLUMNS = [name for name in COLUMNS if name != "request_id"]
_extract = operator.itemgetter(*_CONTEXT_COLUMNS)
_ERROR_KIND_AT = _CONTEXT_COLUMNS.index("error_kind")
# Requests of a user's own locustfile name no connection: each gets its own id, in a range the
# rolltrace users' counter never reaches (below the worker bits).
_FOREIGN_CONN_BIT = 39
_TIMEOUT_TEXT = re.compile(r"timed? ?out", re.I)
# urllib3's and requests' names for a failure while connecting (not after)
_CONNECT_STAGE = re.compile(r"NewConnection|ConnectTimeout")


def _causes(exception: BaseException) -> list[BaseException]:
    """The exception and what it wraps (requests → urllib3 → socket error), breadth first."""
    found: list[BaseException] = []
    queue: list[object] = [exception]
    while queue and len(found) < 16:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or item in found:
            continue
        found.append(item)
        queue += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return found


def exception_kind(exception: BaseException) -> str:
    """The error kind of a request that raised, from the socket error it wraps (the mapping of
    ``loadgen.httpclient``), else from its class and text."""
    causes = _causes(exception)
    connecting = any(_CONNECT_STAGE.search(type(c).__name__) for c in causes)
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno is not None:
            table = CONNECT_ERRORS if connecting else IO_ERRORS
            if cause.errno in table:
                return table[cause.errno]
    if any(_TIMEOUT_TEXT.search(f"{type(c).__name__} {c}") for c in causes):
        return "connect-timeout" if connecting else "read-timeout"
    if any(isinstance(c, ConnectionError) or "Disconnected" in type(c).__name__ for c in causes):
        return "eof"
    return "other"


def foreign_row(event: dict[str, Any], conn_id: int) -> tuple[Any, ...]:
    """A requests.parquet row from Locust's own request event (``start_time`` s, ``response_time``
    ms, ``url``, ``response``, ``exception``): no client port and no connection facts, so
    ``rolltrace import`` joins it to the capture by time and destination."""
    start_ns = int(float(event.get("start_time") or time.time()) * 1e9)
    end_ns = start_ns + int(float(event.get("response_time") or 0.0) * 1e6)
    url = urlsplit(str(event.get("url") or event.get("name") or ""))
    response, exception = event.get("response"), event.get("exception")
    status = getattr(response, "status_code", None) or None
    headers = getattr(response, "headers", None) or {}
    if exception is not None and not status:
        kind = exception_kind(exception)
    else:
        kind = classify_status(int(status)) if status else "other"
    port = url.port or (443 if url.scheme == "https" else 80)
    values = {
        "user_kind": "keepalive", "scheduled_ns": start_ns, "start_ns": start_ns,
        "connect_ns": None, "first_byte_ns": None, "end_ns": max(end_ns, start_ns),
        "local_ip": None, "local_port": None, "remote_ip": url.hostname or "",
        "remote_port": port, "conn_id": conn_id, "conn_new": True, "conn_seq": 1,
        "method": str(event.get("request_type") or "GET"), "path": url.path or "/",
        "status_code": status, "error_kind": kind,
        "error_detail": None if exception is None else str(exception)[:500],
        "pod": headers.get("X-Pod-Name"), "pod_version": headers.get("X-Pod-Version"),
    }  # fmt: skip
    return tuple(values[name] for name in _CONTEXT_COLUMNS)


class RequestRecorder:
    def __init__(
        self,
        path: Path | str,
        events: Any,
        *,
        worker_index: int = 0,
        batch_rows: int = 20_000,
        progress_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.progress_path = self.path.with_suffix(".progress.json")
        self._writer = pq.ParquetWriter(self.path, SCHEMA)
        self._offset = worker_index << _WORKER_ID_SHIFT
        self._batch_rows = batch_rows
        self._rows: list[tuple[Any, ...]] = []
        self._next_id = 0
        self.total = 0
        self.failed = 0
        self._progress_interval = progress_interval
        self._last_progress = time.monotonic()
        self._window_total = 0
        self._window_failed = 0
        self._closed = False
        self._foreign = 0  # requests of other users recorded so far (their connection ids)
        events.request.add_listener(self.on_request)
        self._write_progress(self._last_progress)  # "started": LoadRunner.wait_until_sending

    def on_request(self, context: dict[str, Any] | None = None, **event: Any) -> None:
        if context and "scheduled_ns" in context:
            row = _extract(context)
        else:  # a user's own locustfile (HttpUser, FastHttpUser): Locust's fields only
            row = foreign_row(event, (1 << _FOREIGN_CONN_BIT) + self._foreign)
            self._foreign += 1
        self._rows.append(row)
        failed = row[_ERROR_KIND_AT] != "ok"
        self.failed += failed
        self._window_failed += failed
        self._window_total += 1
        if len(self._rows) >= self._batch_rows:
            self.flush()
        if not self._window_total & 63:  # look at the clock every 64 requests, not every one
            now = time.monotonic()
            if now - self._last_progress >= self._progress_interval:
                self._write_progress(now)

    def flush(self) -> None:
        if not self._rows or self._closed:
            return
        columns = dict(zip(_CONTEXT_COLUMNS, zip(*self._rows, strict=True), strict=True))
        count = len(self._rows)
        arrays = {"request_id": pa.array(range(self._offset + self._next_id,
                                               self._offset + self._next_id + count),
                                         type=pa.int64())}  # fmt: skip
        for name in _CONTEXT_COLUMNS:
            arrays[name] = pa.array(columns[name], type=COLUMNS[name])
        if self._offset:
            arrays["conn_id"] = pc.add(arrays["conn_id"], self._offset)
        self._writer.write_table(pa.table([arrays[n] for n in COLUMNS], schema=SCHEMA))
        self._next_id += count
        self.total += count
        self._rows = []

    def _write_progress(self, now: float) -> None:
        elapsed = max(now - self._last_progress, 1e-9)
        progress = {
            "ts_ns": time.time_ns(),
            "requests": self.total + len(self._rows),
            "failed": self.failed,
            "rps": self._window_total / elapsed,
            "failed_rps": self._window_failed / elapsed,
        }
        tmp = self.progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress))
        os.replace(tmp, self.progress_path)
        self._last_progress = now
        self._window_total = self._window_failed = 0

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._writer.close()
        self._write_progress(time.monotonic())
        self._closed = True


def merge_parts(parts: list[Path], output: Path) -> int:
    """Concatenate per-worker request files into one requests.parquet; returns the row count."""
    tables = [pq.read_table(p, schema=SCHEMA) for p in parts if p.exists()]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    table = table.sort_by("start_ns")
    pq.write_table(table, output)
    return int(table.num_rows)
