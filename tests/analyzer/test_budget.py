"""--fail-on budgets: parsed without eval, unknown names rejected with the list of known ones."""

from __future__ import annotations

from typing import Any

import pytest

from analyzer.budget import exceeded_budgets, parse_budget
from analyzer.errors import BudgetExpressionError
from analyzer.schema import Cause

SUMMARY: dict[str, Any] = {
    "requests_total": 1000,
    "requests_failed": 3,
    "failure_rate": 0.003,
    "failed_by_cause": {c.value: 0 for c in Cause} | {"endpoint-lag": 2, "keepalive-race": 1},
    "windows": [{"failed": 3}],
    "disruption_seconds": {"new": 2, "reused": 1},
}


@pytest.mark.parametrize(
    ("text", "exceeded"),
    [
        ("failed>0", True),
        ("failed > 3", False),
        ("failed>=3", True),
        ("rate>0.001", True),
        ("rate>0.01", False),
        ("total<1000", False),
        ("cause:endpoint-lag>0", True),
        ("cause:not-ready>0", False),
        ("CAUSE:Keepalive-Race==1", True),
        ("disruption:new>1", True),
        ("disruption:reused>1", False),
        ("windows!=1", False),
        ("rate>1e-4", True),
    ],
)
def test_budget_evaluates_against_summary(text: str, exceeded: bool) -> None:
    assert parse_budget(text).exceeded(SUMMARY) is exceeded


def test_exceeded_budgets_lists_only_the_broken_ones() -> None:
    budgets = [parse_budget(t) for t in ("failed>0", "rate>0.5", "cause:endpoint-lag>1")]
    assert [b.text for b in exceeded_budgets(budgets, SUMMARY)] == [
        "failed>0",
        "cause:endpoint-lag>1",
    ]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("cause:nonsense>0", "unknown cause 'nonsense'"),
        ("latency>3", "unknown metric 'latency'"),
        ("disruption:all>1", "unknown disruption kind 'all'"),
        ("failed>", "cannot parse"),
        ("__import__('os')>0", "cannot parse"),
        ("failed>0; rm -rf /", "cannot parse"),
    ],
)
def test_bad_budget_is_a_clear_error(text: str, names: str) -> None:
    with pytest.raises(BudgetExpressionError, match=names.replace("(", r"\(")):
        parse_budget(text)


def test_unknown_cause_error_lists_the_known_causes() -> None:
    with pytest.raises(BudgetExpressionError) as info:
        parse_budget("cause:lag>0")
    assert all(c.value in str(info.value) for c in Cause)


@pytest.mark.parametrize(
    ("text", "exceeded"),
    [("rate>0.2%", True), ("rate>0.3%", False), ("rate >= 0.3 %", True), ("rate<5%", True)],
)
def test_rate_takes_a_percentage(text: str, exceeded: bool) -> None:
    budget = parse_budget(text)
    assert budget.exceeded(SUMMARY) is exceeded
    assert budget.warning is None


def test_a_fraction_budget_above_one_warns_and_names_the_percentage() -> None:
    budget = parse_budget("rate>5")
    assert budget.warning is not None
    assert "'rate>5%'" in budget.warning and "0.05" in budget.warning
    assert parse_budget("failed>5").warning is None  # counts are not fractions


def test_only_fractions_take_a_percentage() -> None:
    with pytest.raises(BudgetExpressionError, match="only rate takes a percentage"):
        parse_budget("failed>5%")
