"""Conformance-style checks with the official ``kubernetes`` Python client (synchronous, against
the server on a real HTTPS port), plus the HTTP ``ApiClient`` over TCP and the unix socket."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from localcluster.apiclient import ApiError
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from localcluster.events import event_for

NS = "default"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ServerThread]:
    server = ApiServer(
        unix_socket=str(tmp_path / "api.sock"), history_size=40, bookmark_interval_s=0.2
    )
    with ServerThread(server, tmp_path / "kubeconfig") as thread:
        yield thread


def make_pod(name: str, labels: dict[str, str] | None = None, node: str | None = "n1") -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "demo:1"}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def make_deployment(name: str = "web") -> dict:
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "demo:1"}]},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": template},
    }


def test_requests_without_token_get_401(cluster: ServerThread) -> None:
    context = ssl.create_default_context(cadata=cluster.server.ca_pem.decode())
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(cluster.server.url + "/api/v1/pods", context=context, timeout=5)
    body = json.loads(exc.value.read())
    assert exc.value.code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"


def test_watch_resumes_across_reconnect_without_gaps_or_duplicates(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    for n in range(3):
        core.create_namespaced_pod(NS, make_pod(f"before-{n}"))
    listed = core.list_namespaced_pod(NS)
    assert [p.metadata.name for p in listed.items] == ["before-0", "before-1", "before-2"]
    for n in range(4):
        core.create_namespaced_pod(NS, make_pod(f"after-{n}"))
    seen: list[tuple[str, str]] = []
    first = k8s_watch.Watch()
    last_rv = listed.metadata.resource_version
    for event in first.stream(
        core.list_namespaced_pod, NS, resource_version=last_rv, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name))
        last_rv = event["object"].metadata.resource_version
        if len(seen) == 2:
            first.stop()
    # while disconnected: one more create and an update of an already-seen pod
    core.create_namespaced_pod(NS, make_pod("after-4"))
    core.patch_namespaced_pod("after-0", NS, {"metadata": {"labels": {"seen": "twice"}}})
    second = k8s_watch.Watch()
    for event in second.stream(
        core.list_namespaced_pod, NS, resource_version=last_rv, timeout_seconds=1
    ):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [
        ("ADDED", "after-0"),
        ("ADDED", "after-1"),
        ("ADDED", "after-2"),
        ("ADDED", "after-3"),
        ("ADDED", "after-4"),
        ("MODIFIED", "after-0"),
    ]


def test_watch_from_compacted_version_is_410(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, make_pod("churn"))
    stale = core.list_namespaced_pod(NS).metadata.resource_version
    for n in range(50):  # history_size=40: the events after `stale` fall out of the ring
        core.patch_namespaced_pod("churn", NS, {"metadata": {"labels": {"n": str(n)}}})
    with pytest.raises(ApiException) as exc:
        for _ in k8s_watch.Watch().stream(
            core.list_namespaced_pod, NS, resource_version=stale, timeout_seconds=2
        ):
            pass
    assert exc.value.status == 410


def test_watch_bookmarks_carry_current_version(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    rv = core.list_namespaced_pod(NS).metadata.resource_version
    events = list(
        k8s_watch.Watch().stream(
            core.list_namespaced_pod,
            NS,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
    )
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[0]["raw_object"]["metadata"]["resourceVersion"] == rv


def test_stale_update_is_409_conflict(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    created = apps.create_namespaced_deployment(NS, make_deployment())
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    stale = api.sanitize_for_serialization(created)
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment("web", NS, stale)
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(NS, make_deployment())
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("nope", NS)
    assert exc.value.status == 404 and json.loads(exc.value.body)["reason"] == "NotFound"


def test_each_patch_type(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, make_deployment())
    sidecar = {
        "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:1"}]}}}
    }
    merged = apps.patch_namespaced_deployment(
        "web", NS, sidecar, _content_type="application/merge-patch+json"
    )
    assert [c.name for c in merged.spec.template.spec.containers] == ["side"]  # lists replaced
    restore = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "demo:2"}]}}}}
    strategic = apps.patch_namespaced_deployment(
        "web", NS, restore, _content_type="application/strategic-merge-patch+json"
    )
    images = {c.name: c.image for c in strategic.spec.template.spec.containers}
    assert images == {"side": "side:1", "app": "demo:2"}  # merged by name
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels", "value": {"team": "a"}},
    ]
    jsonp = apps.patch_namespaced_deployment(
        "web", NS, ops, _content_type="application/json-patch+json"
    )
    assert jsonp.spec.replicas == 4 and jsonp.metadata.labels == {"team": "a"}
    assert jsonp.metadata.generation == 4  # three spec changes after creation; labels do not count
    scale = apps.patch_namespaced_deployment_scale(
        "web", NS, {"spec": {"replicas": 6}}, _content_type="application/merge-patch+json"
    )
    assert (
        scale.spec.replicas == 6 and apps.read_namespaced_deployment("web", NS).spec.replicas == 6
    )


def test_label_and_field_selectors(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, make_pod("a", {"app": "web", "tier": "fe"}, node="n1"))
    core.create_namespaced_pod(NS, make_pod("b", {"app": "web", "tier": "be"}, node="n2"))
    core.create_namespaced_pod(NS, make_pod("c", {"app": "db"}, node=None))

    def names(**selectors: str) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod(NS, **selectors).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app!=web") == ["c"]
    assert names(label_selector="tier in (fe,xx)") == ["a"]
    assert names(label_selector="tier notin (fe)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(field_selector="spec.nodeName=n2") == ["b"]
    assert names(field_selector="metadata.name!=a,status.phase=Pending") == ["b", "c"]
    assert [
        p.metadata.name
        for p in core.list_pod_for_all_namespaces(field_selector="metadata.namespace=default").items
    ] == ["a", "b", "c"]
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod(NS, label_selector="tier in fe")
    assert exc.value.status == 400


def test_limit_and_continue_page_through_everything(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    for n in range(7):
        core.create_namespaced_pod(NS, make_pod(f"p{n}"))
    pages, token = [], None
    while True:
        page = core.list_namespaced_pod(NS, limit=3, _continue=token)
        pages.append([p.metadata.name for p in page.items])
        token = page.metadata._continue
        if not token:
            break
    assert pages == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]


def test_graceful_pod_deletion(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(NS, make_pod("bound"))
    core.delete_namespaced_pod("bound", NS, grace_period_seconds=20)
    terminating = core.read_namespaced_pod("bound", NS)
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 20
    core.delete_namespaced_pod("bound", NS, grace_period_seconds=0)  # the node's confirmation
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("bound", NS)
    assert exc.value.status == 404


async def test_http_client_over_tcp() -> None:
    async with ApiServer(history_size=5) as server, server.http_client() as tcp:
        created = await tcp.create("pods", make_pod("x"), NS)
        assert created["metadata"]["uid"]
        items, rv = await tcp.list("pods", NS)
        assert [p["metadata"]["name"] for p in items] == ["x"]
        await tcp.patch("pods", "x", {"metadata": {"labels": {"k": "v"}}}, "merge", NS)
        events = [e async for e in tcp.watch("pods", NS, rv, timeout_seconds=1)]
        assert [e["type"] for e in events] == ["MODIFIED"]
        for n in range(10):
            await tcp.patch("pods", "x", {"metadata": {"labels": {"k": str(n)}}}, "merge", NS)
        with pytest.raises(ApiError) as exc:
            async for _ in tcp.watch("pods", NS, rv):
                pass
        assert exc.value.code == 410


async def test_http_client_over_unix_socket(tmp_path: Path) -> None:
    server = ApiServer(unix_socket=str(tmp_path / "api.sock"))
    async with server, server.http_client(via_unix_socket=True) as unix:
        await unix.create("pods", make_pod("y"), NS)
        assert (await unix.get("pods", "y", NS))["metadata"]["name"] == "y"
        with pytest.raises(ApiError) as exc:
            await unix.get("pods", "missing", NS)
        assert (exc.value.code, exc.value.reason) == (404, "NotFound")
    assert not (tmp_path / "api.sock").exists()


def test_dry_run_changes_nothing(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    would_be = apps.create_namespaced_deployment(NS, make_deployment(), dry_run="All")
    assert would_be.metadata.name == "web"
    assert apps.list_namespaced_deployment(NS).items == []
    apps.create_namespaced_deployment(NS, make_deployment())
    preview = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 9}}, dry_run="All")
    assert preview.spec.replicas == 9
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2


def test_recorded_events_are_readable_as_core_and_events_v1(
    cluster: ServerThread, api: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(api)
    created = core.create_namespaced_pod(NS, make_pod("evented"))
    involved = api.sanitize_for_serialization(created)
    event = event_for(involved, "Scheduled", "to n1", "scheduler", "Normal")
    cluster.run(cluster.server.client().create("events", event, NS))
    selector = f"involvedObject.name=evented,involvedObject.uid={created.metadata.uid}"
    core_events = core.list_namespaced_event(NS, field_selector=selector).items
    assert [(e.reason, e.message, e.involved_object.kind) for e in core_events] == [
        ("Scheduled", "to n1", "Pod")
    ]
    v1_events = k8s.EventsV1Api(api).list_namespaced_event(NS).items
    assert [(e.reason, e.note, e.regarding.name) for e in v1_events] == [
        ("Scheduled", "to n1", "evented")
    ]


async def test_http_watch_carries_objects_larger_than_aiohttp_line_limit() -> None:
    big = make_pod("big")
    big["metadata"]["annotations"] = {"blob": "x" * 300_000}
    async with ApiServer() as server, server.http_client() as tcp:
        _, rv = await tcp.list("pods", NS)
        await tcp.create("pods", big, NS)
        events = [e async for e in tcp.watch("pods", NS, rv, timeout_seconds=1)]
    assert [len(e["object"]["metadata"]["annotations"]["blob"]) for e in events] == [300_000]
