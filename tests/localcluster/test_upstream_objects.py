"""Objects as upstream serializes them: clients written against a real cluster (the official
``kubernetes`` client's typed models, whose required fields stand in for the upstream OpenAPI
schema) read every kind this server serves, through create, get, list and watch, and a watcher
built on ``kubernetes.watch.Watch`` follows a whole rolling update without a ``None`` status."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from localcluster.apiserver import ApiServer
from localcluster.apiserver.defaults import DEFAULTERS
from localcluster.apiserver.resources import EVENTS_V1, RESOURCE_TYPES, ResourceType, lookup
from localcluster.apiserver.thread import ServerThread
from localcluster.controllers import start_controllers
from localcluster.virtualnode import start_virtual_nodes
from tests.localcluster.test_controllers_harness import (
    NS,
    change_image,
    cluster_config,
    deployment,
    http_probe,
    wait_rollout,
)

# review kinds (SelfSubjectAccessReview) are answered, never stored: nothing to get or watch
SERVED = tuple(r for r in (*RESOURCE_TYPES, EVENTS_V1) if not r.virtual)
ROLLOUT_TIMEOUT_S = 60.0  # a 3-replica rollout on the compressed clock takes well under a second
WATCH_WINDOW_S = 1  # each watch request ends after this, so a stopped watcher exits promptly
LABELS = {"app": "web"}
CONTAINERS = [{"name": "app", "image": "demo:1", "readinessProbe": http_probe()}]
WORKLOAD_SPEC = {
    "selector": {"matchLabels": LABELS},
    "template": {"metadata": {"labels": LABELS}, "spec": {"containers": CONTAINERS}},
}

# The smallest manifest a user (or kubelet, for Nodes) would send, per served resource.
MANIFESTS: dict[str, dict[str, Any]] = {
    "namespaces": {"metadata": {"name": "upstream-ns"}},
    "nodes": {
        "metadata": {"name": "node-x"},
        "status": {"capacity": {"pods": "10"}, "nodeInfo": {"kubeletVersion": "v1.37.0"}},
    },
    "pods": {"metadata": {"name": "pod-x"}, "spec": {"containers": CONTAINERS}},
    "services": {
        "metadata": {"name": "svc-x"},
        "spec": {"type": "LoadBalancer", "selector": LABELS, "ports": [{"port": 80}]},
    },
    "events": {
        "metadata": {"name": "pod-x.1"},
        "involvedObject": {"kind": "Pod", "name": "pod-x", "namespace": NS},
        "reason": "Started",
        "message": "started",
    },
    "deployments": {"metadata": {"name": "deploy-x"}, "spec": WORKLOAD_SPEC},
    "replicasets": {"metadata": {"name": "rs-x"}, "spec": WORKLOAD_SPEC},
    "controllerrevisions": {"metadata": {"name": "rev-x"}, "data": {"spec": {}}},
    "endpointslices": {
        "metadata": {"name": "slice-x"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.19.0.2"]}],
        "ports": [{"port": 8080}],
    },
    "serviceaccounts": {"metadata": {"name": "sa-x"}},
    "roles": {
        "metadata": {"name": "role-x"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    },
    "clusterroles": {"metadata": {"name": "system:x"}},
    "rolebindings": {
        "metadata": {"name": "binding-x"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "role-x"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa-x"}],
    },
    "clusterrolebindings": {
        "metadata": {"name": "system:x"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x"},
    },
    "ingresses": {
        "metadata": {"name": "ing-x"},
        "spec": {"defaultBackend": {"service": {"name": "svc-x", "port": {"number": 80}}}},
    },
    "ingressclasses": {"metadata": {"name": "class-x"}, "spec": {"controller": "example.com/x"}},
}
# A status as a sparse writer might PUT it, leaving out (or nulling) what upstream would encode
# anyway; the other kinds write an empty status.
SPARSE_STATUS: dict[str, dict[str, Any] | None] = {
    "pods": {"containerStatuses": [{"name": "app", "restartCount": None}]},
    "replicasets": None,
}


def model_name(rtype: ResourceType) -> str:
    """The official client's model for a served kind (Events exist in two API groups)."""
    if rtype.kind == "Event":
        return "EventsV1Event" if rtype.group == "events.k8s.io" else "CoreV1Event"
    return f"V1{rtype.kind}"


