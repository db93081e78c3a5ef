"""Comparing runs: a difference is called real only when it exceeds the run-to-run spread, and
only when each side has at least two runs to measure that spread."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer import load_run
from analyzer.advice import RolloutSettings
from analyzer.report.compare import (
    ALL,
    compare_figure,
    differences,
    group_runs,
    render_comparison,
)
from analyzer.report.facts import RunFacts, run_facts
from analyzer.tracebuilder import build_run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two repetitions (seeds) of a broken rollout and of its fix."""
    root = tmp_path_factory.mktemp("compare")
    out: dict[str, list[Path]] = {}
    for recipe in ("endpoint-lag", "clean"):
        for seed in (1, 2):
            path = root / f"{recipe}-{seed}"
            build_run(path, recipe, seed=seed, rate=40, duration_s=15)
            out.setdefault(recipe, []).append(path)
    return out


def _facts(paths: list[Path]) -> list[RunFacts]:
    return [run_facts(load_run(p)) for p in paths]


def test_a_fix_that_removes_every_failure_is_larger_than_the_spread(
    built: dict[str, list[Path]],
) -> None:
    facts = _facts(built["endpoint-lag"] + built["clean"])
    diffs = differences(group_runs(facts))
    total = next(d for d in diffs if d.cause == ALL)
    broken = [f.failed for f in facts[:2]]
    assert (total.baseline, total.other) == ("endpoint-lag", "clean")
    assert total.baseline_mean == sum(broken) / 2 and total.other_mean == 0
    assert total.spread == max(broken) - min(broken)
    assert total.verdict == "larger than the run-to-run spread"
    assert {d.cause for d in diffs} == {ALL, "endpoint-lag"}


def test_one_run_per_side_cannot_tell(built: dict[str, list[Path]]) -> None:
    facts = _facts([built["endpoint-lag"][0], built["clean"][0]])
    diffs = differences(group_runs(facts))
    assert diffs
    for d in diffs:
        assert d.spread is None and d.verdict.startswith("cannot tell")


def test_a_difference_within_the_spread_is_not_called_real() -> None:
    def fake(name: str, failed: int) -> RunFacts:
        return RunFacts(
            run_id=f"{name}-{failed}",
            status="complete",
            backend="synthetic",
            scenario_name=name,
            t0_ns=0,
            phases={},
            total=100,
            failed=failed,
            causes=[],
            connections=[],
            timings={},
            settings=RolloutSettings(),
            headline="",
        )

    facts = [fake("a", 10), fake("a", 20), fake("b", 12), fake("b", 14)]
    (total,) = differences(group_runs(facts))
    assert total.difference == -2 and total.spread == 10
    assert total.verdict == "within the run-to-run spread"


def test_comparison_renders_table_and_overlaid_timelines(
    built: dict[str, list[Path]], tmp_path: Path
) -> None:
    runs = built["endpoint-lag"] + built["clean"]
    paths = render_comparison(runs, tmp_path / "cmp")
    page = paths.html.read_text()
    for path in runs:
        assert load_run(path).meta.run_id in page
    assert "larger than the run-to-run spread" in page
    assert [p.name for p in paths.figures] == ["compare-timeline.png"]
    assert "](figures/compare-timeline.png)" in paths.markdown.read_text()


def test_overlaid_timeline_has_one_line_per_run(built: dict[str, list[Path]]) -> None:
    runs = [load_run(p) for p in built["endpoint-lag"] + built["clean"]]
    facts = [run_facts(r) for r in runs]
    fig = compare_figure(runs, facts, "t")
    lines = {
        str(line.get_gid()): line
        for line in fig.axes[0].lines
        if str(line.get_gid()).startswith("run:")
    }
    assert set(lines) == {f"run:{f.run_id}" for f in facts}
    for run, f in zip(runs, facts, strict=True):
        assert sum(lines[f"run:{f.run_id}"].get_ydata()) == len(run.failures)


def test_a_run_named_twice_counts_once_and_repetitions_are_named(
    built: dict[str, list[Path]], tmp_path: Path
) -> None:
    first, second = built["endpoint-lag"]
    again = first.parent / "." / first.name  # another spelling of the same directory
    paths = render_comparison([first, again, second, *built["clean"]], tmp_path / "cmp")
    page = paths.html.read_text()
    assert "Comparison of 4 runs" in page
    assert f"named more than once, counted once: {again}" in page
    ids = [load_run(p).meta.run_id for p in (first, second)]
    assert f"2 run(s), repetitions of one scenario: {ids[0]}, {ids[1]}" in page
    facts = _facts([first, second])
    assert group_runs(facts) == {"endpoint-lag": facts}
