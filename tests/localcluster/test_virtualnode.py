"""Virtual nodes: the timing rules (pure) and the Pod lifecycle they drive on an in-process
API server (Node registration, start delay, readiness, preStop bounded by the grace period,
deletion confirmed by the node)."""

from __future__ import annotations

import ipaddress
import time

import pytest

from kubewire import parse_time
from localcluster.apiclient import JsonObject
from localcluster.dataplane.addressing import AddressPlan
from localcluster.objects import pod_condition
from localcluster.virtualnode.lifecycle import (
    pod_prestop_s,
    pod_readiness_delay_s,
    prestop_s,
    readiness_delay_s,
    termination_s,
)
from tests.localcluster.test_controllers_harness import (
    NS,
    TIME_SCALE,
    cluster_config,
    virtual_cluster,
    wait_for,
)


@pytest.mark.parametrize(
    ("probe", "start_delay", "expected"),
    [
        # prober/worker.go + prober_manager.go: one probe right at container start (manual
        # trigger), then worker ticks every period counted from the Pod's arrival; results
        # before initialDelaySeconds are ignored; successThreshold successes flip Ready.
        (None, 0.0, 0.0),
        ({"periodSeconds": 10}, 0.5, 0.0),
        ({"initialDelaySeconds": 5, "periodSeconds": 10}, 0.0, 10.0),
        ({"initialDelaySeconds": 5, "periodSeconds": 5}, 0.0, 5.0),
        ({"initialDelaySeconds": 2, "periodSeconds": 1}, 0.5, 2.5),  # ticks at 0.5, 1.5, 2.5
        ({"initialDelaySeconds": 5, "periodSeconds": 10}, 3.0, 7.0),  # tick at 10 − 3
        ({"initialDelaySeconds": 3, "periodSeconds": 2, "successThreshold": 3}, 0.0, 8.0),
        ({"initialDelaySeconds": 0, "periodSeconds": 1, "successThreshold": 2}, 0.25, 0.75),
    ],
)
def test_readiness_delay(probe, start_delay, expected) -> None:
    container: JsonObject = (
        {"name": "c"} if probe is None else {"name": "c", "readinessProbe": probe}
    )
    assert readiness_delay_s(container, start_delay) == pytest.approx(expected)


def test_pod_is_ready_when_its_slowest_container_is() -> None:
    pod = {
        "spec": {
            "containers": [{"readinessProbe": {"initialDelaySeconds": 4, "periodSeconds": 4}}, {}]
        }
    }
    assert pod_readiness_delay_s(pod) == 4.0


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        ({"sleep": {"seconds": 15}}, 15.0),  # KEP-3960 native sleep action
        ({"exec": {"command": ["sleep", "10"]}}, 10.0),
        ({"exec": {"command": ["/bin/sleep", "2.5"]}}, 2.5),
        ({"exec": {"command": ["sh", "-c", "sleep 7"]}}, 7.0),
        ({"exec": {"command": ["/bin/sh", "-c", " sleep 3 "]}}, 3.0),
        ({"exec": {"command": ["sh", "-c", "sleep 3 && nginx -s quit"]}}, 0.0),  # unknowable
        ({"httpGet": {"path": "/drain", "port": 80}}, 0.0),
        (None, 0.0),
    ],
)
def test_prestop_duration(hook, expected) -> None:
    container: JsonObject = {"name": "c"}
    if hook is not None:
        container["lifecycle"] = {"preStop": hook}
    assert prestop_s(container) == expected


@pytest.mark.parametrize(
    ("prestop", "grace", "deletion_grace", "expected"),
    [
        (5, 30, None, (5.0, False)),
        (60, 30, None, (30.0, True)),  # the grace period bounds preStop, then SIGKILL
        (5, 30, 2, (2.0, True)),  # a delete with a shorter grace period wins
        (0, 30, None, (0.0, False)),
    ],
)
def test_termination_is_bounded_by_grace(prestop, grace, deletion_grace, expected) -> None:
    pod: JsonObject = {
        "metadata": {}
        if deletion_grace is None
        else {"deletionGracePeriodSeconds": deletion_grace},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{"lifecycle": {"preStop": {"sleep": {"seconds": prestop}}}}, {}],
        },
    }
    assert pod_prestop_s(pod) == prestop
    assert termination_s(pod) == expected


