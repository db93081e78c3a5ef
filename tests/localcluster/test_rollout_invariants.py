"""Rolling updates on virtual nodes: the maxSurge / maxUnavailable invariants hold on EVERY
observed state, the rollout completes, and the final status equals what upstream's controller
reports for the same case.

Expected surge / unavailability per row are computed by hand from upstream's rules
(util/deployment_util.go ResolveFenceposts: surge rounds up, unavailable rounds down, both zero
→ unavailable 1); the final status is upstream's for a complete rollout
(sync.go calculateStatus + progress.go syncRolloutStatus: all counts = replicas, no
unavailableReplicas, Available/MinimumReplicasAvailable, Progressing/NewReplicaSetAvailable).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from localcluster.apiclient import ApiClient, JsonObject
from localcluster.objects import is_controlled_by, pod_is_active, pod_is_available
from tests.localcluster.test_controllers_harness import (
    NS,
    change_image,
    deployment,
    http_probe,
    virtual_cluster,
    wait_rollout,
)


class InvariantWatcher:
    """Watches Pods and ReplicaSets from a resourceVersion and checks the rollout invariants
    after every single event."""

    def __init__(self, replicas: int, surge: int, unavailable: int, min_ready: int) -> None:
        self.replicas, self.surge, self.unavailable, self.min_ready = (
            replicas,
            surge,
            unavailable,
            min_ready,
        )
        self.pods: dict[str, JsonObject] = {}
        self.rs_sizes: dict[str, int] = {}
        self.violations: list[str] = []
        self.states = 0
        self.max_pods = 0
        self.min_available = replicas

    def check_pods(self) -> None:
        self.states += 1
        active = [p for p in self.pods.values() if pod_is_active(p)]
        now = time.time()
        available = sum(1 for p in active if pod_is_available(p, self.min_ready, now))
        self.max_pods = max(self.max_pods, len(active))
        self.min_available = min(self.min_available, available)
        if len(active) > self.replicas + self.surge:
            self.violations.append(f"{len(active)} Pods > {self.replicas} + {self.surge}")
        if available < self.replicas - self.unavailable:
            self.violations.append(f"{available} available < {self.replicas} - {self.unavailable}")

    def check_rss(self) -> None:
        self.states += 1
        total = sum(self.rs_sizes.values())
        if total > self.replicas + self.surge:
            self.violations.append(f"RS sizes {self.rs_sizes} > {self.replicas} + {self.surge}")

    async def watch_pods(self, client: ApiClient, rv: str) -> None:
        async for event in client.watch("pods", NS, resource_version=rv):
            pod = event["object"]
            if event["type"] == "DELETED":
                self.pods.pop(pod["metadata"]["name"], None)
            elif event["type"] in ("ADDED", "MODIFIED"):
                self.pods[pod["metadata"]["name"]] = pod
            self.check_pods()

    async def watch_rss(self, client: ApiClient, rv: str) -> None:
        async for event in client.watch("replicasets", NS, resource_version=rv):
            rs = event["object"]
            if event["type"] == "DELETED":
                self.rs_sizes.pop(rs["metadata"]["name"], None)
            elif event["type"] in ("ADDED", "MODIFIED"):
                self.rs_sizes[rs["metadata"]["name"]] = rs["spec"]["replicas"]
            self.check_rss()


CASES = [
    # replicas, maxSurge, maxUnavailable, expected surge, expected unavailable, minReadySeconds
    (1, 0, 1, 0, 1, 0),
    (1, 1, 0, 1, 0, 0),
    (1, "25%", "25%", 1, 0, 0),
    (1, "100%", "100%", 1, 1, 0),
    (3, 0, 1, 0, 1, 0),
    (3, 1, 0, 1, 0, 0),
    (3, 0, "25%", 0, 1, 0),  # 0.75 rounds down to 0, and both zero → 1
    (3, "50%", "50%", 2, 1, 0),
    (3, "100%", 0, 3, 0, 0),
    (10, "25%", "25%", 3, 2, 0),
    (10, 0, "50%", 0, 5, 0),
    (10, 1, 1, 1, 1, 0),
    (10, "100%", "100%", 10, 10, 0),
    (100, "25%", "25%", 25, 25, 0),
    (100, "50%", 0, 50, 0, 0),
    # minReadySeconds (2 s) longer than the probe period (1 s): availability lags readiness
    (3, 1, 0, 1, 0, 2),
    (10, "50%", "25%", 5, 2, 2),
]


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "want_surge", "want_unavailable", "min_ready"), CASES
)
async def test_rolling_update_invariants(
    replicas, surge, unavailable, want_surge, want_unavailable, min_ready
) -> None:
    async with virtual_cluster() as (_, client):
        spec = deployment(
            replicas=replicas,
            max_surge=surge,
            max_unavailable=unavailable,
            min_ready_seconds=min_ready,
            probe=http_probe(initial_delay=1, period=1),
        )
        await client.create("deployments", spec, NS)
        await wait_rollout(client, "web", timeout_s=30)

        watcher = InvariantWatcher(replicas, want_surge, want_unavailable, min_ready)
        pods, pods_rv = await client.list("pods", NS)
        watcher.pods = {p["metadata"]["name"]: p for p in pods}
        rss, rss_rv = await client.list("replicasets", NS)
        watcher.rs_sizes = {r["metadata"]["name"]: r["spec"]["replicas"] for r in rss}
        tasks = [
            asyncio.create_task(watcher.watch_pods(client, pods_rv)),
            asyncio.create_task(watcher.watch_rss(client, rss_rv)),
        ]
        try:
            started = time.monotonic()
            await change_image(client, "web", "demo:2")
            final = await wait_rollout(client, "web", timeout_s=60)
            elapsed = time.monotonic() - started
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        assert watcher.violations == [], watcher.violations[:5]
        assert watcher.states > replicas  # really observed the rollout, event by event
        if replicas > 1 and want_surge > 0:
            assert watcher.max_pods > replicas, "surge was never used"
        if min_ready:
            # every batch waits minReadySeconds before old Pods may go
            batches = -(-replicas // max(want_surge + want_unavailable, 1))
            assert elapsed >= min_ready * min(batches, 2) * 0.9

        rss, _ = await client.list("replicasets", NS)
        new_rs = next(
            r for r in rss if r["spec"]["template"]["spec"]["containers"][0]["image"] == "demo:2"
        )
        old_rs = next(r for r in rss if r is not new_rs)
        assert_final_status(final, replicas, new_rs["metadata"]["name"])
        assert final["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        assert new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        assert old_rs["spec"]["replicas"] == 0
        assert all(is_controlled_by(r, final) for r in rss)


def assert_final_status(d: JsonObject, replicas: int, new_rs: str) -> None:
    status = d["status"]
    counts = {k: v for k, v in status.items() if k != "conditions"}
    assert counts == {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"Available", "Progressing"}
    assert (conditions["Available"]["status"], conditions["Available"]["reason"]) == (
        "True",
        "MinimumReplicasAvailable",
    )
    assert conditions["Available"]["message"] == "Deployment has minimum availability."
    progressing = conditions["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    assert progressing["message"] == f'ReplicaSet "{new_rs}" has successfully progressed.'
