"""kube-proxy's nftables mode as a pure function: (Services, EndpointSlices, node) → ruleset.

Mirrors the structure of kube-proxy's ``nftables`` proxier, reduced to what a rollout exercises:
a dispatch chain matching ClusterIP, LoadBalancer-IP and NodePort destinations; one chain per
service port choosing an endpoint with ``numgen random mod N``; one chain per endpoint doing
the DNAT; masquerade marks where kube-proxy sets them (traffic to a ClusterIP from outside the
Pod range, external traffic under ``Cluster`` policy, hairpin); and filter chains that
``reject`` new connections to a service without endpoints and ``drop`` external ones under
``Local`` policy at a node without a local endpoint (the LB's health check is meant to steer
away from that node; until it does, clients time out: the lb-lag of docs/causes.md).

Endpoint choice follows kube-proxy's ``CategorizeEndpoints``: ready endpoints; when there is
none and the terminating fallback of KEP-1669 is on, serving-but-terminating ones. Under
``Local`` policy the same rule applies to the node's own endpoints. The health-check count is
the number of ready local endpoints only, so the LB drains a node whose endpoints terminate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubewire import SERVICE_NAME_LABEL, port_endpoints

MASQ_MARK = "0x4000"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    pod: str
    node: str | None
    ready: bool
    serving: bool
    terminating: bool
    port: int


@dataclass(frozen=True)
class PortPlan:
    """Everything the rules of one service port depend on on one node."""

    namespace: str
    service: str
    port_name: str
    protocol: str  # "tcp" | "udp" | "sctp"
    port: int
    cluster_ip: str | None
    node_port: int | None
    lb_ips: tuple[str, ...]
    local_policy: bool  # externalTrafficPolicy: Local
    cluster_endpoints: tuple[Endpoint, ...]
    local_endpoints: tuple[Endpoint, ...]  # used for external traffic under Local policy
    health_check_node_port: int | None
    ready_local: int  # what the healthCheckNodePort server reports

    @property
    def key(self) -> str:
        """Unique and stable per service port; a valid nft chain-name suffix."""
        return f"{self.namespace}/{self.service}/{self.protocol}/{self.port_name or self.port}"

    @property
    def service_ref(self) -> str:
        return f"{self.namespace}/{self.service}"


def _usable(endpoints: Sequence[Endpoint], fallback: bool) -> tuple[Endpoint, ...]:
    ready = tuple(e for e in endpoints if e.ready)
    if ready or not fallback:
        return ready
    return tuple(e for e in endpoints if e.serving and e.terminating)


def _slice_endpoints(slices: Iterable[dict[str, Any]], port_name: str) -> list[Endpoint]:
    """The Service's endpoints for one port name: IPv4 slices only (an IPv4 proxy), each
    address once per target port with kubewire's conditions and duplicate rules."""
    found = [
        Endpoint(
            ip=address,
            pod=state.pod or "",
            node=state.node,
            ready=state.ready,
            serving=state.serving,
            terminating=state.terminating,
            port=port,
        )
        for port, states in port_endpoints(slices, port_name).items()
        for address, state in states.items()
    ]
    return sorted(found, key=lambda e: (e.ip, e.port))


def plan_ports(
    services: Iterable[dict[str, Any]],
    slices: Iterable[dict[str, Any]],
    node: str,
    terminating_fallback: bool,
) -> list[PortPlan]:
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((meta.get("namespace", "default"), owner), []).append(sl)
    plans = []
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        namespace, name = meta.get("namespace", "default"), meta["name"]
        svc_type = spec.get("type", "ClusterIP")
        if svc_type == "ExternalName":
            continue
        cluster_ip = spec.get("clusterIP")
        if cluster_ip in (None, "", "None"):
            cluster_ip = None
        external = svc_type in ("NodePort", "LoadBalancer")
        lb_ips = tuple(
            ing["ip"]
            for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ing.get("ip") and svc_type == "LoadBalancer"
        )
        local_policy = external and spec.get("externalTrafficPolicy") == "Local"
        for port in spec.get("ports") or []:
            port_name = port.get("name") or ""
            endpoints = _slice_endpoints(by_service.get((namespace, name), []), port_name)
            local = [e for e in endpoints if e.node == node]
            plans.append(
                PortPlan(
                    namespace=namespace,
                    service=name,
                    port_name=port_name,
                    protocol=str(port.get("protocol", "TCP")).lower(),
                    port=int(port["port"]),
                    cluster_ip=cluster_ip,
                    node_port=int(port["nodePort"]) if external and port.get("nodePort") else None,
                    lb_ips=lb_ips,
                    local_policy=local_policy,
                    cluster_endpoints=_usable(endpoints, terminating_fallback),
                    local_endpoints=_usable(local, terminating_fallback),
                    health_check_node_port=spec.get("healthCheckNodePort")
                    if local_policy
                    else None,
                    ready_local=sum(1 for e in local if e.ready),
                )
            )
    return sorted(plans, key=lambda p: p.key)


