"""The search of ``rolltrace tune``: the cheapest safe value of one setting, or pair of settings,
found by running the scenario (through an ``Evaluate`` the caller supplies) as few times as the
mechanism allows.

"Safe" means every run of the candidate completed its rollout with 0 failed requests; a run that
did not complete is no evidence of safety, so it counts as unsafe and is recorded as such.

- One setting: bisection, assuming safety is monotone (every value more expensive than a safe
  one is safe). The expensive end is tried first (if it fails, no value in the range is safe),
  then the cheap end (if it holds, it is the answer), then the middle of what is left.
- Two settings: a small grid, tried from the expensive corner towards the cheap one. By the same
  monotonicity a pair that is cheaper in both settings than an unsafe pair is unsafe too; such
  pairs are pruned (recorded, not run). Pairs Kubernetes rejects are skipped. Of the safe pairs
  the one whose rollouts took the least time on average wins; ties go to the cheaper value of
  the first setting, then of the second.

The recommendation is then run again (``evaluate(..., "verify")``), and those new runs alone give
the verification and its one-sided 95 % upper bounds (they did not take part in choosing, so
they are not biased towards success).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rolltrace.tuning.bounds import upper_95
from rolltrace.tuning.settings import (
    Candidate,
    TuneError,
    Value,
    Vary,
    kubernetes_problem,
)

Phase = Literal["search", "verify"]
COMPLETE = "complete"
# Each pair costs N runs of a whole rollout (about half a minute each on the local cluster), so
# a grid beyond this many pairs is refused with a hint to use a coarser --step.
MAX_PAIRS = 30


@dataclass(frozen=True)
class TrialRun:
    """One run of a candidate, as the evaluator measured it."""

    run_dir: str
    requests: int
    failed: int
    causes: dict[str, int]
    rollout_s: float | None  # trigger → last old Pod gone (the evaluator's); None if unmeasured
    status: str  # "complete" when the rollout completed and the run was analysed


Evaluate = Callable[[Candidate, Phase], list[TrialRun]]


def total_causes(runs: Sequence[TrialRun]) -> dict[str, int]:
    """Failed requests per cause over runs, by cause name."""
    total: dict[str, int] = {}
    for run in runs:
        for cause, n in run.causes.items():
            total[cause] = total.get(cause, 0) + n
    return dict(sorted(total.items()))


class RunTotals:
    """What a set of runs adds up to (a trial's, or the verification's)."""

    runs: tuple[TrialRun, ...]

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    @property
    def causes(self) -> dict[str, int]:
        return total_causes(self.runs)

    @property
    def incomplete(self) -> list[TrialRun]:
        """Runs whose rollout did not complete: no evidence of safety either way."""
        return [r for r in self.runs if r.status != COMPLETE]

    @property
    def safe(self) -> bool:
        return bool(self.runs) and self.failed == 0 and not self.incomplete

    @property
    def rollout_s(self) -> float | None:
        """Mean measured rollout time over the runs that measured one."""
        times = [r.rollout_s for r in self.runs if r.rollout_s is not None]
        return sum(times) / len(times) if times else None


@dataclass(frozen=True)
class Trial(RunTotals):
    """A candidate and its runs (none for a pruned or skipped candidate)."""

    candidate: Candidate
    runs: tuple[TrialRun, ...] = ()
    skipped: str = ""  # why it was not run (pruned by monotonicity, rejected by Kubernetes)


@dataclass(frozen=True)
class Verification(RunTotals):
    """The recommendation's new runs and what they bound."""

    runs: tuple[TrialRun, ...]

    @property
    def failing_rollouts(self) -> int:
        """Rollouts with a failure, or that did not complete (no evidence they were safe)."""
        return sum(1 for r in self.runs if r.failed or r.status != COMPLETE)

    @property
    def failure_rate_upper_95(self) -> float:
        return upper_95(self.failed, self.requests)

    @property
    def rollout_failure_upper_95(self) -> float:
        return upper_95(self.failing_rollouts, len(self.runs))


@dataclass
class TuneResult:
    varies: list[Vary]
    trials: list[Trial] = field(default_factory=list)  # in the order they were run or skipped
    recommended: Candidate | None = None
    verified: Verification | None = None
    message: str = ""
    strategy: str = ""
    # Candidates whose verification failed before the recommended one held (cheapest first).
    failed_verifications: list[tuple[Candidate, Verification]] = field(default_factory=list)


