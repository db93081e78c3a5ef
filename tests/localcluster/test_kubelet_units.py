"""The kubelet's pure parts: image → command, downward env, status rules, probe thresholds."""

from __future__ import annotations

import sys

import pytest

from localcluster.dataplane.sandbox import LoopbackSandboxProvider
from localcluster.kubelet.containers import ImageError, Launch, PodContext, resolve_launch
from localcluster.kubelet.kubelet import detect_node_ip
from localcluster.kubelet.probes import ProbeCounter, ProbeSpec, resolve_port, run_exec
from localcluster.kubelet.runner import Backoff, should_restart
from localcluster.kubelet.status import ConditionBook, ContainerRecord, pod_phase, pod_status

POD = PodContext("web-1", "prod", "uid-1", "node-2", "127.0.100.7", "127.0.0.1")


def test_demoapp_image_runs_the_demo_app_bound_to_the_pod_address() -> None:
    container = {
        "name": "app",
        "image": "rolltrace/demoapp:0.2",
        "args": ["--warmup", "2"],
        "ports": [{"containerPort": 9000}],
        "env": [
            {"name": "POD_VERSION", "value": "v2"},
            {"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
    }
    launch = resolve_launch(
        container, POD, {"PATH": "/bin", "SECRET": "x"}, {"DEMOAPP_TRUTH": "/t"}
    )
    assert isinstance(launch, Launch)
    assert launch.argv == [sys.executable, "-m", "demoapp", "--warmup", "2"]
    assert launch.env == {
        "PATH": "/bin",
        "POD_NAME": "web-1",
        "POD_NAMESPACE": "prod",
        "POD_IP": "127.0.100.7",
        "POD_VERSION": "v2",
        "WHERE": "node-2",
        "DEMOAPP_HOST": "127.0.100.7",
        "DEMOAPP_PORT": "9000",
        "DEMOAPP_TRUTH": "/t",
    }


def test_local_image_runs_command_and_args_as_given() -> None:
    launch = resolve_launch(
        {"name": "c", "image": "local/server", "command": ["/usr/bin/srv"], "args": ["-p", "1"]},
        POD,
        {},
    )
    assert isinstance(launch, Launch) and launch.argv == ["/usr/bin/srv", "-p", "1"]
    bare = resolve_launch({"name": "c", "image": "local/sleep", "args": ["5"]}, POD, {})
    assert isinstance(bare, Launch) and bare.argv == ["sleep", "5"]


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("nginx", "ErrImagePull"),
        ("ghcr.io/x/y:1", "ErrImagePull"),
        ("", "InvalidImageName"),
        ("A B", "InvalidImageName"),
    ],
)
def test_other_images_fail_with_upstream_reasons(image: str, reason: str) -> None:
    result = resolve_launch({"name": "c", "image": image}, POD, {})
    assert isinstance(result, ImageError) and result.reason == reason


def test_probe_counter_needs_consecutive_results_to_flip() -> None:
    spec = ProbeSpec.parse({"successThreshold": 2, "failureThreshold": 3})
    counter = ProbeCounter(spec, initial=False)
    assert [counter.observe(ok) for ok in (True, False, True, True)] == [False, False, False, True]
    assert counter.result is True
    assert [counter.observe(ok) for ok in (False, False, True, False, False, False)] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert counter.result is False


def test_probe_defaults_and_named_ports() -> None:
    spec = ProbeSpec.parse({"httpGet": {"port": 80}})
    assert (spec.period_s, spec.timeout_s, spec.failure_threshold) == (10.0, 1.0, 3)
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port("http", container) == 8080 and resolve_port("81", container) == 81
    with pytest.raises(ValueError):
        resolve_port("grpc", container)


async def test_exec_probe_is_bounded_by_its_timeout() -> None:
    assert await run_exec(["true"], 1.0) is True
    assert await run_exec(["false"], 1.0) is False
    assert await run_exec(["sleep", "5"], 0.2) is False
    assert await run_exec(["/nonexistent/binary"], 1.0) is False


def test_restart_policy_and_backoff() -> None:
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 2)
    assert [Backoff(10, 300).delay(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def _record(state: dict[str, object], **kw: object) -> ContainerRecord:
    record = ContainerRecord("c", "img")
    record.state = state
    for key, value in kw.items():
        setattr(record, key, value)
    return record


def test_phase_follows_container_states() -> None:
    running = _record({"running": {}})
    assert pod_phase([_record({"waiting": {"reason": "ErrImagePull"}})]) == "Pending"
    assert pod_phase([running]) == "Running"
    done_ok = _record({"terminated": {"exitCode": 0}}, final=True)
    done_bad = _record({"terminated": {"exitCode": 2}}, final=True)
    assert pod_phase([done_ok]) == "Succeeded"
    assert pod_phase([done_ok, done_bad]) == "Failed"
    assert (
        pod_phase([_record({"waiting": {"reason": "CrashLoopBackOff"}}, restart_count=1)])
        == "Running"
    )


def test_ready_needs_every_container_ready_and_transition_time_is_stable() -> None:
    book = ConditionBook()
    a, b = _record({"running": {}}, ready=True), _record({"running": {}}, ready=False)
    b.name = "sidecar"
    status = pod_status(
        [a, b], pod_ip="127.0.100.2", host_ip="127.0.0.1", start_time="t", book=book
    )
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (
        ready["status"] == "False"
        and ready["message"] == "containers with unready status: [sidecar]"
    )
    again = pod_status([a, b], pod_ip="127.0.100.2", host_ip="127.0.0.1", start_time="t", book=book)
    assert {c["type"]: c for c in again["conditions"]}["Ready"] == ready
    assert status["podIP"] == "127.0.100.2" and status["containerStatuses"][1]["name"] == "sidecar"


async def test_loopback_sandboxes_get_distinct_addresses_round_robin() -> None:
    provider = LoopbackSandboxProvider("127.0.102.0/30")
    first = await provider.create("ns", "a", "u1")
    second = await provider.create("ns", "b", "u2")
    assert {first.ip, second.ip} == {"127.0.102.1", "127.0.102.2"} and first.netns is None
    with pytest.raises(RuntimeError):
        await provider.create("ns", "c", "u3")
    await provider.destroy(first)
    assert (await provider.create("ns", "c", "u3")).ip == first.ip
    assert provider.exec_prefix(first) == []
    with pytest.raises(ValueError):
        LoopbackSandboxProvider("10.0.0.0/24")


def test_node_ip_outside_the_cluster_range_is_loopback() -> None:
    # the host has no route into the emulated range (a safety rule), so the node is on loopback
    assert detect_node_ip("198.18.0.0/15") == "127.0.0.1"
