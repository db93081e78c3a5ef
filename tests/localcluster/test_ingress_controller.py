"""The controller's sync loop against an in-process API server, with nginx replaced by a
recorder of applied configurations: changes are batched per sync period, an unchanged plan
applies nothing, a refused configuration is retried, and the health endpoint follows nginx; in
dynamic mode endpoint changes are POSTed without a reload; and the per-Pod directory the kubelet
gives the controller's nginx."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from localcluster.apiclient import ApiClient
from localcluster.apiserver import Store
from localcluster.apiserver.client import InProcessClient
from localcluster.config import ClusterConfig
from localcluster.dataplane.sandbox import LoopbackSandboxProvider
from localcluster.ingress.controller import ControllerSettings, IngressController
from localcluster.ingress.nginx import IngressNginx
from localcluster.ingress.nginxconf import Backend, SyncMode
from localcluster.kubelet import Kubelet, KubeletOptions
from localcluster.nginxcommon import Nginx, NginxError, NginxPaths
from localcluster.truth import TruthWriter

SYNC_S = 0.3
# how late one tick may run on a loaded 2-core machine; a second tick would be later than this
TICK_SLACK_S = SYNC_S / 2


class RecordingNginx(IngressNginx):
    """Starts nothing; remembers when each configuration was applied; refuses on demand."""

    def __init__(self, paths: NginxPaths) -> None:
        super().__init__(paths)
        self.applied: list[tuple[float, str]] = []
        self.posted: list[list[Backend]] = []
        self.refuse = 0  # the next N tests fail
        self.up = False

    @property
    def running(self) -> bool:
        return self.up

    async def test(self, conf_path: str) -> None:
        if self.refuse:
            self.refuse -= 1
            raise NginxError("nginx: [emerg] refused for the test")

    async def start(self) -> None:
        self.up = True
        self.paths.pid.write_text("1\n")
        self.applied.append((time.monotonic(), self.paths.conf.read_text()))

    async def wait_started(self) -> None:
        """Started at once (``start`` wrote the pid file)."""

    async def reload(self) -> None:
        self.applied.append((time.monotonic(), self.paths.conf.read_text()))

    async def post_backends(self, status_port: int, backends: list[Backend]) -> int:
        self.posted.append(backends)
        return len(self.posted)

    async def stop(self) -> None:
        self.up = False


def _slice(*ips: str) -> dict[str, object]:
    return {
        "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }


async def _objects(client: ApiClient) -> None:
    await client.create("ingressclasses", {"metadata": {"name": "nginx"},
                                           "spec": {"controller": "k8s.io/ingress-nginx"}})  # fmt: skip
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    ingress = {"metadata": {"name": "web"},
               "spec": {"ingressClassName": "nginx", "defaultBackend": backend}}  # fmt: skip
    await client.create("ingresses", ingress, "default")
    service = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    await client.create("services", service, "default")
    await client.create("endpointslices", _slice("10.0.0.1"), "default")


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_changes_are_batched_per_sync_period_and_retried(tmp_path: Path) -> None:
    client = InProcessClient(Store())
    await _objects(client)
    settings = ControllerSettings(sync_interval_s=SYNC_S, healthz_port=0)
    truth = TruthWriter(tmp_path / "truth.jsonl", "ingress/test")
    controller = IngressController(client, settings, NginxPaths(tmp_path), truth)
    nginx = controller.nginx = RecordingNginx(NginxPaths(tmp_path))
    task = asyncio.create_task(controller.run())
    try:
        await _until(lambda: len(nginx.applied) == 1)
        assert "server 10.0.0.1:8080" in nginx.applied[0][1]
        await asyncio.sleep(SYNC_S * 2)  # quiet: nothing changed, nothing applied
        assert len(nginx.applied) == 1
        changed_at = time.monotonic()
        for ips in (("10.0.0.1", "10.0.0.2"), ("10.0.0.2",), ("10.0.0.2", "10.0.0.3")):
            await client.update("endpointslices", _slice(*ips), "default")
        await _until(lambda: len(nginx.applied) == 2)
        applied_at, text = nginx.applied[1]
        assert applied_at - changed_at <= SYNC_S + TICK_SLACK_S  # one tick, whatever the burst
        assert "server 10.0.0.1:8080" not in text and "server 10.0.0.3:8080" in text
        await asyncio.sleep(SYNC_S * 2)
        assert len(nginx.applied) == 2  # the burst became one apply
        nginx.refuse = 1
        await client.delete("endpointslices", "web-x", "default")
        await _until(lambda: len(nginx.applied) == 3, timeout_s=5 * SYNC_S + 2)
        assert "return 503;" in nginx.applied[2][1]  # no ready endpoint left
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    synced = (tmp_path / "truth.jsonl").read_text().splitlines()
    assert len(synced) == 3 and all('"event":"ingress-synced"' in line for line in synced)
    assert all('"mode":"reload","reloaded":true' in line for line in synced)


def _endpoints(posted: list[Backend]) -> list[str]:
    return [f"{e['address']}:{e['port']}" for backend in posted for e in backend["endpoints"]]


async def test_dynamic_mode_posts_endpoints_and_reloads_only_for_structure(tmp_path: Path) -> None:
    client = InProcessClient(Store())
    await _objects(client)
    settings = ControllerSettings(sync_interval_s=SYNC_S, healthz_port=0, mode=SyncMode.DYNAMIC)
    truth = TruthWriter(tmp_path / "truth.jsonl", "ingress/test")
    controller = IngressController(client, settings, NginxPaths(tmp_path), truth)
    nginx = controller.nginx = RecordingNginx(NginxPaths(tmp_path))
    task = asyncio.create_task(controller.run())
    try:
        await _until(lambda: len(nginx.posted) == 1)
        assert len(nginx.applied) == 1 and "10.0.0.1" not in nginx.applied[0][1]
        assert _endpoints(nginx.posted[0]) == ["10.0.0.1:8080"]
        for ips in (("10.0.0.1", "10.0.0.2"), ("10.0.0.2",)):
            await client.update("endpointslices", _slice(*ips), "default")
        await _until(lambda: _endpoints(nginx.posted[-1]) == ["10.0.0.2:8080"])
        await client.delete("endpointslices", "web-x", "default")
        await _until(lambda: _endpoints(nginx.posted[-1]) == [])
        assert len(nginx.applied) == 1  # endpoints only: never a reload
        service = {"metadata": {"name": "api"}, "spec": {"ports": [{"port": 80}]}}
        await client.create("services", service, "default")
        backend = {"service": {"name": "api", "port": {"number": 80}}}
        path = {"path": "/api", "pathType": "Prefix", "backend": backend}
        ingress = {"metadata": {"name": "api"},
                   "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [path]}}]}}  # fmt: skip
        await client.create("ingresses", ingress, "default")
        await _until(lambda: len(nginx.applied) == 2)  # a new location: a reload
        await _until(lambda: [b["name"] for b in nginx.posted[-1]] == ["default-api-80",
                                                                       "default-web-80"])  # fmt: skip
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    synced = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert {(s["event"], s["mode"]) for s in synced} == {("ingress-synced", "dynamic")}
    assert [s["version"] for s in synced] == list(range(1, len(nginx.posted) + 1))
    assert [s["reloaded"] for s in synced].count(True) == 2  # the start and the new location


async def test_health_follows_nginx(tmp_path: Path) -> None:
    client = InProcessClient(Store())
    await _objects(client)
    settings = ControllerSettings(sync_interval_s=SYNC_S, healthz_port=0)
    controller = IngressController(
        client, settings, NginxPaths(tmp_path), TruthWriter(None, "ingress/test")
    )
    nginx = controller.nginx = RecordingNginx(NginxPaths(tmp_path))
    assert not controller.healthy  # before the first sync: not ready
    task = asyncio.create_task(controller.run())
    try:
        await _until(lambda: controller.healthy)
        url = f"http://127.0.0.1:{controller.health_port}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
        nginx.up = False  # nginx died: the controller exits, as ingress-nginx does
        await _until(task.done, timeout_s=5 * SYNC_S)
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], BaseExceptionGroup)
    assert "nginx exited" in str(results[0].exceptions[0])


async def test_the_kubelet_gives_each_pod_a_directory(tmp_path: Path) -> None:
    """Under the logs directory (kept, like container logs: the access log is a trace), else
    in the temporary directory; created by the container that needs it (nginx's ``prepare``)."""
    client = InProcessClient(Store())
    truth = TruthWriter(None, "kubelet/test")
    sandboxes = LoopbackSandboxProvider("127.0.103.0/30")
    options = KubeletOptions(node_ip="127.0.0.1", logs_dir=tmp_path / "logs")
    kubelet = Kubelet(client, "node-1", sandboxes, truth, ClusterConfig(), options)
    kept = kubelet.pod_directory("default", "ing-1", "uid-1")
    assert kept == tmp_path / "logs" / "pods" / "default_ing-1_uid-1"
    Nginx(NginxPaths(kept)).prepare()
    assert (kept / "tmp").is_dir()
    bare = Kubelet(client, "node-1", sandboxes, truth, ClusterConfig(),
                   KubeletOptions(node_ip="127.0.0.1"))  # fmt: skip
    temporary = bare.pod_directory("default", "ing-1", "uid-1")
    assert temporary.name == "rolltrace-pod-uid-1" and tmp_path not in temporary.parents
