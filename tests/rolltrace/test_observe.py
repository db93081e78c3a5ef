"""`rolltrace observe` without a cluster: when a rollout starts and ends (pure, over Deployment
snapshots), how the observation loop ends (rollout, duration, deadline) and what run.json says,
the scenario read from the user's own objects, and the command's input errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config as k8s_config
from typer.testing import CliRunner

from analyzer.schema import RunStatus
from kubewire import RolloutState
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from rolltrace.cli import app
from rolltrace.commands.observe import parse_address, resolve_context
from rolltrace.runner import observe
from rolltrace.runner.experiment import Session, Target
from rolltrace.runner.kube import Kube, KubeError, Workload
from rolltrace.runner.observe import (
    DeploymentSnapshot,
    Observation,
    ObserveOptions,
    RolloutPhase,
    RolloutTracker,
    base_scenario,
    observed_scenario,
    snapshot_of,
)
from rolltrace.scenario import Scenario

MANIFESTS = Path(__file__).parents[2] / "scenarios" / "manifests" / "demoapp.yaml"
OLD, NEW = "template-v1", "template-v2"


def _manifests() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment, service = yaml.safe_load_all(MANIFESTS.read_text())
    return deployment, service


def snap(
    template: str = OLD,
    desired: int = 3,
    *,
    generation: int = 1,
    observed: int | None = None,
    replicas: int | None = None,
    updated: int | None = None,
    available: int | None = None,
    terminating: int = 0,
) -> DeploymentSnapshot:
    """A snapshot that is settled unless told otherwise."""
    return DeploymentSnapshot(
        state=RolloutState(
            generation=generation,
            observed_generation=generation if observed is None else observed,
            replicas=desired if replicas is None else replicas,
            updated=desired if updated is None else updated,
            ready=desired if available is None else available,
            available=desired if available is None else available,
        ),
        desired=desired,
        template=template,
        terminating=terminating,
    )


def phases_of(tracker: RolloutTracker, snapshots: list[DeploymentSnapshot]) -> list[list[str]]:
    return [[str(p) for p in tracker.update(s)] for s in snapshots]


def test_a_rollout_restart_starts_completes_then_settles_when_old_pods_are_gone() -> None:
    """`kubectl rollout restart` changes a template annotation: a new template, a new
    generation the controller observes late, surge Pods, then old Pods terminating."""
    tracker = RolloutTracker(snap())
    seen = phases_of(tracker, [
        snap(),  # nothing yet
        snap(NEW, generation=2, observed=1),  # the patch landed; the controller lags
        snap(NEW, generation=2, replicas=4, updated=1, available=3),
        snap(NEW, generation=2, replicas=3, updated=3, available=3, terminating=2),
        snap(NEW, generation=2, terminating=1),
        snap(NEW, generation=2),
    ])  # fmt: skip
    assert seen == [[], ["rolling"], [], ["complete"], [], ["settled"]]
    assert tracker.start_signal is not None and "template" in tracker.start_signal


def test_a_stale_status_does_not_complete_a_rollout_the_controller_has_not_seen() -> None:
    tracker = RolloutTracker(snap())
    # every count says "complete", but they describe the previous generation
    assert phases_of(tracker, [snap(NEW, generation=2, observed=1)]) == [["rolling"]]
    assert tracker.phase is RolloutPhase.ROLLING


def test_no_rollout_ever_starts() -> None:
    tracker = RolloutTracker(snap())
    assert phases_of(tracker, [snap()] * 5) == [[]] * 5
    assert tracker.phase is RolloutPhase.WAITING and tracker.start_signal is None


def test_a_scale_change_alone_is_noted_and_is_not_a_rollout() -> None:
    tracker = RolloutTracker(snap())
    seen = phases_of(tracker, [
        snap(desired=5, generation=2, observed=2, replicas=5, updated=5, available=3),
        snap(desired=5, generation=2),
        snap(desired=2, generation=3, terminating=3),
    ])  # fmt: skip
    assert seen == [[], [], []]
    assert tracker.phase is RolloutPhase.WAITING
    assert len(tracker.notes) == 2 and "from 3 to 5" in tracker.notes[0]


def test_a_stalled_rollout_stays_rolling() -> None:
    tracker = RolloutTracker(snap())
    stuck = snap(NEW, generation=2, replicas=4, updated=1, available=3)
    assert phases_of(tracker, [stuck] * 4) == [["rolling"], [], [], []]


def test_a_rollout_under_way_when_the_observation_begins_has_started() -> None:
    tracker = RolloutTracker(snap(NEW, generation=2, replicas=4, updated=2, available=3))
    assert phases_of(tracker, [snap(NEW, generation=2, replicas=4, updated=2)]) == [["rolling"]]
    assert tracker.start_signal is not None and "under way" in tracker.start_signal


def test_a_rollout_seen_only_once_done_enters_every_phase_in_order() -> None:
    tracker = RolloutTracker(snap())
    assert phases_of(tracker, [snap(NEW, generation=2)]) == [["rolling", "complete", "settled"]]


def test_snapshot_of_api_json() -> None:
    deployment, _ = _manifests()
    deployment |= {
        "metadata": {"name": "demoapp", "generation": 4},
        "status": {"observedGeneration": 3, "replicas": 4, "updatedReplicas": 1,
                   "readyReplicas": 3, "availableReplicas": 3},
    }  # fmt: skip
    pods: list[dict[str, Any]] = [
        {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}},
        {"metadata": {}},
    ]
    got = snapshot_of(deployment, pods)
    assert got.state == RolloutState(4, 3, 4, 1, 3, 3)
    assert (got.desired, got.terminating) == (3, 1)
    restarted = json.loads(json.dumps(deployment))
    annotations = {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    restarted["spec"]["template"]["metadata"]["annotations"] = annotations
    assert snapshot_of(restarted, []).template != got.template
    reordered = json.loads(json.dumps(deployment, sort_keys=True))
    assert snapshot_of(reordered, []).template == got.template


def test_the_recorded_scenario_is_what_the_users_objects_say() -> None:
    deployment, service = _manifests()
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 9090
    base = base_scenario("observe-demoapp", "ctx", "shop")
    scenario = observed_scenario(base, service, deployment)
    assert scenario.workload.container_port == 9090  # targetPort "http" names it
    assert scenario.service.port == 80 and scenario.workload.replicas == 3
    pod = scenario.pod
    assert pod.pre_stop is not None and pod.pre_stop.sleep_s == 5
    assert pod.termination_grace_period_s == 30
    probe = pod.readiness_probe
    assert probe is not None and (probe.period_s, probe.failure_threshold) == (1, 1)
    assert probe.timeout_s == 1  # the API's default where the manifest is silent
    liveness = pod.liveness_probe
    assert liveness is not None and (liveness.period_s, liveness.failure_threshold) == (5, 3)
    assert pod.startup_probe is None
    assert (scenario.strategy.max_surge, scenario.strategy.max_unavailable) == (1, 0)
    assert scenario.cluster.model_dump() == {"kind": "kube", "context": "ctx", "namespace": "shop"}


def test_an_app_without_probes_or_prestop_is_recorded_as_such() -> None:
    deployment, service = _manifests()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for key in ("readinessProbe", "livenessProbe", "lifecycle"):
        container.pop(key)
    del deployment["spec"]["strategy"]
    scenario = observed_scenario(base_scenario("o", "c", "n"), service, deployment)
    assert scenario.pod.readiness_probe is None and scenario.pod.pre_stop is None
    assert (scenario.strategy.max_surge, scenario.strategy.max_unavailable) == ("25%", "25%")


def test_load_settings_come_from_a_scenario_file() -> None:
    loaded = Scenario.model_validate({"name": "x", "load": {"rate": 7, "after_s": 2},
                                      "rollout": {"deadline_s": 42}, "expect": ["failed == 0"]})  # fmt: skip
    base = base_scenario("o", "c", "n", loaded)
    assert (base.load.rate, base.load.after_s, base.rollout.deadline_s) == (7, 2, 42)
    assert base.expect == ["failed == 0"]


class _Load:
    def running(self) -> bool:
        return True

    def progress(self) -> dict[str, float]:
        return {"requests": 1.0}


class _Backend:
    def open(self, scenario: Scenario, run: Any) -> Session:
        raise AssertionError("not opened in these tests")


def _observation(tmp_path: Path, until: str | None, duration_s: float = 0.3) -> Observation:
    options = ObserveOptions("demoapp", until, duration_s=duration_s, deadline_s=0.3)
    return Observation(base_scenario("o", "c", "n"), tmp_path / "run", _Backend(), options)


def _scripted(monkeypatch: pytest.MonkeyPatch, snapshots: list[DeploymentSnapshot]) -> None:
    """Each poll reads the next snapshot; the last one repeats."""
    script = iter(snapshots)
    last = snapshots[-1]

    def read(kube: object, name: str, selector: str) -> DeploymentSnapshot:
        return next(script, last)

    monkeypatch.setattr(observe, "_snapshot", read)
    monkeypatch.setattr(observe, "POLL_INTERVAL_S", 0.01)


def _disrupt(observation: Observation, baseline: DeploymentSnapshot) -> None:
    observation.tracker = RolloutTracker(baseline)
    target = Target("demoapp", "demoapp", Workload(3, "app=demoapp"))
    observation._disrupt(Kube.__new__(Kube), target, _Load())  # type: ignore[arg-type]


def _run_json(observation: Observation, status: RunStatus) -> dict[str, Any]:
    observation._write_meta(status, None)
    written: dict[str, Any] = json.loads(observation.paths.run_json.read_text())
    return written


def test_the_observation_ends_when_the_rollout_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [snap(), snap(NEW, 3, generation=2, terminating=1), snap(NEW, 3)])
    observation = _observation(tmp_path, "demoapp", duration_s=30)
    _disrupt(observation, snap())
    assert list(observation.phases) == ["rollout_trigger", "rollout_complete", "old_pods_gone"]
    section = _run_json(observation, RunStatus.COMPLETE)["observe"]
    assert section["ended_by"] == "rollout" and section["rollout_phase"] == "settled"


def test_no_rollout_within_the_duration_ends_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [snap()])
    observation = _observation(tmp_path, "demoapp")
    with pytest.raises(KubeError, match="no rollout of Deployment demoapp started"):
        _disrupt(observation, snap())
    assert "rollout_trigger" not in observation.phases
    assert _run_json(observation, RunStatus.PARTIAL)["observe"]["ended_by"] == "duration"


def test_a_stalled_rollout_ends_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [snap(NEW, generation=2, replicas=4, updated=1, available=3)])
    observation = _observation(tmp_path, "demoapp", duration_s=30)
    with pytest.raises(KubeError, match=r"not rolled out 0\.3 s after its rollout started"):
        _disrupt(observation, snap())
    assert list(observation.phases) == ["rollout_trigger"]
    section = _run_json(observation, RunStatus.PARTIAL)["observe"]
    assert (section["ended_by"], section["rollout_phase"]) == ("deadline", "rolling")


def test_without_a_deployment_the_duration_ends_it(tmp_path: Path) -> None:
    observation = _observation(tmp_path, None, duration_s=0.2)
    observation._disrupt(Kube.__new__(Kube), Target(None, "demoapp", None), _Load())  # type: ignore[arg-type]
    assert observation.ended_by == "duration" and not observation.phases
    written = _run_json(observation, RunStatus.COMPLETE)
    assert written["observe"]["until"] == "duration"
    assert "app" not in written["scenario"]["workload"]  # the demo app's, not the user's


def test_a_rollout_during_a_duration_gets_its_phases_and_the_duration_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [snap(), snap(NEW, 3, generation=2, updated=1), snap(NEW, 3)])
    observation = _observation(tmp_path, None, duration_s=0.5)
    _disrupt(observation, snap())
    assert list(observation.phases) == ["rollout_trigger", "rollout_complete", "old_pods_gone"]
    assert observation.ended_by == "duration" and observation.reasons == []


def test_a_rollout_unfinished_when_the_duration_ends_is_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, [snap(NEW, generation=2, replicas=4, updated=1, available=3)])
    observation = _observation(tmp_path, None, duration_s=0.2)
    _disrupt(observation, snap())
    assert list(observation.phases) == ["rollout_trigger"]
    assert observation.reasons == [
        "the rollout of Deployment demoapp was rolling when the observation's duration ended"
    ]


def test_the_deployments_a_service_selects() -> None:
    deployment, service = _manifests()
    other = json.loads(json.dumps(deployment))
    other["metadata"]["name"] = "other"
    other["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    canary = json.loads(json.dumps(deployment))
    canary["metadata"]["name"] = "demoapp-canary"
    canary["spec"]["template"]["metadata"]["labels"] |= {"track": "canary"}
    assert observe.deployments_selected(service, [deployment, other]) == ["demoapp"]
    assert observe.deployments_selected(service, [canary, deployment]) == [
        "demoapp", "demoapp-canary"
    ]  # fmt: skip
    assert observe.deployments_selected({"spec": {}}, [deployment]) == []


@pytest.mark.parametrize("until", ["demoapp", None])
def test_prepare_only_reads_the_users_objects(tmp_path: Path, until: str | None) -> None:
    """Against the local API server through the official client: the Service and Deployment
    are read into the scenario and the baseline (the Deployment behind the Service when none
    is named), and nothing in the namespace changes."""
    deployment, service = _manifests()
    kubeconfig = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), kubeconfig):
        kube = Kube(k8s_config.new_client_from_config(str(kubeconfig)), "shop")
        kube.core.create_namespace({"metadata": {"name": "shop"}})
        kube.apps.create_namespaced_deployment("shop", deployment)
        kube.core.create_namespaced_service("shop", service)
        before = kube.apps.read_namespaced_deployment("demoapp", "shop").metadata.resource_version
        observation = _observation(tmp_path, until)
        target = observation._prepare(Session("kube", kube.api_client, "shop"), kube)
        after = kube.apps.read_namespaced_deployment("demoapp", "shop").metadata.resource_version
    assert target == Target("demoapp", "demoapp", Workload(3, "app=demoapp"))
    assert observation.tracker is not None and observation.tracker.phase is RolloutPhase.WAITING
    assert observation.followed == "demoapp"
    assert observation.scenario.pod.pre_stop is not None
    assert before == after


@pytest.mark.parametrize(
    ("text", "expected"),
    [("203.0.113.10:80", ("203.0.113.10", 80)), ("[2001:db8::1]:8080", ("2001:db8::1", 8080))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["203.0.113.10", "host:0", "host:99999", ":80"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="ADDRESS:PORT"):
        parse_address(text)


def test_resolve_context(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
                     {"name": "b", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    assert resolve_context(kubeconfig, None) == ("a", "shop")
    assert resolve_context(kubeconfig, "b") == ("b", "default")
    with pytest.raises(ValueError, match="no context 'z'"):
        resolve_context(kubeconfig, "z")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--until-rollout DEPLOYMENT, --duration SECONDS"),
        (["--duration", "5", "--lb", "nowhere"], "expected ADDRESS:PORT"),
        (["--duration", "5", "--kubeconfig", "/nonexistent/kubeconfig"], "cannot read"),
        (["--duration", "5", "--scenario", "/nonexistent.yaml"], "cannot read"),
    ],
)
def test_bad_input_is_a_located_message_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app, ["observe", "--service", "demoapp", "-o", str(tmp_path / "run"), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()


class _Interrupted:
    def open(self, scenario: Scenario, run: Any) -> Session:
        raise KeyboardInterrupt


def test_ctrl_c_keeps_a_partial_run_that_says_the_observation_stopped_early(
    tmp_path: Path,
) -> None:
    options = ObserveOptions("demoapp", "demoapp", duration_s=60, deadline_s=60)
    observation = Observation(
        base_scenario("o", "c", "n"), tmp_path / "run", _Interrupted(), options
    )
    outcome = observation.run()
    assert outcome.interrupted and outcome.meta.status is RunStatus.PARTIAL
    written = json.loads((tmp_path / "run" / "run.json").read_text())
    assert written["observe"]["ended_by"] == "stopped early"
    assert written["status_reasons"] == ["interrupted by the user (Ctrl-C)"]


@pytest.mark.parametrize(("until", "warned"), [("duration", False), ("rollout", True)])
def test_validate_asks_rollout_phases_only_of_an_observation_that_followed_a_rollout(
    tmp_path: Path, until: str, warned: bool
) -> None:
    from analyzer.tracebuilder import build_run
    from analyzer.validate import validate_run

    built = build_run(tmp_path / "run", "endpoint-lag", seed=1, rate=20, duration_s=6)
    meta = json.loads(built.paths.run_json.read_text())
    for name in ("rollout_trigger", "rollout_complete"):
        meta["phases"].pop(name, None)
    meta |= {"status": "complete", "observe": {"until": until}}
    built.paths.run_json.write_text(json.dumps(meta))
    missing = [p for p in validate_run(built.path) if "missing although" in p.message]
    assert bool(missing) is warned
