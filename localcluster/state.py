"""Where a running local cluster leaves its coordinates, so `rolltrace cluster status/down` and
other tools find it by name: ``<root>/<name>/state.json`` (pid, URL, token, kubeconfig and
unix-socket paths, phase), next to the API socket and the process log.

The root is ``$ROLLTRACE_STATE_DIR`` if set, else ``/run/rolltrace`` for root, else
``$XDG_RUNTIME_DIR/rolltrace``, else ``/tmp/rolltrace-<uid>``: runtime directories, because
none of this survives a reboot (and must not: the pid would be stale).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import yaml

Phase = Literal["starting", "running", "stopping", "failed"]
STATE_FILE = "state.json"
SOCKET_FILE = "api.sock"
LOG_FILE = "cluster.log"
KUBECONFIG_FILE = "kubeconfig"
IN_NETWORK_KUBECONFIG_FILE = "kubeconfig-in-network"
PROCESS_MARKER = "localcluster.main"  # in the cluster process's command line
#: A Pod's own directory in the cluster's state, which the kubelet hands a process that keeps
#: files of its own (the ingress controller's nginx: conf, pid, logs).
POD_DIR_ENV = "ROLLTRACE_POD_DIR"
#: Where the cluster's own hops (the L7 load balancer) write their access logs,
#: ``<state dir>/hops/<hop>.log``; a run moves them into its ``hops/``.
HOPS_DIR = "hops"


def state_root() -> Path:
    if os.environ.get("ROLLTRACE_STATE_DIR"):
        return Path(os.environ["ROLLTRACE_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/run/rolltrace")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "rolltrace"
    return Path(f"/tmp/rolltrace-{os.getuid()}")


def state_dir(name: str, root: Path | None = None) -> Path:
    return (root or state_root()) / name


@dataclass
class ClusterState:
    name: str
    pid: int
    phase: Phase
    url: str = ""
    token: str = ""
    kubeconfig: str = ""
    api_socket: str = ""
    virtual: bool = True
    nodes: int = 0
    error: str = ""
    #: the API endpoint inside the emulated network (reachable from the client namespace) and
    #: the admin kubeconfig for it; "" when not published (virtual nodes, --no-api-in-network)
    api_in_network_url: str = ""
    kubeconfig_in_network: str = ""
    #: the run that started this cluster for itself, as ``localcluster.lifeline.identity``;
    #: "" when the cluster owns itself (`rolltrace cluster up`)
    owner: str = ""


def write_state(directory: Path, state: ClusterState) -> None:
    """Atomic (rename) and 0600: the file holds the bearer token."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{STATE_FILE}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle, indent=2)
    temporary.replace(directory / STATE_FILE)


def read_state(directory: Path) -> ClusterState | None:
    try:
        raw = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    try:
        return ClusterState(**raw)
    except TypeError:
        return None


def process_alive(pid: int, directory: Path | None = None) -> bool:
    """Alive and really the cluster process of ``directory`` (a recycled pid of another
    program, or of another cluster, does not count)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(PROCESS_MARKER.encode() in argument for argument in arguments):
        return False
    if directory is not None and str(directory).encode() not in arguments:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited


def is_rolltrace_kubeconfig(path: Path) -> bool:
    """Only kubeconfigs this tool wrote may be overwritten or removed (never a user's own)."""
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return str(content.get("current-context", "")).startswith("rolltrace")
