"""kubectl watch streams → events.jsonl records (``analyzer.readers.kubectl``): times derived from
object fields with their real semantics, bounded by resourceVersion order, damage located.

Two kinds of input: streams recorded with kubectl on the local cluster during a ``kubectl rollout
restart`` (tests/fixtures/kubectl, checked against that cluster's ground truth), and streams
built from the official client's models (``kubernetes.client``), so that field names and
serialization are upstream's.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from analyzer.events import (
    event_problem,
    pod_lifecycle,
    pod_state_intervals,
    read_events,
    read_truth,
)
from analyzer.readers.kubectl import (
    EVENT_TIMES_KEY,
    PLEG_RELIST_NS,
    TimeSource,
    looks_like_kubectl_stream,
    read_kubectl_streams,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "kubectl" / "rollout-restart"
KINDS = ("pods", "endpointslices", "services", "deployments", "replicasets")
SECOND_NS = 1_000_000_000  # metav1.Time's resolution
T0 = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * SECOND_NS


def _streams() -> list[Path]:
    return [FIXTURE / f"{kind}.jsonl" for kind in KINDS]


def _as_events_file(records: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- recorded on the local cluster ------------------------------------------------------------


def test_recorded_rollout_gives_valid_records_in_order() -> None:
    result = read_kubectl_streams(_streams(), namespace="default")
    assert result.problems == [] and result.notes == []
    revisions = [int(r["object"]["metadata"]["resourceVersion"]) for r in result.records]
    assert revisions == sorted(revisions)
    times = [r["recv_ns"] for r in result.records]
    assert times == sorted(times)
    for record in result.records:
        assert event_problem(record) is None
        assert record["time_source"] in {TimeSource.OBJECT_FIELD, TimeSource.BOUNDED}
        low, high = record["earliest_ns"], record["latest_ns"]
        assert (low is None or low <= record["recv_ns"]) and (
            high is None or record["recv_ns"] <= high
        )
    kinds = {r["kind"] for r in result.records}
    assert kinds == {"Pod", "EndpointSlice", "Service", "Deployment", "ReplicaSet"}


def test_recorded_rollout_times_agree_with_the_clusters_truth(tmp_path: Path) -> None:
    """Deletion, readiness and exits derived from the objects land where the cluster's own
    records put them, within the stamps' resolution (and the readiness probe's period, by which
    the kubelet's Ready trails the app)."""
    result = read_kubectl_streams(_streams(), namespace="default")
    events = read_events(_as_events_file(result.records, tmp_path / "events.jsonl"))
    pods = pod_lifecycle(events).set_index("pod")
    truth = read_truth(FIXTURE / "truth.jsonl")

    def truth_at(event: str) -> dict[str, int]:
        rows = truth[truth["event"] == event]
        return dict(zip(rows["pod"], rows["ts_ns"], strict=True))

    prestop, app_ready = truth_at("prestop-start"), truth_at("ready-to-serve")
    assert len(prestop) == 3
    for pod, started in prestop.items():  # the kubelet runs preStop when it sees the deletion
        assert abs(int(pods.loc[pod, "deletion_ns"]) - started) <= SECOND_NS, pod
    probe_period_ns = SECOND_NS  # readinessProbe.periodSeconds in the recorded Pods' spec
    spec = json.loads((FIXTURE / "pods.jsonl").read_text().splitlines()[0])["object"]["spec"]
    assert spec["containers"][0]["readinessProbe"]["periodSeconds"] * SECOND_NS == probe_period_ns
    new_pods = [p for p in pods.index if p not in prestop]
    assert len(new_pods) == 3
    for pod in new_pods:  # created during the watch: readiness dated by its condition
        ready = int(pods.loc[pod, "ready_ns"])
        assert app_ready[pod] <= ready <= app_ready[pod] + probe_period_ns + SECOND_NS, pod
    exits = pod_state_intervals(events).dropna(subset=["last_exit_ns"])
    exited = truth[(truth["event"] == "exited") & truth["source"].str.startswith("kubelet/")]
    for pod, ts in zip(exited["pod"], exited["ts_ns"], strict=True):
        first = int(exits[exits["pod"] == pod]["last_exit_ns"].min())
        assert abs(first - ts) <= SECOND_NS + PLEG_RELIST_NS, pod


