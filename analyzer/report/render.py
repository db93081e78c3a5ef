"""Render a run's report: ``analysis/report.html`` (one self-contained file), ``report.md``
(the same content for a pull request) and ``figures/*.png``.

Everything here is formatting: the numbers come from ``facts``, the pictures from ``figures``,
the advice from ``recommendations``. Every string that came from a trace (Pod names, evidence,
error text, run ids) goes through ``html.escape`` / ``md_escape``: a Pod name is user data.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analyzer.advice import Recommendation
from analyzer.pipeline import Analysis
from analyzer.readers.accesslog import is_coarse
from analyzer.report import figures
from analyzer.report.facts import RunFacts, read_truth, rules_dropped, run_facts
from analyzer.report.recommendations import fix_line, margins_held, to_change
from analyzer.run import Run
from analyzer.rundir import RunPaths, atomic_write_bytes
from analyzer.schema import PodMatch, RunStatus

DPI = 100


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    figures: list[Path]


Table = tuple[list[str], list[list[str]]]


@dataclass(frozen=True)
class Section:
    """One report section: a heading, an optional figure, tables and paragraphs; ``folded`` is
    a table shown collapsed under its summary line (what held, for whoever wants to check)."""

    title: str
    figure: str | None  # figure name (figures/<name>.png)
    paragraphs: list[str]
    table: Table | None = None
    folded: tuple[str, Table] | None = None


@dataclass(frozen=True)
class Lead:
    """Right under the headline: what to change (what, detail) — or, when nothing needs
    changing, the margins that held."""

    title: str
    items: list[tuple[str, str]]
    #: Said before the advice: the analysis lost part of its input (``degraded_lines``).
    caveats: list[str] = field(default_factory=list)


def lead(facts: RunFacts) -> Lead:
    """The fix first: every recommendation that is not ``ok``; a run that needs no change gets
    a short positive lead instead."""
    pending = to_change(facts.recommendations)
    caveats = degraded_lines(facts)
    if pending:
        return Lead("What to change", [fix_line(r) for r in pending], caveats)
    held = margins_held(facts.recommendations)
    return Lead(
        "Nothing to change: the margins that held",
        [(line, "") for line in held] or [("Nothing failed and no setting was judged.", "")],
        caveats,
    )


def _s(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s"


def causes_title(facts: RunFacts) -> str:
    if not facts.failed:
        return f"No request failed ({facts.total} requests)"
    parts = ", ".join(f"{row.failed} {row.cause} ({row.share:.0%})" for row in facts.causes)
    return f"{facts.failed} requests failed: {parts}"


def lanes_title(facts: RunFacts, pods: int) -> str:
    return f"{pods} Pods; {facts.failed} failed requests marked on the Pod they hit"


def connections_title(facts: RunFacts) -> str:
    return "; ".join(
        f"{row.kind} connections: {row.failed} of {row.requests} failed over {row.disruption_s} s"
        for row in facts.connections
    )


def timings_title(facts: RunFacts) -> str:
    prop = facts.timings.get("propagation") or {}
    if not prop.get("n"):
        return "Endpoint propagation was not measured"
    prestop = facts.settings.prestop_s
    against = "" if prestop is None else f" vs preStop {prestop:g} s"
    return f"Endpoint propagation p99 {_s(prop.get('p99_ms'))}{against} (n={prop['n']})"


def build_figures(
    run: Run, facts: RunFacts, truth: pd.DataFrame | None = None
) -> dict[str, Figure]:
    """Every figure of the report, by file stem; ``truth`` as ``read_truth`` gives it (read
    from the run when not given)."""
    if truth is None:
        truth = read_truth(run.paths.truth)
    end_ns = int(run.requests["end_ns"].max()) if len(run.requests) else facts.t0_ns
    end_ns = max(end_ns, facts.phases.get("load_stop", end_ns))
    first_ns = int(run.requests["start_ns"].min()) if len(run.requests) else facts.t0_ns
    lanes = [*run.pods["pod"].astype(str), figures.UNKNOWN_POD]
    time_axis = figures.TimeAxis.of(
        min(first_ns - facts.t0_ns, 0) / 1e9, (end_ns - facts.t0_ns) / 1e9, lanes
    )
    built = {
        "timeline": figures.timeline_figure(
            run.requests,
            run.failures,
            run.latency,
            run.pods,
            facts.phases,
            facts.t0_ns,
            facts.headline,
            time_axis,
        ),
        "pod-lanes": figures.pod_lanes_figure(
            run.pods,
            run.endpoints,
            run.failures,
            truth,
            rules_dropped(truth),
            facts.t0_ns,
            time_axis,
            lanes_title(facts, len(run.pods)),
        ),
    }
    if facts.failed:
        built["causes"] = figures.causes_figure(run.failures, causes_title(facts))
        built["connections"] = figures.connections_figure(
            facts.connections, connections_title(facts)
        )
    if has_timings(facts):
        built["timings"] = figures.timings_figure(run.timings, facts.settings, timings_title(facts))
    return built


def _timing_rows(facts: RunFacts) -> list[list[str]]:
    rows = []
    for name, label in (
        ("propagation", "endpoint propagation"),
        ("readiness_lead", "readiness lead"),
        ("drain", "drain"),
    ):
        stats = facts.timings.get(name) or {}
        rows.append(
            [
                label,
                str(stats.get("n", 0)),
                _s(stats.get("p50_ms")),
                _s(stats.get("p99_ms")),
                _s(stats.get("max_ms")),
            ]
        )
    return rows


def _causes_section(facts: RunFacts) -> Section:
    """Failures per cause with the most confident failure's evidence: the reader checks a cause
    against its evidence, not only against a count."""
    cause_rows = [
        [
            row.cause,
            str(row.failed),
            f"{row.share:.0%}",
            f"{row.mean_confidence:.2f}",
            row.evidence,
            ", ".join(str(e.request_id) for e in row.examples),
        ]
        for row in facts.causes
    ]
    return Section(
        "Causes",
        "causes",
        ["The evidence column quotes the most confident failure of each cause."]
        if facts.failed
        else ["No failures to explain."],
        (
            [
                "cause",
                "failed",
                "share",
                "mean confidence",
                "evidence (example)",
                "example request ids",
            ],
            cause_rows,
        )
        if cause_rows
        else None,
    )


def _examples_section(facts: RunFacts) -> Section:
    """A few failed requests per cause, each with the connection, Pod and evidence that decided
    it: the ids to look up in the raw traces. Where an L7 hop logged a request, a path column
    shows the way it went (client → hop → upstream Pod); a run without hop logs has none."""
    examples = [(row.cause, e) for row in facts.causes for e in row.examples]
    with_path = any(e.path for _, e in examples)
    header = ["cause", "request", "start", "error", "connection", "Pod (how known)"]
    return Section(
        "Example failed requests",
        None,
        ["The most confident failures of each cause, with the evidence that decided them."]
        if facts.failed
        else [],
        (
            header + (["path"] if with_path else []) + ["evidence"],
            [
                [
                    cause,
                    str(e.request_id),
                    f"{e.t_s:.3f} s",
                    e.error_kind,
                    e.connection,
                    f"{e.pod} ({e.pod_method})",
                    *([e.path or "—"] if with_path else []),
                    e.evidence,
                ]
                for cause, e in examples
            ],
        )
        if facts.failed
        else None,
    )


def _pod_lanes_section(has_truth: bool) -> Section:
    """How to read the lanes; says where the (truth) marks come from when the run has them, so
    nobody mistakes ground truth for the analyzer's evidence."""
    truth_note = (
        " Marks labelled (truth) come from truth.jsonl, the local cluster's / trace builder's "
        "ground truth: shown for understanding, never used to decide a cause."
        if has_truth
        else ""
    )
    return Section(
        "Pod lanes",
        "pod-lanes",
        [
            "One lane per Pod: its lifecycle from the watch (upper bar) and its endpoint "
            "membership (lower bar); failed requests are marked on the lane of the Pod they "
            "hit, or on the 'unknown Pod' lane." + truth_note
        ],
    )


