"""The Deployment controller's decisions as pure functions over small value types.

Every function here mirrors one upstream function of ``k8s.io/kubernetes/pkg/controller/
deployment`` (rolling.go, recreate.go, sync.go, progress.go) or its ``util/deployment_util.go``,
named in its docstring; the facts (rounding, ordering, which counts are spec vs status) are
upstream's, the code is ours. The controller adapter (``deployment.py``) turns objects into
``RSView`` values, calls these, and writes the resulting sizes / status back through the API.

One deliberate deviation, both conservative and invisible once a rollout settles: an RS's
``available`` is capped at its spec ``replicas`` (see ``RSView.effective_available``) and its
pod count for the surge check is ``max(spec, status.replicas)`` (``RSView.pod_count``). Upstream
reads spec and status as they are, so a stale RS status can let it briefly exceed maxSurge in
Pods or fall below minAvailable; here both invariants hold on every observed state, as
``tests/localcluster/test_rollout_invariants.py`` checks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"

# Condition reasons, spelled as util/deployment_util.go spells them.
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

IntOrPercent = int | str


def scaled_value(value: IntOrPercent, total: int, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an int as is, ``"N%"`` of ``total`` rounded
    up or down."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.endswith("%"):
        if text.isdigit():  # kubectl sends ints; tolerate "1" as upstream's intstr.Parse does
            return int(text)
        raise ValueError(f"invalid value for IntOrString: {value!r} is not a percentage")
    percent = int(text[:-1])
    exact = percent * total
    return -(-exact // 100) if round_up else exact // 100


def resolve_fenceposts(
    max_surge: IntOrPercent, max_unavailable: IntOrPercent, desired: int
) -> tuple[int, int]:
    """``deploymentutil.ResolveFenceposts``: surge rounds up, unavailable rounds down, and both
    resolving to zero would deadlock the rollout, so unavailable becomes 1."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


@dataclass(frozen=True)
class DeploymentSpec:
    """The fields of a Deployment the rollout decisions read (already defaulted)."""

    replicas: int
    strategy: str = "RollingUpdate"  # or "Recreate"
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"
    min_ready_seconds: int = 0
    progress_deadline_seconds: int | None = 600
    revision_history_limit: int | None = 10
    paused: bool = False
    generation: int = 0

    @property
    def rolling(self) -> bool:
        return self.strategy == "RollingUpdate"

    def max_surge_count(self) -> int:
        """``deploymentutil.MaxSurge``: 0 for Recreate."""
        if not self.rolling:
            return 0
        surge, _ = resolve_fenceposts(self.max_surge, self.max_unavailable, self.replicas)
        return surge

    def max_unavailable_count(self) -> int:
        """``deploymentutil.MaxUnavailable``: 0 for Recreate or zero replicas, at most replicas."""
        if not self.rolling or self.replicas == 0:
            return 0
        _, unavailable = resolve_fenceposts(self.max_surge, self.max_unavailable, self.replicas)
        return min(unavailable, self.replicas)

    @property
    def has_progress_deadline(self) -> bool:
        """``deploymentutil.HasProgressDeadline`` (MaxInt32 means "no deadline")."""
        return (
            self.progress_deadline_seconds is not None
            and self.progress_deadline_seconds != 2**31 - 1
        )


@dataclass(frozen=True)
class RSView:
    """What the rollout needs of one ReplicaSet: spec size, status counts, age, revision."""

    name: str
    replicas: int  # spec.replicas
    available: int = 0  # status.availableReplicas
    ready: int = 0  # status.readyReplicas
    status_replicas: int = 0  # status.replicas
    created: float = 0.0  # creationTimestamp (epoch s); ties broken by name as upstream
    revision: int = 0
    desired_annotation: int | None = None  # deployment.kubernetes.io/desired-replicas
    max_annotation: int | None = None  # deployment.kubernetes.io/max-replicas
    deleting: bool = False
    synced: bool = True  # status.observedGeneration >= metadata.generation

    @property
    def effective_available(self) -> int:
        return min(self.available, self.replicas)

    @property
    def pod_count(self) -> int:
        return max(self.replicas, self.status_replicas)


