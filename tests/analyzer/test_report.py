"""The disruption report: figure content (lanes, marks, bars, titles) checked against the tables,
recommendations against the injected faults, HTML/Markdown against escaping and self-containment.

Runs come from the trace builder, so what each figure must show is known.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from analyzer import Run, load_run, metrics
from analyzer.advice import (
    MARGIN_S,
    RolloutSettings,
    SettingChange,
    container_exits,
    recommend,
    rollout_settings,
)
from analyzer.metrics import MIN_BOUND_SAMPLES
from analyzer.report import figures as figs
from analyzer.report import render_report
from analyzer.report.facts import CauseRow, RunFacts, read_truth, rules_dropped, run_facts
from analyzer.report.render import build_figures, lead, render_html, render_markdown, sections
from analyzer.report.style import CAUSE_LOOK, ENDPOINT_LOOK, LANE_LOOK
from analyzer.rundir import RunMeta, read_run_meta, write_run_meta
from analyzer.schema import ErrorKind
from analyzer.tracebuilder import build_run, recipe_names

# small runs that still show each recipe's failure; overload needs its default load to overload
_SIZE: dict[str, dict[str, float]] = {"overload": {}}
_SMALL = {"rate": 40.0, "duration_s": 15.0}


def _build(root: Path, recipe: str, **overrides: object) -> Run:
    build_run(root / recipe, recipe, seed=2, **{**_SIZE.get(recipe, _SMALL), **overrides})  # type: ignore[arg-type]
    return load_run(root / recipe)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("report-runs")
    return {name: _build(root, name) for name in recipe_names()}


def _title(fig: Figure) -> str:
    texts = [ax.get_title(loc="left") for ax in fig.axes] + [
        fig._suptitle.get_text() if fig._suptitle else ""
    ]
    return " ".join(t.replace("\n", " ") for t in texts if t)


def _bars(fig: Figure, prefix: str) -> dict[str, float]:
    """Sum of bar heights (or widths for horizontal bars) per gid under ``prefix``."""
    out: dict[str, float] = {}
    for ax in fig.axes:
        for patch in ax.patches:
            gid = patch.get_gid()
            if isinstance(patch, Rectangle) and gid and gid.startswith(prefix):
                size = patch.get_width() if prefix.startswith("cause") else patch.get_height()
                out[gid] = out.get(gid, 0.0) + size
    return out


def _marks(fig: Figure, prefix: str) -> dict[str, np.ndarray]:
    return {
        str(c.get_gid()): c.get_offsets()
        for ax in fig.axes
        for c in ax.collections
        if isinstance(c, PathCollection) and str(c.get_gid()).startswith(prefix)
    }


def _counts(run: Run) -> dict[str, int]:
    return {str(k): int(v) for k, v in run.failures["cause"].astype(str).value_counts().items()}


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_renders_a_report_whose_figures_match_the_tables(
    runs: dict[str, Run], recipe: str
) -> None:
    run = runs[recipe]
    facts = run_facts(run)
    built = build_figures(run, facts)
    counts = _counts(run)

    timeline = built["timeline"]
    assert len(timeline.axes) == 3
    assert _bars(timeline, "failed:") == {f"failed:{c}": float(n) for c, n in counts.items()}
    ok = int((run.requests["error_kind"] == ErrorKind.OK.value).sum())
    assert _bars(timeline, "ok") == {"ok": float(ok)}
    assert f"{len(run.failures)} of {len(run.requests)} requests failed" in _title(timeline) or (
        not counts and "No request failed" in _title(timeline)
    )

    rate_ax = timeline.axes[0]
    (shaded,) = [p for p in rate_ax.patches if p.get_gid() == "rollout"]
    band_end = shaded.get_x() + shaded.get_width()  # type: ignore[attr-defined]
    after = run.failures.loc[run.failures["start_ns"] >= facts.phases["rollout_trigger"]]
    # the band covers the whole disruption: to the last failure after the trigger, at least
    complete = [facts.phases["rollout_complete"]] if "rollout_complete" in facts.phases else []
    for end_ns in [*complete, *after["end_ns"]]:
        assert band_end >= (end_ns - facts.t0_ns) / 1e9 - 1e-9
    trigger = [line for line in rate_ax.lines if line.get_gid() == "rollout-trigger"]
    assert [line.get_xdata()[0] for line in trigger] == [
        (facts.phases["rollout_trigger"] - facts.t0_ns) / 1e9
    ]
    for column in ("created_ns", "ready_ns", "deletion_ns"):
        (events,) = [line for line in timeline.axes[2].lines if line.get_gid() == f"pods:{column}"]
        assert len(events.get_xdata()) == int(run.pods[column].notna().sum())

    lanes = built["pod-lanes"]
    labels = [t.get_text() for t in lanes.axes[0].get_yticklabels()]
    assert set(run.pods["pod"]) <= set(labels)
    assert len(labels) == len(run.pods) + (figs.UNKNOWN_POD in labels)
    marks = _marks(lanes, "failures:")
    assert {k: len(v) for k, v in marks.items()} == {f"failures:{c}": n for c, n in counts.items()}
    assert f"{len(run.pods)} Pods; {len(run.failures)} failed" in _title(lanes)

    if counts:  # a run without failures draws no empty causes or connections chart
        _check_failure_figures(run, built, counts)
    else:
        assert "causes" not in built and "connections" not in built

    measured = run.timings["ms"].notna().any()
    assert ("timings" in built) == bool(measured)
    if measured:
        timings = built["timings"]
        propagation = run.summary["timings"]["propagation"]
        if propagation["n"]:
            assert f"p99 {propagation['p99_ms'] / 1000:.2f} s" in _title(timings)
        for kind in figs.TIMING_LABELS:
            n = int((run.timings["timing"] == kind).sum())
            got = _marks(timings, f"timing:{kind}")
            assert (len(got[f"timing:{kind}"]) if got else 0) == n

    by_id = run.failures.set_index("request_id")
    for row in facts.causes:
        assert row.failed == counts[row.cause] and 1 <= len(row.examples) <= 3
        for example in row.examples:
            assert by_id.loc[example.request_id, "cause"] == row.cause
            assert by_id.loc[example.request_id, "evidence"] == example.evidence

    paths = render_report(run.analysis, run.paths)
    assert paths.html == run.path / "analysis" / "report.html"
    assert {p.name for p in paths.figures} == {f"{n}.png" for n in built}
    assert all(p.stat().st_size > 5000 for p in paths.figures)
    md = paths.markdown.read_text()
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (paths.markdown.parent / link).exists()
    assert facts.headline.split(";")[0] in md
    page = paths.html.read_text()
    html_sections = re.findall(r"<h2>(.*?)</h2>", page)
    assert html_sections == re.findall(r"^## (.*)$", md, flags=re.M)  # Markdown mirrors HTML
    lead = (
        "What to change"
        if any(r.verdict != "ok" for r in facts.recommendations)
        else ("Nothing to change: the margins that held")
    )
    assert html_sections[:2] == [lead, "Timeline"] and "All recommendations" in html_sections
    assert ("Causes" in html_sections) == bool(counts)


def _check_failure_figures(run: Run, built: dict[str, Figure], counts: dict[str, int]) -> None:
    causes = built["causes"]
    assert _bars(causes, "cause:") == {f"cause:{c}": float(n) for c, n in counts.items()}
    for cause, n in counts.items():
        assert f"{n} {cause}" in _title(causes)

    conn = built["connections"]
    seconds = run.summary["disruption_seconds"]
    assert _bars(conn, "disruption seconds:") == {
        "disruption seconds:new": float(seconds["new"]),
        "disruption seconds:reused": float(seconds["reused"]),
    }
    reused = run.failures["conn_reused"].astype(bool)
    assert _bars(conn, "failed requests:") == {
        "failed requests:new": float((~reused).sum()),
        "failed requests:reused": float(reused.sum()),
    }


def test_a_cause_has_one_colour_in_every_figure(runs: dict[str, Run]) -> None:
    run = runs["mixed"]
    built = build_figures(run, run_facts(run))
    for cause in _counts(run):
        want = CAUSE_LOOK[cause].colour.lower()
        bar_colours = {
            tuple(np.round(p.get_facecolor(), 3))
            for name in ("timeline", "causes")
            for ax in built[name].axes
            for p in ax.patches
            if p.get_gid() in {f"failed:{cause}", f"cause:{cause}"}
        }
        (mark,) = _marks(built["pod-lanes"], f"failures:{cause}").keys()
        collection = next(
            c for ax in built["pod-lanes"].axes for c in ax.collections if c.get_gid() == mark
        )
        mark_colour = tuple(np.round(collection.get_facecolor()[0], 3))
        expected = tuple(np.round(mcolors.to_rgba(want), 3))
        assert bar_colours == {expected}
        assert mark_colour == expected


def test_failures_on_no_known_pod_go_to_the_unknown_pod_lane(runs: dict[str, Run]) -> None:
    run = runs["lb-lag"]  # dropped at a node: no capture names a Pod
    failures = run.failures.assign(pod=pd.array([pd.NA] * len(run.failures), dtype="string"))
    facts = run_facts(run)
    fig = figs.pod_lanes_figure(
        run.pods,
        run.endpoints,
        failures,
        read_truth(run.path / "nope"),
        rules_dropped(read_truth(run.path / "nope")),
        facts.t0_ns,
        figs.TimeAxis.of(0.0, 10.0, list(run.pods["pod"])),
        "t",
    )
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1] == figs.UNKNOWN_POD and len(labels) == len(run.pods) + 1
    unknown_y = fig.axes[0].get_yticks()[-1]
    for offsets in _marks(fig, "failures:").values():
        assert np.allclose(offsets[:, 1], unknown_y + 0.12)
    assert sum(len(v) for v in _marks(fig, "failures:").values()) == len(failures)


def test_pod_lanes_show_when_each_node_dropped_a_deleted_pod(runs: dict[str, Run]) -> None:
    run = runs["endpoint-lag"]
    truth = read_truth(run.path / "truth.jsonl")
    dropped = rules_dropped(truth)
    deleted = set(run.pods.loc[run.pods["deletion_ns"].notna(), "pod"])
    assert set(dropped["pod"]) == deleted
    assert dropped.groupby("pod")["node"].nunique().eq(3).all()  # every node of the recipe
    # each node drops a Pod after the watch saw its deletion
    deletion = run.pods.set_index("pod")["deletion_ns"]
    assert (dropped["ts_ns"].to_numpy() >= deletion.loc[dropped["pod"]].to_numpy()).all()
    built = build_figures(run, run_facts(run))
    drawn = [
        line
        for ax in built["pod-lanes"].axes
        for line in ax.lines
        if line.get_gid() == "truth:rules-dropped"
    ]
    assert len(drawn) == 1 and len(drawn[0].get_xdata()) == len(dropped)
    named = [t.get_text() for t in built["pod-lanes"].axes[0].texts if t.get_gid() == "truth:node"]
    assert sorted(n for text in named for n in text.split(", ")) == sorted(dropped["node"])


def _rec(facts: RunFacts, topic: str) -> tuple[str, str, str]:
    found = [r for r in recommend(facts) if r.topic == topic]
    assert len(found) == 1, [r.topic for r in recommend(facts)]
    return found[0].verdict, found[0].advice, found[0].reasoning


def test_recommendations_follow_the_injected_fault(runs: dict[str, Run]) -> None:
    lag = run_facts(runs["endpoint-lag"])
    verdict, advice, why = _rec(lag, "preStop")
    p99_s = lag.timings["propagation"]["p99_ms"] / 1000
    target = float(re.search(r"≥ (\d+) s", advice).group(1))  # type: ignore[union-attr]
    assert verdict == "change" and target >= p99_s + MARGIN_S
    assert f"{lag.failed_by_cause['endpoint-lag']} request(s) failed with endpoint-lag" in why

    clean = run_facts(runs["clean"])
    assert _rec(clean, "preStop")[0] == "ok"
    assert _rec(clean, "readiness probe")[0] == "ok"
    assert all(r.verdict != "change" for r in recommend(clean))

    assert _rec(run_facts(runs["not-ready"]), "readiness probe")[0] == "change"
    verdict, advice, _ = _rec(run_facts(runs["no-endpoints"]), "maxUnavailable / maxSurge")
    assert verdict == "change" and "maxUnavailable 0" in advice
    assert _rec(run_facts(runs["lb-lag"]), "externalTrafficPolicy: Local")[0] == "change"
    assert all(r.topic != "externalTrafficPolicy: Local" for r in recommend(clean))
    verdict, advice, _ = _rec(run_facts(runs["inflight-cut"]), "terminationGracePeriodSeconds")
    assert verdict == "change" and "drain on SIGTERM" in advice


def test_recommendations_say_when_evidence_is_thin_or_missing(
    runs: dict[str, Run], tmp_path: Path
) -> None:
    # 2 deleted Pods: too few samples for a bound, and no failure that routing lag explains
    lag = dataclasses.replace(
        run_facts(runs["lb-lag"]), causes=[], lag_after_deletion_ms=None, lag_samples=0
    )
    n = lag.timings["propagation"]["n"]
    assert 0 < n < MIN_BOUND_SAMPLES
    (prestop,) = [r for r in recommend(lag) if r.topic == "preStop"]
    assert prestop.verdict == "unknown" and not prestop.changes
    assert prestop.tune_command is not None and prestop.tune_command in prestop.advice
    assert prestop.tune_command.startswith("rolltrace tune scenarios/lb-lag.yaml --vary ")
    assert f"only {n} propagation sample(s)" in prestop.advice
    blind_run = _build(tmp_path, "clean", node_captures=False)
    (blind_run.path / "events.jsonl").unlink()  # no Pods: nothing can show propagation
    blind = run_facts(load_run(blind_run.path))
    verdict, advice, _ = _rec(blind, "preStop")
    assert verdict == "unknown" and "not measured" in advice


def test_endpoint_lag_failures_size_prestop_when_node_captures_are_missing(
    tmp_path: Path,
) -> None:
    """Requests routed to a Pod seconds after its deletion prove propagation took that long,
    even with no node capture to measure it."""
    run = _build(tmp_path, "endpoint-lag", node_captures=False)
    facts = run_facts(run)
    assert facts.timings["propagation"]["n"] == 0
    lag = run.failures[run.failures["cause"] == "endpoint-lag"]["ms_since_deletion"].dropna()
    assert facts.lag_samples == len(lag[lag >= 0]) > 0
    verdict, advice, why = _rec(facts, "preStop")
    target = float(re.search(r"≥ (\d+) s", advice).group(1))  # type: ignore[union-attr]
    assert verdict == "change"
    assert target >= float(np.percentile(lag[lag >= 0], 99)) / 1000 + MARGIN_S
    routed = "endpoint-lag, lb-lag, proxy-endpoint-lag"
    assert f"still routed to a leaving Pod ({routed}) started up to" in why


def test_rollout_settings_of_a_local_cluster_scenario_are_read() -> None:
    scenario = {
        "name": "x",
        "workload": {"replicas": 3},
        "pod": {
            "readiness_probe": {"path": "/ready", "period_s": 1, "initial_delay_s": 0},
            "pre_stop": {"sleep_s": 1},
            "termination_grace_period_s": 30,
        },
        "strategy": {"max_surge": 1, "max_unavailable": 0},
        "service": {"external_traffic_policy": "Local"},
        "cluster": {"terminating_fallback": True},
    }
    s = rollout_settings(scenario, {})
    assert (s.prestop_s, s.grace_s, s.readiness, s.replicas) == (1.0, 30.0, "http GET /ready", 3)
    assert (s.max_surge, s.max_unavailable, s.traffic_policy) == (1, 0, "Local")
    no_hook = rollout_settings({**scenario, "pod": {"readiness_probe": None, "pre_stop": None}}, {})
    assert (no_hook.prestop_s, no_hook.readiness) == (0.0, "none")
    assert rollout_settings({}, {}).prestop_s is None  # imported run: not recorded, not zero


HOSTILE = '<script>alert("x")</script><img src="http://example.com/x.png">'


def test_html_escapes_trace_strings_and_fetches_nothing(runs: dict[str, Run]) -> None:
    run = runs["mixed"]
    facts = run_facts(run)
    causes = [dataclasses.replace(facts.causes[0], evidence=HOSTILE), *facts.causes[1:]]
    hostile = dataclasses.replace(facts, causes=causes, run_id=HOSTILE)
    parts = sections(dataclasses.replace(hostile, recommendations=recommend(hostile)), True)
    page = render_html(hostile.run_id, [hostile.run_id], [HOSTILE], parts, {"timeline": b"\x89PNG"})
    assert "<script" not in page and '<img src="http' not in page
    assert page.count("&lt;script&gt;") >= 3
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    md = render_markdown(hostile.run_id, [hostile.run_id], [], parts, "figures")
    assert "<script" not in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    header_cells = {line.count(" | ") for line in table_lines if "cause" in line}
    assert header_cells  # pipes inside cells are escaped, so every row keeps its columns


def test_report_of_a_damaged_run_names_the_missing_input(tmp_path: Path) -> None:
    run = _build(tmp_path, "clean", node_captures=False)
    for capture in (run.path / "packets").iterdir():
        capture.unlink()
    (run.path / "events.jsonl").unlink()
    damaged = load_run(run.path)  # the inputs changed: analyzed again
    paths = render_report(damaged.analysis, damaged.paths)
    page = paths.html.read_text()
    assert "missing input: packets/*.pcap" in page
    assert "propagation was not measured" in page
    first = recommend(run_facts(damaged))[0]
    assert (first.topic, first.verdict) == ("evidence", "unknown")
    assert "missing: packets/*.pcap" in first.reasoning


def test_clean_run_needs_no_evidence_caveat(runs: dict[str, Run]) -> None:
    assert all(r.topic != "evidence" for r in recommend(run_facts(runs["clean"])))


_PROPAGATION_MS = pd.Series([2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 4600.0])


def _propagation_timings() -> dict[str, object]:
    return {
        "propagation": metrics.timing_stats(_PROPAGATION_MS),
        "propagation_bound": metrics.upper_prediction_bound(_PROPAGATION_MS),
    }


@pytest.mark.parametrize(
    ("configured", "lag", "verdict"),
    [
        ("bound", 0, "ok"),  # covers the bound: keep it
        ("max", 0, "ok"),  # held (longer than every sample), thinner than the bound: said
        (4.0, 0, "change"),  # shorter than the longest propagation seen: lucky
        # failures while preStop covered the bound: not its length, and no change that would
        # keep or lower it
        ("bound", 3, "ok"),
        (None, 0, "unknown"),
    ],
)
def test_prestop_verdict_against_the_bound_of_measured_propagation(
    runs: dict[str, Run], configured: float | str | None, lag: int, verdict: str
) -> None:
    timings = _propagation_timings()
    upper_s = timings["propagation_bound"]["upper_ms"] / 1000  # type: ignore[index]
    target = math.ceil(upper_s)
    value = {"bound": float(target), "max": 4.6 + 0.1}.get(str(configured), configured)
    facts = dataclasses.replace(
        run_facts(runs["clean"]),
        timings=timings,
        settings=RolloutSettings(prestop_s=value),  # type: ignore[arg-type]
        causes=[CauseRow("endpoint-lag", lag, 1.0, 0.9, "e", [])] if lag else [],
    )
    (rec,) = [r for r in recommend(facts) if r.topic == "preStop"]
    assert rec.verdict == verdict
    assert str(target) in rec.advice
    assert "95% upper prediction bound" in rec.how_sure and "6 samples" in rec.how_sure
    wants_change = verdict != "ok"
    assert bool(rec.changes) == wants_change
    if wants_change:
        assert rec.changes == (SettingChange("pod.pre_stop.sleep_s", value, target),)


def test_the_bound_covers_the_longest_sample_and_widens_with_fewer_samples() -> None:
    many = metrics.upper_prediction_bound(pd.concat([_PROPAGATION_MS] * 2, ignore_index=True))
    few = metrics.upper_prediction_bound(_PROPAGATION_MS.iloc[[0, 3, 5]])
    for bound in (many, few):
        assert bound["upper_ms"] is not None and bound["max_ms"] is not None
        assert bound["upper_ms"] > bound["max_ms"]
    assert few["upper_ms"] - few["max_ms"] > many["upper_ms"] - many["max_ms"]  # type: ignore[operator]
    assert metrics.upper_prediction_bound(_PROPAGATION_MS.iloc[:2])["upper_ms"] is None


def test_an_imported_run_with_requests_only_still_renders(tmp_path: Path) -> None:
    """run.json without scenario or phases, no packets, no events, no truth: every section
    renders, failures go to the unknown-Pod lane, and settings are 'not recorded'."""
    run = _build(tmp_path, "endpoint-lag")
    meta = read_run_meta(run.path)
    write_run_meta(
        run.path,
        RunMeta(
            schema_version=meta.schema_version,
            run_id="imported",
            status=meta.status,
            backend="imported",
        ),
    )
    for name in ("events.jsonl", "truth.jsonl"):
        (run.path / name).unlink()
    for capture in (run.path / "packets").iterdir():
        capture.unlink()
    imported = load_run(run.path)
    facts = run_facts(imported)
    assert facts.settings == RolloutSettings()
    built = build_figures(imported, facts)
    labels = [t.get_text() for t in built["pod-lanes"].axes[0].get_yticklabels()]
    assert labels == ([figs.UNKNOWN_POD] if len(imported.failures) else [])
    assert sum(len(v) for v in _marks(built["pod-lanes"], "failures:").values()) == len(
        imported.failures
    )
    page = render_report(imported.analysis, imported.paths).html.read_text()
    assert "not recorded" in page and "missing input: events.jsonl" in page


def _with_failures(facts: RunFacts, cause: str, failed: int, **changes: object) -> RunFacts:
    row = CauseRow(cause, failed, 1.0, 0.9, "evidence", [])
    return dataclasses.replace(facts, causes=[row], failed=failed, **changes)  # type: ignore[arg-type]


def test_container_restarts_point_at_the_probe_or_the_app_not_at_rollout_settings(
    runs: dict[str, Run],
) -> None:
    clean = run_facts(runs["clean"])
    assert all(r.topic != "container restarts" for r in recommend(clean))
    exits = {"exit 137 (Error)": 2, "exit 1 (Error)": 1}
    facts = _with_failures(clean, "container-restart", 7, container_exits=exits)
    verdict, advice, why = _rec(facts, "container restarts")
    assert verdict == "change" and "liveness probe" in advice and "preStop" in advice
    assert "7 request(s)" in why and "2× exit 137 (Error)" in why


def test_killed_at_grace_asks_for_a_grace_period_longer_than_prestop_plus_drain(
    runs: dict[str, Run],
) -> None:
    clean = run_facts(runs["clean"])
    settings = dataclasses.replace(clean.settings, grace_s=10.0, prestop_s=8.0)
    facts = _with_failures(clean, "killed-at-grace", 4, settings=settings)
    verdict, advice, why = _rec(facts, "terminationGracePeriodSeconds")
    target = float(re.search(r"≥ (\d+) s", advice).group(1))  # type: ignore[union-attr]
    assert verdict == "change" and target >= 10.0 + MARGIN_S
    assert "4 request(s) were still in flight when SIGKILL" in why and "preStop 8 s" in why


def test_container_exits_are_counted_once_per_restart() -> None:
    states = pd.DataFrame(
        {
            "uid": ["a", "a", "a", "b"],
            "state": ["restarting", "restarting", "ready", "restarting"],
            "restart_count": [1, 1, 1, 3],
            "last_exit_code": pd.array([137, 137, 137, pd.NA], dtype="Int64"),
            "last_exit_reason": pd.array(["Error", "Error", "Error", pd.NA], dtype="string"),
        }
    )
    assert container_exits(states) == {"exit 137 (Error)": 1, "exit ? (?)": 1}


def _texts(fig: Figure) -> list[Text]:
    """The texts a reader sees: tick labels outside an axis' view are not drawn."""
    FigureCanvasAgg(fig).draw()
    hidden = set()
    for ax in fig.axes:
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick in axis.get_major_ticks():
                if not min(low, high) - 1e-9 <= tick.get_loc() <= max(low, high) + 1e-9:
                    hidden |= {id(tick.label1), id(tick.label2)}
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]


