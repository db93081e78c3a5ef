"""``networking.k8s.io/v1`` Ingress and IngressClass on the local API server, as kubectl 1.37 and
the official Python client use them: discovery, apply (create, then a patch), get with
upstream's columns, watch, status writes, delete, validation errors in upstream's wording, and
RBAC for a ServiceAccount holding ingress-nginx's read rules."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from localcluster.apiserver import ApiServer
from localcluster.apiserver.httpclient import HttpClient
from localcluster.apiserver.thread import ServerThread
from tests.localcluster.kubectl_server import KUBECTL, KubectlServer

MANIFEST = """
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: PATH, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""
# ingress-nginx's ClusterRole (deploy/static/provider/cloud/deploy.yaml), its read rules and
# the Ingress status write, bound to the controller's ServiceAccount.
CONTROLLER_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: ingress-nginx, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ingress-nginx}
rules:
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch, get]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ingress-nginx}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ingress-nginx}
subjects:
- {kind: ServiceAccount, name: ingress-nginx, namespace: default}
"""


class Cluster(KubectlServer):
    def apply(self, text: str, check: bool = True) -> str:
        return self.apply_text(text, check)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        yield Cluster(thread, tmp_path)


def test_discovery_lists_both_kinds(cluster: Cluster) -> None:
    listed = cluster.kubectl("api-resources", "--api-group=networking.k8s.io")
    assert [line.split()[:2] for line in listed.splitlines()[1:]] == [
        ["ingressclasses", "networking.k8s.io/v1"],
        ["ingresses", "ing"],
    ]


def test_apply_get_patch_and_delete_with_kubectl(cluster: Cluster) -> None:
    assert "ingress.networking.k8s.io/web created" in cluster.apply(MANIFEST.replace("PATH", "/"))
    table = cluster.kubectl("get", "ing", "web").splitlines()
    assert table[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert table[1].split()[:4] == ["web", "nginx", "shop.example.com", "80"]
    classes = cluster.kubectl("get", "ingressclass").splitlines()
    assert classes[1].split()[:3] == ["nginx", "k8s.io/ingress-nginx", "<none>"]
    configured = cluster.apply(MANIFEST.replace("PATH", "/shop"))
    assert "ingress.networking.k8s.io/web configured" in configured
    path = cluster.kubectl(
        "get", "ingress", "web", "-o", "jsonpath={.spec.rules[0].http.paths[0].path}"
    )
    assert path == "/shop"
    cluster.kubectl("delete", "ingress", "web")
    assert "NotFound" in cluster.kubectl("get", "ingress", "web", check=False)


def test_get_watch_streams_changes(cluster: Cluster) -> None:
    cluster.apply(MANIFEST.replace("PATH", "/"))
    command = [str(KUBECTL), "--kubeconfig", str(cluster.thread.kubeconfig), "get", "ingress",
               "-w", "--output-watch-events", "--no-headers"]  # fmt: skip
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().split()[:2] == ["ADDED", "web"]
        cluster.kubectl("annotate", "ingress", "web", "touched=yes")
        assert watch.stdout.readline().split()[:2] == ["MODIFIED", "web"]
    finally:
        watch.kill()
        watch.wait(timeout=10)


def test_the_official_client_reads_and_writes_status(cluster: Cluster, api: k8s.ApiClient) -> None:
    """What ingress-nginx does with ``--publish-service``: the LB address into the status."""
    cluster.apply(MANIFEST.replace("PATH", "/"))
    networking = k8s.NetworkingV1Api(api)
    ingress = networking.read_namespaced_ingress("web", "default")
    assert ingress.spec.rules[0].http.paths[0].backend.service.port.number == 80
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.2.1"}]}}}
    networking.patch_namespaced_ingress_status("web", "default", status)
    assert cluster.kubectl("get", "ing", "web").splitlines()[1].split()[3] == "198.18.2.1"
    (item,) = networking.list_ingress_class().items
    assert item.spec.controller == "k8s.io/ingress-nginx"


INVALID = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: default}
spec:
  ingressClassName: Nginx_Class
  rules:
  - http:
      paths:
      - {path: api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /a, backend: {service: {name: 9web, port: {name: http, number: 80}}}}
      - {path: /b, pathType: Regex, backend: {}}
"""


def test_invalid_ingresses_are_refused_in_upstream_wording(cluster: Cluster) -> None:
    refused = cluster.apply(INVALID, check=False)
    path = "spec.rules[0].http.paths"
    for problem in (
        f'{path}[0].path: Invalid value: "api": must be an absolute path',
        f"{path}[1].pathType: Required value: pathType must be specified",
        f'{path}[1].backend.service.name: Invalid value: "9web": a DNS-1035 label must',
        f'{path}[1].backend: Invalid value: "": cannot set both port name & port number',
        f'{path}[2].pathType: Unsupported value: "Regex": supported values: "Exact", '
        '"ImplementationSpecific", "Prefix"',
        f'{path}[2].backend: Invalid value: "": resource or service backend is required',
        'spec.ingressClassName: Invalid value: "Nginx_Class": a lowercase RFC 1123 subdomain',
    ):
        assert problem in refused
    empty = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: e}\nspec: {}\n"
    assert "either `defaultBackend` or `rules` must be specified" in cluster.apply(
        empty, check=False
    )


def test_ingress_class_controller_is_required_and_immutable(cluster: Cluster) -> None:
    bare = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: c}\n"
    assert "spec.controller: Required value" in cluster.apply(bare + "spec: {}\n", check=False)
    assert 'must be a domain-prefixed path (such as "acme.io/foo")' in cluster.apply(
        bare + "spec: {controller: nginx}\n", check=False
    )
    cluster.apply(bare + "spec: {controller: example.com/a}\n")
    changed = cluster.apply(bare + "spec: {controller: example.com/b}\n", check=False)
    assert 'spec.controller: Invalid value: "example.com/b": field is immutable' in changed


def test_ingress_nginx_rules_let_its_service_account_read_and_nothing_more(
    cluster: Cluster,
) -> None:
    cluster.apply(CONTROLLER_RBAC)
    cluster.apply(MANIFEST.replace("PATH", "/"))
    token = cluster.kubectl("create", "token", "ingress-nginx").strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = token
    kubeconfig = cluster.tmp_path / "controller-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    assert "web" in cluster.kubectl("get", "ingress", "-A", kubeconfig=kubeconfig)
    denied = cluster.kubectl("delete", "ingress", "web", check=False, kubeconfig=kubeconfig)
    assert (
        'ingresses.networking.k8s.io "web" is forbidden: User '
        '"system:serviceaccount:default:ingress-nginx" cannot delete resource "ingresses" in '
        'API group "networking.k8s.io" in the namespace "default"'
    ) in denied

    async def list_through_kubeconfig() -> int:
        async with HttpClient.from_kubeconfig(kubeconfig) as client:
            items, _ = await client.list("ingressclasses")
            return len(items)

    started = time.monotonic()
    assert cluster.thread.run(list_through_kubeconfig()) == 1
    assert time.monotonic() - started < 10
