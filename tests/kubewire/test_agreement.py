"""The analyzer and the local cluster's kube-proxy read the same EndpointSlices the same way.

Both go through ``kubewire``; this test feeds one set of slices to each (the analyzer through a
watch file and ``endpoint_membership``, the proxy through ``plan_ports``) on the edge cases where
their copies used to drift: an address listed in two slices, nil ``serving``, terminating
endpoints (serving and not), nil ``ready``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analyzer.events import endpoint_membership, read_events
from kubewire import EndpointState, preferred
from localcluster.proxy.rules import plan_ports

T0 = 1_700_000_000_000_000_000
PORT = 8080


def endpoint(address: str, pod: str, node: str, **conditions: bool) -> dict[str, Any]:
    return {
        "addresses": [address],
        "conditions": conditions,
        "nodeName": node,
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"},
    }


def endpoint_slice(name: str, *endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


SERVICE = {
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "type": "ClusterIP",
        "clusterIP": "198.18.128.10",
        "ports": [{"name": "http", "port": 80}],
    },
}

# (slices, the state every reader must give each address)
CASES: dict[str, tuple[list[dict[str, Any]], dict[str, tuple[bool, bool, bool]]]] = {
    "address in two slices, moving from a stale copy": (
        [
            endpoint_slice("web-a", endpoint("10.0.0.1", "web-1", "node-1", ready=False)),
            endpoint_slice("web-b", endpoint("10.0.0.1", "web-1", "node-1", ready=True)),
        ],
        {"10.0.0.1": (True, True, False)},
    ),
    "nil serving defers to ready": (
        [
            endpoint_slice(
                "web-a",
                endpoint("10.0.0.1", "web-1", "node-1", ready=False),
                endpoint("10.0.0.2", "web-2", "node-2", ready=True),
            )
        ],
        {"10.0.0.1": (False, False, False), "10.0.0.2": (True, True, False)},
    ),
    "terminating, serving and not": (
        [
            endpoint_slice(
                "web-a",
                endpoint(
                    "10.0.0.1", "web-1", "node-1", ready=False, serving=True, terminating=True
                ),
                endpoint(
                    "10.0.0.2", "web-2", "node-2", ready=False, serving=False, terminating=True
                ),
                endpoint("10.0.0.3", "web-3", "node-2", ready=False, terminating=True),  # nil
            )
        ],
        {
            "10.0.0.1": (False, True, True),
            "10.0.0.2": (False, False, True),
            "10.0.0.3": (False, False, True),  # nil serving of a terminating one: not serving
        },
    ),
    "nil ready counts as ready, in either slice": (
        [
            endpoint_slice("web-a", endpoint("10.0.0.1", "web-1", "node-1", terminating=False)),
            endpoint_slice(
                "web-b",
                endpoint(
                    "10.0.0.1", "web-1", "node-1", ready=False, serving=True, terminating=True
                ),
            ),
        ],
        {"10.0.0.1": (True, True, False)},
    ),
}


def membership(tmp_path: Path, slices: list[dict[str, Any]]) -> pd.DataFrame:
    """The analyzer's endpoint table after a watch that added the slices one by one."""
    path = tmp_path / "events.jsonl"
    with path.open("w") as out:
        for i, sl in enumerate(slices):
            line = {"type": "ADDED", "recv_ns": T0 + i, "kind": "EndpointSlice", "object": sl}
            out.write(json.dumps(line) + "\n")
    return endpoint_membership(read_events(path))


def analyzer_view(tmp_path: Path, slices: list[dict[str, Any]]) -> dict[str, EndpointState]:
    """Open intervals of the analyzer's endpoint table, one per (slice, address), reduced per
    address by the shared duplicate rule."""
    rows = membership(tmp_path, slices)
    assert rows["to_ns"].isna().all() and set(rows["service"]) == {"web"}
    view: dict[str, EndpointState] = {}
    for r in rows.itertuples():
        state = EndpointState(
            bool(r.ready), bool(r.serving), bool(r.terminating), str(r.pod), str(r.node)
        )
        view[str(r.ip)] = preferred(view.get(str(r.ip)), state)
    return view


def proxy_view(slices: list[dict[str, Any]], fallback: bool) -> dict[str, tuple[bool, bool, bool]]:
    """What the node's rules route to: the usable endpoints of the one service port."""
    (plan,) = plan_ports([SERVICE], slices, "node-1", terminating_fallback=fallback)
    assert {e.port for e in plan.cluster_endpoints} <= {PORT}
    return {e.ip: (e.ready, e.serving, e.terminating) for e in plan.cluster_endpoints}


def usable(states: dict[str, tuple[bool, bool, bool]], fallback: bool) -> dict[str, Any]:
    """kube-proxy's choice (KEP-1669): ready endpoints, else serving terminating ones."""
    ready = {a: s for a, s in states.items() if s[0]}
    if ready or not fallback:
        return ready
    return {a: s for a, s in states.items() if s[1] and s[2]}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fallback", [False, True])
def test_analyzer_and_proxy_agree(tmp_path: Path, case: str, fallback: bool) -> None:
    slices, expected = CASES[case]
    analyzer = analyzer_view(tmp_path, slices)
    assert {a: (s.ready, s.serving, s.terminating) for a, s in analyzer.items()} == expected
    assert proxy_view(slices, fallback) == usable(expected, fallback)
    assert proxy_view(list(reversed(slices)), fallback) == usable(expected, fallback)


def test_the_proxy_routes_to_a_serving_terminating_endpoint_only_as_a_fallback() -> None:
    slices, _ = CASES["terminating, serving and not"]
    assert proxy_view(slices, fallback=False) == {}
    assert proxy_view(slices, fallback=True) == {"10.0.0.1": (False, True, True)}


def test_membership_keeps_one_row_per_slice_for_a_duplicated_address(tmp_path: Path) -> None:
    slices, _ = CASES["address in two slices, moving from a stale copy"]
    rows = membership(tmp_path, slices)
    assert sorted(zip(rows["slice"], rows["ready"], strict=True)) == [
        ("web-a", False),
        ("web-b", True),
    ]