@pytest.mark.parametrize("recipe", ["mixed", "clean", "endpoint-lag"])
def test_figure_text_is_readable_and_never_overprints(runs: dict[str, Run], recipe: str) -> None:
    """Every label is at least 8 pt and no two texts of a figure overlap (judged on the
    matplotlib artists' drawn extents, not on the PNG)."""
    run = runs[recipe]
    for name, fig in build_figures(run, run_facts(run)).items():
        texts = _texts(fig)
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 8]
        assert not small, (name, small)
        boxes = [(t.get_text(), t.get_window_extent()) for t in texts]
        for i, (text_a, a) in enumerate(boxes):
            for text_b, b in boxes[i + 1 :]:
                assert not a.overlaps(b), (name, text_a, text_b)


def test_legends_list_only_what_is_drawn(runs: dict[str, Run]) -> None:
    run = runs["clean"]
    built = build_figures(run, run_facts(run))
    lanes = built["pod-lanes"]
    (legend,) = lanes.legends
    labels = [t.get_text() for t in legend.get_texts()]
    drawn = {
        tuple(np.round(c.get_facecolor()[0], 3))
        for c in lanes.axes[0].collections
        if str(c.get_gid()).startswith(("lane:", "endpoint:"))
    }
    for label in labels:
        state = label.split(" ", 1)[1]
        look = {f"Pod {k}": v for k, v in LANE_LOOK.items()} | {
            f"endpoint {k}": v for k, v in ENDPOINT_LOOK.items()
        }
        if label in look:
            assert tuple(np.round(mcolors.to_rgba(look[label].colour), 3)) in drawn, state
    assert not any(label.startswith("failed:") for label in labels)  # nothing failed


