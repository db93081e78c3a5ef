"""What ``rolltrace tune --vary PATH=LOW..HIGH`` may vary, and the grid of values it tries.

Each tunable setting has a cost direction: the search looks for the *cheapest* safe value, and
assumes safety is monotone, i.e. that a value more expensive than a safe one is safe too. The
grid is ordered cheapest first. Every value is checked against the scenario model (the same
validation ``--set`` gets), so a range the scenario cannot hold is refused before any run.

Percentages of ``strategy.max_surge`` / ``max_unavailable`` are resolved to Pods the way the
Deployment controller does (surge rounds up, unavailable rounds down): values that resolve to
the same number of Pods behave the same, so only one of each is tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import yaml

from localcluster.controllers.rollout import scaled_value
from rolltrace.scenario import Scenario, ScenarioError, parse_scenario

Value = int | float | str
Candidate = dict[str, Value]  # setting path -> value


class TuneError(ValueError):
    """A ``--vary`` (or a tune as a whole) cannot be searched; one line says why."""


@dataclass(frozen=True)
class Tunable:
    """A setting tune can vary. ``cheaper`` is the direction that costs less (the search
    returns the cheapest safe value); ``why`` says what the cost is."""

    path: str
    unit: str  # "s", "Pods", "" (a count of probes)
    cheaper: Literal["lower", "higher"]
    integer: bool
    percent_ok: bool
    label: str  # a short name for progress lines and figures
    why: str
    # The section holding the field may be absent (null) in a scenario and then means the same
    # as the value 0: no preStop hook sleeps 0 s.
    absent_is_zero: bool = False
    # How the Deployment controller resolves a percentage to Pods (percent_ok settings only).
    round_up: bool = False
    percent_max: int | None = None


_PROBE = "pod.readiness_probe"
TUNABLES: dict[str, Tunable] = {
    t.path: t
    for t in (
        Tunable("pod.pre_stop.sleep_s", "s", "lower", True, False, "preStop",
                "every old Pod waits this long before SIGTERM: rollout time",
                absent_is_zero=True),
        Tunable("pod.termination_grace_period_s", "s", "lower", True, False, "grace period",
                "a Pod that hangs on shutdown holds its resources this long: rollout time"),
        Tunable("workload.app.drain_timeout_s", "s", "lower", False, False, "drain timeout",
                "a drain waiting for slow requests keeps the old Pod alive: rollout time"),
        Tunable("strategy.max_surge", "Pods", "lower", True, True, "maxSurge",
                "Pods above replicas need spare capacity in the cluster",
                round_up=True),
        Tunable("strategy.max_unavailable", "Pods", "higher", True, True, "maxUnavailable",
                "more Pods replaced at once finish the rollout sooner",
                round_up=False, percent_max=100),
        Tunable(f"{_PROBE}.initial_delay_s", "s", "lower", True, False, "readiness delay",
                "every new Pod waits this long before its first probe: rollout time"),
        Tunable(f"{_PROBE}.period_s", "s", "higher", True, False, "readiness period",
                "fewer probe requests per Pod; a shorter period notices a Pod that cannot "
                "serve sooner, so the safe side is the lower one"),
        Tunable(f"{_PROBE}.timeout_s", "s", "lower", True, False, "readiness timeout",
                "a hung Pod is noticed sooner; a longer timeout only spares slow answers"),
        Tunable(f"{_PROBE}.success_threshold", "probes", "lower", True, False,
                "readiness successes",
                "each extra pass needed delays every new Pod by one period: rollout time"),
        Tunable(f"{_PROBE}.failure_threshold", "probes", "higher", True, False,
                "readiness failures",
                "a higher threshold rides out a single slow probe instead of dropping the Pod "
                "from the endpoints; a lower one removes a Pod that cannot serve sooner, so "
                "the safe side is the lower one"),
    )
}  # fmt: skip


def supported_paths() -> str:
    return ", ".join(TUNABLES)


@dataclass(frozen=True)
class Vary:
    """One ``--vary``: a setting and its grid, parsed against (and checked on) a scenario."""

    path: str
    low: float
    high: float
    step: float
    percent: bool
    tunable: Tunable
    scenario: Scenario = field(compare=False, repr=False)  # what the range was checked on
    current: Value | None = None  # the scenario's own value (None: the section is absent)

    def values(self) -> list[Value]:
        """The grid low..high by step, cheapest first; percentages that resolve to the same
        number of Pods collapse to the one on the safe (expensive) side of its class, which
        keeps the most Pods of headroom if the Deployment is later scaled."""
        count = round((self.high - self.low) / self.step)
        grid = [self._typed(self.low + i * self.step) for i in range(count + 1)]
        if self.percent:
            grid = self._distinct_pods(grid, self.scenario.workload.replicas)
        return grid if self.tunable.cheaper == "lower" else grid[::-1]

    def _typed(self, raw: float) -> Value:
        if self.percent:
            return f"{round(raw)}%"
        return round(raw) if self.tunable.integer else round(raw, 6)

    def _distinct_pods(self, grid: list[Value], replicas: int) -> list[Value]:
        """One value per resolved Pod count (ascending grid in, ascending out)."""
        by_pods: dict[int, Value] = {}
        keep_first = self.tunable.cheaper == "higher"  # then the lowest of a class is safest
        for value in grid:
            pods = scaled_value(str(value), replicas, round_up=self.tunable.round_up)
            if not (keep_first and pods in by_pods):
                by_pods[pods] = value
        return list(by_pods.values())

    def describe(self, value: Value) -> str:
        """``preStop 4 s`` / ``maxSurge 25%`` / ``maxSurge 1 Pod``."""
        unit = "" if self.percent else self.tunable.unit
        if unit != "s" and value == 1:
            unit = unit.removesuffix("s")  # 1 Pod, 1 probe
        return f"{self.tunable.label} {format_value(value)}{' ' if unit else ''}{unit}"


def format_value(value: Value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def overrides(candidate: Candidate) -> list[str]:
    """``--set`` assignments for ``load_scenario(path, overrides)``."""
    return [f"{path}={format_value(value)}" for path, value in candidate.items()]


def with_candidate(scenario: Scenario, candidate: Candidate) -> Scenario:
    """The scenario with the candidate applied, validated exactly like ``--set`` (only the
    fields the scenario set are carried over, so defaults and ``rollout.app`` keep their
    meaning). A value the model rejects is a TuneError naming it."""
    document = scenario.model_dump(mode="json", exclude_unset=True)
    text = yaml.safe_dump(document, sort_keys=False)
    try:
        return parse_scenario(text, f"scenario {scenario.name}", overrides(candidate))
    except ScenarioError as exc:
        first = str(exc).splitlines()[0]
        raise TuneError(f"{', '.join(overrides(candidate))}: {first}") from None


def kubernetes_problem(scenario: Scenario, candidate: Candidate) -> str | None:
    """Why Kubernetes would reject the Deployment with this candidate, or None. The API server
    refuses maxSurge and maxUnavailable both 0 (apps validation, ValidateRollingUpdateDeployment
    in kubernetes/kubernetes pkg/apis/apps/validation/validation.go)."""
    surge = candidate.get("strategy.max_surge", scenario.strategy.max_surge)
    unavailable = candidate.get("strategy.max_unavailable", scenario.strategy.max_unavailable)
    if _literal_zero(surge) and _literal_zero(unavailable):
        return "maxSurge and maxUnavailable both 0 (Kubernetes rejects it: no Pod could move)"
    return None


def _literal_zero(value: Value) -> bool:
    return str(value).rstrip("%") in {"0", "0.0"}


def parse_vary(text: str, scenario: Scenario, step: float | None = None) -> Vary:
    """``PATH=LOW..HIGH`` (counts, seconds, or ``NN%..MM%``) checked against the scenario;
    ``step`` defaults to 1 (second, Pod, probe or percentage point)."""
    where = f"--vary {text}"
    path, sep, span = text.partition("=")
    low_text, dots, high_text = span.partition("..")
    if not sep or not dots or not path:
        raise TuneError(f"{where}: expected PATH=LOW..HIGH, e.g. pod.pre_stop.sleep_s=0..10")
    tunable = TUNABLES.get(path.strip())
    if tunable is None:
        raise TuneError(f"{where}: {path} cannot be tuned; supported: {supported_paths()}")
    percent = _percent_range(where, tunable, low_text.strip(), high_text.strip())
    low, high = (_bound(where, tunable, t.strip().rstrip("%")) for t in (low_text, high_text))
    if low >= high:
        raise TuneError(f"{where}: LOW must be below HIGH to have something to search")
    if percent and tunable.percent_max is not None and high > tunable.percent_max:
        raise TuneError(f"{where}: {tunable.label} cannot exceed {tunable.percent_max}%")
    vary = Vary(path=tunable.path, low=low, high=high, step=_step(where, tunable, low, high, step),
                percent=percent, tunable=tunable, scenario=scenario,
                current=_current(where, scenario, tunable))  # fmt: skip
    for value in (vary.values()[0], vary.values()[-1]):
        try:
            with_candidate(scenario, {vary.path: value})
        except TuneError as exc:
            raise TuneError(f"{where}: {exc}") from None
    return vary


def _percent_range(where: str, tunable: Tunable, low: str, high: str) -> bool:
    percents = {low.endswith("%"), high.endswith("%")}
    if len(percents) > 1:
        raise TuneError(f"{where}: give both ends as counts or both as percentages (NN%)")
    percent = percents.pop()
    if percent and not tunable.percent_ok:
        raise TuneError(f"{where}: {tunable.path} takes no percentage")
    return percent


def _bound(where: str, tunable: Tunable, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TuneError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TuneError(f"{where}: {text!r} must be a number ≥ 0")
    if tunable.integer and not value.is_integer():
        raise TuneError(f"{where}: {tunable.path} takes whole numbers, not {text}")
    return value


def _step(where: str, tunable: Tunable, low: float, high: float, step: float | None) -> float:
    """The grid step; it must be positive, whole for whole-number settings, and land on HIGH
    (the search checks the expensive end first, so both ends must be on the grid)."""
    step = 1.0 if step is None else float(step)
    if not math.isfinite(step) or step <= 0:
        raise TuneError(f"{where}: --step must be > 0, not {step:g}")
    if tunable.integer and not step.is_integer():
        raise TuneError(f"{where}: --step must be whole for {tunable.path}, not {step:g}")
    count = (high - low) / step
    if abs(count - round(count)) > 1e-9 or round(count) < 1:
        raise TuneError(
            f"{where}: --step {step:g} does not fit {low:g}..{high:g}; use a step that "
            f"divides {high - low:g}"
        )
    return step


def _current(where: str, scenario: Scenario, tunable: Tunable) -> Value | None:
    """The scenario's own value of the setting: a number, or None where an absent section is
    allowed (no preStop hook)."""
    _refuse_unsearchable(where, scenario, tunable)
    node: object = scenario
    *sections, leaf = tunable.path.split(".")
    for name in sections:
        node = getattr(node, name)
        if node is None and tunable.absent_is_zero:
            return None
        if node is None:
            section = ".".join(sections)
            raise TuneError(f"{where}: {section} is not set in this scenario: nothing to tune")
    value = getattr(node, leaf)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TuneError(f"{where}: {tunable.path} is not a number in this scenario ({value!r})")
    if isinstance(value, str) and not tunable.percent_ok:
        raise TuneError(f"{where}: {tunable.path} is not a number in this scenario ({value!r})")
    return value


def _refuse_unsearchable(where: str, scenario: Scenario, tunable: Tunable) -> None:
    """A scenario whose workload comes from the user's manifests ignores its own sections, and
    a Recreate Deployment has no maxSurge/maxUnavailable: varying them would change nothing."""
    if scenario.manifests.files:
        raise TuneError(
            f"{where}: the scenario reads its workload from manifests "
            f"({', '.join(scenario.manifests.files)}); tune varies the scenario's own "
            "pod/strategy/workload sections"
        )
    if tunable.path.startswith("strategy.") and scenario.strategy.type != "RollingUpdate":
        raise TuneError(
            f"{where}: strategy.type is {scenario.strategy.type}, which has no {tunable.label}"
        )
