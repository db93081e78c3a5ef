"""A kubelet on a loopback sandbox against the in-process API server, and ways to wait on it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.apiclient import ApiError, JsonObject
from localcluster.apiserver import InProcessClient, Store
from localcluster.config import ClusterConfig
from localcluster.dataplane.sandbox import LoopbackSandboxProvider, SandboxProvider
from localcluster.kubelet import Backoff, Kubelet, KubeletOptions
from localcluster.truth import TruthWriter

NODE = "node-1"


@dataclass
class Harness:
    client: InProcessClient
    kubelet: Kubelet
    truth_path: Path
    logs: Path

    def truth(self, source_prefix: str = "") -> list[dict[str, Any]]:
        if not self.truth_path.exists():
            return []
        lines = [json.loads(line) for line in self.truth_path.read_text().splitlines()]
        return [line for line in lines if line["source"].startswith(source_prefix)]

    def events(self, pod: str, socket_table: bool = False) -> list[dict[str, Any]]:
        """The kubelet's truth about a Pod: its containers' lifecycle, and with
        ``socket_table`` also the listener sightings (stamped out of file order)."""
        return [
            line
            for line in self.truth("kubelet/")
            if line.get("pod") == pod and (socket_table or line.get("seen") != "socket-table")
        ]

    async def create_pod(self, name: str, containers: list[JsonObject], **spec: Any) -> JsonObject:
        pod = {
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": NODE, "containers": containers, **spec},
        }
        return await self.client.create("pods", pod, "default")

    async def pod_history(self, name: str, since: str) -> list[JsonObject]:
        """Every version of the Pod written after resourceVersion ``since``, from the watch
        history: what a controller saw, however slowly this test was scheduled."""
        versions = []
        async for event in self.client.watch("pods", "default", since, timeout_seconds=0.2):
            if event["object"]["metadata"]["name"] == name:
                versions.append(event["object"])
        return versions

    async def pod(self, name: str) -> JsonObject | None:
        try:
            return await self.client.get("pods", name, "default")
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    async def wait_pod(
        self, name: str, check: Callable[[JsonObject | None], bool], timeout: float = 10.0
    ) -> JsonObject | None:
        deadline = time.monotonic() + timeout
        while True:
            pod = await self.pod(name)
            if check(pod):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pod {name} never satisfied the check; last: {json.dumps(pod)[:3000]}"
                )
            await asyncio.sleep(0.02)


def condition(pod: JsonObject | None, kind: str) -> bool:
    for item in (pod or {}).get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return bool(item["status"] == "True")
    return False


def container_status(pod: JsonObject | None) -> JsonObject:
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def demoapp(*args: str, **extra: Any) -> JsonObject:
    return {
        "name": "app",
        "image": "rolltrace/demoapp:0.1.0",
        "args": list(args),
        "ports": [{"name": "http", "containerPort": 8080}],
        **extra,
    }


def python_container(code: str, **extra: Any) -> JsonObject:
    return {
        "name": "app",
        "image": "local/python",
        "command": [sys.executable, "-c", code],
        **extra,
    }


async def running_kubelet(
    tmp_path: Path,
    sandboxes: SandboxProvider | None = None,
    kubelet_client: Callable[[InProcessClient], Any] = lambda client: client,
    **options: Any,
) -> AsyncIterator[Harness]:
    """``kubelet_client`` wraps what the kubelet uses (fault injection); the test keeps the
    plain client."""
    store = Store()
    client = InProcessClient(store)
    truth_path = tmp_path / "truth.jsonl"
    logs = tmp_path / "logs"
    logs.mkdir()
    truth = TruthWriter(truth_path, f"kubelet/{NODE}")
    kubelet = Kubelet(
        kubelet_client(client),
        NODE,
        sandboxes or LoopbackSandboxProvider("127.0.101.0/24"),
        truth,
        ClusterConfig(),
        KubeletOptions(
            logs_dir=logs,
            backoff=Backoff(initial_s=0.1, max_s=1.0),
            app_truth_path=truth_path,
            heartbeat_s=0.2,
            **options,
        ),
    )
    task = asyncio.get_running_loop().create_task(kubelet.run())
    harness = Harness(client, kubelet, truth_path, logs)
    try:
        while not store.objects.get("nodes"):  # registered: the kubelet is watching
            await asyncio.sleep(0.01)
        yield harness
    finally:
        await kubelet.stop()
        await asyncio.wait_for(task, 10)
        truth.close()
        store.close_watchers()