def test_timeline_and_pod_lanes_share_their_time_axis(runs: dict[str, Run]) -> None:
    """Same x range and same horizontal position on the page: a failure in the timeline sits
    above its mark in the Pod lanes."""
    run = runs["endpoint-lag"]
    built = build_figures(run, run_facts(run))
    timeline, lanes = built["timeline"].axes[0], built["pod-lanes"].axes[0]
    assert timeline.get_xlim() == lanes.get_xlim()
    assert built["timeline"].get_figwidth() == built["pod-lanes"].get_figwidth()
    a, b = timeline.get_position(), lanes.get_position()
    assert (a.x0, a.x1) == pytest.approx((b.x0, b.x1))


def test_exits_after_the_load_stopped_are_tear_down_not_drawn(runs: dict[str, Run]) -> None:
    run = runs["clean"]
    facts = run_facts(run)
    truth = read_truth(run.path / "truth.jsonl")
    new_pod = str(run.pods.loc[run.pods["deletion_ns"].isna(), "pod"].iloc[0])
    teardown = pd.DataFrame(
        {
            "ts_ns": [facts.phases["load_stop"] + 2 * 10**9],
            "event": ["exited"],
            "pod": [new_pod],
            "node": ["node-1"],
            "endpoints": [None],
        }
    )
    built = build_figures(run, facts, pd.concat([truth, teardown], ignore_index=True))
    exits = [
        line.get_xdata()
        for line in built["pod-lanes"].axes[0].lines
        if line.get_gid() == "truth:exited"
    ]
    end_s = built["pod-lanes"].axes[0].get_xlim()[1]
    assert all(x <= end_s for xs in exits for x in xs)


