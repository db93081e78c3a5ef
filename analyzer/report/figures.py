"""The report's figures: pure functions from tables to ``matplotlib.figure.Figure`` objects.

No pyplot (no global state, safe in threads and notebooks), nothing written here: the renderer
saves them. Artists that carry data get a ``gid`` (``failed:<cause>``, ``failures:<cause>``,
``lane:<pod>``) so that tests and notebooks can check what a figure shows, not only that it
exists. Times are seconds since the report's time zero (load start).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analyzer.advice import RolloutSettings
from analyzer.report.facts import ConnectionRow
from analyzer.report.style import (
    ENDPOINT_LOOK,
    LANE_LOOK,
    OK_COLOUR,
    P50_COLOUR,
    P99_COLOUR,
    cause_look,
    cause_order,
)
from analyzer.schema import ErrorKind

_NS = 1e9
LineStyle = Literal["-", "--", ":", "-."]
UNKNOWN_POD = "unknown Pod"
MAX_LABELLED_LANES = 12
TIMING_LABELS = {
    "propagation": "endpoint propagation\n(not ready → last new conn.)",
    "readiness_lead": "readiness lead\n(Ready → first success)",
    "drain": "drain\n(deletion → last response)",
}


def wrap(title: str, width: int = 100) -> str:
    """Titles state the finding in a sentence: wrap it rather than let it run off the figure."""
    return "\n".join(textwrap.wrap(title, width))


def _tag(bars: BarContainer, gid: str) -> None:
    """Give every bar of a container the gid (containers themselves are not drawn)."""
    for patch in bars.patches:
        patch.set_gid(gid)


def _seconds(ns: pd.Series | np.ndarray, t0_ns: int) -> np.ndarray:
    return (pd.to_numeric(pd.Series(ns)).to_numpy(dtype="float64") - t0_ns) / _NS


#: Smallest text in any figure (points): readable in the HTML at its 100 dpi and when printed.
MIN_FONT_PT = 8
_TITLE_PT = 11
_LINE_IN = 1.35 / 72  # one line of text per point of font size, with its leading (inches)


@dataclass(frozen=True)
class TimeAxis:
    """The time axis the timeline and the Pod lanes share: the same x range and the same
    horizontal margins (inches) in figures of the same width, so that a moment sits at the same
    x in both and a failure in the timeline lines up with the Pod lane it hit."""

    start_s: float
    end_s: float
    left_in: float
    width_in: float = 11.0
    right_in: float = 0.3

    @classmethod
    def of(cls, start_s: float, end_s: float, lane_labels: Sequence[str]) -> TimeAxis:
        """Left margin wide enough for the longest Pod name at the tick label size."""
        longest = max((len(label) for label in lane_labels), default=0)
        left = max(1.0, 0.35 + longest * MIN_FONT_PT * 0.62 / 72)
        return cls(start_s, max(end_s, start_s + 1.0), left)

    def apply(self, fig: Figure, axes: Sequence[Axes], top_in: float, bottom_in: float) -> None:
        height = fig.get_figheight()
        fig.subplots_adjust(
            left=self.left_in / self.width_in,
            right=1 - self.right_in / self.width_in,
            top=1 - top_in / height,
            bottom=bottom_in / height,
        )
        for ax in axes:
            ax.set_xlim(self.start_s, self.end_s)


def title_height_in(title: str, pt: float = _TITLE_PT) -> float:
    return (title.count("\n") + 1) * pt * _LINE_IN + 0.2


def rollout_band(
    phases: dict[str, int], pods: pd.DataFrame, failures: pd.DataFrame
) -> tuple[int, int] | None:
    """The whole disruption a rollout caused, in ns: from its trigger to the latest of rollout
    complete, the last old Pod gone, and the last failure that started after the trigger
    (failures go on after the Deployment calls itself complete while old Pods drain and nodes
    catch up)."""
    trigger = phases.get("rollout_trigger")
    if trigger is None:
        return None
    old = pods[pods["deletion_ns"].notna() & (pods["deletion_ns"] >= trigger)]
    gone = old["deleted_ns"].fillna(old["terminated_ns"]).dropna()
    after = failures.loc[failures["start_ns"] >= trigger, "end_ns"]
    ends = [
        phases.get("rollout_complete"),
        phases.get("old_pods_gone"),
        int(gone.max()) if len(gone) else None,
        int(after.max()) if len(after) else None,
    ]
    known = [int(e) for e in ends if e is not None]
    return (int(trigger), max(known)) if known else (int(trigger), int(trigger))


def _shade_rollout(ax: Axes, band: tuple[int, int] | None, t0_ns: int) -> None:
    if band is None:
        return
    start, end = ((t - t0_ns) / _NS for t in band)
    ax.axvline(start, color="black", linestyle=":", linewidth=1, gid="rollout-trigger")
    if end > start:
        ax.axvspan(start, end, color="#DDDDDD", zorder=0, linewidth=0, gid="rollout")


def _rate_panel(ax: Axes, requests: pd.DataFrame, failures: pd.DataFrame, t0_ns: int) -> None:
    """Requests per second as bars: successes at the bottom, failures stacked on top by cause so
    that a bar's height is the offered rate and its colours say what broke."""
    second = np.floor(_seconds(requests["start_ns"], t0_ns))
    ok = (requests["error_kind"] == ErrorKind.OK.value).to_numpy()
    ok_counts = pd.Series(second[ok]).value_counts().sort_index()
    ok_bars = ax.bar(
        ok_counts.index + 0.5, ok_counts.to_numpy(), width=1.0, color=OK_COLOUR, label="succeeded"
    )
    _tag(ok_bars, "ok")
    bottom = ok_counts.astype("float64")  # failures stack on top: bar height = requests
    fail_second = np.floor(_seconds(failures["start_ns"], t0_ns))
    for cause in cause_order(failures["cause"].astype(str).unique()):
        mask = (failures["cause"].astype(str) == cause).to_numpy()
        counts = pd.Series(fail_second[mask]).value_counts().sort_index()
        base = bottom.reindex(counts.index, fill_value=0.0)
        look = cause_look(cause)
        bars = ax.bar(
            counts.index + 0.5,
            counts.to_numpy(),
            bottom=base.to_numpy(),
            width=1.0,
            color=look.colour,
            hatch=look.hatch,
            edgecolor="black",
            linewidth=0.4,
            label=f"failed: {cause} ({int(mask.sum())})",
        )
        _tag(bars, f"failed:{cause}")
        bottom = bottom.add(counts, fill_value=0.0)
    ax.set_ylabel("requests / s")
    ax.legend(loc="upper left", fontsize=MIN_FONT_PT, ncols=2)


