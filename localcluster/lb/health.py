"""Health checking as cloud LBs do it: a probe per target every interval, with a timeout, and
a target's state flipping only after ``healthy_threshold`` consecutive successes or
``unhealthy_threshold`` consecutive failures. New targets start unhealthy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class HealthState:
    healthy: bool = False
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool, healthy_threshold: int, unhealthy_threshold: int) -> bool:
        """Record one probe result; True when the state flipped."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.healthy and self.successes >= healthy_threshold:
                self.healthy = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.healthy and self.failures >= unhealthy_threshold:
                self.healthy = False
                return True
        return False


async def probe_tcp(ip: str, port: int, timeout_s: float) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def probe_http(ip: str, port: int, timeout_s: float, path: str = "/") -> bool:
    """200 within the timeout is healthy; anything else (503, refused, silence) is not."""

    async def get() -> bool:
        reader, writer = await asyncio.open_connection(ip, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
            status_line = await reader.readline()
        finally:
            writer.close()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == b"200"

    try:
        return await asyncio.wait_for(get(), timeout_s)
    except (OSError, TimeoutError):
        return False
