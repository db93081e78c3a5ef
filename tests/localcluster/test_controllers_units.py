"""Pure parts of the ReplicaSet, EndpointSlice and scheduler controllers, and the work queue."""

from __future__ import annotations

import asyncio

import pytest

from localcluster.controllers.endpointslice import desired_endpoints, endpoint_for, plan_slices
from localcluster.controllers.informer import WorkQueue
from localcluster.controllers.replicaset import (
    Expectations,
    deletion_order,
    next_availability_check,
    pod_from_template,
    replicaset_status,
)
from localcluster.controllers.scheduler import choose_node, node_fits, unschedulable_message
from localcluster.objects import format_time, pod_is_available, selector_matches

NOW = 1_800_000_000.0


def pod(
    name: str,
    *,
    node: str | None = "node-1",
    phase: str = "Running",
    ready: bool = True,
    ready_since: float = NOW - 100,
    restarts: int = 0,
    created: float = NOW - 200,
    labels: dict[str, str] | None = None,
    ip: str | None = "10.0.0.1",
    deleting: bool = False,
    cost: int | None = None,
) -> dict:
    meta: dict = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "labels": labels or {"app": "web"},
        "creationTimestamp": format_time(created),
    }
    if deleting:
        meta["deletionTimestamp"] = format_time(NOW + 30)
    if cost is not None:
        meta["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
    status: dict = {
        "phase": phase,
        "conditions": [
            {"type": "Ready", "status": str(ready), "lastTransitionTime": format_time(ready_since)}
        ],
        "containerStatuses": [{"name": "app", "restartCount": restarts}],
    }
    if ip:
        status["podIP"] = ip
    spec: dict = {
        "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]
    }
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        # controller_utils.go ActivePods / ActivePodsWithRanks, criterion by criterion
        (pod("a", node=None, phase="Pending", ready=False), pod("b"), "unassigned before assigned"),
        (
            pod("a", phase="Pending", ready=False),
            pod("b", phase="Running"),
            "Pending before Running",
        ),
        (
            pod("a", phase="Unknown", ready=False),
            pod("b", phase="Running", ready=False),
            "Unknown before Running",
        ),
        (pod("a", ready=False), pod("b", ready=True), "not ready before ready"),
        (pod("a", cost=-5), pod("b", cost=10), "lower pod-deletion-cost first"),
        (
            pod("a", ready_since=NOW - 10),
            pod("b", ready_since=NOW - 500),
            "ready for less time first",
        ),
        (pod("a", restarts=5), pod("b", restarts=0), "more restarts first"),
        (pod("a", created=NOW - 5), pod("b", created=NOW - 50), "newer first"),
    ],
)
def test_scale_down_victim_order(first, second, why) -> None:
    ordered = deletion_order([second, first])
    assert [p["metadata"]["name"] for p in ordered] == ["a", "b"], why


def test_pods_doubled_up_on_a_node_go_first() -> None:
    """ActivePodsWithRanks: a higher count of related Pods on the same node ranks first."""
    crowded = pod("a", node="node-1")
    alone = pod("b", node="node-2")
    sibling = pod("c", node="node-1")
    assert [p["metadata"]["name"] for p in deletion_order([alone, crowded], [sibling])] == [
        "a",
        "b",
    ]


def test_replicaset_status_counts_active_pods_and_min_ready() -> None:
    """replica_set_utils.go calculateStatus: terminating Pods do not count; availability
    waits minReadySeconds past the Ready transition (podutil.IsPodAvailable, strictly)."""
    rs = {
        "metadata": {"name": "rs", "generation": 4},
        "spec": {
            "minReadySeconds": 10,
            "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}},
        },
    }
    pods = [
        pod("old-ready", ready_since=NOW - 60, labels={"app": "web", "tier": "x"}),
        pod("fresh", ready_since=NOW - 3, labels={"app": "web", "tier": "x"}),
        pod("unready", ready=False, labels={"app": "web"}),
        pod("going", deleting=True, labels={"app": "web", "tier": "x"}),
    ]
    assert replicaset_status(rs, pods, NOW) == {
        "replicas": 3,
        "fullyLabeledReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 1,
        "observedGeneration": 4,
    }
    assert next_availability_check(rs, pods, NOW) == pytest.approx(7.01)
    assert not pod_is_available(pod("edge", ready_since=NOW - 10), 10, NOW)  # not strictly after
    assert replicaset_status(rs, [], NOW) == {"replicas": 0, "observedGeneration": 4}


