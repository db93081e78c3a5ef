"""rolltrace: measure request disruption during Kubernetes rolling updates."""

__version__ = "0.1.0"