def test_event_times_entry_marks_the_run_coarse() -> None:
    entry = read_kubectl_streams(_streams()).event_times()
    assert EVENT_TIMES_KEY == "event_times"
    assert entry["coarse"] is True and entry["source"] == "kubectl"
    assert entry["object_field"] + entry["bounded"] == entry["records"] > 0
    assert entry["object_field"] > 0 and entry["bounded"] > 0
    assert entry["max_uncertainty_ms"] >= entry["median_uncertainty_ms"] > 0
    assert "rolltrace watch" in entry["precise_alternative"]


def test_a_stream_given_twice_or_with_all_namespaces_counts_once(tmp_path: Path) -> None:
    once = read_kubectl_streams(_streams())
    every_namespace = tmp_path / "pods-all.jsonl"
    shutil.copy(FIXTURE / "pods.jsonl", every_namespace)
    twice = read_kubectl_streams([*_streams(), every_namespace])
    assert [r["recv_ns"] for r in twice.records] == [r["recv_ns"] for r in once.records]


def test_pretty_printed_objects_without_watch_event_types() -> None:
    result = read_kubectl_streams([FIXTURE / "pods-pretty.json"])
    assert result.problems == []
    by_pod: dict[str, list[str]] = {}
    for record in result.records:
        by_pod.setdefault(record["object"]["metadata"]["name"], []).append(record["type"])
    assert len(by_pod) == 2
    for types in by_pod.values():
        assert types[0] == "ADDED" and set(types[1:]) == {"MODIFIED"}
    assert any("deletions are not marked" in note for note in result.notes)


def test_looks_like_kubectl_stream(tmp_path: Path) -> None:
    assert looks_like_kubectl_stream(FIXTURE / "pods.jsonl")
    assert looks_like_kubectl_stream(FIXTURE / "pods-pretty.json")
    own = tmp_path / "events.jsonl"
    own.write_text('{"type":"GAP","recv_ns":5,"kind":"Pod","since_ns":1}\n')
    assert not looks_like_kubectl_stream(own)
    assert not looks_like_kubectl_stream(tmp_path / "missing.jsonl")


# ---- built from the official client's models --------------------------------------------------

_API = k8s.ApiClient()


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _meta(name: str, rv: int, namespace: str = "shop", **fields: Any) -> k8s.V1ObjectMeta:
    return k8s.V1ObjectMeta(
        name=name, namespace=namespace, uid=f"uid-{name}", resource_version=str(rv), **fields
    )


def _pod(rv: int, *, ready_at: float | None = None, **meta: Any) -> k8s.V1Pod:
    status = k8s.V1PodStatus(phase="Pending")
    if ready_at is not None:
        status = k8s.V1PodStatus(
            phase="Running",
            start_time=_at(0),
            conditions=[
                k8s.V1PodCondition(type="PodScheduled", status="True", last_transition_time=_at(0)),
                k8s.V1PodCondition(type="Ready", status="True", last_transition_time=_at(ready_at)),
            ],
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="app",
                    image="app:1",
                    image_id="",
                    ready=True,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        running=k8s.V1ContainerStateRunning(started_at=_at(1))
                    ),
                )
            ],
        )
    meta.setdefault("creation_timestamp", _at(0))
    metadata = _meta(meta.pop("name", "web-1"), rv, **meta)
    return k8s.V1Pod(api_version="v1", kind="Pod", metadata=metadata, status=status)


def _slice(rv: int, *, ready: bool, trigger: float) -> k8s.V1EndpointSlice:
    annotations = {"endpoints.kubernetes.io/last-change-trigger-time": _at(trigger).isoformat()}
    return k8s.V1EndpointSlice(
        api_version="discovery.k8s.io/v1",
        kind="EndpointSlice",
        address_type="IPv4",
        metadata=_meta(
            "web-abc",
            rv,
            labels={"kubernetes.io/service-name": "web"},
            annotations=annotations,
            creation_timestamp=_at(0),
        ),
        endpoints=[
            k8s.V1Endpoint(
                addresses=["10.1.0.5"],
                conditions=k8s.V1EndpointConditions(ready=ready, serving=True, terminating=False),
                target_ref=k8s.V1ObjectReference(kind="Pod", name="web-1"),
            )
        ],
    )


