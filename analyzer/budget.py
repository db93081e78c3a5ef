"""Disruption budgets: ``--fail-on`` expressions evaluated against a run's summary.

CI gates a rollout on expressions such as ``failed>0``, ``rate>0.001``, ``cause:endpoint-lag>0`` or
``disruption:new>2``. The grammar is tiny on purpose (``METRIC OP NUMBER``) and parsed by hand,
never ``eval``-ed: the expression comes from a command line or a CI file, and a typo must name
the unknown metric instead of silently passing the gate.

``rate`` is a fraction (0.05 = 5 %), while the terminal shows it as a percentage; so ``rate>5%``
is accepted as well, and ``rate>5`` (which can never be exceeded) carries a warning.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from analyzer.errors import BudgetExpressionError
from analyzer.schema import Cause

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}

_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[a-z][a-z0-9_\-]*(?::[a-z][a-z0-9_\-]*)?)\s*"
    r"(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(?P<percent>%?)\s*$"
)

# plain metric name -> how to read it from summary.json
_PLAIN_METRICS: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "failed": lambda s: float(s["requests_failed"]),
    "total": lambda s: float(s["requests_total"]),
    "rate": lambda s: float(s["failure_rate"]),
    "windows": lambda s: float(len(s["windows"])),
}
_DISRUPTION_KINDS = ("new", "reused")
_FRACTIONS = frozenset({"rate"})  # metrics in [0, 1]: the only ones a percentage applies to


@dataclass(frozen=True)
class Budget:
    """One parsed ``--fail-on`` expression: the budget is exceeded when it evaluates true."""

    text: str
    metric: str
    op: str
    threshold: float

    @property
    def warning(self) -> str | None:
        """Why this budget probably does not say what its author meant, if it does not."""
        if self.metric in _FRACTIONS and self.threshold > 1:
            percent = f"{self.threshold:g}%"
            return (
                f"budget {self.text!r} compares {self.metric}, a fraction from 0 to 1, with "
                f"{self.threshold:g}; did you mean '{self.metric}{self.op}{percent}' "
                f"(= {self.threshold / 100:g})?"
            )
        return None

    def value(self, summary: Mapping[str, Any]) -> float:
        family, _, name = self.metric.partition(":")
        if family == "cause":
            return float(summary["failed_by_cause"].get(name, 0))
        if family == "disruption":
            return float(summary["disruption_seconds"][name])
        return _PLAIN_METRICS[family](summary)

    def exceeded(self, summary: Mapping[str, Any]) -> bool:
        return _OPERATORS[self.op](self.value(summary), self.threshold)


def _known_metrics() -> str:
    causes = ", ".join(f"cause:{c.value}" for c in Cause)
    kinds = ", ".join(f"disruption:{k}" for k in _DISRUPTION_KINDS)
    return f"{', '.join(_PLAIN_METRICS)}, {kinds}, {causes}"


def parse_budget(text: str) -> Budget:
    """Parse ``METRIC OP NUMBER``; unknown metrics and causes are errors that list what exists."""
    match = _EXPRESSION.match(text.lower())
    if match is None:
        raise BudgetExpressionError(
            f"cannot parse budget {text!r}: expected METRIC OP NUMBER, e.g. 'failed>0', "
            f"'rate>0.001', 'cause:endpoint-lag>0', 'disruption:new>2'"
        )
    metric = match["metric"]
    family, _, name = metric.partition(":")
    if family == "cause":
        if name not in {c.value for c in Cause}:
            raise BudgetExpressionError(
                f"unknown cause {name!r} in budget {text!r}; causes: "
                + ", ".join(c.value for c in Cause)
            )
    elif family == "disruption":
        if name not in _DISRUPTION_KINDS:
            raise BudgetExpressionError(
                f"unknown disruption kind {name!r} in budget {text!r}; kinds: "
                + ", ".join(_DISRUPTION_KINDS)
            )
    elif name or family not in _PLAIN_METRICS:
        raise BudgetExpressionError(
            f"unknown metric {metric!r} in budget {text!r}; metrics: {_known_metrics()}"
        )
    threshold = float(match["value"])
    if match["percent"]:
        if metric not in _FRACTIONS:
            raise BudgetExpressionError(
                f"budget {text!r}: only {', '.join(sorted(_FRACTIONS))} takes a percentage"
            )
        threshold /= 100
    return Budget(text=text.strip(), metric=metric, op=match["op"], threshold=threshold)


def exceeded_budgets(budgets: list[Budget], summary: Mapping[str, Any]) -> list[Budget]:
    return [b for b in budgets if b.exceeded(summary)]