def bare_pod(name: str, node: str, **container: object) -> JsonObject:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "demo:1", **container}],
        },
    }


async def test_nodes_register_ready_with_pod_cidrs() -> None:
    config = cluster_config(nodes=2)
    async with virtual_cluster(config) as (_, client):
        nodes, _ = await client.list("nodes")
        plan = AddressPlan(config)
        assert [n["metadata"]["name"] for n in nodes] == ["node-1", "node-2"]
        for node, net in zip(nodes, plan.nodes, strict=True):
            assert node["spec"]["podCIDR"] == net.pod_cidr
            assert {c["type"]: c["status"] for c in node["status"]["conditions"]} == {
                "Ready": "True"
            }


async def test_pod_starts_then_becomes_ready_per_probe() -> None:
    config = cluster_config()
    async with virtual_cluster(config) as (_, client):
        started = time.time()
        probe = {
            "httpGet": {"path": "/", "port": 80},
            "initialDelaySeconds": 20,
            "periodSeconds": 10,
        }
        await client.create("pods", bare_pod("p", "node-2", readinessProbe=probe), NS)

        async def running() -> JsonObject | None:
            pod = await client.get("pods", "p", NS)
            return pod if pod["status"].get("phase") == "Running" else None

        pod = await wait_for(running, 5, "Running")
        ready = pod_condition(pod, "Ready")
        assert ready is not None and ready["status"] == "False"
        net = AddressPlan(config).nodes[1]
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(net.pod_cidr)
        assert pod["status"]["hostIP"] == net.fabric_ip
        assert pod["status"]["containerStatuses"][0]["state"]["running"]

        async def is_ready() -> JsonObject | None:
            current = await client.get("pods", "p", NS)
            cond = pod_condition(current, "Ready")
            return current if cond and cond["status"] == "True" else None

        pod = await wait_for(is_ready, 5, "Ready")
        became_ready = parse_time(pod_condition(pod, "Ready")["lastTransitionTime"])
        # start_delay 1 s, then the first worker tick at or after initialDelay 20 s: 29 s
        assert became_ready - started >= (1 + 29) * TIME_SCALE * 0.9


@pytest.mark.parametrize(
    ("prestop", "grace", "expected_s", "exit_code"),
    [(20, 30, 20, 0), (60, 10, 10, 137)],
)
async def test_deletion_waits_for_prestop_within_grace(
    prestop, grace, expected_s, exit_code
) -> None:
    async with virtual_cluster() as (_, client):
        pod = bare_pod(
            "p",
            "node-1",
            lifecycle={"preStop": {"exec": {"command": ["sh", "-c", f"sleep {prestop}"]}}},
        )
        pod["spec"]["terminationGracePeriodSeconds"] = grace
        await client.create("pods", pod, NS)

        async def ready() -> bool:
            current = await client.get("pods", "p", NS)
            cond = pod_condition(current, "Ready")
            return bool(cond and cond["status"] == "True")

        await wait_for(ready, 5, "Ready")
        _, rv = await client.list("pods", NS)
        started = time.monotonic()
        deleting = await client.delete("pods", "p", NS)
        assert deleting["metadata"]["deletionTimestamp"]
        last: JsonObject = {}
        async for event in client.watch("pods", NS, resource_version=rv):
            if event["type"] == "DELETED":
                break
            last = event["object"]
        elapsed = time.monotonic() - started
        assert elapsed >= expected_s * TIME_SCALE * 0.9
        assert elapsed < expected_s * TIME_SCALE + 2
        terminated = last["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == exit_code
