"""`rolltrace cluster up|down|status`: the embedded local cluster as a background process.

`up` starts ``python -m localcluster.main`` detached (its own session, log in the state
directory), then waits until the API answers and every node is registered and Ready; `down`
sends SIGTERM (SIGKILL after a timeout) and then removes any data-plane leftovers by name, so it
also cleans up after a cluster that was killed. Other cluster commands (e.g. `exec`) attach to
``cluster_app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from localcluster.state import process_alive, read_state, state_dir
from rolltrace.commands import not_a_directory

# rolltrace.runner.localrun (the API client, aiohttp), the pydantic cluster config and asyncio (with the
# ssl module it loads) are imported in the commands that use them, so that `rolltrace --help`
# does not pay for them.
if TYPE_CHECKING:
    from localcluster.state import ClusterState

cluster_app = typer.Typer(
    name="cluster", help="Run the embedded local Kubernetes cluster.", no_args_is_help=True
)

NameOption = Annotated[
    str, typer.Option("--name", help="Cluster name (prefix of everything it creates).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _read_config(config: Path | None) -> dict[str, Any]:
    """The --config file's mapping; a located error (exit 2), not a traceback, when the file
    cannot be read or is not a YAML mapping."""
    from rolltrace.scenario import yaml_error

    if config is None:
        return {}
    try:
        raw = yaml.safe_load(config.read_text()) or {}
    except OSError as exc:
        raise _usage_error(f"--config {config}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _usage_error(yaml_error(f"--config {config}", exc)) from None
    if not isinstance(raw, dict):
        raise _usage_error(f"--config {config}: a ClusterConfig is a YAML mapping")
    return raw


def _usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


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
    api_in_network: Annotated[
        bool,
        typer.Option(
            help="Also serve the API inside the emulated network, for the client namespace "
            "(`cluster exec`), as a real cluster's endpoint is reachable from a workstation. "
            "Real nodes only."
        ),
    ] = True,
) -> None:
    """Start a local cluster in the background and print its kubeconfig."""
    from localcluster.config import ClusterConfig
    from rolltrace.runner.localrun import (
        ClusterStartError,
        owner_alive,
        recover_stale,
        start_cluster,
    )

    raw = _read_config(config)
    raw["name"] = name
    if nodes is not None:
        raw["nodes"] = nodes
    if virtual:
        raw["virtual"] = True
    raw["api_in_network"] = api_in_network
    try:
        cluster_config = ClusterConfig.model_validate(raw)
    except ValueError as exc:
        raise _fail(f"invalid cluster configuration: {exc}") from exc
    unusable = kubeconfig and not_a_directory("--kubeconfig's directory", kubeconfig.parent)
    if unusable:
        raise _usage_error(unusable)
    directory = state_dir(name)
    existing = read_state(directory)
    if existing is not None and owner_alive(existing, directory):
        raise _fail(
            f"a cluster named {name!r} is already up (pid {existing.pid}, {existing.url}); "
            f"`rolltrace cluster down --name {name}` first, or pick another --name"
        )
    recovered = recover_stale(name, directory)  # its owner died: the same as `cluster down`
    if recovered:
        typer.echo(recovered, err=True)
    try:
        _, state = start_cluster(
            cluster_config, directory, kubeconfig, timeout, lambda line: typer.echo(line, err=True)
        )
    except ClusterStartError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; the half-started cluster was stopped") from None
    kind = "virtual" if cluster_config.virtual else "real"
    typer.echo(
        f"cluster {name!r} is up: {state.url}, {cluster_config.nodes} {kind} node(s), pid {state.pid}"
    )
    typer.echo(f"kubeconfig: {state.kubeconfig}")
    typer.echo(f"export KUBECONFIG={state.kubeconfig}")
    if state.kubeconfig_in_network:
        typer.echo(
            f"from the client namespace (`rolltrace cluster exec --name {name} -- ...`): "
            f"{state.api_in_network_url}, kubeconfig {state.kubeconfig_in_network}"
        )


@cluster_app.command()
def down(
    name: NameOption = "rt",
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 20.0,
) -> None:
    """Stop the cluster and remove everything it made (idempotent)."""
    from rolltrace.runner.localrun import teardown

    for line in teardown(name, state_dir(name), timeout):
        typer.echo(line)


async def _summary(state: ClusterState) -> tuple[list[str], dict[str, int]]:
    from rolltrace.runner.localrun import api_client, node_is_ready

    async with api_client(state) as client:
        nodes, _ = await client.list("nodes")
        pods, _ = await client.list("pods")
    node_lines = [
        f"{node['metadata']['name']} {'Ready' if node_is_ready(node) else 'NotReady'}"
        for node in nodes
    ]
    phases: dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase", "Unknown")
        phases[phase] = phases.get(phase, 0) + 1
    return node_lines, phases


@cluster_app.command()
def status(name: NameOption = "rt") -> None:
    """Show the cluster's URL, process, nodes and Pods."""
    import asyncio

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
    if state.api_in_network_url:
        typer.echo(f"in network: {state.api_in_network_url} ({state.kubeconfig_in_network})")
    try:
        node_lines, phases = asyncio.run(_summary(state))
    except Exception as exc:
        raise _fail(f"the API server does not answer: {exc}") from exc
    typer.echo(f"nodes:      {', '.join(node_lines) or 'none'}")
    pods = ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items()))
    typer.echo(f"pods:       {pods or 'none'}")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