def _deployment(rv: int, generation: int) -> k8s.V1Deployment:
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=_meta("web", rv, generation=generation, creation_timestamp=_at(-60)),
        spec=k8s.V1DeploymentSpec(
            selector=k8s.V1LabelSelector(match_labels={"app": "web"}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels={"app": "web"}),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image=f"app:{rv}")]),
            ),
        ),
    )


def _write(path: Path, events: list[tuple[str, Any]]) -> Path:
    lines = [
        json.dumps({"type": etype, "object": _API.sanitize_for_serialization(obj)})
        for etype, obj in events
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def model_streams(tmp_path: Path) -> list[Path]:
    """A Pod's life, its EndpointSlice and a Deployment spec change, in resourceVersion order:
    RV 9 Deployment (listed), 10 Pod created, 11 scheduled, 12 Ready (t0+3 s), 13 slice ready,
    14 Deployment spec change, 15 deletion requested at t0+10 s (grace 30), 16 a Pod of another
    namespace created at t0+12 s, 17 slice not ready, 18 Pod deleted at t0+20 s (grace 0)."""
    scheduled = _pod(11, ready_at=None)
    scheduled.status.conditions = [
        k8s.V1PodCondition(type="PodScheduled", status="True", last_transition_time=_at(0))
    ]
    pods = [
        ("ADDED", _pod(10)),
        ("MODIFIED", scheduled),
        ("MODIFIED", _pod(12, ready_at=3)),
        ("MODIFIED", _pod(15, ready_at=3, deletion_timestamp=_at(40), deletion_grace_period_seconds=30)),
        ("ADDED", _pod(16, name="other-1", namespace="elsewhere", creation_timestamp=_at(12))),
        ("DELETED", _pod(18, ready_at=3, deletion_timestamp=_at(20), deletion_grace_period_seconds=0)),
    ]  # fmt: skip
    slices = [
        ("MODIFIED", _slice(13, ready=True, trigger=3)),
        ("MODIFIED", _slice(17, ready=False, trigger=10)),
    ]
    deployments = [("ADDED", _deployment(9, 2)), ("MODIFIED", _deployment(14, 3))]
    return [
        _write(tmp_path / "pods.jsonl", pods),
        _write(tmp_path / "endpointslices.jsonl", slices),
        _write(tmp_path / "deployments.jsonl", deployments),
    ]


def _by_revision(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["object"]["metadata"]["resourceVersion"]): r for r in records}


def test_fields_a_change_wrote_date_it(model_streams: list[Path]) -> None:
    records = _by_revision(read_kubectl_streams(model_streams).records)
    half = SECOND_NS // 2  # the middle of the stamp's one-second resolution
    ready = records[12]
    assert ready["time_source"] == TimeSource.OBJECT_FIELD
    assert ready["recv_ns"] == T0_NS + 3 * SECOND_NS + half
    deletion = records[15]  # deletionTimestamp = request + grace period
    assert deletion["time_source"] == TimeSource.OBJECT_FIELD
    assert deletion["recv_ns"] == T0_NS + 10 * SECOND_NS + half
    assert deletion["latest_ns"] == T0_NS + 11 * SECOND_NS
    deleted = records[18]  # the final delete shortens the grace period to 0
    assert deleted["type"] == "DELETED" and deleted["time_source"] == TimeSource.OBJECT_FIELD
    assert deleted["recv_ns"] == T0_NS + 20 * SECOND_NS + half


def test_undated_events_are_bounded_by_their_neighbours(model_streams: list[Path]) -> None:
    records = _by_revision(read_kubectl_streams(model_streams).records)
    ready_slice = records[13]  # a reaction to RV 12: right after it
    assert ready_slice["time_source"] == TimeSource.BOUNDED
    assert ready_slice["recv_ns"] == records[12]["recv_ns"]
    assert ready_slice["earliest_ns"] == T0_NS + 3 * SECOND_NS  # the trigger time annotation
    assert ready_slice["latest_ns"] == records[15]["latest_ns"]  # the next dated event's bound
    spec_change = records[14]  # a cause: with the next dated event, not after its predecessor
    assert spec_change["time_source"] == TimeSource.BOUNDED
    assert spec_change["recv_ns"] == records[15]["recv_ns"]
    gone_slice = records[17]  # after RV 16's creation, another namespace's object
    assert gone_slice["earliest_ns"] == T0_NS + 12 * SECOND_NS
    assert gone_slice["recv_ns"] == T0_NS + 12 * SECOND_NS
    first = records[9]  # nothing dated before it: only bounded from above
    assert first["earliest_ns"] == T0_NS - 60 * SECOND_NS  # its own creationTimestamp
    assert first["latest_ns"] is not None