class _Runner:
    """Runs candidates once each (the search may ask twice), with progress lines."""

    def __init__(
        self,
        result: TuneResult,
        evaluate: Evaluate,
        progress: Callable[[str], None],
        repetitions: int | None,
    ) -> None:
        self.result, self.evaluate, self.progress = result, evaluate, progress
        self.repetitions = repetitions
        self.done: dict[tuple[Value, ...], Trial] = {}

    def run(self, candidate: Candidate) -> Trial:
        key = tuple(candidate.values())
        if key in self.done:
            return self.done[key]
        number = sum(1 for t in self.result.trials if t.runs) + 1
        self.progress(f"trial {number}: {self._describe(candidate)}{self._runs_note()}")
        trial = Trial(dict(candidate), tuple(self.evaluate(dict(candidate), "search")))
        self.progress(f"  → {outcome(trial)}; {'safe' if trial.safe else 'unsafe'}")
        self.result.trials.append(trial)
        self.done[key] = trial
        return trial

    def verify(self, candidate: Candidate) -> Verification:
        """Run the recommendation again; only these runs bound its failure rate."""
        self.progress(f"verify: {self._describe(candidate)}{self._runs_note()}")
        verification = Verification(tuple(self.evaluate(dict(candidate), "verify")))
        self.progress(f"  → {bound_sentence(verification)}{_notes(verification)}")
        return verification

    def skip(self, candidate: Candidate, why: str) -> None:
        key = tuple(candidate.values())
        if key in self.done:
            return
        trial = Trial(dict(candidate), skipped=why)
        self.result.trials.append(trial)
        self.done[key] = trial
        self.progress(f"skipped: {self._describe(candidate)}: {why}")

    def _describe(self, candidate: Candidate) -> str:
        return describe(self.result.varies, candidate)

    def _runs_note(self) -> str:
        n = self.repetitions
        return "" if n is None else f" ({n} run{'s' if n != 1 else ''})"


def describe(varies: Sequence[Vary], candidate: Candidate) -> str:
    """``preStop 4 s`` or ``maxSurge 1 Pods, maxUnavailable 25%``."""
    return ", ".join(v.describe(candidate[v.path]) for v in varies if v.path in candidate)


def outcome(totals: RunTotals) -> str:
    """``0 failed of 1,180`` (+ the causes, + runs that did not complete)."""
    return f"{totals.failed:,} failed of {totals.requests:,}{_notes(totals)}"


def _notes(totals: RunTotals) -> str:
    causes = ", ".join(f"{c} {n:,}" for c, n in totals.causes.items())
    text = f" ({causes})" if causes else ""
    for run in totals.incomplete:
        text += f"; {run.run_dir} did not complete ({run.status}): no evidence of safety"
    return text


def tune(
    varies: list[Vary],
    evaluate: Evaluate,
    progress: Callable[[str], None],
    *,
    repetitions: int | None = None,
) -> TuneResult:
    """Search, then verify the recommendation once. ``repetitions`` only labels progress lines
    (the evaluator decides how many runs a candidate gets)."""
    if not 1 <= len(varies) <= 2:
        raise TuneError(f"tune varies one or two settings at a time, not {len(varies)}")
    if len({v.path for v in varies}) != len(varies):
        raise TuneError(f"--vary {varies[0].path} is given twice")
    result = TuneResult(varies=list(varies))
    runner = _Runner(result, evaluate, progress, repetitions)
    if len(varies) == 1:
        fallbacks = _bisect(varies[0], runner)
    else:
        fallbacks = _grid(varies[0], varies[1], runner)
    if result.recommended is not None:
        _verify(result, runner, [result.recommended, *fallbacks])
    progress(result.message)
    return result


def _verify(result: TuneResult, runner: _Runner, candidates: list[Candidate]) -> None:
    """Verify the recommendation (the first candidate). When its new runs fail, the value is
    unsafe after all (the search's runs were too few to show its failures), so the next
    candidate the search holds safe is verified instead, until one holds. When none holds there
    is no recommendation, and ``verified`` is the last attempt."""
    result.recommended = None
    for candidate in candidates:
        verification = runner.verify(candidate)
        result.verified = verification
        if verification.safe:
            result.recommended = dict(candidate)
            break
        result.failed_verifications.append((dict(candidate), verification))
    if not result.failed_verifications:
        return
    failed = "; ".join(
        f"{describe(result.varies, c)} ({v.failed:,} failed)"
        for c, v in result.failed_verifications
    )
    if result.recommended is None:
        result.message = (
            f"no recommendation: every candidate failed its verification ({failed}); failures "
            "may be rarer than the runs could show (try more --repetitions), or safety is not "
            "monotone here"
        )
    else:
        result.message = (
            f"recommended: {describe(result.varies, result.recommended)}, which held its "
            f"verification; cheaper candidates that the search held safe failed theirs: {failed}"
        )


