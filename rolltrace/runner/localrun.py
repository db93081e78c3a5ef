"""Starting and stopping the local cluster's process: shared by `rolltrace cluster up/down` and by
the experiment runner, which starts a private cluster per run with the scenario's timing.

The cluster runs as its own process (``python -m localcluster.main``) in a new session so that
Ctrl-C in a terminal reaches rolltrace first, which then stops the cluster in order (agents
remove their nft tables, namespaces are deleted) instead of both dying at once.

A cluster started for a run has an *owner* (the run's process identity, in ``state.json``) and
gets SIGTERM from the kernel when that process dies, even by SIGKILL (``die_with_parent``). A
later run or `cluster up` that finds the state of a cluster whose owner is gone tears it down
with the same code as `rolltrace cluster down` (``teardown``) and goes on; while the owner is
alive it waits and says for whom (``wait_for_free``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster.apiserver import HttpClient
from localcluster.config import ClusterConfig
from localcluster.lifeline import die_with_parent, identity, identity_alive
from localcluster.objects import pod_condition
from localcluster.state import (
    LOG_FILE,
    ClusterState,
    is_rolltrace_kubeconfig,
    process_alive,
    read_state,
)


class ClusterStartError(RuntimeError):
    """The cluster process did not come up; the message ends with its log's tail."""


