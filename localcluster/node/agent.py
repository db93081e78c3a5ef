"""One node's agent process, running inside the node's network namespace: the kubelet (with a
namespace per Pod) and kube-proxy, side by side as on a real node."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from localcluster.apiclient import ApiClient
from localcluster.config import ClusterConfig
from localcluster.dataplane import nft
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.sandbox import NetnsSandboxProvider
from localcluster.kubelet import Kubelet, KubeletOptions
from localcluster.proxy.healthcheck import HealthCheckServers
from localcluster.proxy.proxier import Proxier
from localcluster.truth import TruthWriter


async def run_node(
    client: ApiClient,
    node_name: str,
    config: ClusterConfig,
    truth_path: str | None,
    logs_dir: str | None = None,
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
        nft.netns_applier(None),
        proxy_truth,
        health,
    )
    kubelet = Kubelet(
        client,
        node_name,
        NetnsSandboxProvider(plan, node),
        TruthWriter(truth_path, f"kubelet/{node_name}"),
        config,
        KubeletOptions(
            node_ip=node.fabric_ip,
            pod_cidr=node.pod_cidr,
            logs_dir=Path(logs_dir) if logs_dir else None,
            app_truth_path=Path(truth_path) if truth_path else None,
        ),
    )
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(proxier.run())
            group.create_task(kubelet.run())
    finally:
        await kubelet.stop()  # kills the Pods' processes; the namespaces go with the node
        await health.close()
        with contextlib.suppress(Exception):
            await nft.apply_async(None, nft.delete_table_text("ip", plan.proxy_table))
        proxy_truth.close()
