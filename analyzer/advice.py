"""Advice as data: which rollout setting to change, from what to what, why, and how sure — from
one run's measured timings and failure causes, never from rules of thumb alone.

Pure: facts in, recommendations out. It sits in the analyzer's core (not in ``analyzer.report``)
because summary.json carries the recommendations: tests and ``rolltrace tune`` apply a
recommendation's ``changes`` (scenario paths and values) without parsing its prose. Where the fix
is in the application (graceful drain, keep-alive handling) a recommendation says so and claims no
setting.

A setting sized from timings rests on an upper bound that accounts for the number of samples
(``metrics.upper_prediction_bound``); where the run had too few samples for one, the advice says to
run ``rolltrace tune`` and prints the command. One run never lowers a setting whose cost falls
with it (preStop, grace period): a value that covers the bound is kept, and the advice names the
experiment that may find a cheaper one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pandas as pd

from analyzer import metrics
from analyzer.hop_paths import hop_settings
from analyzer.rundir import lb_unhealthy_after_ms, number_or_none, traffic_policy

Verdict = Literal["ok", "change", "unknown"]
#: Where the fix lives: a scenario setting with a value, the Pod's probe definition (needs the
#: app's own readiness endpoint), the application, the cluster / Service, the evidence (capture
#: more), or nowhere (nothing to fix).
FixIn = Literal["setting", "probe", "app", "cluster", "evidence", "none"]

#: Added to an observed time that is only a lower bound (endpoint-lag failures show routing
#: lasted *at least* that long; a cut drain lasted at least until SIGKILL): kube-proxy's sync
#: period alone moves propagation by up to a second (docs/architecture.md#reference-timings).
MARGIN_S = 1.0
#: Fewer samples than this and a p99 is just the maximum of a handful: say so.
THIN_SAMPLES = 5

PRESTOP_PATH = "pod.pre_stop.sleep_s"
GRACE_PATH = "pod.termination_grace_period_s"
MAX_SURGE_PATH = "strategy.max_surge"
MAX_UNAVAILABLE_PATH = "strategy.max_unavailable"
FALLBACK_PATH = "cluster.terminating_fallback"
APP_KEEPALIVE_PATH = "workload.app.keepalive_timeout_s"
#: The app's keep-alive timeout must exceed an L7 hop's pooled-connection idle timeout by this
#: much: the hop starts its idle timer when a connection returns to its pool and the app when it
#: has sent its response, a response's transfer apart, and timers that count whole seconds round
#: by up to one. A second above the hop's timeout lets the hop close first every time.
KEEPALIVE_OVER_IDLE_S = 1.0
#: Kubernetes' default terminationGracePeriodSeconds (PodSpec): the grace period most apps'
#: shutdown is written for.
DEFAULT_GRACE_S = 30.0
#: The kubelet gives a container at least this long after its preStop hook before SIGKILL,
#: whatever the grace period (kubelet ``minimumGracePeriodInSeconds``).
MIN_GRACE_AFTER_PRESTOP_S = 2.0
#: A drain cut by SIGKILL lasted longer than the kill by an unknown amount: the advice doubles
#: the kill's time, the first step of an exponential search.
DRAIN_CUT_GROWTH = 2.0


@dataclass(frozen=True)
class RolloutSettings:
    """The rollout settings the recommendations judge, from run.json's scenario; None = not
    recorded (an imported run), which the recommendations say rather than guess."""

    prestop_s: float | None = None
    grace_s: float | None = None
    readiness: str | None = None  # "http", "tcp", "none" or a probe description
    probe_period_s: float | None = None
    probe_initial_delay_s: float | None = None
    replicas: int | None = None
    max_surge: int | str | None = None
    max_unavailable: int | str | None = None
    traffic_policy: str | None = None
    terminating_fallback: bool | None = None
    #: How long the LB keeps sending to a node after its health check starts failing (interval ×
    #: unhealthy threshold + timeout), where the run records the LB's settings.
    lb_unhealthy_after_s: float | None = None
    #: The L7 hops (run.json ``hops``, else the scenario's ``cluster.ingress``): the slowest
    #: hop's endpoint sync interval and the longest idle timeout of its pooled upstream
    #: connections; the app's own keep-alive timeout (``workload.app``).
    hop_sync_interval_s: float | None = None
    hop_idle_timeout_s: float | None = None
    app_keepalive_s: float | None = None


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _largest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def rollout_settings(
    scenario: dict[str, Any], service: dict[str, Any], hops: Any = None
) -> RolloutSettings:
    """Settings from either scenario shape: a trace-builder recipe (flat keys) or a resolved
    rolltrace scenario (workload / pod / strategy / service / cluster sections); ``hops``:
    run.json's ``hops`` entry (the L7 hops' settings), if any."""
    if "recipe" in scenario:
        return RolloutSettings(
            prestop_s=number_or_none(scenario.get("prestop_s")),
            grace_s=number_or_none(scenario.get("grace_s")),
            readiness=scenario.get("readiness"),
            probe_period_s=number_or_none(scenario.get("probe_period_s")),
            probe_initial_delay_s=0.0,
            replicas=scenario.get("replicas"),
            max_surge=scenario.get("max_surge"),
            max_unavailable=scenario.get("max_unavailable"),
            traffic_policy=scenario.get("traffic_policy"),
            terminating_fallback=scenario.get("terminating_fallback"),
            lb_unhealthy_after_s=_recipe_lb_window(scenario),
        )
    probe = _get(scenario, "pod", "readiness_probe")
    pre_stop = _get(scenario, "pod", "pre_stop")
    readiness: str | None
    if isinstance(probe, dict):
        readiness = f"http GET {probe['path']}" if probe.get("path") else "tcp"
    else:
        readiness = "none" if "pod" in scenario else None
    prestop = number_or_none(_get(pre_stop, "sleep_s"))
    if prestop is None and "pod" in scenario:
        prestop = 0.0 if pre_stop is None else None
    policy = traffic_policy(service, scenario) or None
    window_ms = lb_unhealthy_after_ms(scenario)
    by_hop = hop_settings({"hops": hops} if hops else {}, scenario)
    return RolloutSettings(
        prestop_s=prestop,
        grace_s=number_or_none(_get(scenario, "pod", "termination_grace_period_s")),
        readiness=readiness,
        probe_period_s=number_or_none(_get(probe, "period_s")),
        probe_initial_delay_s=number_or_none(_get(probe, "initial_delay_s")),
        replicas=_get(scenario, "workload", "replicas"),
        max_surge=_get(scenario, "strategy", "max_surge"),
        max_unavailable=_get(scenario, "strategy", "max_unavailable"),
        traffic_policy=policy,
        terminating_fallback=_get(scenario, "cluster", "terminating_fallback"),
        lb_unhealthy_after_s=None if window_ms is None else window_ms / 1000,
        hop_sync_interval_s=_largest([h.sync_interval_s for h in by_hop.values()]),
        hop_idle_timeout_s=_largest([h.idle_timeout_s for h in by_hop.values()]),
        app_keepalive_s=by_hop[""].app_keepalive_s,
    )


def _recipe_lb_window(recipe: dict[str, Any]) -> float | None:
    """A trace-builder recipe's LB: it marks a node unhealthy after ``lb_unhealthy_threshold``
    failed checks, ``lb_interval_s`` apart."""
    interval, threshold = (
        number_or_none(recipe.get("lb_interval_s")),
        number_or_none(recipe.get("lb_unhealthy_threshold")),
    )
    return None if interval is None or threshold is None else interval * threshold


class AdviceFacts(Protocol):
    """What the advice reads: the report's ``RunFacts`` and the pipeline's ``AdviceInputs``."""

    @property
    def scenario_name(self) -> str: ...
    @property
    def failed(self) -> int: ...
    @property
    def failed_by_cause(self) -> dict[str, int]: ...
    @property
    def timings(self) -> dict[str, Any]: ...
    @property
    def settings(self) -> RolloutSettings: ...
    @property
    def inputs(self) -> dict[str, Any]: ...
    @property
    def lag_after_deletion_ms(self) -> float | None: ...
    @property
    def lag_samples(self) -> int: ...
    @property
    def container_exits(self) -> dict[str, int]: ...
    @property
    def masked_retries(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AdviceInputs:
    """The facts the pipeline hands the advice (the report's RunFacts carries the same)."""

    scenario_name: str
    failed: int
    failed_by_cause: dict[str, int]
    timings: dict[str, Any]
    settings: RolloutSettings
    inputs: dict[str, Any] = field(default_factory=dict)
    lag_after_deletion_ms: float | None = None
    lag_samples: int = 0
    container_exits: dict[str, int] = field(default_factory=dict)
    masked_retries: dict[str, Any] = field(default_factory=dict)  # summary.json's, by hop


Value = float | int | str | None


@dataclass(frozen=True)
class SettingChange:
    """One scenario setting to change: ``setting`` is its path in the scenario file."""

    setting: str
    from_value: Value
    to_value: Value


@dataclass(frozen=True)
class Recommendation:
    topic: str
    verdict: Verdict
    advice: str
    reasoning: str
    changes: tuple[SettingChange, ...] = ()
    fix_in: FixIn = "none"
    expected_effect: str = ""
    how_sure: str = ""
    tune_command: str | None = None

    def as_json(self) -> dict[str, Any]:
        """summary.json's shape (docs/api.md): ``changes`` as ``{setting, from, to}``."""
        return {
            "topic": self.topic,
            "verdict": self.verdict,
            "fix_in": self.fix_in,
            "changes": [
                {"setting": c.setting, "from": c.from_value, "to": c.to_value} for c in self.changes
            ],
            "advice": self.advice,
            "why": self.reasoning,
            "expected_effect": self.expected_effect,
            "how_sure": self.how_sure,
            "tune_command": self.tune_command,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recommendation:
        return cls(
            topic=str(data["topic"]),
            verdict=data["verdict"],
            advice=str(data["advice"]),
            reasoning=str(data["why"]),
            changes=tuple(
                SettingChange(str(c["setting"]), c["from"], c["to"]) for c in data["changes"]
            ),
            fix_in=data["fix_in"],
            expected_effect=str(data.get("expected_effect", "")),
            how_sure=str(data.get("how_sure", "")),
            tune_command=data.get("tune_command"),
        )


def _stats(facts: AdviceFacts, name: str) -> tuple[int, float | None]:
    stats: dict[str, Any] = facts.timings.get(name) or {}
    p99 = stats.get("p99_ms")
    return int(stats.get("n") or 0), None if p99 is None else float(p99) / 1000


def _thin(n: int) -> str:
    return (
        f" Evidence is thin: only {n} sample(s); repeat the run before relying on it."
        if n < THIN_SAMPLES
        else ""
    )


def _configured(value: float | None, unit: str = " s") -> str:
    return "not recorded" if value is None else f"{value:g}{unit}"


def tune_command(facts: AdviceFacts, setting: str, low: float, high: float) -> str:
    """The ``rolltrace tune`` command that finds the value by experiment where one run cannot."""
    name = facts.scenario_name or "SCENARIO"
    return (
        f"rolltrace tune scenarios/{name}.yaml --vary {setting}={low:g}..{high:g} --repetitions 2"
    )


def _by_node(facts: AdviceFacts) -> str:
    """Per-node maxima of propagation, and how many samples named no node."""
    by_node: dict[str, Any] = facts.timings.get("propagation_by_node") or {}
    parts = [
        f"{node} {stats['max_ms'] / 1000:.2f} s"
        for node, stats in sorted(by_node.items())
        if stats.get("max_ms") is not None
    ]
    left: dict[str, Any] = facts.timings.get("propagation_left_out") or {}
    text = f" Longest per node: {', '.join(parts)}." if parts else ""
    if left.get("samples"):
        text += (
            f" {left['samples']} sample(s) came from addresses that are no node's "
            f"({', '.join(left.get('addresses', []))}) and are left out."
        )
    return text


@dataclass(frozen=True)
class _Basis:
    """What sizes preStop: the value to cover (s), the sentence saying why, how sure, samples."""

    needed_s: float
    why: str
    how_sure: str
    n: int


def _propagation_needed(facts: AdviceFacts) -> tuple[int, float]:
    """(propagation samples, the propagation a window on top of it must add): the bound where
    the samples give one, else the longest seen."""
    n, _ = _stats(facts, "propagation")
    bound = _bound_basis(facts)
    return n, bound.needed_s if bound is not None else _max_s(facts)


def _bound_basis(facts: AdviceFacts) -> _Basis | None:
    bound: dict[str, Any] = facts.timings.get("propagation_bound") or {}
    upper, largest, n = bound.get("upper_ms"), bound.get("max_ms"), int(bound.get("n") or 0)
    if upper is None or largest is None:
        return None
    upper_s, max_s = float(upper) / 1000, float(largest) / 1000
    spread = (
        f"{bound['node']}'s mean {bound['mean_ms'] / 1000:.2f} s, spread within nodes "
        f"{bound['sd_ms'] / 1000:.2f} s"
        if bound.get("node")
        else f"mean {bound['mean_ms'] / 1000:.2f} s, sd {bound['sd_ms'] / 1000:.2f} s"
    )
    why = (
        f"New connections still reached deleted Pods up to {max_s:.2f} s after their endpoint "
        f"left (max of {n} samples; {spread}).{_by_node(facts)}"
    )
    how_sure = (
        f"{bound['confidence']:.0%} upper prediction bound on the longest of the next "
        f"{bound['future_n']} propagations: {upper_s:.2f} s, {upper_s - max_s:.2f} s above the "
        f"longest seen ({n} samples)"
    )
    return _Basis(upper_s, why, how_sure, n)


def _lag_basis(facts: AdviceFacts) -> _Basis | None:
    if facts.lag_after_deletion_ms is None:
        return None
    lag_s = facts.lag_after_deletion_ms / 1000
    return _Basis(
        lag_s + MARGIN_S,
        f"Requests still routed to a leaving Pod (endpoint-lag, lb-lag, proxy-endpoint-lag) "
        f"started up to {lag_s:.2f} s (p99 of {facts.lag_samples}) after its deletion.",
        f"a lower bound (routing lasted at least that long) + {MARGIN_S:g} s margin",
        facts.lag_samples,
    )


def _is_local(settings: RolloutSettings) -> bool:
    """externalTrafficPolicy Local: the LB's health checks decide which node gets traffic."""
    return str(settings.traffic_policy or "").lower() == "local"


def _lb_basis(facts: AdviceFacts) -> _Basis | None:
    """Under Local policy with lb-lag failures: the LB keeps sending to a node for its
    health-check window after the node's last ready endpoint left, and only a Pod that still
    accepts (behind the terminating-endpoint fallback) can serve it: preStop must outlast the
    window plus the node's own propagation."""
    window = facts.settings.lb_unhealthy_after_s
    if not _is_local(facts.settings) or window is None or not facts.failed_by_cause.get("lb-lag"):
        return None
    n, propagation = _propagation_needed(facts)
    return _Basis(
        window + propagation,
        f"Under externalTrafficPolicy Local the LB keeps sending to a node for up to its "
        f"health-check window ({window:g} s: interval × unhealthy threshold + timeout) after the "
        f"node's last ready endpoint left, which itself takes up to {propagation:.2f} s.",
        f"the LB's configured health-check window + the propagation bound ({n} samples)",
        n,
    )


def _hop_basis(facts: AdviceFacts) -> _Basis | None:
    """With proxy-endpoint-lag failures: an L7 hop applies endpoint changes once per sync
    interval after they reach it, so it may send to a leaving Pod for its sync interval plus
    the propagation; preStop must keep the Pod serving that long."""
    sync = facts.settings.hop_sync_interval_s
    if sync is None or not facts.failed_by_cause.get("proxy-endpoint-lag"):
        return None
    n, propagation = _propagation_needed(facts)
    return _Basis(
        sync + propagation,
        f"An L7 hop applies endpoint changes once per sync interval ({sync:g} s) after they "
        f"reach it (up to {propagation:.2f} s): until then its own list still sends to a "
        f"leaving Pod. A shorter sync interval (the local ingress's "
        f"`cluster.ingress.sync_interval_s`; ingress-nginx syncs its Lua balancer each second) "
        f"narrows that window but never closes it.",
        f"the hop's configured sync interval + the propagation bound ({n} samples)",
        n,
    )


def _prestop_basis(facts: AdviceFacts) -> _Basis | None:
    """The longest time after deletion traffic may still reach a Pod in the next run: the upper
    prediction bound of the measured propagation, the endpoint-lag failures' time since
    deletion (+ margin) when that is longer (they prove routing lasted at least that long), or,
    under Local policy, the LB's health-check window on top of propagation, or an L7 hop's
    sync interval on top of it."""
    bases = (_bound_basis(facts), _lag_basis(facts), _lb_basis(facts), _hop_basis(facts))
    found = [b for b in bases if b]
    return max(found, key=lambda b: b.needed_s) if found else None


def _routed_late(facts: AdviceFacts) -> dict[str, int]:
    """Failures a longer preStop prevents, by cause: endpoint-lag, proxy-endpoint-lag (an L7
    hop's own list still held the Pod), and lb-lag unless it is the
    Local policy's dropped node with no LB window to outlast (then the fallback comes first)."""
    local = _is_local(facts.settings)
    causes = ["endpoint-lag", "proxy-endpoint-lag"]
    causes += ["lb-lag"] if not local or _lb_basis(facts) else []
    return {cause: facts.failed_by_cause.get(cause, 0) for cause in causes}


def _failed_with(counts: dict[str, int]) -> str:
    found = [f"{n} request(s) failed with {cause}" for cause, n in counts.items() if n]
    return " and ".join(found) or "no request failed with endpoint-lag"


def _prestop_unsized(facts: AdviceFacts, routed: dict[str, int]) -> Recommendation:
    """Too few samples for a bound and no failure routed late: one run cannot size preStop."""
    n, _ = _stats(facts, "propagation")
    largest = (facts.timings.get("propagation") or {}).get("max_ms")
    seen = (
        f"only {n} propagation sample(s) (longest {largest / 1000:.2f} s)"
        if n and largest is not None
        else "endpoint propagation was not measured"
    )
    high = max(10.0, math.ceil((largest or 0) / 1000) * 3)
    command = tune_command(facts, PRESTOP_PATH, 0, high)
    return Recommendation(
        "preStop",
        "unknown",
        f"Cannot size preStop from this run ({seen}): find it by experiment with `{command}`.",
        f"An upper bound needs at least {metrics.MIN_BOUND_SAMPLES} samples"
        + (f" ({facts.timings['note']})" if facts.timings.get("note") else "")
        + f"; {_failed_with(routed)}. "
        f"Configured preStop: {_configured(facts.settings.prestop_s)}.",
        fix_in="setting",
        how_sure="not enough samples for a bound",
        tune_command=command,
    )


def _max_s(facts: AdviceFacts) -> float:
    largest = (facts.timings.get("propagation") or {}).get("max_ms")
    return 0.0 if largest is None else float(largest) / 1000


def prestop(facts: AdviceFacts) -> Recommendation:
    routed = _routed_late(facts)
    lag = sum(routed.values())
    configured = facts.settings.prestop_s
    basis = _prestop_basis(facts)
    if basis is None:
        return _prestop_unsized(facts, routed)
    target = math.ceil(basis.needed_s)
    n, _ = _stats(facts, "propagation")
    note = facts.timings.get("note")
    why = (
        f"{basis.why} Needed: {basis.needed_s:.2f} s → {target} s. Configured: "
        f"{_configured(configured)}; {_failed_with(routed)}."
        + (f" Note: {note}." if note else "")
        + _thin(max(n, basis.n))
    )
    covered = configured is not None and configured >= basis.needed_s
    lucky = not lag and configured is not None and configured < _max_s(facts)
    if configured is None or (lag and not covered) or lucky:
        return _prestop_change(facts, target, why, basis, lag, lucky)
    if covered:
        return _prestop_kept(facts, basis, why, lag)
    advice = (
        f"preStop {configured:g} s held (longer than every propagation seen), but the bound "
        f"for the next run is {basis.needed_s:.2f} s: ≥ {target} s is safer."
    )
    return Recommendation("preStop", "ok", advice, why, how_sure=basis.how_sure)


def _prestop_change(
    facts: AdviceFacts, target: int, why: str, basis: _Basis, lag: int, lucky: bool
) -> Recommendation:
    """preStop must grow to ``target`` (only ever up: ``target`` exceeds what is configured)."""
    configured = facts.settings.prestop_s
    effect = "new connections that are still routed to a leaving Pod are served, not refused"
    if _lb_basis(facts) is not None and facts.settings.terminating_fallback is False:
        effect += ", once nodes fall back to their terminating Pods (see externalTrafficPolicy)"
    if lucky:
        why += " No request failed only because the app still accepted after preStop ended."
    return Recommendation(
        "preStop",
        "unknown" if configured is None and not lag else "change",
        f"preStop sleep ≥ {target} s"
        + (" (the run does not record it)." if configured is None else "."),
        why,
        (SettingChange(PRESTOP_PATH, configured, target),),
        fix_in="setting",
        expected_effect=f"the {lag} failure(s) routed to a leaving Pod go away: {effect}"
        if lag
        else effect,
        how_sure=basis.how_sure,
    )


def _prestop_kept(facts: AdviceFacts, basis: _Basis, why: str, lag: int) -> Recommendation:
    """preStop already covers the bound: keep it. One run never lowers a setting; where there
    is room, an experiment may find a cheaper value. Failures routed late despite it were not
    caused by its length, and the reasoning says so."""
    configured = facts.settings.prestop_s or 0.0
    target = math.ceil(basis.needed_s)
    advice = (
        f"preStop {configured:g} s covers the {target} s needed "
        f"({configured - basis.needed_s:.1f} s above the bound): keep it."
    )
    command = None
    if target < configured:
        command = tune_command(facts, PRESTOP_PATH, target, configured)
        advice += f" A shorter value may hold too: `{command}` finds it by experiment."
    if lag:
        why += (
            f" Those {lag} failure(s) came while preStop still ran: its length did not cause them."
        )
    return Recommendation(
        "preStop", "ok", advice, why, how_sure=basis.how_sure, tune_command=command
    )


def _prestop_target(facts: AdviceFacts) -> float | None:
    basis = _prestop_basis(facts)
    return None if basis is None else math.ceil(basis.needed_s)


def _drain_after_prestop(facts: AdviceFacts) -> tuple[float, str, int] | None:
    """How long the app drains after preStop in the next run (s), the sentence saying so, and
    the samples: the upper prediction bound of the measured drain (deletion → last response or
    connection close) minus the preStop that ran, or its p99 + margin with too few samples."""
    n, drain_p99 = _stats(facts, "drain")
    if n == 0 or drain_p99 is None:
        return None
    prestop_ran = facts.settings.prestop_s or 0.0
    bound: dict[str, Any] = facts.timings.get("drain_bound") or {}
    upper = bound.get("upper_ms")
    drain_s, how = (
        (float(upper) / 1000, f"{bound['confidence']:.0%} upper prediction bound")
        if upper is not None
        else (drain_p99 + MARGIN_S, f"p99 + {MARGIN_S:g} s margin (too few samples for a bound)")
    )
    after = max(drain_s - prestop_ran, 0.0)
    why = (
        f"Deleted Pods served their last response up to {drain_p99:.2f} s (p99 of {n}) after "
        f"deletion; the next run's drain: {drain_s:.2f} s ({how}), i.e. {after:.2f} s after the "
        f"preStop of {prestop_ran:g} s that ran."
    )
    return after, why, n


def grace_period(facts: AdviceFacts) -> Recommendation:
    topic = "terminationGracePeriodSeconds"
    cut = facts.failed_by_cause.get("inflight-cut", 0)
    killed = facts.failed_by_cause.get("killed-at-grace", 0)
    prestop_needed = max(_prestop_target(facts) or 0.0, facts.settings.prestop_s or 0.0)
    grace = facts.settings.grace_s
    drain = _drain_after_prestop(facts)
    if drain is None:
        return Recommendation(
            topic,
            "unknown",
            f"Keep terminationGracePeriodSeconds ≥ preStop ({prestop_needed:g} s) + the app's "
            "drain time; this run did not measure the drain.",
            f"No deleted Pod served a response after its deletion was observed. Configured grace: "
            f"{_configured(grace)}; {cut} inflight-cut failure(s).",
            fix_in="setting",
        )
    after, measured, n = drain
    target = math.ceil(prestop_needed + after)
    measured += f" preStop {prestop_needed:g} s + {after:.2f} s = {target} s needed."
    measured += f" Configured: {_configured(grace)}."
    if killed:
        return _killed_at_grace(facts, killed, target, measured + _thin(n))
    enough = grace is not None and grace >= target
    if enough and cut:
        return Recommendation(
            topic,
            "change",
            f"The grace period is long enough ({grace:g} s ≥ {target} s needed); make the app "
            "drain on SIGTERM: stop accepting, finish in-flight requests, then exit.",
            f"{measured} Yet {cut} request(s) were cut in flight: the app ended them before "
            f"the grace period did.{_thin(n)}",
            fix_in="app",
            expected_effect=f"the {cut} inflight-cut failure(s) go away",
        )
    if grace is not None and enough:
        return Recommendation(
            topic,
            "ok",
            f"terminationGracePeriodSeconds {grace:g} s covers the {target} s needed "
            f"({grace - target:g} s to spare).",
            f"{measured} {cut} request(s) were cut in flight.{_thin(n)}",
        )
    return Recommendation(
        topic,
        "unknown" if grace is None else "change",
        f"terminationGracePeriodSeconds ≥ {target} s.",
        f"{measured} {cut} request(s) were cut in flight.{_thin(n)}",
        (SettingChange(GRACE_PATH, grace, target),),
        fix_in="setting",
        expected_effect="SIGKILL no longer ends a drain that is still serving",
    )


def _killed_at_grace(facts: AdviceFacts, killed: int, target: int, measured: str) -> Recommendation:
    """SIGKILL cut the drain short, so its real length is unknown: only that it outlasted the
    kill. A grace period is a ceiling, not a wait (a Pod that exits by itself never waits for
    it), so overshooting costs no rollout time while undershooting cuts requests again: the
    advice doubles the time of the kill (an exponential search's first step), and never goes
    below Kubernetes' default that apps' shutdown is written for; ``rolltrace tune`` narrows it."""
    grace = facts.settings.grace_s
    prestop_ran = facts.settings.prestop_s or 0.0
    killed_at = max(grace or 0.0, prestop_ran + MIN_GRACE_AFTER_PRESTOP_S)
    to = max(target, math.ceil(DRAIN_CUT_GROWTH * killed_at), math.ceil(DEFAULT_GRACE_S))
    command = tune_command(facts, GRACE_PATH, math.ceil(killed_at + MARGIN_S), to)
    return Recommendation(
        "terminationGracePeriodSeconds",
        "change",
        f"terminationGracePeriodSeconds ≥ {to} s — longer than preStop + the app's whole drain "
        "— or shorten preStop / the drain so the app exits by itself before the grace period "
        f"ends. The drain was cut, so its length is unknown: `{command}` finds a tighter value.",
        f"{killed} request(s) were still in flight when SIGKILL came, {killed_at:g} s after "
        f"deletion (grace {_configured(grace)}, preStop {prestop_ran:g} s, and the kubelet's "
        f"{MIN_GRACE_AFTER_PRESTOP_S:g} s minimum after preStop): the drain needs longer than "
        f"that, by an unknown amount. A grace period only caps a drain that does not end by "
        f"itself, so {to} s (twice the kill, at least the Kubernetes default "
        f"{DEFAULT_GRACE_S:g} s) costs nothing where the app exits sooner. {measured}",
        (SettingChange(GRACE_PATH, grace, to),),
        fix_in="setting",
        expected_effect=f"the {killed} killed-at-grace failure(s) go away once the grace period "
        "exceeds preStop + the whole drain",
        how_sure=f"the drain outlasted {killed_at:g} s; {to} s is a generous ceiling, not a "
        "measurement",
        tune_command=command,
    )


def readiness(facts: AdviceFacts) -> Recommendation:
    not_ready = facts.failed_by_cause.get("not-ready", 0)
    n, p99 = _stats(facts, "readiness_lead")
    lead = facts.timings.get("readiness_lead") or {}
    probe = facts.settings.readiness
    period = facts.settings.probe_period_s
    measured = (
        f"New Pods served their first successful response {lead.get('p50_ms', 0) / 1000:.2f} s "
        f"(p50) / {p99:.2f} s (p99) after Ready, over {n} Pod(s)."
        if n and p99 is not None
        else "The readiness lead was not measured (no new Pod served during the load)."
    )
    if not_ready:
        advice, fix_in = _readiness_fix(probe)
        return Recommendation(
            "readiness probe",
            "change",
            advice,
            f"{not_ready} request(s) reached Pods that could not serve yet or for a while "
            f"(not-ready). Configured probe: {probe or 'not recorded'}"
            f"{'' if period is None or probe == 'none' else f', every {period:g} s'}. {measured}",
            fix_in=fix_in,
            expected_effect=f"the {not_ready} not-ready failure(s) go away",
        )
    if probe == "none":
        return Recommendation(
            "readiness probe",
            "change",
            "Add an HTTP readiness probe: none is configured, this run was lucky.",
            f"No not-ready failure this time, but without a probe a Pod is Ready when its "
            f"container starts. {measured}",
            fix_in="probe",
            expected_effect="new Pods get traffic only once they can serve",
        )
    return Recommendation(
        "readiness probe",
        "ok" if probe is not None else "unknown",
        "Keep the readiness probe: no request reached a Pod before it could serve.",
        f"Configured probe: {probe or 'not recorded'}"
        f"{'' if period is None else f', every {period:g} s'}. {measured}{_thin(n)}",
    )


def _readiness_fix(probe: str | None) -> tuple[str, FixIn]:
    """What fixes not-ready failures, by the probe that let them through: without a probe or
    with a TCP one, a probe on an endpoint the app must provide (its path is the app's: no
    setting value is claimed); with an HTTP probe that passed, the endpoint itself."""
    if probe in (None, "none", "tcp"):
        what = "Add" if probe in (None, "none") else "Replace the TCP readiness probe with"
        return (
            f"{what} an HTTP readiness probe on an endpoint of the app that answers 200 only "
            "when it can serve (a TCP probe covers only the time before the app listens).",
            "probe",
        )
    return (
        "Make the app's readiness endpoint fail whenever the app cannot serve (warming up, a "
        "dependency down): the probe passed while requests failed. Probe timing cannot fix an "
        "endpoint that says ready too early; a Pod that stops serving mid-life still gets "
        "traffic for periodSeconds × failureThreshold + propagation, and on its open keep-alive "
        "connections.",
        "app",
    )


def _no_dip_changes(s: RolloutSettings) -> tuple[SettingChange, ...]:
    """maxUnavailable 0 and a surge of at least one Pod, where they are not already so."""
    changes = []
    if s.max_unavailable not in (0, "0", "0%"):
        changes.append(SettingChange(MAX_UNAVAILABLE_PATH, s.max_unavailable, 0))
    if s.max_surge in (None, 0, "0", "0%"):
        changes.append(SettingChange(MAX_SURGE_PATH, s.max_surge, 1))
    return tuple(changes)


def capacity(facts: AdviceFacts) -> Recommendation:
    short = facts.failed_by_cause.get("overload", 0) + facts.failed_by_cause.get("no-endpoints", 0)
    s = facts.settings
    setting = (
        f"replicas {s.replicas if s.replicas is not None else '?'}, maxSurge "
        f"{s.max_surge if s.max_surge is not None else '?'}, maxUnavailable "
        f"{s.max_unavailable if s.max_unavailable is not None else '?'}"
    )
    if short:
        changes = _no_dip_changes(s)
        return Recommendation(
            "maxUnavailable / maxSurge",
            "change",
            "Set maxUnavailable 0 and maxSurge ≥ 1 so that capacity never drops during the "
            "rollout"
            + (
                " (with 1 replica this is the only way to keep an endpoint)."
                if s.replicas == 1
                else "."
            )
            + ("" if changes else " They are already so: the Pods need more capacity."),
            f"{setting}; {facts.failed_by_cause.get('overload', 0)} overload and "
            f"{facts.failed_by_cause.get('no-endpoints', 0)} no-endpoints failure(s): the ready "
            "Pods could not carry the load while old ones left before new ones were Ready.",
            changes,
            fix_in="setting" if changes else "app",
            expected_effect="the ready capacity stays at the replica count throughout",
        )
    dips = s.max_unavailable not in (0, "0", "0%", None)
    return Recommendation(
        "maxUnavailable / maxSurge",
        "unknown" if s.max_unavailable is None else "ok",
        "Capacity held: no overload or no-endpoints failure."
        + (
            " maxUnavailable > 0 removes Pods before replacements are Ready: keep headroom."
            if dips
            else ""
        ),
        f"{setting}.",
    )


def local_policy(facts: AdviceFacts) -> Recommendation | None:
    """Only for externalTrafficPolicy Local: the options of
    docs/architecture.md#externaltrafficpolicy-local. A node whose last ready Pod leaves drops
    new connections until the LB's health check steers away, unless kube-proxy falls back to
    its serving-terminating Pods (KEP-1669, on by default since Kubernetes 1.26): the fallback
    is the cluster's to turn on, and the preStop recommendation then sizes how long the
    terminating Pod must keep accepting (the LB's window, ``_lb_basis``)."""
    if not _is_local(facts.settings):
        return None
    lag = facts.failed_by_cause.get("lb-lag", 0)
    fallback = facts.settings.terminating_fallback
    changes = (SettingChange(FALLBACK_PATH, False, True),) if lag and fallback is False else ()
    window = facts.settings.lb_unhealthy_after_s
    return Recommendation(
        "externalTrafficPolicy: Local",
        "change" if lag else "ok",
        "Keep a serving endpoint on every node the LB sends to until its health check steers "
        "away: turn on kube-proxy's terminating-endpoint fallback (KEP-1669; on by default "
        "since Kubernetes 1.26) with a preStop longer than the LB's health-check window (see "
        "preStop); or Cluster policy when the client source IP is not needed. maxSurge or "
        "topology spread help only where the new Pod lands on the node the old one leaves.",
        f"{lag} request(s) failed with lb-lag: the LB sent them to a node whose last local "
        f"endpoint was gone. Terminating-endpoint fallback: "
        f"{'not recorded' if fallback is None else ('on' if fallback else 'off')}; the LB's "
        f"health-check window: {_configured(window)}.",
        changes,
        fix_in="cluster" if lag else "none",
        expected_effect=f"the {lag} lb-lag failure(s) go away: the leaving node forwards to its "
        "terminating Pod until the LB has steered away"
        if lag
        else "",
    )


def keepalive(facts: AdviceFacts) -> Recommendation | None:
    race = facts.failed_by_cause.get("keepalive-race", 0)
    if not race:
        return None
    return Recommendation(
        "keep-alive draining",
        "change",
        "While draining, answer the next request on each idle keep-alive connection with "
        "'Connection: close' instead of closing idle connections with a FIN; clients should "
        "retry idempotent requests that fail on a reused connection. No rollout setting fixes "
        "this.",
        f"{race} request(s) were sent on a reused connection just as the server closed it.",
        fix_in="app",
        expected_effect=f"the {race} keepalive-race failure(s) go away",
    )


def backend_keepalive(facts: AdviceFacts) -> Recommendation | None:
    """backend-keepalive-race: the app closed idle connections an L7 hop still kept pooled.
    The app's keep-alive timeout must outlast the hop's idle timeout, so that the hop closes
    first (AWS documents the same for its ALB: the target's keep-alive above the LB's idle
    timeout)."""
    race = facts.failed_by_cause.get("backend-keepalive-race", 0)
    if not race:
        return None
    idle, app = facts.settings.hop_idle_timeout_s, facts.settings.app_keepalive_s
    why = (
        f"{race} request(s) failed because an L7 hop reused a pooled connection the app had "
        f"just closed as idle (the hop answered 502). The app closes idle connections after "
        f"{_configured(app)}; the hop keeps them pooled for {_configured(idle)}."
    )
    effect = f"the {race} backend-keepalive-race failure(s) go away: the hop closes first"
    if idle is None or (app is not None and app >= idle + KEEPALIVE_OVER_IDLE_S):
        return Recommendation(
            "backend keep-alive",
            "unknown" if idle is None else "change",
            "Set the app's keep-alive (idle) timeout above the L7 hop's idle timeout for its "
            "pooled upstream connections (an ALB's idle timeout, 60 s by default; nginx's "
            "upstream `keepalive_timeout`), so that the hop, not the app, closes them.",
            why,
            fix_in="app",
            expected_effect=effect,
        )
    target = math.ceil(idle + KEEPALIVE_OVER_IDLE_S)
    return Recommendation(
        "backend keep-alive",
        "change",
        f"App keep-alive timeout ≥ {target} s: above the hop's {idle:g} s idle timeout.",
        why,
        (SettingChange(APP_KEEPALIVE_PATH, app, target),),
        fix_in="setting",
        expected_effect=effect,
        how_sure=f"the hop's configured idle timeout + {KEEPALIVE_OVER_IDLE_S:g} s",
    )


def retries(facts: AdviceFacts) -> Recommendation | None:
    """Masked retries are not failures, but each hid a failed attempt and cost its client
    time: keep retries, for idempotent requests only, and fix what they hide."""
    masked = {hop: int(h.get("masked", 0)) for hop, h in facts.masked_retries.items()}
    if not sum(masked.values()):
        return None
    costs = "; ".join(
        f"{hop}: {n} masked, cost p50 {_ms(h['cost_ms'].get('p50_ms'))} / p99 "
        f"{_ms(h['cost_ms'].get('p99_ms'))}"
        for hop, n in masked.items()
        if n and (h := facts.masked_retries[hop])
    )
    return Recommendation(
        "retries at L7 hops",
        "ok",
        "Retries at the L7 hop hid failed attempts: keep them for idempotent requests only "
        "(nginx retries POST, LOCK and PATCH only with `proxy_next_upstream non_idempotent`; "
        "leave it off), bounded in tries and time (`proxy_next_upstream_tries`, "
        "`proxy_next_upstream_timeout`), and fix what the failed attempts met.",
        f"Requests that succeeded only after a failed attempt ({costs}): each waited for the "
        f"attempts that gave it nothing.",
        expected_effect="no failure; the retried requests' extra latency",
    )


def _ms(value: Any) -> str:
    return "?" if value is None else f"{float(value):.0f} ms"


def container_restarts(facts: AdviceFacts) -> Recommendation | None:
    """Failures from containers that exited or were killed without their Pod being deleted:
    a liveness probe or app fix, not a rollout setting."""
    restarts = facts.failed_by_cause.get("container-restart", 0)
    if not restarts:
        return None
    exits = ", ".join(f"{n}× {label}" for label, n in facts.container_exits.items())
    return Recommendation(
        "container restarts",
        "change",
        "Find why containers exit: a crash (non-zero exit, OOMKilled) needs an app or memory "
        "limit fix; a liveness kill (137/143 after Unhealthy) needs a liveness probe that checks "
        "only the process itself, with periodSeconds × failureThreshold longer than its worst "
        "pause. preStop and the grace period cannot help.",
        f"{restarts} request(s) failed while a container was down or restarting without its Pod "
        f"being deleted. Exits seen: {exits or 'not recorded'}.",
        fix_in="app",
        expected_effect=f"the {restarts} container-restart failure(s) go away",
    )


def evidence(facts: AdviceFacts) -> Recommendation | None:
    """When failures stayed unexplained or inputs were missing, every other verdict rests on
    less than it seems: say so first, with what to capture next time."""
    unexplained = facts.failed_by_cause.get("unexplained", 0)
    missing = list(facts.inputs.get("missing", []))
    damaged = [str(d.get("file")) for d in facts.inputs.get("damaged", [])]
    if not unexplained and not missing and not damaged:
        return None
    gaps = "; ".join(
        part
        for part in (
            f"missing: {', '.join(missing)}" if missing else "",
            f"damaged: {', '.join(damaged)}" if damaged else "",
        )
        if part
    )
    return Recommendation(
        "evidence",
        "unknown",
        "Capture more before trusting the advice below: client and node packet captures and "
        "the Pod/EndpointSlice watch are what tie a failure to its cause.",
        f"{unexplained} of {facts.failed} failed request(s) stayed unexplained"
        + (f"; {gaps}" if gaps else "")
        + ".",
        fix_in="evidence",
    )


def recommend(facts: AdviceFacts) -> list[Recommendation]:
    """Every recommendation that applies to this run, the settings to change first."""
    found = [prestop(facts), grace_period(facts), readiness(facts), capacity(facts)]
    optional = (
        local_policy(facts),
        keepalive(facts),
        backend_keepalive(facts),
        container_restarts(facts),
        retries(facts),
    )
    found += [r for r in optional if r is not None]
    caveat = evidence(facts)
    if caveat is not None:
        return [caveat, *_ranked(found)]
    return _ranked(found)


def _ranked(found: list[Recommendation]) -> list[Recommendation]:
    rank = {"change": 0, "unknown": 1, "ok": 2}
    return sorted(found, key=lambda r: rank[r.verdict])


def lag_after_deletion(failures: pd.DataFrame) -> tuple[float | None, int]:
    """p99 of (request start − Pod deletion) over failures routed to a leaving Pod (endpoint-lag
    by a node's rules, lb-lag by the LB, proxy-endpoint-lag by an L7 hop), in ms, and how many: traffic routed to a Pod that long
    after its deletion shows routing to it lasted at least that long, even where node captures
    could not measure it."""
    routed_late = ["endpoint-lag", "lb-lag", "proxy-endpoint-lag"]
    lag = failures[failures["cause"].astype(str).isin(routed_late)]
    values = pd.to_numeric(lag["ms_since_deletion"], errors="coerce")
    stats = metrics.timing_stats(values[values >= 0])
    return stats["p99_ms"], stats["n"]


def container_exits(pod_states: pd.DataFrame) -> dict[str, int]:
    """Each container exit the watch showed outside a deletion (one per Pod and restart count),
    counted by exit code and reason."""
    restarting = pod_states[pod_states["state"].astype(str) == "restarting"]
    exits = restarting.drop_duplicates(["uid", "restart_count", "last_exit_code"])
    labels = [
        f"exit {'?' if pd.isna(code) else int(code)} ({'?' if pd.isna(reason) else reason})"
        for code, reason in zip(exits["last_exit_code"], exits["last_exit_reason"], strict=True)
    ]
    return {str(k): int(v) for k, v in pd.Series(labels, dtype="object").value_counts().items()}


def scenario_name(scenario: dict[str, Any], run_id: str) -> str:
    return str(scenario.get("name") or scenario.get("recipe") or run_id)
