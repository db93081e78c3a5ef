from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import TraceError
from analyzer.events import (
    endpoint_membership,
    pod_lifecycle,
    pod_state_intervals,
    read_events,
    read_truth,
    scan_events,
)
from analyzer.schema import ENDPOINTS, POD_STATES, PODS, check_frame
from tests.analyzer.handmade import (
    T0,
    S,
    endpoint,
    endpoint_slice,
    event,
    gap,
    killed,
    pod,
    relist,
    replicaset,
    restarted,
    write_lines,
)


def _read(tmp_path: Path, lines: list[dict[str, object]]) -> pd.DataFrame:
    return read_events(write_lines(tmp_path / "events.jsonl", lines))


def _one(frame: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column] == value
    rows = frame[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_full_pod_lifecycle_from_added_to_deleted(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0 + 5 * S, replicaset("web-5d9f", 2, "5d9f")),
        event("ADDED", T0 + 10 * S, pod()),
        event("MODIFIED", T0 + 11 * S, pod(node="node-1")),
        event(
            "MODIFIED", T0 + 12 * S, pod(node="node-1", ip="10.1.0.5", running=True, ready=False)
        ),
        event("MODIFIED", T0 + 14 * S, pod(node="node-1", ip="10.1.0.5", running=True, ready=True)),
        event(
            "MODIFIED",
            T0 + 60 * S,
            pod(node="node-1", ip="10.1.0.5", running=True, ready=True, deleting=True, grace=45),
        ),
        event(
            "MODIFIED",
            T0 + 61 * S,
            pod(node="node-1", ip="10.1.0.5", running=True, ready=False, deleting=True),
        ),
        event(
            "MODIFIED",
            T0 + 70 * S,
            pod(node="node-1", ip="10.1.0.5", terminated=True, ready=False, deleting=True),
        ),
        event(
            "DELETED",
            T0 + 71 * S,
            pod(node="node-1", ip="10.1.0.5", terminated=True, ready=False, deleting=True),
        ),
    ]
    pods = pod_lifecycle(_read(tmp_path, lines))
    check_frame(pods, PODS, "test")
    row = _one(pods, uid="uid-1")
    assert (row["pod"], row["namespace"], row["node"], row["ip"]) == (
        "web-abc",
        "default",
        "node-1",
        "10.1.0.5",
    )
    assert (row["replicaset"], row["revision"]) == ("web-5d9f", 2)
    expected = {
        "created_ns": 10,
        "scheduled_ns": 11,
        "started_ns": 12,
        "ready_ns": 14,
        "deletion_ns": 60,
        "unready_ns": 61,
        "terminated_ns": 70,
        "deleted_ns": 71,
    }
    assert {k: (int(row[k]) - T0) // S for k in expected} == expected
    assert row["deletion_grace_s"] == 45
    assert not (row["ready_late"] or row["deletion_late"] or row["deleted_late"])


def test_gap_in_the_middle_marks_transitions_detected_late(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0, pod()),
        event("MODIFIED", T0 + 1 * S, pod(node="n", running=True, ready=False)),
        gap("Pod", T0 + 2 * S, T0 + 9 * S),
        # readiness and deletion both happened inside the hole: only their detection is known
        event("MODIFIED", T0 + 10 * S, pod(node="n", running=True, ready=True, deleting=True)),
        event("DELETED", T0 + 12 * S, pod(node="n", terminated=True, deleting=True)),
    ]
    row = _one(pod_lifecycle(_read(tmp_path, lines)), uid="uid-1")
    assert row["ready_ns"] == T0 + 10 * S and row["ready_late"]
    assert row["deletion_ns"] == T0 + 10 * S and row["deletion_late"]
    # the DELETED event itself arrived after the pod was observed post-gap: a live event
    assert row["deleted_ns"] == T0 + 12 * S and not row["deleted_late"]


def test_transition_after_gap_on_other_kind_is_not_late(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0, pod(node="n")),
        gap("EndpointSlice", T0 + 1 * S, T0 + 3 * S),
        event("MODIFIED", T0 + 4 * S, pod(node="n", running=True, ready=True)),
    ]
    row = _one(pod_lifecycle(_read(tmp_path, lines)), uid="uid-1")
    assert row["ready_ns"] == T0 + 4 * S and not row["ready_late"]


