"""Writes one row per request, in the requests.parquet schema, from Locust's ``request`` event.

The recorder is a plain listener on ``environment.events.request`` (Locust's extension point),
so it works the same under the headless runner, distributed workers and the web UI. Rows are
kept as column lists and flushed to Parquet in batches because per-row writes would cost more
than the requests themselves; ``bench/loadgen_recorder.py`` measures the overhead.

The column list mirrors ``analyzer.schema.REQUESTS``; loadgen may not import the analyzer (DESIGN
§2), so ``tests/loadgen/test_recorder.py`` checks the written file against that schema.

Every ``progress_interval`` seconds a small JSON file (totals and the last second's counts) is
rewritten next to the output, for the runner's live display.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
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
        self._columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
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
        row = dict(context)
        row["request_id"] = self._offset + self._next_id
        row["conn_id"] = self._offset + int(row.get("conn_id") or 0)
        self._next_id += 1
        columns = self._columns
        for name in COLUMNS:
            columns[name].append(row.get(name))
        failed = row.get("error_kind") != "ok"
        self.total += 1
        self.failed += failed
        self._window_total += 1
        self._window_failed += failed
        if len(columns["request_id"]) >= self._batch_rows:
            self.flush()
        now = time.monotonic()
        if now - self._last_progress >= self._progress_interval:
            self._write_progress(now)

    def flush(self) -> None:
        if not self._columns["request_id"] or self._closed:
            return
        table = pa.table(
            {name: pa.array(values, type=COLUMNS[name]) for name, values in self._columns.items()},
            schema=SCHEMA,
        )
        self._writer.write_table(table)
        self._columns = {name: [] for name in COLUMNS}

    def _write_progress(self, now: float) -> None:
        elapsed = max(now - self._last_progress, 1e-9)
        progress = {
            "ts_ns": time.time_ns(),
            "requests": self.total,
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
