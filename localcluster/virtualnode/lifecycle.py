"""When things happen to a Pod on a virtual node: pure timing rules, no processes.

Readiness follows the kubelet's prober (pkg/kubelet/prober/worker.go, prober_manager.go): the
readiness worker starts with the Pod on the node and probes every ``periodSeconds`` from then
on; when the container starts without a readiness result the prober manager triggers one probe
at once (UpdatePodStatus → manualTriggerCh); results before ``initialDelaySeconds`` (since the
container started) are ignored; ``successThreshold`` consecutive successes flip the Pod to
Ready. A virtual application always answers, so Ready comes at the successThreshold-th counted
probe. No probe: Ready as soon as the containers run. (Upstream's random start jitter, applied
only right after a kubelet restart, is left out.)

Deletion follows the kubelet's killContainer: the preStop hook runs first, SIGTERM follows, and
the whole sequence is bounded by the grace period. Only hook durations that are knowable
without running anything are modelled: the native ``sleep`` action (KEP-3960) and ``exec`` of
``sleep N`` (directly or through ``sh -c``); others take no time.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

_SLEEP = re.compile(r"^\s*sleep\s+(\d+(?:\.\d+)?)\s*$")


def readiness_delay_s(container: Mapping[str, Any], start_delay_s: float = 0.0) -> float:
    """Seconds from container start to Ready, for a container that started ``start_delay_s``
    after its probe worker (the Pod's arrival on the node)."""
    probe = container.get("readinessProbe")
    if not probe:
        return 0.0
    initial = float(probe.get("initialDelaySeconds", 0))
    period = max(float(probe.get("periodSeconds", 10)), 1e-3)
    threshold = max(int(probe.get("successThreshold", 1)), 1)
    first_tick = math.floor(start_delay_s / period) + 1  # worker ticks after the start
    ticks = (k * period - start_delay_s for k in itertools.count(first_tick))
    counted = 0
    for probe_at in itertools.chain([0.0], ticks):
        if probe_at >= initial - 1e-9:
            counted += 1
            if counted == threshold:
                return probe_at
    raise AssertionError("unreachable: ticks are infinite")


def pod_readiness_delay_s(pod: Mapping[str, Any], start_delay_s: float = 0.0) -> float:
    """The Pod is Ready when its slowest container is."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return max((readiness_delay_s(c, start_delay_s) for c in containers), default=0.0)


def _sleep_seconds(command: list[str]) -> float | None:
    program = command[0].rsplit("/", 1)[-1] if command else ""
    if program == "sleep" and len(command) == 2:
        match = _SLEEP.match(f"sleep {command[1]}")
    elif program in ("sh", "bash") and len(command) == 3 and command[1] == "-c":
        match = _SLEEP.match(command[2])
    else:
        return None
    return float(match.group(1)) if match else None


def prestop_s(container: Mapping[str, Any]) -> float:
    hook = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in hook:
        return float((hook["sleep"] or {}).get("seconds", 0))
    command = (hook.get("exec") or {}).get("command")
    if isinstance(command, list):
        return _sleep_seconds([str(c) for c in command]) or 0.0
    return 0.0


def pod_prestop_s(pod: Mapping[str, Any]) -> float:
    """Containers' hooks run in parallel: the longest one decides."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return max((prestop_s(c) for c in containers), default=0.0)


def grace_period_s(pod: Mapping[str, Any]) -> float:
    """``metadata.deletionGracePeriodSeconds`` once deleting (a delete may shorten it), else
    the spec's terminationGracePeriodSeconds (default 30)."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionGracePeriodSeconds") is not None:
        return float(meta["deletionGracePeriodSeconds"])
    return float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))


def termination_s(pod: Mapping[str, Any]) -> tuple[float, bool]:
    """(seconds from deletion until the containers are gone, whether the grace period ran out
    and the containers were killed). The virtual application exits at SIGTERM."""
    grace = grace_period_s(pod)
    hook = pod_prestop_s(pod)
    if hook >= grace:
        return grace, hook > grace
    return hook, False
