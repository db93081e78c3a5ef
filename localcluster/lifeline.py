"""Processes that end with the process that started them, and owners recognised across pid reuse.

An exit handler alone cannot stop children when their parent is killed with SIGKILL (CI jobs at
their timeout, a second Ctrl-C); the kernel can: ``prctl(PR_SET_PDEATHSIG)`` (prctl(2)) sends a
signal to a child when the *thread* that forked it exits. It survives ``execve`` of ordinary
programs (``nsenter`` and ``ip netns exec`` exec in place), but is cleared when the child changes
its credentials (tcpdump dropping to user ``tcpdump``; run it with ``-Z root``), so set it in the
very program that must die. ``die_with_parent`` is a ``preexec_fn`` for ``subprocess.Popen``;
fork from the main thread (or a thread that lives as long as the child should).

A pid alone does not name a process for long: pids are reused. ``identity`` adds the process's
start time (field 22 of ``/proc/<pid>/stat``), so a cluster's owner recorded as an identity is
"alive" only while that very process runs.

``exit_without_teardown`` ends a cluster process that has already stopped cleanly without the
interpreter's teardown of its modules, which its parent would wait for.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Loaded now, not in the forked child: dlopen after fork() in a threaded parent could deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent(signum: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``signum`` when the forking thread ends.

    SIGTERM by default: the child (tcpdump, Locust, the cluster) then finishes its file or
    removes what it created, which SIGKILL would not let it do."""
    parent = os.getpid()

    def arm() -> None:
        if _LIBC.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died between fork() and prctl()
            os.kill(os.getpid(), signum)

    return arm


def identity(pid: int) -> str:
    """``"<pid>:<start time in clock ticks>"``, or "" when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] == "Z":  # a zombie has exited
        return ""
    return f"{pid}:{fields[19]}"  # fields after the command name start at field 3 (state)


def identity_alive(recorded: str) -> bool:
    """Whether the process ``identity`` recorded is still the one running under that pid."""
    pid, _, _ = recorded.partition(":")
    return bool(recorded) and pid.isdigit() and identity(int(pid)) == recorded


def exit_without_teardown(code: int) -> NoReturn:
    """Exit now, once everything the process made is stopped and removed, skipping the
    interpreter's teardown of its modules: with aiohttp and pydantic loaded that is 0.1-0.15 s
    of CPU per process, and a cluster's stop waits for it in the cluster process and in every
    agent at once. Only the logs need flushing (truth lines are written unbuffered)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