def _recommendations_section(recs: Sequence[Recommendation]) -> Section:
    """Every verdict with its numbers; the ``ok`` ones folded (they need no action)."""
    header = ["setting", "verdict", "advice", "why (numbers from this run)"]

    def rows(ok: bool) -> list[list[str]]:
        return [
            [r.topic, r.verdict, r.advice, r.reasoning] for r in recs if (r.verdict == "ok") == ok
        ]

    held = rows(ok=True)
    return Section(
        "All recommendations",
        None,
        [],
        (header, rows(ok=False)) if rows(ok=False) else None,
        (f"{len(held)} setting(s) that held", (header, held)) if held else None,
    )


def _connections_section(facts: RunFacts) -> Section:
    return Section(
        "New vs reused connections",
        "connections" if facts.failed else None,
        ["A disruption second is a second with at least one failed request of that kind."],
        (
            ["connections", "requests", "failed", "disruption seconds"],
            [
                [r.kind, str(r.requests), str(r.failed), str(r.disruption_s)]
                for r in facts.connections
            ],
        ),
    )


def _ms(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.1f} ms"


def _most(counts: dict[str, int], shown: int = 3) -> str:
    """The most frequent keys with their counts, e.g. ``10.0.0.5:8080 ×12, 10.0.0.6:8080 ×3``."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    more = f", +{len(ranked) - shown} more" if len(ranked) > shown else ""
    return ", ".join(f"{key} ×{n}" for key, n in ranked[:shown]) + more


def _hop_retries_section(facts: RunFacts) -> Section:
    """Requests a hop's retries hid (summary.json ``masked_retries``): not failures, so not in
    the causes, but their failed attempts name what went wrong upstream and what it cost."""
    coarse = [hop for hop, h in facts.masked_retries.items() if is_coarse(h["time_resolution_ms"])]
    notes = [
        "A masked request succeeded only because the hop retried after failed upstream "
        "attempts: not a failure and not a cause, but its failed attempts show what the hop "
        "met (refusals, resets, timeouts) and cost the client their time (the latency cost: "
        "the failed attempts' upstream times added up)."
    ]
    if coarse:
        notes.append(
            f"Times of {', '.join(coarse)} come from a log with one-second resolution "
            "(ingress-nginx's default format): counts hold, sub-second timing does not."
        )
    header = ["hop", "requests", "retried", "failed", "masked", "failed attempts (upstream)"]
    header += ["(status)", "cost p50", "cost p99", "cost max", "cost total"]
    rows = [
        [
            hop,
            str(h["requests"]),
            str(h["retried"]),
            str(h["failed"]),
            str(h["masked"]),
            _most(h["by_upstream"]) or "—",
            _most(h["by_status"]) or "—",
            _ms(h["cost_ms"]["p50_ms"]),
            _ms(h["cost_ms"]["p99_ms"]),
            _ms(h["cost_ms"]["max_ms"]),
            _ms(h["cost_total_ms"]),
        ]
        for hop, h in facts.masked_retries.items()
    ]
    return Section("Retries at L7 hops", None, notes, (header, rows))


def sections(facts: RunFacts, has_truth: bool) -> list[Section]:
    """The evidence under the lead, format-neutral (HTML and Markdown render the same list).
    A run without failures has no causes, examples or connection figure: nothing to draw."""
    timeline = Section(
        "Timeline",
        "timeline",
        ["Requests per second by outcome, latency of successful requests, and Pod events."],
    )
    failures = [_causes_section(facts), _examples_section(facts)] if facts.failed else []
    return [
        timeline,
        *failures,
        _pod_lanes_section(has_truth),
        _connections_section(facts),
        Section(
            "Timings",
            "timings" if has_timings(facts) else None,
            [str(facts.timings["note"])] if facts.timings.get("note") else [],
            (["timing", "samples", "p50", "p99", "max"], _timing_rows(facts)),
        ),
        *([_hop_retries_section(facts)] if facts.masked_retries else []),
        _recommendations_section(facts.recommendations),
    ]


def has_timings(facts: RunFacts) -> bool:
    return any(
        (facts.timings.get(k) or {}).get("n") for k in ("propagation", "drain", "readiness_lead")
    )


def degraded_lines(facts: RunFacts) -> list[str]:
    """Under the headline: the analysis lost part of its input, so its counts are lower bounds."""
    if not facts.degraded_because:
        return []
    return [
        "Analysis degraded: "
        + "; ".join(facts.degraded_because)
        + ". Failure counts seen in packets, disruption windows and timings are lower bounds."
    ]


def status_lines(facts: RunFacts) -> list[str]:
    """Under the run line: the load actually sent, and why the run is not ``complete``
    (docs/troubleshooting.md says what to do about each reason)."""
    lines = []
    if facts.delivered_rate is not None and facts.asked_rate:
        share = 100 * facts.delivered_rate / facts.asked_rate
        lines.append(
            f"Load: {facts.delivered_rate:.0f} req/s delivered of {facts.asked_rate:g} asked "
            f"({share:.0f} %)."
        )
    if facts.status != RunStatus.COMPLETE.value and facts.status_reasons:
        lines.append(f"Run {facts.status}: " + "; ".join(facts.status_reasons) + ".")
    return lines


def identity_lines(facts: RunFacts) -> list[str]:
    """How failed requests were tied to the Pod they reached: a user's own app names no Pod,
    and without node captures the Pod is inferred from cluster state."""
    if not facts.failed:
        return []
    direct = facts.pod_match.get(PodMatch.HEADER.value, 0)
    direct += facts.pod_match.get(PodMatch.NODE_CAPTURE.value, 0)
    hop_log = facts.pod_match.get(PodMatch.HOP_LOG.value, 0)
    direct += hop_log
    inferred = facts.pod_match.get(PodMatch.INFERRED.value, 0)
    unknown = facts.pod_match.get(PodMatch.NONE.value, 0)
    how = (
        "response header, node capture or an L7 hop's log"
        if hop_log
        else "response header or node capture"
    )
    return [
        f"Pod identity: {direct} of {facts.failed} failed requests tied to their Pod directly "
        f"({how}), {inferred} inferred from cluster state, "
        f"{unknown} unknown."
    ]


def _inputs_notes(facts: RunFacts) -> list[str]:
    notes = [f"missing input: {name}" for name in facts.inputs.get("missing", [])]
    notes += [
        f"damaged input: {d.get('file')}: {d.get('where')}: {d.get('error')} (kept {d.get('kept')})"
        for d in facts.inputs.get("damaged", [])
    ]
    return notes


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1em auto;padding:0 1em;color:#111}
h1{font-size:1.4em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #bbb;padding:.25em .5em;
vertical-align:top;text-align:left;font-size:.9em} th{background:#eee}
img{max-width:100%} .headline{font-size:1.15em;font-weight:600} .note{color:#7a4b00}
.verdict-change{font-weight:700;color:#a33500} .verdict-ok{color:#006b4f}
.lead{border:2px solid #a33500;border-radius:6px;padding:.2em 1em;margin:.8em 0;background:#fff8f2}
.lead h2{border:none;margin-top:.4em} .lead li{margin:.35em 0} .lead span{color:#333}
"""


