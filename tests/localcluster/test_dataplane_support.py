"""Shared by the data-plane tests (no tests here): a unique cluster name per test and the
assertion that a test left no namespace, host link, host nft table or process behind."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

_counter = itertools.count()


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _host_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def _host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def descendants() -> set[int]:
    """Live processes started by this test process, directly or not (read from /proc, so the
    check itself starts none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture
def cluster_name() -> Iterator[str]:
    require("ip", "nft", "nsenter", root=True)
    name = f"t{os.getpid() % 10000}{next(_counter)}"
    before = (netns_names(), _host_tables(), _host_links(), descendants())
    yield name
    from localcluster.dataplane.topology import cleanup

    leftover_ns = sorted(ns for ns in netns_names() - before[0] if ns.startswith(f"{name}-"))
    leftover_procs = descendants() - before[3]
    cleanup(name)
    assert leftover_ns == [], f"namespaces left behind: {leftover_ns}"
    assert leftover_procs == set(), f"processes left behind: {leftover_procs}"
    assert _host_tables() == before[1], "nft tables changed in the host namespace"
    assert _host_links() == before[2], "links changed in the host namespace"


POD_SERVER = """
import socket, sys, threading
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(128)
body = name.encode()
def serve(c):
    with c:
        c.settimeout(10)
        try:
            while c.recv(4096):
                c.sendall(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nX-Pod-Name: " + body
                          + b"\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
                return
        except OSError:
            pass
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

CLIENT = """
import json, socket, sys, time
ip, port, count, budget_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
timeout, pause = float(sys.argv[5]), float(sys.argv[6])
results, end = [], time.monotonic() + budget_s
for _ in range(count):
    if time.monotonic() > end:
        break
    t0 = time.time()
    c = socket.socket()
    c.settimeout(timeout)
    try:
        c.connect((ip, port))
        c.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        data = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        pod = [l.split(b": ")[1].decode() for l in data.split(b"\\r\\n") if l.startswith(b"X-Pod-Name")]
        outcome = {"pod": pod[0] if pod else None, "error": None if pod else "eof"}
    except ConnectionRefusedError:
        outcome = {"pod": None, "error": "refused"}
    except (TimeoutError, socket.timeout):
        outcome = {"pod": None, "error": "timeout"}
    except OSError as exc:
        outcome = {"pod": None, "error": type(exc).__name__}
    try:
        local_port = c.getsockname()[1]
    except OSError:
        local_port = 0
    c.close()
    results.append({"t": t0, "port": local_port, **outcome})
    time.sleep(pause)
print(json.dumps(results))
"""


def lb_service(policy: str, port: int = 80, target_port: int = 8080) -> dict[str, Any]:
    """The ``web`` Service of type LoadBalancer that the data-plane tests put in front of
    their Pods."""
    return {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": policy,
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": port, "targetPort": target_port, "protocol": "TCP"}],
        },
    }


def start_pod_server(
    exec_prefix: list[str], name: str, ip: str, port: int, script: str = POD_SERVER
) -> subprocess.Popen[bytes]:
    """A minimal HTTP server naming its Pod (``script`` gets name, IP and port), run inside
    the Pod's namespace."""
    return subprocess.Popen([*exec_prefix, "python3", "-c", script, name, ip, str(port)])


def run_client(
    client_netns: str,
    ip: str,
    port: int,
    count: int,
    budget_s: float,
    timeout_s: float = 1.0,
    pause_s: float = 0.0,
) -> list[dict[str, object]]:
    """``count`` new-connection requests from the client namespace, stopping after ``budget_s``."""
    argv = ["nsenter", f"--net=/run/netns/{client_netns}", "--", "python3", "-c", CLIENT]
    argv += [ip, str(port), str(count), str(budget_s), str(timeout_s), str(pause_s)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=budget_s + timeout_s + 10)
    assert out.returncode == 0, out.stderr
    results: list[dict[str, object]] = json.loads(out.stdout)
    return results


class ManualCluster:
    """Real nodes, LB and client around an in-process API server, with Pods placed by hand
    (sandbox + a tiny server + an EndpointSlice entry), so data-plane tests need neither the
    controllers nor the kubelet."""

    def __init__(self, config: Any, state_dir: Path) -> None:
        from localcluster.dataplane.addressing import AddressPlan

        self.config = config
        self.plan = AddressPlan(config)
        self.state_dir = state_dir
        self.truth_path = state_dir / "truth.jsonl"
        self.endpoints: dict[str, dict[str, Any]] = {}
        self._servers: dict[str, subprocess.Popen[bytes]] = {}
        self._sandboxes: dict[str, tuple[Any, Any]] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> ManualCluster:
        from localcluster.apiserver.server import ApiServer
        from localcluster.dataplane import start_real_nodes

        socket_path = str(self.state_dir / "api.sock")
        self.server = await self._stack.enter_async_context(ApiServer(unix_socket=socket_path))
        self.client = self.server.client()
        self.nodes = await start_real_nodes(
            socket_path, self.server.token, self.config, self.state_dir
        )
        self._stack.push_async_callback(self._stop)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _stop(self) -> None:
        for proc in self._servers.values():
            proc.kill()
            proc.wait()
        await self.nodes.stop()

    async def add_pod(
        self, name: str, node_index: int, port: int = 8080, script: str = POD_SERVER
    ) -> str:
        from localcluster.dataplane.sandbox import NetnsSandboxProvider

        node = self.plan.nodes[node_index]
        provider = NetnsSandboxProvider(self.plan, node)
        sandbox = await provider.create("default", name, f"{name}-{node_index}-uid")
        self._sandboxes[name] = (provider, sandbox)
        self._servers[name] = start_pod_server(
            provider.exec_prefix(sandbox), name, sandbox.ip, port, script
        )
        self.endpoints[name] = {
            "addresses": [sandbox.ip],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": node.name,
            "targetRef": {"kind": "Pod", "name": name},
        }
        return str(sandbox.ip)

    def stop_pod_server(self, name: str) -> None:
        self._servers[name].kill()
        self._servers[name].wait()

    async def create_service(
        self, policy: str = "Cluster", port: int = 80, target_port: int = 8080
    ) -> str:
        """The Service and its EndpointSlice; returns the external IP once the LB published it."""
        await self.client.create("services", lb_service(policy, port, target_port), "default")
        slice_obj = {
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": target_port, "protocol": "TCP"}],
            "endpoints": list(self.endpoints.values()),
        }
        await self.client.create("endpointslices", slice_obj, "default")
        for _ in range(100):
            got = await self.client.get("services", "web", "default")
            ingress = (got.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
            if ingress:
                return str(ingress[0]["ip"])
            await asyncio.sleep(0.1)
        raise TimeoutError("the LB never published an external IP")

    async def set_endpoints(self, endpoints: list[dict[str, Any]]) -> float:
        """Replace the slice's endpoints; returns the wall-clock time of the change."""
        current = await self.client.get("endpointslices", "web-1", "default")
        current["endpoints"] = endpoints
        changed_at = time.time()
        await self.client.update("endpointslices", current, "default")
        return changed_at

    def truth(self) -> list[dict[str, Any]]:
        if not self.truth_path.exists():
            return []
        return [json.loads(line) for line in self.truth_path.read_text().splitlines()]

    async def wait_truth(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for record in self.truth():
                if predicate(record):
                    return record
            await asyncio.sleep(0.05)
        raise TimeoutError("no matching truth record")