def _latency_panel(ax: Axes, latency: pd.DataFrame, t0_ns: int) -> None:
    """p50 and p99 latency of successes per second: a slowdown shows even when nothing fails."""
    if not latency.empty:
        x = _seconds(latency["second_ns"], t0_ns) + 0.5
        ax.plot(x, latency["p50_ms"], color=P50_COLOUR, marker=".", label="p50", gid="p50")
        ax.plot(
            x,
            latency["p99_ms"],
            color=P99_COLOUR,
            linestyle="--",
            marker="x",
            label="p99",
            gid="p99",
        )
        ax.legend(loc="upper left", fontsize=MIN_FONT_PT)
    ax.set_ylabel("latency (ms)")


def _pod_events_panel(ax: Axes, pods: pd.DataFrame, t0_ns: int) -> None:
    """Pod created / ready / deletion marks on one strip, to line failures up with the events
    that caused them (only the kinds that happened: the legend lists what is drawn)."""
    for column, marker, label in (
        ("created_ns", "^", "Pod created"),
        ("ready_ns", "o", "Pod ready"),
        ("deletion_ns", "v", "Pod deletion"),
    ):
        times = pods[column].dropna()
        if times.empty:
            continue
        ax.plot(
            _seconds(times, t0_ns),
            np.zeros(len(times)),
            linestyle="none",
            marker=marker,
            markerfacecolor="white" if column == "created_ns" else "black",
            color="black",
            label=label,
            gid=f"pods:{column}",
        )
    ax.set_yticks([])
    ax.set_ylim(-1.0, 1.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=MIN_FONT_PT, ncols=3)
    ax.set_xlabel("seconds since load start (shaded: the rollout's disruption, dotted: trigger)")