def _html_table(header: list[str], rows: list[list[str]], verdict_col: int | None = None) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="verdict-{e(cell)}"' if i == verdict_col else ""
            cells.append(f"<td{cls}>{e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_lead(lead: Lead) -> list[str]:
    e = html.escape
    items = "".join(
        f"<li><b>{e(what)}</b>" + (f"<br><span>{e(detail)}</span>" if detail else "") + "</li>"
        for what, detail in lead.items
    )
    caveats = "".join(f'<p class="note">{e(c)}</p>' for c in lead.caveats)
    return [f'<section class="lead"><h2>{e(lead.title)}</h2>{caveats}<ul>{items}</ul></section>']


def _html_section(part: Section, pngs: dict[str, bytes]) -> list[str]:
    e = html.escape
    out = [f"<h2>{e(part.title)}</h2>"]
    if part.figure is not None and part.figure in pngs:
        data = base64.b64encode(pngs[part.figure]).decode("ascii")
        out.append(f'<img alt="{e(part.title)}" src="data:image/png;base64,{data}">')
    out += [f"<p>{e(p)}</p>" for p in part.paragraphs]
    for table in (part.table, part.folded[1] if part.folded else None):
        if table is None:
            continue
        header, rows = table
        rendered = _html_table(
            header, rows, header.index("verdict") if "verdict" in header else None
        )
        if part.folded is not None and table is part.folded[1]:
            rendered = f"<details><summary>{e(part.folded[0])}</summary>{rendered}</details>"
        out.append(rendered)
    return out


def render_html(
    title: str,
    header_lines: Sequence[str],
    notes: Sequence[str],
    parts: Sequence[Section],
    pngs: dict[str, bytes],
    lead: Lead | None = None,
) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    out += [f'<p class="headline">{e(line)}</p>' for line in header_lines[:1]]
    out += _html_lead(lead) if lead is not None else []
    out += [f'<p class="meta">{e(line)}</p>' for line in header_lines[1:]]
    out += [f'<p class="note">{e(note)}</p>' for note in notes]
    for part in parts:
        out += _html_section(part, pngs)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: no HTML, no pipes, no line breaks."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    header, rows = table
    out = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows] + [""]