def test_namespace_filter_keeps_bounds_from_every_namespace(model_streams: list[Path]) -> None:
    everything = read_kubectl_streams(model_streams)
    shop = read_kubectl_streams(model_streams, namespace="shop")
    assert len(everything.records) == 10 and len(shop.records) == 9
    assert all(r["object"]["metadata"]["namespace"] == "shop" for r in shop.records)
    assert _by_revision(shop.records)[17]["recv_ns"] == T0_NS + 12 * SECOND_NS


def test_records_read_as_events_jsonl(model_streams: list[Path], tmp_path: Path) -> None:
    records = read_kubectl_streams(model_streams, namespace="shop").records
    pods = pod_lifecycle(read_events(_as_events_file(records, tmp_path / "events.jsonl")))
    (pod,) = pods.itertuples()
    assert pod.ready_ns == T0_NS + 3 * SECOND_NS + SECOND_NS // 2
    assert pod.deletion_ns == T0_NS + 10 * SECOND_NS + SECOND_NS // 2
    assert pod.deletion_grace_s == 30
    assert pod.deleted_ns == T0_NS + 20 * SECOND_NS + SECOND_NS // 2


def test_non_integer_resource_versions_order_each_stream_alone(
    model_streams: list[Path], tmp_path: Path
) -> None:
    pods = model_streams[0]
    lines = [json.loads(line) for line in pods.read_text().splitlines()]
    for line in lines:
        line["object"]["metadata"]["resourceVersion"] = (
            "v" + line["object"]["metadata"]["resourceVersion"]
        )
    pods.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = read_kubectl_streams(model_streams)
    assert any("not an integer" in note for note in result.notes)
    times = [r["recv_ns"] for r in result.records]
    assert times == sorted(times) and len(times) == 10


# ---- damage -----------------------------------------------------------------------------------


def test_damaged_lines_are_located_problems_and_the_rest_is_kept(tmp_path: Path) -> None:
    good = (FIXTURE / "pods.jsonl").read_text().splitlines()
    error = {"type": "ERROR", "object": {"kind": "Status", "message": "too old resource version"}}
    bad_time = json.loads(good[3])
    bad_time["object"]["metadata"]["creationTimestamp"] = "yesterday"
    lines = [
        good[0],
        '{"type":"ADDED","object":{"kind":"Pod"',  # torn
        json.dumps({"type": "RENAMED", "object": {}}),
        json.dumps(bad_time),
        json.dumps(error),
        *good[4:],
    ]
    damaged = tmp_path / "pods.jsonl"
    damaged.write_text("\n".join(lines) + "\n")
    result = read_kubectl_streams([damaged])
    where = {(p.location, p.field) for p in result.problems}
    assert where == {
        ("line 2", None),
        ("line 3", "type"),
        ("line 4", "object.metadata.creationTimestamp"),
        ("line 5", "object.message"),
    }
    assert all(p.path == str(damaged) for p in result.problems)
    assert len(result.records) == 1 + len(good) - 4


def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    result = read_kubectl_streams([tmp_path / "absent.jsonl"])
    assert result.records == [] and [p.location for p in result.problems] == ["file"]


def test_a_damaged_pretty_object_costs_that_object_only(tmp_path: Path) -> None:
    objects = (FIXTURE / "pods-pretty.json").read_text().split("\n}\n")[:3]
    torn = objects[0][: len(objects[0]) // 2]  # a torn object, then one with a lone surrogate
    surrogate = objects[1].replace('"generateName": "', '"generateName": "\\ud800', 1)
    damaged = tmp_path / "pods.json"
    damaged.write_text(f"{torn}\n{surrogate}\n}}\n{objects[2]}\n}}\n")
    result = read_kubectl_streams([damaged])
    messages = [(p.location, p.message.split(":")[0]) for p in result.problems]
    second = torn.count("\n") + 2
    assert messages == [
        ("line 1", "not valid JSON"),
        (f"line {second}", "unpaired UTF-16 surrogate escape"),
    ]
    assert len(result.records) == 1