def _bisect(vary: Vary, runner: _Runner) -> list[Candidate]:
    """Set the cheapest safe value as the recommendation; return the more expensive values, in
    order, to verify if it does not hold (every value above a safe one is assumed safe)."""
    result = runner.result
    values = vary.values()
    result.strategy = (
        f"bisection over {len(values)} values of {vary.path}, cheapest first "
        f"({vary.tunable.cheaper} is cheaper: {vary.tunable.why}), assuming every value "
        "more expensive than a safe one is safe"
    )
    # A grid has two values or more and Kubernetes refuses at most one (0), so some remain.
    valid = [v for v in values if not _rejected(vary, {vary.path: v}, runner)]
    expensive = runner.run({vary.path: valid[-1]})
    if not expensive.safe:
        result.message = (
            f"no safe value in {vary.path}={_span(vary)}: even the most expensive end "
            f"({vary.describe(valid[-1])}) failed; try a wider range"
        )
        return []
    safe_index, unsafe_index = len(valid) - 1, -1
    while safe_index - unsafe_index > 1:
        # The cheap end first (it is the answer if it holds), then the middle of what is left.
        probe = 0 if unsafe_index < 0 else (safe_index + unsafe_index) // 2
        if runner.run({vary.path: valid[probe]}).safe:
            safe_index = probe
        else:
            unsafe_index = probe
    result.recommended = {vary.path: valid[safe_index]}
    result.message = f"recommended: {vary.describe(valid[safe_index])}, the cheapest safe value"
    return [{vary.path: value} for value in valid[safe_index + 1 :]]


def _rejected(vary: Vary, candidate: Candidate, runner: _Runner) -> bool:
    """Whether Kubernetes would refuse the candidate (recorded as skipped)."""
    problem = kubernetes_problem(vary.scenario, candidate)
    if problem is not None:
        runner.skip(candidate, problem)
    return problem is not None


def _span(vary: Vary) -> str:
    unit = "%" if vary.percent else ""
    return f"{vary.low:g}{unit}..{vary.high:g}{unit}"


def _grid(first: Vary, second: Vary, runner: _Runner) -> list[Candidate]:
    """Set the safe pair with the shortest rollout as the recommendation; return the other safe
    pairs, best first, to verify if it does not hold."""
    result = runner.result
    a_values, b_values = first.values(), second.values()
    if len(a_values) * len(b_values) > MAX_PAIRS:
        raise TuneError(
            f"--vary {first.path} × {second.path}: {len(a_values)} × {len(b_values)} pairs is "
            f"more than {MAX_PAIRS}; use a coarser --step or narrower ranges"
        )
    result.strategy = (
        f"grid of {len(a_values)} × {len(b_values)} pairs, from the most expensive towards the "
        "cheapest; a pair cheaper in both settings than an unsafe pair is pruned as unsafe "
        "(safety assumed monotone in each); the safe pair with the shortest mean rollout wins"
    )
    unsafe: list[tuple[int, int, Candidate]] = []
    safe: list[tuple[float, int, int, Trial]] = []
    for ra, rb in _expensive_first(len(a_values), len(b_values)):
        candidate = {first.path: a_values[ra], second.path: b_values[rb]}
        if _rejected(first, candidate, runner):
            continue
        beaten = next((c for ua, ub, c in unsafe if ra <= ua and rb <= ub), None)
        if beaten is not None:
            unsafe_pair = describe(result.varies, beaten)
            runner.skip(candidate, f"pruned: cheaper in both than the unsafe {unsafe_pair}")
        elif (trial := runner.run(candidate)).safe:
            safe.append((_or_inf(trial.rollout_s), ra, rb, trial))
        else:
            unsafe.append((ra, rb, candidate))
    if not safe:
        result.message = (
            f"no safe pair in {first.path}={_span(first)} × {second.path}={_span(second)}; "
            "try wider ranges"
        )
        return []
    # Shortest mean rollout; on a tie the cheaper value of the first setting, then the second.
    ranked = [entry[3] for entry in sorted(safe, key=lambda entry: entry[:3])]
    best = ranked[0]
    result.recommended = dict(best.candidate)
    timing = "" if best.rollout_s is None else f" (rollout {best.rollout_s:.1f} s on average)"
    result.message = (
        f"recommended: {describe(result.varies, best.candidate)}, the safe pair with the "
        f"shortest rollout{timing}"
    )
    return [dict(trial.candidate) for trial in ranked[1:]]


