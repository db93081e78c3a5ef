"""The list + watch bookkeeping on its own, without a server: resourceVersion, 410, the relist
diff and duplicates, as client-go's reflector and DeltaFIFO define them."""

from __future__ import annotations

import pytest

from kubewire.listwatch import (
    Change,
    JsonObject,
    ListWatchStore,
    WatchExpired,
    WatchFailed,
    raise_for_watch_error,
)


def pod(name: str, rv: int, namespace: str = "ns", uid: str = "") -> JsonObject:
    meta = {"name": name, "namespace": namespace, "resourceVersion": str(rv), "uid": uid or name}
    return {"kind": "Pod", "metadata": meta}


def listed(*objs: JsonObject, version: int) -> tuple[ListWatchStore, list[Change]]:
    store = ListWatchStore()
    return store, store.replace(list(objs), str(version))


def summary(changes: list[Change | None]) -> list[tuple[str, str]]:
    """(type, name) of each change, the name taken from the state the change is about."""
    out: list[tuple[str, str]] = []
    for change in changes:
        assert change is not None
        obj = change.new if change.new is not None else change.old
        assert obj is not None
        out.append((change.type, obj["metadata"]["name"]))
    return out


def test_first_list_adds_everything_and_sets_the_version_to_watch_from() -> None:
    store, changes = listed(pod("a", 3), pod("b", 5), version=7)
    assert summary(list(changes)) == [("ADDED", "a"), ("ADDED", "b")]
    assert store.resource_version == "7"
    assert store.lists == 1
    assert set(store.objects) == {("ns", "a"), ("ns", "b")}


def test_every_watch_event_advances_the_version_bookmarks_included() -> None:
    store, _ = listed(pod("a", 3), version=3)
    store.apply({"type": "MODIFIED", "object": pod("a", 8)})
    assert store.resource_version == "8"
    assert (
        store.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}) is None
    )
    assert store.resource_version == "12"
    assert store.objects[("ns", "a")]["metadata"]["resourceVersion"] == "8"


def test_watch_events_add_modify_and_delete_with_old_and_new_states() -> None:
    store, _ = listed(pod("a", 3), version=3)
    added = store.apply({"type": "ADDED", "object": pod("b", 4)})
    modified = store.apply({"type": "MODIFIED", "object": pod("a", 5)})
    final = pod("a", 6)
    deleted = store.apply({"type": "DELETED", "object": final})
    assert added == Change("ADDED", None, pod("b", 4))
    assert modified == Change("MODIFIED", pod("a", 3), pod("a", 5))
    assert deleted == Change("DELETED", final, None)  # the final state, as the watch sent it
    assert set(store.objects) == {("ns", "b")}


def test_duplicates_are_ignored() -> None:
    store, _ = listed(pod("a", 3), version=3)
    assert store.apply({"type": "MODIFIED", "object": pod("a", 3)}) is None
    assert store.apply({"type": "ADDED", "object": pod("a", 3)}) is None
    assert store.apply({"type": "DELETED", "object": pod("ghost", 4)}) is None
    assert store.resource_version == "4"  # ignored, yet the stream did move on
    assert list(store.objects) == [("ns", "a")]


def test_relist_after_410_delivers_deletes_updates_and_adds() -> None:
    """While the watch was gone: a deleted, b modified, c unchanged, d created."""
    store, _ = listed(pod("a", 1), pod("b", 2), pod("c", 3), version=3)
    with pytest.raises(WatchExpired):
        store.apply({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
    changes = store.replace([pod("b", 9), pod("c", 3), pod("d", 10)], "11")
    assert summary(list(changes)) == [("DELETED", "a"), ("MODIFIED", "b"), ("ADDED", "d")]
    assert changes[0] == Change("DELETED", pod("a", 1), None)  # the last known state
    assert changes[1] == Change("MODIFIED", pod("b", 2), pod("b", 9))
    assert store.resource_version == "11"
    assert store.lists == 2
    assert set(store.objects) == {("ns", "b"), ("ns", "c"), ("ns", "d")}


def test_relist_sees_a_recreated_object_as_modified_with_both_uids() -> None:
    store, _ = listed(pod("a", 1, uid="u1"), version=1)
    (change,) = store.replace([pod("a", 5, uid="u2")], "5")
    assert change.type == "MODIFIED"
    assert change.old is not None and change.new is not None
    assert (change.old["metadata"]["uid"], change.new["metadata"]["uid"]) == ("u1", "u2")


def test_objects_are_keyed_by_namespace_and_name() -> None:
    store, _ = listed(pod("a", 1, namespace="x"), pod("a", 2, namespace="y"), version=2)
    assert set(store.objects) == {("x", "a"), ("y", "a")}
    store.apply({"type": "DELETED", "object": pod("a", 3, namespace="x")})
    assert set(store.objects) == {("y", "a")}


def test_error_events_other_than_410_are_failed_watches_to_resume() -> None:
    store, _ = listed(pod("a", 1), version=1)
    with pytest.raises(WatchFailed, match="etcd unavailable"):
        store.apply({"type": "ERROR", "object": {"code": 500, "message": "etcd unavailable"}})
    assert store.resource_version == "1"  # an ERROR carries no object version
    raise_for_watch_error({"type": "MODIFIED", "object": pod("a", 2)})  # not an error: no raise