def test_relist_snapshot_detects_pods_deleted_in_the_hole(tmp_path: Path) -> None:
    lines = [
        event("LIST", T0, pod("old-1", "u-old", node="n", running=True, ready=True)),
        event("LIST", T0, pod("new-1", "u-new", node="n", running=True, ready=False)),
        relist("Pod", T0 + 20 * S),
        event("LIST", T0 + 21 * S, pod("new-1", "u-new", node="n", running=True, ready=True)),
        event("MODIFIED", T0 + 30 * S, pod("new-1", "u-new", node="n", running=True, ready=True)),
    ]
    pods = pod_lifecycle(_read(tmp_path, lines))
    old, new = _one(pods, uid="u-old"), _one(pods, uid="u-new")
    # the initial list is a snapshot, not a hole: nothing late about it
    assert old["ready_ns"] == T0 and not old["ready_late"]
    assert old["deleted_ns"] == T0 + 21 * S and old["deleted_late"]
    assert old["deletion_ns"] == T0 + 21 * S and old["deletion_late"]
    assert new["ready_ns"] == T0 + 21 * S and new["ready_late"]
    assert pd.isna(new["deleted_ns"])


def test_pod_seen_only_via_list(tmp_path: Path) -> None:
    lines = [event("LIST", T0, pod(node="n", ip="10.1.0.9", running=True, ready=True))]
    row = _one(pod_lifecycle(_read(tmp_path, lines)), uid="uid-1")
    assert row["created_ns"] == row["scheduled_ns"] == row["started_ns"] == row["ready_ns"] == T0
    assert pd.isna(row["deletion_ns"]) and pd.isna(row["deleted_ns"])


def test_deleted_without_prior_deletion_timestamp_bounds_deletion(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0, pod(node="n", running=True, ready=True)),
        event("DELETED", T0 + 3 * S, pod(node="n", running=True, ready=True)),
    ]
    row = _one(pod_lifecycle(_read(tmp_path, lines)), uid="uid-1")
    assert row["deleted_ns"] == row["deletion_ns"] == T0 + 3 * S
    assert pd.isna(row["deletion_grace_s"])


def test_pod_recreated_with_the_same_name_is_two_rows(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0, pod("web-0", "u-a", node="n")),
        event("DELETED", T0 + 1 * S, pod("web-0", "u-a", node="n", deleting=True)),
        event("ADDED", T0 + 2 * S, pod("web-0", "u-b", node="m")),
    ]
    pods = pod_lifecycle(_read(tmp_path, lines))
    assert list(pods["uid"]) == ["u-a", "u-b"]
    assert list(pods["node"]) == ["n", "m"]
    assert pd.isna(_one(pods, uid="u-b")["deleted_ns"])


def test_revision_follows_replicaset_rollback(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0, replicaset("web-aaa", 1, "aaa")),
        event(
            "ADDED", T0 + 1 * S, pod("web-aaa-1", "u1", replicaset="web-aaa", template_hash="aaa")
        ),
        event("MODIFIED", T0 + 5 * S, replicaset("web-aaa", 3, "aaa")),
        # no ownerReference: found through the pod-template-hash label
        event("ADDED", T0 + 6 * S, pod("web-aaa-2", "u2", replicaset=None, template_hash="aaa")),
    ]
    pods = pod_lifecycle(_read(tmp_path, lines))
    assert _one(pods, uid="u1")["revision"] == 1
    second = _one(pods, uid="u2")
    assert (second["replicaset"], second["revision"]) == ("web-aaa", 3)


def test_endpoint_intervals_through_termination(tmp_path: Path) -> None:
    ip = "10.1.0.5"
    lines = [
        event("ADDED", T0, endpoint_slice("web-x", endpoint(ip, "p", ready=False))),
        event("MODIFIED", T0 + 2 * S, endpoint_slice("web-x", endpoint(ip, "p", ready=None))),
        event(
            "MODIFIED",
            T0 + 5 * S,
            endpoint_slice("web-x", endpoint(ip, "p", ready=False, serving=True, terminating=True)),
        ),
        event(
            "MODIFIED",
            T0 + 8 * S,
            endpoint_slice(
                "web-x", endpoint(ip, "p", ready=False, serving=False, terminating=True)
            ),
        ),
        event("MODIFIED", T0 + 9 * S, endpoint_slice("web-x")),
    ]
    eps = endpoint_membership(_read(tmp_path, lines))
    check_frame(eps, ENDPOINTS, "test")
    got = [
        (
            bool(r.ready),
            bool(r.serving),
            bool(r.terminating),
            (r.from_ns - T0) // S,
            (r.to_ns - T0) // S,
        )
        for r in eps.itertuples()
    ]
    assert got == [
        (False, False, False, 0, 2),  # serving nil defers to ready
        (True, True, False, 2, 5),  # ready nil counts as true
        (False, True, True, 5, 8),
        (False, False, True, 8, 9),
    ]
    assert set(eps["service"]) == {"web"} and set(eps["pod"]) == {"p"}
    assert not eps["from_late"].any()