@dataclass
class _Chains:
    dispatch: list[str] = field(default_factory=list)
    no_endpoints: list[str] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)


def _balance(chains: _Chains, name: str, endpoints: Sequence[Endpoint], plan: PortPlan) -> None:
    """A chain that picks one endpoint uniformly at random; one chain per endpoint DNATs."""
    targets = []
    for ep in endpoints:
        ep_chain = f"endpoint-{plan.key}__{ep.ip}/{ep.port}"
        chains.chains[ep_chain] = [
            f"ip saddr {ep.ip} jump mark-for-masquerade",  # hairpin: a Pod reaching itself
            f"meta l4proto {plan.protocol} dnat to {ep.ip}:{ep.port}",
        ]
        targets.append(ep_chain)
    if len(targets) == 1:
        chains.chains[name] = [f"goto {targets[0]}"]
    else:
        vmap = ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets))
        chains.chains[name] = [f"numgen random mod {len(targets)} vmap {{ {vmap} }}"]


def _port_rules(chains: _Chains, plan: PortPlan, pod_range: str) -> None:
    proto = f"{plan.protocol} dport"
    svc_chain, ext_chain = f"service-{plan.key}", f"external-{plan.key}"
    if plan.cluster_endpoints:
        _balance(chains, svc_chain, plan.cluster_endpoints, plan)
    if plan.cluster_ip:
        if plan.cluster_endpoints:
            chains.dispatch += [
                f"ip daddr {plan.cluster_ip} {proto} {plan.port} ip saddr != {pod_range} jump mark-for-masquerade",
                f"ip daddr {plan.cluster_ip} {proto} {plan.port} goto {svc_chain}",
            ]
        else:
            chains.no_endpoints.append(f"ip daddr {plan.cluster_ip} {proto} {plan.port} reject")
    matches = [f"ip daddr {ip} {proto} {plan.port}" for ip in plan.lb_ips]
    if plan.node_port:
        matches.append(f"fib daddr type local {proto} {plan.node_port}")
    if not matches:
        return
    if not plan.cluster_endpoints:
        chains.no_endpoints += [f"{m} reject" for m in matches]
        return
    if not plan.local_policy:
        chains.chains[ext_chain] = ["jump mark-for-masquerade", f"goto {svc_chain}"]
    elif plan.local_endpoints:
        local_chain = f"local-{plan.key}"
        _balance(chains, local_chain, plan.local_endpoints, plan)
        chains.chains[ext_chain] = [
            f"ip saddr {pod_range} goto {svc_chain}",  # Pods reaching an external IP: cluster-wide
            "fib saddr type local jump mark-for-masquerade",
            f"fib saddr type local goto {svc_chain}",
            f"goto {local_chain}",
        ]
    else:
        chains.chains[ext_chain] = [
            f"ip saddr {pod_range} goto {svc_chain}",
            "fib saddr type local jump mark-for-masquerade",
            f"fib saddr type local goto {svc_chain}",
        ]
        chains.no_endpoints += [f"{m} drop" for m in matches]  # reached only when not DNATed
    chains.dispatch += [f"{m} goto {ext_chain}" for m in matches]


def render_table_body(plans: Sequence[PortPlan], pod_range: str) -> str:
    """The body of the proxy's ``ip`` table, deterministic for a given input."""
    chains = _Chains()
    for plan in plans:
        _port_rules(chains, plan, pod_range)
    base = {
        "nat-prerouting": [
            "type nat hook prerouting priority dstnat; policy accept;",
            "jump services",
        ],
        "nat-output": ["type nat hook output priority -100; policy accept;", "jump services"],
        "nat-postrouting": [
            "type nat hook postrouting priority srcnat; policy accept;",
            "jump masquerading",
        ],
        "filter-input": [
            "type filter hook input priority filter - 10; policy accept;",
            "ct state new jump no-endpoints",
        ],
        "filter-forward": [
            "type filter hook forward priority filter - 10; policy accept;",
            "ct state new jump no-endpoints",
        ],
        "filter-output": [
            "type filter hook output priority filter - 10; policy accept;",
            "ct state new jump no-endpoints",
        ],
        "mark-for-masquerade": [f"meta mark set meta mark | {MASQ_MARK}"],
        "masquerading": [
            f"meta mark & {MASQ_MARK} == 0 return",
            f"meta mark set meta mark ^ {MASQ_MARK}",
            "masquerade fully-random",
        ],
        "services": chains.dispatch,
        "no-endpoints": chains.no_endpoints,
    }
    lines = []
    for name, rules in [*base.items(), *sorted(chains.chains.items())]:
        lines.append(f"\tchain {name} {{")
        lines += [f"\t\t{rule}" for rule in rules]
        lines.append("\t}")
    return "\n".join(lines) + "\n"
