"""Authorization in the local API server: ServiceAccount tokens (TokenRequest), RBAC objects, the
RBAC authorizer's rule matching and upstream's 401/403 answers, through kubectl 1.37 and the
official Python client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from localcluster.apiclient import ApiError
from localcluster.apiserver import ApiServer
from localcluster.apiserver.auth import service_account_user
from localcluster.apiserver.protobuf import ProtobufError, decode
from localcluster.apiserver.rbac import Attributes, request_attributes, rule_allows
from localcluster.apiserver.thread import ServerThread
from tests.localcluster.kubectl_server import KubectlServer

RBAC_YAML = Path(__file__).parents[2] / "scenarios" / "manifests" / "rbac.yaml"
NAMESPACE = "rt"
SA_USER = f"system:serviceaccount:{NAMESPACE}:rolltrace"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/rt/pods", {}, ("list", "", "rt", "pods", "", "")),
        ("GET", "/api/v1/namespaces/rt/pods", {"watch": "true"}, ("watch", "", "rt", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/rt/pods", {}, ("watch", "", "rt", "pods", "", "")),
        ("GET", "/api/v1/namespaces/rt/pods/p1/log", {}, ("get", "", "rt", "pods", "log", "p1")),
        ("PUT", "/apis/apps/v1/namespaces/rt/deployments/d/scale", {},
         ("update", "apps", "rt", "deployments", "scale", "d")),
        ("PATCH", "/apis/apps/v1/namespaces/rt/deployments/d", {},
         ("patch", "apps", "rt", "deployments", "", "d")),
        ("POST", "/apis/apps/v1/namespaces/rt/deployments", {},
         ("create", "apps", "rt", "deployments", "", "")),
        ("DELETE", "/api/v1/namespaces/rt/pods", {}, ("deletecollection", "", "rt", "pods", "", "")),
        ("DELETE", "/api/v1/namespaces/rt/pods/p1", {}, ("delete", "", "rt", "pods", "", "p1")),
        ("GET", "/api/v1/nodes", {}, ("list", "", "", "nodes", "", "")),
        ("GET", "/api/v1/namespaces/rt", {}, ("get", "", "rt", "namespaces", "", "rt")),
        ("PUT", "/api/v1/namespaces/rt/status", {}, ("update", "", "rt", "namespaces", "status", "rt")),
        ("GET", "/api/v1/namespaces/rt/pods", {"fieldSelector": "metadata.name=p1"},
         ("list", "", "rt", "pods", "", "p1")),
        ("POST", "/api/v1/namespaces/rt/serviceaccounts/sa/token", {},
         ("create", "", "rt", "serviceaccounts", "token", "sa")),
    ],
)  # fmt: skip
def test_request_attributes_follow_upstream_request_info(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    attributes = request_attributes(method, path, query)
    assert attributes.resource_request
    got = (attributes.verb, attributes.api_group, attributes.namespace, attributes.resource,
           attributes.subresource, attributes.name)  # fmt: skip
    assert got == expected


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/version",
                                  "/openapi/v3/apis/apps/v1"])  # fmt: skip
def test_discovery_paths_are_non_resource_requests(path: str) -> None:
    attributes = request_attributes("GET", path, {})
    assert not attributes.resource_request
    assert (attributes.verb, attributes.path) == ("get", path)


def _pods(verb: str, subresource: str = "", name: str = "", group: str = "") -> Attributes:
    return Attributes(verb, "", True, group, "rt", "pods", subresource, name)


@pytest.mark.parametrize(
    ("rule", "attributes", "allowed"),
    [
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}, _pods("list"), True),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}, _pods("watch"), False),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, _pods("delete"), True),
        ({"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["*"]}, _pods("get"), False),
        # a subresource needs its own rule ...
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, _pods("get", "log"), False),
        ({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
         _pods("get", "log"), True),
        # ... or */SUBRESOURCE
        ({"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}, _pods("get", "log"), True),
        ({"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}, _pods("get"), False),
        ({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"], "verbs": ["get"]},
         _pods("get", name="a"), True),
        ({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"], "verbs": ["get"]},
         _pods("get", name="b"), False),
        ({"apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"], "verbs": ["list"]},
         _pods("list"), False),
        ({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]},
         Attributes("get", "/apis/apps/v1", False), True),
        ({"nonResourceURLs": ["/version"], "verbs": ["get"]},
         Attributes("get", "/version/x", False), False),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
         Attributes("get", "/version", False), False),
    ],
)  # fmt: skip
def test_rule_matching(rule: dict[str, Any], attributes: Attributes, allowed: bool) -> None:
    assert rule_allows(rule, attributes) is allowed


@pytest.mark.parametrize(
    "body",
    [b"", b"k8s\x00", b"k8s\x00\x0a\xff", b"{}", b"k8s\x00" + bytes(range(256)),
     b"k8s\x00\x0a\x10\x12\x0eServiceAccount\x12\x05\x0a\x03\x0a\x01\xff"],
)  # fmt: skip
def test_damaged_protobuf_is_a_protobuf_error(body: bytes) -> None:
    with pytest.raises(ProtobufError):
        decode(body)


class Cluster(KubectlServer):
    """An API server in a thread, kubectl as the admin or as a ServiceAccount."""

    def apply(self, manifest: dict[str, Any]) -> None:
        self.apply_text(yaml.safe_dump(manifest))

    def create_namespace(self) -> None:
        self.kubectl("create", "namespace", NAMESPACE)  # a protobuf body

    def service_account_kubeconfig(self, token: str) -> Path:
        path = self.tmp_path / "sa.kubeconfig"
        config = self.thread.server.kubeconfig(token=token)
        config["contexts"][0]["context"]["namespace"] = NAMESPACE
        path.write_text(yaml.safe_dump(config))
        return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        yield Cluster(thread, tmp_path)


@pytest.fixture
def runner_kubeconfig(cluster: Cluster) -> Path:
    """rbac.yaml applied in NAMESPACE as the admin; a kubeconfig with its ServiceAccount's token
    (the way docs/real-clusters.md tells a user to make one)."""
    cluster.create_namespace()
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", str(RBAC_YAML))
    token = cluster.kubectl("-n", NAMESPACE, "create", "token", "rolltrace").strip()
    return cluster.service_account_kubeconfig(token)


def test_rbac_objects_round_trip_through_kubectl(cluster: Cluster, runner_kubeconfig: Path) -> None:
    roles = cluster.kubectl("-n", NAMESPACE, "get", "roles,rolebindings,serviceaccounts")
    assert "role.rbac.authorization.k8s.io/rolltrace" in roles
    assert "rolebinding.rbac.authorization.k8s.io/rolltrace" in roles
    assert "serviceaccount/rolltrace" in roles
    bootstrap = cluster.kubectl("get", "clusterrolebindings", "-o", "name")
    assert "clusterrolebinding.rbac.authorization.k8s.io/system:discovery" in bootstrap
    role = yaml.safe_load(
        cluster.kubectl("-n", NAMESPACE, "get", "role", "rolltrace", "-o", "yaml")
    )
    assert {
        "apiGroups": ["apps"],
        "resources": ["replicasets"],
        "verbs": ["list", "watch"],
    } in role["rules"]


def test_service_account_is_allowed_its_rules_and_forbidden_the_rest(
    cluster: Cluster, runner_kubeconfig: Path
) -> None:
    assert "No resources found" in cluster.kubectl("get", "pods", kubeconfig=runner_kubeconfig)
    denied = cluster.kubectl("get", "nodes", kubeconfig=runner_kubeconfig, check=False)
    assert (
        f'nodes is forbidden: User "{SA_USER}" cannot list resource "nodes" in API group "" '
        "at the cluster scope"
    ) in denied
    other_namespace = cluster.kubectl(
        "-n", "default", "get", "deployments", kubeconfig=runner_kubeconfig, check=False
    )
    assert (
        f'deployments.apps is forbidden: User "{SA_USER}" cannot list resource "deployments" in '
        'API group "apps" in the namespace "default"'
    ) in other_namespace


def test_kubectl_auth_can_i_reflects_the_role(cluster: Cluster, runner_kubeconfig: Path) -> None:
    def can_i(*args: str) -> str:
        return cluster.kubectl("auth", "can-i", *args, kubeconfig=runner_kubeconfig, check=False)

    assert can_i("patch", "deployments.apps").strip() == "yes"
    assert can_i("watch", "endpointslices.discovery.k8s.io").strip() == "yes"
    assert can_i("delete", "pods").strip() == "no"
    assert can_i("get", "deployments.apps", "--subresource=scale").strip() == "no"
    assert can_i("list", "pods", "-n", "default").strip() == "no"


def _official_client(cluster: Cluster, token: str) -> Any:
    server = cluster.thread.server
    configuration = k8s.Configuration()
    configuration.host = server.url
    configuration.api_key = {"authorization": f"Bearer {token}"}
    ca = cluster.tmp_path / "ca.pem"
    ca.write_bytes(server.ca_pem)
    configuration.ssl_ca_cert = str(ca)
    return k8s.CoreV1Api(k8s.ApiClient(configuration))


def _token_of(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"])


def test_forbidden_and_unauthorized_are_upstream_status_objects(
    cluster: Cluster, runner_kubeconfig: Path
) -> None:
    core = _official_client(cluster, _token_of(runner_kubeconfig))
    with pytest.raises(ApiException) as forbidden:
        core.read_namespaced_pod("p1", NAMESPACE)  # the Role lists and watches Pods, never gets
    status = yaml.safe_load(forbidden.value.body)
    assert forbidden.value.status == 403
    assert status["reason"] == "Forbidden"
    assert status["details"] == {"name": "p1", "group": "", "kind": "pods"}
    assert status["message"] == (
        f'pods "p1" is forbidden: User "{SA_USER}" cannot get resource "pods" in API group "" '
        f'in the namespace "{NAMESPACE}"'
    )
    with pytest.raises(ApiException) as unauthorized:
        _official_client(cluster, "not-a-token").list_namespaced_pod(NAMESPACE)
    assert unauthorized.value.status == 401
    assert yaml.safe_load(unauthorized.value.body)["reason"] == "Unauthorized"


def test_token_dies_with_its_service_account(cluster: Cluster, runner_kubeconfig: Path) -> None:
    core = _official_client(cluster, _token_of(runner_kubeconfig))
    assert core.list_namespaced_pod(NAMESPACE).items == []
    cluster.kubectl("-n", NAMESPACE, "delete", "serviceaccount", "rolltrace")
    cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", "rolltrace")  # a new uid
    with pytest.raises(ApiException) as revoked:
        core.list_namespaced_pod(NAMESPACE)
    assert revoked.value.status == 401


def test_token_request_answers_as_upstream(cluster: Cluster) -> None:
    cluster.create_namespace()
    cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", "runner")
    missing = cluster.kubectl("-n", NAMESPACE, "create", "token", "nobody", check=False)
    assert 'serviceaccounts "nobody" not found' in missing
    too_short = cluster.kubectl(
        "-n", NAMESPACE, "create", "token", "runner", "--duration=1m", check=False
    )
    assert "10 minutes" in too_short
    token = cluster.kubectl("-n", NAMESPACE, "create", "token", "runner").strip()
    server = cluster.thread.server
    assert server.authenticator.authenticate(f"Bearer {token}") == service_account_user(
        NAMESPACE, "runner"
    )
    assert service_account_user(NAMESPACE, "runner").groups == (
        "system:serviceaccounts",
        f"system:serviceaccounts:{NAMESPACE}",
        "system:authenticated",
    )


def test_role_binding_changes_take_effect_at_once(
    cluster: Cluster, runner_kubeconfig: Path
) -> None:
    """No cache between the RBAC objects and decisions: revoking the binding revokes access."""
    core = _official_client(cluster, _token_of(runner_kubeconfig))
    core.list_namespaced_service(NAMESPACE)
    cluster.kubectl("-n", NAMESPACE, "delete", "rolebinding", "rolltrace")
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_service(NAMESPACE)
    assert denied.value.status == 403
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "sa-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "rolltrace", "namespace": NAMESPACE}],
    }  # fmt: skip
    cluster.apply(binding)
    assert core.list_node().items == []


def test_binding_validation(cluster: Cluster) -> None:
    """roleRef names a kind the binding may use; a ClusterRoleBinding's ServiceAccount needs a
    namespace; roleRef cannot change."""
    bad = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "x"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "a"}],
    }
    store = cluster.thread.server.store
    with pytest.raises(ApiError) as invalid:
        store.create("clusterrolebindings", None, bad)
    assert invalid.value.code == 422
    assert "roleRef: Invalid value" in str(invalid.value)
    assert "subjects[0].namespace: Required value" in str(invalid.value)
    good = {**bad, "roleRef": {**bad["roleRef"], "kind": "ClusterRole"},
            "subjects": [{"kind": "Group", "name": "g"}]}  # fmt: skip
    created = store.create("clusterrolebindings", None, good)
    changed = {**created, "roleRef": {**good["roleRef"], "name": "other"}}
    with pytest.raises(ApiError, match="cannot change roleRef"):
        store.update("clusterrolebindings", None, changed)


def test_admin_kubeconfig_carries_the_cluster_ca(cluster: Cluster) -> None:
    config = yaml.safe_load(Path(str(cluster.thread.kubeconfig)).read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == cluster.thread.server.ca_pem
    assert "yes" in cluster.kubectl("auth", "can-i", "delete", "nodes")
