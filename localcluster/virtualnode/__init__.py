"""Virtual nodes (like kwok): Node objects whose Pods run no processes but go through the
kubelet's status transitions on a timer — Running with an IP after ``start_delay_s``, Ready per
their readiness probe, and on deletion preStop then exit within the grace period, after which
the node confirms the deletion. ``VirtualNodeConfig.time_scale`` compresses every Pod-side
delay for fast tests.

``start_virtual_nodes(client, config)`` registers ``node-1..N`` and returns a handle whose
``stop()`` cancels every Pod timer (Node objects stay, as a stopped kubelet's do).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.config import ClusterConfig
from localcluster.dataplane.addressing import AddressPlan, NodeNet
from localcluster.informer import Informer, cancel_tasks
from localcluster.objects import format_time, is_deleting
from localcluster.truth import TruthWriter
from localcluster.virtualnode.lifecycle import pod_readiness_delay_s, termination_s

KUBELET_VERSION = "v1.31.0-rolltrace-virtual"


def node_object(net: NodeNet) -> JsonObject:
    now = format_time(time.time())
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": net.name,
            "labels": {
                "kubernetes.io/hostname": net.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "virtual",
            },
        },
        "spec": {"podCIDR": net.pod_cidr, "podCIDRs": [net.pod_cidr]},
        "status": {
            "conditions": [ready],
            "addresses": [
                {"type": "InternalIP", "address": net.fabric_ip},
                {"type": "Hostname", "address": net.name},
            ],
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "250"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "250"},
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "virtual://0",
            },
        },
    }


class IpPool:
    """Pod IPs of one node: its Pod CIDR minus network, gateway and broadcast."""

    def __init__(self, net: NodeNet) -> None:
        hosts = ipaddress.IPv4Network(net.pod_cidr).hosts()
        self._free = [str(ip) for ip in hosts if str(ip) != net.pod_gateway]
        self._used: dict[str, str] = {}  # pod uid → ip

    def take(self, uid: str) -> str:
        if uid not in self._used:
            if not self._free:
                raise RuntimeError("pod CIDR exhausted")
            self._used[uid] = self._free.pop(0)
        return self._used[uid]

    def release(self, uid: str) -> None:
        ip = self._used.pop(uid, None)
        if ip is not None:
            self._free.append(ip)


def _container_statuses(pod: JsonObject, state: JsonObject, ready: bool) -> list[JsonObject]:
    return [
        {
            "name": c.get("name"),
            "image": c.get("image", ""),
            "imageID": f"virtual://{c.get('image', '')}",
            "containerID": f"virtual://{pod['metadata'].get('uid')}/{c.get('name')}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }
        for c in (pod.get("spec") or {}).get("containers") or []
    ]


@dataclass
class PodRun:
    """What a virtual kubelet remembers of one Pod."""

    pod: JsonObject
    task: asyncio.Task[None] | None = None
    started_at: float | None = None
    ready_since: float | None = None
    terminating: bool = False
    deleted: asyncio.Event = field(default_factory=asyncio.Event)


class VirtualNodes:
    def __init__(
        self, client: ApiClient, config: ClusterConfig, truth_path: Path | None = None
    ) -> None:
        self.client = client
        self.config = config
        self.plan = AddressPlan(config)
        self.scale = config.virtual_node.time_scale
        self.pools = {net.name: IpPool(net) for net in self.plan.nodes}
        self.hosts = {net.name: net.fabric_ip for net in self.plan.nodes}
        self.pods = Informer(client, "pods")
        self.pods.add_handler(self._on_pod)
        self.runs: dict[str, PodRun] = {}  # by uid
        self.tasks: list[asyncio.Task[None]] = []
        self._truth = {
            net.name: TruthWriter(truth_path, f"kubelet/{net.name}") for net in self.plan.nodes
        }

    async def register(self) -> None:
        for net in self.plan.nodes:
            obj = node_object(net)
            try:
                await self.client.create("nodes", obj)
            except ApiError as exc:
                if exc.code != 409:
                    raise
                await self.client.patch("nodes", net.name, {"spec": obj["spec"]}, "merge")
                await self.client.patch(
                    "nodes", net.name, {"status": obj["status"]}, "merge", subresource="status"
                )

    def _on_pod(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        pod = new or old
        assert pod is not None
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self.pools:
            return
        uid = str(pod["metadata"].get("uid"))
        run = self.runs.get(uid)
        if new is None:
            if run is not None:
                run.deleted.set()
                if run.task is not None:
                    run.task.cancel()
                self.runs.pop(uid, None)
            self.pools[node].release(uid)
            return
        if run is None:
            run = self.runs[uid] = PodRun(new)
            run.task = asyncio.create_task(self._lifecycle(node, run), name=f"virtual-pod/{uid}")
            return
        run.pod = new
        if is_deleting(new) and not run.terminating:
            run.terminating = True
            if run.task is not None:
                run.task.cancel()
            run.task = asyncio.create_task(
                self._terminate(node, run), name=f"virtual-pod-stop/{uid}"
            )

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds * self.scale))

    async def _lifecycle(self, node: str, run: PodRun) -> None:
        if is_deleting(run.pod):
            run.terminating = True
            await self._terminate(node, run)
            return
        await self._sleep(self.config.virtual_node.start_delay_s)
        run.started_at = time.time()
        truth = self._truth[node]
        name = run.pod["metadata"]["name"]
        truth.record("process-started", pod=name, node=node)
        readiness = pod_readiness_delay_s(run.pod, self.config.virtual_node.start_delay_s)
        if readiness > 0:
            await self._write_status(node, run, ready=False)
            await self._sleep(readiness)
        run.ready_since = time.time()
        truth.record("ready-to-serve", pod=name, node=node)
        await self._write_status(node, run, ready=True)

    async def _terminate(self, node: str, run: PodRun) -> None:
        truth = self._truth[node]
        name = run.pod["metadata"]["name"]
        if run.started_at is not None:
            duration, killed = termination_s(run.pod)
            truth.record("prestop-start", pod=name, node=node)
            await self._sleep(duration)
            truth.record("prestop-end", pod=name, node=node)
            truth.record("sigkill" if killed else "sigterm", pod=name, node=node)
            truth.record("exited", pod=name, node=node)
            await self._write_status(node, run, ready=False, exit_code=137 if killed else 0)
        try:
            await self.client.delete(
                "pods", name, run.pod["metadata"].get("namespace"), grace_period_seconds=0
            )
        except ApiError as exc:
            if exc.code != 404:
                raise

    @staticmethod
    def _container_state(exit_code: int | None, started: str, now: str) -> JsonObject:
        """The container's state as the kubelet reports it: running, or terminated with the
        exit code deciding Error / Completed."""
        if exit_code is None:
            return {"running": {"startedAt": started}}
        return {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Error" if exit_code else "Completed",
                "startedAt": started,
                "finishedAt": now,
            }
        }

    @staticmethod
    def _pod_conditions(ready: bool, ready_time: str, scheduled: str) -> list[JsonObject]:
        """The five Pod conditions the kubelet keeps; Ready and ContainersReady follow
        ``ready``, with the reason a not-ready Pod shows."""
        not_ready = {} if ready else {"reason": "ContainersNotReady"}

        def condition(kind: str, status: str, since: str, **extra: str) -> JsonObject:
            return {
                "type": kind,
                "status": status,
                "lastProbeTime": None,
                "lastTransitionTime": since,
                **extra,
            }

        return [
            condition("PodReadyToStartContainers", "True", scheduled),
            condition("Initialized", "True", scheduled),
            condition("Ready", str(ready), ready_time, **not_ready),
            condition("ContainersReady", str(ready), ready_time, **not_ready),
            condition("PodScheduled", "True", scheduled),
        ]

    async def _write_status(
        self, node: str, run: PodRun, ready: bool, exit_code: int | None = None
    ) -> None:
        """Patch the Pod's status subresource as a kubelet would: phase, conditions, IPs and
        the container's state (a Pod already gone is not an error)."""
        pod = run.pod
        uid = str(pod["metadata"].get("uid"))
        started = format_time(run.started_at or time.time())
        now = format_time(time.time())
        state = self._container_state(exit_code, started, now)
        ready_time = format_time(run.ready_since) if ready and run.ready_since else now
        scheduled = format_time(run.started_at or time.time())
        ip = self.pools[node].take(uid)
        status = {
            "phase": "Running"
            if exit_code is None
            else ("Succeeded" if exit_code == 0 else "Failed"),
            "conditions": self._pod_conditions(ready, ready_time, scheduled),
            "hostIP": self.hosts[node],
            "hostIPs": [{"ip": self.hosts[node]}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
            "containerStatuses": _container_statuses(pod, state, ready),
        }
        try:
            await self.client.patch(
                "pods",
                pod["metadata"]["name"],
                {"status": status},
                "merge",
                pod["metadata"].get("namespace"),
                subresource="status",
            )
        except ApiError as exc:
            if exc.code != 404:
                raise

    async def stop(self) -> None:
        tasks = [*self.tasks, *(r.task for r in self.runs.values() if r.task is not None)]
        await cancel_tasks(tasks)
        for writer in self._truth.values():
            writer.close()


async def start_virtual_nodes(
    client: ApiClient, config: ClusterConfig, truth_path: Path | None = None
) -> VirtualNodes:
    nodes = VirtualNodes(client, config, truth_path)
    await nodes.register()
    nodes.tasks.append(asyncio.create_task(nodes.pods.run(), name="virtual-nodes/pods"))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(nodes.pods.synced.wait(), 30)
    return nodes


__all__ = ["VirtualNodes", "start_virtual_nodes"]
