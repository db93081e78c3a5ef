"""Recommendations: which rollout setting to change, by how much, and why — from this run's
measured timings and failure causes, never from rules of thumb alone.

Pure: facts in, recommendations out. Each recommendation quotes the numbers it rests on and says
so plainly when there are too few samples to rest on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from analyzer.report.facts import RunFacts

Verdict = Literal["ok", "change", "unknown"]

#: Added on top of a measured p99: the next rollout is not this one, and kube-proxy's sync
#: period alone moves propagation by up to a second (docs/architecture.md#reference-timings).
MARGIN_S = 1.0
#: Fewer samples than this and a p99 is just the maximum of a handful: say so.
THIN_SAMPLES = 5


@dataclass(frozen=True)
class Recommendation:
    topic: str
    verdict: Verdict
    advice: str
    reasoning: str


def _stats(facts: RunFacts, name: str) -> tuple[int, float | None]:
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


def _prestop_basis(facts: RunFacts) -> tuple[float, str, int] | None:
    """The longest time after deletion that traffic still reached a Pod — (seconds, what
    measured it, samples): the propagation p99 from node captures, or the endpoint-lag failures'
    p99 time since deletion when that is longer (they prove routing lasted at least that long)."""
    n, p99 = _stats(facts, "propagation")
    basis: list[tuple[float, str, int]] = []
    if n and p99 is not None:
        basis.append(
            (
                p99,
                f"New connections still reached deleted Pods up to {p99:.2f} s (p99 of {n}) "
                "after their endpoint left",
                n,
            )
        )
    if facts.lag_after_deletion_ms is not None:
        lag_s = facts.lag_after_deletion_ms / 1000
        basis.append(
            (
                lag_s,
                f"endpoint-lag failures started up to {lag_s:.2f} s (p99 of "
                f"{facts.lag_samples}) after their Pod's deletion",
                facts.lag_samples,
            )
        )
    if not basis:
        return None
    return max(basis, key=lambda b: b[0])


def _prestop_needed(longest_s: float) -> int:
    """The preStop sleep that covers traffic still arriving ``longest_s`` after deletion."""
    return math.ceil(longest_s + MARGIN_S)


def _prestop_target(facts: RunFacts) -> float | None:
    basis = _prestop_basis(facts)
    return None if basis is None else _prestop_needed(basis[0])


def prestop(facts: RunFacts) -> Recommendation:
    lag = facts.failed_by_cause.get("endpoint-lag", 0)
    configured = facts.settings.prestop_s
    basis = _prestop_basis(facts)
    if basis is None:
        return Recommendation(
            "preStop",
            "unknown",
            "Cannot size preStop from this run: endpoint propagation was not measured.",
            "Nothing in this run showed traffic reaching a Pod after its endpoint left "
            f"({facts.timings.get('note', 'no samples')}); {lag} endpoint-lag failure(s). "
            f"Configured preStop: {_configured(configured)}.",
        )
    p99, why, n = basis
    target = _prestop_needed(p99)
    measured = (
        f"{why}; + {MARGIN_S:g} s margin = {target:g} s. Configured: "
        f"{_configured(configured)}; {lag} request(s) failed with endpoint-lag."
    )
    verdict: Verdict
    if lag:
        verdict, advice = "change", f"preStop sleep ≥ {target:g} s."
    elif configured is None:
        verdict, advice = "unknown", f"preStop sleep ≥ {target:g} s (the run does not record it)."
    elif configured >= target:
        verdict, advice = "ok", f"preStop sleep ≥ {target:g} s (as configured)."
    elif configured >= p99:
        verdict = "ok"
        advice = (
            f"preStop {configured:g} s held, {configured - p99:.2f} s longer than the measured "
            f"p99; ≥ {target:g} s leaves the recommended margin."
        )
    else:
        verdict, advice = "change", f"preStop sleep ≥ {target:g} s."
        measured += (
            " No request failed this time only because the app still accepted connections "
            "after preStop ended."
        )
    note = facts.timings.get("note")
    caveat = f" Note: {note}." if note else ""
    return Recommendation("preStop", verdict, advice, measured + caveat + _thin(n))


def grace_period(facts: RunFacts) -> Recommendation:
    cut = facts.failed_by_cause.get("inflight-cut", 0)
    n, drain_p99 = _stats(facts, "drain")
    configured_prestop = facts.settings.prestop_s or 0.0
    prestop_needed = max(_prestop_target(facts) or 0.0, configured_prestop)
    grace = facts.settings.grace_s
    if n == 0 or drain_p99 is None:
        return Recommendation(
            "terminationGracePeriodSeconds",
            "unknown",
            f"Keep terminationGracePeriodSeconds ≥ preStop ({prestop_needed:g} s) + the app's "
            "drain time; this run did not measure the drain.",
            f"No deleted Pod served a response after its deletion was observed. Configured grace: "
            f"{_configured(grace)}; {cut} inflight-cut failure(s).",
        )
    # measured drain runs from deletion, so it already contains the preStop that ran
    after_prestop = max(drain_p99 - configured_prestop, 0.0)
    target = math.ceil(prestop_needed + after_prestop + MARGIN_S)
    enough = grace is not None and grace >= target
    measured = (
        f"Deleted Pods served their last response up to {drain_p99:.2f} s (p99 of {n}) after "
        f"deletion, i.e. {after_prestop:.2f} s after the configured preStop of "
        f"{configured_prestop:g} s; preStop {prestop_needed:g} s + {after_prestop:.2f} s + "
        f"{MARGIN_S:g} s margin = {target} s. Configured: {_configured(grace)}."
    )
    killed = facts.failed_by_cause.get("killed-at-grace", 0)
    if killed:
        return Recommendation(
            "terminationGracePeriodSeconds",
            "change",
            f"terminationGracePeriodSeconds ≥ {max(target, math.ceil((grace or 0) + MARGIN_S))} s"
            " at the very least — longer than preStop + the app's whole drain — or shorten "
            "preStop / the drain so the app exits by itself before the grace period ends.",
            f"{killed} request(s) were still in flight when SIGKILL ended the grace period "
            f"({_configured(grace)} after deletion, preStop {configured_prestop:g} s): the drain "
            f"was cut short, so it needs longer than measured. {measured}{_thin(n)}",
        )
    if enough and cut:
        return Recommendation(
            "terminationGracePeriodSeconds",
            "change",
            f"The grace period is long enough (≥ {target} s); make the app drain on SIGTERM: "
            "stop accepting, finish in-flight requests, then exit.",
            f"{measured} Yet {cut} request(s) were cut in flight: the app ended them before "
            f"the grace period did.{_thin(n)}",
        )
    return Recommendation(
        "terminationGracePeriodSeconds",
        "ok" if enough else "change",
        f"terminationGracePeriodSeconds ≥ {target} s" + (" (as configured)." if enough else "."),
        f"{measured} {cut} request(s) were cut in flight.{_thin(n)}",
    )


def readiness(facts: RunFacts) -> Recommendation:
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
        return Recommendation(
            "readiness probe",
            "change",
            "Add an HTTP readiness probe that succeeds only when the app can serve."
            if probe in (None, "none")
            else "Make the readiness probe succeed only when the app can serve: it passed early.",
            f"{not_ready} request(s) reached new Pods before they could serve (not-ready). "
            f"Configured probe: {probe or 'not recorded'}"
            f"{'' if period is None or probe == 'none' else f', every {period:g} s'}. {measured}",
        )
    if probe == "none":
        return Recommendation(
            "readiness probe",
            "change",
            "Add an HTTP readiness probe: none is configured, this run was lucky.",
            f"No not-ready failure this time, but without a probe a Pod is Ready when its "
            f"container starts. {measured}",
        )
    verdict: Verdict = "ok" if probe is not None else "unknown"
    return Recommendation(
        "readiness probe",
        verdict,
        "Keep the readiness probe: no request reached a Pod before it could serve.",
        f"Configured probe: {probe or 'not recorded'}"
        f"{'' if period is None else f', every {period:g} s'}. {measured}{_thin(n)}",
    )


def capacity(facts: RunFacts) -> Recommendation:
    short = facts.failed_by_cause.get("overload", 0) + facts.failed_by_cause.get("no-endpoints", 0)
    s = facts.settings
    setting = (
        f"replicas {s.replicas if s.replicas is not None else '?'}, maxSurge "
        f"{s.max_surge if s.max_surge is not None else '?'}, maxUnavailable "
        f"{s.max_unavailable if s.max_unavailable is not None else '?'}"
    )
    if short:
        return Recommendation(
            "maxUnavailable / maxSurge",
            "change",
            "Set maxUnavailable 0 and maxSurge ≥ 1 so that capacity never drops during the "
            "rollout"
            + (
                " (with 1 replica this is the only way to keep an endpoint)."
                if s.replicas == 1
                else "."
            ),
            f"{setting}; {facts.failed_by_cause.get('overload', 0)} overload and "
            f"{facts.failed_by_cause.get('no-endpoints', 0)} no-endpoints failure(s): the ready "
            "Pods could not carry the load while old ones left before new ones were Ready.",
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


def local_policy(facts: RunFacts) -> Recommendation | None:
    """Only for externalTrafficPolicy Local: the options of
    docs/architecture.md#externaltrafficpolicy-local."""
    if str(facts.settings.traffic_policy or "").lower() != "local":
        return None
    lag = facts.failed_by_cause.get("lb-lag", 0)
    fallback = facts.settings.terminating_fallback
    return Recommendation(
        "externalTrafficPolicy: Local",
        "change" if lag else "ok",
        "Keep a serving endpoint on every node the LB sends to until its health check steers "
        "away: maxSurge so the new Pod lands before the old one leaves (or topology spread), "
        "terminating-endpoint fallback (KEP-1669), a preStop longer than health-check interval × "
        "unhealthy threshold, or Cluster policy when the client source IP is not needed.",
        f"{lag} request(s) failed with lb-lag: the LB sent them to a node whose last local "
        f"endpoint was gone. Terminating-endpoint fallback: "
        f"{'not recorded' if fallback is None else ('on' if fallback else 'off')}.",
    )