def _md_lead(lead: Lead) -> list[str]:
    out = [f"## {md_escape(lead.title)}", ""]
    for caveat in lead.caveats:
        out += [md_escape(caveat), ""]
    for what, detail in lead.items:
        out.append(f"- **{md_escape(what)}**" + (f" {md_escape(detail)}" if detail else ""))
    return [*out, ""]


def render_markdown(
    title: str,
    header_lines: Sequence[str],
    notes: Sequence[str],
    parts: Sequence[Section],
    figure_dir: str,
    lead: Lead | None = None,
) -> str:
    out = [f"# {md_escape(title)}", ""]
    out += [f"**{md_escape(header_lines[0])}**", ""] if header_lines else []
    out += _md_lead(lead) if lead is not None else []
    out += [f"{md_escape(line)}  " for line in header_lines[1:]] + [""]
    out += [f"> {md_escape(note)}" for note in notes] + ([""] if notes else [])
    for part in parts:
        out += [f"## {md_escape(part.title)}", ""]
        if part.figure is not None:
            out += [f"![{md_escape(part.title)}]({figure_dir}/{part.figure}.png)", ""]
        for paragraph in part.paragraphs:
            out += [md_escape(paragraph), ""]
        out += _md_table(part.table) if part.table is not None else []
        if part.folded is not None:
            out += [f"<details><summary>{md_escape(part.folded[0])}</summary>", ""]
            out += [*_md_table(part.folded[1]), "</details>", ""]
    return "\n".join(out)


