"""The EndpointSlice reading rules every room shares: nil conditions, first address, duplicates."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from kubewire import EndpointState, endpoint_conditions, service_endpoints, slice_endpoints


def endpoint(
    address: str, pod: str = "p", node: str | None = "node-1", **conditions: bool | None
) -> dict[str, Any]:
    return {
        "addresses": [address],
        "conditions": conditions,
        "nodeName": node,
        "targetRef": {"kind": "Pod", "name": pod},
    }


def endpoint_slice(name: str, *endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "addressType": "IPv4", "endpoints": list(endpoints)}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, (True, True, False)),  # all nil: ready, hence serving; not terminating
        ({}, (True, True, False)),
        ({"ready": None, "serving": None, "terminating": None}, (True, True, False)),
        ({"ready": False}, (False, False, False)),  # serving nil defers to ready
        ({"ready": True, "serving": False}, (True, False, False)),  # explicit values stand
        ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
        ({"ready": False, "serving": False, "terminating": True}, (False, False, True)),
        ({"serving": True, "terminating": True}, (True, True, True)),  # ready nil is true
    ],
)
def test_nil_conditions_follow_the_v1_api(
    conditions: dict[str, bool | None] | None, expected: tuple[bool, bool, bool]
) -> None:
    assert endpoint_conditions(conditions) == expected


def test_slice_reads_target_node_and_the_first_address_only() -> None:
    listed = endpoint("10.0.0.1", "web-a", "node-2", ready=True)
    listed["addresses"] = ["10.0.0.1", "10.0.0.99"]  # beyond the first: no defined meaning
    not_a_pod = endpoint("10.0.0.2", ready=True)
    not_a_pod["targetRef"] = {"kind": "Node", "name": "node-1"}
    no_address = endpoint("10.0.0.3") | {"addresses": []}
    states = slice_endpoints(endpoint_slice("s", listed, not_a_pod, no_address))
    assert states == {
        "10.0.0.1": EndpointState(True, True, False, "web-a", "node-2"),
        "10.0.0.2": EndpointState(True, True, False, None, "node-1"),
    }


def test_an_empty_or_endpointless_slice_lists_nothing() -> None:
    assert slice_endpoints({}) == {}
    assert slice_endpoints(endpoint_slice("s")) == {}
    assert service_endpoints([]) == {}


DUPLICATES = [
    endpoint("10.0.0.1", ready=False, serving=False, terminating=True),
    endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
    endpoint("10.0.0.1", ready=False),
    endpoint("10.0.0.1", ready=True),
]


def test_the_most_usable_copy_of_an_address_wins_whatever_the_order() -> None:
    for order in itertools.permutations(DUPLICATES):
        within = slice_endpoints(endpoint_slice("one", *order))
        across = service_endpoints(endpoint_slice(f"s{i}", ep) for i, ep in enumerate(order))
        assert within == across == {"10.0.0.1": EndpointState(True, True, False, "p", "node-1")}


def test_serving_beats_not_serving_among_terminating_copies() -> None:
    terminating = DUPLICATES[:2]
    for order in itertools.permutations(terminating):
        states = service_endpoints(endpoint_slice(f"s{i}", ep) for i, ep in enumerate(order))
        assert states["10.0.0.1"] == EndpointState(False, True, True, "p", "node-1")


def test_equally_usable_copies_resolve_by_name_not_by_order() -> None:
    copies = [endpoint("10.0.0.1", "web-a", "node-1"), endpoint("10.0.0.1", "web-b", "node-2")]
    results = {
        tuple(service_endpoints([endpoint_slice("s", *order)]).values())
        for order in itertools.permutations(copies)
    }
    assert results == {(EndpointState(True, True, False, "web-b", "node-2"),)}


def test_distinct_addresses_of_several_slices_are_all_kept() -> None:
    first = endpoint_slice("a", endpoint("10.0.0.1"), endpoint("10.0.0.2", ready=False))
    second = endpoint_slice("b", endpoint("10.0.0.3", terminating=True, ready=False))
    states = service_endpoints([first, second])
    assert sorted(states) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert states["10.0.0.3"] == EndpointState(False, False, True, "p", "node-1")