def by_creation(rss: Iterable[RSView]) -> list[RSView]:
    """``controller.ReplicaSetsByCreationTimestamp``: oldest first, name breaks ties."""
    return sorted(rss, key=lambda r: (r.created, r.name))


def by_revision(rss: Iterable[RSView]) -> list[RSView]:
    """``deploymentutil.ReplicaSetsByRevision``: lowest revision first."""
    return sorted(rss, key=lambda r: (r.revision, r.created, r.name))


def active(rss: Iterable[RSView]) -> list[RSView]:
    """``controller.FilterActiveReplicaSets``: RSs with a non-zero spec size."""
    return [r for r in rss if r.replicas > 0]


def spec_total(rss: Iterable[RSView]) -> int:
    """``deploymentutil.GetReplicaCountForReplicaSets``."""
    return sum(r.replicas for r in rss)


_RS = TypeVar("_RS")


def all_rss(new: _RS | None, olds: Sequence[_RS]) -> list[_RS]:
    """The old RSs followed by the new one, if any (RS views or RS objects alike)."""
    return [*olds, *([new] if new is not None else [])]


# ---- RollingUpdate: rolling.go --------------------------------------------------------------


def new_rs_new_replicas(spec: DeploymentSpec, all_rss: Sequence[RSView], new: RSView) -> int:
    """``deploymentutil.NewRSNewReplicas``: how far the new RS may grow now. RollingUpdate: up
    to replicas + maxSurge Pods in total, never above replicas; Recreate: replicas at once."""
    if not spec.rolling:
        return spec.replicas
    max_total = spec.replicas + spec.max_surge_count()
    current = sum(r.pod_count for r in all_rss)
    if current >= max_total:
        return new.replicas
    scale_up = min(max_total - current, spec.replicas - new.replicas)
    return new.replicas + scale_up


def reconcile_new_replica_set(
    spec: DeploymentSpec, all_rss: Sequence[RSView], new: RSView
) -> int | None:
    """``rolloutRolling`` → ``reconcileNewReplicaSet``: the new RS's target size, or None when it
    stays. Above replicas it scales straight down (a scale-down of the Deployment)."""
    if new.replicas == spec.replicas:
        return None
    if new.replicas > spec.replicas:
        return spec.replicas
    target = new_rs_new_replicas(spec, all_rss, new)
    return None if target == new.replicas else target


def cleanup_unhealthy_replicas(olds: Sequence[RSView], max_cleanup: int) -> dict[str, int]:
    """``cleanupUnhealthyReplicas``: first remove old Pods that are not available anyway (oldest
    RS first), at most ``max_cleanup`` in total; they cost no availability."""
    sizes: dict[str, int] = {}
    total = 0
    for rs in by_creation(olds):
        if total >= max_cleanup:
            break
        if rs.replicas == 0 or rs.replicas == rs.effective_available:
            continue
        count = min(max_cleanup - total, rs.replicas - rs.effective_available)
        sizes[rs.name] = rs.replicas - count
        total += count
    return sizes


def scale_down_old_for_rolling_update(
    spec: DeploymentSpec, all_rss: Sequence[RSView], olds: Sequence[RSView]
) -> dict[str, int]:
    """``scaleDownOldReplicaSetsForRollingUpdate``: remove available old Pods while total
    availability stays ≥ replicas − maxUnavailable; oldest RS first."""
    min_available = spec.replicas - spec.max_unavailable_count()
    available = sum(r.effective_available for r in all_rss)
    if available <= min_available:
        return {}
    budget = available - min_available
    sizes: dict[str, int] = {}
    total = 0
    for rs in by_creation(olds):
        if total >= budget:
            break
        if rs.replicas == 0:
            continue
        count = min(rs.replicas, budget - total)
        sizes[rs.name] = rs.replicas - count
        total += count
    return sizes


