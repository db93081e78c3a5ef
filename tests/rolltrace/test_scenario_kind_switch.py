"""`--set cluster.kind=…` switches the cluster block: the other kind's fields are dropped with a
warning naming them, shared fields are kept, and a real cluster's required fields are asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolltrace.scenario import (
    ClusterKindSwitch,
    KubeCluster,
    LocalCluster,
    ScenarioError,
    load_scenario,
)

SCENARIOS = Path(__file__).parents[2] / "scenarios"
KUBE = ["cluster.kind=kube", "cluster.context=staging", "cluster.namespace=rolltrace-lab"]


def test_local_scenario_runs_on_a_real_cluster_with_three_overrides() -> None:
    with pytest.warns(ClusterKindSwitch) as caught:
        scenario = load_scenario(SCENARIOS / "graceful-drain.yaml", KUBE)
    assert scenario.cluster == KubeCluster(
        kind="kube", context="staging", namespace="rolltrace-lab"
    )
    message = str(caught[0].message)
    assert "cluster.nodes" in message and "cluster.proxy_delay" in message
    assert scenario.workload.replicas == 3  # the rest of the scenario is untouched


def test_missing_context_is_a_located_error_after_the_switch() -> None:
    with (
        pytest.warns(ClusterKindSwitch, match=r"--set cluster\.context=CTX"),
        pytest.raises(ScenarioError, match=r"cluster\.context: Field required"),
    ):
        load_scenario(SCENARIOS / "graceful-drain.yaml", ["cluster.kind=kube"])


def test_kube_scenario_switches_back_to_local(tmp_path: Path) -> None:
    kube = SCENARIOS / "kube-example.yaml"
    with pytest.warns(ClusterKindSwitch, match=r"cluster\.context, cluster\.namespace"):
        scenario = load_scenario(kube, ["cluster.kind=local"])
    assert isinstance(scenario.cluster, LocalCluster)


def test_no_switch_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    load_scenario(SCENARIOS / "graceful-drain.yaml", ["cluster.nodes=2"])
    assert not [w for w in recwarn if issubclass(w.category, ClusterKindSwitch)]


def test_a_cluster_section_without_kind_is_the_local_cluster(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncluster: {nodes: 5}\n")
    assert load_scenario(path).cluster == LocalCluster(nodes=5)
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\n")
    overridden = load_scenario(bare, ["cluster.proxy_delay.kind=fixed"])
    assert isinstance(overridden.cluster, LocalCluster)
    assert overridden.cluster.proxy_delay.kind == "fixed"
