"""The kubelet's view of a Pod sandbox: whatever gives a Pod its own network and a way to run
its container inside it. The kernel data plane (``localcluster.dataplane.sandbox``) implements
it with one network namespace per Pod; tests can substitute a loopback-only fake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sandbox:
    netns: str | None  # None: the Pod shares the caller's network (fakes, loopback tests)
    ip: str


class SandboxProvider(Protocol):
    async def create(self, namespace: str, pod_name: str, pod_uid: str) -> Sandbox: ...

    async def destroy(self, sandbox: Sandbox) -> None:
        """Idempotent: destroying a sandbox twice, or one half-created, is not an error."""
        ...

    def exec_prefix(self, sandbox: Sandbox) -> list[str]:
        """argv prefix that runs a command inside the Pod's network (``[]`` when shared)."""
        ...