def test_unchanged_endpoint_keeps_its_interval_and_slice_deletion_closes(tmp_path: Path) -> None:
    a, b = endpoint("10.0.0.1", "a"), endpoint("10.0.0.2", "b")
    lines = [
        event("ADDED", T0, endpoint_slice("s", a)),
        event("MODIFIED", T0 + 1 * S, endpoint_slice("s", a, b)),
        event("DELETED", T0 + 4 * S, endpoint_slice("s", a, b)),
    ]
    eps = endpoint_membership(_read(tmp_path, lines))
    assert _one(eps, ip="10.0.0.1")["from_ns"] == T0
    assert _one(eps, ip="10.0.0.2")["from_ns"] == T0 + 1 * S
    assert set(eps["to_ns"]) == {T0 + 4 * S}


def test_endpoint_relist_closes_vanished_slices_and_marks_late(tmp_path: Path) -> None:
    a, b = endpoint("10.0.0.1", "a"), endpoint("10.0.0.2", "b")
    lines = [
        event("LIST", T0, endpoint_slice("s1", a)),
        event("LIST", T0, endpoint_slice("s2", b)),
        gap("EndpointSlice", T0 + 1 * S, T0 + 6 * S),
        relist("EndpointSlice", T0 + 6 * S),
        event("LIST", T0 + 7 * S, endpoint_slice("s1", endpoint("10.0.0.1", "a", ready=False))),
    ]
    eps = endpoint_membership(_read(tmp_path, lines))
    s2 = _one(eps, slice="s2")
    assert s2["to_ns"] == T0 + 7 * S  # gone from the snapshot: closed when the snapshot ended
    latest = _one(eps, slice="s1", ready=False)
    assert latest["from_ns"] == T0 + 7 * S and latest["from_late"] and pd.isna(latest["to_ns"])


def test_bad_line_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = '{"type": "ADDED", "recv_ns": 5, "kind": "Pod", "object": {"metadata": {"name": "p"}}}'
    path.write_text(
        good
        + "\n"
        + '{"type": "ADDED", "recv_ns": "5", "kind": "Pod", "object": {}}\n'
        + '{"type": "ADDED", "recv_ns": 6, "kind": "Pod", "object": {"metadata": {"name": "q"},'
        + ' "status": {"conditions": [{"type": "Ready", "status": true}]}}}\n'
        + "{not json\n"
    )
    with pytest.raises(TraceError) as info:
        read_events(path)
    assert info.value.location == "line 2" and info.value.field == "recv_ns"
    assert str(path) in str(info.value)
    assert list(info.value.kept["name"]) == ["p"]  # type: ignore[index]
    scan = scan_events(path)
    assert [(p.location, p.field) for p in scan.problems] == [
        ("line 2", "recv_ns"),
        ("line 3", "object.status.conditions[0].status"),
        ("line 4", None),
    ]
    assert list(read_events(path, tolerant=True)["line"]) == [1]


def test_empty_file_gives_empty_conforming_tables(tmp_path: Path) -> None:
    events = _read(tmp_path, [])
    assert len(pod_lifecycle(events)) == 0 and len(endpoint_membership(events)) == 0


def test_objects_added_after_an_old_gap_are_live(tmp_path: Path) -> None:
    lines = [
        event("ADDED", T0, pod("old", "u-old")),
        gap("Pod", T0 + 1 * S, T0 + 2 * S),
        gap("EndpointSlice", T0 + 1 * S, T0 + 2 * S),
        event("ADDED", T0 + 10 * S, pod("new", "u-new", node="n", running=True, ready=True)),
        event("ADDED", T0 + 10 * S, endpoint_slice("s", endpoint("10.0.0.1", "new"))),
        # first seen through MODIFIED after a gap: its ADDED was lost, so it is late
        event("MODIFIED", T0 + 11 * S, pod("lost", "u-lost", node="n", running=True, ready=True)),
    ]
    events = _read(tmp_path, lines)
    pods = pod_lifecycle(events)
    assert not _one(pods, uid="u-new")["ready_late"]
    assert _one(pods, uid="u-lost")["ready_late"]
    assert not endpoint_membership(events)["from_late"].any()