def typed(api: k8s.ApiClient, obj: dict[str, Any], model: str) -> Any:
    """Deserializes as the official client does; raises when a required field is missing."""
    result = api.deserialize(json.dumps(obj), model, "application/json")
    assert result is not None and type(result).__name__ == model
    if "status" in type(result).model_fields:
        assert result.status is not None, f"{model} {obj['metadata']['name']} has no status"
    return result


def collection_path(rtype: ResourceType, namespace: str = NS) -> str:
    prefix = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
    scope = f"/namespaces/{namespace}" if rtype.namespaced else ""
    return f"{prefix}{scope}/{rtype.plural}"


@dataclass
class Http:
    """Raw JSON over the server's HTTPS port, so the test sees exactly what was serialized."""

    server: ApiServer

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        with self.open(method, path, body) as response:
            return json.load(response)

    def open(self, method: str, path: str, body: Any = None) -> Any:
        context = ssl.create_default_context(cadata=self.server.ca_pem.decode())
        request = urllib.request.Request(
            self.server.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Authorization": f"Bearer {self.server.token}",
                "Content-Type": "application/json",
            },
        )
        return urllib.request.urlopen(request, context=context, timeout=10)

    def first_watch_event(self, path: str, after_rv: int) -> dict[str, Any]:
        query = f"?watch=1&resourceVersion={after_rv}&timeoutSeconds=5"
        with self.open("GET", path + query) as stream:
            event: dict[str, Any] = json.loads(stream.readline())
        return event


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        yield thread


def test_every_served_kind_has_a_defaulter_and_a_manifest() -> None:
    plurals = {rtype.plural for rtype in SERVED}
    assert plurals == set(DEFAULTERS) == set(MANIFESTS)


def create_as_served(http: Http, rtype: ResourceType) -> dict[str, Any]:
    """Creates the manifest (events.k8s.io is read-only: ``lookup`` gives the core v1 type)."""
    path = collection_path(lookup(rtype.plural))
    created: dict[str, Any] = http("POST", path, MANIFESTS[rtype.plural])
    return created


@pytest.mark.parametrize("rtype", SERVED, ids=lambda r: r.api_version + "/" + r.plural)
def test_create_get_list_and_watch_deserialize_into_the_official_models(
    cluster: ServerThread, api: k8s.ApiClient, rtype: ResourceType
) -> None:
    http = Http(cluster.server)
    created = create_as_served(http, rtype)
    name, rv = created["metadata"]["name"], int(created["metadata"]["resourceVersion"])
    path = collection_path(rtype)
    listed = [item for item in http("GET", path)["items"] if item["metadata"]["name"] == name]
    event = http.first_watch_event(path, rv - 1)
    assert event["type"] == "ADDED" and len(listed) == 1
    views = {
        "get": http("GET", f"{path}/{name}"),
        "list": listed[0],
        "watch": event["object"],
    }
    if rtype is not EVENTS_V1:
        views["create"] = created
    model = model_name(rtype)
    for how, obj in views.items():
        meta = typed(api, obj, model).metadata
        assert meta.uid and meta.resource_version == str(rv), how
        assert meta.creation_timestamp is not None, how


def test_new_replicaset_reads_status_replicas_zero(
    cluster: ServerThread, api: k8s.ApiClient
) -> None:
    created = create_as_served(Http(cluster.server), lookup("replicasets"))
    replicaset = typed(api, created, "V1ReplicaSet")
    assert replicaset.status.replicas == 0 and replicaset.metadata.generation == 1


