"""The Deployment controller's pure decisions, against upstream's own unit-test tables.

Each table names the upstream test (k8s.io/kubernetes/pkg/controller/deployment/...) its rows
come from; rows marked "derived" follow the documented rule of the cited function.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localcluster.controllers import rollout as r
from localcluster.controllers.rollout import DeploymentSpec, RSView


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        # util/deployment_util_test.go TestResolveFenceposts
        ("0%", "0%", 0, (0, 1)),
        ("39%", "39%", 10, (4, 3)),
        ("39%", "oops", 10, ValueError),
        ("oops", "39%", 10, ValueError),
        ("55%", "urg", 10, ValueError),
        # derived: surge rounds up, unavailable rounds down (ResolveFenceposts doc comment)
        ("25%", "25%", 1, (1, 0)),
        ("25%", "25%", 3, (1, 0)),
        ("25%", "25%", 10, (3, 2)),
        ("25%", "25%", 100, (25, 25)),
        ("50%", "50%", 3, (2, 1)),
        ("100%", "100%", 3, (3, 3)),
        (0, 0, 3, (0, 1)),
        (1, 0, 3, (1, 0)),
        (0, "1", 3, (0, 1)),
    ],
)
def test_resolve_fenceposts(surge, unavailable, desired, expected) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError):
            r.resolve_fenceposts(surge, unavailable, desired)
    else:
        assert r.resolve_fenceposts(surge, unavailable, desired) == expected


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        # util/deployment_util_test.go TestMaxUnavailable
        (10, 0, 1, 1),
        (10, 0, 10, 10),
        (10, 0, 20, 10),  # capped at replicas
        (0, 0, "10%", 0),  # zero replicas → 0
        (10, "25%", "25%", 2),
        (5, 0, 0, 1),  # fenceposts: both zero → 1
    ],
)
def test_max_unavailable(replicas, surge, unavailable, expected) -> None:
    spec = DeploymentSpec(replicas=replicas, max_surge=surge, max_unavailable=unavailable)
    assert spec.max_unavailable_count() == expected


def test_recreate_has_no_surge_and_no_unavailability_budget() -> None:
    spec = DeploymentSpec(replicas=10, strategy="Recreate", max_surge=5, max_unavailable=5)
    assert (spec.max_surge_count(), spec.max_unavailable_count()) == (0, 0)


@pytest.mark.parametrize(
    ("replicas", "surge", "old", "new", "expected"),
    [
        # rolling_test.go TestDeploymentController_reconcileNewReplicaSet (maxUnavailable 0)
        (10, 0, 10, 0, None),
        (10, 2, 10, 0, 2),
        (10, 2, 5, 0, 7),
        (10, 2, 10, 2, None),
        (10, 2, 2, 11, 10),  # above replicas: scale straight down
        # deployment_util_test.go TestNewRSNewReplicas: never above replicas
        (1, 5, 1, 0, 1),
    ],
)
def test_reconcile_new_replica_set(replicas, surge, old, new, expected) -> None:
    spec = DeploymentSpec(replicas=replicas, max_surge=surge, max_unavailable=0)
    old_rs, new_rs = RSView("old", old, created=1), RSView("new", new, created=2)
    assert r.reconcile_new_replica_set(spec, [old_rs, new_rs], new_rs) == expected


@pytest.mark.parametrize(
    ("replicas", "unavailable", "old", "new", "old_ready", "new_ready", "expected_old"),
    [
        # rolling_test.go TestDeploymentController_reconcileOldReplicaSets (maxSurge 0)
        (10, 0, 10, 0, 10, 0, 9),
        (10, 2, 10, 0, 10, 0, 8),
        (10, 2, 10, 0, 8, 0, 8),  # unhealthy old replicas cleaned up first
        (10, 2, 10, 0, 9, 0, 8),  # one unhealthy cleaned + one ready scaled down
        (10, 2, 8, 2, 8, 0, None),  # new RS's unavailable Pods block further scale-down
    ],
)
def test_reconcile_old_replica_sets(
    replicas, unavailable, old, new, old_ready, new_ready, expected_old
) -> None:
    spec = DeploymentSpec(replicas=replicas, max_surge=0, max_unavailable=unavailable)
    old_rs = RSView("old", old, available=old_ready, created=1)
    new_rs = RSView("new", new, available=new_ready, created=2)
    sizes = r.reconcile_old_replica_sets(spec, new_rs, [old_rs])
    assert sizes.get("old") == expected_old


@pytest.mark.parametrize(
    ("old", "ready", "max_cleanup", "expected_cleaned"),
    [
        # rolling_test.go TestDeploymentController_cleanupUnhealthyReplicas
        (10, 8, 1, 1),
        (10, 8, 3, 2),
        (10, 8, 0, 0),
        (10, 10, 3, 0),
    ],
)
def test_cleanup_unhealthy_replicas(old, ready, max_cleanup, expected_cleaned) -> None:
    sizes = r.cleanup_unhealthy_replicas([RSView("old", old, available=ready)], max_cleanup)
    assert old - sizes.get("old", old) == expected_cleaned


@pytest.mark.parametrize(
    ("replicas", "unavailable", "ready", "old", "expected_old"),
    [
        # rolling_test.go TestDeploymentController_scaleDownOldReplicaSetsForRollingUpdate
        (10, 0, 10, 10, 9),
        (10, 2, 10, 10, 8),
        (10, 2, 8, 10, None),
        (10, 2, 10, 0, None),
        (10, 2, 1, 10, None),
    ],
)
def test_scale_down_old_for_rolling_update(replicas, unavailable, ready, old, expected_old) -> None:
    spec = DeploymentSpec(replicas=replicas, max_surge=0, max_unavailable=unavailable)
    old_rs = RSView("old", old, available=ready)
    assert r.scale_down_old_for_rolling_update(spec, [old_rs], [old_rs]).get("old") == expected_old


def test_scale_down_takes_oldest_replica_set_first() -> None:
    """``scaleDownOldReplicaSetsForRollingUpdate`` sorts by ReplicaSetsByCreationTimestamp."""
    spec = DeploymentSpec(replicas=4, max_surge=0, max_unavailable=2)
    older = RSView("older", 2, available=2, created=1)
    old = RSView("old", 2, available=2, created=2)
    new = RSView("new", 0, created=3)
    assert r.reconcile_old_replica_sets(spec, new, [old, older]) == {"older": 0}


def test_stale_available_count_cannot_exceed_spec() -> None:
    """Our one conservative deviation: an RS scaled 10→9 whose status still says 10 available
    is credited with 9, so a second sync before its status catches up does not scale down
    again (upstream would, and momentarily break maxUnavailable)."""
    spec = DeploymentSpec(replicas=10, max_surge=1, max_unavailable=0)
    old = RSView("old", 9, available=10, status_replicas=10, created=1)
    new = RSView("new", 1, available=0, status_replicas=0, created=2)
    assert r.rolling_step(spec, new, [old]) == {}


def test_new_rs_growth_waits_for_old_pods_to_be_deleted() -> None:
    """Pods of an RS scaled down but not yet reconciled still count toward maxSurge."""
    spec = DeploymentSpec(replicas=3, max_surge=1, max_unavailable=0)
    old = RSView("old", 2, available=2, status_replicas=3, created=1)
    new = RSView("new", 1, available=1, status_replicas=1, created=2)
    assert r.rolling_step(spec, new, [old]) == {}
    caught_up = RSView("old", 2, available=2, status_replicas=2, created=1)
    assert r.rolling_step(spec, new, [caught_up]) == {"new": 2}


def simulate_rolling(spec: DeploymentSpec, steps: int = 1000) -> list[tuple[int, int]]:
    """Drive rolling_step with RSs whose Pods become available instantly after a step; returns
    (total Pods, available) after every step."""
    old = RSView(
        "old", spec.replicas, available=spec.replicas, status_replicas=spec.replicas, created=1
    )
    new = RSView("new", 0, created=2)
    trace = []
    for _ in range(steps):
        sizes = r.rolling_step(spec, new, [old])
        if not sizes:
            # Pods of the new RS become available between syncs.
            if new.available < new.replicas:
                new = RSView(
                    "new", new.replicas, new.replicas, status_replicas=new.replicas, created=2
                )
                continue
            break
        old_n, new_n = sizes.get("old", old.replicas), sizes.get("new", new.replicas)
        old = RSView("old", old_n, min(old.available, old_n), status_replicas=old_n, created=1)
        new = RSView("new", new_n, new.available, status_replicas=new_n, created=2)
        trace.append((old_n + new_n, old.available + new.available))
    assert (old.replicas, new.replicas) == (0, spec.replicas)
    return trace


@pytest.mark.parametrize("replicas", [1, 3, 10, 100])
@pytest.mark.parametrize(
    ("surge", "unavailable"),
    [(0, 1), (1, 0), ("25%", "25%"), ("50%", 0), ("100%", "100%"), (0, "50%")],
)
def test_rolling_steps_respect_surge_and_unavailability(replicas, surge, unavailable) -> None:
    spec = DeploymentSpec(replicas=replicas, max_surge=surge, max_unavailable=unavailable)
    for total, available in simulate_rolling(spec):
        assert total <= replicas + spec.max_surge_count()
        assert available >= replicas - spec.max_unavailable_count()


@pytest.mark.parametrize(
    ("old_running", "new", "expected"),
    [
        # recreate.go rolloutRecreate: old RSs go to zero first, then wait for their Pods.
        (True, None, ({"old": 0}, False)),
    ],
)
def test_recreate_scales_old_down_first(old_running, new, expected) -> None:
    spec = DeploymentSpec(replicas=3, strategy="Recreate")
    assert r.recreate_step(spec, new, [RSView("old", 3)], old_running) == expected


def test_recreate_waits_for_old_pods_then_creates_and_scales_new() -> None:
    spec = DeploymentSpec(replicas=3, strategy="Recreate")
    olds = [RSView("old", 0)]
    assert r.recreate_step(spec, None, olds, old_pods_running=True) == ({}, False)
    assert r.recreate_step(spec, None, olds, old_pods_running=False) == ({}, True)
    assert r.recreate_step(spec, RSView("new", 0), olds, False) == ({"new": 3}, False)


@pytest.mark.parametrize(
    (
        "name",
        "replicas",
        "surge",
        "prev",
        "prev_surge",
        "new",
        "olds",
        "expected_new",
        "expected_olds",
    ),
    [
        # sync_test.go TestScale, row by row (newDeployment defaults maxSurge/maxUnavailable to
        # 0; RSs carry desired/max annotations of the previous size). olds: newest first.
        ("10 -> 12", 12, 0, 10, 0, 10, [], 12, []),
        ("10 -> 5", 5, 0, 10, 0, 10, [], 5, []),
        ("proportional 5 -> 10", 10, 0, 5, 0, 2, [3], 4, [6]),
        ("proportional 5 -> 3", 3, 0, 5, 0, 2, [3], 1, [2]),
        ("proportional 9 -> 4", 4, 0, 9, 0, 8, [1], 4, [0]),
        ("proportional 7 -> 10", 10, 0, 7, 0, 2, [3, 2], 3, [4, 3]),
        ("proportional 13 -> 8", 8, 0, 13, 0, 2, [8, 3], 1, [5, 2]),
        ("leftover 3 -> 4", 4, 0, 3, 0, 1, [1, 1], 2, [1, 1]),
        ("leftover 3 -> 2", 2, 0, 3, 0, 1, [1, 1], 1, [1, 0]),
        ("no new rs 4 -> 5", 5, 0, 4, 0, None, [2, 2], None, [3, 2]),
        ("6 -> 0", 0, 0, 6, 0, 3, [2, 1], 0, [0, 0]),
        ("0 -> 6", 6, 0, 6, 0, 0, [0, 0], 6, [0, 0]),
        ("surge pods 10 -> 20", 20, 2, 10, 2, 6, [6], 11, [11]),
        ("surge and size 10 -> 50", 50, 6, 10, 3, 5, [8], 22, [34]),
    ],
)
def test_proportional_scaling_matches_upstream_test_scale(
    name, replicas, surge, prev, prev_surge, new, olds, expected_new, expected_olds
) -> None:
    spec = DeploymentSpec(replicas=replicas, max_surge=surge, max_unavailable=0)

    def view(rs_name: str, size: int, created: float) -> RSView:
        return RSView(
            rs_name,
            size,
            created=created,
            desired_annotation=prev,
            max_annotation=prev + prev_surge,
        )

    new_rs = view("new", new, 100) if new is not None else None
    old_rss = [view(f"old{i}", size, 50 - i) for i, size in enumerate(olds)]
    sizes = r.proportional_scale(spec, new_rs, old_rss, prev)
    if new_rs is not None:
        assert sizes.get("new", new) == expected_new, name
    assert [sizes.get(o.name, o.replicas) for o in old_rss] == expected_olds, name


def test_saturated_but_broken_new_rs_leaves_old_pods() -> None:
    """sync_test.go TestScale "saturated but broken new replica set does not affect old pods"."""
    spec = DeploymentSpec(replicas=2, max_surge=1, max_unavailable=1)
    new = RSView("new", 2, available=0, created=2, desired_annotation=2, max_annotation=3)
    old = RSView("old", 1, created=1, desired_annotation=2, max_annotation=3)
    assert not r.is_scaling_event(spec, new, [old])
    sizes = r.proportional_scale(spec, new, [old], 3)
    assert sizes.get("new", 2) == 2 and sizes.get("old", 1) == 1


def test_scaling_a_single_active_rs_sets_it_to_replicas() -> None:
    """``FindActiveOrLatest`` with one active RS: it takes the whole new count."""
    spec = DeploymentSpec(replicas=7)
    assert r.proportional_scale(
        spec, RSView("new", 3, desired_annotation=3), [RSView("o", 0)], 3
    ) == {"new": 7}


def test_saturated_new_rs_scales_old_to_zero() -> None:
    spec = DeploymentSpec(replicas=3)
    new = RSView("new", 3, available=3, desired_annotation=3)
    assert r.proportional_scale(spec, new, [RSView("old", 1, created=-1)], 4) == {"old": 0}


@pytest.mark.parametrize(
    ("rss", "limit", "expected_deletions"),
    [
        # sync_test.go TestDeploymentController_cleanupDeployment: (spec, status replicas)
        ([(0, 0), (0, 0), (0, 0)], 1, 2),
        ([(0, 0), (0, 1), (1, 0), (1, 1)], 0, 1),
        ([(0, 0), (0, 0)], 0, 2),
        ([(1, 1), (1, 1)], 0, 0),
        ([(0, 0, "deleting")], 0, 0),
        ([(0, 0), (0, 0), (0, 0)], 2**31 - 1, 0),
    ],
)
def test_revision_history_cleanup(rss, limit, expected_deletions) -> None:
    spec = DeploymentSpec(replicas=1, revision_history_limit=limit)
    olds = [
        RSView(f"foo-{i}", row[0], status_replicas=row[1], revision=i, deleting=len(row) > 2)
        for i, row in enumerate(rss)
    ]
    victims = r.rs_to_clean_up(spec, olds)
    assert len(victims) == expected_deletions
    # lowest revisions go first (ReplicaSetsByRevision)
    assert victims == sorted(victims)


def test_rollback_revision_is_max_of_old_plus_one() -> None:
    """sync.go getNewReplicaSet: newRevision = MaxRevision(oldRSs) + 1, and the reused RS's
    previous revision goes to revision-history."""
    olds = [RSView("r2", 3, revision=2)]
    assert r.next_revision(olds) == 3
    assert r.revision_history("1", 1, None) == "1"
    assert r.revision_history("1", 1, "0") == "0,1"


def test_template_hash_ignores_its_own_label_and_changes_with_collisions() -> None:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"image": "a"}]}}
    labelled = {
        "metadata": {"labels": {"app": "x", "pod-template-hash": "abc"}},
        "spec": template["spec"],
    }
    assert r.template_hash(template) == r.template_hash(labelled)
    assert r.template_hash(template) != r.template_hash(template, collision_count=1)
    assert set(r.template_hash(template)) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert r.templates_equal_ignoring_hash(template, labelled)


NOW = 1000.0


def test_status_counts_and_available_condition() -> None:
    """sync.go calculateStatus: replicas/updated/ready from RS status; unavailable = spec total −
    available; Available=True MinimumReplicasAvailable once available ≥ replicas − maxUnavailable."""
    spec = DeploymentSpec(replicas=4, max_surge=1, max_unavailable=1, generation=3)
    old = RSView("old", 2, available=2, ready=2, status_replicas=3)
    new = RSView("new", 3, available=1, ready=2, status_replicas=3)
    status = r.calculate_status(spec, new, [old, new], r.DeploymentStatus(), NOW)
    assert (status.replicas, status.updated_replicas, status.ready_replicas) == (6, 3, 4)
    assert (status.available_replicas, status.unavailable_replicas) == (3, 2)
    assert status.observed_generation == 3
    cond = status.condition("Available")
    assert cond is not None and (cond.status, cond.reason) == ("True", r.MIN_AVAILABLE)
    worse = r.calculate_status(spec, new, [RSView("old", 2), new], status, NOW + 1)
    cond = worse.condition("Available")
    assert cond is not None and (cond.status, cond.reason) == ("False", r.MIN_UNAVAILABLE)


def test_progressing_condition_lifecycle() -> None:
    """progress.go syncRolloutStatus: ReplicaSetUpdated on progress (keeping its transition
    time), ProgressDeadlineExceeded after the deadline without progress, NewReplicaSetAvailable
    when complete."""
    spec = DeploymentSpec(replicas=2, progress_deadline_seconds=10, generation=1)
    new1 = RSView("new", 2, available=0, ready=0, status_replicas=1)
    created = r.set_condition(
        r.DeploymentStatus(), r.new_condition("Progressing", "True", r.NEW_RS_CREATED, "x", NOW)
    )
    s1 = r.rollout_status(spec, new1, [new1], created, "d", NOW + 1)
    c1 = s1.condition("Progressing")
    assert c1 is not None and (c1.reason, c1.last_update, c1.last_transition) == (
        r.RS_UPDATED,
        NOW + 1,
        NOW,
    )
    stalled = r.rollout_status(spec, new1, [new1], s1, "d", NOW + 5)
    assert stalled.condition("Progressing") == c1
    assert r.seconds_until_deadline(spec, stalled, NOW + 5) == pytest.approx(6.01)
    timed_out = r.rollout_status(spec, new1, [new1], s1, "d", NOW + 12)
    c2 = timed_out.condition("Progressing")
    assert c2 is not None and (c2.status, c2.reason) == ("False", r.TIMED_OUT)
    assert c2.message == 'ReplicaSet "new" has timed out progressing.'
    done = RSView("new", 2, available=2, ready=2, status_replicas=2)
    s3 = r.rollout_status(spec, done, [done], s1, "d", NOW + 3)
    c3 = s3.condition("Progressing")
    assert c3 is not None and (c3.status, c3.reason) == ("True", r.NEW_RS_AVAILABLE)
    assert r.deployment_complete(spec, s3)


def test_paused_condition() -> None:
    """deployment_controller.go checkPausedConditions."""
    spec = DeploymentSpec(replicas=1, paused=True)
    paused = r.paused_condition(spec, r.DeploymentStatus(), NOW)
    cond = paused.condition("Progressing")
    assert cond is not None and (cond.status, cond.reason) == ("Unknown", r.PAUSED)
    resumed = r.paused_condition(DeploymentSpec(replicas=1), paused, NOW + 1)
    cond = resumed.condition("Progressing")
    assert cond is not None and cond.reason == r.RESUMED
    # A paused rollout never times out: DeploymentTimedOut only counts from ReplicaSetUpdated.
    spec_deadline = DeploymentSpec(replicas=1, progress_deadline_seconds=1, paused=True)
    assert r.paused_condition(spec_deadline, paused, NOW + 99) == paused


surge_or_unavailable = st.one_of(
    st.integers(min_value=0, max_value=12),
    st.sampled_from(["0%", "10%", "25%", "33%", "50%", "100%"]),
)


@settings(max_examples=150, deadline=None)
@given(
    replicas=st.integers(min_value=0, max_value=60),
    surge=surge_or_unavailable,
    unavailable=surge_or_unavailable,
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_rolling_steps_hold_invariants_for_any_availability_order(
    replicas, surge, unavailable, seed
) -> None:
    """Whatever subset of the new Pods becomes available between syncs, every step keeps
    spec totals ≤ replicas + maxSurge and availability ≥ replicas − maxUnavailable, and the
    rollout ends with only the new RS (the guarantees rolloutRolling is built to give)."""
    rng = random.Random(seed)
    spec = DeploymentSpec(replicas=replicas, max_surge=surge, max_unavailable=unavailable)
    old = RSView("old", replicas, available=replicas, status_replicas=replicas, created=1)
    new = RSView("new", 0, created=2)
    for _ in range(10_000):
        sizes = r.rolling_step(spec, new, [old])
        if sizes:
            old_n, new_n = sizes.get("old", old.replicas), sizes.get("new", new.replicas)
            old = RSView("old", old_n, min(old.available, old_n), status_replicas=old_n, created=1)
            new = RSView("new", new_n, min(new.available, new_n), status_replicas=new_n, created=2)
            assert old_n + new_n <= replicas + spec.max_surge_count()
            assert old.available + new.available >= replicas - spec.max_unavailable_count()
        elif new.available < new.replicas:
            became = rng.randint(1, new.replicas - new.available)
            new = RSView(
                "new", new.replicas, new.available + became, status_replicas=new.replicas, created=2
            )
        else:
            break
    assert (old.replicas, new.replicas, new.available) == (0, replicas, replicas)


def test_copied_annotations_skip_controller_and_kubectl_bookkeeping() -> None:
    """deployment_util.go annotationsToSkip."""
    annotations = {
        "kubernetes.io/change-cause": "why",
        "team": "a",
        r.REVISION_ANNOTATION: "3",
        r.DESIRED_REPLICAS_ANNOTATION: "2",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    assert r.copied_annotations(annotations) == {"kubernetes.io/change-cause": "why", "team": "a"}