def timeline_figure(
    requests: pd.DataFrame,
    failures: pd.DataFrame,
    latency: pd.DataFrame,
    pods: pd.DataFrame,
    phases: dict[str, int],
    t0_ns: int,
    title: str,
    time_axis: TimeAxis,
) -> Figure:
    """Requests/s (successes, failures stacked by cause), p50/p99 latency and Pod events on one
    time axis, the rollout's disruption shaded (``rollout_band``)."""
    fig = Figure(figsize=(time_axis.width_in, 7))
    ax_rate, ax_lat, ax_pods = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1], "hspace": 0.3}
    )
    _rate_panel(ax_rate, requests, failures, t0_ns)
    _latency_panel(ax_lat, latency, t0_ns)
    _pod_events_panel(ax_pods, pods, t0_ns)
    band = rollout_band(phases, pods, failures)
    for ax in (ax_rate, ax_lat, ax_pods):
        _shade_rollout(ax, band, t0_ns)
    wrapped = wrap(title)
    ax_rate.set_title(wrapped, fontsize=_TITLE_PT, loc="left")
    time_axis.apply(fig, (ax_rate, ax_lat, ax_pods), title_height_in(wrapped), 0.6)
    return fig


def _endpoint_state(row: pd.Series) -> str:
    if bool(row["ready"]):
        return "ready"
    if bool(row["terminating"]):
        return "serving-terminating" if bool(row["serving"]) else "terminating"
    return "not-ready"


def _lifecycle_segments(pod: pd.Series, end_s: float, t0_ns: int) -> list[tuple[str, float, float]]:
    """(state, start, end) in seconds: pending → running → ready → terminating → stopped."""
    marks = [
        ("pending", pod["created_ns"]),
        ("running", pod["started_ns"]),
        ("ready", pod["ready_ns"]),
        ("terminating", pod["deletion_ns"]),
        ("stopped", pod["terminated_ns"]),
    ]
    gone = pod["deleted_ns"]
    known = [(state, (int(t) - t0_ns) / _NS) for state, t in marks if not pd.isna(t)]
    stop = end_s if pd.isna(gone) else (int(gone) - t0_ns) / _NS
    segments = []
    for i, (state, start) in enumerate(known):
        seg_end = known[i + 1][1] if i + 1 < len(known) else stop
        if seg_end > start:
            segments.append((state, start, seg_end))
    return segments


def node_drop_labels(
    dropped: pd.DataFrame, t0_ns: int, together_s: float = 0.5
) -> list[tuple[str, float, str]]:
    """(pod, x, "node-1, node-3") per burst of a Pod's rule removals less than ``together_s``
    apart: nodes that dropped a Pod together share one label instead of overprinting."""
    out = []
    for pod, group in dropped.sort_values("ts_ns").groupby("pod", sort=True):
        xs = _seconds(group["ts_ns"], t0_ns)
        burst = np.concatenate([[0], np.cumsum(np.diff(xs) >= together_s)])
        for b in np.unique(burst):
            nodes = sorted(group["node"].astype(str).to_numpy()[burst == b])
            out.append((str(pod), float(xs[burst == b][0]), ", ".join(nodes)))
    return out


@dataclass(frozen=True)
class _Lanes:
    """Where each Pod's lane sits: ``names`` are the Pods seen, ``lanes`` add one for failures
    on a Pod nobody saw, ``on_known`` marks which failures have a lane of their own."""

    names: list[str]
    lanes: list[str]
    y: dict[str, float]
    on_known: np.ndarray

    @classmethod
    def of(cls, pods: pd.DataFrame, failures: pd.DataFrame) -> _Lanes:
        """Lanes top-down in creation order; the unknown-Pod lane only when a failure needs it."""
        names = [str(p) for p in pods["pod"]]
        on_known = failures["pod"].astype("string").isin(names).fillna(False).to_numpy(dtype=bool)
        lanes = names + ([UNKNOWN_POD] if (~on_known).any() else [])
        y = {name: float(len(lanes) - 1 - i) for i, name in enumerate(lanes)}
        return cls(names, lanes, y, on_known)