def _publish(path: Path, data: bytes) -> Path:
    """Write atomically, readable by everyone: a report is for sharing (mkstemp makes 0600)."""
    atomic_write_bytes(path, data)
    path.chmod(0o644)
    return path


def write_report(
    out_dir: Path,
    stem: str,
    title: str,
    header: Sequence[str],
    notes: Sequence[str],
    parts: Sequence[Section],
    figs: dict[str, Figure],
    lead: Lead | None = None,
) -> ReportPaths:
    """Save the figures under ``out_dir/figures`` and the HTML and Markdown next to them."""
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    pngs = {name: png_bytes(fig) for name, fig in figs.items()}
    written = [_publish(figure_dir / f"{name}.png", data) for name, data in pngs.items()]
    html_path = _publish(
        out_dir / f"{stem}.html", render_html(title, header, notes, parts, pngs, lead).encode()
    )
    md_path = _publish(
        out_dir / f"{stem}.md",
        render_markdown(title, header, notes, parts, "figures", lead).encode(),
    )
    return ReportPaths(html=html_path, markdown=md_path, figures=written)


def render_report(analysis: Analysis, paths: RunPaths) -> ReportPaths:
    """Write the report of the run at ``paths`` from its ``analysis`` (the one just computed,
    or ``analyzer.run.load_analysis``'s): analysis/report.html, report.md, figures/*.png."""
    run = Run(paths, analysis)
    facts = run_facts(run)
    header = [
        facts.headline,
        f"run {facts.run_id} · status {facts.status} · backend {facts.backend} · scenario {facts.scenario_name}",
        *status_lines(facts),
        *identity_lines(facts),
        *(f"Imported traces: {note}." for note in facts.import_notes),
    ]
    truth = read_truth(paths.truth)
    parts = sections(facts, has_truth=not truth.empty)
    return write_report(
        paths.analysis,
        "report",
        f"Rollout disruption report: {facts.run_id}",
        header,
        _inputs_notes(facts),
        parts,
        build_figures(run, facts, truth),
        lead(facts),
    )
