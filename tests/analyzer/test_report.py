"""The disruption report: figure content (lanes, marks, bars, titles) checked against the tables,
recommendations against the injected faults, HTML/Markdown against escaping and self-containment.

Runs come from the trace builder, so what each figure must show is known.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analyzer import Run, load_run
from analyzer.report import figures as figs
from analyzer.report import render_report
from analyzer.report.facts import (
    CauseRow,
    RolloutSettings,
    RunFacts,
    container_exits,
    read_truth,
    rollout_settings,
    rules_dropped,
    run_facts,
)
from analyzer.report.recommendations import MARGIN_S, recommend
from analyzer.report.render import build_figures, render_html, render_markdown, sections
from analyzer.report.style import CAUSE_LOOK
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
    shaded = [p for p in rate_ax.patches if p.get_gid() == "rollout"]
    assert len(shaded) == ("rollout_complete" in facts.phases)
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
    assert html_sections[:2] == ["Timeline", "Causes"] and "Recommendations" in html_sections


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
        facts.t0_ns + 10**10,
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
    lag = run_facts(runs["lb-lag"])  # 2 deleted Pods: a handful of samples
    assert "Evidence is thin" in _rec(lag, "preStop")[2]
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
    assert "endpoint-lag failures started up to" in why


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
    parts = sections(hostile, recommend(hostile), True)
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


@pytest.mark.parametrize(
    ("configured", "lag", "verdict"),
    [
        (6.0, 0, "ok"),  # ≥ p99 + margin
        (5.0, 0, "ok"),  # held, thinner margin than recommended: said in the advice
        (4.0, 0, "change"),  # shorter than the measured p99: lucky
        (6.0, 3, "change"),  # failures decide, whatever the setting
        (None, 0, "unknown"),
    ],
)
def test_prestop_verdict_against_measured_propagation(
    runs: dict[str, Run], configured: float | None, lag: int, verdict: str
) -> None:
    base = run_facts(runs["clean"])
    facts = dataclasses.replace(
        base,
        timings={"propagation": {"n": 9, "p50_ms": 3000.0, "p99_ms": 4600.0, "max_ms": 4600.0}},
        settings=RolloutSettings(prestop_s=configured),
        causes=[CauseRow("endpoint-lag", lag, 1.0, 0.9, "e", [])] if lag else [],
    )
    got, advice, _ = _rec(facts, "preStop")
    assert got == verdict
    assert "≥ 6 s" in advice  # ceil(4.6 s + 1 s margin)


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
