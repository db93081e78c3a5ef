"""`rolltrace cluster exec -- CMD…`: run a command in the local cluster's client namespace, so
curl or a user's own load tool reaches the Service's external IP the way an outside client
would (through the cloud LB, then a node). The exit code is the command's."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from rolltrace.commands.cluster import cluster_app


def exec_in_client(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    name: Annotated[str, typer.Option("--name", help="Cluster name.")] = "rt",
) -> None:
    """Run a command in the cluster's client namespace (e.g. `-- curl http://EXTERNAL-IP/`)."""
    # imported here: the cluster's configuration (pydantic) must not load for `rolltrace --help`
    from localcluster.config import ClusterConfig
    from localcluster.dataplane import ip
    from localcluster.dataplane.addressing import AddressPlan

    netns = AddressPlan(ClusterConfig(name=name)).client_netns
    try:
        present = netns in ip.list_netns()
    except (OSError, ip.CommandError) as exc:
        typer.echo(f"error: cannot list network namespaces: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not present:
        typer.echo(
            f"error: cluster {name!r} has no client namespace {netns!r}: is it up with real "
            f"nodes (`rolltrace cluster up --name {name}`)?",
            err=True,
        )
        raise typer.Exit(1)
    try:
        completed = subprocess.run(ip.netns_exec(netns, *command))
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(127) from exc
    raise typer.Exit(completed.returncode)


def register(app: typer.Typer) -> None:
    cluster_app.command("exec")(exec_in_client)
