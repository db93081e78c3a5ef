"""``rolltrace watch``: record a namespace's rollout-relevant objects with receive times.

The recorder to run beside any rollout on any cluster (``kubectl rollout``, Helm, Argo Rollouts):
Pods, EndpointSlices, Services, Deployments, ReplicaSets and core/v1 Events, listed then watched
by the runner's ``ClusterWatcher`` (relist on 410 Gone with ``GAP`` markers), each event stamped
when its bytes arrived. The file is events.jsonl (docs/trace-format.md), which ``rolltrace import
--watch FILE`` takes as it is. kubectl's own watch output works too, but kubectl records no
receive time, so its times are derived from object fields and are coarse (one second).

Exit codes: 0 recorded (until the duration or Ctrl-C), 2 unusable input (kubeconfig, context,
namespace, an existing output file, a verb the cluster refused).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rolltrace.runner.watch import ClusterWatcher, StreamStats

EXIT_OK, EXIT_UNUSABLE = 0, 2
#: How often the progress line is printed: often enough to see a rollout move, rarely enough
#: to stay readable in a CI log.
PROGRESS_EVERY_S = 5.0


def _unusable(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_UNUSABLE)


def watch(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="File to write (events.jsonl format).")
    ],
    namespace: Annotated[
        str | None,
        typer.Option("-n", "--namespace", help="Namespace to watch (default: the context's)."),
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config).")
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="kubeconfig context (default: the current one).")
    ] = None,
    selector: Annotated[
        str | None,
        typer.Option(
            "-l",
            "--selector",
            help="Label selector for Pods, Services, Deployments and ReplicaSets "
            "(EndpointSlices and Events: the whole namespace).",
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: at Ctrl-C).")
    ] = None,
) -> None:
    """Record Pods, EndpointSlices, Services, Deployments, ReplicaSets and Events with receive
    times, until Ctrl-C or --duration: the precise watch for `rolltrace import --watch`.
    """
    # imported here, not at the top: the kubernetes client and the runner must not load for
    # `rolltrace --help`
    from rolltrace.runner.watch import AccessError, ClusterWatcher, check_access

    if output.exists() and output.stat().st_size > 0:
        raise _unusable(f"-o {output}: exists; choose another file (recordings are not merged)")
    api_client, namespace = _connect(kubeconfig, context, namespace)
    try:
        check_access(api_client, namespace)
    except AccessError as exc:
        raise _unusable(str(exc)) from None
    watcher = ClusterWatcher(api_client, namespace, output, label_selector=selector)
    typer.echo(f"watching namespace {namespace!r} into {output} (Ctrl-C stops)", err=True)
    started = time.monotonic()
    watcher.start()
    try:
        _record(watcher, started, duration)
    except KeyboardInterrupt:
        typer.echo("interrupted: stopping", err=True)
    stats = watcher.stop()
    _summary(output, watcher.lines, stats, time.monotonic() - started)


def _connect(
    kubeconfig: Path | None, context: str | None, namespace: str | None
) -> tuple[Any, str]:
    """The API client and the namespace to watch; a located error for a kubeconfig that
    cannot be read or a context it does not have."""
    from kubernetes import config as k8s_config

    from rolltrace.runner.backends import api_client_from

    where = f"--kubeconfig {kubeconfig}" if kubeconfig else "the default kubeconfig"
    if kubeconfig is not None and not kubeconfig.is_file():
        raise _unusable(f"--kubeconfig {kubeconfig}: no such file")
    try:
        client = api_client_from(kubeconfig, context)
        contexts, current = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            str(kubeconfig) if kubeconfig else None
        )
    except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
        named = f" context {context!r}" if context else ""
        raise _unusable(f"{where}{named}: {exc}"[:400]) from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    default = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return client, namespace or default


def _record(watcher: ClusterWatcher, started: float, duration: float | None) -> None:
    """Print a progress line every few seconds until the duration is over."""
    deadline = None if duration is None else started + duration
    next_line = started + PROGRESS_EVERY_S
    while deadline is None or time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, (deadline or float("inf")) - time.monotonic())))
        if time.monotonic() >= next_line:
            typer.echo(_progress(watcher.stream_stats, time.monotonic() - started), err=True)
            next_line += PROGRESS_EVERY_S


def _progress(stats: dict[str, StreamStats], elapsed_s: float) -> str:
    counts = ", ".join(f"{kind} {s.events}" for kind, s in stats.items())
    trouble = [f"{kind}: {s.errors[-1]}" for kind, s in stats.items() if s.errors and s.reconnects]
    line = f"{elapsed_s:6.0f} s  events: {counts}"
    return line + (f"  (reconnecting: {'; '.join(trouble)})" if trouble else "")


def _summary(output: Path, lines: int, stats: dict[str, StreamStats], elapsed_s: float) -> None:
    typer.echo(f"recorded {lines} lines in {elapsed_s:.1f} s into {output}")
    for kind, s in stats.items():
        extra = f", {s.gaps} gaps (events may be missing), {s.relists} relists" if s.gaps else ""
        typer.echo(f"  {kind}: {s.events} watch events{extra}")
    typer.echo(f"analyze it with: rolltrace import --watch {output} ...")


def register(app: typer.Typer) -> None:
    app.command(name="watch")(watch)
