"""The kubelet: registers its Node, watches the Pods bound to it and runs each as real processes.

It sees the cluster only through ``ApiClient`` (list + watch with a field selector, status
subresource writes, the grace-0 delete that confirms a Pod's termination), exactly as a real
kubelet does through client-go, so the control plane's timing reaches it through the same watch
machinery everyone else uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kubewire import format_time
from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.config import ClusterConfig
from localcluster.dataplane.ip import netns_path
from localcluster.dataplane.sandbox import Sandbox, SandboxProvider
from localcluster.events import EventRecorder, EventType
from localcluster.informer import Informer, cancel_tasks
from localcluster.kubelet.containers import ImageError, Launch, PodContext, resolve_launch
from localcluster.kubelet.runner import Backoff, ContainerRunner, PodEnv
from localcluster.kubelet.status import ConditionBook, ContainerRecord, pod_status
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)
KUBELET_VERSION = "v1.34.0-rolltrace"
RETRY_S = 0.5  # after a failed API write (status, registration): the API server may be restarting
REGISTRATION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class KubeletOptions:
    """Node-local settings that are not part of the cluster's timing model."""

    node_ip: str | None = None  # None: detected (see detect_node_ip)
    pod_cidr: str = ""
    logs_dir: Path | None = None
    heartbeat_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    app_truth_path: Path | None = None  # handed to demo-app containers as DEMOAPP_TRUTH


