"""Names and addresses of one cluster's data plane, derived from its ClusterConfig alone.

Every name carries the cluster prefix and every address comes from ``config.address_range``, so
the data plane of a cluster can be found (leftovers), reached (``cluster exec``) and removed
(``cluster down``) from its name and config without any state file. The range is split in two
halves: the first holds the infrastructure subnets (fabric, client link, external IPs), the
second one /24 Pod CIDR per node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from localcluster.config import ClusterConfig

FABRIC_BRIDGE = "fabric0"  # lives in the LB namespace
POD_BRIDGE = "cbr0"  # lives in each node namespace
POD_IFNAME = "eth0"  # the interface name inside a node, pod or client namespace


def node_name(index: int) -> str:
    """Nodes are numbered from 1, like kind's workers."""
    return f"node-{index}"


@dataclass(frozen=True)
class NodeNet:
    name: str  # the Kubernetes Node name, e.g. "node-1"
    netns: str
    fabric_ip: str  # on the node's eth0, in the fabric subnet
    pod_cidr: str
    pod_gateway: str  # the node's address on its Pod bridge
    fabric_port: str  # the peer of the node's eth0, enslaved to the fabric bridge


@dataclass(frozen=True)
class AddressPlan:
    """Pure layout of one cluster: tests and the CLI compute the same names as the builder."""

    config: ClusterConfig

    @property
    def prefix(self) -> str:
        return self.config.name

    @cached_property
    def _infra_subnets(self) -> list[ipaddress.IPv4Network]:
        infra, _pods = ipaddress.IPv4Network(self.config.address_range).subnets(prefixlen_diff=1)
        return list(infra.subnets(new_prefix=max(24, infra.prefixlen)))[:3]

    @cached_property
    def _pod_subnets(self) -> list[ipaddress.IPv4Network]:
        _infra, pods = ipaddress.IPv4Network(self.config.address_range).subnets(prefixlen_diff=1)
        new_prefix = max(24, pods.prefixlen + 6)  # room for the 32-node maximum
        subnets = pods.subnets(new_prefix=new_prefix)
        return [next(subnets) for _ in range(self.config.nodes)]

    @property
    def lb_netns(self) -> str:
        return f"{self.prefix}-lb"

    @property
    def client_netns(self) -> str:
        return f"{self.prefix}-client"

    @property
    def fabric_prefixlen(self) -> int:
        return self._infra_subnets[0].prefixlen

    @property
    def lb_fabric_ip(self) -> str:
        return str(self._infra_subnets[0][1])

    @property
    def client_link_prefixlen(self) -> int:
        return self._infra_subnets[1].prefixlen

    @property
    def lb_client_ip(self) -> str:
        return str(self._infra_subnets[1][1])

    @property
    def client_ip(self) -> str:
        return str(self._infra_subnets[1][2])

    @property
    def client_port(self) -> str:
        """The LB-side end of the client's veth."""
        return f"{self.prefix}c"

    @property
    def external_ip_cidr(self) -> str:
        """Service external IPs (status.loadBalancer.ingress) are allocated from here."""
        return str(self._infra_subnets[2])

    def external_ips(self) -> list[str]:
        return [str(ip) for ip in self._infra_subnets[2].hosts()]

    @property
    def pod_range(self) -> str:
        """Every Pod CIDR lies inside this network: kube-proxy's cluster CIDR."""
        _infra, pods = ipaddress.IPv4Network(self.config.address_range).subnets(prefixlen_diff=1)
        return str(pods)

    @cached_property
    def nodes(self) -> list[NodeNet]:
        fabric = self._infra_subnets[0]
        result = []
        for index in range(1, self.config.nodes + 1):
            cidr = self._pod_subnets[index - 1]
            result.append(
                NodeNet(
                    name=node_name(index),
                    netns=f"{self.prefix}-{node_name(index)}",
                    fabric_ip=str(fabric[10 + index]),
                    pod_cidr=str(cidr),
                    pod_gateway=str(cidr[1]),
                    fabric_port=f"{self.prefix}n{index}",
                )
            )
        return result

    def node(self, name: str) -> NodeNet:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in cluster {self.prefix!r}")

    def pod_netns(self, pod_uid: str) -> str:
        return f"{self.prefix}-pod-{pod_uid.replace('-', '')[:12]}"

    def pod_host_port(self, pod_uid: str) -> str:
        """The node-side end of a Pod's veth: unique within its node, at most 15 characters."""
        return f"{self.prefix}p{pod_uid.replace('-', '')[: 14 - len(self.prefix)]}"

    @property
    def proxy_table(self) -> str:
        return f"{self.prefix}-proxy"

    @property
    def lb_table(self) -> str:
        return f"{self.prefix}-lb"
