"""`--vary PATH=LOW..HIGH`: the grid tune searches (cheapest first), and one clear error for each
range that cannot be searched."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from rolltrace.scenario import Scenario, load_scenario, parse_scenario
from rolltrace.tuning.settings import (
    TUNABLES,
    Candidate,
    TuneError,
    kubernetes_problem,
    overrides,
    parse_vary,
    with_candidate,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
PRESTOP = SCENARIOS / "prestop-too-short.yaml"
CAPACITY = SCENARIOS / "max-unavailable-capacity.yaml"


def _edited(path: Path, **sections: object) -> Scenario:
    """A library scenario with some top-level sections replaced."""
    document = yaml.safe_load(path.read_text())
    document.update(sections)
    return parse_scenario(yaml.safe_dump(document), str(path))


def test_a_seconds_range_is_every_whole_second_cheapest_first() -> None:
    vary = parse_vary("pod.pre_stop.sleep_s=0..10", load_scenario(PRESTOP))
    assert vary.values() == list(range(11))
    assert vary.current == 1
    assert vary.describe(4) == "preStop 4 s"


def test_higher_is_cheaper_for_max_unavailable_so_its_grid_runs_downwards() -> None:
    vary = parse_vary("strategy.max_unavailable=0..2", load_scenario(CAPACITY))
    assert vary.values() == [2, 1, 0]
    assert vary.describe(1) == "maxUnavailable 1 Pod"


def test_a_step_spaces_the_grid_and_fractional_seconds_stay_exact() -> None:
    vary = parse_vary("workload.app.drain_timeout_s=1..3", load_scenario(PRESTOP), step=0.5)
    assert vary.values() == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert overrides({vary.path: vary.values()[1]}) == ["workload.app.drain_timeout_s=1.5"]


def _pods(percent: str, replicas: int, round_up: bool) -> int:
    exact = int(percent.rstrip("%")) * replicas / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@pytest.mark.parametrize(
    ("path", "round_up", "safest"),
    [("strategy.max_surge", True, max), ("strategy.max_unavailable", False, min)],
)
def test_percentages_that_resolve_to_the_same_pods_are_tried_once(
    path: str, round_up: bool, safest: object
) -> None:
    """3 replicas: Kubernetes rounds maxSurge up and maxUnavailable down, so 0–100 % by 5 is
    only four distinct rollouts; each is represented by the member of its class that leaves
    the most headroom (the largest surge, the smallest unavailability)."""
    scenario = load_scenario(CAPACITY)
    values = parse_vary(f"{path}=0%..100%", scenario, step=5).values()
    grid = [f"{p}%" for p in range(0, 101, 5)]
    pods = [_pods(v, 3, round_up) for v in map(str, values)]
    assert len(set(pods)) == len(pods) == len({_pods(g, 3, round_up) for g in grid})
    for value, count in zip(values, pods, strict=True):
        members = [int(g[:-1]) for g in grid if _pods(g, 3, round_up) == count]
        assert value == f"{safest(members)}%"  # type: ignore[operator]
    cheaper = TUNABLES[path].cheaper
    assert pods == sorted(pods, reverse=cheaper == "higher")


def test_a_scenario_without_a_pre_stop_hook_can_tune_its_sleep() -> None:
    scenario = _edited(PRESTOP, pod={"readiness_probe": {"period_s": 1}})
    vary = parse_vary("pod.pre_stop.sleep_s=0..4", scenario)
    assert vary.current is None
    tuned = with_candidate(scenario, {vary.path: 3})
    assert tuned.pod.pre_stop is not None and tuned.pod.pre_stop.sleep_s == 3


def test_overrides_load_back_into_the_scenario_file() -> None:
    candidate: Candidate = {"pod.pre_stop.sleep_s": 4, "strategy.max_surge": "25%"}
    scenario = load_scenario(PRESTOP, overrides(candidate))
    assert scenario.pod.pre_stop is not None and scenario.pod.pre_stop.sleep_s == 4
    assert scenario.strategy.max_surge == "25%"
    assert scenario == with_candidate(load_scenario(PRESTOP), candidate)


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.yaml")))
def test_applying_no_change_gives_the_same_scenario(name: str) -> None:
    """with_candidate re-validates the scenario from its own fields: nothing may drift."""
    scenario = load_scenario(SCENARIOS / name)
    assert with_candidate(scenario, {}) == scenario


@pytest.mark.parametrize(
    ("text", "step", "message"),
    [
        ("pod.pre_stop.sleep_s", None, "expected PATH=LOW..HIGH"),
        ("pod.pre_stop.sleep_s=3", None, "expected PATH=LOW..HIGH"),
        ("pod.readiness_probe.path=0..3", None, "cannot be tuned; supported: pod.pre_stop"),
        ("load.rate=10..100", None, "load.rate cannot be tuned"),
        ("pod.pre_stop.sleep_s=a..3", None, "'a' is not a number"),
        ("pod.pre_stop.sleep_s=5..2", None, "LOW must be below HIGH"),
        ("pod.pre_stop.sleep_s=3..3", None, "LOW must be below HIGH"),
        ("pod.pre_stop.sleep_s=-1..4", None, "must be a number ≥ 0"),
        ("pod.pre_stop.sleep_s=0.5..4", None, "takes whole numbers"),
        ("pod.pre_stop.sleep_s=0%..10%", None, "takes no percentage"),
        ("strategy.max_surge=0..50%", None, "both ends as counts or both as percentages"),
        ("strategy.max_unavailable=0%..150%", None, "cannot exceed 100%"),
        ("pod.pre_stop.sleep_s=0..10", 3, "--step 3 does not fit 0..10"),
        ("pod.pre_stop.sleep_s=0..10", 0, "--step must be > 0"),
        ("pod.pre_stop.sleep_s=0..10", 0.5, "--step must be whole"),
        ("pod.pre_stop.sleep_s=0..2", 4, "does not fit"),
        ("pod.readiness_probe.period_s=0..3", None, "greater than or equal to 1"),
    ],
)
def test_a_range_that_cannot_be_searched_says_why(
    text: str, step: float | None, message: str
) -> None:
    with pytest.raises(TuneError, match=r"^--vary ") as raised:
        parse_vary(text, load_scenario(PRESTOP), step)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("sections", "text", "message"),
    [
        ({"pod": {"pre_stop": {"exec": ["sleep", "2"]}}}, "pod.pre_stop.sleep_s=0..4",
         "pod.pre_stop.sleep_s is not a number in this scenario"),
        ({"pod": {"readiness_probe": None}}, "pod.readiness_probe.period_s=1..3",
         "pod.readiness_probe is not set in this scenario: nothing to tune"),
        ({"strategy": {"type": "Recreate"}}, "strategy.max_surge=0..2",
         "strategy.type is Recreate, which has no maxSurge"),
        ({"manifests": ["deploy.yaml"]}, "pod.pre_stop.sleep_s=0..4",
         "reads its workload from manifests"),
    ],
)  # fmt: skip
def test_a_setting_the_scenario_does_not_hold_as_a_number_is_refused(
    sections: dict[str, object], text: str, message: str
) -> None:
    with pytest.raises(TuneError, match=message):
        parse_vary(text, _edited(PRESTOP, **sections))


def test_every_supported_path_is_a_number_of_the_default_scenario() -> None:
    """The table of tunables and the scenario model agree (a renamed field breaks this)."""
    scenario = _edited(PRESTOP)
    for path, tunable in TUNABLES.items():
        high = "50%" if tunable.percent_ok else "3"
        low = "0%" if tunable.percent_ok else "1"
        assert parse_vary(f"{path}={low}..{high}", scenario).path == path


def test_kubernetes_rejects_max_surge_and_max_unavailable_both_zero() -> None:
    scenario = load_scenario(PRESTOP)  # maxSurge 1, maxUnavailable 0
    assert kubernetes_problem(scenario, {"strategy.max_surge": 0}) is not None
    assert kubernetes_problem(scenario, {"strategy.max_surge": "0%"}) is not None
    assert kubernetes_problem(scenario, {"strategy.max_surge": "10%"}) is None
    assert kubernetes_problem(scenario, {"pod.pre_stop.sleep_s": 0}) is None
