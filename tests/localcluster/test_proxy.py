"""kube-proxy emulation: rule rendering (pure), the sync loop's delay and batching (in-process
API, recorded nft texts), and the rules applied for real inside a namespace."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from localcluster.apiserver import InProcessClient, Store
from localcluster.config import ClusterConfig, DelayModel, ProxyConfig
from localcluster.proxy.proxier import Proxier
from localcluster.proxy.rules import plan_ports, render_table_body
from localcluster.truth import TruthWriter
from tests.localcluster.test_dataplane_support import cluster_name

__all__ = ["cluster_name"]

POD_RANGE = "198.19.0.0/16"


def service(
    policy: str = "Cluster", svc_type: str = "LoadBalancer", name: str = "web"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": svc_type,
            "clusterIP": "198.18.128.10",
            "externalTrafficPolicy": policy,
            "healthCheckNodePort": 32000,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.2.1"}]}},
    }


def endpoint(
    ip: str, node: str, pod: str, ready: bool = True, terminating: bool = False
) -> dict[str, Any]:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": ready or terminating, "terminating": terminating},
        "nodeName": node,
        "targetRef": {"kind": "Pod", "name": pod},
    }


def endpoint_slice(*endpoints: dict[str, Any], name: str = "web") -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{name}-abc",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def render(
    svc: dict[str, Any], sl: dict[str, Any], node: str = "node-1", fallback: bool = True
) -> str:
    return render_table_body(plan_ports([svc], [sl], node, fallback), POD_RANGE)


def chain(text: str, name: str) -> list[str]:
    match = re.search(r"\tchain " + re.escape(name) + r" \{\n((?:\t\t.*\n)*)\t\}", text)
    assert match, f"no chain {name}"
    return [line.strip() for line in match.group(1).splitlines()]


TWO_NODES = endpoint_slice(
    endpoint("198.19.0.2", "node-1", "web-a"), endpoint("198.19.1.2", "node-2", "web-b")
)


def test_cluster_policy_balances_over_all_endpoints_and_masquerades_external_traffic() -> None:
    text = render(service("Cluster"), TWO_NODES, node="node-3")
    svc = chain(text, "service-default/web/tcp/http")
    assert svc[0].startswith("numgen random mod 2 vmap")
    assert "198.19.0.2/8080" in svc[0] and "198.19.1.2/8080" in svc[0]
    assert chain(text, "external-default/web/tcp/http") == [
        "jump mark-for-masquerade",
        "goto service-default/web/tcp/http",
    ]
    dispatch = chain(text, "services")
    assert "fib daddr type local tcp dport 30080 goto external-default/web/tcp/http" in dispatch
    assert "ip daddr 198.18.2.1 tcp dport 80 goto external-default/web/tcp/http" in dispatch
    assert (
        f"ip daddr 198.18.128.10 tcp dport 80 ip saddr != {POD_RANGE} jump mark-for-masquerade"
        in dispatch
    )
    assert "dnat to 198.19.1.2:8080" in " ".join(
        chain(text, "endpoint-default/web/tcp/http__198.19.1.2/8080")
    )
    assert chain(text, "no-endpoints") == []


def test_local_policy_uses_only_local_endpoints_and_keeps_the_client_address() -> None:
    text = render(service("Local"), TWO_NODES, node="node-2")
    ext = chain(text, "external-default/web/tcp/http")
    assert ext[-1] == "goto local-default/web/tcp/http"
    assert "jump mark-for-masquerade" not in ext  # only for node-local sources
    assert chain(text, "local-default/web/tcp/http") == [
        "goto endpoint-default/web/tcp/http__198.19.1.2/8080"
    ]


def test_local_policy_without_a_local_endpoint_drops_external_traffic() -> None:
    text = render(service("Local"), TWO_NODES, node="node-3")
    assert "fib daddr type local tcp dport 30080 drop" in chain(text, "no-endpoints")
    assert "ip daddr 198.18.2.1 tcp dport 80 drop" in chain(text, "no-endpoints")
    assert "local-default/web/tcp/http" not in text
    # cluster-internal traffic to the ClusterIP still reaches both endpoints
    assert "numgen random mod 2" in " ".join(chain(text, "service-default/web/tcp/http"))


def test_terminating_fallback_keeps_serving_endpoints_only_when_switched_on() -> None:
    sl = endpoint_slice(
        endpoint("198.19.0.2", "node-1", "web-a", ready=False, terminating=True),
        endpoint("198.19.1.2", "node-2", "web-b"),
    )
    with_fallback = render(service("Local"), sl, node="node-1", fallback=True)
    assert chain(with_fallback, "local-default/web/tcp/http") == [
        "goto endpoint-default/web/tcp/http__198.19.0.2/8080"
    ]
    without = render(service("Local"), sl, node="node-1", fallback=False)
    assert "fib daddr type local tcp dport 30080 drop" in chain(without, "no-endpoints")
    # cluster-wide there is a ready endpoint, so the terminating one is not used there
    assert chain(with_fallback, "service-default/web/tcp/http") == [
        "goto endpoint-default/web/tcp/http__198.19.1.2/8080"
    ]
    plans = plan_ports([service("Local")], [sl], "node-1", True)
    assert plans[0].ready_local == 0  # the health check drains the node meanwhile


def test_a_service_without_endpoints_rejects_new_connections() -> None:
    text = render(service("Cluster"), endpoint_slice())
    assert chain(text, "no-endpoints") == [
        "ip daddr 198.18.128.10 tcp dport 80 reject",
        "ip daddr 198.18.2.1 tcp dport 80 reject",
        "fib daddr type local tcp dport 30080 reject",
    ]
    assert "service-default/web" not in text


def test_clusterip_service_has_no_external_rules() -> None:
    text = render(service("Cluster", svc_type="ClusterIP"), TWO_NODES)
    assert "external-" not in text and "30080" not in text and "198.18.2.1" not in text


@pytest.mark.parametrize(
    ("model", "since", "expected"),
    [
        (DelayModel(kind="fixed", value_s=2.0), 0.0, (2.0, 2.0)),
        (DelayModel(kind="uniform", low_s=0.5, high_s=1.5), 0.0, (0.5, 1.5)),
        (DelayModel(kind="min-sync", min_sync_period_s=1.0, value_s=0.1), 0.25, (0.85, 0.85)),
        (DelayModel(kind="min-sync", min_sync_period_s=1.0, value_s=0.1), 5.0, (0.1, 0.1)),
        (DelayModel(kind="lognormal", value_s=1.0, sigma=0.5), 0.0, (0.05, 20.0)),
    ],
)
def test_delay_models(model: DelayModel, since: float, expected: tuple[float, float]) -> None:
    rng = random.Random(7)
    draws = [model.draw(rng, since) for _ in range(200)]
    assert all(expected[0] - 1e-9 <= d <= expected[1] + 1e-9 for d in draws)


def test_per_node_delay_overrides_the_default() -> None:
    cfg = ProxyConfig(per_node_delay={"node-2": DelayModel(kind="fixed", value_s=2.0)})
    assert cfg.delay_for("node-2").value_s == 2.0
    assert cfg.delay_for("node-1").kind == "min-sync"


async def test_sync_waits_for_the_node_delay_and_batches_changes(tmp_path: Path) -> None:
    store = Store()
    client = InProcessClient(store)
    cfg = ClusterConfig(proxy=ProxyConfig(delay=DelayModel(kind="fixed", value_s=0.3)))
    applied: list[tuple[float, str]] = []

    async def apply(text: str) -> None:
        applied.append((time.monotonic(), text))

    truth_path = tmp_path / "truth.jsonl"
    proxier = Proxier(
        client,
        "node-1",
        cfg,
        POD_RANGE,
        "rt-proxy",
        apply,
        TruthWriter(truth_path, "kube-proxy/node-1"),
    )
    task = asyncio.create_task(proxier.run())
    try:
        await asyncio.sleep(0.5)  # initial sync (empty)
        assert len(applied) == 1
        svc = await client.create("services", service("Cluster"), "default")
        started = time.monotonic()
        await client.create("endpointslices", TWO_NODES, "default")
        await asyncio.sleep(0.1)
        sl = await client.get("endpointslices", "web-abc", "default")
        sl["endpoints"] = sl["endpoints"][:1]
        await client.update("endpointslices", sl, "default")
        for _ in range(40):
            if len(applied) > 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.4)
        assert len(applied) == 2, "three changes within the delay make one sync"
        assert applied[1][0] - started >= 0.3
        text = applied[1][1]
        assert text.startswith(
            "add table ip rt-proxy\ndelete table ip rt-proxy\ntable ip rt-proxy {"
        )
        assert svc["spec"]["clusterIP"] in text and "198.19.0.2:8080" in text
        assert "198.19.1.2" not in text
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    records = [json.loads(line) for line in truth_path.read_text().splitlines()]
    programmed = [r for r in records if r["event"] == "rules-programmed"]
    assert programmed[-1]["service"] == "default/web"
    assert programmed[-1]["endpoints"] == [
        {"pod": "web-a", "ip": "198.19.0.2", "terminating": False}
    ]
    assert programmed[-1]["node"] == "node-1" and programmed[-1]["source"] == "kube-proxy/node-1"


async def test_a_failed_sync_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("localcluster.proxy.proxier.SYNC_RETRY_S", 0.05)
    client = InProcessClient(Store())
    cfg = ClusterConfig(proxy=ProxyConfig(delay=DelayModel(kind="fixed", value_s=0.0)))
    attempts: list[str] = []

    async def flaky_apply(text: str) -> None:
        attempts.append(text)
        if len(attempts) == 1:
            raise RuntimeError("nft: transaction refused")

    proxier = Proxier(
        client, "node-1", cfg, POD_RANGE, "rt-proxy", flaky_apply, TruthWriter(None, "p")
    )
    task = asyncio.create_task(proxier.run())
    try:
        for _ in range(40):
            if proxier.syncs:
                break
            await asyncio.sleep(0.025)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(attempts) == 2 and proxier.syncs == 1


def test_udp_ports_get_udp_matches_and_dnat() -> None:
    svc = service("Cluster", svc_type="ClusterIP")
    svc["spec"]["ports"] = [{"name": "dns", "port": 53, "protocol": "UDP"}]
    sl = endpoint_slice(endpoint("198.19.0.2", "node-1", "dns-a"))
    sl["ports"] = [{"name": "dns", "port": 5353, "protocol": "UDP"}]
    text = render(svc, sl)
    assert "ip daddr 198.18.128.10 udp dport 53 goto service-default/web/udp/dns" in chain(
        text, "services"
    )
    assert "meta l4proto udp dnat to 198.19.0.2:5353" in chain(
        text, "endpoint-default/web/udp/dns__198.19.0.2/5353"
    )


async def test_health_check_server_answers_like_kube_proxy(tmp_path: Path) -> None:
    import socket

    import aiohttp

    from localcluster.proxy.healthcheck import HealthCheckServers

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    truth_path = tmp_path / "truth.jsonl"
    servers = HealthCheckServers(
        "node-1", TruthWriter(truth_path, "kube-proxy/node-1"), host="127.0.0.1"
    )
    try:
        async with aiohttp.ClientSession() as session:
            await servers.sync({port: ("default", "web", 2)})
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
                assert await resp.json() == {
                    "service": {"namespace": "default", "name": "web"},
                    "localEndpoints": 2,
                    "serviceProxyHealthy": True,
                }
            await servers.sync({port: ("default", "web", 1)})  # still healthy: no record
            await servers.sync({port: ("default", "web", 0)})
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 503
                assert (await resp.json())["localEndpoints"] == 0
            await servers.sync({})
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{port}/")
    finally:
        await servers.close()
    records = [json.loads(line) for line in truth_path.read_text().splitlines()]
    assert [(r["healthy"], r["local_endpoints"]) for r in records] == [(True, 2), (False, 0)]
    assert all(r["event"] == "healthcheck-changed" and r["port"] == port for r in records)


async def test_min_sync_period_spaces_syncs_apart() -> None:
    client = InProcessClient(Store())
    model = DelayModel(kind="min-sync", min_sync_period_s=0.8, value_s=0.0)
    applied: list[float] = []

    async def apply(text: str) -> None:
        applied.append(time.monotonic())

    proxier = Proxier(
        client,
        "node-1",
        ClusterConfig(proxy=ProxyConfig(delay=model)),
        POD_RANGE,
        "t",
        apply,
        TruthWriter(None, "p"),
    )
    task = asyncio.create_task(proxier.run())
    try:
        for _ in range(40):
            if applied:
                break
            await asyncio.sleep(0.025)
        await client.create("services", service("Cluster"), "default")
        await asyncio.sleep(0.1)
        await client.create("endpointslices", TWO_NODES, "default")
        await asyncio.sleep(1.2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(applied) == 2, "both changes fold into the one sync the period allows"
    assert applied[1] - applied[0] >= 0.8


@pytest.mark.root
def test_a_rejected_ruleset_leaves_the_previous_one_whole(cluster_name: str) -> None:
    """nft applies the swap as one transaction: an error anywhere keeps the old table as it
    was, never half of the new one."""
    from localcluster.dataplane import ip, nft

    netns = f"{cluster_name}-proxytest"
    ip.run(ip.netns_add(netns))
    try:
        good = render(service("Cluster"), TWO_NODES)
        nft.apply(netns, nft.replace_table_text("ip", "rt-proxy", good))
        before = ip.run(ip.netns_exec(netns, "nft", "list", "table", "ip", "rt-proxy"))
        broken = (
            render(service("Cluster"), endpoint_slice()) + "\tchain bad {\n\t\tnot a rule\n\t}\n"
        )
        with pytest.raises(ip.CommandError):
            nft.apply(netns, nft.replace_table_text("ip", "rt-proxy", broken))
        after = ip.run(ip.netns_exec(netns, "nft", "list", "table", "ip", "rt-proxy"))
        assert after == before and "dnat to 198.19.1.2:8080" in after
    finally:
        ip.run(ip.netns_delete(netns))
