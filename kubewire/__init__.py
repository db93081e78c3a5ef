"""Kubernetes wire rules that several rooms read or write the same way.

A dependency-free leaf: the standard library only, and nothing of ours, so the analyzer, the
local cluster, the load generator, the demo app and the CLI may all import it without importing
each other. Three rules live here:

- ``kubewire.endpointslice``: what an EndpointSlice says about each endpoint (the nil rules of
  the ``discovery.k8s.io/v1`` conditions, and which copy of an address listed twice counts);
- ``kubewire.deployment``: when a Deployment's rollout is complete (``kubectl rollout status``'s
  rule) and when its Pod template changed;
- ``kubewire.timestamps``: RFC 3339 as Kubernetes writes ``metav1.Time`` (whole seconds) and
  ``metav1.MicroTime`` (microseconds), and one parser for both.
"""

from kubewire.deployment import RolloutState, desired_replicas, template_fingerprint
from kubewire.endpointslice import (
    SERVICE_NAME_LABEL,
    EndpointState,
    endpoint_conditions,
    port_endpoints,
    preferred,
    service_endpoints,
    slice_endpoints,
)
from kubewire.timestamps import format_micro_time, format_time, parse_time

__all__ = [
    "SERVICE_NAME_LABEL",
    "EndpointState",
    "RolloutState",
    "desired_replicas",
    "endpoint_conditions",
    "format_micro_time",
    "format_time",
    "parse_time",
    "port_endpoints",
    "preferred",
    "service_endpoints",
    "slice_endpoints",
    "template_fingerprint",
]
