"""The node agent's kubelet: runs its node's Pods as real processes (docs/local-cluster.md).

The Pod sandboxes it runs them in (``SandboxProvider`` and its loopback and namespace
implementations) are the data plane's, in ``localcluster.dataplane.sandbox``."""

from localcluster.kubelet.kubelet import Kubelet, KubeletOptions
from localcluster.kubelet.runner import Backoff

__all__ = ["Backoff", "Kubelet", "KubeletOptions"]