def _draw_lifecycles(
    ax: Axes, pods: pd.DataFrame, lanes: _Lanes, end_s: float, t0_ns: int
) -> set[str]:
    """Each Pod's lifecycle as a bar of coloured states in the upper half of its lane; returns
    the states drawn (the legend lists only those)."""
    drawn: set[str] = set()
    for _, pod in pods.iterrows():
        y = lanes.y[str(pod["pod"])]
        for state, start, stop in _lifecycle_segments(pod, end_s, t0_ns):
            look = LANE_LOOK[state]
            drawn.add(state)
            ax.broken_barh(
                [(start, stop - start)],
                (y - 0.05, 0.35),
                facecolors=look.colour,
                hatch=look.hatch,
                edgecolor="black",
                linewidth=0.4,
                gid=f"lane:{pod['pod']}",
            )
    return drawn


def _draw_endpoints(
    ax: Axes, endpoints: pd.DataFrame, lanes: _Lanes, end_s: float, t0_ns: int
) -> set[str]:
    """Endpoint membership under each lifecycle bar: the gap between a Pod's state and what the
    EndpointSlice said is where endpoint lag shows. Returns the endpoint states drawn."""
    drawn: set[str] = set()
    for _, interval in endpoints[
        endpoints["pod"].astype("string").isin(lanes.names).fillna(False)
    ].iterrows():
        y = lanes.y[str(interval["pod"])]
        start = (int(interval["from_ns"]) - t0_ns) / _NS
        stop = end_s if pd.isna(interval["to_ns"]) else (int(interval["to_ns"]) - t0_ns) / _NS
        state = _endpoint_state(interval)
        drawn.add(state)
        look = ENDPOINT_LOOK[state]
        ax.broken_barh(
            [(start, max(stop - start, 0.0))],
            (y - 0.35, 0.2),
            facecolors=look.colour,
            hatch=look.hatch,
            edgecolor="black",
            linewidth=0.3,
            gid=f"endpoint:{interval['pod']}",
        )
    return drawn


def _draw_truth_marks(
    ax: Axes, truth: pd.DataFrame, lanes: _Lanes, t0_ns: int, end_ns: int
) -> None:
    """Ground-truth preStop start, SIGTERM and exit on the lanes, where the run recorded them.
    Marks after the load stopped are left out: they are the cluster being torn down, not Pods
    exiting during the rollout, and no request could have met them."""
    truth_marks = (
        ("prestop-start", "|", "preStop starts (truth)"),
        ("sigterm", "4", "SIGTERM (truth)"),
        ("exited", "8", "process exited (truth)"),
    )
    during = truth[truth["ts_ns"] <= end_ns]
    for event, marker, label in truth_marks:
        rows = during[(during["event"] == event) & during["pod"].isin(lanes.names)]
        if rows.empty:
            continue
        ax.plot(
            _seconds(rows["ts_ns"], t0_ns),
            [lanes.y[str(p)] + 0.12 for p in rows["pod"]],
            linestyle="none",
            marker=marker,
            markersize=9,
            color="black",
            label=label,
            gid=f"truth:{event}",
        )


