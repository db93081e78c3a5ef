"""localcluster: the embedded Kubernetes cluster (see docs/architecture.md#the-local-cluster)."""
