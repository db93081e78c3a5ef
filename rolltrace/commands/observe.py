"""``rolltrace observe``: load, capture and watch an existing Service while your own tooling
rolls it out; then analyze and report, like ``rolltrace run``. Changes nothing in the cluster."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

# The runner (pydantic, the kubernetes client, pyarrow) and rich are imported in the command
# function, so that `rolltrace --help` does not pay for them.
if TYPE_CHECKING:
    from rolltrace.scenario import Scenario

#: with --until-rollout and no --duration, how long to wait at most (for the rollout to start
#: and complete): load must stop by itself even when nobody rolls out
DEFAULT_OBSERVATION_S = 600.0


def _bad_input(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def parse_address(text: str) -> tuple[str, int]:
    """``ADDRESS:PORT`` (``[v6]:PORT`` for IPv6) of ``--lb``."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", text)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"--lb {text!r}: expected ADDRESS:PORT, e.g. 203.0.113.10:80")
    return match.group(1), int(match.group(2))


def resolve_context(kubeconfig: Path | None, context: str | None) -> tuple[str, str]:
    """The kubeconfig context to use (the current one when not named) and its namespace."""
    from kubernetes import config as k8s_config

    try:
        contexts, current = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            str(kubeconfig) if kubeconfig else None
        )
    except (OSError, k8s_config.ConfigException) as exc:
        where = kubeconfig or "the default kubeconfig"
        raise ValueError(f"cannot read {where}: {exc}") from None
    by_name = {c["name"]: c for c in contexts or []}
    chosen = by_name.get(context) if context else current
    if not chosen:
        raise ValueError(f"no context {context!r} in the kubeconfig (has: {', '.join(by_name)})")
    return str(chosen["name"]), str((chosen.get("context") or {}).get("namespace") or "default")


def _scenario(
    service: str,
    context: str,
    namespace: str,
    scenario_file: Path | None,
    load: Mapping[str, object],
) -> Scenario:
    from rolltrace.runner.observe import base_scenario
    from rolltrace.scenario import load_scenario

    loaded = load_scenario(scenario_file) if scenario_file else None
    name = re.sub(r"-+$", "", f"observe-{service}"[:63])
    base = base_scenario(name, context, namespace, loaded)
    given = {key: value for key, value in load.items() if value is not None}
    return base.model_validate({**base.model_dump(), "load": {**base.load.model_dump(), **given}})


def register(app: typer.Typer) -> None:
    @app.command("observe")
    def observe(
        service: Annotated[str, typer.Option("--service", help="The LoadBalancer Service.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="The run directory to write.")],
        kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig file.")] = None,
        context: Annotated[
            str | None, typer.Option(help="kubeconfig context (default: the current one).")
        ] = None,
        namespace: Annotated[
            str | None,
            typer.Option("-n", "--namespace", help="Namespace (default: the context's)."),
        ] = None,
        until_rollout: Annotated[
            str | None,
            typer.Option(
                "--until-rollout",
                help="Stop once this Deployment's rollout has started and completed (and its "
                "old Pods are gone).",
            ),
        ] = None,
        duration: Annotated[
            float | None,
            typer.Option(
                help="Seconds to observe; with --until-rollout, the most to wait "
                f"(default {DEFAULT_OBSERVATION_S:g}).",
                min=1,
            ),
        ] = None,
        deadline: Annotated[
            float | None,
            typer.Option(help="Seconds a started rollout may take (default: the scenario's)."),
        ] = None,
        rate: Annotated[float | None, typer.Option(help="Requests per second.")] = None,
        users: Annotated[int | None, typer.Option(help="Simulated users.")] = None,
        path: Annotated[str | None, typer.Option(help="HTTP path to request.")] = None,
        scenario_file: Annotated[
            Path | None,
            typer.Option("--scenario", help="Take the load settings from this scenario file."),
        ] = None,
        lb: Annotated[
            str | None,
            typer.Option(help="ADDRESS:PORT to send to instead of the Service's LB address."),
        ] = None,
        check: Annotated[
            bool, typer.Option("--check/--no-check", help="Exit 1 when expectations fail.")
        ] = True,
    ) -> None:
        """Load, capture and watch an existing Service while your own tooling rolls it out
        (kubectl, Helm, Argo CD, Flagger); then analyze and report. Changes nothing."""
        from rich.console import Console
        from rich.markup import escape

        from rolltrace.commands.run import LiveProgress, print_outcome, unmet_expectations
        from rolltrace.runner.backends import KubeBackend
        from rolltrace.runner.observe import Observation, ObserveOptions
        from rolltrace.scenario import ScenarioError

        console = Console(stderr=True, log_path=False)
        if until_rollout is None and duration is None:
            raise _bad_input("give --until-rollout DEPLOYMENT, --duration SECONDS, or both")
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise _bad_input(f"{output} exists and is not an empty directory")
        try:
            address = parse_address(lb) if lb else None
            context_name, default_namespace = resolve_context(kubeconfig, context)
            load = {"rate": rate, "users": users, "path": path}
            scenario = _scenario(
                service, context_name, namespace or default_namespace, scenario_file, load
            )
        except (ValueError, ScenarioError) as exc:
            raise _bad_input(str(exc)) from None
        options = ObserveOptions(
            service=service,
            until_rollout=until_rollout,
            duration_s=duration or DEFAULT_OBSERVATION_S,
            deadline_s=deadline or scenario.rollout.deadline_s,
            lb=address,
        )
        progress = LiveProgress(console, f"observe {service}")
        with progress.live:
            outcome = Observation(
                scenario, output, KubeBackend(kubeconfig), options, progress
            ).run()
        print_outcome(console, outcome)
        if outcome.summary is None:
            console.print(
                f"[red]✗[/red] {escape(str(output))}: no analysis ({outcome.meta.status})"
            )
            raise typer.Exit(1)
        broken = unmet_expectations(scenario, outcome.summary)
        for text in broken:
            console.print(f"[red]✗[/red] expected {escape(text)}")
        if check and broken:
            raise typer.Exit(1)
