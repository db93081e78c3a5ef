"""Scenario files: validation errors name file, line and field; overrides and presets apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localcluster.apiserver.patch import strategic_merge_patch
from rolltrace.runner.manifests import deployment, rollout_patch
from rolltrace.scenario import (
    PRESETS,
    ScenarioDeprecation,
    ScenarioError,
    load_scenario,
    parse_scenario,
)

GOOD = """\
name: prestop-too-short
workload:
  replicas: 3
  app:
    shutdown: immediate
pod:
  pre_stop:
    sleep_s: 1
strategy:
  max_surge: 1
  max_unavailable: 0
cluster:
  kind: local
  preset: gke-l4
  proxy_delay: {kind: fixed, value_s: 2}
load:
  rate: 50
"""


def test_good_scenario_with_preset_and_explicit_fields() -> None:
    scenario = parse_scenario(GOOD, "good.yaml")
    assert scenario.pod.pre_stop is not None and scenario.pod.pre_stop.sleep_s == 1
    cluster = scenario.cluster
    assert cluster.kind == "local"
    assert cluster.lb.hc_interval_s == PRESETS["gke-l4"]["lb"]["hc_interval_s"]  # from preset
    assert cluster.proxy_delay.kind == "fixed" and cluster.proxy_delay.value_s == 2  # explicit wins


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("max_unavailable: 0", "max_unavailable: lots"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert f"{path}:11:" in message and "strategy.max_unavailable" in message


def test_unknown_field_is_rejected_with_its_line() -> None:
    text = GOOD.replace("  replicas: 3", "  replicas: 3\n  replcias: 4")
    with pytest.raises(ScenarioError, match=r"x.yaml:4: workload.replcias: Extra inputs"):
        parse_scenario(text, "x.yaml")


def test_overrides_are_validated_and_named() -> None:
    scenario = parse_scenario(GOOD, "good.yaml", ["load.rate=200", "pod.pre_stop.sleep_s=5"])
    assert scenario.load.rate == 200
    assert scenario.pod.pre_stop is not None and scenario.pod.pre_stop.sleep_s == 5
    with pytest.raises(ScenarioError, match=r"--set: load.rate"):
        parse_scenario(GOOD, "good.yaml", ["load.rate=-1"])


def test_kube_cluster_needs_context_and_namespace() -> None:
    text = GOOD.replace(
        "  kind: local\n  preset: gke-l4\n  proxy_delay: {kind: fixed, value_s: 2}",
        "  kind: kube\n  context: prod",
    )
    with pytest.raises(ScenarioError, match=r"cluster\.namespace: Field required"):
        parse_scenario(text, "k.yaml")


def test_prestop_needs_exactly_one_action() -> None:
    with pytest.raises(ScenarioError, match="exactly one"):
        parse_scenario(GOOD.replace("    sleep_s: 1", "    sleep_s: 1\n    http_get_path: /x"))


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(ScenarioError, match=r"s.yaml:3: not valid YAML"):
        parse_scenario("name: x\nload:\n\trate: 1\n", "s.yaml")


def test_expectations_and_dominant_cause_are_checked() -> None:
    with pytest.raises(ScenarioError, match="expect"):
        parse_scenario(GOOD + 'expect: ["cause:teleport > 0"]\n', "e.yaml")
    with pytest.raises(ScenarioError, match="dominant_cause"):
        parse_scenario(GOOD + "dominant_cause: gremlins\n", "e.yaml")


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("scenarios/*.yaml")))
def test_every_shipped_scenario_is_valid(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.expect, "every library scenario states what it must show"


def test_scenario_check_command_reports_each_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rolltrace.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad\nload: {rate: -5}\n")
    result = CliRunner().invoke(app, ["scenario", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:1: name" in result.output and "[a-z0-9]" in result.output
    assert f"{bad}:2: load.rate" in result.output
    ok = CliRunner().invoke(app, ["scenario", "check", "scenarios/all-fixed.yaml", "--show"])
    assert ok.exit_code == 0 and "all-fixed" in ok.output


def test_app_faults_are_validated_with_file_line_and_field() -> None:
    text = GOOD.replace("    shutdown: immediate", "    shutdown: immediate\n    crash_after_s: -1")
    with pytest.raises(ScenarioError, match=r"f.yaml:6: workload.app.crash_after_s"):
        parse_scenario(text, "f.yaml")
    flap = "    ready_flap_period_s: 4\n    ready_flap_down_s: 4"
    text = GOOD.replace("    shutdown: immediate", f"    shutdown: immediate\n{flap}")
    with pytest.raises(ScenarioError, match=r"f.yaml:5: workload.app: .*shorter than"):
        parse_scenario(text, "f.yaml")


NEW_REVISION = GOOD + "rollout:\n  app: {crash_after_s: 6, idle_close: rst}\n"


def test_rollout_app_changes_only_the_given_fields_of_the_new_revision() -> None:
    scenario = parse_scenario(NEW_REVISION, "n.yaml")
    new = scenario.new_app()
    assert (new.crash_after_s, new.idle_close) == (6.0, "rst")
    assert new.shutdown == scenario.workload.app.shutdown == "immediate"  # kept from workload
    assert scenario.workload.app.crash_after_s == 0  # the old revision is unchanged
    with pytest.raises(ScenarioError, match=r"rollout: .*rollout.patch"):
        parse_scenario(NEW_REVISION.replace("  app:", "  trigger: patch\n  app:"), "n.yaml")


def _env(manifest: dict[str, Any]) -> dict[str, str]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "<ref>") for item in container["env"]}


def test_rollout_patch_gives_the_new_revision_its_app_env() -> None:
    """The patch is applied as the API server applies it (env merges by name)."""
    scenario = parse_scenario(NEW_REVISION, "n.yaml")
    old = deployment(scenario)
    new = strategic_merge_patch(old, rollout_patch(scenario, "2026-01-01T00:00:00Z"))
    assert _env(old)["DEMOAPP_CRASH_AFTER"] == "0.0"
    assert _env(new)["DEMOAPP_CRASH_AFTER"] == "6.0"
    assert _env(new)["DEMOAPP_IDLE_CLOSE"] == "rst"
    assert _env(new)["DEMOAPP_SHUTDOWN"] == "immediate" and _env(new)["POD_NAME"] == "<ref>"
    assert "kubectl.kubernetes.io/restartedAt" in new["spec"]["template"]["metadata"]["annotations"]
    plain = rollout_patch(parse_scenario(GOOD), "2026-01-01T00:00:00Z")
    assert "spec" not in plain["spec"]["template"]  # a plain restart touches no container


@pytest.mark.parametrize(
    ("section", "field", "value", "replacement"),
    [
        ("cluster", "pin_pods", "{'0': n1}", "one Pod per node"),
        ("workload", "existing_deployment", "shop", "--target-existing"),
    ],
)
def test_deprecated_fields_still_load_with_a_warning_naming_the_replacement(
    section: str, field: str, value: str, replacement: str
) -> None:
    text = GOOD.replace(f"{section}:\n", f"{section}:\n  {field}: {value}\n")
    line = text.splitlines().index(f"  {field}: {value}") + 1
    with pytest.warns(ScenarioDeprecation) as caught:
        scenario = parse_scenario(text, "d.yaml")
    (warning,) = caught
    assert str(warning.message).startswith(f"d.yaml:{line}: {section}.{field} is deprecated")
    assert replacement in str(warning.message)
    assert scenario.model_dump() == parse_scenario(GOOD, "d.yaml").model_dump()
