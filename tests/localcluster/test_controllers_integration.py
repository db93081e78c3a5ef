"""Controllers on an in-process API server with virtual nodes: Recreate, rollback, pause,
progress deadline, history limit, proportional scaling, EndpointSlices, scheduling, garbage
collection and informer relists. Expectations cite the upstream behaviour they come from."""

from __future__ import annotations

import asyncio
import time

from kubewire import parse_time
from localcluster.apiclient import ApiClient, JsonObject
from localcluster.apiserver import InProcessClient, Store
from localcluster.informer import Informer
from localcluster.objects import is_deleting, pod_is_active
from tests.localcluster.test_controllers_harness import (
    NS,
    change_image,
    cluster_config,
    deployment,
    http_probe,
    virtual_cluster,
    wait_for,
    wait_rollout,
)

REVISION = "deployment.kubernetes.io/revision"


async def replicasets(client: ApiClient) -> list[JsonObject]:
    items, _ = await client.list("replicasets", NS)
    return items


def image_of(obj: JsonObject) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_recreate_never_overlaps_old_and_new_pods() -> None:
    """recreate.go rolloutRecreate: new Pods only once every old Pod is gone."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=4, strategy="Recreate"), NS)
        await wait_rollout(client, "web", 20)
        pods, rv = await client.list("pods", NS)
        seen = {p["metadata"]["name"]: p for p in pods}
        overlaps: list[str] = []

        async def observe() -> None:
            async for event in client.watch("pods", NS, resource_version=rv):
                obj = event["object"]
                if event["type"] == "DELETED":
                    seen.pop(obj["metadata"]["name"], None)
                else:
                    seen[obj["metadata"]["name"]] = obj
                images = {image_of(p) for p in seen.values()}
                if len(images) > 1:
                    overlaps.append(str(sorted(images)))

        task = asyncio.create_task(observe())
        await change_image(client, "web", "demo:2")
        final = await wait_rollout(client, "web", 20)
        task.cancel()
        assert overlaps == []
        assert final["status"]["updatedReplicas"] == 4


async def test_rollback_reuses_the_old_replicaset_and_bumps_its_revision() -> None:
    """kubectl rollout undo patches the template back; sync.go getNewReplicaSet finds the old
    RS (EqualIgnoreHash), sets its revision to MaxRevision(old)+1 and records the previous one
    in revision-history."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=2), NS)
        await wait_rollout(client, "web", 20)
        await change_image(client, "web", "demo:2")
        await wait_rollout(client, "web", 20)
        first = next(r for r in await replicasets(client) if image_of(r) == "demo:1")
        await change_image(client, "web", "demo:1")
        final = await wait_rollout(client, "web", 20)
        rss = await replicasets(client)
        assert len(rss) == 2
        reused = next(r for r in rss if image_of(r) == "demo:1")
        assert reused["metadata"]["uid"] == first["metadata"]["uid"]
        assert reused["metadata"]["annotations"][REVISION] == "3"
        assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
        assert final["metadata"]["annotations"][REVISION] == "3"
        assert reused["spec"]["replicas"] == 2


async def test_paused_deployment_does_not_roll_out_until_resumed() -> None:
    """deployment_controller.go: a paused Deployment only scales (sync), with
    Progressing=Unknown DeploymentPaused; resuming starts the rollout."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=3), NS)
        await wait_rollout(client, "web", 20)
        await client.patch("deployments", "web", {"spec": {"paused": True}}, "merge", NS)
        await change_image(client, "web", "demo:2")

        async def paused_condition() -> bool:
            d = await client.get("deployments", "web", NS)
            conditions = {c["type"]: c for c in d["status"].get("conditions", [])}
            return conditions.get("Progressing", {}).get("reason") == "DeploymentPaused"

        await wait_for(paused_condition, 5, "DeploymentPaused")
        # a replicas change while paused is still applied (proportional scaling)
        await client.patch("deployments", "web", {"spec": {"replicas": 5}}, "merge", NS)

        async def scaled() -> bool:
            d = await client.get("deployments", "web", NS)
            return d["status"].get("availableReplicas") == 5

        await wait_for(scaled, 10, "scale while paused")
        assert [image_of(r) for r in await replicasets(client)] == ["demo:1"]
        await client.patch("deployments", "web", {"spec": {"paused": False}}, "merge", NS)
        final = await wait_rollout(client, "web", 20)
        assert final["status"]["updatedReplicas"] == 5
        assert {image_of(r): r["spec"]["replicas"] for r in await replicasets(client)} == {
            "demo:1": 0,
            "demo:2": 5,
        }


async def test_progress_deadline_exceeded() -> None:
    """progress.go: no progress for progressDeadlineSeconds → Progressing=False
    ProgressDeadlineExceeded (what makes kubectl rollout status fail)."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=2), NS)
        await wait_rollout(client, "web", 20)
        stuck = {
            "spec": {
                "progressDeadlineSeconds": 1,
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "demo:2",
                                "readinessProbe": http_probe(initial_delay=100_000),
                            }
                        ]
                    }
                },
            }
        }
        await client.patch("deployments", "web", stuck, "strategic", NS)

        async def timed_out() -> JsonObject | None:
            d = await client.get("deployments", "web", NS)
            conditions = {c["type"]: c for c in d["status"].get("conditions", [])}
            cond = conditions.get("Progressing", {})
            return cond if cond.get("reason") == "ProgressDeadlineExceeded" else None

        cond = await wait_for(timed_out, 10, "ProgressDeadlineExceeded")
        assert cond["status"] == "False"
        assert cond["message"].endswith("has timed out progressing.")
        d = await client.get("deployments", "web", NS)
        assert d["status"]["availableReplicas"] >= 1  # maxUnavailable 25% of 2 → 0 → old Pods stay


