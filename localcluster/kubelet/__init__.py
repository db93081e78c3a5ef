"""The node agent's kubelet: runs the Pods bound to its node as real processes (DESIGN §5)."""

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
