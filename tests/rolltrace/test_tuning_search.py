"""The search of `rolltrace tune`, driven by a fake evaluator: a deterministic function of the
candidate stands in for running the scenario, so every path of the search is checked without a
cluster."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from rolltrace.scenario import load_scenario
from rolltrace.tuning.bounds import binomial_cdf, upper_95
from rolltrace.tuning.search import (
    MAX_PAIRS,
    Phase,
    TrialRun,
    TuneResult,
    to_json,
    tune,
)
from rolltrace.tuning.settings import Candidate, TuneError, Vary, parse_vary

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
PRESTOP = SCENARIOS / "prestop-too-short.yaml"
CAPACITY = SCENARIOS / "max-unavailable-capacity.yaml"
SLEEP = "pod.pre_stop.sleep_s"
SURGE, UNAVAILABLE = "strategy.max_surge", "strategy.max_unavailable"
REQUESTS = 600  # per run


class FakeCluster:
    """Runs nothing: ``failures(candidate)`` says how many requests of each run fail (and of
    which cause), ``rollout(candidate)`` how long the rollout took; every call is recorded."""

    def __init__(
        self,
        failures: Callable[[Candidate], int],
        rollout: Callable[[Candidate], float | None] = lambda c: 20.0,
        repetitions: int = 2,
        status: Callable[[Candidate], str] = lambda c: "complete",
        cause: str = "endpoint-lag",
    ) -> None:
        self.failures, self.rollout, self.status = failures, rollout, status
        self.repetitions, self.cause = repetitions, cause
        self.calls: list[tuple[Candidate, Phase]] = []

    def __call__(self, candidate: Candidate, phase: Phase) -> list[TrialRun]:
        self.calls.append((dict(candidate), phase))
        failed = self.failures(candidate)
        return [
            TrialRun(
                run_dir=f"runs/tune/{len(self.calls)}-{phase}-r{i}",
                requests=REQUESTS,
                failed=failed,
                causes={self.cause: failed} if failed else {},
                rollout_s=self.rollout(candidate),
                status=self.status(candidate),
            )
            for i in range(self.repetitions)
        ]

    def searched(self) -> list[Candidate]:
        return [c for c, phase in self.calls if phase == "search"]


def _sleep_vary(text: str = f"{SLEEP}=0..10") -> Vary:
    return parse_vary(text, load_scenario(PRESTOP))


def _run(varies: list[Vary], cluster: FakeCluster) -> tuple[TuneResult, list[str]]:
    lines: list[str] = []
    return tune(varies, cluster, lines.append, repetitions=cluster.repetitions), lines


def _needs(seconds: float) -> Callable[[Candidate], int]:
    """Endpoint lag: a preStop shorter than the propagation drops new connections."""
    return lambda c: 0 if float(c[SLEEP]) >= seconds else 25


@pytest.mark.parametrize("needed", [0.5, 1.5, 3.5, 6.5, 9.5])
def test_bisection_finds_the_smallest_safe_value_in_about_log2_of_the_grid(needed: float) -> None:
    cluster = FakeCluster(_needs(needed))
    result, _ = _run([_sleep_vary()], cluster)
    assert result.recommended == {SLEEP: math.ceil(needed)}
    # Both ends, then a bisection of the 11-value grid, then one verification.
    assert len(cluster.searched()) <= 2 + math.ceil(math.log2(11 - 1))
    assert cluster.calls[-1] == ({SLEEP: math.ceil(needed)}, "verify")
    assert [phase for _, phase in cluster.calls].count("verify") == 1
    assert result.verified is not None and result.verified.failed == 0


def test_the_expensive_end_is_tried_first_and_its_failure_ends_the_search() -> None:
    cluster = FakeCluster(_needs(12))
    result, lines = _run([_sleep_vary()], cluster)
    assert cluster.calls == [({SLEEP: 10}, "search")]
    assert result.recommended is None and result.verified is None
    assert "no safe value" in result.message and "wider range" in result.message
    assert lines[-1] == result.message


def test_a_safe_cheapest_end_is_the_answer_after_two_trials() -> None:
    cluster = FakeCluster(lambda c: 0)
    result, _ = _run([_sleep_vary(f"{SLEEP}=2..10")], cluster)
    assert cluster.searched() == [{SLEEP: 10}, {SLEEP: 2}]
    assert result.recommended == {SLEEP: 2}


def test_higher_max_unavailable_is_cheaper_so_the_highest_safe_value_wins() -> None:
    scenario = load_scenario(CAPACITY).model_copy(update={"workload": load_scenario(
        CAPACITY).workload.model_copy(update={"replicas": 10})})  # fmt: skip
    vary = parse_vary(f"{UNAVAILABLE}=1..8", scenario)
    cluster = FakeCluster(lambda c: 0 if int(c[UNAVAILABLE]) <= 5 else 40)
    result, _ = _run([vary], cluster)
    assert cluster.searched()[0] == {UNAVAILABLE: 1}  # the expensive end: fewest unavailable
    assert result.recommended == {UNAVAILABLE: 5}


def test_a_value_kubernetes_refuses_is_skipped_in_a_bisection() -> None:
    """prestop-too-short has maxUnavailable 0, so maxSurge 0 cannot be applied."""
    cluster = FakeCluster(lambda c: 0)
    result, lines = _run([parse_vary(f"{SURGE}=0..2", load_scenario(PRESTOP))], cluster)
    assert cluster.searched() == [{SURGE: 2}, {SURGE: 1}]
    assert result.recommended == {SURGE: 1}
    assert [t.candidate for t in result.trials if t.skipped] == [{SURGE: 0}]
    assert lines[0].startswith("skipped: maxSurge 0 Pods: maxSurge and maxUnavailable both 0")


def test_progress_names_each_trial_before_it_runs_and_its_outcome_after() -> None:
    result, lines = _run([_sleep_vary()], FakeCluster(_needs(3.5)))
    assert lines[0] == "trial 1: preStop 10 s (2 runs)"
    assert lines[1] == f"  → 0 failed of {2 * REQUESTS:,}; safe"
    assert lines[3] == f"  → 50 failed of {2 * REQUESTS:,} (endpoint-lag 50); unsafe"
    assert "verify: preStop 4 s (2 runs)" in lines
    assert any(line.startswith("  → 0 failed of 1,200 requests in 2 rollouts") for line in lines)
    assert lines[-1] == result.message == "recommended: preStop 4 s, the cheapest safe value"


def test_a_run_that_did_not_complete_is_no_evidence_of_safety() -> None:
    """0 failures but the rollout never completed (e.g. the deadline passed): unsafe."""
    cluster = FakeCluster(
        lambda c: 0, status=lambda c: "failed" if int(c[SLEEP]) < 5 else "complete"
    )
    result, lines = _run([_sleep_vary()], cluster)
    assert result.recommended == {SLEEP: 5}
    incomplete = [t for t in result.trials if t.incomplete]
    assert incomplete and not any(t.safe for t in incomplete)
    assert any("did not complete (failed): no evidence of safety" in line for line in lines)


def test_a_verification_that_fails_moves_the_recommendation_to_the_next_safe_value() -> None:
    """Failures rarer than the search's runs could show: only the new runs see them, and then
    the value is unsafe after all; the next value the search holds safe is verified instead."""
    cluster = FakeCluster(_needs(3.5))
    verifying = FakeCluster(_needs(5.5))  # the verification sees what the search missed

    def evaluate(candidate: Candidate, phase: Phase) -> list[TrialRun]:
        return (cluster if phase == "search" else verifying)(candidate, phase)

    result = tune([_sleep_vary()], evaluate, print)
    verified = [c[SLEEP] for c, _ in verifying.calls]
    assert verified == [4, 5, 6]  # cheapest safe first, then each more expensive value
    assert result.recommended == {SLEEP: 6} and result.verified is not None
    assert result.verified.safe
    assert [c for c, _ in result.failed_verifications] == [{SLEEP: 4}, {SLEEP: 5}]
    assert "held its verification" in result.message and "preStop 4 s" in result.message
    document = to_json(result)
    assert document["recommended"] == 6
    assert [f["value"] for f in document["failed_verifications"]] == [4, 5]


def test_no_recommendation_when_every_verification_fails() -> None:
    cluster = FakeCluster(_needs(3.5))
    verifying = FakeCluster(lambda c: 3)

    def evaluate(candidate: Candidate, phase: Phase) -> list[TrialRun]:
        return (cluster if phase == "search" else verifying)(candidate, phase)

    result = tune([_sleep_vary()], evaluate, print)
    assert result.recommended is None and result.verified is not None
    assert result.verified.failed == 6 and result.verified.failing_rollouts == 2
    assert len(result.failed_verifications) == len(verifying.calls) == 7  # 4..10 s
    assert "every candidate failed its verification" in result.message


def _pair(surge: str, unavailable: str, scenario_path: Path = CAPACITY) -> list[Vary]:
    scenario = load_scenario(scenario_path)
    return [
        parse_vary(f"{SURGE}={surge}", scenario),
        parse_vary(f"{UNAVAILABLE}={unavailable}", scenario),
    ]


def _overload(candidate: Candidate) -> int:
    """Too few Pods serve when more are unavailable than surged (a capacity model)."""
    return 30 if int(candidate[UNAVAILABLE]) > int(candidate[SURGE]) else 0


def _rollout(candidate: Candidate) -> float:
    """More Pods moved at once finish sooner."""
    return 30.0 / (int(candidate[SURGE]) + int(candidate[UNAVAILABLE]))


def test_a_pair_grid_picks_the_safe_pair_with_the_shortest_rollout() -> None:
    cluster = FakeCluster(_overload, _rollout, cause="overload")
    result, _ = _run(_pair("0..2", "0..2"), cluster)
    assert result.recommended == {SURGE: 2, UNAVAILABLE: 2}
    assert cluster.calls[-1] == ({SURGE: 2, UNAVAILABLE: 2}, "verify")
    safe = [t for t in result.trials if t.safe]
    assert min(t.rollout_s or math.inf for t in safe) == 30.0 / 4


def test_a_pair_that_fails_its_verification_gives_way_to_the_next_fastest_safe_pair() -> None:
    search = FakeCluster(_overload, _rollout, cause="overload")
    best = {SURGE: 2, UNAVAILABLE: 2}  # what the search picks (see the test above)
    verifying = FakeCluster(lambda c: 5 if c == best else 0, _rollout, cause="overload")

    def evaluate(candidate: Candidate, phase: Phase) -> list[TrialRun]:
        return (search if phase == "search" else verifying)(candidate, phase)

    result = tune(_pair("0..2", "0..2"), evaluate, print)
    safe = [t for t in result.trials if t.safe and t.candidate != best]
    runner_up = min(safe, key=lambda t: t.rollout_s or math.inf).candidate
    assert [c for c, _ in verifying.calls] == [best, runner_up]
    assert result.recommended == runner_up
    assert [c for c, _ in result.failed_verifications] == [best]


def test_kubernetes_invalid_pairs_are_skipped_never_run() -> None:
    cluster = FakeCluster(_overload, _rollout, cause="overload")
    result, lines = _run(_pair("0..2", "0..2"), cluster)
    assert {SURGE: 0, UNAVAILABLE: 0} not in [c for c, _ in cluster.calls]
    skipped = [t for t in result.trials if t.candidate == {SURGE: 0, UNAVAILABLE: 0}]
    assert len(skipped) == 1 and "Kubernetes rejects" in skipped[0].skipped
    assert any(line.startswith("skipped: maxSurge 0 Pods, maxUnavailable 0 Pods") for line in lines)


def test_pairs_cheaper_in_both_than_an_unsafe_pair_are_pruned_not_run() -> None:
    cluster = FakeCluster(_overload, _rollout, cause="overload")
    result, _ = _run(_pair("0..2", "0..2"), cluster)
    pruned = [t.candidate for t in result.trials if t.skipped.startswith("pruned")]
    assert pruned == [{SURGE: 0, UNAVAILABLE: 2}]  # cheaper than the unsafe (1, 2)
    assert all(c not in pruned for c, _ in cluster.calls)
    assert len(cluster.searched()) == 9 - 1 - len(pruned)


def test_equal_rollouts_go_to_the_cheaper_pair() -> None:
    cluster = FakeCluster(lambda c: 0, lambda c: 10.0, cause="overload")
    result, _ = _run(_pair("1..2", "0..1"), cluster)
    assert result.recommended == {SURGE: 1, UNAVAILABLE: 1}  # lower surge, higher unavailable


def test_percent_pairs_run_and_report_percentages() -> None:
    cluster = FakeCluster(lambda c: 0, lambda c: 10.0 if c[SURGE] == "30%" else 12.0)
    result, _ = _run(_pair("0%..30%", "0%..30%"), cluster)
    # 3 replicas: 5–30 % surge all resolve to 1 Pod and 0–30 % unavailable to 0 Pods.
    assert {c[SURGE] for c in cluster.searched()} == {"30%"}
    assert result.recommended == {SURGE: "30%", UNAVAILABLE: "0%"}


def test_no_safe_pair_is_a_message_not_a_recommendation() -> None:
    cluster = FakeCluster(lambda c: 5, cause="overload")
    result, _ = _run(_pair("0..1", "0..1"), cluster)
    assert result.recommended is None and "no safe pair" in result.message
    assert not [c for c, phase in cluster.calls if phase == "verify"]


def test_more_than_two_settings_or_a_repeated_one_cannot_be_tuned() -> None:
    vary = _sleep_vary()
    with pytest.raises(TuneError, match="one or two settings"):
        tune([vary] * 3, FakeCluster(lambda c: 0), print)
    with pytest.raises(TuneError, match="given twice"):
        tune([vary, vary], FakeCluster(lambda c: 0), print)


def test_a_grid_too_large_to_run_is_refused_before_any_run() -> None:
    cluster = FakeCluster(lambda c: 0)
    scenario = load_scenario(PRESTOP)
    varies = [parse_vary(f"{SLEEP}=0..10", scenario),
              parse_vary("pod.termination_grace_period_s=10..30", scenario)]  # fmt: skip
    assert MAX_PAIRS < 11 * 21
    with pytest.raises(TuneError, match="coarser --step"):
        tune(varies, cluster, print)
    assert cluster.calls == []


def test_tune_json_has_the_documented_fields() -> None:
    result, _ = _run([_sleep_vary()], FakeCluster(_needs(3.5)))
    document = json.loads(json.dumps(to_json(result)))
    assert document["parameter"] == SLEEP and document["recommended"] == 4
    assert [t["value"] for t in document["trials"]] == [10, 0, 5, 2, 3, 4]
    first = document["trials"][1]
    assert first["runs"] == 2 and first["requests"] == 2 * REQUESTS and first["failed"] == 50
    assert first["causes"] == {"endpoint-lag": 50} and first["rollout_s"] == 20.0
    assert len(first["run_dirs"]) == 2 and first["safe"] is False
    verified = document["verified"]
    assert verified["runs"] == verified["rollouts"] == 2
    assert verified["requests"] == 2 * REQUESTS and verified["failed"] == 0
    assert verified["failing_rollouts"] == 0
    assert verified["failure_rate_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 1200))
    assert verified["rollout_failure_upper_95"] == pytest.approx(1 - 0.05**0.5)
    assert document["strategy"].startswith("bisection") and document["message"]


def test_tune_json_of_a_pair_names_both_settings() -> None:
    result, _ = _run(_pair("0..1", "0..1"), FakeCluster(_overload, _rollout))
    document = to_json(result)
    assert document["parameters"] == [SURGE, UNAVAILABLE] and "parameter" not in document
    assert document["recommended"] == {SURGE: 1, UNAVAILABLE: 1}
    assert all(set(t["value"]) == {SURGE, UNAVAILABLE} for t in document["trials"])


@pytest.mark.parametrize("n", [1, 2, 10, 1234, 100_000])
def test_zero_failures_in_n_bound_the_rate_by_about_three_over_n(n: int) -> None:
    assert upper_95(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)
    if n >= 1000:
        assert upper_95(0, n) == pytest.approx(3 / n, rel=0.01)


@pytest.mark.parametrize("n", [2, 5, 40, 1000])
def test_n_minus_one_failures_of_n_match_the_closed_form(n: int) -> None:
    """P(X ≤ n−1) = 1 − pⁿ, so the bound is the p with pⁿ = 0.95."""
    assert upper_95(n - 1, n) == pytest.approx(0.95 ** (1 / n), rel=1e-9)


@pytest.mark.parametrize(("failures", "n"), [(1, 10), (3, 50), (12, 1000)])
def test_the_bound_is_where_seeing_so_few_failures_has_probability_five_percent(
    failures: int, n: int
) -> None:
    bound = upper_95(failures, n)
    exact = sum(math.comb(n, k) * bound**k * (1 - bound) ** (n - k) for k in range(failures + 1))
    assert exact == pytest.approx(0.05, abs=1e-9)
    assert binomial_cdf(failures, n, bound) == pytest.approx(exact, rel=1e-9)
    assert upper_95(failures - 1, n) < bound < upper_95(failures + 1, n)


def test_no_trials_bound_nothing() -> None:
    assert upper_95(0, 0) == 1.0 and upper_95(5, 5) == 1.0