def detect_node_ip(address_range: str) -> str:
    """The address this namespace uses toward the cluster's internal range, as a kubelet picks
    the address of its default-route interface. A UDP ``connect`` only consults the routing
    table (no packet is sent). Outside a node namespace there is no route into the range (the
    host never gets one), so the answer falls outside it and the node is on loopback."""
    network = ipaddress.ip_network(address_range)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((str(network.network_address + 1), 9))
        source = ipaddress.ip_address(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()
    return str(source) if source in network else "127.0.0.1"


class PodWorker:
    """Everything the kubelet does for one Pod, from sandbox to confirmed deletion."""

    def __init__(self, kubelet: Kubelet, pod: JsonObject) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace", "default")
        self.uid: str = meta["uid"]
        self.sandbox: Sandbox | None = None
        self.directory: Path | None = None
        self.runners: list[ContainerRunner] = []
        self.records: list[ContainerRecord] = []
        self.book = ConditionBook()
        self.start_time = format_time()
        self._deletion = asyncio.Event()
        self._forced = False
        self._cut_short: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self._status_task: asyncio.Task[None] | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    # -- events from the watch -----------------------------------------------------------
    def update(self, pod: JsonObject) -> None:
        self.pod = pod
        if not pod["metadata"].get("deletionTimestamp"):
            return
        if self._deletion.is_set():  # already terminating: a new delete may shorten the grace
            for runner in self.runners:
                runner.shorten_grace(self.grace_s)
        self._deletion.set()

    def removed(self) -> None:
        """Deleted from the API without our confirmation (forced), or the kubelet is stopping:
        stop at once, even when a graceful termination is already under way."""
        if self._deletion.is_set() and not self._forced:
            for runner in self.runners:
                self._cut_short.append(asyncio.get_running_loop().create_task(runner.kill_now()))
        self._forced = True
        self._deletion.set()

    @property
    def grace_s(self) -> float:
        meta, spec = self.pod["metadata"], self.pod.get("spec", {})
        return float(
            meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30))
        )

    # -- the Pod's life ------------------------------------------------------------------
    async def _run(self) -> None:
        self._status_task = asyncio.get_running_loop().create_task(self._status_loop())
        try:
            if not self._deletion.is_set():
                await self._start()
            await self._deletion.wait()
            await self._terminate()
        finally:
            await self._teardown()
        if not self._forced:
            await self._confirm_deletion()

    async def _start(self) -> None:
        k = self.kubelet
        spec = self.pod.get("spec", {})
        try:
            self.sandbox = await k.sandboxes.create(self.namespace, self.name, self.uid)
        except (OSError, RuntimeError) as error:  # the Pod stays Pending until deleted
            log.warning("sandbox for %s/%s failed: %s", self.namespace, self.name, error)
            self._emit(
                "FailedCreatePodSandBox", f"Failed to create pod sandbox: {error}", "Warning"
            )
            self.records = [
                ContainerRecord(c["name"], str(c.get("image", "")))
                for c in spec.get("containers", [])
            ]
            self._dirty.set()
            return
        env = PodEnv(
            pod_name=self.name,
            namespace=self.namespace,
            node_name=k.node_name,
            pod_ip=self.sandbox.ip,
            exec_prefix=k.sandboxes.exec_prefix(self.sandbox),
            restart_policy=spec.get("restartPolicy", "Always"),
            grace_s=float(spec.get("terminationGracePeriodSeconds", 30)),
            truth=k.truth,
            log_dir=k.options.logs_dir,
            backoff=k.options.backoff,
            on_change=self._dirty.set,
            emit=self._emit,
            netns_path=netns_path(self.sandbox.netns) if self.sandbox.netns else None,
        )
        self.directory = k.pod_directory(self.namespace, self.name, self.uid)
        context = PodContext(
            self.name,
            self.namespace,
            self.uid,
            k.node_name,
            self.sandbox.ip,
            k.node_ip,
            str(self.directory),
        )
        launches = [
            (c, resolve_launch(c, context, k.base_env, k.demoapp_env))
            for c in spec.get("containers", [])
        ]
        failures = [(c, r) for c, r in launches if isinstance(r, ImageError)]
        if failures:  # like an image that cannot be pulled: nothing of the Pod starts
            for container, result in launches:
                record = ContainerRecord(container["name"], str(container.get("image", "")))
                if isinstance(result, ImageError):
                    record.state = {"waiting": {"reason": result.reason, "message": result.message}}
                    self._emit("Failed", result.message, "Warning")
                    self._emit("Failed", f"Error: {result.reason}", "Warning")
                self.records.append(record)
            self._dirty.set()
            return
        for container, launch in launches:
            assert isinstance(launch, Launch)
            runner = ContainerRunner(container, launch, env)
            self.runners.append(runner)
            self.records.append(runner.record)
        for runner in self.runners:
            runner.start()
        self._dirty.set()

    async def _terminate(self) -> None:
        if self._forced:
            await asyncio.gather(*(r.kill_now() for r in self.runners))
        else:
            grace = self.grace_s
            await asyncio.gather(*(r.terminate(grace) for r in self.runners))

    async def _teardown(self) -> None:
        """Runs even when the kubelet is stopped or crashes mid-way: no process or sandbox
        outlives the worker."""
        await asyncio.gather(*(r.kill_now() for r in self.runners if not r.record.final))
        await asyncio.gather(*self._cut_short)
        if self.sandbox is not None:
            await self.kubelet.sandboxes.destroy(self.sandbox)
        if self.directory is not None and self.kubelet.options.logs_dir is None:
            shutil.rmtree(self.directory, ignore_errors=True)  # a temporary one: nothing to keep
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if not self._forced:
            await self._write_status()

    def _emit(self, reason: str, message: str, event_type: str) -> None:
        self.kubelet.post_event(self.pod, reason, message, event_type)

    async def _confirm_deletion(self) -> None:
        with contextlib.suppress(ApiError):  # already gone is fine
            await self.kubelet.client.delete(
                "pods", self.name, self.namespace, grace_period_seconds=0
            )

    # -- status --------------------------------------------------------------------------
    async def _status_loop(self) -> None:
        """Coalesces changes: at most one status write in flight, always of the latest state;
        a failed write is retried (with whatever the state is by then)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not await self._write_status():
                await asyncio.sleep(RETRY_S)
                self._dirty.set()

    async def _write_status(self) -> bool:
        """False when the write failed and is worth retrying."""
        status = pod_status(
            self.records,
            pod_ip=self.sandbox.ip if self.sandbox else None,
            host_ip=self.kubelet.node_ip,
            start_time=self.start_time,
            book=self.book,
        )
        try:
            await self.kubelet.client.patch(
                "pods", self.name, {"status": status}, "merge", self.namespace, "status"
            )
        except Exception as error:  # API errors, and transport errors of any client: retried
            if isinstance(error, ApiError) and error.code == 404:  # the Pod is gone
                return True
            shown = error if isinstance(error, ApiError) else repr(error)
            log.warning("status of %s/%s not written: %s", self.namespace, self.name, shown)
            return False
        return True


class Kubelet:
    def __init__(
        self,
        client: ApiClient,
        node_name: str,
        sandboxes: SandboxProvider,
        truth: TruthWriter,
        config: ClusterConfig,
        options: KubeletOptions | None = None,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.sandboxes = sandboxes
        self.truth = truth
        self.config = config
        self.options = options or KubeletOptions()
        self.node_ip = self.options.node_ip or detect_node_ip(config.address_range)
        self.workers: dict[str, PodWorker] = {}
        self.base_env = dict(os.environ)
        self.demoapp_env = (
            {"DEMOAPP_TRUTH": str(self.options.app_truth_path)}
            if self.options.app_truth_path is not None
            else {}
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._ready_since = format_time()
        self.events = EventRecorder(client, "kubelet")
        self.pods = Informer(client, "pods", field_selector=f"spec.nodeName={node_name}")
        self.pods.add_handler(self._on_pod)
        self._stopped = asyncio.Event()

    def pod_directory(self, namespace: str, name: str, uid: str) -> Path:
        """Where the Pod's containers may keep files of their own (the ingress controller's
        nginx keeps its configuration, pid, temp files and access log there; a container that
        needs it creates it): under the logs directory, kept after the Pod as its container
        logs are; without one, in the temporary directory, removed with the Pod."""
        if self.options.logs_dir is None:
            return Path(tempfile.gettempdir()) / f"rolltrace-pod-{uid}"
        return self.options.logs_dir / "pods" / f"{namespace}_{name}_{uid}"

    async def run(self) -> None:
        await self._register_with_retries()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat()),
            loop.create_task(self.pods.run()),
        ]
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stops watching and kills every Pod process at once (the node goes away; the API
        keeps the Pods, as it would for a node that died)."""
        await cancel_tasks(self._tasks)
        await self.events.close()
        for worker in list(self.workers.values()):
            worker.removed()
        await asyncio.gather(*(w.task for w in self.workers.values()), return_exceptions=True)
        self.workers.clear()
        self._stopped.set()

    # -- the Node ------------------------------------------------------------------------
    def _node_status(self) -> JsonObject:
        now = format_time()
        return {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": self._ready_since,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.node_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "operatingSystem": "linux"},
            "capacity": {"pods": "110"},
            "allocatable": {"pods": "110"},
        }

    async def _register_with_retries(self) -> None:
        deadline = asyncio.get_running_loop().time() + REGISTRATION_TIMEOUT_S
        while True:
            try:
                await self.register_node()
                return
            except Exception as error:  # the API server may not be up yet
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("registering node %s failed (%r); retrying", self.node_name, error)
                await asyncio.sleep(RETRY_S)

    async def register_node(self) -> None:
        spec: JsonObject = {}
        if self.options.pod_cidr:
            spec = {"podCIDR": self.options.pod_cidr, "podCIDRs": [self.options.pod_cidr]}
        node = {
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux"},
            },
            "spec": spec,
        }
        try:
            await self.client.create("nodes", node)
        except ApiError as error:
            if error.code != 409:
                raise
            if spec:  # registered before (a restart, or the node agent): keep what we do not know
                await self.client.patch("nodes", self.node_name, {"spec": spec})
        await self._post_node_status()

    async def _post_node_status(self) -> None:
        await self.client.patch(
            "nodes", self.node_name, {"status": self._node_status()}, subresource="status"
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_s)
            try:
                await self._post_node_status()
            except Exception as error:  # a missed heartbeat is not fatal; the next one may pass
                log.warning("node heartbeat failed: %r", error)

    # -- Kubernetes Events ---------------------------------------------------------------
    def post_event(self, pod: JsonObject, reason: str, message: str, event_type: str) -> None:
        """Never awaited: a slow API server must not delay a Pod's lifecycle."""
        kind: EventType = "Warning" if event_type == "Warning" else "Normal"
        self.events.emit({"kind": "Pod", "apiVersion": "v1", **pod}, reason, message, kind)

    # -- the Pods ------------------------------------------------------------------------
    def _on_pod(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        """Workers are per Pod UID: a Pod replaced by one of the same name (seen as a
        modification across a relist) ends the old worker and starts a new one."""
        if old is not None and (new is None or new["metadata"]["uid"] != old["metadata"]["uid"]):
            self._gone(old["metadata"]["uid"])
        if new is not None:
            self._seen(new)

    def _seen(self, pod: JsonObject) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not pod[
            "metadata"
        ].get("deletionTimestamp"):
            return  # finished before this kubelet (re)started: nothing to run
        worker = PodWorker(self, pod)
        worker.update(pod)
        self.workers[uid] = worker
        worker.task.add_done_callback(lambda _: self.workers.pop(uid, None))

    def _gone(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None:
            worker.removed()