async def test_revision_history_limit_deletes_old_replicasets() -> None:
    """sync.go cleanupDeployment after a complete rollout."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=1, revisionHistoryLimit=1), NS)
        await wait_rollout(client, "web", 20)
        for version in (2, 3, 4):
            await change_image(client, "web", f"demo:{version}")
            await wait_rollout(client, "web", 20)

        async def cleaned() -> list[JsonObject] | None:
            rss = await replicasets(client)
            return rss if len(rss) == 2 else None

        rss = await wait_for(cleaned, 10, "history cleanup")
        assert sorted(r["metadata"]["annotations"][REVISION] for r in rss) == ["3", "4"]


async def test_endpointslice_follows_pods_through_termination() -> None:
    """KEP-1672: a terminating Pod stays in the slice as ready=false, serving=<ready>,
    terminating=true until it is gone; the slice is owned by and named after its Service."""
    async with virtual_cluster() as (_, client):
        spec = deployment(replicas=2)
        container = spec["spec"]["template"]["spec"]["containers"][0]
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": 30}}}  # 0.3 s at time_scale
        await client.create("deployments", spec, NS)
        service = await client.create(
            "services",
            {
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            },
            NS,
        )
        await wait_rollout(client, "web", 20)

        async def slice_with(count: int) -> JsonObject | None:
            items, _ = await client.list(
                "endpointslices", NS, label_selector="kubernetes.io/service-name=web"
            )
            if len(items) == 1 and len(items[0].get("endpoints") or []) == count:
                return items[0]
            return None

        ready_slice = await wait_for(lambda: slice_with(2), 10, "two endpoints")
        assert ready_slice["metadata"]["name"].startswith("web-")
        assert (
            ready_slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
            == "endpointslice-controller.k8s.io"
        )
        assert ready_slice["metadata"]["ownerReferences"][0]["uid"] == service["metadata"]["uid"]
        assert ready_slice["ports"] == [{"port": 8080, "protocol": "TCP", "name": "http"}]
        assert all(
            e["conditions"] == {"ready": True, "serving": True, "terminating": False}
            for e in ready_slice["endpoints"]
        )
        assert parse_time(
            ready_slice["metadata"]["annotations"][
                "endpoints.kubernetes.io/last-change-trigger-time"
            ]
        )

        pods, _ = await client.list("pods", NS)
        victim = pods[0]["metadata"]["name"]
        await client.delete("pods", victim, NS)

        async def terminating_endpoint() -> JsonObject | None:
            items, _ = await client.list("endpointslices", NS)
            for endpoint in items[0].get("endpoints") or []:
                if (
                    endpoint["targetRef"]["name"] == victim
                    and endpoint["conditions"]["terminating"]
                ):
                    return endpoint
            return None

        endpoint = await wait_for(terminating_endpoint, 5, "terminating endpoint")
        assert endpoint["conditions"] == {"ready": False, "serving": True, "terminating": True}

        async def victim_gone() -> bool:
            items, _ = await client.list("endpointslices", NS)
            names = [e["targetRef"]["name"] for e in items[0].get("endpoints") or []]
            return victim not in names and len(names) == 2

        await wait_for(victim_gone, 10, "victim removed and replaced")


async def test_endpointslice_batching_collects_changes_into_one_write() -> None:
    """--endpointslice-updates-batch-period: Pod changes within the window are one write."""
    config = cluster_config(endpoint_batch_delay_s=1.0)
    async with virtual_cluster(config) as (_, client):
        await client.create(
            "services",
            {
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            },
            NS,
        )

        async def slice_exists() -> JsonObject | None:
            items, _ = await client.list("endpointslices", NS)
            return items[0] if items else None

        empty = await wait_for(slice_exists, 5, "empty slice")
        assert empty["endpoints"] == []
        _, rv = await client.list("endpointslices", NS)
        writes: list[tuple[float, int]] = []

        async def count_writes() -> None:
            async for event in client.watch("endpointslices", NS, resource_version=rv):
                writes.append((time.monotonic(), len(event["object"].get("endpoints") or [])))

        task = asyncio.create_task(count_writes())
        started = time.monotonic()
        await client.create("deployments", deployment(replicas=6), NS)
        await wait_rollout(client, "web", 10)
        await wait_for(lambda: _has(writes, 6), 5, "slice with 6 endpoints")
        task.cancel()
        # 6 Pods × (create, bind, status) changes arrive within ~0.1 s: one write carries all
        assert len(writes) == 1, writes
        assert writes[0][0] - started >= 1.0


async def _has(writes: list[tuple[float, int]], count: int) -> bool:
    return any(n == count for _, n in writes)


async def test_unschedulable_pod_gets_condition_and_is_placed_when_a_node_fits() -> None:
    async with virtual_cluster() as (_, client):
        spec = deployment(replicas=1)
        spec["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
        await client.create("deployments", spec, NS)

        async def unschedulable() -> JsonObject | None:
            pods, _ = await client.list("pods", NS)
            for p in pods:
                for c in p["status"].get("conditions") or []:
                    if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable":
                        return p
            return None

        pending = await wait_for(unschedulable, 5, "Unschedulable condition")
        assert pending["status"]["phase"] == "Pending"
        assert "nodeName" not in pending["spec"]
        await client.patch("nodes", "node-2", {"metadata": {"labels": {"disk": "ssd"}}}, "merge")
        await wait_rollout(client, "web", 10)
        pods, _ = await client.list("pods", NS)
        assert [p["spec"]["nodeName"] for p in pods] == ["node-2"]


async def test_scheduler_spreads_pods_evenly() -> None:
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=9), NS)
        await wait_rollout(client, "web", 10)
        pods, _ = await client.list("pods", NS)
        per_node: dict[str, int] = {}
        for p in pods:
            per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
        assert per_node == {"node-1": 3, "node-2": 3, "node-3": 3}


async def test_garbage_collector_removes_dependents_of_deleted_owners() -> None:
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=3), NS)
        await client.create(
            "services",
            {
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            },
            NS,
        )
        await wait_rollout(client, "web", 10)
        await client.delete("deployments", "web", NS)
        await client.delete("services", "web", NS)

        async def all_gone() -> bool:
            counts = [
                len((await client.list(r, NS))[0])
                for r in ("replicasets", "pods", "endpointslices")
            ]
            return counts == [0, 0, 0]

        await wait_for(all_gone, 10, "cascading deletion")


async def test_replicaset_scale_down_deletes_unready_pods_first() -> None:
    """ActivePods order end to end: a not-ready Pod is the first victim."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=3), NS)
        await wait_rollout(client, "web", 10)
        pods, _ = await client.list("pods", NS)
        victim = pods[1]["metadata"]["name"]
        status = pods[1]["status"]
        status["conditions"] = [
            dict(c, status="False") if c["type"] == "Ready" else c for c in status["conditions"]
        ]
        await client.patch("pods", victim, {"status": status}, "merge", NS, subresource="status")
        await client.patch("deployments", "web", {"spec": {"replicas": 2}}, "merge", NS)

        async def scaled_down() -> list[JsonObject] | None:
            items, _ = await client.list("pods", NS)
            active = [p for p in items if pod_is_active(p)]
            return items if len(active) == 2 else None

        items = await wait_for(scaled_down, 10, "scale down")
        gone = [p["metadata"]["name"] for p in items if is_deleting(p)] or sorted(
            {p["metadata"]["name"] for p in pods} - {p["metadata"]["name"] for p in items}
        )
        assert gone == [victim]


