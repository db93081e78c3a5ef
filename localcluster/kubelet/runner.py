"""One container of one Pod as a real process: start, probe, restart with backoff, stop.

The stop sequence is the one whose timing rollouts depend on, so each step is a truth event:
preStop start/end, SIGTERM, SIGKILL when the grace period — counted from the start of preStop —
runs out, and the exit with its code or signal. As upstream, a preStop hook that eats the whole
grace period (or is cut by a shorter one) still leaves the process ``MIN_GRACE_AFTER_PRESTOP_S``
between SIGTERM and SIGKILL; only a forced removal (the Pod gone from the API) kills at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubewire import format_time
from localcluster.apiclient import JsonObject
from localcluster.kubelet import sockets
from localcluster.kubelet.containers import Launch
from localcluster.kubelet.probes import ProbeCounter, ProbeSpec, run_handler
from localcluster.kubelet.status import ContainerRecord
from localcluster.truth import TruthWriter

MIN_GRACE_AFTER_PRESTOP_S = 2.0  # upstream's minimumGracePeriodInSeconds
# How often the socket table is read: while starting or stopping, finely, since the judge
# compares SYN times with these edges; while running, rarely, since nothing is expected then.
LISTENER_POLL_FAST_S = 0.02
LISTENER_POLL_SLOW_S = 0.5
RESTART_RESET_AFTER_S = (
    600.0  # a container that ran this long restarts without backoff, as upstream
)


def sigkill_deadline(grace_deadline: float, prestop_ended: float) -> float:
    """When SIGKILL follows a preStop hook: the grace period's deadline, but never sooner than
    the minimum after the hook, as upstream's killContainer (kuberuntime_container.go) raises
    whatever grace is left to minimumGracePeriodInSeconds."""
    return max(grace_deadline, prestop_ended + MIN_GRACE_AFTER_PRESTOP_S)


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 10.0
    max_s: float = 300.0

    def delay(self, restarts: int) -> float:
        return min(self.initial_s * float(2 ** max(restarts, 0)), self.max_s)


def restart_delay(backoff: Backoff, restarts: int, ran_s: float) -> float:
    """Seconds before restarting a container that exited after running ``ran_s`` and was
    restarted ``restarts`` times before. As upstream (doBackOff in kuberuntime_manager.go), the
    first restart is immediate (that is when its back-off entry starts), later ones wait 10 s,
    20 s, ... up to the cap; a container that ran long enough restarts at once."""
    if restarts == 0 or ran_s > RESTART_RESET_AFTER_S:
        return 0.0
    return backoff.delay(restarts - 1)


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


@dataclass(frozen=True)
class PodEnv:
    """What every container of one Pod shares."""

    pod_name: str
    namespace: str
    node_name: str
    pod_ip: str
    exec_prefix: list[str]
    restart_policy: str
    grace_s: float
    truth: TruthWriter
    log_dir: Path | None
    backoff: Backoff
    on_change: Callable[[], None]
    emit: Callable[[str, str, str], None]  # a Kubernetes Event: reason, message, Normal|Warning
    netns_path: str | None = None  # the Pod's own network namespace; None: the kubelet's


class ContainerRunner:
    def __init__(self, container: JsonObject, launch: Launch, pod: PodEnv) -> None:
        self.container = container
        self.launch = launch
        self.pod = pod
        self.record = ContainerRecord(container["name"], str(container.get("image", "")))
        self.process: asyncio.subprocess.Process | None = None
        self.terminating = False
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # cuts a restart back-off short when the Pod goes away
        self._deadline = float("inf")  # loop time at which a stop sends SIGKILL; may move earlier
        self._deadline_moved = asyncio.Event()
        self._forced = False  # removed from the API: SIGKILL at once, no minimum grace
        self._listening_seen_ns: int | None = None  # the socket table's last listener sighting

    # -- public --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._lifecycle())

    async def terminate(self, grace_s: float) -> None:
        """Stop for good (Pod deletion): no restart afterwards. A container that is still
        being spawned is killed by ``_run_once`` as soon as it exists."""
        self.terminating = True
        self._wake.set()
        if self._stopping is not None:  # a liveness kill is under way: let it finish first
            await asyncio.shield(self._stopping)
        if self._alive:
            self._emit("Killing", f"Stopping container {self.record.name}")
            await self._stop(grace_s, cause="deletion")
        await self._finished()

    def shorten_grace(self, grace_s: float) -> None:
        """A later delete with a shorter grace period: the SIGKILL comes that much from now,
        if that is sooner (a running preStop hook is cut at the new deadline)."""
        self._move_deadline(asyncio.get_running_loop().time() + grace_s)

    async def kill_now(self) -> None:
        """The Pod is gone from the API (forced deletion): no hooks, no grace."""
        self.terminating = True
        self._forced = True
        self._wake.set()
        self._move_deadline(asyncio.get_running_loop().time())
        if self._alive:
            self._truth("sigkill", pid=self.record.pid, cause="forced")
            self._signal_group(signal.SIGKILL)
        await self._finished()

    async def _finished(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
        self.record.final = True
        self.record.ready = False
        self._changed()

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def _alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _lifecycle(self) -> None:
        try:
            while not self.terminating:
                started = time.monotonic()
                exit_code = await self._run_once()
                if self.terminating or not should_restart(self.pod.restart_policy, exit_code):
                    break
                delay = restart_delay(
                    self.pod.backoff, self.record.restart_count, time.monotonic() - started
                )
                if delay > 0:
                    await self._back_off(delay)
                if self.terminating:  # deleted during the back-off: no restart to count
                    break
                self.record.restart_count += 1
            self.record.final = True
            self._changed()
        finally:
            if self._alive:  # cancelled mid-start or mid-run: never leave a process behind
                self._signal_group(signal.SIGKILL)
                assert self.process is not None
                await self.process.wait()

    async def _back_off(self, delay: float) -> None:
        """CrashLoopBackOff: waiting, announced, cut short if the Pod goes away."""
        name = self.record.name
        self.record.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={name}",
            }
        }
        self._changed()
        self._emit(
            "BackOff",
            f"Back-off restarting failed container {name} in pod {self.pod.pod_name}",
            "Warning",
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _run_once(self) -> int:
        if not self.terminating:  # a fresh run: an earlier liveness kill's deadline is spent
            self._deadline = float("inf")
        try:
            process = await self._spawn()
        except OSError as error:  # e.g. a local/ command that does not exist
            return self._start_failed(error)
        self.record.pid = process.pid
        self.record.state = {"running": {"startedAt": format_time()}}
        self.record.started = "startupProbe" not in self.container
        self.record.ready = "readinessProbe" not in self.container and self.record.started
        self._truth("process-started", pid=process.pid, restart_count=self.record.restart_count)
        self._changed()
        self._emit("Pulled", f'Container image "{self.record.image}" already present on machine')
        self._emit("Created", f"Created container {self.record.name}")
        self._emit("Started", f"Started container {self.record.name}")
        if self.terminating:  # the Pod was deleted while this container was being spawned
            self._truth("sigkill", pid=process.pid, cause="deletion")
            self._signal_group(signal.SIGKILL)
        loop = asyncio.get_running_loop()
        watchers = [loop.create_task(self._probe(process)),
                    loop.create_task(self._watch_listener(process))]  # fmt: skip
        try:
            returncode = await process.wait()
        finally:
            for task in watchers:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*watchers)
            self._signal_group(signal.SIGKILL)  # the container's other processes die with it
        exit_code, signum = (
            (128 - returncode, -returncode) if returncode < 0 else (returncode, None)
        )
        self._truth(
            "exited",
            pid=process.pid,
            exit_code=returncode if returncode >= 0 else None,
            signal=signum,
        )
        terminated: JsonObject = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": self.record.state["running"]["startedAt"],
            "finishedAt": format_time(),
            "containerID": f"rolltrace://{process.pid}",
        }
        if signum is not None:
            terminated["signal"] = signum
        self.record.state = {"terminated": terminated}
        self.record.last_state = {"terminated": terminated}
        self.record.ready = False
        self._changed()
        return exit_code

    def _start_failed(self, error: OSError) -> int:
        """As containerd reports an exec failure: terminated, exit code 128, reason StartError;
        the restart policy then applies as to any other failed container."""
        now = format_time()
        terminated: JsonObject = {
            "exitCode": 128,
            "reason": "StartError",
            "message": f"failed to start {self.launch.argv[0]!r}: {error}",
            "startedAt": now,
            "finishedAt": now,
        }
        self.record.state = {"terminated": terminated}
        self.record.last_state = {"terminated": terminated}
        self._emit("Failed", f"Error: {terminated['message']}", "Warning")
        self._changed()
        return 128

    async def _spawn(self) -> asyncio.subprocess.Process:
        log_path = (
            self.pod.log_dir / f"{self.pod.namespace}_{self.pod.pod_name}_{self.record.name}.log"
            if self.pod.log_dir is not None
            else Path(os.devnull)
        )
        with open(log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.pod.exec_prefix,
                *self.launch.argv,
                env=self.launch.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGKILL takes its children too
            )
        return self.process

    # -- probes --------------------------------------------------------------------------
    async def _probe(self, process: asyncio.subprocess.Process) -> None:
        startup = self.container.get("startupProbe")
        if startup is not None and not await self._probe_until(startup, "startup", process):
            return
        self.record.started = True
        self._changed()
        loops = [
            self._probe_until(self.container[kind], kind.removesuffix("Probe"), process)
            for kind in ("livenessProbe", "readinessProbe")
            if kind in self.container
        ]
        await asyncio.gather(*loops)

    async def _probe_until(
        self, probe: JsonObject, kind: str, process: asyncio.subprocess.Process
    ) -> bool:
        """Runs one probe until it settles what it decides: startup until success (True),
        liveness until failure (then the container is killed), readiness for ever."""
        spec = ProbeSpec.parse(probe)
        counter = ProbeCounter(spec, initial=kind == "liveness")
        await asyncio.sleep(spec.initial_delay_s)
        while process.returncode is None:
            began = time.monotonic()
            try:
                ok = await run_handler(
                    probe,
                    pod_ip=self.pod.pod_ip,
                    container=self.container,
                    exec_prefix=self.pod.exec_prefix,
                    timeout_s=spec.timeout_s,
                )
            except ValueError:  # e.g. a named port the container does not declare
                ok = False
            if not ok and process.returncode is None:
                self._emit("Unhealthy", f"{kind.capitalize()} probe failed", "Warning")
            if counter.observe(ok):
                if kind == "readiness":
                    self.record.ready = ok
                    self._changed()
                elif kind == "startup":
                    return True
            if not counter.result and kind != "readiness":
                if not self.terminating and self._stopping is None:
                    self._emit(
                        "Killing",
                        f"Container {self.record.name} failed {kind} probe, will be restarted",
                    )
                    self._stopping = asyncio.get_running_loop().create_task(
                        self._restart_kill(kind)
                    )
                return False
            await asyncio.sleep(max(0.0, spec.period_s - (time.monotonic() - began)))
        return False

    async def _watch_listener(self, process: asyncio.subprocess.Process) -> None:
        """Records, from the kernel's socket table, when the container starts and stops
        listening: truth for any app, not only one that reports itself. ``listening`` is stamped
        when first seen (no SYN before it found a listener) and ``stopped-accepting`` when last
        seen (none after it did), so a refused SYN always falls outside the stamped interval.
        ``_stop`` looks once more right before it signals, so the last sighting is that close."""
        self._listening_seen_ns = None
        try:
            while process.returncode is None:
                if not self._look_for_listener(process) and self._listening_seen_ns is not None:
                    break
                stopping = self.terminating or self._stopping is not None
                fast = self._listening_seen_ns is None or stopping
                await asyncio.sleep(LISTENER_POLL_FAST_S if fast else LISTENER_POLL_SLOW_S)
        finally:  # also when the process exited: its sockets closed with it
            if self._listening_seen_ns is not None:
                self._truth_at(self._listening_seen_ns, "stopped-accepting", pid=process.pid,
                               seen="socket-table")  # fmt: skip

    def _look_for_listener(self, process: asyncio.subprocess.Process) -> bool:
        now = time.time_ns()
        declared = self.container.get("ports") or []
        ports = frozenset(int(p["containerPort"]) for p in declared if p.get("containerPort"))
        if not sockets.listening(process.pid, self.pod.pod_ip, ports, self.pod.netns_path):
            return False
        if self._listening_seen_ns is None:
            self._truth_at(now, "listening", pid=process.pid, seen="socket-table")
        self._listening_seen_ns = now
        return True

    async def _restart_kill(self, cause: str) -> None:
        try:
            await self._stop(self.pod.grace_s, cause)
        finally:
            self._stopping = None

    # -- stopping ------------------------------------------------------------------------
    async def _stop(self, grace_s: float, cause: str) -> None:
        """``cause`` (deletion / liveness / startup) is recorded with every step."""
        process = self.process
        if process is None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = min(self._deadline, loop.time() + grace_s)
        prestop = (self.container.get("lifecycle") or {}).get("preStop")
        if self._listening_seen_ns is not None and process.returncode is None:
            self._look_for_listener(process)  # the last sighting before the stop's first step
        if prestop and process.returncode is None:
            self._truth("prestop-start", handler=next(iter(prestop), ""), cause=cause)
            hook = loop.create_task(self._run_hook(prestop, self._deadline - loop.time()))
            ok = await self._before_deadline(hook) and hook.result()
            self._truth("prestop-end", ok=ok, cause=cause)
            if not ok:
                self._emit(
                    "FailedPreStopHook", f"PreStop hook for {self.record.name} failed", "Warning"
                )
            if not self._forced:
                self._deadline = sigkill_deadline(self._deadline, loop.time())
        if process.returncode is None:
            if self._listening_seen_ns is not None:
                self._look_for_listener(process)
            self._truth("sigterm", pid=process.pid, cause=cause)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await self._before_deadline(loop.create_task(process.wait()))
        if process.returncode is None:
            self._truth("sigkill", pid=process.pid, cause=cause)
            self._signal_group(signal.SIGKILL)
            await process.wait()

    def _move_deadline(self, deadline: float) -> None:
        if deadline < self._deadline:
            self._deadline = deadline
            self._deadline_moved.set()

    async def _before_deadline(self, task: asyncio.Task[Any]) -> bool:
        """Waits for ``task`` until the (movable) deadline; cancels it and returns False if the
        deadline comes first."""
        loop = asyncio.get_running_loop()
        while not task.done() and self._deadline > loop.time():
            self._deadline_moved.clear()
            moved = loop.create_task(self._deadline_moved.wait())
            await asyncio.wait(
                {task, moved},
                timeout=self._deadline - loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            moved.cancel()
        if task.done():
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _run_hook(self, hook: JsonObject, budget_s: float) -> bool:
        if budget_s <= 0:
            return False
        try:
            return await run_handler(
                hook,
                pod_ip=self.pod.pod_ip,
                container=self.container,
                exec_prefix=self.pod.exec_prefix,
                timeout_s=budget_s,
            )
        except ValueError:
            return False

    # -- helpers -------------------------------------------------------------------------
    def _signal_group(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)

    def _truth(self, event: str, **fields: Any) -> None:
        self._truth_at(time.time_ns(), event, **fields)

    def _truth_at(self, ts_ns: int, event: str, **fields: Any) -> None:
        self.pod.truth.record_at(
            ts_ns,
            event,
            pod=self.pod.pod_name,
            node=self.pod.node_name,
            container=self.record.name,
            ip=self.pod.pod_ip,  # the judge maps a NAT target (Pod IP) to the Pod at that time
            **fields,
        )

    def _emit(self, reason: str, message: str, event_type: str = "Normal") -> None:
        self.pod.emit(reason, message, event_type)

    def _changed(self) -> None:
        self.pod.on_change()
