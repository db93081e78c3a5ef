"""When a Deployment's rollout is complete, read the way ``kubectl rollout status`` reads it.

The runner waits on it, ``rolltrace observe`` follows a user's rollout with it, and the importer
finds the rollout window in recorded Deployment events with it: one rule for all three.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RolloutState:
    generation: int
    observed_generation: int
    replicas: int
    updated: int
    ready: int
    available: int

    @classmethod
    def from_json(cls, deployment: dict[str, Any]) -> RolloutState:
        """The state of a Deployment as the API returns it in JSON (missing counts are 0)."""
        metadata = deployment.get("metadata") or {}
        status = deployment.get("status") or {}
        return cls(
            generation=int(metadata.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            replicas=int(status.get("replicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
        )

    def complete(self, desired: int) -> bool:
        """What `kubectl rollout status` waits for (upstream deployment_status.go): the
        controller saw the latest spec, and every replica is updated and available, with no
        old one left."""
        return (
            self.observed_generation >= self.generation
            and self.updated == desired
            and self.replicas == desired
            and self.available == desired
        )


def desired_replicas(deployment: dict[str, Any]) -> int:
    """``spec.replicas``, defaulted to 1 as the API server does."""
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def template_fingerprint(deployment: dict[str, Any]) -> str:
    """A digest of ``spec.template`` (key order does not matter): a new one means a new
    ReplicaSet, i.e. a rollout (``kubectl rollout restart`` changes an annotation of it)."""
    template = (deployment.get("spec") or {}).get("template") or {}
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