def _draw_rule_drops(
    ax: Axes, rules_dropped: pd.DataFrame, lanes: _Lanes, t0_ns: int, time_axis: TimeAxis
) -> None:
    """When each node's rules stopped sending to a Pod (truth), with the node names beside the
    marks where the lanes leave room: the spread across nodes is the propagation delay. Drops
    closer together than a label is wide share one label, so labels never overprint."""
    dropped = rules_dropped[rules_dropped["pod"].isin(lanes.names)]
    if dropped.empty:
        return
    ax.plot(
        _seconds(dropped["ts_ns"], t0_ns),
        [lanes.y[str(p)] - 0.25 for p in dropped["pod"]],
        linestyle="none",
        marker="1",
        markersize=9,
        color="#0072B2",
        label="a node's rules dropped the Pod (truth)",
        gid="truth:rules-dropped",
    )
    if len(lanes.lanes) > MAX_LABELLED_LANES:
        return
    plot_in = time_axis.width_in - time_axis.left_in - time_axis.right_in
    seconds_per_in = (time_axis.end_s - time_axis.start_s) / plot_in
    longest = max(len(n) for n in dropped["node"].astype(str)) * 3 + 2  # "a, b, c"
    label_s = (longest * MIN_FONT_PT * 0.62 / 72 + 0.1) * seconds_per_in
    for dropped_pod, x, text in node_drop_labels(dropped, t0_ns, together_s=label_s):
        ax.annotate(
            text,
            (x, lanes.y[dropped_pod] - 0.25),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            fontsize=MIN_FONT_PT,
            color="#0072B2",
            gid="truth:node",
        )


def _draw_failure_marks(ax: Axes, failures: pd.DataFrame, lanes: _Lanes, t0_ns: int) -> None:
    """Each failed request on the lane of the Pod that served it, one marker per cause."""
    fail_lane = np.where(
        lanes.on_known, failures["pod"].astype("string").fillna(UNKNOWN_POD), UNKNOWN_POD
    )
    fail_x = _seconds(failures["start_ns"], t0_ns)
    for cause in cause_order(failures["cause"].astype(str).unique()):
        mask = (failures["cause"].astype(str) == cause).to_numpy()
        look = cause_look(cause)
        ax.scatter(
            fail_x[mask],
            [lanes.y[str(p)] + 0.12 for p in fail_lane[mask]],
            marker=look.marker,
            s=22,
            color=look.colour,
            edgecolors="black",
            linewidths=0.4,
            zorder=5,
            label=f"failed: {cause} ({int(mask.sum())})",
            gid=f"failures:{cause}",
        )


_LEGEND_COLUMNS = 4


def _lanes_legend_handles(
    ax: Axes, pod_states: set[str], endpoint_states: set[str]
) -> list[Artist]:
    """The drawn marks plus the Pod and endpoint states drawn, so colours read without text."""
    handles, _ = ax.get_legend_handles_labels()
    states = [
        Patch(facecolor=look.colour, hatch=look.hatch, edgecolor="black", label=f"Pod {state}")
        for state, look in LANE_LOOK.items()
        if state in pod_states
    ] + [
        Patch(facecolor=look.colour, hatch=look.hatch, edgecolor="black", label=f"endpoint {state}")
        for state, look in ENDPOINT_LOOK.items()
        if state in endpoint_states
    ]
    return [*handles, *states]


