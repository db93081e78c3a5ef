"""The runner's Kubernetes adapter, through the official client, against the local API server."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import config as k8s_config

from kubewire import format_time
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from rolltrace.runner.kube import Kube, KubeError, NotOurs, ServiceTraits, Workload
from rolltrace.runner.manifests import deployment, rollout_patch, service
from rolltrace.scenario import parse_scenario

SCENARIO = parse_scenario("name: t\npod:\n  pre_stop: {sleep_s: 3}\nstrategy: {max_surge: 1}\n")


def test_apply_patch_trigger_and_ownership(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), kubeconfig):
        kube = Kube(k8s_config.new_client_from_config(str(kubeconfig)), "rt-test")
        kube.ensure_namespace()
        kube.apply(deployment(SCENARIO))
        kube.apply(service(SCENARIO))
        dep = kube.apps.read_namespaced_deployment("demoapp", "rt-test")
        container = dep.spec.template.spec.containers[0]
        assert container.lifecycle.pre_stop.sleep.seconds == 3
        assert dep.spec.strategy.rolling_update.max_surge == 1
        svc = kube.core.read_namespaced_service("demoapp", "rt-test")
        assert svc.spec.type == "LoadBalancer" and svc.spec.external_traffic_policy == "Cluster"

        changed = SCENARIO.model_copy(
            update={"workload": SCENARIO.workload.model_copy(update={"replicas": 5})}
        )
        kube.apply(deployment(changed))  # a second apply patches what rolltrace owns
        assert kube.apps.read_namespaced_deployment("demoapp", "rt-test").spec.replicas == 5

        generation = kube.rollout_state("demoapp").generation
        kube.trigger_rollout("demoapp", rollout_patch(SCENARIO, format_time()))
        dep = kube.apps.read_namespaced_deployment("demoapp", "rt-test")
        assert "kubectl.kubernetes.io/restartedAt" in dep.spec.template.metadata.annotations
        assert kube.rollout_state("demoapp").generation == generation + 1

        foreign = deployment(SCENARIO, name="theirs")
        foreign["metadata"]["labels"] = {"app": "theirs"}
        kube.apps.create_namespaced_deployment("rt-test", foreign)
        with pytest.raises(NotOurs, match="--target-existing theirs"):
            kube.apply(deployment(SCENARIO, name="theirs"))
        with pytest.raises(NotOurs):
            kube.trigger_rollout("theirs", rollout_patch(SCENARIO, format_time()))
        kube.delete_managed("theirs")  # never deletes what it did not create
        assert kube.apps.read_namespaced_deployment("theirs", "rt-test")
        Kube(kube.api_client, "rt-test", target_existing="theirs").trigger_rollout(
            "theirs", rollout_patch(SCENARIO, format_time())
        )


def test_existing_deployment_is_found_with_its_load_balancer(tmp_path: Path) -> None:
    """--target-existing: rolltrace learns the user's Service, selector and size, and refuses
    when the Service is ambiguous."""
    kubeconfig = tmp_path / "kubeconfig"
    with ServerThread(ApiServer(), kubeconfig):
        kube = Kube(k8s_config.new_client_from_config(str(kubeconfig)), "default", "shop")
        theirs = deployment(SCENARIO, name="shop")
        theirs["metadata"]["labels"] = {"team": "shop"}
        theirs["spec"]["replicas"] = 4
        kube.apps.create_namespaced_deployment("default", theirs)
        svc = service(SCENARIO, name="shop-lb")
        svc["metadata"]["labels"] = {"team": "shop"}
        svc["spec"]["selector"] = {"app.kubernetes.io/name": "shop"}
        svc["spec"]["externalTrafficPolicy"] = "Local"
        kube.core.create_namespaced_service("default", svc)
        other = service(SCENARIO, name="unrelated")
        other["spec"]["selector"] = {"app": "other"}
        kube.core.create_namespaced_service("default", other)
        assert kube.service_for("shop") == "shop-lb"
        assert kube.workload("shop") == Workload(4, "app.kubernetes.io/name=shop")
        assert kube.service_traits("shop-lb") == ServiceTraits("Local", "nodes")
        twin = service(SCENARIO, name="shop-lb-2")
        twin["spec"]["selector"] = {"app.kubernetes.io/name": "shop"}
        kube.core.create_namespaced_service("default", twin)
        with pytest.raises(KubeError, match="exactly one LoadBalancer Service"):
            kube.service_for("shop")
