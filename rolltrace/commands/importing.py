"""``rolltrace import -o RUN --pcap CLIENT.pcap --watch FILE ...``: foreign traces → a run.

Builds a run directory (backend ``imported``) from a client capture, watch output (kubectl's or
``rolltrace watch``'s) and optionally a load tool's request log and L7 hops' access logs, which ``validate``, ``analyze``
and ``report`` then read like any other run (``analyzer.importer``). Exit 0 on success, 2 on
bad input (a located message: file, line or argument, field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _node_pcaps(values: list[str]) -> dict[str, Path]:
    """``NODE=FILE`` pairs; a malformed one is a located error."""
    out: dict[str, Path] = {}
    for value in values:
        node, sep, file = value.partition("=")
        if not sep or not node or not file:
            raise typer.BadParameter(f"{value!r} is not NODE=FILE", param_hint="--node-pcap")
        out[node] = Path(file)
    return out


def _existing(paths: list[Path], option: str) -> None:
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint=option)


def import_traces(
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory to create.")],
    pcap: Annotated[
        Path, typer.Option("--pcap", help="Client-side capture (pcap or pcapng, tcpdump -w).")
    ],
    watch: Annotated[
        list[Path],
        typer.Option(
            "--watch",
            help="Watch output: rolltrace's events.jsonl, `rolltrace watch -o FILE`, or "
            "`kubectl get KIND -w -o json --output-watch-events` (one file per kind). Repeatable.",
        ),
    ],
    node_pcap: Annotated[
        list[str] | None,
        typer.Option("--node-pcap", help="NODE=FILE: a node-side capture. Repeatable."),
    ] = None,
    requests: Annotated[
        Path | None,
        typer.Option(
            "--requests",
            help="Request log: k6 --out json, vegeta encode --to json, "
            "or rolltrace's Parquet (Locust recorder).",
        ),
    ] = None,
    requests_format: Annotated[
        str | None,
        typer.Option(
            "--requests-format", help="k6, vegeta, parquet or locust (default: detected)."
        ),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option("--service", help="NAMESPACE/NAME of the Service under test."),
    ] = None,
    lb: Annotated[
        str | None,
        typer.Option("--lb", help="ADDRESS:PORT clients connected to (default: the Service's)."),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option("--keep-going", help="Leave damaged input lines out (run becomes partial)."),
    ] = False,
    access_log: Annotated[
        list[Path] | None,
        typer.Option(
            "--access-log",
            help="An L7 hop's access log: ingress-nginx's default format or rolltrace's nginx "
            "JSON lines (detected). Repeatable.",
        ),
    ] = None,
    hop: Annotated[
        list[str] | None,
        typer.Option(
            "--hop",
            help="Name of the hop whose log is the --access-log in the same position "
            "(default: the file's stem). Repeatable.",
        ),
    ] = None,
) -> None:
    """Build a run directory from your own traces: a capture, watch output, a load tool's log."""
    # imported here, not at the top: pandas and pyarrow must not load for `rolltrace --help`
    from analyzer.errors import TraceError
    from analyzer.importer import Endpoint, ImportSpec, hop_names, import_run
    from analyzer.readers.loadtools import RequestFormat
    from rolltrace import __version__

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise typer.BadParameter(f"{output} exists and is not an empty directory", param_hint="-o")
    _existing([pcap, *watch, *([requests] if requests else [])], "--pcap/--watch/--requests")
    nodes = _node_pcaps(node_pcap or [])
    _existing(list(nodes.values()), "--node-pcap")
    _existing(list(access_log or []), "--access-log")
    if requests_format is not None and requests_format not in set(RequestFormat):
        names = ", ".join(RequestFormat)
        raise typer.BadParameter(f"not one of {names}", param_hint="--requests-format")
    try:
        spec = ImportSpec(
            output=output,
            client_pcap=pcap,
            watches=list(watch),
            node_pcaps=nodes,
            requests=requests,
            requests_format=RequestFormat(requests_format) if requests_format else None,
            service=service,
            lb=Endpoint.parse(lb) if lb else None,
            keep_going=keep_going,
            tool_versions={"rolltrace": __version__},
            access_logs=hop_names(list(access_log or []), list(hop or [])),
        )
        result = import_run(spec, progress=lambda line: err.print(f"[dim]{line}[/dim]"))
    except TraceError as exc:
        err.print(f"[red]bad input:[/red] {exc}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console = Console(soft_wrap=True, highlight=False)
    for note in result.notes:
        console.print(f"- {note}")
    for reason in result.meta.status_reasons:
        console.print(f"[yellow]partial:[/yellow] {reason}")
    console.print(
        f"{output}: imported ({result.meta.status.value}); next: rolltrace analyze {output}"
    )


def register(app: typer.Typer) -> None:
    app.command("import")(import_traces)