def reconcile_old_replica_sets(
    spec: DeploymentSpec, new: RSView, olds: Sequence[RSView]
) -> dict[str, int]:
    """``reconcileOldReplicaSets``: how many old Pods may go without breaking maxUnavailable,
    counting the new RS's not-yet-available Pods as unavailable; unhealthy ones go first."""
    olds = active(olds)
    if spec_total(olds) == 0:
        return {}
    all_rss = [*olds, new]
    min_available = spec.replicas - spec.max_unavailable_count()
    new_unavailable = new.replicas - new.effective_available
    max_scaled_down = spec_total(all_rss) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    sizes = cleanup_unhealthy_replicas(olds, max_scaled_down)
    cleaned = [replace(r, replicas=sizes.get(r.name, r.replicas)) for r in olds]
    sizes.update(scale_down_old_for_rolling_update(spec, [*cleaned, new], cleaned))
    return sizes


def rolling_step(spec: DeploymentSpec, new: RSView, olds: Sequence[RSView]) -> dict[str, int]:
    """One sync of ``rolloutRolling``: scale the new RS up if it may grow, else scale old RSs
    down; upstream returns after either, and the next sync (triggered by the RS update) does
    the other."""
    target = reconcile_new_replica_set(spec, [*olds, new], new)
    if target is not None:
        return {new.name: target}
    return reconcile_old_replica_sets(spec, new, olds)


# ---- Recreate: recreate.go ------------------------------------------------------------------


def recreate_step(
    spec: DeploymentSpec, new: RSView | None, olds: Sequence[RSView], old_pods_running: bool
) -> tuple[dict[str, int], bool]:
    """``rolloutRecreate``: scale every old RS to zero, wait until no old Pod runs, then scale
    the new RS to replicas. Returns (sizes, create_new_rs)."""
    scale_down = {r.name: 0 for r in active(olds)}
    if scale_down:
        return scale_down, False
    if old_pods_running:
        return {}, False
    if new is None:
        return {}, True
    if new.replicas != spec.replicas:
        return {new.name: spec.replicas}, False
    return {}, False


# ---- Proportional scaling: sync.go scale() -------------------------------------------------


def is_scaling_event(spec: DeploymentSpec, new: RSView | None, olds: Sequence[RSView]) -> bool:
    """``isScalingEvent``: an active RS was last sized for a different replicas count."""
    return any(
        r.desired_annotation is not None and r.desired_annotation != spec.replicas
        for r in active(all_rss(new, olds))
    )


def find_active_or_latest(new: RSView | None, olds: Sequence[RSView]) -> RSView | None:
    """``deploymentutil.FindActiveOrLatest``: the only active RS, or (none active) the new RS /
    the newest old one; None when several are active."""
    newest_first = list(reversed(by_creation(olds)))
    actives = active(all_rss(new, newest_first))
    if not actives:
        if new is not None:
            return new
        return newest_first[0] if newest_first else None
    return actives[0] if len(actives) == 1 else None


def is_saturated(spec: DeploymentSpec, rs: RSView | None) -> bool:
    """``deploymentutil.IsSaturated``: the new RS alone runs and serves every replica."""
    return (
        rs is not None
        and rs.desired_annotation == spec.replicas
        and rs.replicas == spec.replicas
        and rs.available == spec.replicas
    )


def _rs_fraction(rs: RSView, spec: DeploymentSpec, fallback_total: int) -> int:
    """``getReplicaSetFraction``: this RS's share of the new size, relative to the size (with
    surge) the RS was last scaled for."""
    if spec.replicas == 0:
        return -rs.replicas
    deployment_replicas = spec.replicas + spec.max_surge_count()
    annotated = rs.max_annotation if rs.max_annotation is not None else fallback_total
    if annotated <= 0:
        return 0
    new_size = rs.replicas * deployment_replicas / annotated
    return math.floor(new_size + 0.5) - rs.replicas  # integer.RoundToInt32: half away from 0


