"""``kubewire.deployment``: the one rollout-complete rule the runner, observe and import share."""

from __future__ import annotations

from typing import Any

from kubewire import RolloutState, desired_replicas, template_fingerprint


def deployment(generation: int = 2, observed: int = 2, **status: int) -> dict[str, Any]:
    counts = {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "readyReplicas": 3}
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": 3, "template": {"metadata": {"annotations": {"a": "1"}}}},
        "status": {"observedGeneration": observed, **counts, **status},
    }


def test_complete_when_every_replica_is_updated_and_available_and_the_spec_was_seen() -> None:
    assert RolloutState.from_json(deployment()).complete(3)


def test_not_complete_while_the_controller_has_not_seen_the_new_spec() -> None:
    assert not RolloutState.from_json(deployment(generation=3, observed=2)).complete(3)


def test_not_complete_while_an_old_replica_remains_or_one_is_unavailable() -> None:
    assert not RolloutState.from_json(deployment(replicas=4)).complete(3)
    assert not RolloutState.from_json(deployment(availableReplicas=2)).complete(3)
    assert not RolloutState.from_json(deployment(updatedReplicas=2)).complete(3)


def test_missing_status_counts_are_zero_and_replicas_default_to_one() -> None:
    bare: dict[str, Any] = {"metadata": {"generation": 1}, "spec": {}}
    assert RolloutState.from_json(bare) == RolloutState(1, 0, 0, 0, 0, 0)
    assert desired_replicas(bare) == 1


def test_the_template_fingerprint_ignores_key_order_and_sees_an_annotation_change() -> None:
    a = deployment()
    reordered = {"spec": {"template": {"metadata": {"annotations": {"a": "1"}}}, "replicas": 3}}
    restarted = deployment()
    restarted["spec"]["template"]["metadata"]["annotations"]["a"] = "2"
    assert template_fingerprint(a) == template_fingerprint(reordered)
    assert template_fingerprint(a) != template_fingerprint(restarted)
