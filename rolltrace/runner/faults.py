"""Components that die during a run: noticed, named and timed, never a silent loss.

A run depends on processes it does not control moment to moment: the cluster's API server, its
node agents and LB emulator, the packet captures and the Locust workers. Each is a
``ComponentHandle`` (how to tell it is alive, how to kill it for a test). The ``Watchdog`` polls
them while the run records and keeps the first death of each as a ``Fault`` (component, name,
time, what it saw) for run.json. What a death means for the run:

* the API server, a node agent or the LB: the rollout can no longer be observed or served as
  the scenario describes, so the run stops early and is ``partial`` (``Fault.fatal``);
* a capture or a Locust worker: the rollout goes on with less recorded; the run ends
  ``degraded``.

A capture whose disk is full is a fault too: the watchdog stops it at once (tcpdump would run
on, writing nothing) and its file is kept up to the last whole packet.

Test-only fault hook: ``ROLLTRACE_FAULT=<component>:<after_s>`` kills that component
``after_s`` seconds after the load's first requests were recorded (``FaultPlan``; the
components are ``COMPONENT_NAMES``, documented in docs/troubleshooting.md#fault-injection).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from loadgen.runner import LoadRunner
from rolltrace.runner.capture import CaptureProcess

FAULT_ENV = "ROLLTRACE_FAULT"  # the same variable localcluster.main reads for the API server
#: How often the watchdog looks: a fault's time is known to within this; each look is a few
#: /proc reads and one unix-socket connect.
WATCH_INTERVAL_S = 0.25


class Component(StrEnum):
    APISERVER = "apiserver"
    NODE_AGENT = "node-agent"
    LB = "lb"
    CAPTURE = "capture"
    LOCUST_WORKER = "locust-worker"


#: Without these the rollout cannot go on as the scenario describes: the run stops (partial).
FATAL = frozenset({Component.APISERVER, Component.NODE_AGENT, Component.LB})
COMPONENT_NAMES = tuple(c.value for c in Component)


@dataclass(frozen=True)
class ComponentHandle:
    component: Component
    name: str  # which one: "rtrun-n1", "packets/client.pcap", "locust-worker-0", ...
    alive: Callable[[], bool]
    #: kill it for the fault hook; returns what was done
    kill: Callable[[], str]
    #: why it is not alive, when more can be said than "exited"
    cause: Callable[[], str] = lambda: "exited"
    #: what to do at once when it is found dead (stop a capture on a full disk)
    on_death: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Fault:
    component: Component
    name: str
    at_ns: int
    detail: str

    @property
    def fatal(self) -> bool:
        return self.component in FATAL

    def describe(self, load_start_ns: int | None) -> str:
        """One line for run.json's reasons and the terminal."""
        clock = datetime.fromtimestamp(self.at_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
        since = (
            f", {(self.at_ns - load_start_ns) / 1e9:.1f} s after the load started"
            if load_start_ns is not None
            else ""
        )
        effect = "the run stopped early" if self.fatal else "the run went on with less recorded"
        return f"{self.component} {self.name} failed at {clock} UTC{since}: {self.detail}; {effect}"

    def as_json(self) -> dict[str, object]:
        return {
            "component": self.component.value,
            "name": self.name,
            "at_ns": self.at_ns,
            "detail": self.detail,
            "fatal": self.fatal,
        }


class ComponentFailed(RuntimeError):
    """A component the rollout needs died: the run stops here and is partial."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(f"{fault.component} {fault.name} failed: {fault.detail}")
        self.fault = fault


class Watchdog:
    """Polls every handle in a thread; ``faults`` keeps the first death of each."""

    def __init__(self) -> None:
        self._handles: list[ComponentHandle] = []
        self._lock = threading.Lock()
        self._dead: set[tuple[Component, str]] = set()
        self.faults: list[Fault] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)

    @property
    def handles(self) -> list[ComponentHandle]:
        with self._lock:
            return list(self._handles)

    def watch(self, handles: list[ComponentHandle]) -> None:
        with self._lock:
            self._handles.extend(handles)
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def check(self) -> list[Fault]:
        """Look now (also called by the runner when a cluster call fails, so that the cause is
        named even between two polls); returns the new faults."""
        with self._lock:
            dead = [
                h
                for h in self._handles
                if (h.component, h.name) not in self._dead and not h.alive()
            ]
            new = [Fault(h.component, h.name, time.time_ns(), h.cause()) for h in dead]
            self._dead.update((h.component, h.name) for h in dead)
            self.faults.extend(new)
        for handle in dead:
            handle.on_death()
        return new

    def raise_if_fatal(self) -> None:
        """Stop the run (``ComponentFailed``) once a component the rollout needs died."""
        self.check()
        fatal = next((f for f in self.faults if f.fatal), None)
        if fatal is not None:
            raise ComponentFailed(fatal)

    def stop(self) -> None:
        """Stop polling; a component stopped by the run itself afterwards is no fault."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            self.check()


@dataclass(frozen=True)
class FaultPlan:
    """``ROLLTRACE_FAULT=<component>:<after_s>``, read once per run."""

    component: Component
    after_s: float
    spec: str = ""  # the variable's value, quoted in the run's reasons

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FaultPlan | None:
        """None when the variable is unset; ValueError naming the valid form otherwise."""
        spec = (environ if environ is not None else dict(os.environ)).get(FAULT_ENV, "")
        if not spec:
            return None
        name, _, after = spec.partition(":")
        try:
            return cls(Component(name), float(after), spec)
        except ValueError:
            raise ValueError(
                f"{FAULT_ENV}={spec!r}: expected <component>:<seconds after the load's first "
                f"requests>, component one of {', '.join(COMPONENT_NAMES)}"
            ) from None

    def arm(
        self, handles: Callable[[], list[ComponentHandle]], notes: list[str]
    ) -> threading.Timer:
        """Kill the first handle of the component ``after_s`` from now; a note says what."""

        def fire() -> None:
            target = next((h for h in handles() if h.component is self.component), None)
            if target is None:
                notes.append(f"{FAULT_ENV}={self.spec}: this run has no {self.component}")
                return
            notes.append(f"{FAULT_ENV}={self.spec}: {target.kill()}")

        timer = threading.Timer(self.after_s, fire)
        timer.daemon = True
        timer.start()
        return timer


def capture_handle(name: str, process: CaptureProcess) -> ComponentHandle:
    """A capture dies when tcpdump exits, and in effect when its disk is full (tcpdump then
    runs on writing nothing): it is stopped at once so that its file ends cleanly."""
    return ComponentHandle(
        Component.CAPTURE,
        name,
        alive=lambda: process.running() and not process.disk_full(),
        kill=lambda: kill_pid(process.pid, "tcpdump"),
        cause=lambda: "its disk is full" if process.disk_full() else "tcpdump exited",
        on_death=process.request_stop,
    )


def worker_handles(load: LoadRunner) -> list[ComponentHandle]:
    """One handle per distributed Locust worker (a single-process load has none: its death
    ends the load, which the runner reports as such)."""
    return [
        _worker_handle(load, name, pid)
        for name, pid in load.pids().items()
        if name.startswith("locust-worker")
    ]


def _worker_handle(load: LoadRunner, name: str, pid: int) -> ComponentHandle:
    return ComponentHandle(
        Component.LOCUST_WORKER,
        name,
        alive=lambda: name not in load.exited(),
        kill=lambda: kill_pid(pid, "the worker"),
        cause=lambda: f"exited with status {load.exited().get(name)}; its requests are lost",
    )


def kill_pid(pid: int | None, what: str) -> str:
    """SIGKILL, as an OOM kill or a crash would end it: no chance to clean up."""
    if pid is None:
        return f"{what} was not running"
    os.kill(pid, signal.SIGKILL)
    return f"sent SIGKILL to {what} (pid {pid})"
