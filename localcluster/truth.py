"""Ground truth: what really happened inside the local cluster, appended to truth.jsonl.

Agents (kubelet, kube-proxy, LB) run in separate processes and append to one file; each record
is a single ``write`` of one line opened with O_APPEND, which the kernel keeps whole for lines
this short, so no lock is needed. The analyzer never reads this file (attribution must work on a
real cluster, where no such file exists); tests use it to score attribution. Event names are
``analyzer.schema.TruthEvent`` values, spelled out here because localcluster must not import the
analyzer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class TruthWriter:
    def __init__(self, path: Path | str | None, source: str) -> None:
        self.source = source
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, event: str, **fields: Any) -> None:
        self.record_at(time.time_ns(), event, **fields)

    def record_at(self, ts_ns: int, event: str, **fields: Any) -> None:
        """A line stamped with when it happened (e.g. a kernel event's own time), not when it
        is written."""
        if self._fd is None:
            return
        line = {"ts_ns": ts_ns, "source": self.source, "event": event, **fields}
        os.write(self._fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
