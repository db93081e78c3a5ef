"""The one informer on top of ApiClient, and the client-side event recorder: what the loop adds
to ``kubewire.listwatch`` (field selectors, ERROR events in the stream, the level-triggered
first sync of kube-proxy and the LB) and how Events reach the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from localcluster.apiclient import ApiClient, JsonObject, WatchEvent
from localcluster.apiserver import InProcessClient, Store
from localcluster.events import MAX_QUEUED_EVENTS, EventRecorder
from localcluster.informer import Informer, ObjectCache

NS = "default"


def pod(name: str, node: str = "") -> JsonObject:
    spec: JsonObject = {"containers": [{"name": "app", "image": "demo"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec}


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_field_selector_keeps_only_the_pods_of_one_node() -> None:
    """The kubelet's watch: spec.nodeName=<its node>, on the list and on the watch."""
    store = Store()
    client = InProcessClient(store)
    await client.create("pods", pod("before", node="n1"), NS)
    await client.create("pods", pod("elsewhere", node="n2"), NS)
    informer = Informer(client, "pods", field_selector="spec.nodeName=n1")
    seen: list[tuple[str, str]] = []
    informer.add_handler(
        lambda kind, old, new: seen.append((kind, (new or old or {})["metadata"]["name"]))
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        await client.create("pods", pod("after", node="n1"), NS)
        await client.create("pods", pod("other", node="n2"), NS)
        await client.delete("pods", "before", NS, grace_period_seconds=0)
        await eventually(lambda: ("DELETED", "before") in seen, "the delete")
        assert seen == [("ADDED", "before"), ("ADDED", "after"), ("DELETED", "before")]
        assert [name for _, name in informer.cache] == ["after"]
    finally:
        await stop(task)
        store.close_watchers()


class ScriptedClient:
    """Lists and watch streams played from a script; records the versions watched from."""

    def __init__(self, lists: list[list[JsonObject]], streams: list[list[WatchEvent]]) -> None:
        self.lists = lists
        self.streams = streams
        self.watched_from: list[str | None] = []

    async def list(self, resource: str, **_: Any) -> tuple[list[JsonObject], str]:
        items = self.lists.pop(0)
        return items, str(max((int(o["metadata"]["resourceVersion"]) for o in items), default=1))

    async def watch(self, resource: str, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(kwargs.get("resource_version"))
        if not self.streams:
            await asyncio.Event().wait()  # a quiet watch, until cancelled
        for event in self.streams.pop(0):
            yield event


def versioned(name: str, rv: int) -> JsonObject:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)}}


async def test_410_error_event_in_the_stream_relists_and_an_ended_stream_resumes() -> None:
    """An ended stream resumes from the last version seen; an ERROR 410 event relists, and the
    relist delivers what was missed (client-go reflector)."""
    client = ScriptedClient(
        lists=[[versioned("a", 1)], [versioned("b", 6)]],
        streams=[
            [{"type": "MODIFIED", "object": versioned("a", 4)}],  # then the server ends it
            [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}],
        ],
    )
    informer = Informer(cast(ApiClient, client), "pods")
    seen: list[tuple[str, str]] = []
    informer.add_handler(
        lambda kind, old, new: seen.append((kind, (new or old or {})["metadata"]["name"]))
    )
    task = asyncio.create_task(informer.run())
    try:
        await eventually(lambda: informer.relists == 2 and len(client.watched_from) == 3, "relist")
        assert client.watched_from == ["1", "4", "6"]
        assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "b")]
    finally:
        await stop(task)


async def test_object_cache_signals_its_first_sync_even_when_empty() -> None:
    """kube-proxy and the LB program their (empty) state once the first lists are in."""
    store = Store()
    client = InProcessClient(store)
    changes: list[int] = []
    cache = ObjectCache(client, "services", lambda: changes.append(len(changes)))
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.synced.wait(), 5)
        assert changes == [0]
        await client.create(
            "services", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}, NS
        )
        await eventually(lambda: len(changes) == 2, "the change")
        assert [s["metadata"]["name"] for s in cache.values()] == ["web"]
    finally:
        await stop(task)
        store.close_watchers()


async def test_events_are_posted_in_order_without_waiting() -> None:
    store = Store()
    client = InProcessClient(store)
    involved = await client.create("pods", pod("evented"), NS)
    recorder = EventRecorder(client, "kubelet")
    for reason in ("Scheduled", "Pulled", "Created", "Started"):
        recorder.emit({"kind": "Pod", "apiVersion": "v1", **involved}, reason, f"{reason} it")
    recorder.emit(involved, "Unhealthy", "probe failed", "Warning")

    async def recorded() -> list[JsonObject]:
        items, _ = await client.list("events", NS)
        return items

    deadline = asyncio.get_running_loop().time() + 5
    while len(items := await recorded()) < 5:
        assert asyncio.get_running_loop().time() < deadline, "events not posted"
        await asyncio.sleep(0.01)
    await recorder.close()
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))  # the order they were created
    assert [e["reason"] for e in items] == [
        "Scheduled",
        "Pulled",
        "Created",
        "Started",
        "Unhealthy",
    ]
    first = items[0]
    assert first["involvedObject"]["uid"] == involved["metadata"]["uid"]
    assert (first["source"]["component"], first["type"], items[-1]["type"]) == (
        "kubelet",
        "Normal",
        "Warning",
    )


async def test_a_full_event_queue_drops_instead_of_blocking() -> None:
    """Upstream's broadcaster drops when maxQueuedEvents wait (DropIfChannelFull)."""
    posted: list[str] = []
    gate = asyncio.Event()

    class SlowClient:
        async def create(
            self, resource: str, obj: JsonObject, namespace: str | None = None
        ) -> JsonObject:
            await gate.wait()
            posted.append(obj["reason"])
            return obj

    recorder = EventRecorder(cast(ApiClient, SlowClient()), "scheduler")
    target = {"kind": "Pod", "metadata": {"name": "p", "namespace": NS}}
    for i in range(MAX_QUEUED_EVENTS + 5):
        recorder.emit(target, f"r{i}", "m")  # returns at once, the server being stuck
    gate.set()
    await eventually(lambda: len(posted) >= MAX_QUEUED_EVENTS, "the queued events")
    await asyncio.sleep(0.05)
    await recorder.close()
    # emit never yields, so the sender starts only after the burst: the first 1000 went out.
    assert posted == [f"r{i}" for i in range(MAX_QUEUED_EVENTS)]
