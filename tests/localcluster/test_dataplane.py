"""The data plane's topology and Pod sandboxes: pure layout checks, then real namespaces."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from localcluster.config import ClusterConfig
from localcluster.dataplane import ip, topology
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.sandbox import NetnsSandboxProvider
from tests.localcluster.test_dataplane_support import cluster_name, netns_names

__all__ = ["cluster_name"]


def test_every_address_lies_in_the_configured_range_and_pod_cidrs_do_not_overlap() -> None:
    plan = AddressPlan(ClusterConfig(name="rt", nodes=5, address_range="10.200.0.0/16"))
    net = ipaddress.IPv4Network("10.200.0.0/16")
    addresses = [plan.lb_fabric_ip, plan.client_ip, plan.lb_client_ip, plan.external_ips()[0]]
    addresses += [n.fabric_ip for n in plan.nodes] + [n.pod_gateway for n in plan.nodes]
    assert all(ipaddress.IPv4Address(a) in net for a in addresses)
    cidrs = [ipaddress.IPv4Network(n.pod_cidr) for n in plan.nodes]
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    assert all(c.subnet_of(ipaddress.IPv4Network(plan.pod_range)) for c in cidrs)


def test_build_never_touches_the_host_namespace() -> None:
    """Every link/addr/route command names a namespace; only `ip netns add` runs unscoped."""
    plan = AddressPlan(ClusterConfig(name="rt"))
    for argv in topology.build_commands(plan):
        if argv[:2] == ["ip", "netns"]:
            assert argv[2] == "add" and argv[3].startswith("rt-")
        elif argv[0] == "nsenter":
            assert argv[1].startswith("--net=/run/netns/rt-")
        else:
            assert argv[1] == "-n" and argv[2].startswith("rt-"), argv


def test_interface_names_fit_the_kernel_limit() -> None:
    plan = AddressPlan(ClusterConfig(name="abcdefgh", nodes=32))
    names = [plan.client_port, plan.pod_host_port("0123456789abcdef-0123")]
    names += [n.fabric_port for n in plan.nodes]
    assert all(len(n) <= 15 for n in names), names


def _host_routes_into(cidr: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True
    )
    net = ipaddress.IPv4Network(cidr)
    hits = []
    for line in out.stdout.splitlines():
        dest = line.split()[0]
        if dest in {"default", "broadcast", "local", "unreachable", "prohibit", "blackhole"}:
            dest = line.split()[1] if dest != "default" else "0.0.0.0/0"
        try:
            if dest != "0.0.0.0/0" and ipaddress.IPv4Network(dest, strict=False).overlaps(net):
                hits.append(line)
        except ValueError:
            continue
    return hits


def _in_ns(netns: str, code: str) -> str:
    return ip.run(ip.netns_exec(netns, "python3", "-c", code))


@pytest.mark.root
def test_topology_connects_client_to_nodes_and_stays_off_the_host(cluster_name: str) -> None:
    plan = AddressPlan(ClusterConfig(name=cluster_name, nodes=2))
    topology.build(plan)
    assert {plan.lb_netns, plan.client_netns, *(n.netns for n in plan.nodes)} <= netns_names()
    # client -> LB -> node-2 (TCP: a listener in node-2, a connect from the client namespace)
    node = plan.nodes[1]
    assert _greeting(ip.netns_exec(node.netns), plan.client_netns, node.pod_gateway, 9) == "hi"
    # the host namespace has no address and no route into the range
    assert _host_routes_into(plan.config.address_range) == []
    host_addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    net = ipaddress.IPv4Network(plan.config.address_range)
    for line in host_addrs.splitlines():
        assert ipaddress.IPv4Interface(line.split()[3]).ip not in net, line
    get = subprocess.run(["ip", "route", "get", node.fabric_ip], capture_output=True, text=True)
    assert plan.lb_netns not in get.stdout and "fabric0" not in get.stdout
    topology.cleanup(cluster_name)
    assert not any(ns.startswith(f"{cluster_name}-") for ns in netns_names())


@pytest.mark.root
async def test_sandbox_gives_a_pod_its_namespace_address_and_route(cluster_name: str) -> None:
    plan = AddressPlan(ClusterConfig(name=cluster_name, nodes=2))
    with topology.built(plan):
        await _check_sandboxes(plan)


def _greeting(server_prefix: list[str], client_netns: str, address: str, port: int) -> str:
    """A one-shot TCP server behind ``server_prefix`` greets a client in ``client_netns``: proof
    that the client reaches ``address`` across the fabric."""
    server = subprocess.Popen(
        [
            *server_prefix,
            "python3",
            "-c",
            f"import socket;s=socket.socket();s.bind(('{address}',{port}));s.listen();"
            "s.settimeout(5);s.accept()[0].send(b'hi')",
        ]
    )
    try:
        return _in_ns(
            client_netns,
            "import socket,time\n"
            "for _ in range(50):\n"
            "  try:\n"
            f"    c=socket.create_connection(('{address}',{port}),timeout=2);break\n"
            "  except ConnectionRefusedError: time.sleep(0.05)\n"
            "print(c.recv(2).decode())",
        ).strip()
    finally:
        server.wait(timeout=5)


async def _check_sandboxes(plan: AddressPlan) -> None:
    cluster_name = plan.prefix
    provider = NetnsSandboxProvider(plan, plan.nodes[0])
    sandbox = await provider.create("default", "web-1", "1f2e3d4c-0000-1111-2222-333344445555")
    assert sandbox.netns is not None and sandbox.netns.startswith(f"{cluster_name}-pod-")
    assert ipaddress.IPv4Address(sandbox.ip) in ipaddress.IPv4Network(plan.nodes[0].pod_cidr)
    # a server in the pod, reached from the client namespace across the fabric
    assert _greeting(provider.exec_prefix(sandbox), plan.client_netns, sandbox.ip, 80) == "hi"
    second = await provider.create("default", "web-2", "99999999-0000-1111-2222-333344445555")
    assert second.ip != sandbox.ip
    await provider.destroy(sandbox)
    await provider.destroy(sandbox)  # idempotent
    await provider.destroy(second)
    assert not any(ns.startswith(f"{cluster_name}-pod-") for ns in netns_names())
    links = ip.run(ip.ip(plan.nodes[0].netns, "-o", "link"))
    assert f"{cluster_name}p" not in links


def test_missing_prerequisites_are_named_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    from localcluster.dataplane import cluster

    monkeypatch.setattr(cluster.sys, "platform", "linux")
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(cluster.shutil, "which", lambda tool: None if tool == "nft" else "/x")
    missing = cluster.missing_prerequisites()
    assert len(missing) == 2
    assert missing[0].startswith("root") and missing[1] == "the `nft` executable on PATH"
    with pytest.raises(cluster.DataplaneUnavailable, match=r"root .*; the `nft` executable"):
        cluster.check_prerequisites()
