"""Watch fan-out and large lists of the local API server, over HTTPS as kubectl/clients see it.

Fan-out: W watchers (each its own HTTP connection) watch Pods while one writer patches a Pod U
times; each patch carries its send time, each watcher stamps arrival, so the figure is the
end-to-end delay from a client's write to every watcher's read (p50/p99/max). The server and
all clients share one process and one event loop (the GIL makes threads no fairer), so the
numbers include the client-side JSON decoding of all W streams: a pessimistic bound.

List: N Pods created in-process, then one HTTP list of all of them (full JSON) and one as a
kubectl Table, timed from request to decoded response.

    .venv/bin/python bench/watch_fanout.py [--watchers 20] [--updates 1000] [--pods 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp

from localcluster.apiserver import ApiServer
from localcluster.apiserver.tls import client_context

NS = "default"
STAMP = "bench/sent-ns"


def pod(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "demo:1"}]},
    }


async def _watch(server: ApiServer, since: str, expected: int, arrivals: list[float]) -> None:
    async with server.http_client() as client:
        async for event in client.watch("pods", NS, since, timeout_seconds=120):
            annotations = event["object"]["metadata"].get("annotations") or {}
            if STAMP in annotations:
                arrivals.append((time.perf_counter_ns() - int(annotations[STAMP])) / 1e6)
            if len(arrivals) >= expected:
                return


async def fanout(server: ApiServer, watchers: int, updates: int) -> dict[str, float]:
    async with server.http_client() as writer:
        await writer.create("pods", pod("target"), NS)
        _, since = await writer.list("pods", NS)
        per_watcher: list[list[float]] = [[] for _ in range(watchers)]
        tasks = [asyncio.create_task(_watch(server, since, updates, a)) for a in per_watcher]
        await asyncio.sleep(0.5)  # every watch connected
        started = time.perf_counter()
        for n in range(updates):
            stamp = {STAMP: str(time.perf_counter_ns()), "n": str(n)}
            await writer.patch("pods", "target", {"metadata": {"annotations": stamp}}, "merge", NS)
        write_s = time.perf_counter() - started
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        delivered_s = time.perf_counter() - started
    latencies = sorted(x for arrivals in per_watcher for x in arrivals)
    assert len(latencies) == watchers * updates, "events were lost"
    return {
        "events_delivered": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
        "writes_per_s": updates / write_s,
        "events_per_s": len(latencies) / delivered_s,
    }


async def big_list(server: ApiServer, pods: int) -> dict[str, float]:
    client = server.client()
    for n in range(pods):
        await client.create("pods", pod(f"p{n:05d}"), NS)
    headers = {"Authorization": f"Bearer {server.token}"}
    connector = aiohttp.TCPConnector(ssl=client_context(server.ca_pem))
    result: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        for label, accept in (
            ("list_json_s", "application/json"),
            ("list_table_s", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        ):
            started = time.perf_counter()
            async with session.get(
                f"{server.url}/api/v1/namespaces/{NS}/pods", headers={"Accept": accept}
            ) as response:
                body = json.loads(await response.read())
            result[label] = time.perf_counter() - started
            count = len(body.get("items") or body.get("rows") or [])
            assert count >= pods, f"{label}: {count} objects"
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=5000)
    args = parser.parse_args()
    async with ApiServer(history_size=max(10_000, args.updates * 2)) as server:
        figures = await fanout(server, args.watchers, args.updates)
    async with ApiServer() as server:
        figures |= await big_list(server, args.pods)
    print(f"watch fan-out: {args.watchers} watchers x {args.updates} Pod updates (HTTPS)")
    for key in ("events_delivered", "p50_ms", "p99_ms", "max_ms", "writes_per_s", "events_per_s"):
        print(f"  {key:18} {figures[key]:.1f}")
    print(
        f"list of {args.pods} Pods: JSON {figures['list_json_s']:.3f} s, Table {figures['list_table_s']:.3f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