def test_truth_lines_are_read_sorted_with_their_fields(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "truth.jsonl",
        [
            {"ts_ns": T0 + 2 * S, "source": "lb", "event": "lb-targets-changed", "targets": ["n1"]},
            {"ts_ns": T0, "source": "kubelet/n1", "event": "sigterm", "pod": "web-1", "node": "n1"},
        ],
    )
    truth = read_truth(path)
    assert list(truth["event"]) == ["sigterm", "lb-targets-changed"]
    assert truth["pod"].iloc[0] == "web-1" and pd.isna(truth["pod"].iloc[1])
    assert truth["fields"].iloc[1] == {"targets": ["n1"]}
    assert list(truth["line"]) == [2, 1]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (
            {"ts_ns": 1, "source": "builder", "event": "request-cause", "request_id": True},
            "request_id",
        ),
        (
            {
                "ts_ns": 1,
                "source": "builder",
                "event": "request-cause",
                "request_id": 3,
                "cause": "gremlins",
            },
            "cause",
        ),
        (
            {
                "ts_ns": 1,
                "source": "kube-proxy/n1",
                "event": "rules-programmed",
                "node": "n1",
                "service": "default/web",
                "endpoints": [{"ip": "10.0.0.1"}, {"pod": "p"}],
            },
            "endpoints[1]",
        ),
        ({"ts_ns": -1, "source": "lb", "event": "lb-health-changed"}, "ts_ns"),
        ({"ts_ns": 1, "source": "", "event": "sigterm"}, "source"),
        ({"ts_ns": 1, "source": "lb", "event": "sigterm", "pod": 7}, "pod"),
    ],
)
def test_bad_truth_line_names_its_field(
    tmp_path: Path, line: dict[str, object], field: str
) -> None:
    path = write_lines(tmp_path / "truth.jsonl", [line])
    with pytest.raises(TraceError) as info:
        read_truth(path)
    assert (info.value.location, info.value.field) == ("line 1", field)


# --------------------------------------------------------------------------------------------
# pod state intervals: every transition, not just the first


def _states(tmp_path: Path, lines: list[dict[str, object]]) -> pd.DataFrame:
    frame = pod_state_intervals(_read(tmp_path, lines))
    check_frame(frame, POD_STATES, "test")
    return frame


def _timeline(frame: pd.DataFrame) -> list[tuple[float, str]]:
    return [((t - T0) / S, s) for t, s in zip(frame["from_ns"], frame["state"], strict=True)]


def test_a_liveness_kill_and_restart_without_deletion_stays_visible(tmp_path: Path) -> None:
    """The container is killed (exit 137) and restarted; the Pod is never deleted. The first-
    transition table cannot show this; the intervals must."""
    up = pod(node="node-1", ip="10.1.0.5", running=True, ready=True)
    down = restarted(pod(node="node-1", ip="10.1.0.5", ready=False), 1)
    back = restarted(up, 1)
    back["status"]["containerStatuses"][0]["ready"] = True
    frame = _states(
        tmp_path,
        [
            event("ADDED", T0, pod(node="node-1", ip="10.1.0.5")),
            event("MODIFIED", T0 + S, pod(node="node-1", ip="10.1.0.5", running=True)),
            event("MODIFIED", T0 + 2 * S, up),
            event("MODIFIED", T0 + 10 * S, down),
            event("MODIFIED", T0 + 13 * S, back),
        ],
    )
    assert _timeline(frame) == [
        (0.0, "pending"),
        (1.0, "starting"),
        (2.0, "ready"),
        (10.0, "restarting"),
        (13.0, "ready"),
    ]
    exit_row = frame.iloc[3]
    assert exit_row["restart_count"] == 1 and exit_row["last_exit_code"] == 137
    assert exit_row["last_exit_reason"] == "Error"
    # the exit happened after the previous observation (2 s), which did not show it
    assert exit_row["last_exit_ns"] == T0 + 2 * S
    assert frame["to_ns"].iloc[3] == T0 + 13 * S and pd.isna(frame["to_ns"].iloc[-1])