def pod_lanes_figure(
    pods: pd.DataFrame,
    endpoints: pd.DataFrame,
    failures: pd.DataFrame,
    truth: pd.DataFrame,
    rules_dropped: pd.DataFrame,
    t0_ns: int,
    time_axis: TimeAxis,
    title: str,
) -> Figure:
    """A Gantt chart, one lane per Pod: lifecycle bar, endpoint membership under it, ground-truth
    preStop / SIGTERM / exit and per-node rule removal where known, failed requests as marks.
    Its time axis is the timeline's (``time_axis``); the legend sits under the axes so that the
    plot keeps the timeline's width."""
    pods = pods.sort_values(["created_ns", "pod"], kind="stable")
    lanes = _Lanes.of(pods, failures)
    end_s = time_axis.end_s
    end_ns = int(t0_ns + end_s * _NS)
    wrapped = wrap(title)
    fig = Figure(figsize=(time_axis.width_in, 4))
    ax = fig.add_subplot()
    if not lanes.lanes:
        ax.text(
            0.5,
            0.5,
            "no Pod seen (no watch events) and no failure",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    pod_states = _draw_lifecycles(ax, pods, lanes, end_s, t0_ns)
    endpoint_states = _draw_endpoints(ax, endpoints, lanes, end_s, t0_ns)
    _draw_truth_marks(ax, truth, lanes, t0_ns, end_ns)
    _draw_rule_drops(ax, rules_dropped, lanes, t0_ns, time_axis)
    _draw_failure_marks(ax, failures, lanes, t0_ns)
    ax.set_yticks([lanes.y[name] for name in lanes.lanes], lanes.lanes, fontsize=MIN_FONT_PT)
    ax.set_ylim(-0.7, max(len(lanes.lanes), 1) - 0.3)
    ax.set_xlabel("seconds since load start")
    ax.set_title(wrapped, fontsize=_TITLE_PT, loc="left")
    handles = _lanes_legend_handles(ax, pod_states, endpoint_states)
    legend_rows = -(-len(handles) // _LEGEND_COLUMNS)
    legend_in = legend_rows * MIN_FONT_PT * 1.75 / 72 + 0.1
    top_in, bottom_in = title_height_in(wrapped), 0.6 + legend_in
    fig.set_figheight(top_in + bottom_in + 0.55 * max(len(lanes.lanes), 1))
    if handles:
        fig.legend(
            handles=handles,
            fontsize=MIN_FONT_PT,
            ncols=_LEGEND_COLUMNS,
            loc="lower left",
            bbox_to_anchor=(time_axis.left_in / time_axis.width_in, 0.0),
            frameon=False,
        )
    time_axis.apply(fig, [ax], top_in, bottom_in)
    return fig


def causes_figure(failures: pd.DataFrame, title: str) -> Figure:
    """Failures per cause, one hatched bar each, with count and share (only drawn for a run
    with failures: the report shows no empty chart)."""
    fig = Figure(
        figsize=(8, 1.5 + 0.45 * max(1, failures["cause"].nunique())), layout="constrained"
    )
    ax = fig.add_subplot()
    counts = failures["cause"].astype(str).value_counts()
    order = cause_order(counts.index)[::-1]
    for y, cause in enumerate(order):
        look = cause_look(cause)
        n = int(counts[cause])
        ax.barh(y, n, color=look.colour, hatch=look.hatch, edgecolor="black", gid=f"cause:{cause}")
        ax.text(n, y, f" {n} ({n / len(failures):.0%})", va="center", fontsize=9)
    ax.set_xlim(0, counts.max() * 1.25)  # room for the count beside the longest bar
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("failed requests")
    ax.set_title(wrap(title), fontsize=11, loc="left")
    return fig


def connections_figure(rows: Sequence[ConnectionRow], title: str) -> Figure:
    """Failures and disruption seconds for new and reused connections, side by side."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax_failed, ax_seconds = fig.subplots(1, 2)
    kinds = [row.kind for row in rows]
    hatches = {"new": "", "reused": "//"}
    for ax, values, label in (
        (ax_failed, [row.failed for row in rows], "failed requests"),
        (ax_seconds, [row.disruption_s for row in rows], "disruption seconds"),
    ):
        for x, (kind, value) in enumerate(zip(kinds, values, strict=True)):
            ax.bar(
                x,
                value,
                color="#56B4E9" if kind == "new" else "#E69F00",
                hatch=hatches.get(kind, ""),
                edgecolor="black",
                gid=f"{label}:{kind}",
            )
            ax.text(x, value, str(value), ha="center", va="bottom")
        ax.set_ylim(0, max([*values, 1]) * 1.2)  # the count above the tallest bar stays inside
        ax.set_xticks(range(len(kinds)), [f"{k} connections" for k in kinds])
        ax.set_ylabel(label)
    fig.suptitle(wrap(title, 90), fontsize=_TITLE_PT, x=0.01, ha="left")
    return fig


def timings_figure(timings: pd.DataFrame, settings: RolloutSettings, title: str) -> Figure:
    """Each measured timing's samples (dots), p50 and p99 (ticks), against the configured
    preStop and grace period where run.json records them. The axis fits the samples and preStop;
    a grace period far beyond them is named at the right edge instead of squeezing the data."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax = fig.add_subplot()
    kinds = list(TIMING_LABELS)
    rng = np.random.default_rng(0)  # fixed jitter: the same run draws the same figure
    samples = timings["ms"].dropna().to_numpy(dtype="float64") / 1000
    right = 1.12 * max([*samples, settings.prestop_s or 0.0, 0.5])
    for y, kind in enumerate(kinds):
        values = timings.loc[timings["timing"] == kind, "ms"].dropna().to_numpy(dtype="float64")
        if len(values) == 0:
            ax.text(0.0, y, "  not measured", va="center", fontsize=9, color="#555555")
            continue
        ax.scatter(
            values / 1000,
            y + rng.uniform(-0.15, 0.15, len(values)),
            s=14,
            color="black",
            marker="o",
            facecolors="none",
            gid=f"timing:{kind}",
        )
        quantile_styles: tuple[tuple[int, LineStyle], ...] = ((50, "-"), (99, "--"))
        for q, style in quantile_styles:
            ax.vlines(
                np.percentile(values, q) / 1000,
                y - 0.3,
                y + 0.3,
                colors="#D55E00",
                linestyles=style,
            )
    _configured_marks(ax, settings, right)
    ax.set_xlim(min(0.0, float(samples.min()) * 1.12 if len(samples) else 0.0), right)
    ax.set_yticks(range(len(kinds)), [TIMING_LABELS[k] for k in kinds], fontsize=MIN_FONT_PT)
    ax.set_ylim(-0.6, len(kinds) - 0.3)
    ax.set_xlabel("seconds (solid tick: p50, dashed: p99)")
    ax.set_title(wrap(title), fontsize=_TITLE_PT, loc="left")
    return fig


def _configured_marks(ax: Axes, settings: RolloutSettings, right: float) -> None:
    """preStop and grace period as lines on their rows; one beyond the axis as a label at the
    right edge with an arrow."""
    configured: tuple[tuple[str, float | None, int, LineStyle], ...] = (
        ("preStop", settings.prestop_s, 0, ":"),
        ("grace period", settings.grace_s, 2, "-."),
    )
    for label, value, y, style in configured:
        if value is None:
            continue
        beyond = value > right
        if not beyond:
            ax.vlines(value, y - 0.4, y + 0.4, colors="#0072B2", linestyles=style, linewidth=2)
        ax.text(
            right if beyond else value,
            y + 0.42,
            f"{label} {value:g} s" + (" →" if beyond else ""),
            color="#0072B2",
            fontsize=MIN_FONT_PT,
            ha="right" if beyond else "center",
            gid=f"configured:{label}",
        )


def compare_timeline_figure(
    series: Sequence[tuple[str, pd.DataFrame, int, int, int]], title: str
) -> Figure:
    """Failed requests per second of several runs, overlaid, aligned at each run's rollout
    trigger. ``series``: (label, failures, zero_ns, first_ns, last_ns) — every second from the
    run's first to its last request is drawn, zeros included, so a quiet second reads as zero
    instead of a line drawn across it."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot()
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "v", "D", "P", "X"]
    for i, (label, failures, zero_ns, first_ns, last_ns) in enumerate(series):
        seconds = np.arange(
            np.floor((first_ns - zero_ns) / _NS), np.floor((last_ns - zero_ns) / _NS) + 1
        )
        second = np.floor(_seconds(failures["start_ns"], zero_ns))
        counts = pd.Series(second).value_counts().reindex(seconds, fill_value=0)
        ax.step(
            seconds + 0.5,
            counts.to_numpy(),
            where="mid",
            color=colours[i % len(colours)],
            linestyle=styles[i % len(styles)],
            marker=markers[i % len(markers)],
            markersize=4,
            label=f"{label} ({len(failures)} failed)",
            gid=f"run:{label}",
        )
    ax.axvline(0, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("seconds since rollout trigger")
    ax.set_ylabel("failed requests / s")
    ax.legend(fontsize=MIN_FONT_PT)
    ax.set_title(wrap(title), fontsize=_TITLE_PT, loc="left")
    return fig
