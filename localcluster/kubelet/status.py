"""Pod status as the kubelet reports it: phase, conditions and container statuses.

Pure: built from the kubelet's own record of each container, so the rules (phase from
restartPolicy and exit codes, Ready = all containers ready, condition transition times that move
only when the status flips) are tested without processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubewire import format_time
from localcluster.apiclient import JsonObject


@dataclass
class ContainerRecord:
    """The kubelet's view of one container across its restarts."""

    name: str
    image: str
    state: JsonObject = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JsonObject = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    pid: int | None = None
    final: bool = False  # exited and will not be restarted

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return None if terminated is None else int(terminated["exitCode"])

    def to_status(self) -> JsonObject:
        status: JsonObject = {
            "name": self.name,
            "image": self.image,
            "imageID": f"rolltrace://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.pid is not None:
            status["containerID"] = f"rolltrace://{self.pid}"
        return status


def pod_phase(records: list[ContainerRecord]) -> str:
    """Upstream's getPhase, for Pods without init containers; whether an exited container is
    final (restartPolicy) is the container runner's decision, recorded in ``final``."""
    if any("waiting" in r.state and r.restart_count == 0 and not r.last_state for r in records):
        return "Pending"
    if all(r.final for r in records):
        return "Succeeded" if all(r.exit_code == 0 for r in records) else "Failed"
    return "Running"


class ConditionBook:
    """Pod conditions whose lastTransitionTime moves only when their status changes."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[str, str]] = {}

    def condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> JsonObject:
        status = "True" if ok else "False"
        previous = self._since.get(kind)
        if previous is None or previous[0] != status:
            self._since[kind] = (status, format_time())
        out: JsonObject = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._since[kind][1],
        }
        if reason:
            out["reason"] = reason
        if message:
            out["message"] = message
        return out


def pod_status(
    records: list[ContainerRecord],
    *,
    pod_ip: str | None,
    host_ip: str,
    start_time: str,
    book: ConditionBook,
) -> JsonObject:
    unready = [r.name for r in records if not r.ready]
    all_ready = not unready
    reason = "" if all_ready else "ContainersNotReady"
    message = "" if all_ready else f"containers with unready status: [{' '.join(unready)}]"
    status: JsonObject = {
        "phase": pod_phase(records),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            book.condition("PodScheduled", True),
            book.condition("Initialized", True),
            book.condition("ContainersReady", all_ready, reason, message),
            book.condition("Ready", all_ready, reason, message),
        ],
        "containerStatuses": [r.to_status() for r in records],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
