"""Shared helpers for the controller / virtual node integration tests (no tests here): an
in-process API server with controllers and virtual nodes, object builders, and waiting."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from localcluster.apiclient import ApiClient, JsonObject
from localcluster.apiserver import InProcessClient, Store
from localcluster.config import ClusterConfig, VirtualNodeConfig
from localcluster.controllers import start_controllers
from localcluster.virtualnode import start_virtual_nodes

NS = "default"
TIME_SCALE = 0.01


def cluster_config(**overrides: Any) -> ClusterConfig:
    values: dict[str, Any] = {
        "nodes": 3,
        "virtual": True,
        "virtual_node": VirtualNodeConfig(start_delay_s=1.0, time_scale=TIME_SCALE),
    }
    values.update(overrides)
    return ClusterConfig(**values)


@contextlib.asynccontextmanager
async def virtual_cluster(
    config: ClusterConfig | None = None, **store_args: Any
) -> AsyncIterator[tuple[Store, ApiClient]]:
    config = config or cluster_config()
    store = Store(**store_args)
    client = InProcessClient(store)
    nodes = await start_virtual_nodes(client, config)
    controllers = await start_controllers(client, config)
    try:
        yield store, client
    finally:
        await controllers.stop()
        await nodes.stop()
        store.close_watchers()


def deployment(
    name: str = "web",
    replicas: int = 3,
    *,
    max_surge: int | str = "25%",
    max_unavailable: int | str = "25%",
    min_ready_seconds: int = 0,
    image: str = "demo:1",
    probe: JsonObject | None = None,
    strategy: str = "RollingUpdate",
    **spec: Any,
) -> JsonObject:
    container: JsonObject = {
        "name": "app",
        "image": image,
        "ports": [{"name": "http", "containerPort": 8080}],
    }
    if probe is not None:
        container["readinessProbe"] = probe
    strategy_obj: JsonObject = {"type": strategy}
    if strategy == "RollingUpdate":
        strategy_obj["rollingUpdate"] = {"maxSurge": max_surge, "maxUnavailable": max_unavailable}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready_seconds,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy_obj,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
            **spec,
        },
    }


def http_probe(initial_delay: int = 1, period: int = 1) -> JsonObject:
    return {
        "httpGet": {"path": "/", "port": 8080},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
    }


async def wait_for(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def rollout_complete(d: JsonObject) -> bool:
    """What ``kubectl rollout status`` waits for (its DeploymentStatusViewer)."""
    status, replicas = d.get("status") or {}, d["spec"]["replicas"]
    return (
        status.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
    )


async def wait_rollout(client: ApiClient, name: str, timeout_s: float) -> JsonObject:
    async def done() -> JsonObject | None:
        d = await client.get("deployments", name, NS)
        return d if rollout_complete(d) else None

    result: JsonObject = await wait_for(done, timeout_s, f"rollout of {name}")
    return result


async def change_image(client: ApiClient, name: str, image: str) -> JsonObject:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    result: JsonObject = await client.patch("deployments", name, patch, "strategic", NS)
    return result


def without(obj: JsonObject, *keys: str) -> JsonObject:
    copied = copy.deepcopy(obj)
    for key in keys:
        copied.pop(key, None)
    return copied
