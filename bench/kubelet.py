"""Pod create → Ready overhead of the local kubelet, beyond the delays the Pod itself configures.

One kubelet on loopback sandboxes against the in-process API server; Pods are created one at a
time (bounded: ``--pods`` Pods, each within 15 s) and their Ready condition is observed through
a watch, as an EndpointSlice controller would see it. Two shapes:

* no readiness probe: Ready as soon as the container runs, so create → Ready is the kubelet's
  own overhead (sandbox, spawn, status write, watch delivery);
* demo app with an httpGet readiness probe (period 1 s): the probe's schedule is a configured
  delay, so the overhead is Ready minus the first probe tick at or after the app became ready.

Goal: ≤ 200 ms. ``.venv/bin/python bench/kubelet.py [--pods 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from localcluster.apiserver import InProcessClient, Store
from localcluster.config import ClusterConfig
from localcluster.dataplane.sandbox import LoopbackSandboxProvider
from localcluster.kubelet import Kubelet, KubeletOptions
from localcluster.objects import pod_is_ready
from localcluster.truth import TruthWriter

NODE = "bench-node"
PERIOD_S = 1.0


def _container(name: str, probe: bool) -> dict[str, Any]:
    if not probe:
        return {
            "name": "app",
            "image": "local/python",
            "command": [sys.executable, "-c", "import time; time.sleep(60)"],
        }
    return {
        "name": "app",
        "image": "rolltrace/demoapp:0.1.0",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080},
            "periodSeconds": int(PERIOD_S),
        },
    }


async def _one_pod(client: InProcessClient, name: str, probe: bool) -> tuple[int, int]:
    """(create ns, Ready-observed ns) of one Pod, then deletes it and waits until it is gone."""
    _, version = await client.list("pods", "default")
    pod = {
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "containers": [_container(name, probe)],
            "terminationGracePeriodSeconds": 2,
        },
    }
    created = time.time_ns()
    await client.create("pods", pod, "default")
    ready_ns = 0
    async with asyncio.timeout(15):
        async for event in client.watch("pods", "default", resource_version=version):
            if event["object"]["metadata"]["name"] == name and pod_is_ready(event["object"]):
                ready_ns = time.time_ns()
                break
        await client.delete("pods", name, "default")
        async for event in client.watch("pods", "default", resource_version="0"):
            if event["type"] == "DELETED" and event["object"]["metadata"]["name"] == name:
                break
    return created, ready_ns


def _truth_times(path: Path, pod: str) -> dict[str, int]:
    times: dict[str, int] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("pod") == pod:
            times.setdefault(record["event"], record["ts_ns"])
    return times


def _first_tick_at_or_after(start_ns: int, moment_ns: int) -> int:
    period_ns = int(PERIOD_S * 1e9)
    ticks = max(0, -(-(moment_ns - start_ns) // period_ns))
    return start_ns + ticks * period_ns


def _summary(label: str, values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    return f"{label:48s} p50 {statistics.median(ordered):7.1f} ms   max {ordered[-1]:7.1f} ms   (n={len(ordered)})"


async def main_async(pods: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        truth_path = Path(tmp) / "truth.jsonl"
        truth = TruthWriter(truth_path, f"kubelet/{NODE}")
        store = Store()
        client = InProcessClient(store)
        kubelet = Kubelet(
            client,
            NODE,
            LoopbackSandboxProvider("127.0.103.0/24"),
            truth,
            ClusterConfig(),
            KubeletOptions(node_ip="127.0.0.1", app_truth_path=truth_path),
        )
        task = asyncio.get_running_loop().create_task(kubelet.run())
        try:
            while not store.objects.get("nodes"):
                await asyncio.sleep(0.01)
            plain, spawn, app_start, probed = [], [], [], []
            for i in range(pods):
                created, ready = await _one_pod(client, f"plain-{i}", probe=False)
                plain.append((ready - created) / 1e6)
                created, ready = await _one_pod(client, f"probed-{i}", probe=True)
                t = _truth_times(truth_path, f"probed-{i}")
                spawn.append((t["process-started"] - created) / 1e6)
                app_start.append((t["ready-to-serve"] - t["process-started"]) / 1e6)
                tick = _first_tick_at_or_after(t["process-started"], t["ready-to-serve"])
                probed.append((ready - tick) / 1e6)
        finally:
            await kubelet.stop()
            await asyncio.wait_for(task, 10)
            truth.close()
            store.close_watchers()
    print(_summary("no probe: create → Ready (kubelet overhead)", plain))
    print(_summary("demo app: create → process started", spawn))
    print(_summary("demo app: process started → app ready (its own)", app_start))
    print(_summary("demo app: probe tick → Ready (overhead)", probed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=10)
    asyncio.run(main_async(parser.parse_args().pods))


if __name__ == "__main__":
    main()
