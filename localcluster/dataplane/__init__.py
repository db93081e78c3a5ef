"""The kernel data plane of the local cluster: network namespaces, veths, bridges and nftables
for the client, the cloud LB, the nodes and their Pods (docs/local-cluster.md#data-plane).

Entry points: ``start_real_nodes`` (the cluster process), ``cleanup`` and ``list_leftovers``
(``rolltrace cluster down``), ``missing_prerequisites`` (``rolltrace cluster up``)."""

from localcluster.dataplane.cluster import (
    DataplaneUnavailable,
    RealNodes,
    cleanup,
    missing_prerequisites,
    start_real_nodes,
)
from localcluster.dataplane.topology import Leftovers, list_leftovers

__all__ = [
    "DataplaneUnavailable",
    "Leftovers",
    "RealNodes",
    "cleanup",
    "list_leftovers",
    "missing_prerequisites",
    "start_real_nodes",
]