async def test_informer_relists_after_410() -> None:
    """client-go reflector: a watch from an RV older than the retained history gets 410 Gone;
    the informer relists and emits the difference."""
    store = Store(history_size=3)
    client = InProcessClient(store)
    informer = Informer(client, "pods")
    events: list[tuple[str, str]] = []
    informer.add_handler(
        lambda kind, old, new: events.append((kind, (new or old or {})["metadata"]["name"]))
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        for i in range(5):
            await client.create(
                "pods", {"metadata": {"name": f"p{i}"}, "spec": {"containers": []}}, NS
            )
        await wait_for(lambda: _true(len(informer.cache) == 5), 5, "5 pods cached")
        # Disconnect while caught up, then let more changes happen than the history keeps:
        # the informer resumes from its last RV, which the server no longer has.
        store.close_watchers()
        await client.delete("pods", "p0", NS)
        for i in range(5, 10):
            await client.create(
                "pods", {"metadata": {"name": f"p{i}"}, "spec": {"containers": []}}, NS
            )
        await wait_for(lambda: _true(informer.relists == 2), 5, "relist after 410")
        await wait_for(lambda: _true(len(informer.cache) == 9), 5, "cache after relist")
        assert ("DELETED", "p0") in events
        assert "p0" not in {name for _, name in informer.cache}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close_watchers()


async def _true(value: bool) -> bool:
    return value


async def test_controllers_record_upstream_events() -> None:
    """What `kubectl describe` shows: ScalingReplicaSet (deployment controller),
    SuccessfulCreate / SuccessfulDelete (replicaset controller), Scheduled (scheduler)."""
    async with virtual_cluster() as (_, client):
        await client.create(
            "deployments", deployment(replicas=2, max_surge=1, max_unavailable=0), NS
        )
        await wait_rollout(client, "web", 10)
        await change_image(client, "web", "demo:2")
        await wait_rollout(client, "web", 10)
        rss = {image_of(r): r["metadata"]["name"] for r in await replicasets(client)}

        async def events() -> list[tuple[str, str, str]] | None:
            items, _ = await client.list("events", NS)
            found = [(e["involvedObject"]["kind"], e["reason"], e["message"]) for e in items]
            return found if sum(1 for f in found if f[1] == "SuccessfulDelete") >= 2 else None

        found = await wait_for(events, 5, "events")
        scaling = [m for kind, reason, m in found if reason == "ScalingReplicaSet"]
        assert kind_of(found, "ScalingReplicaSet") == {"Deployment"}
        assert f"Scaled up replica set {rss['demo:1']} from 0 to 2" in scaling
        assert f"Scaled up replica set {rss['demo:2']} from 0 to 1" in scaling
        assert f"Scaled down replica set {rss['demo:1']} from 2 to 1" in scaling
        assert kind_of(found, "SuccessfulCreate") == {"ReplicaSet"}
        assert sum(1 for f in found if f[1] == "SuccessfulCreate") == 4
        assert kind_of(found, "Scheduled") == {"Pod"}
        assert all(
            m.startswith("Successfully assigned default/web-")
            for _, r, m in found
            if r == "Scheduled"
        )


def kind_of(found: list[tuple[str, str, str]], reason: str) -> set[str]:
    return {kind for kind, r, _ in found if r == reason}


async def test_endpoints_beyond_one_hundred_spill_into_a_second_slice() -> None:
    """--max-endpoints-per-slice defaults to 100 upstream."""
    async with virtual_cluster() as (_, client):
        await client.create(
            "services",
            {
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            },
            NS,
        )
        await client.create("deployments", deployment(replicas=130), NS)
        await wait_rollout(client, "web", 20)

        async def spread() -> list[int] | None:
            items, _ = await client.list("endpointslices", NS)
            sizes = sorted(len(s.get("endpoints") or []) for s in items)
            return sizes if sum(sizes) == 130 else None

        assert await wait_for(spread, 10, "130 endpoints") == [30, 100]


async def test_found_new_replicaset_when_progressing_condition_is_missing() -> None:
    """sync.go getNewReplicaSet: an existing new RS and no Progressing condition →
    Progressing=True FoundNewReplicaSet, then syncRolloutStatus completes it again."""
    async with virtual_cluster() as (_, client):
        await client.create("deployments", deployment(replicas=1), NS)
        d = await wait_rollout(client, "web", 10)
        conditions = [c for c in d["status"]["conditions"] if c["type"] != "Progressing"]
        d["status"]["conditions"] = conditions
        updated = await client.update("deployments", d, NS, subresource="status")
        reasons: list[str] = []
        async for event in client.watch(
            "deployments", NS, resource_version=updated["metadata"]["resourceVersion"]
        ):
            cond = {c["type"]: c for c in event["object"]["status"].get("conditions", [])}.get(
                "Progressing"
            )
            if cond is not None:
                reasons.append(cond["reason"])
            if reasons and reasons[-1] == "NewReplicaSetAvailable":
                break
        assert reasons == ["FoundNewReplicaSet", "NewReplicaSetAvailable"]
