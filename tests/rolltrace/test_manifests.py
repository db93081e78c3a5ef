"""A user's own manifests: read, checked with located errors, made into the run's scenario, and
adapted to what the local cluster can run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rolltrace.cli import app
from rolltrace.runner.manifests import (
    ManifestError,
    load_user_workload,
    prepare,
    read_documents,
    rollout_patch,
    select_workload,
    workload_objects,
)
from rolltrace.scenario import Scenario, load_scenario, parse_scenario

EXAMPLE = Path(__file__).parents[2] / "scenarios/manifests/examples/http-server"


def deployment(name: str = "web", image: str = "nginx:1.27", **pod: object) -> dict[str, object]:
    container = {"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 80}],
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                 "command": ["nginx", "-g", "daemon off;"]}  # fmt: skip
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [container], **pod}}},
    }  # fmt: skip


def service(
    name: str = "web", selects: str = "web", kind: str = "LoadBalancer"
) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": selects},
                     "ports": [{"port": 80, "targetPort": "http"}]}}  # fmt: skip


def write(tmp_path: Path, *documents: object, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(documents))
    return path


def scenario_with(*files: Path, text: str = "name: mine\n") -> Scenario:
    scenario = parse_scenario(text)
    manifests = scenario.manifests.model_copy(update={"files": [str(f) for f in files]})
    return scenario.model_copy(update={"manifests": manifests})


def test_the_example_becomes_the_runs_scenario_with_upstream_defaults() -> None:
    scenario, warnings = prepare(
        scenario_with(EXAMPLE / "deployment.yaml", EXAMPLE / "service.yaml")
    )
    assert warnings == []  # local/python3 runs its own command: nothing stands in
    assert scenario.workload.replicas == 3 and scenario.workload.container_port == 8000
    probe = scenario.pod.readiness_probe
    assert probe is not None and (probe.path, probe.port, probe.period_s) == ("/", 8000, 1)
    assert probe.failure_threshold == 1 and probe.timeout_s == 1  # the manifest's, then upstream's
    assert scenario.pod.pre_stop is None and scenario.pod.termination_grace_period_s == 30
    assert (scenario.strategy.max_surge, scenario.strategy.max_unavailable) == (1, 0)
    assert scenario.service.port == 80


def test_an_image_the_local_cluster_cannot_run_gets_the_demo_app_and_a_warning(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, deployment(terminationGracePeriodSeconds=45), service())
    scenario, warnings = prepare(scenario_with(path))
    probe = scenario.pod.readiness_probe
    assert probe is not None and probe.period_s == 10 and probe.failure_threshold == 3  # upstream
    assert scenario.pod.termination_grace_period_s == 45
    assert len(warnings) == 1 and "'nginx:1.27'" in warnings[0] and "demo app" in warnings[0]
    service_obj, deployment_obj = workload_objects(scenario)
    (container,) = deployment_obj["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("rolltrace/demoapp") and "command" not in container
    assert {"name": "DEMOAPP_PORT", "value": "80"} in container["env"]
    assert container["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}}
    for obj in (service_obj, deployment_obj):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rolltrace"


def test_a_real_cluster_gets_the_images_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, deployment(), service())
    text = "name: mine\ncluster: {kind: kube, context: c, namespace: n}\n"
    scenario, warnings = prepare(scenario_with(path, text=text))
    _, deployment_obj = workload_objects(scenario)
    assert deployment_obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert warnings == []


def test_scenario_sections_the_manifests_replace_are_named_in_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, deployment(image="local/web"), service())
    text = "name: mine\npod: {termination_grace_period_s: 5}\nload: {rate: 10}\n"
    scenario, warnings = prepare(scenario_with(path, text=text))
    assert warnings == ["scenario pod: is ignored: the manifests describe the workload"]
    assert scenario.pod.termination_grace_period_s == 30  # the manifest's (upstream default)
    assert scenario.load.rate == 10  # load is not the workload's: it stays


def test_manifests_in_a_scenario_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "k8s").mkdir()
    write(tmp_path / "k8s", deployment(image="local/web"), service(), name="all.yaml")
    (tmp_path / "scenario.yaml").write_text("name: mine\nmanifests: [k8s/all.yaml]\n")
    scenario = load_scenario(tmp_path / "scenario.yaml")
    assert scenario.manifests.files == [str(tmp_path / "k8s/all.yaml")]
    assert load_user_workload(scenario).deployment.name == "web"


def test_several_candidates_need_a_name_and_other_kinds_are_left_out(tmp_path: Path) -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}}
    path = write(tmp_path, deployment("a"), deployment("b"), service("a-lb", "a"),
                 service("b-lb", "b"), service("b-internal", "b", "ClusterIP"), config)  # fmt: skip
    documents = read_documents(path)
    with pytest.raises(ManifestError, match=r"more than one Deployment .* manifests\.deployment"):
        select_workload(documents)
    chosen = select_workload(documents, deployment="b")
    assert (chosen.deployment.name, chosen.service.name) == ("b", "b-lb")
    assert any("ConfigMap cfg is not applied" in note for note in chosen.notes)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([deployment()], r"no Service of type LoadBalancer selects Deployment web's Pods"),
        ([deployment(), service(kind="ClusterIP")], r"\(document 2\): spec\.type: type ClusterIP"),
        ([deployment(), service(selects="other")], r"selects \{'app': 'other'\}, not these Pods"),
        ([service()], r"no Deployment in the manifests"),
    ],
)
def test_a_missing_piece_is_named(tmp_path: Path, documents: list[object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        select_workload(read_documents(write(tmp_path, *documents)))


def test_errors_name_file_line_document_and_field(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        "  selector: {matchLabels: {app: web}}\n  template:\n"
        "    metadata: {labels: {app: other}}\n    spec: {containers: [{name: web}]}\n"
    )
    with pytest.raises(ManifestError) as error:
        select_workload(read_documents(path))
    assert str(error.value).startswith(f"{path}:11 (document 2): spec.template.metadata.labels:")
    path.write_text(path.read_text().replace("app: other", "app: web"))
    with pytest.raises(
        ManifestError, match=r":12 \(document 2\): .*containers\[0\]\.image: missing"
    ):
        select_workload(read_documents(path))
    path.write_text("kind: Service\nmetadata: {name: [unclosed\n")
    with pytest.raises(ManifestError, match=rf"{path}:3: not valid YAML"):
        read_documents(path)
    with pytest.raises(ManifestError, match="cannot read"):
        read_documents(tmp_path / "missing.yaml")


def test_an_image_rollout_patches_the_users_container(tmp_path: Path) -> None:
    path = write(tmp_path, deployment(image="local/web"), service())
    text = "name: mine\nrollout: {trigger: image, image: local/web:v2}\n"
    scenario, _ = prepare(scenario_with(path, text=text))
    patch = rollout_patch(scenario, "2026-01-01T00:00:00Z")
    assert patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "local/web:v2"}
    ]


def test_rollout_app_with_manifests_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, deployment(image="local/web"), service())
    with pytest.raises(ManifestError, match=r"rollout\.app .* rollout\.patch"):
        prepare(scenario_with(path, text="name: mine\nrollout: {app: {crash_after_s: 3}}\n"))


def test_run_dry_run_with_manifests_only_names_the_scenario_after_the_deployment() -> None:
    result = CliRunner().invoke(app, [
        "run", "--dry-run", "--manifest", str(EXAMPLE / "deployment.yaml"),
        "--manifest", str(EXAMPLE / "service.yaml"), "--set", "load.rate=20",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in yaml.safe_load_all(result.output) if d]
    assert kinds == ["Service", "Deployment"]
    assert "'rate': 20.0" in result.output and "'container_port': 8000" in result.output


def test_run_with_a_bad_manifest_exits_2_with_the_location(tmp_path: Path) -> None:
    path = write(tmp_path, deployment(), service(kind="NodePort"))
    result = CliRunner().invoke(app, ["run", "--dry-run", "--manifest", str(path)])
    assert result.exit_code == 2
    assert "no Service of type LoadBalancer" in result.output and str(path) in result.output
    result = CliRunner().invoke(app, ["run", "--dry-run"])
    assert result.exit_code == 2 and "--manifest" in result.output


def test_a_field_of_the_wrong_shape_is_a_located_error(tmp_path: Path) -> None:
    broken = deployment(image="local/web")
    broken["spec"]["strategy"] = "fast"  # type: ignore[index]
    path = write(tmp_path, broken, service())
    with pytest.raises(
        ManifestError, match=r":\d+ \(document 1\): spec\.strategy: must be a mapping"
    ):
        prepare(scenario_with(path))


def test_target_existing_and_manifests_exclude_each_other() -> None:
    result = CliRunner().invoke(app, [
        "run", "--manifest", str(EXAMPLE / "deployment.yaml"),
        "--manifest", str(EXAMPLE / "service.yaml"), "--target-existing", "web",
    ])  # fmt: skip
    assert result.exit_code == 2 and "one or the other" in result.output


def test_the_example_scenario_names_its_manifests_beside_it() -> None:
    result = CliRunner().invoke(app, ["run", str(EXAMPLE / "scenario.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        f"# manifests: {EXAMPLE / 'deployment.yaml'}, {EXAMPLE / 'service.yaml'}" in result.output
    )
    assert "warning" not in result.output


def _mutate(lines: list[str], rng: random.Random) -> list[str]:
    """One random edit of a YAML file: a line dropped, doubled or re-indented, or a value
    replaced with one of the wrong kind."""
    lines = list(lines)
    index = rng.randrange(len(lines))
    edit = rng.randrange(4)
    if edit == 0:
        del lines[index]
    elif edit == 1:
        lines.insert(index, lines[index])
    elif edit == 2:
        lines[index] = " " * rng.randrange(5) + lines[index].lstrip()
    elif ":" in lines[index]:
        key = lines[index].split(":", 1)[0]
        lines[index] = f"{key}: {rng.choice(['[]', '{}', 'null', '-1', 'x', 'true', '[1,', '0'])}"
    return lines


def test_mutated_manifests_give_located_errors_only(tmp_path: Path) -> None:
    """Whatever a user's file holds, rolltrace answers with a ManifestError, never a crash."""
    rng = random.Random(10)
    original = [
        *(EXAMPLE / "deployment.yaml").read_text().splitlines(),
        "---",
        *(EXAMPLE / "service.yaml").read_text().splitlines(),
    ]
    path = tmp_path / "mutated.yaml"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        lines = original
        for _ in range(rng.randrange(1, 4)):
            lines = _mutate(lines, rng)
        path.write_text("\n".join(lines) + "\n")
        try:
            workload_objects(prepare(scenario_with(path))[0])
        except ManifestError as error:
            assert str(error).startswith(str(path)) or "manifests" in str(error), error
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    assert outcomes["error"] > 0 and outcomes["ok"] > 0  # both kinds of input were exercised
