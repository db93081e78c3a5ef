"""``kubectl rollout status`` (kubectl 1.37, over HTTPS) against rollouts driven by these
controllers on virtual nodes: a 100-replica rollout completes and rollout status returns
success; a stalled rollout makes it fail with upstream's progress-deadline message."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from localcluster.controllers import start_controllers
from localcluster.virtualnode import start_virtual_nodes
from tests.conftest import require
from tests.localcluster.test_controllers_harness import cluster_config, deployment, http_probe

KUBECTL = Path(sys.executable).parent / "kubectl"


class Kubectl:
    def __init__(self, thread: ServerThread, tmp_path: Path) -> None:
        self.thread = thread
        self.tmp_path = tmp_path

    def argv(self, *args: str) -> list[str]:
        return [
            str(KUBECTL),
            "--kubeconfig",
            str(self.thread.kubeconfig),
            "--cache-dir",
            str(self.tmp_path / "cache"),
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[Kubectl]:
    if not KUBECTL.exists():
        require("kubectl")
    config = cluster_config(nodes=4)
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        client = thread.server.client()
        nodes = thread.run(start_virtual_nodes(client, config))
        controllers = thread.run(start_controllers(client, config))
        try:
            yield Kubectl(thread, tmp_path)
        finally:
            thread.run(controllers.stop())
            thread.run(nodes.stop())


def apply(kubectl: Kubectl, obj: dict, tmp_path: Path) -> None:
    manifest = tmp_path / f"{obj['metadata']['name']}.yaml"
    manifest.write_text(yaml.safe_dump(obj))
    done = kubectl("apply", "-f", str(manifest))
    assert done.returncode == 0, done.stderr


def test_hundred_replica_rollout_completes_and_rollout_status_returns(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    apply(kubectl, deployment(replicas=100, probe=http_probe(initial_delay=2, period=1)), tmp_path)
    first = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert first.returncode == 0, first.stderr
    assert 'deployment "web" successfully rolled out' in first.stdout

    # Paused, so that kubectl sees the rollout in progress: on the compressed clock the whole
    # rollout can finish before kubectl has started (it failed CI that way once).
    assert kubectl("rollout", "pause", "deployment/web").returncode == 0
    started = time.monotonic()
    assert kubectl("set", "image", "deployment/web", "app=demo:2").returncode == 0
    argv = kubectl.argv("rollout", "status", "deployment/web", "--timeout=90s")
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as status:
        assert status.stdout is not None
        seen = []  # kubectl's DeploymentStatusViewer prints progress lines before success
        while not any('Waiting for deployment "web" rollout to finish' in line for line in seen):
            line = status.stdout.readline()
            assert line, (seen, status.stderr.read() if status.stderr else "")
            seen.append(line)
        assert kubectl("rollout", "resume", "deployment/web").returncode == 0
        out, err = status.communicate(timeout=120)
    elapsed = time.monotonic() - started
    assert status.returncode == 0, err
    assert out.strip().endswith('deployment "web" successfully rolled out'), (seen, out)
    assert elapsed < 60

    wide = kubectl(
        "get",
        "deployment/web",
        "-o",
        "jsonpath={.status.updatedReplicas}/{.status.availableReplicas}",
    )
    assert wide.stdout == "100/100"
    history = kubectl("rollout", "history", "deployment/web")
    assert history.returncode == 0 and "2" in history.stdout.split()


def test_rollout_status_fails_when_the_progress_deadline_passes(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    apply(kubectl, deployment(replicas=2), tmp_path)
    assert kubectl("rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
    never_ready = deployment(
        replicas=2,
        image="demo:2",
        probe=http_probe(initial_delay=100_000),
        progressDeadlineSeconds=1,
    )
    apply(kubectl, never_ready, tmp_path)
    status = kubectl("rollout", "status", "deployment/web", "--timeout=30s")
    assert status.returncode != 0
    assert 'deployment "web" exceeded its progress deadline' in status.stderr


def test_rollout_history_shows_change_cause(kubectl: Kubectl, tmp_path: Path) -> None:
    """The Deployment's annotations are copied to its new ReplicaSet
    (copyDeploymentAnnotationsToReplicaSet), which is where rollout history reads CHANGE-CAUSE."""
    first = deployment(replicas=2)
    first["metadata"]["annotations"] = {"kubernetes.io/change-cause": "first release"}
    apply(kubectl, first, tmp_path)
    assert kubectl("rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
    assert kubectl("set", "image", "deployment/web", "app=demo:2").returncode == 0
    annotate = kubectl(
        "annotate", "deployment/web", "kubernetes.io/change-cause=move to demo:2", "--overwrite"
    )
    assert annotate.returncode == 0, annotate.stderr
    assert kubectl("rollout", "status", "deployment/web", "--timeout=30s").returncode == 0
    deadline = time.monotonic() + 10
    while True:
        history = kubectl("rollout", "history", "deployment/web").stdout
        rows = {
            line.split()[0]: line.split(None, 1)[1].strip()
            for line in history.splitlines()[2:]
            if line.strip()
        }
        if rows.get("2") == "move to demo:2" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows == {"1": "first release", "2": "move to demo:2"}, history
