"""The kubelet against the in-process API server, with real demo-app processes on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.dataplane.sandbox import LoopbackSandboxProvider, Sandbox
from localcluster.kubelet.runner import (
    MIN_GRACE_AFTER_PRESTOP_S,
    RESTART_RESET_AFTER_S,
    Backoff,
    restart_delay,
    sigkill_deadline,
)
from tests.localcluster.test_kubelet_harness import (
    NODE,
    Harness,
    condition,
    container_status,
    demoapp,
    python_container,
    running_kubelet,
)

READY_PROBE = {
    "httpGet": {"path": "/ready", "port": "http"},
    "periodSeconds": 1,
    "timeoutSeconds": 1,
}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in running_kubelet(tmp_path):
        yield harness


async def _event_reasons(cluster: Harness, pod: str) -> list[str]:
    await asyncio.sleep(0.1)  # Events are posted asynchronously
    events, _ = await cluster.client.list("events", "default")
    mine = [e for e in events if e["involvedObject"]["name"] == pod]
    return [e["reason"] for e in sorted(mine, key=lambda e: int(e["metadata"]["resourceVersion"]))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_node_is_registered_ready_and_heartbeats(cluster: Harness) -> None:
    node = await cluster.client.get("nodes", NODE)
    ready = node["status"]["conditions"][0]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    first = node["metadata"]["resourceVersion"]
    await asyncio.sleep(1.3)  # heartbeat times have one-second resolution
    assert (await cluster.client.get("nodes", NODE))["metadata"]["resourceVersion"] != first


async def test_pod_runs_then_becomes_ready_by_its_readiness_probe(cluster: Harness) -> None:
    _, since = await cluster.client.list("pods", "default")
    await cluster.create_pod("web-1", [demoapp("--warmup", "1.2", readinessProbe=READY_PROBE)])
    ready = await cluster.wait_pod("web-1", lambda p: condition(p, "Ready"))
    assert container_status(ready)["ready"] is True
    states = [
        (p["status"].get("phase"), condition(p, "Ready"))
        for p in await cluster.pod_history("web-1", since)
    ]
    running = states.index(("Running", False))  # running but not ready: warming up
    assert states[running:].index(("Running", True)) > 0
    assert ready is not None and ready["status"]["podIP"].startswith("127.0.101.")
    truth = cluster.truth()
    started = next(t for t in truth if t["event"] == "process-started")
    app_ready = next(t for t in truth if t["event"] == "ready-to-serve")
    assert app_ready["source"] == "demoapp/web-1"
    assert (app_ready["ts_ns"] - started["ts_ns"]) / 1e9 >= 1.2  # the warm-up really happened
    assert (
        (cluster.logs / "default_web-1_app.log")
        .read_text()
        .startswith("demoapp web-1 listening on")
    )
    reasons = await _event_reasons(cluster, "web-1")
    assert reasons[:3] == ["Pulled", "Created", "Started"]
    assert "Unhealthy" in reasons  # the readiness probe failed during the warm-up


async def test_crashing_local_container_is_restarted_with_backoff(cluster: Harness) -> None:
    await cluster.create_pod("crash", [python_container("import sys; sys.exit(3)")])
    pod = await cluster.wait_pod("crash", lambda p: container_status(p).get("restartCount", 0) >= 2)
    last = container_status(pod)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    exits = [t for t in cluster.events("crash") if t["event"] == "exited"]
    assert len(exits) >= 2 and all(t["exit_code"] == 3 for t in exits)
    starts = [t["ts_ns"] for t in cluster.events("crash") if t["event"] == "process-started"]
    first_wait, second_wait = (
        (s - e["ts_ns"]) / 1e9 for s, e in zip(starts[1:3], exits[:2], strict=True)
    )
    assert second_wait >= 0.1 > first_wait  # the harness's back-off starts at 0.1 s


def test_first_restart_is_immediate_then_the_back_off_doubles() -> None:
    backoff = Backoff(10, 300)
    assert [restart_delay(backoff, n, ran_s=1.0) for n in range(5)] == [0, 10, 20, 40, 80]
    assert restart_delay(backoff, 4, ran_s=RESTART_RESET_AFTER_S + 1) == 0


async def test_never_policy_leaves_a_failed_pod(cluster: Harness) -> None:
    await cluster.create_pod(
        "once", [python_container("import sys; sys.exit(1)")], restartPolicy="Never"
    )
    pod = await cluster.wait_pod(
        "once", lambda p: (p or {}).get("status", {}).get("phase") == "Failed"
    )
    assert container_status(pod)["restartCount"] == 0


@pytest.mark.parametrize(
    ("image", "reason"),
    [("nginx:1.27", "ErrImagePull"), ("Not An Image", "InvalidImageName")],
)
async def test_unsupported_image_fails_the_pod_with_a_reason(
    cluster: Harness, image: str, reason: str
) -> None:
    await cluster.create_pod("bad", [{"name": "app", "image": image}])
    pod = await cluster.wait_pod(
        "bad",
        lambda p: (
            "waiting" in container_status(p).get("state", {})
            and container_status(p)["state"]["waiting"]["reason"] != "ContainerCreating"
        ),
    )
    waiting = container_status(pod)["state"]["waiting"]
    assert waiting["reason"] == reason
    assert "rolltrace/demoapp" in waiting["message"] and "local/NAME" in waiting["message"]
    assert await _event_reasons(cluster, "bad") == ["Failed", "Failed"]
    assert pod is not None and pod["status"]["phase"] == "Pending"
    assert not [t for t in cluster.truth() if t["event"] == "process-started"]


async def test_deletion_runs_prestop_then_sigterm_then_sigkill_after_grace(
    cluster: Harness,
) -> None:
    container = demoapp("--shutdown", "ignore", lifecycle={"preStop": {"sleep": {"seconds": 1}}})
    await cluster.create_pod("old", [container], terminationGracePeriodSeconds=4)
    pod = await cluster.wait_pod("old", lambda p: condition(p, "Ready"))
    pid = int(container_status(pod)["containerID"].removeprefix("rolltrace://"))
    await cluster.client.delete("pods", "old", "default")
    assert await cluster.wait_pod("old", lambda p: p is None, timeout=10) is None
    events = {t["event"]: t for t in cluster.events("old")}
    t0 = events["prestop-start"]["ts_ns"]

    def after(event: str) -> float:
        return (events[event]["ts_ns"] - t0) / 1e9

    assert 0.95 <= after("prestop-end") < 1.3
    assert 0.95 <= after("sigterm") < 1.3
    assert 3.95 <= after("sigkill") < 4.4  # grace counted from the start of preStop
    assert events["exited"]["signal"] == signal.SIGKILL
    assert events["sigkill"]["cause"] == "deletion"
    assert all(t["node"] == NODE for t in events.values())
    assert not _alive(pid)


async def test_graceful_app_exits_on_sigterm_before_the_grace_period(cluster: Harness) -> None:
    await cluster.create_pod(
        "good", [demoapp(readinessProbe=READY_PROBE)], terminationGracePeriodSeconds=10
    )
    await cluster.wait_pod("good", lambda p: condition(p, "Ready"))
    await cluster.client.delete("pods", "good", "default")
    await cluster.wait_pod("good", lambda p: p is None, timeout=5)
    kinds = [t["event"] for t in cluster.events("good")]
    assert kinds == ["process-started", "sigterm", "exited"]
    assert cluster.events("good")[-1]["exit_code"] == 0


async def test_the_socket_table_tells_when_any_app_listens(cluster: Harness) -> None:
    """An app that writes no truth of its own (here Python's http.server, which dies at
    SIGTERM): the kubelet records its listener's first sighting after the start and its last
    sighting right before the SIGTERM that killed it, before it reaps the process."""
    code = ("import http.server as h, os; h.ThreadingHTTPServer((os.environ['POD_IP'], 8081), "
            "h.BaseHTTPRequestHandler).serve_forever()")  # fmt: skip
    probe = {"tcpSocket": {"port": 8081}, "periodSeconds": 1}
    plain = python_container(code, ports=[{"containerPort": 8081}], readinessProbe=probe)
    await cluster.create_pod("plain", [plain], terminationGracePeriodSeconds=10)
    await cluster.wait_pod("plain", lambda p: condition(p, "Ready"))
    await cluster.client.delete("pods", "plain", "default")
    await cluster.wait_pod("plain", lambda p: p is None, timeout=5)
    events = cluster.events("plain", socket_table=True)
    at = {t["event"]: t["ts_ns"] for t in events}
    seen = {t["event"]: t.get("seen") for t in events}
    assert seen["listening"] == seen["stopped-accepting"] == "socket-table"
    assert at["process-started"] < at["listening"] < at["stopped-accepting"] <= at["sigterm"]
    assert at["sigterm"] - at["stopped-accepting"] < 100_000_000  # looked right before it
    assert at["stopped-accepting"] < at["exited"]


async def test_liveness_failure_restarts_the_container(cluster: Harness) -> None:
    liveness = {
        "tcpSocket": {"port": 9},
        "periodSeconds": 1,
        "failureThreshold": 2,
        "timeoutSeconds": 1,
    }
    await cluster.create_pod(
        "sick", [demoapp(livenessProbe=liveness)], terminationGracePeriodSeconds=2
    )
    pod = await cluster.wait_pod(
        "sick", lambda p: container_status(p).get("restartCount", 0) >= 2, timeout=15
    )
    assert container_status(pod)["lastState"]["terminated"]["exitCode"] == 0  # graceful on SIGTERM
    kinds = [(t["event"], t.get("cause")) for t in cluster.events("sick")]
    assert kinds[:7] == [
        ("process-started", None),
        ("sigterm", "liveness"),
        ("exited", None),
        ("process-started", None),
        ("sigterm", "liveness"),  # each run gets its own grace period
        ("exited", None),
        ("process-started", None),
    ]
    assert "Killing" in await _event_reasons(cluster, "sick")


async def test_exec_probe_runs_and_startup_probe_gates_readiness(cluster: Harness) -> None:
    container = python_container(
        "import time; time.sleep(30)",
        startupProbe={
            "exec": {"command": ["test", "-e", "/nonexistent"]},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1},
    )
    await cluster.create_pod("gated", [container])
    pod = await cluster.wait_pod(
        "gated", lambda p: (p or {}).get("status", {}).get("phase") == "Running"
    )
    await asyncio.sleep(1.5)
    pod = await cluster.pod("gated")
    assert container_status(pod)["started"] is False and not condition(pod, "Ready")


async def test_prestop_exec_and_http_hooks_run_before_sigterm(
    cluster: Harness, tmp_path: Path
) -> None:
    marker = tmp_path / "prestop-ran"
    exec_hook = demoapp(
        readinessProbe=READY_PROBE,
        lifecycle={"preStop": {"exec": {"command": ["touch", str(marker)]}}},
    )
    http_hook = demoapp(
        readinessProbe=READY_PROBE,
        lifecycle={"preStop": {"httpGet": {"path": "/healthz", "port": "http"}}},
    )
    await cluster.create_pod("hook-exec", [exec_hook])
    await cluster.create_pod("hook-http", [http_hook])
    for name in ("hook-exec", "hook-http"):
        await cluster.wait_pod(name, lambda p: condition(p, "Ready"))
        await cluster.client.delete("pods", name, "default")
    for name in ("hook-exec", "hook-http"):
        await cluster.wait_pod(name, lambda p: p is None)
        kinds = [(t["event"], t.get("ok")) for t in cluster.events(name)]
        assert kinds[1:4] == [("prestop-start", None), ("prestop-end", True), ("sigterm", None)]
    assert marker.exists()


async def test_a_shorter_grace_on_delete_wins_over_the_spec(cluster: Harness) -> None:
    await cluster.create_pod(
        "stubborn",
        [demoapp("--shutdown", "ignore", readinessProbe=READY_PROBE)],
        terminationGracePeriodSeconds=30,
    )
    await cluster.wait_pod("stubborn", lambda p: condition(p, "Ready"))
    await cluster.client.delete("pods", "stubborn", "default", grace_period_seconds=1)
    await cluster.wait_pod("stubborn", lambda p: p is None, timeout=5)
    events = {t["event"]: t["ts_ns"] for t in cluster.events("stubborn")}
    assert 0.95 <= (events["sigkill"] - events["sigterm"]) / 1e9 < 1.4


async def test_pod_that_never_started_is_confirmed_deleted_at_once(cluster: Harness) -> None:
    await cluster.create_pod("bad", [{"name": "app", "image": "nginx"}])
    await cluster.wait_pod("bad", lambda p: "waiting" in container_status(p).get("state", {}))
    await cluster.client.delete("pods", "bad", "default")
    await cluster.wait_pod("bad", lambda p: p is None, timeout=2)


async def test_stopping_the_kubelet_leaves_no_process_behind(tmp_path: Path) -> None:
    pids = []
    async for harness in running_kubelet(tmp_path):
        for name in ("a", "b"):
            await harness.create_pod(name, [python_container("import time; time.sleep(60)")])
        for name in ("a", "b"):
            pod = await harness.wait_pod(name, lambda p: "containerID" in container_status(p))
            pids.append(int(container_status(pod)["containerID"].removeprefix("rolltrace://")))
        assert all(_alive(pid) for pid in pids)
    assert pids and not any(_alive(pid) for pid in pids)


async def test_forced_removal_cuts_a_graceful_termination_short(cluster: Harness) -> None:
    container = demoapp(
        "--shutdown",
        "ignore",
        readinessProbe=READY_PROBE,
        lifecycle={"preStop": {"sleep": {"seconds": 20}}},
    )
    await cluster.create_pod("slow", [container], terminationGracePeriodSeconds=30)
    pod = await cluster.wait_pod("slow", lambda p: condition(p, "Ready"))
    pid = int(container_status(pod)["containerID"].removeprefix("rolltrace://"))
    await cluster.client.delete("pods", "slow", "default")
    await asyncio.sleep(0.3)  # preStop sleeping
    await cluster.client.delete("pods", "slow", "default", grace_period_seconds=0)  # --force
    for _ in range(100):
        if not _alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not _alive(pid)
    events = [(t["event"], t.get("cause")) for t in cluster.events("slow")]
    assert ("sigkill", "forced") in events and events[-1][0] == "exited"


async def test_a_second_delete_with_shorter_grace_cuts_the_termination_short(
    cluster: Harness,
) -> None:
    container = demoapp(
        "--shutdown",
        "ignore",
        readinessProbe=READY_PROBE,
        lifecycle={"preStop": {"sleep": {"seconds": 20}}},
    )
    await cluster.create_pod("slow2", [container], terminationGracePeriodSeconds=30)
    await cluster.wait_pod("slow2", lambda p: condition(p, "Ready"))
    await cluster.client.delete("pods", "slow2", "default")
    await asyncio.sleep(0.3)
    await cluster.client.delete("pods", "slow2", "default", grace_period_seconds=1)
    await cluster.wait_pod("slow2", lambda p: p is None, timeout=5)
    events = {t["event"]: t for t in cluster.events("slow2")}
    assert events["prestop-end"]["ok"] is False  # the 20 s sleep was cut at the new deadline
    start = events["prestop-start"]["ts_ns"]
    cut = (events["sigterm"]["ts_ns"] - start) / 1e9
    assert 1.2 <= cut < 1.8  # 0.3 s in, then 1 s of new grace
    killed = (events["sigkill"]["ts_ns"] - start) / 1e9
    assert cut + MIN_GRACE_AFTER_PRESTOP_S - 0.05 <= killed < cut + MIN_GRACE_AFTER_PRESTOP_S + 0.5


def test_sigkill_deadline_keeps_the_minimum_grace_after_prestop() -> None:
    """Loop times in seconds: grace deadline 30, preStop ended at 10 / 29.5 / 30 / 45 (cut)."""
    assert sigkill_deadline(30.0, 10.0) == 30.0  # enough grace left: the grace period decides
    assert sigkill_deadline(30.0, 29.5) == 29.5 + MIN_GRACE_AFTER_PRESTOP_S
    assert sigkill_deadline(30.0, 30.0) == 30.0 + MIN_GRACE_AFTER_PRESTOP_S  # grace used up
    assert sigkill_deadline(30.0, 45.0) == 45.0 + MIN_GRACE_AFTER_PRESTOP_S


async def test_prestop_that_eats_the_grace_period_still_leaves_the_minimum_before_sigkill(
    cluster: Harness,
) -> None:
    """preStop sleeps 5 s under a 1 s grace period: the hook is cut at 1 s, SIGTERM follows at
    once and SIGKILL only the minimum later, not back to back."""
    container = demoapp("--shutdown", "ignore", lifecycle={"preStop": {"sleep": {"seconds": 5}}})
    await cluster.create_pod("greedy", [container], terminationGracePeriodSeconds=1)
    await cluster.wait_pod("greedy", lambda p: condition(p, "Ready"))
    await cluster.client.delete("pods", "greedy", "default")
    assert await cluster.wait_pod("greedy", lambda p: p is None, timeout=10) is None
    events = {t["event"]: t for t in cluster.events("greedy")}
    start = events["prestop-start"]["ts_ns"]
    sigterm = (events["sigterm"]["ts_ns"] - start) / 1e9
    sigkill = (events["sigkill"]["ts_ns"] - start) / 1e9
    assert events["prestop-end"]["ok"] is False
    assert 0.95 <= sigterm < 1.3
    assert MIN_GRACE_AFTER_PRESTOP_S - 0.05 <= sigkill - sigterm < MIN_GRACE_AFTER_PRESTOP_S + 0.4
    assert events["exited"]["signal"] == signal.SIGKILL


async def test_a_missing_local_command_is_a_start_error_and_restarts(cluster: Harness) -> None:
    await cluster.create_pod(
        "typo", [{"name": "app", "image": "local/srv", "command": ["/nonexistent/srv"]}]
    )
    pod = await cluster.wait_pod("typo", lambda p: container_status(p).get("restartCount", 0) >= 1)
    last = container_status(pod)["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (128, "StartError")
    assert "/nonexistent/srv" in last["message"]


class BrokenSandboxes(LoopbackSandboxProvider):
    async def create(self, namespace: str, pod_name: str, pod_uid: str) -> Sandbox:
        raise RuntimeError("no addresses left")


async def test_a_failed_sandbox_keeps_the_pod_pending_and_deletable(tmp_path: Path) -> None:
    async for cluster in running_kubelet(tmp_path, sandboxes=BrokenSandboxes()):
        await cluster.create_pod("nowhere", [demoapp()])
        await asyncio.sleep(0.3)
        pod = await cluster.pod("nowhere")
        assert pod is not None and pod["status"]["phase"] == "Pending"
        assert "FailedCreatePodSandBox" in await _event_reasons(cluster, "nowhere")
        await cluster.client.delete("pods", "nowhere", "default")
        await cluster.wait_pod("nowhere", lambda p: p is None, timeout=2)


class FlakyClient:
    """The API as seen over a bad connection: the first writes of each resource and the first
    watch fail."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = {"nodes": failures, "pods": failures}
        self.watch_failed = False

    def _maybe_fail(self, resource: str) -> None:
        if self.failures.get(resource, 0) > 0:
            self.failures[resource] -= 1
            raise ConnectionResetError(f"connection reset writing {resource}")

    async def create(self, resource: str, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail(resource)
        return await self.inner.create(resource, *args, **kwargs)

    async def patch(self, resource: str, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail(resource)
        return await self.inner.patch(resource, *args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if not self.watch_failed:
            self.watch_failed = True
            raise ConnectionResetError("watch stream broke")
        async for event in self.inner.watch(*args, **kwargs):
            yield event

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_kubelet_rides_out_api_errors(tmp_path: Path) -> None:
    clients: list[FlakyClient] = []

    def flaky(client: Any) -> FlakyClient:
        clients.append(FlakyClient(client, failures=3))
        return clients[-1]

    async for cluster in running_kubelet(tmp_path, kubelet_client=flaky):
        await cluster.create_pod("web-1", [demoapp(readinessProbe=READY_PROBE)])
        await cluster.wait_pod("web-1", lambda p: condition(p, "Ready"), timeout=15)
    assert clients[0].failures == {"nodes": 0, "pods": 0} and clients[0].watch_failed
