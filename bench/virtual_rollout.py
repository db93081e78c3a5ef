"""Control-plane overhead of a rollout on virtual nodes: wall time versus the configured delays.

A Deployment of N replicas (readiness probe, start delay) rolls to a new image on an in-process
API server with the real controllers and virtual nodes. The baseline is the same rollout with
an instant control plane: the rollout math alone (``controllers.rollout.rolling_step``) is
stepped to a fixed point whenever a batch of Pods becomes available, and each new Pod takes
exactly the configured delays (start + readiness, × time_scale, + minReadySeconds) to become
available. wall − baseline is what the watch / informer / queue / write machinery adds.

    .venv/bin/python bench/virtual_rollout.py [--replicas 100] [--time-scale 0.1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import statistics
import time
from dataclasses import replace

from localcluster.apiserver import InProcessClient, Store
from localcluster.config import ClusterConfig, VirtualNodeConfig
from localcluster.controllers import start_controllers
from localcluster.controllers.rollout import DeploymentSpec, RSView, rolling_step
from localcluster.virtualnode import start_virtual_nodes
from localcluster.virtualnode.lifecycle import readiness_delay_s

NS = "default"
START_DELAY_S = 1.0
PROBE = {"httpGet": {"path": "/", "port": 8080}, "initialDelaySeconds": 2, "periodSeconds": 1}


def ideal_rollout_s(spec: DeploymentSpec, pod_ready_s: float) -> float:
    """The rollout's duration if every controller acted instantly: only Pod delays count."""
    old = RSView(
        "old", spec.replicas, available=spec.replicas, status_replicas=spec.replicas, created=0
    )
    new = RSView("new", 0, created=1)
    pending: list[float] = []  # availability times of new Pods
    now = 0.0
    while True:
        while sizes := rolling_step(spec, new, [old]):
            if "new" in sizes and sizes["new"] > new.replicas:
                for _ in range(sizes["new"] - new.replicas):
                    heapq.heappush(pending, now + pod_ready_s)
            new = replace(
                new,
                replicas=sizes.get("new", new.replicas),
                status_replicas=sizes.get("new", new.replicas),
            )
            old_size = sizes.get("old", old.replicas)
            old = replace(
                old,
                replicas=old_size,
                status_replicas=old_size,
                available=min(old.available, old_size),
            )
        if old.replicas == 0 and new.available == spec.replicas:
            return now
        now = heapq.heappop(pending)
        new = replace(new, available=new.available + 1)
        while pending and pending[0] <= now:
            heapq.heappop(pending)
            new = replace(new, available=new.available + 1)


def deployment(replicas: int, surge: int | str, unavailable: int | str) -> dict[str, object]:
    return {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "app", "image": "demo:1", "readinessProbe": PROBE}]
                },
            },
        },
    }


async def _complete(client: InProcessClient, replicas: int) -> None:
    while True:
        d = await client.get("deployments", "web", NS)
        s = d.get("status") or {}
        if (
            s.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and s.get("updatedReplicas") == replicas
            and s.get("replicas") == replicas
            and s.get("availableReplicas") == replicas
        ):
            return
        await asyncio.sleep(0.005)


async def measure(
    replicas: int, surge: int | str, unavailable: int | str, time_scale: float
) -> float:
    config = ClusterConfig(
        nodes=4,
        virtual=True,
        virtual_node=VirtualNodeConfig(start_delay_s=START_DELAY_S, time_scale=time_scale),
    )
    store = Store()
    client = InProcessClient(store)
    nodes = await start_virtual_nodes(client, config)
    controllers = await start_controllers(client, config)
    try:
        await client.create("deployments", deployment(replicas, surge, unavailable), NS)
        await asyncio.wait_for(_complete(client, replicas), 120)
        patch = {
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:2"}]}}}
        }
        started = time.perf_counter()
        await client.patch("deployments", "web", patch, "strategic", NS)
        await asyncio.wait_for(_complete(client, replicas), 300)
        return time.perf_counter() - started
    finally:
        await controllers.stop()
        await nodes.stop()
        store.close_watchers()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pod_ready_s = (
        START_DELAY_S + readiness_delay_s({"readinessProbe": PROBE}, START_DELAY_S)
    ) * args.time_scale
    print(
        f"{args.replicas} replicas, Pod start+ready = {pod_ready_s * 1000:.0f} ms (time_scale {args.time_scale})"
    )
    print(
        f"{'maxSurge/maxUnavail':>20} {'baseline s':>11} {'wall s (median)':>16} {'overhead s':>11} {'ratio':>6}"
    )
    for surge, unavailable in [("25%", "25%"), ("10%", 0), (0, "10%"), ("100%", 0)]:
        spec = DeploymentSpec(replicas=args.replicas, max_surge=surge, max_unavailable=unavailable)
        baseline = ideal_rollout_s(spec, pod_ready_s)
        walls = [
            asyncio.run(measure(args.replicas, surge, unavailable, args.time_scale))
            for _ in range(args.repeat)
        ]
        wall = statistics.median(walls)
        print(
            f"{f'{surge}/{unavailable}':>20} {baseline:>11.2f} {wall:>16.2f} {wall - baseline:>11.2f} {wall / baseline:>6.2f}"
        )


if __name__ == "__main__":
    main()
