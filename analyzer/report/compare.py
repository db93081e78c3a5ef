"""Compare runs: before/after a fix, or repetitions of one scenario.

Runs are grouped by scenario (run.json's scenario name or recipe); the first group is the
baseline, and the report says which runs are repetitions of which scenario. A run directory
named twice (two spellings of one path) counts once: a duplicate would fake a repetition and
shrink the spread to zero. A difference in failures is called real only when it is larger than the run-to-run
spread (the largest range of either group), which needs at least two runs per group: with fewer
the comparison says it cannot tell instead of presenting noise as a finding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from analyzer.report import figures
from analyzer.report.facts import RunFacts, run_facts
from analyzer.report.render import ReportPaths, Section, write_report
from analyzer.report.style import cause_order
from analyzer.run import Run, load_run

ALL = "all causes"
LARGER = "larger than the run-to-run spread"
WITHIN = "within the run-to-run spread"
CANNOT_TELL = "cannot tell: needs ≥ 2 runs per side to know the spread"
SHORT_VERDICT = {
    LARGER: "beyond the spread",
    WITHIN: "within the spread",
    CANNOT_TELL: "spread unknown",
}


@dataclass(frozen=True)
class CauseDifference:
    cause: str
    baseline: str
    other: str
    baseline_mean: float
    other_mean: float
    spread: float | None  # None: fewer than 2 runs on a side
    verdict: str

    @property
    def difference(self) -> float:
        return self.other_mean - self.baseline_mean


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values)


def _range(values: Sequence[int]) -> int:
    return max(values) - min(values)


def group_runs(facts: Sequence[RunFacts]) -> dict[str, list[RunFacts]]:
    """Runs by scenario name, groups in order of first appearance."""
    groups: dict[str, list[RunFacts]] = {}
    for f in facts:
        groups.setdefault(f.scenario_name, []).append(f)
    return groups


def differences(groups: dict[str, list[RunFacts]]) -> list[CauseDifference]:
    """Each non-baseline group against the baseline, per cause and for all causes together."""
    names = list(groups)
    if len(names) < 2:
        return []
    base_name = names[0]
    causes = cause_order({c for runs in groups.values() for f in runs for c in f.failed_by_cause})
    out = []
    for other_name in names[1:]:
        base, other = groups[base_name], groups[other_name]
        for cause in [ALL, *causes]:

            def counts(runs: list[RunFacts], cause: str = cause) -> list[int]:
                return [f.failed if cause == ALL else f.failed_by_cause.get(cause, 0) for f in runs]

            a, b = counts(base), counts(other)
            diff = _mean(b) - _mean(a)
            if len(a) < 2 or len(b) < 2:
                spread, verdict = None, CANNOT_TELL
            else:
                spread = float(max(_range(a), _range(b)))
                verdict = LARGER if abs(diff) > spread else WITHIN
            out.append(
                CauseDifference(cause, base_name, other_name, _mean(a), _mean(b), spread, verdict)
            )
    return out


def _side_by_side_section(facts: Sequence[RunFacts]) -> Section:
    """One row per run with its failures per cause: the raw counts every verdict rests on."""
    causes = cause_order({c for f in facts for c in f.failed_by_cause})
    side_by_side = (
        ["run", "scenario", "status", "requests", "failed", "rate", *causes],
        [
            [
                f.run_id,
                f.scenario_name,
                f.status,
                str(f.total),
                str(f.failed),
                f"{f.failed / f.total:.3%}" if f.total else "—",
                *(str(f.failed_by_cause.get(c, 0)) for c in causes),
            ]
            for f in facts
        ],
    )
    return Section("Runs side by side", None, [], side_by_side)


def _differences_section(diffs: Sequence[CauseDifference]) -> Section:
    """Each group against the baseline per cause, with the spread that decides the verdict."""
    return Section(
        "Difference in failures by cause",
        None,
        [
            "Mean failed requests per run of each group; the spread is the largest range "
            "(max − min) within either group."
        ],
        (
            ["cause", "baseline", "mean", "compared", "mean", "difference", "spread", "verdict"],
            [
                [
                    d.cause,
                    d.baseline,
                    f"{d.baseline_mean:g}",
                    d.other,
                    f"{d.other_mean:g}",
                    f"{d.difference:+g}",
                    "—" if d.spread is None else f"{d.spread:g}",
                    d.verdict,
                ]
                for d in diffs
            ],
        ),
    )


def unique_run_paths(run_paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[str]]:
    """Run directories in first-seen order, each once (by resolved path), and the arguments
    left out as duplicates."""
    seen: set[Path] = set()
    kept: list[Path] = []
    dropped: list[str] = []
    for given in run_paths:
        resolved = Path(given).resolve()
        if resolved in seen:
            dropped.append(str(given))
            continue
        seen.add(resolved)
        kept.append(Path(given))
    return kept, dropped


def repetition_lines(groups: dict[str, list[RunFacts]]) -> list[str]:
    """Which runs are repetitions of which scenario, one line per scenario."""
    return [
        f"scenario {name}: {len(runs)} run(s), repetitions of one scenario: "
        + ", ".join(f.run_id for f in runs)
        if len(runs) > 1
        else f"scenario {name}: 1 run ({runs[0].run_id})"
        for name, runs in groups.items()
    ]


def _spread_section(facts: Sequence[RunFacts]) -> Section:
    """Repetitions of one scenario have nothing to compare against: their range is the finding."""
    return Section(
        "Run-to-run spread",
        None,
        [
            f"All runs are repetitions of one scenario: failed requests range from "
            f"{min(f.failed for f in facts)} to {max(f.failed for f in facts)}."
        ],
    )


def comparison_sections(
    facts: Sequence[RunFacts], diffs: Sequence[CauseDifference]
) -> list[Section]:
    """The comparison's content, format-neutral like a run report's ``sections``."""
    return [
        _side_by_side_section(facts),
        Section(
            "Failed requests over time",
            "compare-timeline",
            ["Failed requests per second, each run aligned at its rollout trigger."],
        ),
        _differences_section(diffs) if diffs else _spread_section(facts),
    ]


def compare_headline(diffs: Sequence[CauseDifference], facts: Sequence[RunFacts]) -> str:
    totals = [d for d in diffs if d.cause == ALL]
    if not totals:
        return f"{len(facts)} runs of one scenario"
    return "; ".join(
        f"{d.other} {d.other_mean:g} vs {d.baseline} {d.baseline_mean:g} failed per run "
        f"({SHORT_VERDICT[d.verdict]})"
        for d in totals
    )


def compare_figure(runs: Sequence[Run], facts: Sequence[RunFacts], title: str) -> Figure:
    series = []
    for run, f in zip(runs, facts, strict=True):
        start = run.requests["start_ns"]
        first, last = (int(start.min()), int(start.max())) if len(start) else (f.t0_ns, f.t0_ns)
        zero = f.phases.get("rollout_trigger", f.t0_ns)
        series.append((f.run_id, run.failures, zero, first, last))
    return figures.compare_timeline_figure(series, title)


def render_comparison(
    run_paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> ReportPaths:
    """Write ``compare.html``, ``compare.md`` and ``figures/compare-timeline.png`` to ``out_dir``."""
    unique, duplicates = unique_run_paths(run_paths)
    runs = [load_run(p) for p in unique]
    facts = [run_facts(r) for r in runs]
    groups = group_runs(facts)
    diffs = differences(groups)
    headline = compare_headline(diffs, facts)
    notes = [f"named more than once, counted once: {', '.join(duplicates)}"] if duplicates else []
    return write_report(
        Path(out_dir),
        "compare",
        f"Comparison of {len(runs)} runs",
        [headline, *repetition_lines(groups)],
        notes,
        comparison_sections(facts, diffs),
        {"compare-timeline": compare_figure(runs, facts, headline)},
    )
