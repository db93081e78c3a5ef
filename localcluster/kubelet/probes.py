"""Probe and lifecycle-hook handlers (httpGet, tcpSocket, exec, sleep) and probe thresholds.

Probes run from the kubelet's namespace to the Pod's IP, as a real kubelet probes from the node;
exec handlers run inside the Pod's sandbox through the provider's exec prefix. Every handler is
bounded by a timeout, so a hung Pod can never hang the kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import Any

from localcluster.apiclient import JsonObject

HANDLER_KINDS = ("httpGet", "tcpSocket", "exec", "sleep")


@dataclass(frozen=True)
class ProbeSpec:
    handler: JsonObject  # the probe object itself: one of httpGet / tcpSocket / exec
    initial_delay_s: float
    period_s: float
    timeout_s: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def parse(cls, probe: JsonObject) -> ProbeSpec:
        return cls(
            handler=probe,
            initial_delay_s=float(probe.get("initialDelaySeconds", 0)),
            period_s=max(float(probe.get("periodSeconds", 10)), 0.05),
            timeout_s=max(float(probe.get("timeoutSeconds", 1)), 0.05),
            success_threshold=max(int(probe.get("successThreshold", 1)), 1),
            failure_threshold=max(int(probe.get("failureThreshold", 3)), 1),
        )


class ProbeCounter:
    """Upstream's result manager: a result flips only after ``successThreshold`` consecutive
    successes or ``failureThreshold`` consecutive failures."""

    def __init__(self, spec: ProbeSpec, initial: bool) -> None:
        self.spec = spec
        self.result = initial
        self._streak = 0
        self._streak_ok = initial

    def observe(self, ok: bool) -> bool:
        """Records one probe outcome; returns True when the result changed."""
        self._streak = self._streak + 1 if ok == self._streak_ok else 1
        self._streak_ok = ok
        needed = self.spec.success_threshold if ok else self.spec.failure_threshold
        if ok != self.result and self._streak >= needed:
            self.result = ok
            return True
        return False


def resolve_port(port: Any, container: JsonObject) -> int:
    """A numeric port, or a named one looked up in the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not declared by container {container.get('name')!r}")


async def http_get(
    host: str, port: int, path: str, headers: list[JsonObject], timeout_s: float
) -> bool:
    """Success is a status in [200, 400), as upstream."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            extra = "".join(f"{h['name']}: {h['value']}\r\n" for h in headers)
            request = f"GET {path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\n{extra}Connection: close\r\n\r\n"
            writer.write(request.encode("latin-1"))
            status_line = await reader.readline()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()


async def tcp_check(host: str, port: int, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def run_exec(argv: list[str], timeout_s: float) -> bool:
    """Success is exit code 0; a command still running at the timeout is killed and fails."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return False
    try:
        async with asyncio.timeout(timeout_s):
            return await process.wait() == 0
    except TimeoutError:
        return False
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()


async def run_handler(
    handler: JsonObject,
    *,
    pod_ip: str,
    container: JsonObject,
    exec_prefix: list[str],
    timeout_s: float,
) -> bool:
    """Runs whichever of httpGet / tcpSocket / exec / sleep ``handler`` holds."""
    if "httpGet" in handler:
        spec = handler["httpGet"]
        return await http_get(
            spec.get("host") or pod_ip,
            resolve_port(spec.get("port"), container),
            spec.get("path", "/"),
            spec.get("httpHeaders") or [],
            timeout_s,
        )
    if "tcpSocket" in handler:
        spec = handler["tcpSocket"]
        return await tcp_check(
            spec.get("host") or pod_ip, resolve_port(spec.get("port"), container), timeout_s
        )
    if "exec" in handler:
        command = [str(c) for c in handler["exec"].get("command") or []]
        return bool(command) and await run_exec([*exec_prefix, *command], timeout_s)
    if "sleep" in handler:
        await asyncio.sleep(min(float(handler["sleep"].get("seconds", 0)), timeout_s))
        return True
    raise ValueError(f"handler has none of {HANDLER_KINDS}: {sorted(handler)}")
