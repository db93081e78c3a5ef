"""Writes one row per request, in the requests.parquet schema, from Locust's ``request`` event.

The recorder is a plain listener on ``environment.events.request`` (Locust's extension point),
so it works the same under the headless runner, distributed workers and the web UI. Rows are
kept as column lists and flushed to Parquet in batches because per-row writes would cost more
than the requests themselves; ``bench/loadgen_recorder.py`` measures the overhead.

The column list mirrors ``analyzer.schema.REQUESTS``; loadgen may not import the analyzer
(docs/architecture.md#rooms-and-import-rules), so ``tests/loadgen/test_runner.py`` checks the
written file against that schema.

Every ``progress_interval`` seconds a small JSON file (totals and the last second's counts) is
rewritten next to the output, for the runner's live display.
"""

from __future__ import annotations

import json
import operator
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
        events.request.add_listener(self.on_request)

    def on_request(self, context: dict[str, Any] | None = None, **_: Any) -> None:
        if not context or "scheduled_ns" not in context:
            return  # a request made by some other client: not ours to record
        self._rows.append(_extract(context))
        failed = context["error_kind"] != "ok"
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
