"""The Deployment controller adapter: turns Deployment / ReplicaSet objects into the value
types of ``rollout.py``, follows upstream's ``syncDeployment`` flow, and writes the decisions
back (new RS creation, RS scaling with desired/max-replicas annotations, revision annotations,
history cleanup, status)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

from kubewire import parse_time
from localcluster.apiclient import ApiClient, ApiError, JsonObject
from localcluster.controllers import rollout as ro
from localcluster.controllers.informer import Informers, WorkQueue, run_worker
from localcluster.events import EventRecorder
from localcluster.objects import (
    ObjectKey,
    annotations_of,
    controller_ref,
    format_time,
    is_controlled_by,
    is_deleting,
    key_of,
    owner_reference,
    pod_is_active,
)


def spec_of(deployment: JsonObject) -> ro.DeploymentSpec:
    spec = deployment.get("spec") or {}
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    return ro.DeploymentSpec(
        replicas=int(spec.get("replicas", 1)),
        strategy=str(strategy.get("type") or "RollingUpdate"),
        max_surge=rolling.get("maxSurge", "25%"),
        max_unavailable=rolling.get("maxUnavailable", "25%"),
        min_ready_seconds=int(spec.get("minReadySeconds") or 0),
        progress_deadline_seconds=spec.get("progressDeadlineSeconds", 600),
        revision_history_limit=spec.get("revisionHistoryLimit", 10),
        paused=bool(spec.get("paused")),
        generation=int(deployment.get("metadata", {}).get("generation") or 0),
    )


def _int_annotation(annotations: dict[str, str], name: str) -> int | None:
    try:
        return int(annotations[name])
    except (KeyError, ValueError):
        return None


def view_of(rs: JsonObject) -> ro.RSView:
    meta, status = rs.get("metadata") or {}, rs.get("status") or {}
    annotations = annotations_of(rs)
    return ro.RSView(
        name=str(meta.get("name")),
        replicas=int((rs.get("spec") or {}).get("replicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        created=parse_time(meta.get("creationTimestamp")) or 0.0,
        revision=_int_annotation(annotations, ro.REVISION_ANNOTATION) or 0,
        desired_annotation=_int_annotation(annotations, ro.DESIRED_REPLICAS_ANNOTATION),
        max_annotation=_int_annotation(annotations, ro.MAX_REPLICAS_ANNOTATION),
        deleting=is_deleting(rs),
        synced=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
    )


def status_from_json(status: JsonObject) -> ro.DeploymentStatus:
    conditions = tuple(
        ro.Condition(
            type=str(c.get("type")),
            status=str(c.get("status")),
            reason=str(c.get("reason") or ""),
            message=str(c.get("message") or ""),
            last_update=parse_time(c.get("lastUpdateTime")) or 0.0,
            last_transition=parse_time(c.get("lastTransitionTime")) or 0.0,
        )
        for c in status.get("conditions") or []
    )
    return ro.DeploymentStatus(
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        unavailable_replicas=int(status.get("unavailableReplicas") or 0),
        conditions=conditions,
        collision_count=status.get("collisionCount"),
    )


def status_to_json(status: ro.DeploymentStatus) -> JsonObject:
    """Upstream's DeploymentStatus wire form: counts are omitempty."""
    counts = {
        "observedGeneration": status.observed_generation,
        "replicas": status.replicas,
        "updatedReplicas": status.updated_replicas,
        "readyReplicas": status.ready_replicas,
        "availableReplicas": status.available_replicas,
        "unavailableReplicas": status.unavailable_replicas,
    }
    result: JsonObject = {k: v for k, v in counts.items() if v}
    if status.conditions:
        result["conditions"] = [c.to_json(format_time) for c in status.conditions]
    if status.collision_count is not None:
        result["collisionCount"] = status.collision_count
    return result


