"""Configuration of one local cluster: its size, addresses and the control-plane timing it emulates.

The timing fields are the point of the local cluster: disruption comes from delays between
components (endpoint batching, each node's proxy sync, LB health checks), so each delay is
explicit, per component, and recorded in truth.jsonl when it takes effect. Defaults follow the
reference timings of docs/architecture.md#reference-timings. The scenario model (``rolltrace``)
maps user YAML onto this.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DelayModel(BaseModel):
    """How long after a change a component acts on it.

    ``fixed``: always ``value_s``. ``uniform``: in [low_s, high_s]. ``lognormal``: median
    ``value_s``, shape ``sigma``. ``min-sync``: kube-proxy's batching — at most one sync per
    ``min_sync_period_s``, so a change waits until the period since the last sync has passed
    (plus ``value_s`` for the sync itself).
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fixed", "uniform", "lognormal", "min-sync"] = Field(
        "fixed",
        description="`fixed`: always `value_s`; `uniform`: in [`low_s`, `high_s`]; `lognormal`: "
        "median `value_s`, shape `sigma`; `min-sync`: kube-proxy's batching, a change waits out "
        "the rest of `min_sync_period_s` since the last sync, then `value_s`.",
    )
    value_s: float = Field(
        0.0,
        ge=0,
        description="`fixed`: the delay; `lognormal`: its median; `min-sync`: the sync's own time.",
    )
    low_s: float = Field(0.0, ge=0, description="`uniform`: shortest delay.")
    high_s: float = Field(0.0, ge=0, description="`uniform`: longest delay.")
    sigma: float = Field(0.5, ge=0, description="`lognormal`: shape (sigma of the log).")
    min_sync_period_s: float = Field(
        1.0,
        ge=0,
        description="`min-sync`: at most one sync per this period (kube-proxy `minSyncPeriod`, "
        "1 s upstream).",
    )

    def draw(self, rng: random.Random, since_last_sync_s: float = float("inf")) -> float:
        """Seconds to wait before applying a change observed now."""
        if self.kind == "fixed":
            return self.value_s
        if self.kind == "uniform":
            return rng.uniform(self.low_s, self.high_s)
        if self.kind == "lognormal":
            if self.value_s <= 0:
                return 0.0
            return rng.lognormvariate(0.0, self.sigma) * self.value_s
        return max(0.0, self.min_sync_period_s - since_last_sync_s) + self.value_s


class ProxyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay: DelayModel = DelayModel(kind="min-sync", min_sync_period_s=1.0)
    per_node_delay: dict[str, DelayModel] = Field(default_factory=dict)
    terminating_fallback: bool = True  # KEP-1669 (GA in 1.28)

    def delay_for(self, node: str) -> DelayModel:
        return self.per_node_delay.get(node, self.delay)


class LBConfig(BaseModel):
    """The cloud LB emulator (GCE L4 defaults, docs/architecture.md#reference-timings); the
    ``l7`` fields follow the AWS ALB's defaults (docs/local-cluster.md#l7-load-balancer)."""

    model_config = ConfigDict(extra="forbid")
    targets: Literal["nodes", "pods"] = Field(
        "nodes",
        description="`nodes`: the LB sends to NodePorts and kube-proxy forwards; `pods`: the LB "
        "sends to Pod IPs directly (AWS IP mode, GKE NEGs).",
    )
    hc_interval_s: float = Field(
        8.0, gt=0, description="Seconds between health checks (GCE L4: 8)."
    )
    hc_timeout_s: float = Field(
        1.0, gt=0, description="A health check not answered this fast fails (GCE L4: 1)."
    )
    healthy_threshold: int = Field(
        1, ge=1, description="Passes in a row before a target gets traffic (GCE L4: 1)."
    )
    unhealthy_threshold: int = Field(
        3, ge=1, description="Failures in a row before a target loses traffic (GCE L4: 3)."
    )
    registration_delay_s: float = Field(
        0.0,
        ge=0,
        description="`pods` targets: seconds from an endpoint change to the LB (de)registering "
        "the Pod.",
    )
    deregistration_delay_s: float = Field(
        0.0,
        ge=0,
        description="With `draining`: a deregistered target keeps its connections this long.",
    )
    draining: bool = Field(
        False,
        description="Keep a deregistered target's connections for `deregistration_delay_s` "
        "instead of cutting them at once.",
    )
    mode: Literal["l4", "l7"] = Field(
        "l4",
        description="`l4`: DNAT of each connection to a target (passthrough, NLB/GCE L4); `l7`: "
        "an HTTP proxy (real nginx) on the external IP that ends client connections and sends "
        "each request over its own keep-alive pool to a target, as an AWS ALB does.",
    )
    idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="`l7`: client and target connections idle this long are closed by the LB, "
        "and a target silent this long mid-request gets a 504 (ALB idle timeout: 60).",
    )
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        description="`l7`: a target connection not made within this is a 504 (ALB: 10).",
    )
    hc_path: str = Field(
        "/",
        pattern=r"^/",
        description="`l7`: path of the HTTP health check, healthy on 200 (ALB default: `/`).",
    )


class VirtualNodeConfig(BaseModel):
    """Pods on virtual nodes (no processes) start after ``start_delay_s``; readiness follows the
    probe's initialDelaySeconds/periodSeconds, deletion honours preStop and the grace period."""

    model_config = ConfigDict(extra="forbid")
    start_delay_s: float = Field(0.5, ge=0)
    time_scale: float = Field(1.0, gt=0)  # < 1 compresses every Pod-side delay (fast tests)


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("rt", pattern=r"^[a-z][a-z0-9]{0,7}$")  # prefix of every namespace/link/table
    nodes: int = Field(3, ge=1, le=32)
    virtual: bool = False
    address_range: str = "198.18.0.0/15"  # RFC 2544 benchmarking range: never routed anywhere
    endpoint_batch_delay_s: float = Field(0.0, ge=0)  # EndpointSlice controller batching
    proxy: ProxyConfig = ProxyConfig()
    lb: LBConfig = LBConfig()
    virtual_node: VirtualNodeConfig = VirtualNodeConfig()
    seed: int = 0
    # real nodes: also serve the API inside the emulated network, reachable from the client
    # namespace (localcluster.dataplane.apiendpoint); costs one listening socket
    api_in_network: bool = True