def _proportion(rs: RSView, spec: DeploymentSpec, to_add: int, added: int, fallback: int) -> int:
    """``deploymentutil.GetProportion``."""
    if rs.replicas == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _rs_fraction(rs, spec, fallback)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_scale(
    spec: DeploymentSpec, new: RSView | None, olds: Sequence[RSView], status_replicas: int
) -> dict[str, int]:
    """``scale()``: a replicas change mid-rollout is spread over the active RSs in proportion to
    their sizes (largest first; leftovers go to the first), so the ratio of old to new Pods is
    kept. Returns target sizes for every RS it touches (sizes may be unchanged: the caller still
    rewrites the desired/max annotations)."""
    only = find_active_or_latest(new, olds)
    if only is not None:
        return {} if only.replicas == spec.replicas else {only.name: spec.replicas}
    if is_saturated(spec, new):
        return {r.name: 0 for r in active(olds)}
    if not spec.rolling:
        return {}
    rss = active(all_rss(new, olds))
    allowed = spec.replicas + spec.max_surge_count() if spec.replicas > 0 else 0
    to_add = allowed - spec_total(rss)
    if to_add > 0:  # ReplicaSetsBySizeNewer: larger first, then newer first
        rss.sort(key=lambda r: (-r.replicas, -r.created, r.name))
    elif to_add < 0:  # ReplicaSetsBySizeOlder: larger first, then older first
        rss.sort(key=lambda r: (-r.replicas, r.created, r.name))
    sizes: dict[str, int] = {}
    added = 0
    for rs in rss:
        proportion = _proportion(rs, spec, to_add, added, status_replicas) if to_add else 0
        sizes[rs.name] = rs.replicas + proportion
        added += proportion
    if rss and to_add:
        first = rss[0].name
        sizes[first] = max(0, sizes[first] + to_add - added)
    return sizes


# ---- Revisions and history: sync.go, deployment_util.go ------------------------------------


def next_revision(olds: Iterable[RSView]) -> int:
    """``MaxRevision(oldRSs) + 1``: the revision a (re)activated new RS must carry, which is how
    a rollback (``kubectl rollout undo`` patches the template back) bumps the old RS's revision."""
    return max((r.revision for r in olds), default=0) + 1


def revision_history(current: str | None, old_revision: int, history: str | None) -> str | None:
    """``SetNewReplicaSetAnnotations``: when an RS is reused at a new revision, its previous
    revision is appended to ``deployment.kubernetes.io/revision-history``."""
    if current is None or old_revision <= 0:
        return history
    return f"{history},{old_revision}" if history else str(old_revision)


def rs_to_clean_up(spec: DeploymentSpec, olds: Sequence[RSView]) -> list[str]:
    """``cleanupDeployment``: beyond revisionHistoryLimit, delete the lowest revisions among old
    RSs that are scaled to zero, fully synced and not already being deleted."""
    if spec.revision_history_limit is None:
        return []
    alive = [r for r in olds if not r.deleting]
    excess = len(alive) - spec.revision_history_limit
    if excess <= 0:
        return []
    victims = []
    for rs in by_revision(alive)[:excess]:
        if rs.status_replicas != 0 or rs.replicas != 0 or not rs.synced:
            continue
        victims.append(rs.name)
    return victims


_NOT_COPIED = {
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration",
    "deprecated.deployment.rollback.to",
}


def copied_annotations(deployment_annotations: dict[str, str]) -> dict[str, str]:
    """``copyDeploymentAnnotationsToReplicaSet``: the new RS carries the Deployment's
    annotations (e.g. ``kubernetes.io/change-cause``, which ``kubectl rollout history``
    shows), except the controller's own and kubectl's last-applied-configuration."""
    return {k: v for k, v in deployment_annotations.items() if k not in _NOT_COPIED}


_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString: no vowels, no 0/1/3


