"""The node agent's kubelet: runs the Pods bound to its node as real processes (DESIGN §5)."""
