"""The L7 LB on the real local cluster (nodes, LB and client namespaces; Pods placed by hand):
requests from the client namespace to the external IP end at nginx in the LB namespace (no DNAT
rule is installed) and reach the Pods (IP mode) or the nodes' NodePorts (instance mode); the
access log is the hop log ``<state>/hops/lb.log``; a Pod deregistered with draining finishes
the request it holds while new requests go elsewhere; nothing of nginx is left afterwards (the
``cluster_name`` fixture checks processes, namespaces, tables and links)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localcluster.config import ClusterConfig, DelayModel, LBConfig, ProxyConfig
from localcluster.dataplane.ip import netns_exec
from tests.conftest import require
from tests.localcluster.test_dataplane_support import ManualCluster, cluster_name, run_client

__all__ = ["cluster_name"]
pytestmark = [pytest.mark.root]

# HTTP/1.1 with keep-alive (the LB pools its connections); ``GET /slow/N`` answers after N s.
KEEPALIVE_POD_SERVER = """
import socket, sys, threading, time
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(128)
body = name.encode()
def serve(c):
    with c:
        buffered = b""
        while True:
            while b"\\r\\n\\r\\n" not in buffered:
                chunk = c.recv(4096)
                if not chunk:
                    return
                buffered += chunk
            head, buffered = buffered.split(b"\\r\\n\\r\\n", 1)
            path = head.split(b" ")[1].decode()
            if path.startswith("/slow/"):
                time.sleep(float(path.rsplit("/", 1)[1]))
            c.sendall(b"HTTP/1.1 200 OK\\r\\nX-Pod-Name: " + body
                      + b"\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
SLOW_S = 3.0  # the in-flight request that deregistration must not cut
DRAIN_S = 6.0  # the deregistration delay: longer than the slow request


# Longer than a reconcile takes, so a removal seen within it was not left to the next health
# round (or to the reconcile's retry, 1 s).
HC_INTERVAL_S = 2.0
SETTLE_S = 0.5  # a programming in flight lands within it


def _config(name: str, targets: str) -> ClusterConfig:
    lb = LBConfig(
        mode="l7",
        targets=targets,
        hc_interval_s=HC_INTERVAL_S,
        hc_timeout_s=0.3,
        draining=True,
        deregistration_delay_s=DRAIN_S,
    )
    proxy = ProxyConfig(delay=DelayModel(kind="fixed", value_s=0.05))
    return ClusterConfig(name=name, nodes=2, lb=lb, proxy=proxy)


def _healthy(target: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["event"] == "lb-health-changed" and r["target"] == target and r["healthy"]


def _active_targets(cluster: ManualCluster) -> list[str]:
    """The targets nginx serves now: the last ``lb-targets-changed`` record's (each is written
    once nginx has switched)."""
    changes = [r for r in cluster.truth() if r["event"] == "lb-targets-changed"]
    return changes[-1]["targets"] if changes else []


async def _serving(cluster: ManualCluster) -> str:
    """Two keep-alive Pods behind the LB; returns the external IP once nginx serves both.

    Not the first record that lists both: with no target healthy yet the LB fails open to all
    registered ones, and a Pod found healthy first then narrows the set until the other's
    check passes. So: both healthy, and the last record lists both, still after a moment, by
    which time a programming begun before the second check has landed (a reload takes ~0.1 s).
    """
    for i in range(2):
        await cluster.add_pod(f"web-{i}", i, script=KEEPALIVE_POD_SERVER)
    vip = await cluster.create_service("Cluster")
    for name in ("web-0", "web-1") if cluster.config.lb.targets == "pods" else ("node-1", "node-2"):
        await cluster.wait_truth(_healthy(name), 5)
    deadline = time.monotonic() + HC_INTERVAL_S + 5
    while time.monotonic() < deadline:
        if len(_active_targets(cluster)) == 2:
            await asyncio.sleep(SETTLE_S)
            if len(_active_targets(cluster)) == 2:
                return vip
        await asyncio.sleep(0.05)
    raise AssertionError(f"nginx never served both targets: {_active_targets(cluster)}")


def _hop_log(cluster: ManualCluster) -> list[dict[str, Any]]:
    text = (cluster.state_dir / "hops" / "lb.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _lb_tables(cluster: ManualCluster) -> str:
    argv = netns_exec(cluster.plan.lb_netns, "nft", "list", "tables")
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _slow_requests(cluster: ManualCluster, vip: str, count: int) -> subprocess.Popen[str]:
    """``count`` concurrent ``GET /slow/SLOW_S`` from the client namespace (curl), each
    printing its status and the Pod that answered."""
    url = f"http://{vip}/slow/{SLOW_S}"
    script = " & ".join(
        f"curl -s -m 20 -o /dev/null -D - -w 'status=%{{http_code}}\\n' {url}" for _ in range(count)
    )
    argv = netns_exec(cluster.plan.client_netns, "sh", "-c", f"{script} & wait")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


async def _wait_for_requests_at(cluster: ManualCluster, pod_ip: str, count: int) -> None:
    """Until nginx holds ``count`` connections to the Pod: no request went through the LB
    before, so each is one of the slow requests, sent and not yet answered."""
    argv = netns_exec(cluster.plan.lb_netns, "ss", "-Htnp", "state", "established", "dst", pod_ip)
    deadline = time.monotonic() + SLOW_S
    while time.monotonic() < deadline:
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        if sum('"nginx"' in line for line in done.stdout.splitlines()) >= count:  # not checks
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the slow requests never reached {pod_ip}")


@pytest.mark.parametrize("targets", ["pods", "nodes"])
async def test_requests_end_at_nginx_on_the_external_ip_and_reach_the_targets(
    cluster_name: str, tmp_path: Path, targets: str
) -> None:
    require("nginx", "curl")
    async with ManualCluster(_config(cluster_name, targets), tmp_path) as cluster:
        vip = await _serving(cluster)
        results = await asyncio.to_thread(
            run_client, cluster.plan.client_netns, vip, 80, 20, 10.0, 2.0, 0.0
        )
        tables = _lb_tables(cluster)
        entries = _hop_log(cluster)
    assert [r["error"] for r in results] == [None] * 20
    assert cluster.plan.lb_table not in tables  # no DNAT: the LB ends the connection
    served = [e for e in entries if e["status"] == 200]
    assert len(served) >= 20 and {e["remote_addr"] for e in served} == {cluster.plan.client_ip}
    wanted = {f"{e['addresses'][0]}:8080" for e in cluster.endpoints.values()}
    if targets == "pods":  # round robin over both
        assert {e["upstream_addr"] for e in served} == wanted
        assert {r["pod"] for r in results} == {"web-0", "web-1"}
    else:  # each node's NodePort (kube-proxy picks a Pod per pooled connection)
        assert {e["upstream_addr"].rsplit(":", 1)[0] for e in served} == {
            n.fabric_ip for n in cluster.plan.nodes
        }


async def test_a_deregistered_pod_finishes_its_request_while_new_ones_go_elsewhere(
    cluster_name: str, tmp_path: Path
) -> None:
    require("nginx", "curl")
    async with ManualCluster(_config(cluster_name, "pods"), tmp_path) as cluster:
        vip = await _serving(cluster)
        slow = _slow_requests(cluster, vip, 4)  # round robin: two of them on web-1
        await _wait_for_requests_at(cluster, cluster.endpoints["web-1"]["addresses"][0], 2)
        changed_at = await cluster.set_endpoints([cluster.endpoints["web-0"]])
        gone = await cluster.wait_truth(
            lambda r: (
                r["event"] == "lb-targets-changed"
                and r["targets"] == ["web-0"]
                and r["ts_ns"] / 1e9 > changed_at
            ),
            5,
        )
        after = await asyncio.to_thread(
            run_client, cluster.plan.client_netns, vip, 80, 10, 5.0, 2.0, 0.0
        )
        answered, _ = await asyncio.to_thread(slow.communicate, timeout=30)
        finished_at = time.time()
    assert gone["ts_ns"] / 1e9 - changed_at < HC_INTERVAL_S / 2  # the reconcile removed it
    assert answered.count("status=200") == 4, answered  # draining: none of them was cut
    assert answered.count("X-Pod-Name: web-1") == 2, answered
    assert finished_at - changed_at < DRAIN_S  # they ended by themselves, not at the delay
    assert [r["pod"] for r in after] == ["web-0"] * 10
