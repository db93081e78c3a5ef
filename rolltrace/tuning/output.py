"""tune.html: one self-contained page (figure inlined as a base64 PNG, no external URL) that shows
what each value tried did, the value chosen, how well the verification bounds it and the patch
that applies it. Every piece of text from the scenario goes through ``html.escape``.

The figure is built on a ``matplotlib.figure.Figure`` (no pyplot state), in the report's colours
(``analyzer.report.style``) and with no label under the report's minimum size.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analyzer.report.figures import MIN_FONT_PT
from analyzer.report.style import OK_COLOUR, cause_look, cause_order
from rolltrace.tuning.search import Trial, TuneResult, bound_sentence, describe
from rolltrace.tuning.settings import Value, Vary, format_value

__all__ = ["render_html", "trials_figure"]

DPI = 110
_TITLE_PT = 11
_CHOSEN_COLOUR = "#000000"


def _tried(result: TuneResult) -> list[Trial]:
    return [t for t in result.trials if t.runs]


def _bars_figure(result: TuneResult) -> Figure:
    """One setting: failed requests per value tried, stacked by cause, cheapest value left."""
    vary = result.varies[0]
    order = {v: i for i, v in enumerate(vary.values())}
    trials = sorted(_tried(result), key=lambda t: order.get(t.candidate[vary.path], 0))
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.add_subplot()
    labels = [format_value(t.candidate[vary.path]) for t in trials]
    x = list(range(len(trials)))
    bottom = [0] * len(trials)
    causes = cause_order({c for t in trials for c in t.causes})
    for cause in causes:
        heights = [t.causes.get(cause, 0) for t in trials]
        look = cause_look(cause)
        bars = ax.bar(x, heights, bottom=bottom, color=look.colour, hatch=look.hatch,
                      edgecolor="#333333", label=cause)  # fmt: skip
        for patch in bars.patches:
            patch.set_gid(f"failures:{cause}")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    top = max([*bottom, 1])
    refuted = [c for c, _ in result.failed_verifications]
    for i, trial in enumerate(trials):
        _verdict_label(ax, i, bottom[i], top, trial, trial.candidate in refuted)
    chosen = _chosen_index(result, trials)
    if chosen is not None:
        ax.axvspan(chosen - 0.45, chosen + 0.45, color=OK_COLOUR, alpha=0.15, gid="chosen")
    ax.set_xticks(x, labels, fontsize=MIN_FONT_PT + 1)
    ax.set_ylim(0, top * 1.25)
    unit = "%" if vary.percent else vary.tunable.unit
    ax.set_xlabel(f"{vary.path} ({unit}); cheaper is {vary.tunable.cheaper}", fontsize=9)
    ax.set_ylabel("failed requests (all runs)", fontsize=9)
    ax.tick_params(labelsize=MIN_FONT_PT + 1)
    if causes:
        ax.legend(fontsize=MIN_FONT_PT, loc="upper right")
    ax.set_title(_figure_title(result, "shaded"), fontsize=_TITLE_PT, loc="left")
    return fig


def _verdict_label(
    ax: Axes, x: int, height: float, top: float, trial: Trial, refuted: bool
) -> None:
    """The search's verdict; a value the search held safe but whose verification runs failed is
    unsafe after all, and says why."""
    text = "safe" if trial.safe else ("not complete" if trial.incomplete else "unsafe")
    if refuted:
        text = "failed\nverification"
    ax.text(x, height + top * 0.03, text, ha="center", va="bottom", fontsize=MIN_FONT_PT + 1,
            color=OK_COLOUR if trial.safe and not refuted else "#a33500",
            gid=f"verdict:{text.replace(chr(10), ' ')}")  # fmt: skip


def _chosen_index(result: TuneResult, trials: Sequence[Trial]) -> int | None:
    return next((i for i, t in enumerate(trials) if t.candidate == result.recommended), None)


def _figure_title(result: TuneResult, mark: str) -> str:
    if result.recommended is None:
        return "No value tried was safe"
    return f"Chosen ({mark}): {describe(result.varies, result.recommended)}"


def _grid_figure(result: TuneResult) -> Figure:
    """Two settings: one cell per pair, coloured safe/unsafe/not run, with failures and the mean
    rollout time written in it; the chosen pair is outlined."""
    first, second = result.varies
    a_values, b_values = _ascending(first), _ascending(second)
    by_pair = {(t.candidate[first.path], t.candidate[second.path]): t for t in result.trials}
    fig = Figure(figsize=(1.6 * len(a_values) + 2.5, 1.0 * len(b_values) + 1.8),
                 layout="constrained")  # fmt: skip
    ax = fig.add_subplot()
    for i, a in enumerate(a_values):
        for j, b in enumerate(b_values):
            _grid_cell(
                ax, i, j, by_pair.get((a, b)), {first.path: a, second.path: b} == result.recommended
            )
    ax.set_xlim(-0.5, len(a_values) - 0.5)
    ax.set_ylim(-0.5, len(b_values) - 0.5)
    ax.set_xticks(range(len(a_values)), [format_value(a) for a in a_values])
    ax.set_yticks(range(len(b_values)), [format_value(b) for b in b_values])
    ax.tick_params(labelsize=MIN_FONT_PT + 1)
    ax.set_xlabel(f"{first.path} (cheaper is {first.tunable.cheaper})", fontsize=9)
    ax.set_ylabel(f"{second.path} (cheaper is {second.tunable.cheaper})", fontsize=9)
    ax.set_title(_figure_title(result, "outlined"), fontsize=_TITLE_PT, loc="left")
    return fig


def _ascending(vary: Vary) -> list[Value]:
    values = vary.values()
    return values if vary.tunable.cheaper == "lower" else values[::-1]


def _grid_cell(ax: Axes, i: int, j: int, trial: Trial | None, chosen: bool) -> None:
    if trial is None or not trial.runs:
        colour, text = "#eeeeee", "not run" if trial is None else _short(trial.skipped)
    elif trial.safe:
        rollout = trial.rollout_s
        colour = "#cdeee2"
        text = "safe" + ("" if rollout is None else f"\nrollout {rollout:.1f} s")
    else:
        colour = "#f6d0bd"
        main = max(trial.causes, key=lambda c: trial.causes[c]) if trial.causes else "incomplete"
        text = f"{trial.failed:,} failed\n{main}"
    ax.add_patch(_cell(i, j, colour, chosen))
    ax.text(i, j, text, ha="center", va="center", fontsize=MIN_FONT_PT, gid="cell")


def _short(skipped: str) -> str:
    return "pruned" if skipped.startswith("pruned") else "invalid"


def _cell(i: int, j: int, colour: str, chosen: bool) -> Rectangle:
    return Rectangle((i - 0.48, j - 0.48), 0.96, 0.96, facecolor=colour,
                     edgecolor=_CHOSEN_COLOUR if chosen else "#ffffff",
                     linewidth=3 if chosen else 1, gid="chosen" if chosen else None)  # fmt: skip


def trials_figure(result: TuneResult) -> Figure:
    return _bars_figure(result) if len(result.varies) == 1 else _grid_figure(result)


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#111}
h1{font-size:1.4em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.4em}
.lead{border:2px solid #006b4f;border-radius:6px;padding:.4em 1em;background:#f2fbf7}
.none{border-color:#a33500;background:#fff8f2} pre{background:#f6f6f6;padding:.6em;overflow:auto}
table{border-collapse:collapse} td,th{border:1px solid #bbb;padding:.2em .5em;font-size:.9em}
img{max-width:100%}
"""


