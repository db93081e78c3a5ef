"""Following a `rolltrace` subprocess's output in a test."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from rolltrace.runner.backends import RUN_CLUSTER_NAME


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


def of_run(pid: int, run_root: Path) -> bool:
    """Whether a process belongs to a run: its arguments or environment name the run directory
    or the run cluster's state (demo-app Pods carry the cluster's name in their environment)."""
    try:
        proc = Path(f"/proc/{pid}")
        text = (proc / "cmdline").read_bytes() + b" " + (proc / "environ").read_bytes()
    except OSError:
        return False
    words = text.replace(b"\0", b" ").decode(errors="replace")
    return str(run_root) in words or RUN_CLUSTER_NAME in words


def interruptible() -> None:
    """``preexec_fn`` for a child that a test stops with Ctrl-C (SIGINT): as in a terminal's
    foreground job, SIGINT has its default action. A test suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so the child would not stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