def template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """``controller.ComputeHash``: a stable short hash of the Pod template (without its own
    pod-template-hash label) and the collision count, encoded like upstream's so it reads
    familiar (``7d9f8c6b5``). Upstream hashes with FNV-32a over a deep dump; any stable hash
    works for us."""
    normalized = json.loads(json.dumps(template))
    labels = (normalized.get("metadata") or {}).get("labels") or {}
    labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    payload = json.dumps(normalized, sort_keys=True, separators=(",", ":")) + f"/{collision_count}"
    number = int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big")
    digits = []
    while True:
        number, rest = divmod(number, len(_SAFE_ALPHABET))
        digits.append(_SAFE_ALPHABET[rest])
        if number == 0:
            break
    return "".join(digits)


def templates_equal_ignoring_hash(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """``deploymentutil.EqualIgnoreHash``: how the controller finds the RS of the current
    template (including an old one, on rollback)."""

    def strip(t: dict[str, Any]) -> str:
        copy = json.loads(json.dumps(t))
        (copy.get("metadata") or {}).get("labels", {}).pop(POD_TEMPLATE_HASH_LABEL, None)
        if copy.get("metadata") is not None and not copy["metadata"].get("labels"):
            copy["metadata"].pop("labels", None)
        return json.dumps(copy, sort_keys=True)

    return strip(a) == strip(b)


# ---- Status and conditions: sync.go calculateStatus, progress.go ---------------------------


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_update: float
    last_transition: float

    def to_json(self, fmt: Any) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastUpdateTime": fmt(self.last_update),
            "lastTransitionTime": fmt(self.last_transition),
        }


@dataclass(frozen=True)
class DeploymentStatus:
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: int = 0
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    collision_count: int | None = None

    def condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


def set_condition(status: DeploymentStatus, cond: Condition) -> DeploymentStatus:
    """``deploymentutil.SetDeploymentCondition``: same status and reason → unchanged; same
    status → keep lastTransitionTime; the set condition moves to the end of the list."""
    current = status.condition(cond.type)
    if current is not None and current.status == cond.status and current.reason == cond.reason:
        return status
    if current is not None and current.status == cond.status:
        cond = replace(cond, last_transition=current.last_transition)
    others = tuple(c for c in status.conditions if c.type != cond.type)
    return replace(status, conditions=(*others, cond))


def remove_condition(status: DeploymentStatus, condition_type: str) -> DeploymentStatus:
    return replace(
        status, conditions=tuple(c for c in status.conditions if c.type != condition_type)
    )


def new_condition(
    condition_type: str, status: str, reason: str, message: str, now: float
) -> Condition:
    return Condition(condition_type, status, reason, message, now, now)


