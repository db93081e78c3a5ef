"""Benchmark: the local cluster's kernel data plane (needs root, ``ip``, ``nft``).

A whole cluster (API server, controllers, 3 real nodes, the LB) runs 3 demo-app replicas
behind a LoadBalancer Service. From the client namespace it measures

* added latency: one request on a new connection through LB → node → Pod versus straight to a
  Pod's address (the same route through the LB namespace, without the two DNATs and the node
  hop), p50/p99, interleaved so both see the same machine load — goal ≤ 100 µs at p50;
* requests/s through the LB over keep-alive connections spread over the 3 Pods;
* ``start_real_nodes`` → every node Ready, Deployment created → 3 Pods Ready, and ``stop()``;
  ``rolltrace cluster up`` (until it returns) and ``rolltrace cluster down``.

Usage: python bench/dataplane.py [--samples N] [--seconds S] [--connections C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from localcluster.apiserver.server import ApiServer
from localcluster.config import ClusterConfig, DelayModel, ProxyConfig
from localcluster.controllers import start_controllers
from localcluster.dataplane import missing_prerequisites, start_real_nodes
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.ip import netns_exec
from localcluster.main import service_cidr
from localcluster.objects import pod_is_ready

LATENCY_CLIENT = """
import json, socket, sys, time
targets = json.loads(sys.argv[1]); samples = int(sys.argv[2])
request = b"GET / HTTP/1.1\\r\\nHost: b\\r\\nConnection: close\\r\\n\\r\\n"
out = {name: [] for name in targets}
for i in range(samples):
    for name, (ip, port) in targets.items():
        t0 = time.perf_counter_ns()
        c = socket.create_connection((ip, port), timeout=2)
        c.sendall(request)
        while c.recv(65536):
            pass
        c.close()
        out[name].append(time.perf_counter_ns() - t0)
print(json.dumps(out))
"""

THROUGHPUT_CLIENT = """
import asyncio, json, sys, time
ip, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
request = b"GET / HTTP/1.1\\r\\nHost: b\\r\\n\\r\\n"
async def worker(deadline, counts):
    reader, writer = await asyncio.open_connection(ip, 80)
    while time.monotonic() < deadline:
        writer.write(request)
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\\r\\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()
async def main():
    counts = [0]
    start = time.monotonic()
    await asyncio.gather(*(worker(start + seconds, counts) for _ in range(connections)))
    print(json.dumps({"requests": counts[0], "seconds": time.monotonic() - start}))
asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def in_client(plan: AddressPlan, script: str, *args: str) -> Any:
    argv = netns_exec(plan.client_netns, "python3", "-c", script, *args)
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def deployment(replicas: int) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "rolltrace/demoapp:v1",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
    }
    return {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [container]},
            },
        },
    }


SERVICE = {
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "type": "LoadBalancer",
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
    },
}


async def run(samples: int, seconds: float, connections: int) -> dict[str, float]:
    config = ClusterConfig(name="rtbench", proxy=ProxyConfig(delay=DelayModel(kind="fixed")))
    plan = AddressPlan(config)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        sock = str(state / "api.sock")
        async with ApiServer(
            unix_socket=sock, service_cidr=service_cidr(config.address_range)
        ) as server:
            client = server.client()
            controllers = await start_controllers(client, config)
            started = time.monotonic()
            nodes = await start_real_nodes(sock, server.token, config, state)
            figures["nodes up -> Ready (s)"] = time.monotonic() - started
            try:
                started = time.monotonic()
                await client.create("deployments", deployment(3), "default")
                await client.create("services", SERVICE, "default")
                vip, pod_ip = "", ""
                for _ in range(300):
                    pods, _ = await client.list("pods", "default")
                    ready = [p for p in pods if pod_is_ready(p)]
                    svc = await client.get("services", "web", "default")
                    ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
                    if len(ready) == 3 and ingress:
                        vip, pod_ip = ingress[0]["ip"], ready[0]["status"]["podIP"]
                        break
                    await asyncio.sleep(0.05)
                figures["3 Pods created -> Ready, LB up (s)"] = time.monotonic() - started
                await asyncio.sleep(1.5)  # first LB health checks and rule syncs
                targets = json.dumps({"lb": [vip, 80], "direct": [pod_ip, 8080]})
                lat = await asyncio.to_thread(
                    in_client, plan, LATENCY_CLIENT, targets, str(samples)
                )
                for name in ("lb", "direct"):
                    micros = [v / 1000 for v in lat[name]]
                    figures[f"{name} request p50 (µs)"] = percentile(micros, 50)
                    figures[f"{name} request p99 (µs)"] = percentile(micros, 99)
                figures["added p50 (µs)"] = (
                    figures["lb request p50 (µs)"] - figures["direct request p50 (µs)"]
                )
                figures["added p99 (µs)"] = (
                    figures["lb request p99 (µs)"] - figures["direct request p99 (µs)"]
                )
                tput = await asyncio.to_thread(
                    in_client, plan, THROUGHPUT_CLIENT, vip, str(seconds), str(connections)
                )
                figures["requests/s through the LB"] = tput["requests"] / tput["seconds"]
            finally:
                started = time.monotonic()
                await nodes.stop()
                figures["stop (s)"] = time.monotonic() - started
                await controllers.stop()
    return figures


def cli_up_down() -> dict[str, float]:
    """The user's view: ``rolltrace cluster up`` until it returns (nodes Ready), then ``down``."""
    rolltrace = str(Path(sys.executable).with_name("rolltrace"))
    figures = {}
    for step in ("up", "down"):
        started = time.monotonic()
        subprocess.run(
            [rolltrace, "cluster", step, "--name", "rtbcli"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        figures[f"rolltrace cluster {step} (s)"] = time.monotonic() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=24)
    args = parser.parse_args()
    missing = missing_prerequisites()
    if missing:
        raise SystemExit("bench/dataplane.py needs: " + "; ".join(missing))
    figures = asyncio.run(run(args.samples, args.seconds, args.connections)) | cli_up_down()
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.3f}")
    print(
        f"goal: added p50 <= 100 µs -> {'met' if figures['added p50 (µs)'] <= 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
