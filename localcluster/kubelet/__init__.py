"""The node agent's kubelet: runs its node's Pods as real processes (docs/local-cluster.md)."""

from localcluster.kubelet.kubelet import Kubelet, KubeletOptions
from localcluster.kubelet.runner import Backoff
from localcluster.kubelet.sandbox import LoopbackSandboxProvider, Sandbox, SandboxProvider

__all__ = [
    "Backoff",
    "Kubelet",
    "KubeletOptions",
    "LoopbackSandboxProvider",
    "Sandbox",
    "SandboxProvider",
]