def render_html(result: TuneResult, scenario_name: str, patch: str) -> str:
    """The whole tune.html page; ``patch`` is ``render_patch``'s text (written beside it)."""
    e = html.escape
    found = result.recommended is not None
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rolltrace tune: {e(scenario_name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>rolltrace tune: {e(scenario_name)}</h1>",
        f'<div class="lead{"" if found else " none"}"><p><strong>{e(result.message)}</strong></p>',
    ]
    if result.verified is not None:
        out.append(f"<p>Verified by new runs: {e(bound_sentence(result.verified))}.</p>")
    out.append("</div>")
    out.append(f"<p>Search: {e(result.strategy)}.</p>")
    png = _png(trials_figure(result))
    out.append(f'<img alt="failed requests per value tried" src="data:image/png;base64,{png}">')
    out += _apply_section(result, patch)
    out += _trials_table(result)
    out += _verifications_table(result)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _apply_section(result: TuneResult, patch: str) -> list[str]:
    """The patch, when there is a recommendation."""
    if result.recommended is None:
        return []
    return ["<h2>How to apply</h2>", f"<pre>{html.escape(patch)}</pre>"]


def _verifications_table(result: TuneResult) -> list[str]:
    """Every verification, in the order run: the ones that failed (each moved the choice to the
    next value the search held safe) and the last one."""
    done = [*result.failed_verifications]
    if result.verified is not None and result.recommended is not None:
        done.append((result.recommended, result.verified))
    if not done:
        return []
    e = html.escape
    header = ["value", "runs", "failed / requests", "causes", "verdict"]
    rows = ["<h2>Verifications, in the order run</h2>",
            "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]  # fmt: skip
    for candidate, runs in done:
        causes = ", ".join(f"{c} {n:,}" for c, n in sorted(runs.causes.items())) or "none"
        verdict = "held" if runs.safe else "failed: unsafe after all"
        rows.append(
            f"<tr><td>{e(describe(result.varies, candidate))}</td><td>{len(runs.runs)}</td>"
            f"<td>{runs.failed:,} / {runs.requests:,}</td><td>{e(causes)}</td>"
            f"<td>{verdict}</td></tr>"
        )
    return [*rows, "</table>"]


def _trials_table(result: TuneResult) -> list[str]:
    e = html.escape
    header = ["value", "runs", "failed / requests", "causes", "mean rollout", "verdict"]
    rows = ["<h2>Trials, in the order run</h2>",
            "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]  # fmt: skip
    for t in result.trials:
        causes = ", ".join(f"{c} {n:,}" for c, n in sorted(t.causes.items())) or "none"
        rollout = "–" if t.rollout_s is None else f"{t.rollout_s:.1f} s"
        verdict = t.skipped or ("safe" if t.safe else "unsafe")
        rows.append(
            f"<tr><td>{e(describe(result.varies, t.candidate))}</td><td>{len(t.runs)}</td>"
            f"<td>{t.failed:,} / {t.requests:,}</td><td>{e(causes)}</td><td>{rollout}</td>"
            f"<td>{e(verdict)}</td></tr>"
        )
    return [*rows, "</table>"]