def _expensive_first(a_count: int, b_count: int) -> list[tuple[int, int]]:
    """Grid positions (0 = cheapest) from the most expensive corner down, so that an unsafe
    pair is found before the cheaper pairs it makes known-unsafe."""
    ranks = itertools.product(range(a_count), range(b_count))
    return sorted(ranks, key=lambda rank: (-(rank[0] + rank[1]), -rank[0]))


def _or_inf(seconds: float | None) -> float:
    """An unmeasured rollout time sorts after every measured one."""
    return math.inf if seconds is None else seconds


def percent_text(rate: float) -> str:
    """A rate as a percentage with the digits it needs (78 %, 5.2 %, 0.24 %, 0.0031 %)."""
    percent = rate * 100
    if percent >= 10:
        return f"{percent:.0f} %"
    return f"{percent:.1f} %" if percent >= 1 else f"{percent:.2g} %"


def bound_sentence(verification: Verification) -> str:
    """``0 failed of 1,234 requests in 2 rollouts: at most 0.24 % of requests and 78 % of
    rollouts fail (95 %)``."""
    v = verification
    rollouts = len(v.runs)
    return (
        f"{v.failed:,} failed of {v.requests:,} requests in {rollouts} rollout"
        f"{'s' if rollouts != 1 else ''} ({v.failing_rollouts} failing): at most "
        f"{percent_text(v.failure_rate_upper_95)} of requests and "
        f"{percent_text(v.rollout_failure_upper_95)} of rollouts fail (95 % upper bound)"
    )


def _value_json(varies: Sequence[Vary], candidate: Candidate) -> Value | dict[str, Value]:
    """One setting: its value; two: the mapping path → value."""
    return candidate[varies[0].path] if len(varies) == 1 else dict(candidate)


def _runs_json(totals: RunTotals) -> dict[str, Any]:
    rollout = totals.rollout_s
    return {
        "runs": len(totals.runs),
        "requests": totals.requests,
        "failed": totals.failed,
        "causes": totals.causes,
        "rollout_s": None if rollout is None else round(rollout, 3),
        "statuses": [r.status for r in totals.runs],
        "run_dirs": [r.run_dir for r in totals.runs],
    }


def to_json(result: TuneResult) -> dict[str, Any]:
    """The tune.json document (docs/tuning.md)."""
    varies = result.varies
    document: dict[str, Any] = (
        {"parameter": varies[0].path}
        if len(varies) == 1
        else {"parameters": [v.path for v in varies]}
    )
    document["recommended"] = (
        None if result.recommended is None else _value_json(varies, result.recommended)
    )
    document["message"] = result.message
    document["strategy"] = result.strategy
    document["ranges"] = [
        {"path": v.path, "low": v.low, "high": v.high, "step": v.step, "percent": v.percent,
         "unit": "%" if v.percent else v.tunable.unit, "cheaper": v.tunable.cheaper,
         "why": v.tunable.why, "scenario_value": v.current, "values": v.values()}
        for v in varies
    ]  # fmt: skip
    document["trials"] = [
        {"value": _value_json(varies, t.candidate), "safe": t.safe, "skipped": t.skipped or None}
        | _runs_json(t)
        for t in result.trials
    ]
    document["verified"] = None if result.verified is None else _verified_json(result.verified)
    document["failed_verifications"] = [
        {"value": _value_json(varies, candidate)} | _verified_json(verification)
        for candidate, verification in result.failed_verifications
    ]
    return document


def _verified_json(verification: Verification) -> dict[str, Any]:
    v = verification
    return _runs_json(v) | {
        "failure_rate_upper_95": v.failure_rate_upper_95,
        "rollouts": len(v.runs),
        "failing_rollouts": v.failing_rollouts,
        "rollout_failure_upper_95": v.rollout_failure_upper_95,
        "summary": bound_sentence(v),
    }