def test_pod_from_template_is_owned_and_generate_named() -> None:
    rs = {
        "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u1"},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                "spec": {"containers": []},
            }
        },
    }
    created = pod_from_template(rs)
    assert created["metadata"]["generateName"] == "web-abc-"
    assert created["metadata"]["labels"] == {"app": "web", "pod-template-hash": "abc"}
    ref = created["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "ReplicaSet",
        "web-abc",
        "u1",
        True,
    )


def test_expectations_block_until_observed() -> None:
    expectations = Expectations()
    key = ("default", "rs")
    expectations.expect(key, adds=2, deletes=["p1"])
    assert not expectations.satisfied(key)
    expectations.observed_add(key)
    expectations.observed_add(key)
    assert not expectations.satisfied(key)
    expectations.observed_delete(key, "p1")
    assert expectations.satisfied(key)


SERVICE = {
    "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    },
}


@pytest.mark.parametrize(
    ("ready", "deleting", "publish", "expected"),
    [
        # KEP-1672 / endpointslice utils podToEndpoint
        (True, False, False, {"ready": True, "serving": True, "terminating": False}),
        (False, False, False, {"ready": False, "serving": False, "terminating": False}),
        (True, True, False, {"ready": False, "serving": True, "terminating": True}),
        (False, True, False, {"ready": False, "serving": False, "terminating": True}),
        (False, True, True, {"ready": True, "serving": True, "terminating": True}),
    ],
)
def test_endpoint_conditions(ready, deleting, publish, expected) -> None:
    service = {**SERVICE, "spec": {**SERVICE["spec"], "publishNotReadyAddresses": publish}}
    endpoint = endpoint_for(service, pod("p", ready=ready, deleting=deleting))
    assert endpoint["conditions"] == expected
    assert endpoint["nodeName"] == "node-1"
    assert endpoint["targetRef"] == {
        "kind": "Pod",
        "namespace": "default",
        "name": "p",
        "uid": "uid-p",
    }


def test_desired_endpoints_selects_pods_with_ips_and_resolves_named_ports() -> None:
    pods = [
        pod("b", ip="10.0.0.2"),
        pod("a", ip="10.0.0.1"),
        pod("no-ip", ip=None),
        pod("other", labels={"app": "other"}),
        pod("done", phase="Succeeded"),
    ]
    endpoints, ports = desired_endpoints(SERVICE, pods)
    assert [e["targetRef"]["name"] for e in endpoints] == ["a", "b"]
    assert [e["addresses"] for e in endpoints] == [["10.0.0.1"], ["10.0.0.2"]]
    assert ports == [{"port": 8080, "protocol": "TCP", "name": "http"}]


def node(
    name: str,
    *,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    unschedulable: bool = False,
) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_scheduler_picks_least_loaded_then_name() -> None:
    nodes = [node("node-2"), node("node-1"), node("node-3")]
    assert (
        choose_node(pod("p", node=None), nodes, {"node-1": 2, "node-2": 1, "node-3": 1}) == "node-2"
    )
    assert choose_node(pod("p", node=None), nodes, {}) == "node-1"
    assert (
        choose_node(
            pod("p", node=None), [node("x", ready=False), node("y", unschedulable=True)], {}
        )
        is None
    )


def affinity(*expressions: dict) -> dict:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
            }
        }
    }