# Upstream's documented defaults (SetDefaults_* and the registries), as (path, value).
UPSTREAM_DEFAULTS: dict[str, list[tuple[str, Any]]] = {
    "deployments": [
        (
            "spec.strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
        ),
        ("spec.replicas", 1),
        ("spec.revisionHistoryLimit", 10),
        ("spec.progressDeadlineSeconds", 600),
        ("status", {}),
        ("metadata.generation", 1),
    ],
    "pods": [
        ("spec.restartPolicy", "Always"),
        ("spec.dnsPolicy", "ClusterFirst"),
        ("spec.schedulerName", "default-scheduler"),
        ("spec.terminationGracePeriodSeconds", 30),
        ("spec.enableServiceLinks", True),
        ("spec.containers.0.terminationMessagePath", "/dev/termination-log"),
        ("spec.containers.0.imagePullPolicy", "IfNotPresent"),
        ("spec.containers.0.readinessProbe.httpGet.scheme", "HTTP"),
        ("spec.containers.0.readinessProbe.timeoutSeconds", 1),
        ("status.phase", "Pending"),
    ],
    "services": [
        ("spec.sessionAffinity", "None"),
        ("spec.ipFamilies", ["IPv4"]),
        ("spec.internalTrafficPolicy", "Cluster"),
        ("spec.externalTrafficPolicy", "Cluster"),
        ("spec.allocateLoadBalancerNodePorts", True),
        ("spec.ports.0.protocol", "TCP"),
        ("spec.ports.0.targetPort", 80),
        ("status.loadBalancer", {}),
    ],
    "namespaces": [
        ("metadata.labels", {"kubernetes.io/metadata.name": "upstream-ns"}),
        ("status.phase", "Active"),
    ],
    "nodes": [
        ("status.allocatable", {"pods": "10"}),
        ("status.nodeInfo.bootID", ""),
        ("status.daemonEndpoints.kubeletEndpoint.Port", 0),
    ],
    "events": [("reportingInstance", ""), ("source", {})],
    "endpointslices": [("endpoints.0.conditions", {})],
    "controllerrevisions": [("revision", 0)],
}


