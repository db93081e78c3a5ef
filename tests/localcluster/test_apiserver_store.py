"""The store and in-process client: the semantics controllers rely on, without HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from localcluster.apiclient import ApiError
from localcluster.apiserver import InProcessClient, Store
from localcluster.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from localcluster.apiserver.selectors import SelectorError, compile_selectors


def deployment(name: str = "web", image: str = "app:1") -> dict:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }


def pod(name: str, node: str | None = "n1", labels: dict[str, str] | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "i:1"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


@pytest.fixture
def client() -> InProcessClient:
    return InProcessClient(Store(history_size=50))


async def test_create_sets_metadata_and_defaults(client: InProcessClient) -> None:
    created = await client.create("deployments", deployment(), "default")
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
    assert created["spec"]["strategy"]["rollingUpdate"] == {
        "maxUnavailable": "25%",
        "maxSurge": "25%",
    }
    with pytest.raises(ApiError) as exc:
        await client.create("deployments", deployment(), "default")
    assert (exc.value.code, exc.value.reason) == (409, "AlreadyExists")
    generated = await client.create(
        "pods", {"metadata": {"generateName": "web-"}, "spec": {}}, "default"
    )
    assert (
        generated["metadata"]["name"].startswith("web-") and len(generated["metadata"]["name"]) == 9
    )
    with pytest.raises(ApiError) as exc:
        await client.create("pods", pod("x"), "missing-ns")
    assert exc.value.code == 404


async def test_generation_bumps_on_spec_not_status(client: InProcessClient) -> None:
    created = await client.create("deployments", deployment(), "default")
    status = dict(created, status={"replicas": 2, "observedGeneration": 1})
    after_status = await client.update("deployments", status, "default", subresource="status")
    assert after_status["metadata"]["generation"] == 1 and after_status["status"]["replicas"] == 2
    after_spec = await client.patch(
        "deployments", "web", {"spec": {"replicas": 3}}, "merge", "default"
    )
    assert after_spec["metadata"]["generation"] == 2
    assert after_spec["status"]["replicas"] == 2  # a main-resource write keeps status


async def test_stale_update_conflicts(client: InProcessClient) -> None:
    created = await client.create("deployments", deployment(), "default")
    await client.patch("deployments", "web", {"spec": {"replicas": 5}}, "merge", "default")
    with pytest.raises(ApiError) as exc:
        await client.update("deployments", created, "default")
    assert (exc.value.code, exc.value.reason) == (409, "Conflict")


async def test_watch_resumes_without_gaps_and_expires(client: InProcessClient) -> None:
    _, rv = await client.list("pods", "default")
    for n in range(3):
        await client.create("pods", pod(f"p{n}"), "default")
    seen: list[str] = []
    stream = client.watch("pods", "default", rv)
    async for event in stream:
        seen.append(event["object"]["metadata"]["name"])
        if len(seen) == 2:
            rv = event["object"]["metadata"]["resourceVersion"]
            break
    await stream.aclose()
    await client.create("pods", pod("p3"), "default")
    async for event in client.watch("pods", "default", rv, timeout_seconds=0.2):
        seen.append(event["object"]["metadata"]["name"])
    assert seen == ["p0", "p1", "p2", "p3"]
    for n in range(60):
        await client.patch(
            "pods", "p0", {"metadata": {"labels": {"n": str(n)}}}, "merge", "default"
        )
    with pytest.raises(ApiError) as exc:
        async for _ in client.watch("pods", "default", rv):
            pass
    assert (exc.value.code, exc.value.reason) == (410, "Expired")


async def test_watch_selector_exit_is_deleted(client: InProcessClient) -> None:
    await client.create("pods", pod("a", labels={"tier": "web"}), "default")
    stream = client.watch("pods", "default", label_selector="tier=web")
    first = await anext(stream)
    await client.patch("pods", "a", {"metadata": {"labels": {"tier": "db"}}}, "merge", "default")
    second = await asyncio.wait_for(anext(stream), 1)
    await stream.aclose()
    assert (first["type"], second["type"]) == ("ADDED", "DELETED")


async def test_graceful_pod_deletion(client: InProcessClient) -> None:
    await client.create("pods", pod("bound"), "default")
    await client.create("pods", pod("unbound", node=None), "default")
    pending = await client.delete("pods", "bound", "default")
    assert pending["metadata"]["deletionGracePeriodSeconds"] == 30
    assert (await client.get("pods", "bound", "default"))["metadata"]["deletionTimestamp"]
    await client.delete("pods", "bound", "default", grace_period_seconds=0)
    await client.delete("pods", "unbound", "default")
    items, _ = await client.list("pods", "default")
    assert items == []


async def test_scale_subresource(client: InProcessClient) -> None:
    await client.create("deployments", deployment(), "default")
    scale = await client.patch(
        "deployments", "web", {"spec": {"replicas": 7}}, "merge", "default", "scale"
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 7
    assert scale["status"]["selector"] == "app=web"
    assert (await client.get("deployments", "web", "default"))["spec"]["replicas"] == 7


def test_selectors() -> None:
    obj = {
        "metadata": {"name": "a", "labels": {"app": "web", "tier": "fe"}},
        "spec": {"nodeName": "n1"},
    }
    assert compile_selectors("app=web,tier in (fe,be),!gone,app", None)(obj)
    assert not compile_selectors("tier notin (fe)", None)(obj)
    assert compile_selectors("app!=db", "spec.nodeName=n1,metadata.name!=b")(obj)
    assert not compile_selectors(None, "status.phase=Running")(obj)
    with pytest.raises(SelectorError):
        compile_selectors("a in b", None)


def test_patch_formats() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_patch(doc, {"a": {"b": None, "c": [3]}}) == {"a": {"c": [3]}, "d": 1}
    assert json_patch(
        doc, [{"op": "add", "path": "/a/c/-", "value": 3}, {"op": "remove", "path": "/d"}]
    ) == {"a": {"b": 1, "c": [1, 2, 3]}}
    spec = {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
    patched = strategic_merge_patch(
        spec,
        {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "2"}],
        },
    )
    assert patched == {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}
    deleted = strategic_merge_patch(spec, {"containers": [{"name": "a", "$patch": "delete"}]})
    assert deleted == {"containers": [{"name": "b", "image": "1"}]}


async def test_watch_from_a_future_version_is_410(client: InProcessClient) -> None:
    """An RV from an earlier server incarnation must force a relist, not skip events."""
    _, rv = await client.list("pods", "default")
    with pytest.raises(ApiError) as exc:
        async for _ in client.watch("pods", "default", str(int(rv) + 100)):
            pass
    assert exc.value.code == 410


async def test_disconnected_http_watchers_are_released() -> None:
    from localcluster.apiserver import ApiServer

    async with ApiServer() as server:
        async with server.http_client() as http:
            stream = http.watch("pods", "default")
            task = asyncio.ensure_future(anext(stream))
            for _ in range(50):
                if server.store.watchers.get("pods"):
                    break
                await asyncio.sleep(0.02)
            assert len(server.store.watchers["pods"]) == 1
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):
            if not server.store.watchers["pods"]:
                break
            await asyncio.sleep(0.02)
        assert not server.store.watchers["pods"]


async def test_invalid_workloads_are_422(client: InProcessClient) -> None:
    mismatched = deployment()
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    negative = deployment("neg")
    negative["spec"]["replicas"] = -1
    for bad in (mismatched, negative, {"metadata": {"name": "Bad_Name"}, "spec": {}}):
        with pytest.raises(ApiError) as exc:
            await client.create("deployments", bad, "default")
        assert (exc.value.code, exc.value.reason) == (422, "Invalid")
    assert "`selector` does not match template `labels`" in str(
        await _error(client.create("deployments", mismatched, "default"))
    )
    await client.create("deployments", deployment(), "default")
    moved = {"spec": {"selector": {"matchLabels": {"app": "x"}}}}
    assert "field is immutable" in str(
        await _error(client.patch("deployments", "web", moved, "merge", "default"))
    )
    expressions = deployment("expr")
    expressions["spec"]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["expr"]}]
    }
    assert (await client.create("deployments", expressions, "default"))["metadata"][
        "name"
    ] == "expr"


async def _error(call: Any) -> ApiError:
    with pytest.raises(ApiError) as exc:
        await call
    return exc.value
