"""The cloud-LB emulator: health-check state machine, forwarding rules, target selection
(pure), and for real: Local policy drops at a node without a local endpoint until the health
check takes the node out, and none when the terminating fallback keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from localcluster.config import ClusterConfig, DelayModel, LBConfig, ProxyConfig
from localcluster.dataplane.addressing import AddressPlan
from localcluster.lb.balancer import node_targets, pod_targets
from localcluster.lb.health import HealthState
from localcluster.lb.rules import Frontend, render_lb_body
from tests.localcluster.test_dataplane_support import ManualCluster, cluster_name, run_client

__all__ = ["cluster_name"]


def test_health_flips_only_after_consecutive_thresholds() -> None:
    state = HealthState()
    assert not state.healthy
    assert not state.observe(True, healthy_threshold=2, unhealthy_threshold=3)
    assert state.observe(True, 2, 3) and state.healthy
    assert not state.observe(False, 2, 3)
    assert not state.observe(True, 2, 3)  # a success resets the failure count
    assert not state.observe(False, 2, 3) and not state.observe(False, 2, 3)
    assert state.observe(False, 2, 3) and not state.healthy


def test_rules_pick_a_random_target_per_connection_and_drop_without_targets() -> None:
    body = render_lb_body(
        [
            Frontend(
                "d/a", "198.18.2.1", "tcp", 80, (("198.18.0.11", 30080), ("198.18.0.12", 30080))
            ),
            Frontend("d/b", "198.18.2.2", "tcp", 443, (("198.19.0.5", 8443),)),
            Frontend("d/c", "198.18.2.3", "tcp", 80, ()),
        ]
    )
    assert (
        "ip daddr 198.18.2.1 tcp dport 80 dnat ip addr . port to numgen random mod 2 "
        "map { 0 : 198.18.0.11 . 30080, 1 : 198.18.0.12 . 30080 }" in body
    )
    assert "ip daddr 198.18.2.2 tcp dport 443 dnat to 198.19.0.5:8443" in body
    assert "ip daddr 198.18.2.3 tcp dport 80 drop" in body
    assert "masquerade" not in body  # the client's address reaches the node


def _svc(policy: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": policy,
            "healthCheckNodePort": 32100,
            "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}],
        },
    }


def test_node_targets_check_the_health_port_under_local_and_the_node_port_under_cluster() -> None:
    plan = AddressPlan(ClusterConfig(name="rt", nodes=2))
    local = node_targets(_svc("Local"), plan)
    assert [(t.name, t.ip, t.check) for t in local] == [
        ("node-1", plan.nodes[0].fabric_ip, ("http", 32100)),
        ("node-2", plan.nodes[1].fabric_ip, ("http", 32100)),
    ]
    assert node_targets(_svc("Cluster"), plan)[0].check == ("tcp", 30080)
    assert local[0].ports == ((80, 30080),)


def test_pod_targets_are_the_ready_endpoints() -> None:
    sl = {
        "metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {
                "addresses": ["198.19.0.2"],
                "conditions": {"ready": True},
                "targetRef": {"name": "a"},
            },
            {
                "addresses": ["198.19.0.3"],
                "conditions": {"ready": False, "terminating": True},
                "targetRef": {"name": "b"},
            },
        ],
    }
    targets = pod_targets(_svc("Cluster"), [sl])
    assert [(t.name, t.ip, t.ports, t.check) for t in targets] == [
        ("a", "198.19.0.2", ((80, 8080),), ("tcp", 8080))
    ]


def _config(name: str, fallback: bool, targets: str = "nodes") -> ClusterConfig:
    return ClusterConfig(
        name=name,
        nodes=3,
        lb=LBConfig(targets=targets, hc_interval_s=0.5, hc_timeout_s=0.3, unhealthy_threshold=3),  # type: ignore[arg-type]
        proxy=ProxyConfig(
            delay=DelayModel(kind="fixed", value_s=0.05), terminating_fallback=fallback
        ),
    )


@pytest.mark.root
@pytest.mark.parametrize("fallback", [False, True], ids=["no-fallback", "terminating-fallback"])
async def test_local_policy_drops_until_the_health_check_removes_the_node(
    cluster_name: str, tmp_path: Path, fallback: bool
) -> None:
    async with ManualCluster(_config(cluster_name, fallback), tmp_path) as cluster:
        for i in range(3):
            await cluster.add_pod(f"web-{i}", i)
        vip = await cluster.create_service("Local")
        for node in ("node-1", "node-2", "node-3"):
            await cluster.wait_truth(
                lambda r, n=node: (
                    r["event"] == "lb-health-changed" and r["target"] == n and r["healthy"]
                ),
                5,
            )
        load = asyncio.create_task(
            asyncio.to_thread(run_client, cluster.plan.client_netns, vip, 80, 400, 5.0, 0.5, 0.01)
        )
        await asyncio.sleep(1.0)
        # node-3 loses its only Pod: terminating (still serving) with the fallback, gone without
        leaving = dict(cluster.endpoints["web-2"])
        leaving["conditions"] = {"ready": False, "serving": True, "terminating": True}
        endpoints = [cluster.endpoints["web-0"], cluster.endpoints["web-1"]]
        changed_at = await cluster.set_endpoints([*endpoints, leaving] if fallback else endpoints)
        results = await load
        removed = await cluster.wait_truth(
            lambda r: (
                r["event"] == "lb-targets-changed"
                and r["ts_ns"] / 1e9 > changed_at
                and "node-3" not in r["targets"]
            ),
            5,
        )  # recorded once the LB's rules no longer send to node-3
        removed_at = removed["ts_ns"] / 1e9
        hc = await cluster.wait_truth(
            lambda r: (
                r["event"] == "healthcheck-changed" and r["node"] == "node-3" and not r["healthy"]
            ),
            1,
        )
        assert hc["local_endpoints"] == 0  # a terminating endpoint does not keep the node in the LB
    errors = [r for r in results if r["error"]]
    after = [r for r in results if float(r["t"]) > removed_at + 0.05]
    assert after and all(r["pod"] in {"web-0", "web-1"} for r in after)
    if fallback:
        assert errors == []
        assert any(r["pod"] == "web-2" and float(r["t"]) > changed_at + 0.2 for r in results)
    else:
        assert errors, "traffic sent to node-3 must be dropped while the LB still uses it"
        assert {r["error"] for r in errors} == {"timeout"}
        assert all(changed_at < float(r["t"]) < removed_at for r in errors), (
            changed_at,
            removed_at,
            errors,
        )


@pytest.mark.root
@pytest.mark.parametrize("draining", [True, False], ids=["draining", "no-draining"])
async def test_ip_mode_sends_to_pods_and_deregisters_after_the_registration_delay(
    cluster_name: str, tmp_path: Path, draining: bool
) -> None:
    """Without draining, only a request in flight to the deregistered Pod can fail (its
    conntrack entry goes; the quick test server leaves few in flight); with draining, none."""
    config = _config(cluster_name, fallback=True, targets="pods")
    config.lb.registration_delay_s = 1.0
    config.lb.draining = draining
    config.lb.deregistration_delay_s = 5.0
    async with ManualCluster(config, tmp_path) as cluster:
        pod_ips = [await cluster.add_pod(f"web-{i}", i) for i in range(2)]
        vip = await cluster.create_service("Cluster")
        registered = await cluster.wait_truth(
            lambda r: r["event"] == "lb-targets-changed" and len(r["targets"]) == 2, 5
        )
        assert sorted(registered["addresses"]) == sorted(f"{ip}:8080" for ip in pod_ips)
        await cluster.wait_truth(
            lambda r: r["event"] == "lb-health-changed" and r["target"] == "web-1" and r["healthy"],
            5,
        )
        load = asyncio.create_task(
            asyncio.to_thread(run_client, cluster.plan.client_netns, vip, 80, 2000, 3.0, 0.5, 0.005)
        )
        await asyncio.sleep(0.5)
        changed_at = await cluster.set_endpoints([cluster.endpoints["web-0"]])
        results = await load
        gone = await cluster.wait_truth(
            lambda r: (
                r["event"] == "lb-targets-changed"
                and r["targets"] == ["web-0"]
                and ts_s(r) > changed_at
            ),
            3,
        )
    assert ts_s(gone) - changed_at >= 1.0  # the controller's registration delay
    to_web1 = [float(r["t"]) for r in results if r["pod"] == "web-1"]
    assert any(t > changed_at for t in to_web1), "web-1 keeps traffic until deregistered"
    assert all(t < ts_s(gone) for t in to_web1)
    errors = [r for r in results if r["error"]]
    if draining:
        assert errors == []
    else:  # only requests already in flight when web-1 left (client timeout 0.5 s)
        assert all(ts_s(gone) - 0.6 < float(r["t"]) < ts_s(gone) for r in errors), errors


def ts_s(record: dict[str, Any]) -> float:
    return float(record["ts_ns"]) / 1e9