def at(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


@pytest.mark.parametrize("plural", sorted(UPSTREAM_DEFAULTS))
def test_created_objects_carry_upstream_defaults(cluster: ServerThread, plural: str) -> None:
    created = create_as_served(Http(cluster.server), lookup(plural))
    assert {path: at(created, path) for path, _ in UPSTREAM_DEFAULTS[plural]} == dict(
        UPSTREAM_DEFAULTS[plural]
    )


@pytest.mark.parametrize(
    "rtype", [r for r in RESOURCE_TYPES if r.has_status], ids=lambda r: r.plural
)
def test_sparse_status_writes_still_deserialize(
    cluster: ServerThread, api: k8s.ApiClient, rtype: ResourceType
) -> None:
    """Upstream decodes a status write into the Go type, so whatever the writer left out comes
    back at its zero value (``replicas: 0``, ``restartCount: 0`` ...), never as a gap."""
    http = Http(cluster.server)
    created = create_as_served(http, rtype)
    name = created["metadata"]["name"]
    sparse = {**created, "status": SPARSE_STATUS.get(rtype.plural, {})}
    written = http("PUT", f"{collection_path(rtype)}/{name}/status", sparse)
    typed(api, written, model_name(rtype))
    typed(api, http("GET", f"{collection_path(rtype)}/{name}"), model_name(rtype))


@dataclass
class Follower:
    """One typed watch (``kubernetes.watch.Watch``) resumed window after window from its last
    resourceVersion until stopped; keeps every event's type and typed object."""

    list_call: Callable[..., Any]
    events: list[tuple[str, Any]] = field(default_factory=list)
    last_rv: int = 0

    def run(self, stop: threading.Event, deadline: float) -> None:
        watch = k8s_watch.Watch()
        resume: dict[str, str] = {}
        while not stop.is_set() and time.monotonic() < deadline:
            for event in watch.stream(self.list_call, NS, timeout_seconds=WATCH_WINDOW_S, **resume):
                obj = event["object"]
                if "status" in type(obj).model_fields:
                    assert obj.status is not None, f"{event['type']} {obj.metadata.name}"
                self.events.append((event["type"], obj))
                self.last_rv = int(obj.metadata.resource_version)
            if watch.resource_version:
                resume = {"resource_version": watch.resource_version}

    def objects(self, event_type: str) -> list[Any]:
        return [obj for seen_as, obj in self.events if seen_as == event_type]


def last_committed_rv(thread: ServerThread, plural: str) -> int:
    async def read() -> int:
        history = thread.server.store.history.get(plural)
        return history[-1].rv if history else 0

    return thread.run(read())


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


def watch_while(
    thread: ServerThread, followers: dict[str, Follower], action: Callable[[], None]
) -> None:
    """Runs the followers while ``action`` runs, then until each has seen the last committed
    event of its resource; re-raises a follower's failure (e.g. a ``None`` status)."""
    stop, deadline = threading.Event(), time.monotonic() + 2 * ROLLOUT_TIMEOUT_S
    with ThreadPoolExecutor(len(followers)) as pool:
        running = [pool.submit(f.run, stop, deadline) for f in followers.values()]
        try:
            action()
            for (plural, follower), future in zip(followers.items(), running, strict=True):
                final_rv = last_committed_rv(thread, plural)
                wait_until(  # a follower that failed is done: its error is raised below
                    lambda f=follower, rv=final_rv, done=future.done: f.last_rv >= rv or done(),
                    ROLLOUT_TIMEOUT_S,
                    f"the {plural} watcher to catch up",
                )
        finally:
            stop.set()
        for future in running:
            future.result()


def test_typed_watchers_follow_a_rolling_update_and_never_see_a_none_status(
    tmp_path: Path,
) -> None:
    config = cluster_config(nodes=2)
    with ServerThread(ApiServer(), tmp_path / "kubeconfig") as thread:
        client = thread.server.client()
        nodes = thread.run(start_virtual_nodes(client, config))
        controllers = thread.run(start_controllers(client, config))
        api = k8s_config.new_client_from_config(config_file=str(thread.kubeconfig))
        apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        followers = {
            "replicasets": Follower(apps.list_namespaced_replica_set),
            "pods": Follower(core.list_namespaced_pod),
            "endpointslices": Follower(k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice),
            "deployments": Follower(apps.list_namespaced_deployment),
        }
        try:
            watch_while(thread, followers, lambda: roll_out_twice(thread, core, apps))
        finally:
            api.close()
            thread.run(controllers.stop())
            thread.run(nodes.stop())
    assert_followed_the_rollout(followers)


def roll_out_twice(thread: ServerThread, core: k8s.CoreV1Api, apps: k8s.AppsV1Api) -> None:
    """Creates a Service and a Deployment through the official client, then changes the image."""
    client = thread.server.client()
    core.create_namespaced_service(NS, MANIFESTS["services"])
    apps.create_namespaced_deployment(NS, deployment(replicas=3, probe=http_probe()))
    thread.run(wait_rollout(client, "web", ROLLOUT_TIMEOUT_S), ROLLOUT_TIMEOUT_S + 5)
    thread.run(change_image(client, "web", "demo:2"))
    thread.run(wait_rollout(client, "web", ROLLOUT_TIMEOUT_S), ROLLOUT_TIMEOUT_S + 5)


def assert_followed_the_rollout(followers: dict[str, Follower]) -> None:
    replicasets = followers["replicasets"].events
    revisions = {obj.metadata.name for _, obj in replicasets}
    assert len(revisions) == 2, revisions
    final = {obj.metadata.name: obj for _, obj in replicasets}
    assert sorted(rs.status.replicas for rs in final.values()) == [0, 3]
    assert {rs.status.replicas for rs in followers["replicasets"].objects("ADDED")} == {0}
    deleted_pods = followers["pods"].objects("DELETED")
    images = {pod.spec.containers[0].image for pod in deleted_pods}
    assert len(deleted_pods) == 3 and images == {"demo:1"}
    last_deployment = followers["deployments"].events[-1][1]
    assert last_deployment.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert last_deployment.status.observed_generation == last_deployment.metadata.generation
    assert last_deployment.status.updated_replicas == last_deployment.status.ready_replicas == 3
    slices = [obj for _, obj in followers["endpointslices"].events if obj.endpoints]
    ready = {e.addresses[0] for e in slices[-1].endpoints if e.conditions.ready}
    new_pods = {
        p.status.pod_ip
        for p in followers["pods"].objects("MODIFIED")
        if p.spec.containers[0].image == "demo:2" and p.status.pod_ip
    }
    assert ready == new_pods and len(ready) == 3
