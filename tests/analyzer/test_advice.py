"""Advice that a rerun can trust: one run never lowers a setting, a killed drain gets a grace
period that outlasts it, the Local policy's drain gap gets the cluster change it needs with the
preStop that goes with it, not-ready failures point at the probe or the app by what let them
through, and the propagation bound follows the slow node rather than the spread between nodes.

Runs come from the trace builder (analyzer.tracebuilder), so the fault and its settings are
known; facts are varied with ``dataclasses.replace`` where one setting decides.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from analyzer import Run, load_run, metrics
from analyzer.advice import (
    DEFAULT_GRACE_S,
    FALLBACK_PATH,
    GRACE_PATH,
    MIN_GRACE_AFTER_PRESTOP_S,
    PRESTOP_PATH,
    Recommendation,
    recommend,
)
from analyzer.report.facts import CauseRow, RunFacts, run_facts
from analyzer.tracebuilder import build_run

RECIPES = ("clean", "endpoint-lag", "lb-lag", "not-ready", "warmup-503", "killed-at-grace")
#: Recipes whose rollout outlasts a small run's load: their own defaults.
_OWN_SIZE: dict[str, dict[str, float]] = {"warmup-503": {}}
#: Settings whose cost falls with their value (shorter is cheaper): advice only ever raises them.
_RAISED_ONLY = (PRESTOP_PATH, GRACE_PATH)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("advice-runs")
    for name in RECIPES:
        size = _OWN_SIZE.get(name, {"rate": 40.0, "duration_s": 15.0})
        build_run(root / name, name, seed=3, **size)
    return {name: load_run(root / name) for name in RECIPES}


def _topic(facts: RunFacts, topic: str) -> Recommendation:
    (found,) = [r for r in recommend(facts) if r.topic == topic]
    return found


def _failing(facts: RunFacts, **failed: int) -> RunFacts:
    rows = [CauseRow(cause.replace("_", "-"), n, 1.0, 0.9, "e", []) for cause, n in failed.items()]
    return dataclasses.replace(facts, causes=rows, failed=sum(failed.values()))


def test_no_recommendation_lowers_a_setting_whose_cost_falls_with_it(
    runs: dict[str, Run],
) -> None:
    for name, run in runs.items():
        for rec in recommend(run_facts(run)):
            for change in rec.changes:
                if change.setting in _RAISED_ONLY and change.from_value is not None:
                    assert float(change.to_value or 0) > float(change.from_value), (name, rec)


def test_prestop_that_covers_the_bound_is_kept_despite_a_stray_endpoint_lag_failure(
    runs: dict[str, Run],
) -> None:
    """A failure routed to a Pod 0.9 s after its deletion, while a 6 s preStop still ran: the
    preStop's length did not cause it, and one run must not shorten it."""
    clean = run_facts(runs["clean"])
    facts = dataclasses.replace(
        _failing(clean, endpoint_lag=1),
        settings=dataclasses.replace(clean.settings, prestop_s=6.0),
        lag_after_deletion_ms=900.0,
        lag_samples=1,
    )
    rec = _topic(facts, "preStop")
    assert rec.verdict == "ok" and rec.changes == ()
    assert "keep it" in rec.advice and "did not cause them" in rec.reasoning
    # room below: an experiment may find a cheaper value, and the advice says how
    assert rec.tune_command is not None and f"--vary {PRESTOP_PATH}=" in rec.tune_command
    assert rec.tune_command.endswith("..6 --repetitions 2")


def test_a_killed_drain_gets_a_grace_period_well_past_the_kill(runs: dict[str, Run]) -> None:
    facts = run_facts(runs["killed-at-grace"])
    assert facts.failed_by_cause.get("killed-at-grace", 0) > 0
    rec = _topic(facts, "terminationGracePeriodSeconds")
    (change,) = rec.changes
    grace, prestop = facts.settings.grace_s, facts.settings.prestop_s
    assert grace is not None and prestop is not None
    killed_at = max(grace, prestop + MIN_GRACE_AFTER_PRESTOP_S)
    assert change.setting == GRACE_PATH and change.from_value == grace
    # twice the kill (its drain lasted longer, by how much is unknown), at least the default
    assert float(change.to_value or 0) >= max(2 * killed_at, DEFAULT_GRACE_S)
    assert rec.fix_in == "setting" and rec.tune_command is not None


