"""Runs Locust headless in its own process(es) and hands back one requests.parquet.

Locust monkey-patches the standard library with gevent when imported, so it never runs inside
the caller's process: the runner starts ``python -m locust`` (optionally behind an argv prefix
such as ``ip netns exec rt-client`` so the load leaves from the client namespace), either as one
local process or as one master plus N workers for load that outgrows one process. The caller
may block in ``wait_until_sending()`` until the users send (Locust's start-up takes seconds),
polls ``progress()`` for a live display and ``wait()``s; ``stop()`` ends the load early and still
keeps every row recorded so far (Locust fires ``quitting`` on SIGTERM, which closes the
recorder's Parquet file). ``start(gated=True)`` pays that start-up early: the processes start
(interpreters, imports, workers joining the master) but no user starts until ``open_gate()``.

A worker that dies (OOM, a kill) leaves a part without its Parquet footer: its rows are lost,
the merge goes on with the others and ``lost_parts`` names it, and ``exited()`` tells the
caller which process ended before it was asked to. ``LoadPlan.preexec`` lets the caller tie
the processes' lives to its own (the runner ends them with itself).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.recorder import merge_parts

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: Longest wait for every Locust process to start sending: the interpreters' start-up and, with
#: workers, the master's once-a-second look for them took up to 7.4 s on a loaded 2-core machine
#: (docs/performance.md, "Load at rate"); a start slower than this has failed.
START_TIMEOUT_S = 60.0
#: How often ``wait_until_sending`` looks for the recorders' first progress files.
START_POLL_S = 0.05


class LoadError(RuntimeError):
    """Locust could not be started or exited with an error; the message quotes its log tail."""


@dataclass
class LoadPlan:
    """What to send. ``rate`` is the total arrival rate, split evenly over ``users``."""

    host: str  # http://IP:PORT
    rate: float = 50.0
    duration_s: float = 30.0
    users: int = 10
    keepalive_weight: int = 1
    new_connection_weight: int = 1
    path: str = "/"
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 5.0
    workers: int = 0  # 0: one local process; N: one master + N workers
    exec_prefix: list[str] = field(default_factory=list)
    #: run in each Locust process before it starts (``subprocess.Popen``'s ``preexec_fn``)
    preexec: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.users <= 0 or self.duration_s <= 0:
            raise ValueError("rate, users and duration must be positive")
        kinds = (self.keepalive_weight > 0) + (self.new_connection_weight > 0)
        if kinds == 0 or self.users < kinds:
            raise ValueError("the mix needs a positive weight and at least one user per kind")

    def locust_args(self, output: Path, start_gate: Path | None = None) -> list[str]:
        # Users get a small safety margin over the planned duration, then stop by themselves.
        bound = self.duration_s + self.request_timeout_s + 5
        per_user_rate = self.rate / self.users
        gate = ["--rt-start-gate", str(start_gate)] if start_gate is not None else []
        return [*gate,
            "-f", str(LOCUSTFILE),
            "--headless",
            "--host", self.host,
            "--users", str(self.users),
            "--spawn-rate", str(max(self.users, 1)),
            "--run-time", f"{self.duration_s:g}s",
            # Locust takes whole seconds here ("2.5" is rejected)
            "--stop-timeout", str(math.ceil(self.request_timeout_s + self.connect_timeout_s)),
            "--only-summary",
            "--loglevel", "WARNING",
            "--rt-output", str(output),
            "--rt-rate", f"{per_user_rate:g}",
            "--rt-path", self.path,
            "--rt-connect-timeout", f"{self.connect_timeout_s:g}",
            "--rt-request-timeout", f"{self.request_timeout_s:g}",
            "--rt-max-seconds", f"{bound:g}",
            "--rt-max-requests", str(int(per_user_rate * bound) + 1),
            "--rt-keepalive-weight", str(self.keepalive_weight),
            "--rt-new-weight", str(self.new_connection_weight),
        ]  # fmt: skip


class LoadRunner:
    def __init__(self, plan: LoadPlan, output: Path, log_dir: Path) -> None:
        self.plan = plan
        self.output = output
        self.log_dir = log_dir
        self._processes: list[subprocess.Popen[bytes]] = []
        self._names: list[str] = []
        self._logs: list[Path] = []
        self._stopping = False
        #: worker parts that could not be read (a killed worker's file has no footer)
        self.lost_parts: list[str] = []
        self._gate: Path | None = None
        self._held = False  # started gated and the gate not opened yet

    def start(self, gated: bool = False) -> None:
        """Start Locust; ``gated``: its processes start but no user does until ``open_gate()``
        (the process that runs the test waits for the gate file in Locust's ``init`` hook)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for stale in self._progress_files():  # only this start's recorders may say "sending"
            stale.unlink()
        self._gate = self.log_dir / "locust.start-gate" if gated else None
        if self._gate is not None:
            self._gate.unlink(missing_ok=True)
        self._held = gated
        base = [*self.plan.exec_prefix, sys.executable, "-m", "locust"]
        args = self.plan.locust_args(self.output, self._gate)
        if self.plan.workers == 0:
            self._spawn("locust", [*base, *args])
            return
        port = _free_port()
        master = [
            *args,
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(self.plan.workers),
        ]
        self._spawn("locust-master", [*base, *master])
        for index in range(self.plan.workers):
            worker = [
                "-f",
                str(LOCUSTFILE),
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                "--rt-output",
                str(self.output),
                "--loglevel",
                "WARNING",
            ]
            self._spawn(f"locust-worker-{index}", [*base, *worker])

    def open_gate(self) -> None:
        """Let a gated start's users start (``wait_until_sending`` then says when they send)."""
        if self._gate is not None:
            self._gate.touch()
        self._held = False

    @property
    def released(self) -> bool:
        """False only between a gated ``start`` and ``open_gate``: no user has started."""
        return not self._held

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.log_dir / f"{name}.log"
        self._logs.append(log)
        self._names.append(name)
        with log.open("wb") as handle:
            self._processes.append(
                subprocess.Popen(
                    argv,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=self.plan.preexec,
                )
            )

    def pids(self) -> dict[str, int]:
        """Each process by name: ``locust``, or ``locust-master`` and ``locust-worker-<i>``."""
        return {name: p.pid for name, p in zip(self._names, self._processes, strict=True)}

    def exited(self) -> dict[str, int]:
        """Processes that ended before ``stop()`` was called, with their exit status."""
        if self._stopping:
            return {}
        return {
            name: code
            for name, process in zip(self._names, self._processes, strict=True)
            if (code := process.poll()) is not None
        }

    def wait_until_sending(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once every recording process has started its users (its recorder wrote its
        first progress file). Locust takes seconds to start, more with workers (three
        interpreters, then the master's look for them), so a caller that times a warm-up counts
        it from here, not from ``start()``. Raises LoadError when a process exits first or the
        start takes longer than ``timeout_s``."""
        expected = max(self.plan.workers, 1)  # a master records nothing; its workers do
        deadline = time.monotonic() + timeout_s
        while len(self._progress_files()) < expected:
            if exited := self.exited():
                raise LoadError(f"Locust exited before sending: {exited}; {self._log_tail()}")
            if time.monotonic() > deadline:
                raise LoadError(
                    f"Locust did not start sending within {timeout_s:g} s; {self._log_tail()}"
                )
            time.sleep(START_POLL_S)
        if self._gate is not None:  # passed: the run directory keeps no trace of it
            self._gate.unlink(missing_ok=True)

    def _progress_files(self) -> list[Path]:
        return list(self.output.parent.glob(f"{self.output.stem}*.progress.json"))

    def progress(self) -> dict[str, float]:
        """Totals across processes from the recorders' progress files (empty before the first)."""
        totals: dict[str, float] = {}
        for path in self._progress_files():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for key in ("requests", "failed", "rps", "failed_rps"):
                totals[key] = totals.get(key, 0.0) + float(data.get(key, 0))
        return totals

    def running(self) -> bool:
        return any(p.poll() is None for p in self._processes)

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for Locust to finish; merge worker parts; return the number of requests."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self._budget())
        for process in self._processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.stop()
                raise LoadError(f"Locust did not finish in time; {self._log_tail()}") from None
        return self._collect()

    def stop(self, grace_s: float = 10.0) -> int:
        """End the load early, keeping what was recorded (nothing when never released)."""
        self._stopping = True
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self._processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._gate is not None:
            self._gate.unlink(missing_ok=True)
        return 0 if self._held else self._collect()

    def _collect(self) -> int:
        if self.plan.workers == 0:
            if not self.output.exists():
                raise LoadError(f"Locust wrote no {self.output.name}; {self._log_tail()}")
            failed = [p for p in self._processes if p.returncode not in (0, 1, -signal.SIGTERM)]
            if failed:
                raise LoadError(f"Locust exited with {failed[0].returncode}; {self._log_tail()}")
            import pyarrow.parquet as pq

            return int(pq.read_metadata(self.output).num_rows)
        parts = sorted(self.output.parent.glob(f"{self.output.stem}.worker-*{self.output.suffix}"))
        readable = [part for part in parts if _readable_parquet(part)]
        self.lost_parts = [part.name for part in parts if part not in readable]
        if not readable:
            raise LoadError(f"no worker wrote requests; {self._log_tail()}")
        return merge_parts(readable, self.output)

    def _budget(self) -> float:
        plan = self.plan
        return plan.duration_s + plan.request_timeout_s + plan.connect_timeout_s + 30

    def _log_tail(self) -> str:
        tails = []
        for log in self._logs:
            if log.exists():
                text = log.read_text(errors="replace").strip().splitlines()[-8:]
                tails.append(f"{log.name}: " + " | ".join(text))
        return "logs: " + ("; ".join(tails) or "none")


def _readable_parquet(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError):  # pyarrow raises ArrowInvalid (a ValueError) for no footer
        return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
