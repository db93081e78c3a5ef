"""The runner under least privilege: with scenarios/manifests/rbac.yaml's Role it does its
whole job against an API server that enforces RBAC; with one verb less it stops with one line
naming the verb, the resource, the namespace and the manifest, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config as k8s_config

from kubewire import format_time
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from rolltrace.runner.kube import RBAC_MANIFEST, Forbidden, Kube
from rolltrace.runner.manifests import deployment, rollout_patch, service
from rolltrace.scenario import parse_scenario

RBAC_YAML = Path(__file__).parents[2] / RBAC_MANIFEST
NAMESPACE = "lab"
SCENARIO = parse_scenario("name: t\n")


def _grant(thread: ServerThread, drop: tuple[str, str] | None = None) -> Any:
    """rbac.yaml in NAMESPACE (without verb ``drop[1]`` on resource ``drop[0]``); the
    official client with its ServiceAccount's token."""
    store = thread.server.store
    store.create("namespaces", None, {"metadata": {"name": NAMESPACE}})
    for document in yaml.safe_load_all(RBAC_YAML.read_text()):
        resource = {"ServiceAccount": "serviceaccounts", "Role": "roles",
                    "RoleBinding": "rolebindings"}[document["kind"]]  # fmt: skip
        for rule in document.get("rules", []):
            if drop and drop[0] in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != drop[1]]
        store.create(resource, NAMESPACE, document)
    token = thread.server.authenticator.request_token(NAMESPACE, "rolltrace", {})
    path = Path(str(thread.kubeconfig)).with_name("sa.kubeconfig")
    path.write_text(yaml.safe_dump(thread.server.kubeconfig(token=token["status"]["token"])))
    return k8s_config.new_client_from_config(str(path))


def test_rbac_yaml_is_enough_for_every_kube_call(tmp_path: Path) -> None:
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        kube = Kube(_grant(thread), NAMESPACE)
        kube.apply(service(SCENARIO))
        kube.apply(deployment(SCENARIO))
        kube.apply(deployment(SCENARIO))  # the second apply patches
        assert kube.workload("demoapp").replicas == SCENARIO.workload.replicas
        assert kube.service_for("demoapp") == "demoapp"
        assert kube.service_traits("demoapp").traffic_policy == "Cluster"
        before = kube.rollout_state("demoapp").generation
        kube.trigger_rollout("demoapp", rollout_patch(SCENARIO, format_time()))
        assert kube.rollout_state("demoapp").generation == before + 1
        assert kube.wait_terminations("app.kubernetes.io/name=demoapp", 1) == 0


@pytest.mark.parametrize(
    ("drop", "call", "words"),
    [
        (("deployments", "patch"), "trigger",
         'cannot patch resource "deployments" in API group "apps" in the namespace "lab"'),
        (("services", "create"), "apply",
         'cannot create resource "services" in API group "" in the namespace "lab"'),
        (("pods", "list"), "terminations",
         'cannot list resource "pods" in API group "" in the namespace "lab"'),
    ],
)  # fmt: skip
def test_one_verb_less_is_a_one_line_error(
    tmp_path: Path, drop: tuple[str, str], call: str, words: str
) -> None:
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        admin = Kube(k8s_config.new_client_from_config(str(thread.kubeconfig)), NAMESPACE)
        kube = Kube(_grant(thread, drop), NAMESPACE)
        admin.apply(deployment(SCENARIO))
        calls = {
            "trigger": lambda: kube.trigger_rollout("demoapp", rollout_patch(SCENARIO, "now")),
            "apply": lambda: kube.apply(service(SCENARIO)),
            "terminations": lambda: kube.wait_terminations("app=x", 1),
        }
        with pytest.raises(Forbidden) as refused:
            calls[call]()
    message = str(refused.value)
    assert "\n" not in message
    assert f'User "system:serviceaccount:{NAMESPACE}:rolltrace" {words}' in message
    assert f"kubectl -n {NAMESPACE} apply -f {RBAC_MANIFEST}" in message
