"""kube-proxy for the local cluster's nodes: nftables rules computed as a pure function of
Services and EndpointSlices, applied atomically after a per-node delay."""
