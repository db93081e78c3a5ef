"""`rolltrace watch` against the local API server in-process: what it records, the selector, the
progress and summary lines, and a located error (exit 2) for every unusable input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from analyzer.events import pod_lifecycle, read_events
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from rolltrace.cli import app
from rolltrace.commands import watch as watch_command
from rolltrace.runner.watch import WATCHED_KINDS, AccessError, _list_function, check_access
from tests.processes import interruptible


def _pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "local/x"}]},
    }


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), path):
        yield path


def _core(kubeconfig: Path) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))


def _listed(output: Path, kind: str) -> bool:
    """Whether the recording has written its initial list of ``kind`` (watching from then)."""
    return output.exists() and f'"kind":"{kind}"' in output.read_text()


def _once(condition: Callable[[], bool], action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` in the background as soon as ``condition`` holds (within 30 s)."""

    def later() -> None:
        deadline = time.monotonic() + 30
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    return thread


def test_records_until_the_duration_with_progress_and_summary(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_command, "PROGRESS_EVERY_S", 0.5)
    core = _core(kubeconfig)
    core.create_namespaced_pod("default", _pod("web-before", {"app": "web"}))
    core.create_namespaced_pod("default", _pod("db-before", {"app": "db"}))

    def rollout() -> None:
        core.create_namespaced_pod("default", _pod("web-during", {"app": "web"}))
        core.create_namespaced_pod("default", _pod("db-during", {"app": "db"}))
        core.delete_namespaced_pod("web-before", "default", grace_period_seconds=0)

    output = tmp_path / "watch.jsonl"
    changes = _once(lambda: _listed(output, "Pod"), rollout)
    args = ["watch", "--kubeconfig", str(kubeconfig), "-o", str(output), "--duration", "3"]
    result = CliRunner().invoke(app, [*args, "-l", "app=web"])
    changes.join()
    assert result.exit_code == 0, result.output
    assert "events: Pod" in result.output  # the progress line
    assert f"into {output}" in result.output and "import --watch" in result.output
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    pods = [(e["type"], e["object"]["metadata"]["name"]) for e in lines if e["kind"] == "Pod"]
    assert pods[0] == ("LIST", "web-before")
    assert ("ADDED", "web-during") in pods and ("DELETED", "web-before") in pods
    assert not any(name.startswith("db-") for _, name in pods)  # the selector
    table = pod_lifecycle(read_events(output))
    assert set(table["pod"]) == {"web-before", "web-during"}
    assert table.set_index("pod").loc["web-before", "deleted_ns"] > 0


def test_unusable_inputs_are_located_errors(kubeconfig: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    output = tmp_path / "out.jsonl"
    base = ["watch", "-o", str(output), "--duration", "0"]
    missing = runner.invoke(app, [*base, "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    context = runner.invoke(app, [*base, "--kubeconfig", str(kubeconfig), "--context", "staging"])
    assert context.exit_code == 2 and "context 'staging'" in context.output
    namespace = runner.invoke(app, [*base, "--kubeconfig", str(kubeconfig), "-n", "nowhere"])
    assert namespace.exit_code == 2 and "namespace 'nowhere' does not exist" in namespace.output
    output.write_text("{}\n")
    exists = runner.invoke(app, [*base, "--kubeconfig", str(kubeconfig)])
    assert exists.exit_code == 2 and "exists" in exists.output


_FORBIDDEN_BODY = json.dumps(
    {
        "kind": "Status",
        "status": "Failure",
        "reason": "Forbidden",
        "code": 403,
        "message": 'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:'
        'lab:rolltrace" cannot watch resource "endpointslices" in API group "discovery.k8s.io" '
        'in the namespace "lab"',
    }
)


def test_a_refused_verb_names_the_verb_and_resource(kubeconfig: Path) -> None:
    """Upstream's 403 (no watch on EndpointSlices): the message says what was refused."""

    def no_slice_watch(api: k8s.ApiClient, kind: str) -> Callable[..., Any]:
        real = _list_function(api, kind)

        def call(namespace: str, **kwargs: Any) -> Any:
            if kind == "EndpointSlice" and kwargs.get("watch"):
                error = ApiException(status=403, reason="Forbidden")
                error.body = _FORBIDDEN_BODY
                raise error
            return real(namespace, **kwargs)

        return call

    api = k8s_config.new_client_from_config(str(kubeconfig))
    check_access(api, "default", WATCHED_KINDS)  # everything allowed
    with pytest.raises(AccessError) as refused:
        check_access(api, "default", WATCHED_KINDS, list_function=no_slice_watch)
    message = str(refused.value)
    assert message.startswith("cannot watch endpointslices.discovery.k8s.io in namespace")
    assert 'cannot watch resource "endpointslices"' in message and "rbac.yaml" in message


def test_ctrl_c_stops_cleanly_with_a_summary(kubeconfig: Path, tmp_path: Path) -> None:
    _core(kubeconfig).create_namespaced_pod("default", _pod("before-start", {}))
    output = tmp_path / "watch.jsonl"
    command = [sys.executable, "-m", "rolltrace", "watch", "--kubeconfig", str(kubeconfig)]
    process = subprocess.Popen(
        [*command, "-o", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:

        def create() -> None:
            _core(kubeconfig).create_namespaced_pod("default", _pod("after-start", {}))

        _once(lambda: _listed(output, "Pod"), create).join()
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "Pod: 1 watch events" in stdout
    names = [json.loads(line)["object"]["metadata"]["name"] for line in output.open()]
    assert "after-start" in names
