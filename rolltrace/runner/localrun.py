"""Starting and stopping the local cluster's process: shared by `rolltrace cluster up/down` and by
the experiment runner, which starts a private cluster per run with the scenario's timing.

The cluster runs as its own process (``python -m localcluster.main``) in a new session so that
Ctrl-C in a terminal reaches rolltrace first, which then stops the cluster in order (agents
remove their nft tables, namespaces are deleted) instead of both dying at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster.apiserver import HttpClient
from localcluster.config import ClusterConfig
from localcluster.objects import pod_condition
from localcluster.state import LOG_FILE, ClusterState, process_alive, read_state


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


def start_cluster(
    config: ClusterConfig,
    directory: Path,
    kubeconfig: Path | None = None,
    timeout_s: float = 120.0,
    on_progress: Callable[[str], None] = lambda _: None,
) -> tuple[subprocess.Popen[bytes], ClusterState]:
    """Start the cluster process and wait until its API answers and every node is Ready."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path = directory / "cluster.json"
    config_path.write_text(config.model_dump_json(indent=2))
    command = [sys.executable, "-m", "localcluster.main", "--config", str(config_path)]
    command += ["--state-dir", str(directory)]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig.resolve())]
    with open(directory / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
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
    shown = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterStartError(
                f"the cluster process exited with {process.returncode}; its log "
                f"({directory / LOG_FILE}) ends with:\n{log_tail(directory)}"
            )
        state = read_state(directory)
        progress = "starting the API server"
        if state is not None and state.phase == "failed":
            raise ClusterStartError(
                f"the cluster failed to start: {state.error}\n{log_tail(directory)}"
            )
        if state is not None and state.token:
            try:
                registered, ready = asyncio.run(node_readiness(state))
            except Exception:  # not answering yet
                registered = ready = 0
            progress = (
                f"API up; nodes registered {registered}/{state.nodes}, Ready {ready}/{state.nodes}"
            )
            if state.phase == "running" and ready >= state.nodes:
                on_progress(progress)
                return state
        if progress != shown:
            on_progress(progress)
            shown = progress
        time.sleep(0.2)
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
        time.sleep(0.1)
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