def log_tail(directory: Path, lines: int = 15) -> str:
    try:
        return "\n".join((directory / LOG_FILE).read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def api_client(state: ClusterState) -> HttpClient:
    """A client for a running cluster, over its unix socket."""
    return HttpClient("http://localhost", state.token, unix_socket=state.api_socket)


def node_is_ready(node: dict[str, Any]) -> bool:
    # Nodes carry status.conditions like Pods do; the Pod helper reads them the same way
    ready = pod_condition(node, "Ready")
    return ready is not None and ready.get("status") == "True"


async def node_readiness(state: ClusterState) -> tuple[int, int]:
    """(registered, Ready) node counts."""
    async with api_client(state) as client:
        nodes, _ = await client.list("nodes")
    return len(nodes), sum(node_is_ready(node) for node in nodes)


#: How often a starting or stopping cluster is looked at (its state.json, its pid): local reads,
#: and each pause is dead time in every run (the cluster says "running" once every node is Ready).
CLUSTER_POLL_S = 0.05
#: How often the nodes are listed over the API for the progress line while the cluster starts:
#: each list is a client and a request, CPU the cluster's own start competes for.
NODES_POLL_S = 0.2


def start_cluster(
    config: ClusterConfig,
    directory: Path,
    kubeconfig: Path | None = None,
    timeout_s: float = 120.0,
    on_progress: Callable[[str], None] = lambda _: None,
    owner: str = "",
) -> tuple[subprocess.Popen[bytes], ClusterState]:
    """Start the cluster process and wait until its API answers and every node is Ready.

    ``owner``: the identity of the calling run; the cluster then ends when this thread's
    process dies (call from the main thread). Empty: the cluster outlives us (`cluster up`)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path = directory / "cluster.json"
    config_path.write_text(config.model_dump_json(indent=2))
    command = [sys.executable, "-m", "localcluster.main", "--config", str(config_path)]
    command += ["--state-dir", str(directory)]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig.resolve())]
    if owner:
        command += ["--owner", owner]
    with open(directory / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent() if owner else None,
        )
    try:
        return process, _wait_until_up(directory, process, timeout_s, on_progress)
    except BaseException:  # includes Ctrl-C: the cluster runs in its own session and missed it
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        raise


def _wait_until_up(
    directory: Path,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    on_progress: Callable[[str], None],
) -> ClusterState:
    deadline = time.monotonic() + timeout_s
    shown, progress = "", "starting the API server"
    asked_nodes = 0.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterStartError(
                f"the cluster process exited with {process.returncode}; its log "
                f"({directory / LOG_FILE}) ends with:\n{log_tail(directory)}"
            )
        state = read_state(directory)
        if state is not None and state.phase == "failed":
            raise ClusterStartError(
                f"the cluster failed to start: {state.error}\n{log_tail(directory)}"
            )
        running = state is not None and state.phase == "running"
        nodes_due = time.monotonic() - asked_nodes >= NODES_POLL_S
        if state is not None and state.token and (running or nodes_due):
            asked_nodes = time.monotonic()
            try:
                registered, ready = asyncio.run(node_readiness(state))
            except Exception:  # not answering yet
                registered = ready = 0
            progress = (
                f"API up; nodes registered {registered}/{state.nodes}, Ready {ready}/{state.nodes}"
            )
            if running and ready >= state.nodes:
                on_progress(progress)
                return state
        if progress != shown:
            on_progress(progress)
            shown = progress
        time.sleep(CLUSTER_POLL_S)
    raise ClusterStartError(
        f"the cluster was not up after {timeout_s:.0f} s.\n{log_tail(directory)}"
    )


def stop_process(pid: int, directory: Path, timeout_s: float) -> str:
    """SIGTERM, then SIGKILL after ``timeout_s``; says which it took."""
    if not process_alive(pid, directory):
        return "was not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid, directory):
            return "stopped"
        time.sleep(CLUSTER_POLL_S)
    os.kill(pid, signal.SIGKILL)
    return f"killed (did not stop within {timeout_s:.0f} s)"


def dataplane_cleanup(name: str) -> str:
    """Remove namespaces/processes a killed cluster left behind; a note for the user or ""."""
    try:
        from localcluster.dataplane import cleanup
    except ImportError:
        return ""
    try:
        leftovers = cleanup(name)
    except Exception as exc:  # cleanup needs root; report, do not hide the rest of `down`
        return f"data-plane clean-up failed: {exc}"
    return f"removed data-plane leftovers: {leftovers}" if leftovers else ""


def teardown(name: str, directory: Path, timeout_s: float) -> list[str]:
    """Stop cluster ``name`` and remove everything it made: `rolltrace cluster down`, and a run
    or `cluster up` recovering a stale cluster. Lines for the user."""
    state = read_state(directory)
    if state is not None and process_alive(state.pid, directory):
        lines = [f"cluster {name!r}: {stop_process(state.pid, directory, timeout_s)}"]
    else:
        lines = [f"cluster {name!r} is not running"]
    if state is not None and state.kubeconfig:
        kubeconfig = Path(state.kubeconfig)
        if is_rolltrace_kubeconfig(kubeconfig):
            kubeconfig.unlink(missing_ok=True)
    note = dataplane_cleanup(name)
    if note:
        lines.append(note)
    if directory.is_dir():
        shutil.rmtree(directory)
    return lines


def owner_alive(state: ClusterState, directory: Path) -> bool:
    """Whether the cluster is still someone's: the run that owns it, or, for a cluster that owns
    itself (`cluster up`), its own process."""
    if state.owner:
        return identity_alive(state.owner)
    return process_alive(state.pid, directory)


def recover_stale(name: str, directory: Path, timeout_s: float = 30.0) -> str:
    """Tear down what a dead owner left of cluster ``name``; one line saying so ("" when
    there was nothing). The caller has made sure the owner is dead (``owner_alive`` or the
    run lock)."""
    state = read_state(directory)
    leftovers = dataplane_leftovers(name)
    if state is None and not leftovers:
        return ""
    whose = f"its owner pid {state.owner.partition(':')[0] or state.pid}" if state else "no owner"
    lines = teardown(name, directory, timeout_s)
    return f"cleaned up a stale cluster {name!r} ({whose} is gone): " + "; ".join(lines)


def dataplane_leftovers(name: str) -> str:
    """Namespaces and processes of cluster ``name`` that exist now, described ("" if none)."""
    try:
        from localcluster.dataplane import list_leftovers
    except ImportError:
        return ""
    try:
        return str(list_leftovers(name) or "")
    except Exception:  # listing needs `ip`; without it there is no data plane to leave over
        return ""


class ClusterBusy(RuntimeError):
    """Another live run holds the run cluster; the message says whose and what to do."""


class RunClusterLock:
    """The right to use the run cluster ``name``: an flock(2) on ``<state root>/<name>.lock``
    held by the run's process from before it looks at the cluster until after it stopped it.
    The kernel drops the lock when that process dies, however it dies, so a held lock means a
    live run, and a free one means whatever state is left under the name is stale. (The lock
    file sits beside the state directory because a teardown removes that directory.)"""

    def __init__(self, directory: Path) -> None:
        self.path = directory.with_name(f"{directory.name}.lock")
        self._fd: int | None = None

    def acquire(self, wait_s: float, on_wait: Callable[[str], None]) -> None:
        """Take the lock, waiting up to ``wait_s`` for another run, and saying so once."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_s
        said = False
        while not _try_flock(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if time.monotonic() > deadline:
                os.close(fd)
                raise ClusterBusy(
                    f"the run cluster {self.path.stem!r} is still in use by another "
                    f"`rolltrace run` (pid {holder}) after {wait_s:.0f} s of waiting; wait for "
                    f"that run to end or stop it (`kill {holder}`: its cluster goes with it)"
                )
            if not said:
                on_wait(
                    f"the run cluster {self.path.stem!r} is in use by another `rolltrace run` "
                    f"(pid {holder}); waiting for it to finish (Ctrl-C to give up)"
                )
                said = True
            time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


#: How often a waiting run tries the lock again: well under a run's own phases, cheap.
LOCK_POLL_S = 0.5


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


#: The modules the cluster process starts inside its namespaces, by the label a fault names.
AGENT_MODULES = {"localcluster.node": "node agent", "localcluster.lb": "lb"}


def agent_processes(api_socket: str) -> dict[str, str]:
    """The cluster's agent processes, found by the API socket on their command line: node name
    (or "lb") → ``localcluster.lifeline.identity``. A child an agent has just forked shows the
    agent's command line until it execs (kubelets and proxies fork ``ip`` and ``nft`` all the
    time), so a match whose parent matches too is such a child, not an agent."""
    labels: dict[int, str] = {}
    marker = api_socket.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker not in argv:
            continue
        module = next((m for m in AGENT_MODULES if m.encode() in argv), None)
        if module is None:
            continue
        label = _argument(argv, b"--node") if module == "localcluster.node" else "lb"
        if label:
            labels[int(proc.name)] = label
    return {
        label: who
        for pid, label in labels.items()
        if _parent(pid) not in labels and (who := identity(pid))
    }


def _parent(pid: int) -> int:
    """The parent's pid (field 4 of ``/proc/<pid>/stat``), 0 when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[-1].split()[1])


def _argument(argv: list[bytes], option: bytes) -> str:
    index = argv.index(option) if option in argv else -1
    return argv[index + 1].decode() if 0 <= index < len(argv) - 1 else ""


def api_answers(api_socket: str) -> bool:
    """Whether something accepts connections on the API server's unix socket."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(api_socket)
        except OSError:
            return False
    return True
