"""The event watcher against the local API server, through the official kubernetes client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from rolltrace.runner.watch import ClusterWatcher, _list_function


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "local/x"}]},
    }


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_list_then_watch_records_every_change_with_receive_times(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), kubeconfig):
        api = k8s_config.new_client_from_config(str(kubeconfig))
        core = k8s.CoreV1Api(api)
        core.create_namespaced_pod("default", _pod("before"))
        events = tmp_path / "events.jsonl"
        watcher = ClusterWatcher(api, "default", events, kinds=("Pod", "Service"))
        watcher.start()
        core.create_namespaced_pod("default", _pod("during"))
        core.patch_namespaced_pod("during", "default", {"metadata": {"labels": {"x": "1"}}})
        core.delete_namespaced_pod("during", "default", grace_period_seconds=0)
        _wait_for(lambda: watcher.lines >= 4)
        stats = watcher.stop()
    lines = _lines(events)
    listed = [(e["type"], e["object"]["metadata"]["name"]) for e in lines if e["kind"] == "Pod"]
    assert listed == [
        ("LIST", "before"),
        ("ADDED", "during"),
        ("MODIFIED", "during"),
        ("DELETED", "during"),
    ]
    assert all(e["object"]["kind"] == "Pod" for e in lines)
    receive = [e["recv_ns"] for e in lines]
    assert receive == sorted(receive) and receive[0] > 1.6e18
    assert stats["Pod"].events == 3 and stats["Pod"].gaps == 0


def test_gone_writes_gap_and_relists(tmp_path: Path) -> None:
    """A 410 on resume means events may be lost: GAP, RELIST and fresh LIST lines follow."""
    calls = {"watch": 0}

    def flaky(api: k8s.ApiClient, kind: str) -> Callable[..., Any]:
        real = _list_function(api, kind)

        def call(namespace: str, **kwargs: Any) -> Any:
            if kwargs.get("watch"):
                calls["watch"] += 1
                if calls["watch"] == 1:
                    raise ApiException(status=410, reason="Gone")
            return real(namespace, **kwargs)

        return call

    kubeconfig = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), kubeconfig):
        api = k8s_config.new_client_from_config(str(kubeconfig))
        core = k8s.CoreV1Api(api)
        core.create_namespaced_pod("default", _pod("a"))
        events = tmp_path / "events.jsonl"
        watcher = ClusterWatcher(api, "default", events, kinds=("Pod",), list_function=flaky)
        watcher.start()
        _wait_for(lambda: calls["watch"] >= 2)
        core.create_namespaced_pod("default", _pod("b"))
        _wait_for(lambda: any(e["type"] == "ADDED" for e in _lines(events)))
        stats = watcher.stop()
    kinds = [e["type"] for e in _lines(events)]
    assert kinds == ["LIST", "GAP", "RELIST", "LIST", "ADDED"]
    gap = _lines(events)[1]
    assert gap["since_ns"] <= gap["recv_ns"] and "410" in gap["reason"]
    assert stats["Pod"].gaps == 1 and stats["Pod"].relists == 1


def test_a_waiter_ends_its_pause_at_an_event_of_its_kind_only(tmp_path: Path) -> None:
    """A poll that waits on a kind reads again as soon as that kind changed, and otherwise
    waits its whole pause (an event of another kind does not wake it)."""
    pause_s = 5.0
    kubeconfig = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), kubeconfig):
        api = k8s_config.new_client_from_config(str(kubeconfig))
        core = k8s.CoreV1Api(api)
        watcher = ClusterWatcher(api, "default", tmp_path / "e.jsonl", kinds=("Pod", "Service"))
        watcher.start()
        pod_pause, service_pause = watcher.waiter("Pod"), watcher.waiter("Service")
        core.create_namespaced_pod("default", _pod("a"))
        started = time.monotonic()
        pod_pause(pause_s)
        woken_after = time.monotonic() - started
        started = time.monotonic()
        service_pause(0.5)  # the Pod's event is not the Service's
        waited = time.monotonic() - started
        watcher.stop()
    assert woken_after < pause_s / 2
    assert waited >= 0.5
