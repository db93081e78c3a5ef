"""Following a `rolltrace` subprocess's output in a test."""

from __future__ import annotations

import subprocess
import time


def read_until(process: subprocess.Popen[str], text: str, timeout_s: float) -> None:
    """Read the process's stdout until a line contains ``text``; fail when it ends or the time
    runs out first (checked at each line)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} line within {timeout_s:g} s"
    raise AssertionError(f"the process ended before printing {text!r}")