@pytest.mark.parametrize(
    ("spec", "labels", "fits"),
    [
        ({"nodeSelector": {"zone": "a"}}, {"zone": "a"}, True),
        ({"nodeSelector": {"zone": "a"}}, {"zone": "b"}, False),
        (
            {"affinity": affinity({"key": "zone", "operator": "In", "values": ["a", "b"]})},
            {"zone": "b"},
            True,
        ),
        ({"affinity": affinity({"key": "zone", "operator": "In", "values": ["a"]})}, {}, False),
        (
            {"affinity": affinity({"key": "zone", "operator": "NotIn", "values": ["a"]})},
            {"zone": "c"},
            True,
        ),
        (
            {"affinity": affinity({"key": "zone", "operator": "NotIn", "values": ["a"]})},
            {"zone": "a"},
            False,
        ),
        ({"affinity": affinity({"key": "gpu", "operator": "Exists"})}, {"gpu": "1"}, True),
        ({"affinity": affinity({"key": "gpu", "operator": "Exists"})}, {}, False),
    ],
)
def test_node_selector_and_required_affinity(spec, labels, fits) -> None:
    candidate = {"spec": {"containers": [], **spec}}
    assert node_fits(candidate, node("n", labels=labels)) is fits


def test_unschedulable_message_names_the_reasons() -> None:
    candidate = {"spec": {"nodeSelector": {"zone": "z"}}}
    message = unschedulable_message(candidate, [node("a"), node("b", ready=False)])
    assert message.startswith("0/2 nodes are available: 1 node(s) didn't match")
    assert "1 node(s) were not ready" in message


def test_label_selector_terms() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
    }
    assert selector_matches(selector, {"app": "web"})
    assert not selector_matches(selector, {"app": "web", "tier": "db"})
    assert not selector_matches({}, {"app": "web"})  # empty selects nothing for controllers


async def test_work_queue_coalesces_and_requeues_dirty_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    key = await queue.get()
    assert key == "a"
    queue.add("a")  # changed while being processed: comes back after done()
    assert len(queue) == 1
    queue.done("a")
    assert [await queue.get(), await queue.get()] == ["b", "a"]


async def test_work_queue_add_after_keeps_earliest_deadline() -> None:
    """The batching window: changes inside it join the first pending sync."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("svc", 0.05)
    await asyncio.sleep(0.02)
    queue.add_after("svc", 0.05)  # would be later: the earlier deadline stands
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(queue.get(), 1) == "svc"
    assert loop.time() - start < 0.045
    queue.done("svc")
    assert len(queue) == 0
    queue.close()


def ep(name: str, ready: bool = True) -> dict:
    return {
        "addresses": [name],
        "conditions": {"ready": ready},
        "targetRef": {"kind": "Pod", "name": name, "uid": name},
    }


def test_slice_plan_caps_slices_and_keeps_endpoints_where_they_are() -> None:
    """Upstream's reconciler (--max-endpoints-per-slice): at most N endpoints per slice, an
    endpoint stays in its slice, free room is filled before a slice is created."""
    first = plan_slices([], [ep(f"p{i}") for i in range(5)], max_per_slice=2)
    assert first.creates == [[ep("p0"), ep("p1")], [ep("p2"), ep("p3")], [ep("p4")]]
    existing = [("s-a", [ep("p0"), ep("p1")]), ("s-b", [ep("p2"), ep("p3")]), ("s-c", [ep("p4")])]
    # p1 goes, p5 comes, p3 turns unready: s-a gets p5 in p1's place, s-b updates in place
    desired = [ep("p0"), ep("p2"), ep("p3", ready=False), ep("p4"), ep("p5")]
    plan = plan_slices(existing, desired, max_per_slice=2)
    assert plan.creates == [] and plan.deletes == []
    assert plan.updates == {
        "s-a": [ep("p0"), ep("p5")],
        "s-b": [ep("p2"), ep("p3", False)],
        "s-c": [ep("p4")],
    }
    emptied = plan_slices(existing, [ep("p4")], max_per_slice=2)
    assert emptied.deletes == ["s-a", "s-b"] and emptied.updates == {"s-c": [ep("p4")]}
    nothing = plan_slices(existing, [], max_per_slice=2)
    assert nothing.updates == {"s-a": []} and nothing.deletes == ["s-b", "s-c"]
    assert plan_slices([], []).creates == [[]]  # a Service without Pods still gets a slice
