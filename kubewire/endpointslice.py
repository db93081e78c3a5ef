"""What an EndpointSlice (``discovery.k8s.io/v1``) says about each endpoint.

Conditions, per KEP-1672 and the v1 API reference:

- ``ready`` nil counts as true ("unknown; in most cases consumers should interpret this unknown
  state as ready"); ready means serving and not terminating;
- ``serving`` nil defers to ``ready`` (KEP-1672; the v1 API reference of most releases, newer
  ones reword it as "nil should be interpreted as true", and kube-proxy's
  ``pkg/proxy/endpointslicecache.go`` reads nil as true). The readings differ only for a nil
  ``serving`` with ``ready: false``, which only a producer that never sets ``serving`` writes
  (the EndpointSlice controller sets it since v1.22), and there "not ready" is the safer guess;
- ``terminating`` nil counts as false.

Addresses: an endpoint's first address is its address; "no semantics are defined for additional
addresses beyond the first, and kube-proxy does not look at them" (v1 API reference).

Duplicates: an address may be listed twice, in one slice or, while the EndpointSlice controller
moves an endpoint between slices, in two slices of one Service ("clients of the EndpointSlice
API must iterate through all the existing EndpointSlices associated to a Service and build a
complete list of unique network endpoints", EndpointSlice docs). kube-proxy keeps one endpoint
per ``ip:port`` (``addEndpoints`` in ``pkg/proxy/endpointslicecache.go``), the first one met in
Go's map order over slices, so which copy wins there is unspecified. One rule here, the same for
every reader and independent of the order slices are listed: **the most usable copy wins**
(ready, then serving, then not terminating; ties by Pod then node name). An address any slice
still lists as ready is one some proxy may still route to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The label that ties an EndpointSlice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class EndpointState:
    """One endpoint's conditions, with the nil rules applied, and where it runs."""

    ready: bool
    serving: bool
    terminating: bool
    pod: str | None  # targetRef.name when the target is a Pod
    node: str | None  # nodeName

    def _rank(self) -> tuple[bool, bool, bool, str, str]:
        return (self.ready, self.serving, not self.terminating, self.pod or "", self.node or "")


def endpoint_conditions(conditions: Mapping[str, Any] | None) -> tuple[bool, bool, bool]:
    """(ready, serving, terminating) of an endpoint's ``conditions`` with the nil rules."""
    conditions = conditions or {}
    ready = conditions.get("ready")
    ready = True if ready is None else bool(ready)
    serving = conditions.get("serving")
    serving = ready if serving is None else bool(serving)
    return ready, serving, bool(conditions.get("terminating") or False)


def preferred(first: EndpointState | None, second: EndpointState) -> EndpointState:
    """The copy that counts when one address is listed twice (see the module docstring)."""
    if first is None or second._rank() > first._rank():
        return second
    return first


def _endpoint_state(endpoint: Mapping[str, Any]) -> EndpointState:
    ready, serving, terminating = endpoint_conditions(endpoint.get("conditions"))
    target = endpoint.get("targetRef") or {}
    pod = target.get("name") if target.get("kind", "Pod") == "Pod" else None
    return EndpointState(ready, serving, terminating, pod or None, endpoint.get("nodeName"))


def slice_endpoints(endpoint_slice: Mapping[str, Any]) -> dict[str, EndpointState]:
    """Address → state of the endpoints one EndpointSlice lists (duplicates resolved)."""
    result: dict[str, EndpointState] = {}
    for endpoint in endpoint_slice.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        if addresses:
            address = str(addresses[0])
            result[address] = preferred(result.get(address), _endpoint_state(endpoint))
    return result


def service_endpoints(slices: Iterable[Mapping[str, Any]]) -> dict[str, EndpointState]:
    """Address → state over all the EndpointSlices of one Service (and one port): each unique
    address once, whichever slice lists it, in any order of ``slices``."""
    result: dict[str, EndpointState] = {}
    for endpoint_slice in slices:
        for address, state in slice_endpoints(endpoint_slice).items():
            result[address] = preferred(result.get(address), state)
    return result


def port_endpoints(
    slices: Iterable[Mapping[str, Any]], port_name: str
) -> dict[int, dict[str, EndpointState]]:
    """Target port → address → state for one Service port name, over a Service's IPv4 slices
    (an IPv4 data plane): a slice's port of that name says where its endpoints listen."""
    by_port: dict[int, list[Mapping[str, Any]]] = {}
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType", "IPv4") != "IPv4":
            continue
        ports = [p for p in endpoint_slice.get("ports") or [] if (p.get("name") or "") == port_name]
        if ports and ports[0].get("port") is not None:
            by_port.setdefault(int(ports[0]["port"]), []).append(endpoint_slice)
    return {port: service_endpoints(group) for port, group in by_port.items()}
