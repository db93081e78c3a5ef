"""Ground-truth lifecycle lines the app writes about itself (listening, ready-to-serve, ...).

The same one-line O_APPEND record as ``localcluster.truth`` (a single ``write`` per line keeps
lines whole across processes); repeated here because the demo app runs on real clusters too and
must not depend on the local cluster's package. Event names are ``analyzer.schema.TruthEvent``
values.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class TruthLog:
    def __init__(self, path: Path | None, pod: str) -> None:
        self.pod = pod
        self._fd = (
            None if path is None else os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        )

    def record(self, event: str, **fields: Any) -> None:
        if self._fd is None:
            return
        line = {
            "ts_ns": time.time_ns(),
            "source": f"demoapp/{self.pod}",
            "event": event,
            "pod": self.pod,
            **fields,
        }
        os.write(self._fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
