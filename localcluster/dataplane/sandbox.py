"""Where a Pod's processes live: the kubelet's only view of Pod networking, and its two
implementations.

The kubelet never touches namespaces or links itself; a ``SandboxProvider`` gives each Pod an
address and, optionally, a network namespace, plus the argv prefix that runs a command inside
it (``ip netns exec NAME`` for real namespaces). That keeps the kubelet testable without root:
``LoopbackSandboxProvider`` gives each Pod its own 127.x address on the host loopback, while
``NetnsSandboxProvider`` builds real Pod namespaces: one per Pod, a veth to its node's Pod
bridge, an address from the node's Pod CIDR and a default route via the node, as a CNI bridge
plugin would set up. The interface sits here, below the kubelet, so the data plane implements
it without importing the kubelet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from dataclasses import dataclass
from typing import Protocol

from localcluster.dataplane import ip
from localcluster.dataplane.addressing import POD_BRIDGE, POD_IFNAME, AddressPlan, NodeNet
from localcluster.dataplane.topology import kill_pids


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


class NetnsSandboxProvider:
    def __init__(self, plan: AddressPlan, node: NodeNet) -> None:
        self._plan = plan
        self._node = node
        network = ipaddress.IPv4Network(node.pod_cidr)
        gateway = ipaddress.IPv4Address(node.pod_gateway)
        self._free = [str(a) for a in network.hosts() if a != gateway]
        self._in_use: dict[str, str] = {}  # netns -> ip
        self._host_ports: dict[str, str] = {}  # netns -> node-side veth
        self._lock = asyncio.Lock()

    def _allocate(self) -> str:
        """Round-robin, so a new Pod does not take the address of one that just went away and
        a late packet for the old Pod cannot reach the new one."""
        for _ in range(len(self._free)):
            candidate = self._free.pop(0)
            self._free.append(candidate)
            if candidate not in self._in_use.values():
                return candidate
        raise RuntimeError(f"Pod CIDR {self._node.pod_cidr} of {self._node.name} is exhausted")

    def setup_commands(self, netns: str, host_port: str, pod_ip: str) -> list[list[str]]:
        prefixlen = ipaddress.IPv4Network(self._node.pod_cidr).prefixlen
        return [
            ip.netns_add(netns),
            ip.veth_pair(self._node.netns, host_port, POD_IFNAME, netns),
            ip.enslave(self._node.netns, host_port, POD_BRIDGE),
            ip.link_up(netns, "lo"),
            ip.addr_add(netns, POD_IFNAME, f"{pod_ip}/{prefixlen}"),
            ip.link_up(netns, POD_IFNAME),
            ip.route_add(netns, "default", self._node.pod_gateway),
        ]

    async def create(self, namespace: str, pod_name: str, pod_uid: str) -> Sandbox:
        netns = self._plan.pod_netns(pod_uid)
        async with self._lock:
            pod_ip = self._allocate()
            self._in_use[netns] = pod_ip
            self._host_ports[netns] = self._plan.pod_host_port(pod_uid)
        sandbox = Sandbox(netns=netns, ip=pod_ip)
        try:
            for argv in self.setup_commands(netns, self._plan.pod_host_port(pod_uid), pod_ip):
                await ip.run_async(argv)
        except BaseException:
            await self.destroy(sandbox)
            raise
        return sandbox

    async def destroy(self, sandbox: Sandbox) -> None:
        """Kills whatever still runs in the namespace first: a namespace held by a process
        would outlive its deletion, and with it the veth and the address."""
        if sandbox.netns is None:
            return
        await kill_netns_processes(sandbox.netns)
        host_port = self._host_ports.get(sandbox.netns)
        if host_port:  # the kernel frees a deleted namespace's links later, asynchronously
            await ip.run_async(ip.ip(self._node.netns, "link", "del", host_port), check=False)
        await ip.run_async(ip.netns_delete(sandbox.netns), check=False)
        async with self._lock:
            self._in_use.pop(sandbox.netns, None)
            self._host_ports.pop(sandbox.netns, None)

    def exec_prefix(self, sandbox: Sandbox) -> list[str]:
        return ["ip", "netns", "exec", sandbox.netns] if sandbox.netns else []


async def kill_netns_processes(netns: str) -> list[int]:
    out = await ip.run_async(ip.netns_pids(netns), check=False)
    pids = [int(p) for p in out.split() if p.isdigit()]
    kill_pids(pids, signal.SIGKILL)
    return pids
