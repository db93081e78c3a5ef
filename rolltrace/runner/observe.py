"""``rolltrace observe``: rolltrace's load, capture and watch against an existing Service while
the user's own tooling changes the cluster (``kubectl rollout``, Helm, Argo CD, Flagger,
``kubectl drain``).

An observation is an ``Experiment`` whose two cluster-changing steps are replaced by reads:
``_prepare`` reads the Service and the Deployment instead of applying manifests, ``_disrupt``
waits for the user's rollout instead of triggering one. Every other phase (watch, captures,
load, cool-down, run.json, analysis) is the runner's own, so an observed run is analyzed and
reported exactly like a ``rolltrace run``. Nothing here writes to the API server: the Kubernetes
calls are reads, lists and watches only (the e2e test audits every request it sends).

A rollout of the followed Deployment (``--until-rollout NAME``) *starts* when its Pod template
differs from the one seen when the observation began (``kubectl rollout restart`` changes an
annotation, Helm or ``kubectl set image`` the spec, ``kubectl rollout undo`` puts an older
template back; each makes a new ReplicaSet), or at once when Pods of an older revision are still
counted as the observation begins (a rollout already under way). It *completes* as ``kubectl
rollout status`` decides (the controller has observed the new generation; updated == replicas ==
available == desired), and the observation ends once no Pod of the Deployment is terminating. A
scale change alone bumps the generation without a new template: it is noted, not a rollout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubewire import RolloutState, desired_replicas, template_fingerprint
from loadgen.runner import LoadRunner
from rolltrace.runner.experiment import (
    Backend,
    Experiment,
    Progress,
    Session,
    Target,
    termination_wait_s,
)
from rolltrace.runner.kube import Kube, KubeError
from rolltrace.scenario import Scenario

#: how often the Deployment and its Pods are read: the rollout's phases are stamped at the poll
#: that saw them (the watch in events.jsonl has the precise times of every object change)
POLL_INTERVAL_S = 0.5
# Kubernetes API defaults for fields a manifest may leave out (core/v1 Probe, apps/v1 Deployment)
_PROBE_DEFAULTS = {"periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                   "failureThreshold": 3, "initialDelaySeconds": 0}  # fmt: skip
_DEFAULT_GRACE_S = 30
_DEFAULT_PROGRESS_DEADLINE_S = 600


class RolloutPhase(StrEnum):
    """Where the followed Deployment's rollout is, as the observation saw it."""

    WAITING = "waiting"  # no rollout has started since the observation began
    ROLLING = "rolling"  # started, not complete
    COMPLETE = "complete"  # complete in kubectl's sense; old Pods may still be terminating
    SETTLED = "settled"  # complete and no Pod of the Deployment is terminating


#: the run.json phase each rollout phase is stamped as (the names every run uses)
RUN_PHASE = {RolloutPhase.ROLLING: "rollout_trigger", RolloutPhase.COMPLETE: "rollout_complete",
             RolloutPhase.SETTLED: "old_pods_gone"}  # fmt: skip


@dataclass(frozen=True)
class DeploymentSnapshot:
    """One read of the Deployment and its Pods: what decides whether a rollout started or ended."""

    state: RolloutState
    desired: int  # spec.replicas
    template: str  # fingerprint of spec.template: a new one means a new ReplicaSet
    terminating: int  # Pods of the Deployment with a deletionTimestamp