def keepalive(facts: RunFacts) -> Recommendation | None:
    race = facts.failed_by_cause.get("keepalive-race", 0)
    if not race:
        return None
    return Recommendation(
        "keep-alive draining",
        "change",
        "While draining, answer the next request on each idle keep-alive connection with "
        "'Connection: close' instead of closing idle connections with a FIN; clients should "
        "retry idempotent requests that fail on a reused connection.",
        f"{race} request(s) were sent on a reused connection just as the server closed it.",
    )


def container_restarts(facts: RunFacts) -> Recommendation | None:
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
    )


def evidence(facts: RunFacts) -> Recommendation | None:
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
    )


def recommend(facts: RunFacts) -> list[Recommendation]:
    """Every recommendation that applies to this run, the settings to change first."""
    found = [prestop(facts), grace_period(facts), readiness(facts), capacity(facts)]
    optional = (local_policy(facts), keepalive(facts), container_restarts(facts))
    found += [r for r in optional if r is not None]
    caveat = evidence(facts)
    if caveat is not None:
        return [caveat, *_ranked(found)]
    return _ranked(found)


def _ranked(found: list[Recommendation]) -> list[Recommendation]:
    rank = {"change": 0, "unknown": 1, "ok": 2}
    return sorted(found, key=lambda r: rank[r.verdict])