def test_finished_at_narrows_when_the_exit_happened_but_never_moves_it_past_detection(
    tmp_path: Path,
) -> None:
    up = pod(node="node-1", ip="10.1.0.5", running=True, ready=True)
    # T0 is 2023-11-14T22:13:20Z; finishedAt 22:13:25 lies between the two observations
    down = restarted(pod(node="node-1", ready=False), 1, finished="2023-11-14T22:13:25Z")
    later = restarted(pod(node="node-1", ready=False), 2, finished="2023-11-14T23:00:00Z")
    frame = _states(
        tmp_path,
        [
            event("ADDED", T0, up),
            event("MODIFIED", T0 + 8 * S, down),
            event("MODIFIED", T0 + 9 * S, later),
        ],
    )
    assert frame["last_exit_ns"].tolist()[1:] == [T0 + 5 * S, T0 + 8 * S]


def test_a_crash_loop_before_any_readiness_is_restarting_not_starting(tmp_path: Path) -> None:
    base = pod(node="node-1", ip="10.1.0.5", ready=False)
    frame = _states(
        tmp_path,
        [
            event("ADDED", T0, base),
            event("MODIFIED", T0 + S, pod(node="node-1", ip="10.1.0.5", running=True)),
            event("MODIFIED", T0 + 3 * S, restarted(base, 1, exit_code=1, running=False)),
            event("MODIFIED", T0 + 5 * S, restarted(base, 1, exit_code=1)),
        ],
    )
    assert [s for _, s in _timeline(frame)] == ["pending", "starting", "restarting", "restarting"]
    assert frame["container_running"].tolist() == [False, True, False, True]
    assert frame["last_exit_code"].tolist()[2:] == [1, 1]


def test_readiness_flapping_is_unready_between_ready_intervals(tmp_path: Path) -> None:
    def flip(ready: bool) -> dict[str, object]:
        return pod(node="node-1", ip="10.1.0.5", running=True, ready=ready)

    frame = _states(
        tmp_path,
        [event("ADDED", T0, flip(True))]
        + [event("MODIFIED", T0 + i * S, flip(i % 2 == 0)) for i in range(1, 5)],
    )
    assert [s for _, s in _timeline(frame)] == ["ready", "unready", "ready", "unready", "ready"]
    assert frame["restart_count"].eq(0).all()


def test_deletion_sigkill_and_removal(tmp_path: Path) -> None:
    up = pod(node="node-1", ip="10.1.0.5", running=True, ready=True)
    deleting = pod(node="node-1", ip="10.1.0.5", running=True, ready=False, deleting=True, grace=5)
    frame = _states(
        tmp_path,
        [
            event("ADDED", T0, up),
            event("MODIFIED", T0 + S, deleting),
            event("MODIFIED", T0 + 6 * S, killed(deleting)),
            event("DELETED", T0 + 7 * S, killed(deleting)),
        ],
    )
    assert [s for _, s in _timeline(frame)] == ["ready", "terminating", "gone"]
    assert frame["deletion_grace_s"].tolist()[1:] == [5, 5]
    assert frame["last_exit_code"].iloc[-1] == 137


def test_a_pod_missing_from_a_relist_is_gone_from_the_detection_late(tmp_path: Path) -> None:
    up = pod(node="node-1", ip="10.1.0.5", running=True, ready=True)
    frame = _states(
        tmp_path,
        [
            event("ADDED", T0, up),
            gap("Pod", T0 + S, T0 + 3 * S),
            relist("Pod", T0 + 3 * S),
            event("LIST", T0 + 3 * S, pod("other", "uid-2")),
            event("MODIFIED", T0 + 4 * S, pod("other", "uid-2", running=True)),
        ],
    )
    gone = _one(frame, pod="web-abc", state="gone")
    assert gone["from_ns"] == T0 + 3 * S and bool(gone["from_late"])  # the snapshot's end


def test_an_exit_seen_terminated_then_as_last_state_after_the_restart_is_one_exit(
    tmp_path: Path,
) -> None:
    up = pod(node="node-1", ip="10.1.0.5", running=True, ready=True)
    exited = killed(pod(node="node-1", ip="10.1.0.5", ready=False))
    exited["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = (
        "2023-11-14T22:13:25Z"  # T0 + 5 s
    )
    again = restarted(
        pod(node="node-1", ip="10.1.0.5", ready=False), 1, finished="2023-11-14T22:13:25Z"
    )
    frame = _states(
        tmp_path,
        [
            event("ADDED", T0, up),
            event("MODIFIED", T0 + 6 * S, exited),
            event("MODIFIED", T0 + 7 * S, again),
        ],
    )
    assert frame["restart_count"].tolist() == [0, 0, 1]
    assert frame["container_running"].tolist() == [True, False, True]
    assert frame["last_exit_ns"].tolist()[1:] == [T0 + 5 * S, T0 + 5 * S]
