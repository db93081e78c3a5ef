"""`rolltrace cluster up|down|status`: the embedded local cluster as a background process.

`up` starts ``python -m localcluster.main`` detached (its own session, log in the state
directory), then waits until the API answers and every node is registered and Ready; `down`
sends SIGTERM (SIGKILL after a timeout) and then removes any data-plane leftovers by name, so it
also cleans up after a cluster that was killed. Other cluster commands (e.g. `exec`) attach to
``cluster_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from localcluster.apiserver import HttpClient
from localcluster.config import ClusterConfig
from localcluster.state import (
    LOG_FILE,
    ClusterState,
    is_rolltrace_kubeconfig,
    process_alive,
    read_state,
    state_dir,
)

cluster_app = typer.Typer(
    name="cluster", help="Run the embedded local Kubernetes cluster.", no_args_is_help=True
)

NameOption = Annotated[
    str, typer.Option("--name", help="Cluster name (prefix of everything it creates).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _log_tail(directory: Path, lines: int = 15) -> str:
    try:
        return "\n".join((directory / LOG_FILE).read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _node_readiness(state: ClusterState) -> tuple[int, int]:
    """(registered, Ready) node counts, asked over the unix socket."""
    async with HttpClient("http://localhost", state.token, unix_socket=state.api_socket) as client:
        nodes, _ = await client.list("nodes")
    ready = sum(
        1
        for node in nodes
        for c in (node.get("status") or {}).get("conditions") or []
        if c.get("type") == "Ready" and c.get("status") == "True"
    )
    return len(nodes), ready


def _wait_until_up(
    directory: Path, process: subprocess.Popen[bytes], timeout_s: float
) -> ClusterState:
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        state = read_state(directory)
        if process.poll() is not None or (state is not None and state.phase == "failed"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)  # it cleans up, then logs why it failed
            log_tail = _log_tail(directory)
            hint = "\n(no root or network tools here? try --virtual)"
            raise _fail(
                f"the cluster failed to start; its log ({directory / LOG_FILE}) ends with:\n"
                f"{log_tail}{hint if 'DataplaneUnavailable' in log_tail else ''}"
            )
        progress = "starting the API server"
        if state is not None and state.token:
            try:
                registered, ready = asyncio.run(_node_readiness(state))
            except Exception:  # not answering yet
                registered = ready = 0
            progress = (
                f"API up; nodes registered {registered}/{state.nodes}, Ready {ready}/{state.nodes}"
            )
            if state.phase == "running" and ready >= state.nodes:
                typer.echo(progress, err=True)
                return state
        if progress != shown:
            typer.echo(progress, err=True)
            shown = progress
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    raise _fail(
        f"the cluster was not up after {timeout_s:.0f} s; stopped it.\n{_log_tail(directory)}"
    )


@cluster_app.command()
def up(
    nodes: Annotated[int | None, typer.Option(help="Number of nodes.")] = None,
    virtual: Annotated[
        bool, typer.Option("--virtual", help="Virtual nodes (no processes, no root).")
    ] = False,
    kubeconfig: Annotated[Path | None, typer.Option(help="Where to write the kubeconfig.")] = None,
    name: NameOption = "rt",
    config: Annotated[Path | None, typer.Option(help="ClusterConfig file (YAML or JSON).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the cluster.")] = 120.0,
) -> None:
    """Start a local cluster in the background and print its kubeconfig."""
    raw: dict[str, Any] = (yaml.safe_load(config.read_text()) or {}) if config else {}
    raw["name"] = name
    if nodes is not None:
        raw["nodes"] = nodes
    if virtual:
        raw["virtual"] = True
    try:
        cluster_config = ClusterConfig.model_validate(raw)
    except ValueError as exc:
        raise _fail(f"invalid cluster configuration: {exc}") from exc
    directory = state_dir(name)
    existing = read_state(directory)
    if existing is not None and process_alive(existing.pid, directory):
        raise _fail(
            f"a cluster named {name!r} is already up (pid {existing.pid}, {existing.url}); "
            f"`rolltrace cluster down --name {name}` first, or pick another --name"
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    config_path = directory / "cluster.json"
    config_path.write_text(cluster_config.model_dump_json(indent=2))
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
        state = _wait_until_up(directory, process, timeout)
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)  # it runs in its own session: Ctrl-C missed it
        process.wait(timeout=30)
        raise _fail("interrupted; the half-started cluster was stopped") from None
    kind = "virtual" if cluster_config.virtual else "real"
    typer.echo(
        f"cluster {name!r} is up: {state.url}, {cluster_config.nodes} {kind} node(s), pid {state.pid}"
    )
    typer.echo(f"kubeconfig: {state.kubeconfig}")
    typer.echo(f"export KUBECONFIG={state.kubeconfig}")


def _stop_process(pid: int, directory: Path, timeout_s: float) -> str:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid, directory):
            return "stopped"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return f"killed (did not stop within {timeout_s:.0f} s)"


def _dataplane_cleanup(name: str) -> str:
    try:
        from localcluster.dataplane import cleanup
    except ImportError:
        return ""
    try:
        leftovers = cleanup(name)
    except Exception as exc:  # cleanup needs root; report, do not hide the rest of `down`
        return f"data-plane clean-up failed: {exc}"
    return f"removed data-plane leftovers: {leftovers}" if leftovers else ""


@cluster_app.command()
def down(
    name: NameOption = "rt",
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 20.0,
) -> None:
    """Stop the cluster and remove everything it made (idempotent)."""
    directory = state_dir(name)
    state = read_state(directory)
    if state is not None and process_alive(state.pid, directory):
        typer.echo(f"cluster {name!r}: {_stop_process(state.pid, directory, timeout)}")
    else:
        typer.echo(f"cluster {name!r} is not running")
    if state is not None and state.kubeconfig:
        kubeconfig = Path(state.kubeconfig)
        if is_rolltrace_kubeconfig(kubeconfig):
            kubeconfig.unlink(missing_ok=True)
    note = _dataplane_cleanup(name)
    if note:
        typer.echo(note)
    if directory.is_dir():
        shutil.rmtree(directory)


async def _summary(state: ClusterState) -> tuple[list[str], dict[str, int]]:
    async with HttpClient("http://localhost", state.token, unix_socket=state.api_socket) as client:
        nodes, _ = await client.list("nodes")
        pods, _ = await client.list("pods")
    node_lines = []
    for node in nodes:
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        node_lines.append(f"{node['metadata']['name']} {'Ready' if ready else 'NotReady'}")
    phases: dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase", "Unknown")
        phases[phase] = phases.get(phase, 0) + 1
    return node_lines, phases


@cluster_app.command()
def status(name: NameOption = "rt") -> None:
    """Show the cluster's URL, process, nodes and Pods."""
    directory = state_dir(name)
    state = read_state(directory)
    if state is None or not process_alive(state.pid, directory):
        raise _fail(f"cluster {name!r} is not running")
    typer.echo(
        f"cluster:    {name} ({state.phase}, {'virtual' if state.virtual else 'real'} nodes)"
    )
    typer.echo(f"url:        {state.url}")
    typer.echo(f"pid:        {state.pid}")
    typer.echo(f"kubeconfig: {state.kubeconfig}")
    try:
        node_lines, phases = asyncio.run(_summary(state))
    except Exception as exc:
        raise _fail(f"the API server does not answer: {exc}") from exc
    typer.echo(f"nodes:      {', '.join(node_lines) or 'none'}")
    pods = ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items()))
    typer.echo(f"pods:       {pods or 'none'}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
