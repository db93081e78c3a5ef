"""Where a Pod's processes live: the kubelet's only view of Pod networking.

The kubelet never touches namespaces or links itself; a ``SandboxProvider`` gives each Pod an
address and, optionally, a network namespace, plus the argv prefix that runs a command inside
it (``ip netns exec NAME`` for real namespaces). That keeps the kubelet testable without root:
``LoopbackSandboxProvider`` gives each Pod its own 127.x address on the host loopback, while
``localcluster.dataplane.sandbox.NetnsSandboxProvider`` builds real Pod namespaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sandbox:
    netns: str | None  # None: the Pod shares the kubelet's network namespace
    ip: str


class SandboxProvider(Protocol):
    async def create(self, namespace: str, pod_name: str, pod_uid: str) -> Sandbox: ...

    async def destroy(self, sandbox: Sandbox) -> None:
        """Also kills any process left inside, so the sandbox cannot outlive the Pod."""
        ...

    def exec_prefix(self, sandbox: Sandbox) -> list[str]:
        """Prepended to every command run in the Pod (containers, exec probes, exec hooks)."""
        ...


class LoopbackSandboxProvider:
    """Every Pod gets its own address from a loopback network (all of 127/8 answers on ``lo``
    on Linux, no setup needed), so Pods on one host can bind the same port without clashing.
    Addresses are handed out round-robin, so a new Pod does not reuse the address of one that
    just went away while stray connections to it may still arrive."""

    def __init__(self, network: str = "127.0.100.0/24") -> None:
        net = ipaddress.IPv4Network(network)
        if not net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            raise ValueError(f"{network} is not a loopback network")
        self._free = [str(a) for a in net.hosts()]
        self._in_use: set[str] = set()
        self._lock = asyncio.Lock()

    async def create(self, namespace: str, pod_name: str, pod_uid: str) -> Sandbox:
        async with self._lock:
            for _ in range(len(self._free)):
                candidate = self._free.pop(0)
                self._free.append(candidate)
                if candidate not in self._in_use:
                    self._in_use.add(candidate)
                    return Sandbox(netns=None, ip=candidate)
        raise RuntimeError("loopback sandbox network is exhausted")

    async def destroy(self, sandbox: Sandbox) -> None:
        async with self._lock:
            self._in_use.discard(sandbox.ip)

    def exec_prefix(self, sandbox: Sandbox) -> list[str]:
        return []