def test_local_policy_drain_gap_asks_the_cluster_for_the_fallback_and_sizes_prestop(
    runs: dict[str, Run],
) -> None:
    facts = run_facts(runs["lb-lag"])  # Local policy, no terminating-endpoint fallback
    assert (
        facts.failed_by_cause.get("lb-lag", 0) > 0 and facts.settings.terminating_fallback is False
    )
    window = facts.settings.lb_unhealthy_after_s
    assert window is not None
    local = _topic(facts, "externalTrafficPolicy: Local")
    assert local.fix_in == "cluster" and local.verdict == "change"
    assert [(c.setting, c.from_value, c.to_value) for c in local.changes] == [
        (FALLBACK_PATH, False, True)
    ]
    prestop = _topic(facts, "preStop")
    # behind the fallback the leaving Pod must accept until the LB has steered away
    (change,) = prestop.changes
    assert change.setting == PRESTOP_PATH and float(change.to_value or 0) >= window
    assert "health-check window" in prestop.reasoning

    fallback_on = dataclasses.replace(
        facts, settings=dataclasses.replace(facts.settings, terminating_fallback=True)
    )
    assert _topic(fallback_on, "externalTrafficPolicy: Local").changes == ()
    # no LB window recorded and no fallback: preStop alone cannot help, so it claims nothing
    blind = dataclasses.replace(
        facts,
        settings=dataclasses.replace(facts.settings, lb_unhealthy_after_s=None),
        lag_after_deletion_ms=None,
        lag_samples=0,
    )
    assert all(c.setting != PRESTOP_PATH for r in recommend(blind) for c in r.changes)


@pytest.mark.parametrize(
    ("recipe", "probe", "fix_in"),
    [
        ("not-ready", None, "probe"),  # no probe: add one (on an endpoint the app provides)
        ("warmup-503", None, "probe"),  # a TCP probe passed while the app answered 503
        ("warmup-503", "http GET /ready", "app"),  # an HTTP probe passed: its endpoint lies
    ],
)
def test_not_ready_points_at_the_probe_or_the_app_and_claims_no_value(
    runs: dict[str, Run], recipe: str, probe: str | None, fix_in: str
) -> None:
    facts = run_facts(runs[recipe])
    if probe is not None:
        facts = dataclasses.replace(
            facts, settings=dataclasses.replace(facts.settings, readiness=probe)
        )
    assert facts.failed_by_cause.get("not-ready", 0) > 0
    rec = _topic(facts, "readiness probe")
    assert rec.verdict == "change" and rec.fix_in == fix_in and rec.changes == ()


def test_propagation_bound_follows_the_slow_node_not_the_gap_between_nodes() -> None:
    fast = [400.0, 420.0, 410.0, 430.0]
    slow = [10_100.0, 10_900.0]
    values = pd.Series(fast + slow)
    nodes = pd.Series(["node-1", "node-1", "node-2", "node-2", "node-3", "node-3"])
    pooled = metrics.upper_prediction_bound(values)
    aware = metrics.node_aware_upper_bound(values, nodes)
    assert aware.get("node") == "node-3" and aware["confidence"] == metrics.BOUND_CONFIDENCE
    assert max(slow) <= (aware["upper_ms"] or 0) < (pooled["upper_ms"] or 0)
    # nodes that do not differ: the pooled bound (at half the error) is the tighter, and stands
    alike = pd.Series([2900.0, 2500.0, 2100.0, 2880.0, 2300.0, 2700.0])
    same = metrics.node_aware_upper_bound(alike, nodes)
    assert "node" not in same
    half = metrics.upper_prediction_bound(alike, 1 - (1 - metrics.BOUND_CONFIDENCE) / 2)
    assert same["upper_ms"] == half["upper_ms"]
    assert math.isclose(same["confidence"], metrics.BOUND_CONFIDENCE)