class DeploymentController:
    name = "deployment"

    def __init__(self, client: ApiClient, informers: Informers, events: EventRecorder) -> None:
        self.client = client
        self.events = events
        self.deployments = informers["deployments"]
        self.replicasets = informers["replicasets"]
        self.pods = informers["pods"]
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.deployments.add_handler(self._on_deployment)
        self.replicasets.add_handler(self._on_owned)
        self.pods.add_handler(self._on_pod)

    def _on_deployment(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        obj = new or old
        assert obj is not None
        self.queue.add(key_of(obj))

    def _on_owned(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        obj = new or old
        assert obj is not None
        ref = controller_ref(obj)
        if ref is not None and ref.get("kind") == "Deployment":
            self.queue.add((str(obj["metadata"].get("namespace") or ""), str(ref["name"])))

    def _on_pod(self, kind: str, old: JsonObject | None, new: JsonObject | None) -> None:
        """Recreate waits for old Pods to be gone: their deletion must wake the Deployment."""
        if kind != "DELETED" or old is None:
            return
        ref = controller_ref(old)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.get(str(old["metadata"].get("namespace") or ""), str(ref["name"]))
        if rs is not None:
            self._on_owned("MODIFIED", None, rs)

    async def run(self) -> None:
        await run_worker(self.name, self.queue, self.reconcile)

    # ---- sync ---------------------------------------------------------------------------

    def _owned_rss(self, d: JsonObject) -> list[JsonObject]:
        ns = d["metadata"].get("namespace") or ""
        return [rs for rs in self.replicasets.in_namespace(ns) if is_controlled_by(rs, d)]

    @staticmethod
    def _split(
        d: JsonObject, rss: Sequence[JsonObject]
    ) -> tuple[JsonObject | None, list[JsonObject]]:
        """``FindNewReplicaSet`` (oldest RS whose template equals the Deployment's, ignoring
        the hash label) and ``FindOldReplicaSets`` (the rest)."""
        template = (d.get("spec") or {}).get("template") or {}
        matching = sorted(
            (
                rs
                for rs in rss
                if ro.templates_equal_ignoring_hash(
                    (rs.get("spec") or {}).get("template") or {}, template
                )
            ),
            key=lambda rs: (
                parse_time(rs["metadata"].get("creationTimestamp")) or 0.0,
                rs["metadata"]["name"],
            ),
        )
        new = matching[0] if matching else None
        return new, [rs for rs in rss if rs is not new]

    async def reconcile(self, key: ObjectKey) -> float | None:
        d = self.deployments.cache.get(key)
        if d is None:
            return None
        d = copy.deepcopy(d)
        now = time.time()
        spec = spec_of(d)
        previous = status_from_json(d.get("status") or {})
        new_rs, old_rss = self._split(d, self._owned_rss(d))
        if is_deleting(d):
            await self._write_status(
                d,
                ro.calculate_status(
                    spec, self._view(new_rs), self._views(new_rs, old_rss), previous, now
                ),
            )
            return None

        paused_status = ro.paused_condition(spec, previous, now)
        if paused_status != previous:
            await self._write_status(d, paused_status)
            return None
        new_view, old_views = self._view(new_rs), [view_of(rs) for rs in old_rss]
        if spec.paused or ro.is_scaling_event(spec, new_view, old_views):
            return await self._sync_scale(d, spec, previous, new_rs, old_rss, now)
        if spec.rolling:
            return await self._rollout_rolling(d, spec, previous, new_rs, old_rss, now)
        return await self._rollout_recreate(d, spec, previous, new_rs, old_rss, now)

    @staticmethod
    def _view(rs: JsonObject | None) -> ro.RSView | None:
        return view_of(rs) if rs is not None else None

    @staticmethod
    def _views(new: JsonObject | None, olds: Sequence[JsonObject]) -> list[ro.RSView]:
        return [view_of(rs) for rs in ro.all_rss(new, olds)]

    async def _sync_scale(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        previous: ro.DeploymentStatus,
        new_rs: JsonObject | None,
        old_rss: list[JsonObject],
        now: float,
    ) -> float | None:
        """``sync``: proportional scaling (paused or a replicas change), no rollout step."""
        if new_rs is not None:
            new_rs, previous = await self._sync_revision(d, spec, new_rs, old_rss)
        new_view = self._view(new_rs)
        old_views = [view_of(rs) for rs in old_rss]
        sizes = ro.proportional_scale(spec, new_view, old_views, previous.replicas)
        new_rs, old_rss = await self._apply_sizes(d, spec, new_rs, old_rss, sizes)
        if spec.paused:
            await self._cleanup(spec, old_rss)
        status = ro.calculate_status(
            spec, self._view(new_rs), self._views(new_rs, old_rss), previous, now
        )
        await self._write_status(d, status)
        return None

    async def _rollout_rolling(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        previous: ro.DeploymentStatus,
        new_rs: JsonObject | None,
        old_rss: list[JsonObject],
        now: float,
    ) -> float | None:
        """``rolloutRolling``: create the new RS if needed, then one scaling step per sync."""
        if new_rs is None:
            await self._create_new_rs(d, spec, previous, old_rss, now)
            return None
        new_rs, previous = await self._sync_revision(d, spec, new_rs, old_rss)
        sizes = ro.rolling_step(spec, view_of(new_rs), [view_of(rs) for rs in old_rss])
        return await self._sync_rollout_status(d, spec, previous, new_rs, old_rss, sizes, now)

    async def _rollout_recreate(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        previous: ro.DeploymentStatus,
        new_rs: JsonObject | None,
        old_rss: list[JsonObject],
        now: float,
    ) -> float | None:
        """``rolloutRecreate``: all old Pods gone before any new one starts."""
        if new_rs is not None:
            new_rs, previous = await self._sync_revision(d, spec, new_rs, old_rss)
        old_uids = {rs["metadata"]["uid"] for rs in old_rss}
        ns = d["metadata"].get("namespace") or ""
        old_pods_running = any(
            (ref := controller_ref(p)) is not None
            and ref.get("uid") in old_uids
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            for p in self.pods.in_namespace(ns)
        )
        sizes, create = ro.recreate_step(
            spec, self._view(new_rs), [view_of(rs) for rs in old_rss], old_pods_running
        )
        if create:
            await self._create_new_rs(d, spec, previous, old_rss, now)
            return None
        return await self._sync_rollout_status(d, spec, previous, new_rs, old_rss, sizes, now)

    async def _sync_rollout_status(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        previous: ro.DeploymentStatus,
        new_rs: JsonObject | None,
        old_rss: list[JsonObject],
        sizes: dict[str, int],
        now: float,
    ) -> float | None:
        """Applies this sync's ``sizes``, then ``syncRolloutStatus`` (+ ``cleanupDeployment``
        once complete and nothing was scaled in this sync); returns when to look again for the
        progress deadline."""
        new_rs, old_rss = await self._apply_sizes(d, spec, new_rs, old_rss, sizes)
        new_view = self._view(new_rs)
        all_views = self._views(new_rs, old_rss)
        status = ro.rollout_status(spec, new_view, all_views, previous, d["metadata"]["name"], now)
        if not sizes and ro.deployment_complete(spec, status):
            await self._cleanup(spec, old_rss)
        await self._write_status(d, status)
        return ro.seconds_until_deadline(spec, status, now)

    # ---- writes -------------------------------------------------------------------------

    async def _apply_sizes(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        new_rs: JsonObject | None,
        old_rss: list[JsonObject],
        sizes: dict[str, int],
    ) -> tuple[JsonObject | None, list[JsonObject]]:
        """Scales the named RSs; returns (new, olds) as they are after the writes."""
        by_name = {rs["metadata"]["name"]: rs for rs in ro.all_rss(new_rs, old_rss)}
        for name, size in sizes.items():
            by_name[name] = await self._scale(d, by_name[name], size, spec)
        new_after = by_name[new_rs["metadata"]["name"]] if new_rs is not None else None
        return new_after, [by_name[rs["metadata"]["name"]] for rs in old_rss]

    async def _write_status(self, d: JsonObject, status: ro.DeploymentStatus) -> None:
        """Writes the status if it changed; ``d`` (this sync's working copy) takes the result,
        so later writes in the same sync carry the new resourceVersion."""
        wanted = status_to_json(status)
        if wanted == (d.get("status") or {}):
            return
        updated = copy.deepcopy(d)
        updated["status"] = wanted
        result = await self.client.update(
            "deployments", updated, d["metadata"].get("namespace"), subresource="status"
        )
        d["metadata"], d["status"] = result["metadata"], result.get("status") or {}

    async def _scale(
        self, d: JsonObject, rs: JsonObject, size: int, spec: ro.DeploymentSpec
    ) -> JsonObject:
        """``scaleReplicaSet``: new size plus the desired/max-replicas annotations that later
        tell a replicas change (proportional scaling) from a rollout step."""
        annotations = {
            ro.DESIRED_REPLICAS_ANNOTATION: str(spec.replicas),
            ro.MAX_REPLICAS_ANNOTATION: str(spec.replicas + spec.max_surge_count()),
        }
        current = rs["metadata"].get("annotations") or {}
        if rs["spec"].get("replicas") == size and all(
            current.get(k) == v for k, v in annotations.items()
        ):
            return rs
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = size
        updated["metadata"]["annotations"] = {**current, **annotations}
        result: JsonObject = await self.client.update(
            "replicasets", updated, rs["metadata"].get("namespace")
        )
        before = int(rs["spec"].get("replicas") or 0)
        if before != size:
            direction = "up" if size > before else "down"
            message = (
                f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {size}"
            )
            self.events.emit(d, "ScalingReplicaSet", message)
        return result

    async def _sync_revision(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        new_rs: JsonObject,
        old_rss: Sequence[JsonObject],
    ) -> tuple[JsonObject, ro.DeploymentStatus]:
        """``getNewReplicaSet`` for an existing RS: bump its revision to MaxRevision(old)+1 if
        it is lower (rollback), sync minReadySeconds, mirror the revision on the Deployment's
        annotation, and add Progressing/FoundNewReplicaSet if there is no Progressing
        condition yet. ``d`` is updated in place; returns the RS as written and the
        Deployment's status as it is after these writes."""
        new_revision = ro.next_revision(view_of(rs) for rs in old_rss)
        annotations = annotations_of(new_rs)
        current = int(annotations.get(ro.REVISION_ANNOTATION) or 0)
        changed = False
        updated = copy.deepcopy(new_rs)
        if current < new_revision:
            history = ro.revision_history(
                annotations.get(ro.REVISION_ANNOTATION),
                current,
                annotations.get(ro.REVISION_HISTORY_ANNOTATION),
            )
            annotations[ro.REVISION_ANNOTATION] = str(new_revision)
            if history:
                annotations[ro.REVISION_HISTORY_ANNOTATION] = history
            updated["metadata"]["annotations"] = annotations
            changed = True
        wanted = {**annotations_of(updated), **ro.copied_annotations(annotations_of(d))}
        if wanted != annotations_of(updated):
            updated["metadata"]["annotations"] = wanted
            changed = True
        if int(updated["spec"].get("minReadySeconds") or 0) != spec.min_ready_seconds:
            updated["spec"]["minReadySeconds"] = spec.min_ready_seconds
            changed = True
        if changed:
            updated = await self.client.update(
                "replicasets", updated, new_rs["metadata"].get("namespace")
            )
        await self._set_deployment_revision(
            d, annotations_of(updated).get(ro.REVISION_ANNOTATION, "1")
        )
        previous = status_from_json(d.get("status") or {})
        if spec.has_progress_deadline and previous.condition("Progressing") is None:
            message = f'Found new replica set "{updated["metadata"]["name"]}"'
            found = ro.new_condition("Progressing", "True", ro.FOUND_NEW_RS, message, time.time())
            await self._write_status(d, ro.set_condition(previous, found))
        return updated, status_from_json(d.get("status") or {})

    async def _set_deployment_revision(self, d: JsonObject, revision: str) -> None:
        if annotations_of(d).get(ro.REVISION_ANNOTATION) == revision:
            return
        patch = {"metadata": {"annotations": {ro.REVISION_ANNOTATION: revision}}}
        patched = await self.client.patch(
            "deployments", d["metadata"]["name"], patch, "merge", d["metadata"].get("namespace")
        )
        d["metadata"] = patched["metadata"]

    @staticmethod
    def _new_replicaset(
        d: JsonObject, spec: ro.DeploymentSpec, old_rss: Sequence[JsonObject]
    ) -> tuple[JsonObject, int]:
        """(the new ReplicaSet object, its revision): ``getNewReplicaSet``'s object, name
        ``<deployment>-<hash>``, the hash as label and selector term, revision
        MaxRevision(old)+1, initial size from NewRSNewReplicas."""
        template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        pod_hash = ro.template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[ro.POD_TEMPLATE_HASH_LABEL] = (
            pod_hash
        )
        selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[ro.POD_TEMPLATE_HASH_LABEL] = pod_hash
        old_views = [view_of(rs) for rs in old_rss]
        revision = ro.next_revision(old_views)
        placeholder = ro.RSView("new", 0)
        replicas = ro.new_rs_new_replicas(spec, [*old_views, placeholder], placeholder)
        rs: JsonObject = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{d['metadata']['name']}-{pod_hash}",
                "namespace": d["metadata"].get("namespace"),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    **ro.copied_annotations(annotations_of(d)),
                    ro.REVISION_ANNOTATION: str(revision),
                    ro.DESIRED_REPLICAS_ANNOTATION: str(spec.replicas),
                    ro.MAX_REPLICAS_ANNOTATION: str(spec.replicas + spec.max_surge_count()),
                },
                "ownerReferences": [owner_reference(d, "Deployment", "apps/v1")],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": spec.min_ready_seconds,
                "selector": selector,
                "template": template,
            },
        }
        return rs, revision

    async def _create_new_rs(
        self,
        d: JsonObject,
        spec: ro.DeploymentSpec,
        previous: ro.DeploymentStatus,
        old_rss: Sequence[JsonObject],
        now: float,
    ) -> None:
        """``getNewReplicaSet`` creating: create the new ReplicaSet (a name collision goes to
        ``_handle_collision``), record its revision on the Deployment, and set
        Progressing=True NewReplicaSetCreated."""
        rs, revision = self._new_replicaset(d, spec, old_rss)
        replicas = rs["spec"]["replicas"]
        try:
            created = await self.client.create("replicasets", rs, d["metadata"].get("namespace"))
            self.events.emit(
                d,
                "ScalingReplicaSet",
                f"Scaled up replica set {rs['metadata']['name']} from 0 to {replicas}",
            )
        except ApiError as exc:
            if exc.code != 409 or exc.reason != "AlreadyExists":
                raise
            await self._handle_collision(d, rs)
            return
        await self._set_deployment_revision(d, str(revision))
        if spec.has_progress_deadline:
            cond = ro.new_condition(
                "Progressing",
                "True",
                ro.NEW_RS_CREATED,
                f'Created new replica set "{created["metadata"]["name"]}"',
                now,
            )
            status = ro.set_condition(previous, cond)
            await self._write_status(d, status)

    async def _handle_collision(self, d: JsonObject, rs: JsonObject) -> None:
        """An RS of that name exists: if it is ours with the same template the cache is just
        behind (retry later); otherwise bump collisionCount so the next hash differs."""
        existing = await self.client.get(
            "replicasets", rs["metadata"]["name"], d["metadata"].get("namespace")
        )
        ours = is_controlled_by(existing, d) and ro.templates_equal_ignoring_hash(
            existing["spec"]["template"], d["spec"]["template"]
        )
        if ours:
            raise ApiError(409, "Conflict", "replicaset cache is behind")
        status = copy.deepcopy(d.get("status") or {})
        status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
        updated = copy.deepcopy(d)
        updated["status"] = status
        await self.client.update(
            "deployments", updated, d["metadata"].get("namespace"), subresource="status"
        )

    async def _cleanup(self, spec: ro.DeploymentSpec, old_rss: Sequence[JsonObject]) -> None:
        """``cleanupDeployment``: delete RSs beyond revisionHistoryLimit that have no Pods."""
        by_name = {rs["metadata"]["name"]: rs for rs in old_rss}
        owners: dict[str, set[object]] = {}  # namespace -> controller uids of its active Pods
        for name in ro.rs_to_clean_up(spec, [view_of(rs) for rs in old_rss]):
            rs = by_name[name]
            ns = rs["metadata"].get("namespace") or ""
            if ns not in owners:
                owners[ns] = self._active_pod_owners(ns)
            if rs["metadata"].get("uid") in owners[ns]:
                continue
            # The pod cache may move while the delete is awaited: rescan for the next RS.
            owners.clear()
            try:
                await self.client.delete("replicasets", name, rs["metadata"].get("namespace"))
            except ApiError as exc:
                if exc.code != 404:
                    raise

    def _active_pod_owners(self, namespace: str) -> set[object]:
        """The controller-reference uids of the active Pods in ``namespace``."""
        return {
            ref.get("uid")
            for p in self.pods.in_namespace(namespace)
            if pod_is_active(p) and (ref := controller_ref(p)) is not None
        }
