"""The kernel data plane of the local cluster: network namespaces, veths, bridges and nftables
for the client, the cloud LB, the nodes and their Pods (DESIGN §5)."""
