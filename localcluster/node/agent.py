"""One node's agent process, running inside the node's network namespace: kube-proxy always,
the kubelet (with namespace sandboxes) when ``localcluster.kubelet`` provides one, and the Node
object's registration when no kubelet does it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from typing import Any

from localcluster.apiclient import ApiClient, ApiError
from localcluster.config import ClusterConfig
from localcluster.dataplane import nft
from localcluster.dataplane.addressing import AddressPlan, NodeNet
from localcluster.dataplane.sandbox import NetnsSandboxProvider
from localcluster.proxy.healthcheck import HealthCheckServers
from localcluster.proxy.proxier import Proxier, netns_applier
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)
KUBELET_REGISTRATION_WAIT_S = 3.0


def node_object(node: NodeNet) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.fabric_ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
        },
    }


def find_kubelet() -> Any | None:
    """H8's Kubelet class, if that package provides one (the node works without it)."""
    for module_name in ("localcluster.kubelet", "localcluster.kubelet.kubelet"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        kubelet = getattr(module, "Kubelet", None)
        if kubelet is not None:
            return kubelet
    return None


async def ensure_node_registered(client: ApiClient, node: NodeNet, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await client.get("nodes", node.name)
            return
        except ApiError as exc:
            if exc.code != 404:
                raise
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    with contextlib.suppress(ApiError):  # 409: the kubelet won the race
        await client.create("nodes", node_object(node))


async def run_node(
    client: ApiClient, node_name: str, config: ClusterConfig, truth_path: str | None
) -> None:
    plan = AddressPlan(config)
    node = plan.node(node_name)
    proxy_truth = TruthWriter(truth_path, f"kube-proxy/{node_name}")
    health = HealthCheckServers(node_name, proxy_truth)
    proxier = Proxier(
        client,
        node_name,
        config,
        plan.pod_range,
        plan.proxy_table,
        netns_applier(None),
        proxy_truth,
        health,
    )
    kubelet_class = find_kubelet()
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(proxier.run())
            if kubelet_class is not None:
                sandboxes = NetnsSandboxProvider(plan, node)
                kubelet_truth = TruthWriter(truth_path, f"kubelet/{node_name}")
                kubelet = kubelet_class(client, node_name, sandboxes, kubelet_truth, config)
                group.create_task(kubelet.run())
                await ensure_node_registered(client, node, KUBELET_REGISTRATION_WAIT_S)
            else:
                await ensure_node_registered(client, node, 0.0)
    finally:
        await health.close()
        with contextlib.suppress(Exception):
            await nft.apply_async(None, nft.delete_table_text("ip", plan.proxy_table))
        proxy_truth.close()
