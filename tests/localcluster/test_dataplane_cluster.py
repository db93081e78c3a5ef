"""Real nodes, LB and client namespaces around an in-process API server (Pods placed by hand):
the path client → LB → node → Pod, the per-node rule delay, and clean-up."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from localcluster.config import ClusterConfig, DelayModel, LBConfig, ProxyConfig
from localcluster.dataplane import DataplaneUnavailable, cleanup, list_leftovers, topology
from localcluster.dataplane import ip as ipcmd
from localcluster.dataplane.addressing import AddressPlan
from tests.localcluster.test_dataplane_support import ManualCluster, cluster_name, run_client

__all__ = ["cluster_name"]

pytestmark = pytest.mark.root


def fast_config(name: str, **overrides: object) -> ClusterConfig:
    base: dict[str, object] = {
        "name": name,
        "nodes": 3,
        "lb": LBConfig(hc_interval_s=0.5, hc_timeout_s=0.5, unhealthy_threshold=2),
        "proxy": ProxyConfig(delay=DelayModel(kind="fixed", value_s=0.05)),
    }
    base.update(overrides)
    return ClusterConfig.model_validate(base)


async def test_client_reaches_every_pod_through_lb_and_nodes(
    cluster_name: str, tmp_path: Path
) -> None:
    async with ManualCluster(fast_config(cluster_name), tmp_path) as cluster:
        for i in range(3):
            await cluster.add_pod(f"web-{i}", i)
        vip = await cluster.create_service("Cluster")
        assert ipaddress.IPv4Address(vip) in ipaddress.IPv4Network(cluster.plan.external_ip_cidr)
        await cluster.wait_truth(lambda r: r["event"] == "lb-health-changed" and r["healthy"], 5)
        results = await asyncio.to_thread(run_client, cluster.plan.client_netns, vip, 80, 90, 15)
        served = collections.Counter(r["pod"] for r in results)
        assert [r for r in results if r["error"]] == []
        assert set(served) == {"web-0", "web-1", "web-2"}, served
        assert min(served.values()) >= 10, served  # uniform random over 3 endpoints
        programmed = {
            r["node"]
            for r in cluster.truth()
            if r["event"] == "rules-programmed" and len(r["endpoints"]) == 3
        }
        assert programmed == {"node-1", "node-2", "node-3"}
        # the host cannot reach the Pods: it has no route to them, only its default route
        route = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
        assert all(not line.startswith(("198.18.", "198.19.")) for line in route.splitlines())
    assert list_leftovers(cluster_name).namespaces == []


async def test_a_node_applies_rules_only_after_its_configured_delay(
    cluster_name: str, tmp_path: Path
) -> None:
    slow = DelayModel(kind="fixed", value_s=1.5)
    config = fast_config(
        cluster_name,
        proxy=ProxyConfig(
            delay=DelayModel(kind="fixed", value_s=0.05), per_node_delay={"node-2": slow}
        ),
    )
    async with ManualCluster(config, tmp_path) as cluster:
        ips = [await cluster.add_pod(f"web-{i}", i) for i in range(2)]
        await cluster.create_service("Cluster")
        await cluster.wait_truth(
            lambda r: r["event"] == "rules-programmed" and r["node"] == "node-2", 5
        )
        changed_at = await cluster.set_endpoints([cluster.endpoints["web-0"]])
        node2 = cluster.plan.node("node-2").netns
        table = cluster.plan.proxy_table
        await asyncio.sleep(0.6)
        during = ipcmd.run(ipcmd.netns_exec(node2, "nft", "list", "table", "ip", table))
        assert f"dnat to {ips[1]}:8080" in during, (
            "node-2 must still send to web-1 during its delay"
        )

        def node_update(node: str):  # type: ignore[no-untyped-def]
            return lambda r: (
                r["event"] == "rules-programmed" and r["node"] == node and len(r["endpoints"]) == 1
            )

        fast = await cluster.wait_truth(node_update("node-1"), 3)
        late = await cluster.wait_truth(node_update("node-2"), 5)
        assert fast["ts_ns"] / 1e9 - changed_at < 1.0
        assert late["ts_ns"] / 1e9 - changed_at >= 1.5
        assert late["endpoints"] == [{"pod": "web-0", "ip": ips[0], "terminating": False}]
        after = ipcmd.run(ipcmd.netns_exec(node2, "nft", "list", "table", "ip", table))
        assert ips[1] not in after and f"dnat to {ips[0]}:8080" in after


async def test_cleanup_after_sigkill_removes_everything_and_start_refuses_leftovers(
    cluster_name: str, tmp_path: Path
) -> None:
    cluster = ManualCluster(fast_config(cluster_name, nodes=2), tmp_path)
    async with cluster:
        await cluster.add_pod("web-0", 0)
        for proc in cluster.nodes.processes.values():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert len(list_leftovers(cluster_name).namespaces) == 5  # client, lb, 2 nodes, 1 pod
        with pytest.raises(DataplaneUnavailable, match="leftovers"):
            from localcluster.dataplane import start_real_nodes

            await start_real_nodes(tmp_path / "x.sock", "t", cluster.config, tmp_path / "other")
        removed = cleanup(cluster_name)
        assert len(removed.namespaces) == 5
        assert list_leftovers(cluster_name).namespaces == []
    assert cleanup(cluster_name).namespaces == []  # idempotent


def test_a_failed_build_leaves_nothing_behind(cluster_name: str) -> None:
    plan = AddressPlan(ClusterConfig(name=cluster_name, nodes=2))
    ipcmd.run(ipcmd.netns_add(plan.nodes[1].netns))  # make the build collide half-way
    started = time.monotonic()
    with pytest.raises(ipcmd.CommandError):
        topology.build(plan)
    assert time.monotonic() - started < 10
    assert list_leftovers(cluster_name).namespaces == []


ROLLTRACE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "rolltrace")


async def test_cluster_exec_runs_a_command_in_the_client_namespace(
    cluster_name: str, tmp_path: Path
) -> None:
    async with ManualCluster(fast_config(cluster_name, nodes=1), tmp_path) as cluster:
        await cluster.add_pod("web-0", 0)
        vip = await cluster.create_service("Cluster")
        fetch = (
            "import urllib.request,sys;"
            f"r=urllib.request.urlopen('http://{vip}/',timeout=3);print(r.headers['X-Pod-Name'])"
        )
        argv = [ROLLTRACE, "cluster", "exec", "--name", cluster_name, "--", "python3", "-c", fetch]
        out = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "web-0"
        failing = [
            ROLLTRACE,
            "cluster",
            "exec",
            "--name",
            cluster_name,
            "--",
            "python3",
            "-c",
            "raise SystemExit(3)",
        ]
        assert subprocess.run(failing, capture_output=True, timeout=30).returncode == 3
    gone = subprocess.run(
        [ROLLTRACE, "cluster", "exec", "--name", cluster_name, "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 1 and "no client namespace" in gone.stderr