def snapshot_of(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> DeploymentSnapshot:
    """The snapshot of a Deployment and its Pods, from their API JSON."""
    return DeploymentSnapshot(
        state=RolloutState.from_json(deployment),
        desired=desired_replicas(deployment),
        template=template_fingerprint(deployment),
        terminating=sum(1 for p in pods if (p.get("metadata") or {}).get("deletionTimestamp")),
    )


@dataclass
class RolloutTracker:
    """Follows one Deployment from a baseline snapshot; pure (snapshots in, phases out)."""

    baseline: DeploymentSnapshot
    phase: RolloutPhase = RolloutPhase.WAITING
    start_signal: str | None = None
    notes: list[str] = field(default_factory=list)
    _desired: int = -1

    def __post_init__(self) -> None:
        self._desired = self.baseline.desired

    def update(self, snapshot: DeploymentSnapshot) -> list[RolloutPhase]:
        """The phases this snapshot enters, in order (several when polls are far apart)."""
        self._note_scale(snapshot)
        entered = []
        if self.phase is RolloutPhase.WAITING:
            self.start_signal = self._start_signal(snapshot)
            if self.start_signal is None:
                return []
            entered.append(RolloutPhase.ROLLING)
        if RolloutPhase.ROLLING in (self.phase, *entered) and snapshot.state.complete(
            snapshot.desired
        ):
            entered.append(RolloutPhase.COMPLETE)
        if RolloutPhase.COMPLETE in (self.phase, *entered) and snapshot.terminating == 0:
            entered.append(RolloutPhase.SETTLED)
        self.phase = entered[-1] if entered else self.phase
        return entered

    def _start_signal(self, snapshot: DeploymentSnapshot) -> str | None:
        if snapshot.template != self.baseline.template:
            return "pod template changed (new ReplicaSet)"
        old = self.baseline.state
        if old.updated < old.replicas:
            return "already under way when the observation began"
        return None

    def _note_scale(self, snapshot: DeploymentSnapshot) -> None:
        if snapshot.desired != self._desired:
            self.notes.append(
                f"scaled from {self._desired} to {snapshot.desired} replicas "
                "(a scale change alone is not a rollout)"
            )
            self._desired = snapshot.desired


@dataclass(frozen=True)
class ObserveOptions:
    """What to observe and when to stop (the ``rolltrace observe`` options)."""

    service: str
    #: the Deployment whose rollout ends the observation; None: only the duration ends it (the
    #: Deployment behind the Service is then followed when there is exactly one)
    until_rollout: str | None
    #: the longest the observation lasts (waiting for the rollout included)
    duration_s: float
    #: the rollout must complete within this long of its start
    deadline_s: float
    #: send the load here instead of the Service's ``status.loadBalancer`` address
    lb: tuple[str, int] | None = None


class Observation(Experiment):
    """An experiment that changes nothing: the user's tooling does the rollout."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        backend: Backend,
        options: ObserveOptions,
        progress: Progress | None = None,
        analyze: bool = True,
    ) -> None:
        super().__init__(scenario, run_dir, backend, progress, analyze)
        self.options = options
        self.tracker: RolloutTracker | None = None
        self.followed: str | None = None  # the Deployment whose rollout phases are stamped
        self.last_state: RolloutState | None = None  # its last poll's status
        #: what ended the observation: rollout, duration, deadline, or stopped early (Ctrl-C,
        #: an error; run.json's status_reasons say which)
        self.ended_by = "stopped early"

    def _prepare(self, session: Session, kube: Kube) -> Target:
        """Read the Service and the followed Deployment; the scenario recorded in run.json takes
        the Deployment's probes, preStop, grace period and strategy (attribution's windows
        and the report's advice come from them)."""
        service = _read(kube, "Service", self.options.service)
        name = self.options.until_rollout or self._deployment_behind(kube, service)
        deployment = _read(kube, "Deployment", name) if name is not None else None
        self.scenario = observed_scenario(self.scenario, service, deployment)
        if name is None:
            return Target(None, self.options.service, None)
        workload = kube.workload(name)
        self.tracker = RolloutTracker(_snapshot(kube, name, workload.pod_selector))
        self.followed = name
        return Target(name, self.options.service, workload)

    def _deployment_behind(self, kube: Kube, service: dict[str, Any]) -> str | None:
        """With ``--duration`` alone, the one Deployment whose Pods the Service selects, so
        that a rollout during the observation still gets its phases; None (and a reason in
        run.json) when there is none or several (blue/green, canary)."""
        deployments = _as_json(kube, kube.apps.list_namespaced_deployment(kube.namespace).items)
        names = deployments_selected(service, deployments)
        if len(names) == 1:
            return names[0]
        self.reasons.append(
            f"no rollout followed: {len(names)} Deployments have Pods the Service "
            f"{self.options.service} selects ({', '.join(names) or 'none'}); name one with "
            "--until-rollout"
        )
        return None

    def _lb_address(self, kube: Kube, service_name: str) -> tuple[str, int]:
        if self.options.lb is not None:
            return self.options.lb
        return super()._lb_address(kube, service_name)

    def _load_budget_s(self) -> float:
        return self.options.duration_s + self.scenario.load.after_s

    def _disrupt(self, kube: Kube, target: Target, load: LoadRunner) -> None:
        """Wait for the followed rollout to start, complete and settle, or for the duration."""
        ends = time.monotonic() + self.options.duration_s
        if self.tracker is None or target.workload is None:
            self._wait(self.options.duration_s, load)
            self.ended_by = "duration"
            return
        tracker, selector = self.tracker, target.workload.pod_selector
        name = str(target.deployment)

        def poll() -> RolloutPhase:
            snapshot = _snapshot(kube, name, selector)
            for phase in tracker.update(snapshot):
                self._mark(RUN_PHASE[phase])
            self._tick(load, snapshot.state)
            self.last_state = snapshot.state
            return tracker.phase

        if self.options.until_rollout is None:  # the duration ends it; phases if a rollout ran
            self._poll_until(poll, RolloutPhase.SETTLED, ends)
            self._wait(ends - time.monotonic(), load)
            self.ended_by = "duration"
            if tracker.phase in (RolloutPhase.ROLLING, RolloutPhase.COMPLETE):
                self.reasons.append(f"the rollout of Deployment {name} was {tracker.phase} when "
                                    "the observation's duration ended")  # fmt: skip
            return
        self._until_settled(poll, name, ends)

    def _until_settled(self, poll: Callable[[], RolloutPhase], name: str, ends: float) -> None:
        """Until the rollout has started (by ``ends``), completed (within its deadline) and its
        old Pods are gone (within the grace period); KubeError says which did not happen."""
        if not self._poll_until(poll, RolloutPhase.ROLLING, ends):
            self.ended_by = "duration"
            raise KubeError(
                f"no rollout of Deployment {name} started in the {self.options.duration_s:g} s "
                "observed (a scale change or a drain is not a rollout: observe those with "
                "--duration alone)"
            )
        deadline = min(ends, time.monotonic() + self.options.deadline_s)
        if not self._poll_until(poll, RolloutPhase.COMPLETE, deadline):
            self.ended_by = "deadline"
            raise KubeError(
                f"Deployment {name} not rolled out {self.options.deadline_s:g} s after its "
                f"rollout started (or by the end of the observation): {self.last_state}"
            )
        wait_s = termination_wait_s(self.scenario.pod.termination_grace_period_s)
        if not self._poll_until(poll, RolloutPhase.SETTLED, time.monotonic() + wait_s):
            self.reasons.append(f"old Pod(s) still terminating {wait_s:g} s after the rollout")
            self._mark("old_pods_gone")
        self.ended_by = "rollout"

    @staticmethod
    def _poll_until(poll: Callable[[], RolloutPhase], goal: RolloutPhase, until: float) -> bool:
        """Poll until the rollout reaches ``goal`` (True) or the monotonic time ``until`` (False)."""
        order = list(RolloutPhase)
        while True:
            if order.index(poll()) >= order.index(goal):
                return True
            if time.monotonic() > until:
                return False
            time.sleep(POLL_INTERVAL_S)

    def _scenario_record(self) -> dict[str, Any]:
        """The observed settings: the demo app's behaviour and the rollout trigger do not apply
        to a Deployment rolltrace neither made nor rolled out."""
        record = self.scenario.model_dump(mode="json", exclude={"workload": {"app"}})
        record["rollout"] = {"deadline_s": self.options.deadline_s}
        return record

    def _meta_extra(self) -> dict[str, Any]:
        tracker = self.tracker
        return {
            "observe": {
                "service": self.options.service,
                "deployment": self.followed,
                "until": "rollout" if self.options.until_rollout else "duration",
                "duration_s": self.options.duration_s,
                "deadline_s": self.options.deadline_s,
                "lb_override": self.options.lb is not None,
                "ended_by": self.ended_by,
                "rollout_phase": str(tracker.phase) if tracker else None,
                "start_signal": tracker.start_signal if tracker else None,
                "notes": list(tracker.notes) if tracker else [],
                "poll_interval_s": POLL_INTERVAL_S,
            }
        }


def deployments_selected(service: dict[str, Any], deployments: list[dict[str, Any]]) -> list[str]:
    """Names of the Deployments whose Pod template the Service's selector matches."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return []
    names = []
    for deployment in deployments:
        template = (deployment.get("spec") or {}).get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if all(labels.get(key) == value for key, value in selector.items()):
            names.append(str(deployment["metadata"]["name"]))
    return sorted(names)


def _read(kube: Kube, kind: str, name: str) -> dict[str, Any]:
    """An object as the API returns it (JSON field names), or a KubeError naming it."""
    read = {"Service": kube.core.read_namespaced_service,
            "Deployment": kube.apps.read_namespaced_deployment}[kind]  # fmt: skip
    try:
        obj = read(name, kube.namespace)
    except ApiException as exc:
        raise KubeError(f"cannot read {kind} {kube.namespace}/{name}: {exc.reason}") from None
    result: dict[str, Any] = _as_json(kube, obj)
    return result


def _as_json(kube: Kube, model: Any) -> Any:
    """A client model as the API's JSON (camelCase names), which the pure functions here read."""
    client: Any = kube.api_client  # the generated client is untyped
    return client.sanitize_for_serialization(model)


def _snapshot(kube: Kube, name: str, pod_selector: str) -> DeploymentSnapshot:
    deployment = _read(kube, "Deployment", name)
    pods = kube.core.list_namespaced_pod(kube.namespace, label_selector=pod_selector)
    return snapshot_of(deployment, _as_json(kube, pods.items))


def observed_scenario(
    base: Scenario, service: dict[str, Any], deployment: dict[str, Any] | None
) -> Scenario:
    """``base`` (load settings, cluster) with what the cluster's own objects say: the Service's
    port and traffic policy, and the Deployment's size, image, port, probes, preStop, grace
    period and strategy."""
    raw = base.model_dump()
    service_spec = service.get("spec") or {}
    ports = service_spec.get("ports") or [{}]
    raw["service"] |= {
        "external_traffic_policy": service_spec.get("externalTrafficPolicy") or "Cluster",
        "port": int(ports[0].get("port") or base.service.port),
    }
    if deployment is not None:
        spec = deployment.get("spec") or {}
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        container = (pod_spec.get("containers") or [{}])[0]
        raw["workload"] |= {
            "replicas": max(int(spec.get("replicas", 1)), 1),  # the model's floor: scaled to 0
            "image": str(container.get("image") or base.workload.image),
            "container_port": _target_port(ports[0].get("targetPort"), container)
            or base.workload.container_port,
        }
        raw["pod"] = _pod_settings(pod_spec, container)
        raw["strategy"] = _strategy(spec)
    return Scenario.model_validate(raw)


def _target_port(target: Any, container: dict[str, Any]) -> int | None:
    """The container port a Service's targetPort names (a number, or a container port's name)."""
    ports = container.get("ports") or []
    if isinstance(target, int):
        return target
    named = [p.get("containerPort") for p in ports if p.get("name") == target and target]
    found = named or [p.get("containerPort") for p in ports]
    return int(found[0]) if found and found[0] else None


def _probe(probe: dict[str, Any] | None) -> dict[str, Any] | None:
    if not probe:
        return None
    values = {**_PROBE_DEFAULTS, **probe}
    http_get = probe.get("httpGet") or {}
    port = http_get.get("port")
    return {
        "path": str(http_get.get("path") or ""),
        "port": port if isinstance(port, int) else None,
        "initial_delay_s": int(values["initialDelaySeconds"]),
        "period_s": max(int(values["periodSeconds"]), 1),
        "timeout_s": max(int(values["timeoutSeconds"]), 1),
        "success_threshold": max(int(values["successThreshold"]), 1),
        "failure_threshold": max(int(values["failureThreshold"]), 1),
    }


def _pre_stop(container: dict[str, Any]) -> dict[str, Any] | None:
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return {"sleep_s": int((hook["sleep"] or {}).get("seconds") or 0)}
    if "exec" in hook:
        return {"exec": [str(part) for part in (hook["exec"] or {}).get("command") or []]}
    if "httpGet" in hook:
        return {"http_get_path": str((hook["httpGet"] or {}).get("path") or "/")}
    return None


def _pod_settings(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    grace = pod_spec.get("terminationGracePeriodSeconds")
    return {
        "readiness_probe": _probe(container.get("readinessProbe")),
        "liveness_probe": _probe(container.get("livenessProbe")),
        "startup_probe": _probe(container.get("startupProbe")),
        "pre_stop": _pre_stop(container),
        "termination_grace_period_s": _DEFAULT_GRACE_S if grace is None else int(grace),
    }


def _strategy(spec: dict[str, Any]) -> dict[str, Any]:
    strategy = spec.get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    return {
        "type": strategy.get("type") or "RollingUpdate",
        "max_surge": rolling.get("maxSurge", "25%"),
        "max_unavailable": rolling.get("maxUnavailable", "25%"),
        "min_ready_s": int(spec.get("minReadySeconds") or 0),
        "progress_deadline_s": int(
            spec.get("progressDeadlineSeconds") or _DEFAULT_PROGRESS_DEADLINE_S
        ),
    }


def base_scenario(
    name: str, context: str, namespace: str, loaded: Scenario | None = None
) -> Scenario:
    """The scenario an observation starts from: ``loaded``'s load and rollout deadline (a
    ``--scenario`` file) or the defaults, on the named kubeconfig context and namespace."""
    update: dict[str, Any] = {"cluster": {"kind": "kube", "context": context,
                                          "namespace": namespace}}  # fmt: skip
    if loaded is not None:
        update |= {"load": loaded.load.model_dump(), "expect": list(loaded.expect),
                   "rollout": {"deadline_s": loaded.rollout.deadline_s}}  # fmt: skip
    return Scenario.model_validate({"name": name, **update})