def calculate_status(
    spec: DeploymentSpec,
    new: RSView | None,
    all_rss: Sequence[RSView],
    previous: DeploymentStatus,
    now: float,
) -> DeploymentStatus:
    """``calculateStatus``: replicas / updated / ready from RS status, unavailable from spec
    sizes minus available, and the Available condition (MinimumReplicasAvailable once available
    ≥ replicas − maxUnavailable)."""
    available = sum(r.available for r in all_rss)
    unavailable = max(0, spec_total(all_rss) - available)
    status = replace(
        previous,
        observed_generation=spec.generation,
        replicas=sum(r.status_replicas for r in all_rss),
        updated_replicas=new.status_replicas if new is not None else 0,
        ready_replicas=sum(r.ready for r in all_rss),
        available_replicas=available,
        unavailable_replicas=unavailable,
    )
    if available >= spec.replicas - spec.max_unavailable_count():
        cond = new_condition(
            "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", now
        )
    else:
        cond = new_condition(
            "Available",
            "False",
            MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    return set_condition(status, cond)


def deployment_complete(spec: DeploymentSpec, status: DeploymentStatus) -> bool:
    """``deploymentutil.DeploymentComplete`` (what ``kubectl rollout status`` waits for)."""
    return (
        status.updated_replicas == spec.replicas
        and status.replicas == spec.replicas
        and status.available_replicas == spec.replicas
        and status.observed_generation >= spec.generation
    )


def deployment_progressing(previous: DeploymentStatus, status: DeploymentStatus) -> bool:
    """``deploymentutil.DeploymentProgressing``: more updated, ready or available Pods, or fewer
    old ones, than at the last status write."""
    old_before = previous.replicas - previous.updated_replicas
    old_now = status.replicas - status.updated_replicas
    return (
        status.updated_replicas > previous.updated_replicas
        or old_now < old_before
        or status.ready_replicas > previous.ready_replicas
        or status.available_replicas > previous.available_replicas
    )


def deployment_timed_out(spec: DeploymentSpec, status: DeploymentStatus, now: float) -> bool:
    """``deploymentutil.DeploymentTimedOut``: no progress since the Progressing condition's
    lastUpdateTime for longer than progressDeadlineSeconds."""
    if not spec.has_progress_deadline:
        return False
    cond = status.condition("Progressing")
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    assert spec.progress_deadline_seconds is not None
    return cond.last_update + spec.progress_deadline_seconds < now


def rollout_status(
    spec: DeploymentSpec,
    new: RSView | None,
    all_rss: Sequence[RSView],
    previous: DeploymentStatus,
    deployment_name: str,
    now: float,
) -> DeploymentStatus:
    """``syncRolloutStatus``: calculateStatus plus the Progressing condition (complete →
    NewReplicaSetAvailable; progress → ReplicaSetUpdated with lastUpdateTime bumped; stalled past
    the deadline → False/ProgressDeadlineExceeded)."""
    status = calculate_status(spec, new, all_rss, previous, now)
    if not spec.has_progress_deadline:
        status = remove_condition(status, "Progressing")
    current = previous.condition("Progressing")
    complete_already = (
        status.replicas == status.updated_replicas
        and current is not None
        and current.reason == NEW_RS_AVAILABLE
    )
    if not spec.has_progress_deadline or complete_already:
        return status
    subject = f'ReplicaSet "{new.name}"' if new is not None else f'Deployment "{deployment_name}"'
    if deployment_complete(spec, status):
        cond = new_condition(
            "Progressing", "True", NEW_RS_AVAILABLE, f"{subject} has successfully progressed.", now
        )
        return set_condition(status, cond)
    if deployment_progressing(previous, status):
        cond = new_condition("Progressing", "True", RS_UPDATED, f"{subject} is progressing.", now)
        if current is not None and current.status == "True":
            cond = replace(cond, last_transition=current.last_transition)
        # Not set_condition: the same reason must still bump lastUpdateTime (upstream's comment).
        status = remove_condition(status, "Progressing")
        return replace(status, conditions=(*status.conditions, cond))
    if deployment_timed_out(spec, status, now):
        cond = new_condition(
            "Progressing", "False", TIMED_OUT, f"{subject} has timed out progressing.", now
        )
        return set_condition(status, cond)
    return status


def seconds_until_deadline(
    spec: DeploymentSpec, status: DeploymentStatus, now: float
) -> float | None:
    """``requeueStuckDeployment``: when to look again so a stalled rollout is marked timed out
    without any event arriving."""
    cond = status.condition("Progressing")
    if (
        not spec.has_progress_deadline
        or cond is None
        or cond.reason in (NEW_RS_AVAILABLE, TIMED_OUT)
        or deployment_complete(spec, status)
    ):
        return None
    assert spec.progress_deadline_seconds is not None
    return max(0.0, cond.last_update + spec.progress_deadline_seconds - now) + 0.01


def paused_condition(
    spec: DeploymentSpec, status: DeploymentStatus, now: float
) -> DeploymentStatus:
    """``checkPausedConditions``: Progressing=Unknown DeploymentPaused while paused, and
    DeploymentResumed when unpaused, so a paused rollout never times out."""
    if not spec.has_progress_deadline:
        return status
    cond = status.condition("Progressing")
    if cond is not None and cond.reason == TIMED_OUT:
        return status
    paused_now = cond is not None and cond.reason == PAUSED
    if spec.paused and not paused_now:
        return set_condition(
            status, new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", now)
        )
    if not spec.paused and paused_now:
        return set_condition(
            status, new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", now)
        )
    return status
