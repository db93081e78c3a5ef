"""Building and removing one cluster's namespaces, links, addresses and routes.

Layout (docs/local-cluster.md#data-plane): a client namespace and one namespace per node hang
off a fabric bridge that lives inside the LB namespace, which routes between them. The host
namespace gets no interface, address or route in the cluster's range, so nothing sent inside
can leave the machine. Everything is named with the cluster prefix, so removal works from the
name alone, even after the process that built it was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from localcluster.dataplane import ip
from localcluster.dataplane.addressing import FABRIC_BRIDGE, POD_BRIDGE, POD_IFNAME, AddressPlan


def build_commands(plan: AddressPlan) -> list[list[str]]:
    lb, client = plan.lb_netns, plan.client_netns
    fabric_len = plan.fabric_prefixlen
    cmds: list[list[str]] = [ip.netns_add(ns) for ns in (lb, client)]
    cmds += [ip.netns_add(node.netns) for node in plan.nodes]
    for ns in (lb, client, *(node.netns for node in plan.nodes)):
        cmds.append(ip.link_up(ns, "lo"))
    for ns in (lb, *(node.netns for node in plan.nodes)):
        cmds.append(ip.sysctl(ns, "net.ipv4.ip_forward", "1"))
    cmds += [
        ip.bridge(lb, FABRIC_BRIDGE),
        ip.addr_add(lb, FABRIC_BRIDGE, f"{plan.lb_fabric_ip}/{fabric_len}"),
        ip.link_up(lb, FABRIC_BRIDGE),
        ip.veth_pair(lb, plan.client_port, POD_IFNAME, client),
        ip.addr_add(lb, plan.client_port, f"{plan.lb_client_ip}/{plan.client_link_prefixlen}"),
        ip.link_up(lb, plan.client_port),
        ip.addr_add(client, POD_IFNAME, f"{plan.client_ip}/{plan.client_link_prefixlen}"),
        ip.link_up(client, POD_IFNAME),
        ip.route_add(client, "default", plan.lb_client_ip),
    ]
    for node in plan.nodes:
        pod_len = node.pod_cidr.split("/")[1]
        cmds += [
            ip.veth_pair(lb, node.fabric_port, POD_IFNAME, node.netns),
            ip.enslave(lb, node.fabric_port, FABRIC_BRIDGE),
            ip.addr_add(node.netns, POD_IFNAME, f"{node.fabric_ip}/{fabric_len}"),
            ip.link_up(node.netns, POD_IFNAME),
            ip.route_add(node.netns, "default", plan.lb_fabric_ip),
            ip.bridge(node.netns, POD_BRIDGE),
            ip.addr_add(node.netns, POD_BRIDGE, f"{node.pod_gateway}/{pod_len}"),
            ip.link_up(node.netns, POD_BRIDGE),
            ip.route_add(lb, node.pod_cidr, node.fabric_ip),
        ]
        cmds += [
            ip.route_add(node.netns, other.pod_cidr, other.fabric_ip)
            for other in plan.nodes
            if other.name != node.name
        ]
    return cmds


def build(plan: AddressPlan) -> None:
    """All or nothing: a failure half-way removes what was built before re-raising."""
    try:
        ip.run_all(build_commands(plan))
    except BaseException:
        cleanup(plan.prefix)
        raise


@dataclass
class Leftovers:
    namespaces: list[str] = field(default_factory=list)
    pids: dict[str, list[int]] = field(default_factory=dict)  # namespace -> processes inside

    def __bool__(self) -> bool:
        return bool(self.namespaces)

    def __str__(self) -> str:
        processes = sum(len(p) for p in self.pids.values())
        return f"{len(self.namespaces)} namespace(s) ({', '.join(sorted(self.namespaces))}), {processes} process(es)"

    def describe(self) -> str:
        lines = []
        for ns in self.namespaces:
            pids = self.pids.get(ns, [])
            lines.append(f"namespace {ns}" + (f" (processes {pids})" if pids else ""))
        return "\n".join(lines)


def list_leftovers(name: str) -> Leftovers:
    """Namespaces of cluster ``name`` (prefix ``name-``) and the processes running in them."""
    found = Leftovers()
    for ns in ip.list_netns():
        if ns.startswith(f"{name}-"):
            found.namespaces.append(ns)
            out = ip.run(ip.netns_pids(ns), check=False)
            found.pids[ns] = [int(p) for p in out.split() if p.isdigit()]
    return found


def kill_pids(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """A zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def cleanup(name: str, *, grace_s: float = 2.0) -> Leftovers:
    """Stop every process in the cluster's namespaces (SIGTERM, SIGKILL after ``grace_s``), then
    delete the namespaces, which takes their links, addresses, routes and nft tables with them.
    Idempotent; returns what was found."""
    found = list_leftovers(name)
    pids = [pid for ns in found.namespaces for pid in found.pids.get(ns, [])]
    kill_pids(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_pids([p for p in pids if _alive(p)], signal.SIGKILL)
    for ns in found.namespaces:
        ip.run(ip.netns_delete(ns), check=False)
    return found


@contextmanager
def built(plan: AddressPlan) -> Iterator[AddressPlan]:
    """The topology for the duration of a ``with`` block, removed however the block exits."""
    build(plan)
    try:
        yield plan
    finally:
        cleanup(plan.prefix)
