"""The scenario library end to end on the local cluster, scored against ground truth.

Each scenario runs for real (namespaces, nftables, processes, Locust), is analyzed, and must:
meet its own expectations; show its intended cause as the dominant one (broken scenarios);
agree with the strict judge (``rolltrace.scoring``: one true cause per failed request, from
truth.jsonl alone) on ≥ 95% of the failed requests truth decides, leaving at most 5% undecided;
and end with its rendered report. Fixed scenarios run their repetitions (≥ 3) and must show zero
failures in every one. Results go to $ROLLTRACE_E2E_RESULTS (JSON lines, with per-cause
precision and recall) when set, which is where docs/scenarios.md's table comes from.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from rolltrace.commands.run import run_scenario, unmet_expectations
from rolltrace.scenario import load_scenario
from rolltrace.scoring import score_run
from tests.conftest import require

MIN_AGREEMENT = 0.95  # the analyzer's cause must be the true one for 95 % of decided failures
# the library's local scenarios; `kind: kube` ones run in tests/e2e/test_real_cluster_path.py
SCENARIOS = sorted(
    path
    for path in Path(__file__).parents[2].glob("scenarios/*.yaml")
    if load_scenario(path).cluster.kind == "local"
)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_end_to_end(path: Path, tmp_path: Path) -> None:
    require("ip", "nft", "nsenter", root=True)
    scenario = load_scenario(path)
    started = time.monotonic()
    outcomes = run_scenario(scenario, tmp_path, Console(stderr=True, force_terminal=False))
    wall_s = time.monotonic() - started
    assert len(outcomes) == scenario.repetitions
    rows = []
    for outcome in outcomes:
        reasons = "; ".join(outcome.meta.status_reasons)
        assert outcome.meta.status == "complete", reasons
        assert outcome.summary is not None, f"no analysis: {reasons}"
        summary = outcome.summary
        score = score_run(outcome.paths.root)
        failed_by_cause = {k: v for k, v in summary["failed_by_cause"].items() if v}
        rows.append({
            "scenario": scenario.name, "run": outcome.paths.root.name,
            "requests": summary["requests_total"], "failed": summary["requests_failed"],
            "causes": failed_by_cause, "agreement": round(score.agreement, 4),
            "undecided": score.undecided,
            "per_cause": {
                cause: {"precision": round(c.precision, 4), "recall": round(c.recall, 4),
                        "support": c.support, "hits": c.hits, "claimed": c.claimed}
                for cause, c in score.per_cause.items()
            },
            "wall_s": round(wall_s / len(outcomes), 1),
        })  # fmt: skip
        assert not unmet_expectations(scenario, summary), (scenario.name, failed_by_cause)
        if scenario.dominant_cause is not None:
            dominant = max(failed_by_cause, key=failed_by_cause.__getitem__)
            assert dominant == scenario.dominant_cause, failed_by_cause
        assert score.agreement >= MIN_AGREEMENT, (score.confusion, score.disagreements[:5])
        # the judge must decide the failures it scores: its own gaps count against the run
        assert score.undecided <= (1 - MIN_AGREEMENT) * score.failed, score.undecided_examples[:5]
        report = outcome.paths.report_html
        assert report.exists(), f"no report: {reasons}"
        assert str(summary["requests_total"]) in outcome.paths.report_md.read_text()
    results = os.environ.get("ROLLTRACE_E2E_RESULTS")
    if results:
        with open(results, "a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