def test_timings_axis_fits_the_samples_not_the_grace_period(runs: dict[str, Run]) -> None:
    run = runs["endpoint-lag"]
    facts = run_facts(run)
    settings = dataclasses.replace(facts.settings, grace_s=300.0)
    fig = figs.timings_figure(run.timings, settings, "t")
    ax = fig.axes[0]
    longest = float(run.timings["ms"].max()) / 1000
    assert longest <= ax.get_xlim()[1] < 2 * longest
    (grace,) = [t for t in ax.texts if t.get_gid() == "configured:grace period"]
    assert "300 s" in grace.get_text()


def test_a_run_without_failures_gets_a_short_positive_report(runs: dict[str, Run]) -> None:
    run = runs["clean"]
    facts = run_facts(run)
    first = lead(facts)
    assert first.title.startswith("Nothing to change")
    assert any(what.startswith("preStop 5 s covers") for what, _ in first.items)
    assert [s.title for s in sections(facts, True)] == [
        "Timeline",
        "Pod lanes",
        "New vs reused connections",
        "Timings",
        "All recommendations",
    ]
    (recs,) = [s for s in sections(facts, True) if s.title == "All recommendations"]
    assert recs.table is None and recs.folded is not None  # every verdict ok: all folded


def test_the_lead_names_setting_from_to_effect_and_certainty(runs: dict[str, Run]) -> None:
    facts = run_facts(runs["endpoint-lag"])
    first = lead(facts)
    assert first.title == "What to change"
    what, detail = first.items[0]
    (prestop,) = [r for r in facts.recommendations if r.topic == "preStop"]
    (change,) = prestop.changes
    assert what == f"preStop: pod.pre_stop.sleep_s: {change.from_value:g} s → {change.to_value} s"
    assert "Expected: the" in detail and "How sure: 95% upper prediction bound" in detail
    summary = json.loads((runs["endpoint-lag"].path / "analysis" / "summary.json").read_text())
    (data,) = [r for r in summary["recommendations"] if r["topic"] == "preStop"]
    assert data["changes"] == [
        {"setting": "pod.pre_stop.sleep_s", "from": change.from_value, "to": change.to_value}
    ]
    assert data["fix_in"] == "setting" and data["verdict"] == "change"


def test_app_fixes_claim_no_setting(runs: dict[str, Run]) -> None:
    for recipe, topic in (("inflight-cut", "terminationGracePeriodSeconds"),):
        (rec,) = [r for r in run_facts(runs[recipe]).recommendations if r.topic == topic]
        assert rec.fix_in == "app" and rec.changes == ()
    keepalive = _with_failures(run_facts(runs["clean"]), "keepalive-race", 3)
    (rec,) = [r for r in recommend(keepalive) if r.topic == "keep-alive draining"]
    assert rec.fix_in == "app" and rec.changes == () and "No rollout setting" in rec.advice


def test_grace_ok_row_quotes_the_configured_value(runs: dict[str, Run]) -> None:
    facts = run_facts(runs["clean"])
    settings = dataclasses.replace(facts.settings, grace_s=30.0)
    (rec,) = [
        r
        for r in recommend(dataclasses.replace(facts, settings=settings))
        if r.topic == "terminationGracePeriodSeconds"
    ]
    assert rec.verdict == "ok" and rec.advice.startswith(
        "terminationGracePeriodSeconds 30 s covers"
    )
    assert "as configured" not in rec.advice
