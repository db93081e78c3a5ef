"""What the report says, as numbers: pure functions from a run's tables to the facts every
figure title, table and recommendation quotes — computed once here so that a count in a title
can never disagree with the same count in a table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analyzer import events, metrics
from analyzer.advice import (
    Recommendation,
    RolloutSettings,
    container_exits,
    lag_after_deletion,
    rollout_settings,
    scenario_name,
)
from analyzer.report.style import cause_order
from analyzer.run import Run
from analyzer.schema import TruthEvent

_NS_PER_S = 1_000_000_000

#: What each cause means, in the words a headline uses after "N because".
CAUSE_PHRASE: dict[str, str] = {
    "not-ready": "they reached new Pods before the application could serve",
    "endpoint-lag": "new connections reached Pods that had stopped accepting while rules still "
    "routed to them",
    "inflight-cut": "terminating Pods cut requests in flight",
    "container-restart": "their container exited or was restarting while the Pod stayed",
    "killed-at-grace": "SIGKILL at the end of the grace period cut requests in flight",
    "keepalive-race": "they were sent on keep-alive connections the server was closing",
    "proxy-endpoint-lag": "an L7 hop still sent them to Pods that had left the Service, from "
    "its own endpoint list",
    "backend-keepalive-race": "an L7 hop reused pooled connections the app had closed as idle",
    "lb-lag": "the load balancer still sent them to a node without a serving endpoint",
    "no-endpoints": "the Service had no ready endpoint",
    "overload": "the ready Pods were too few or too slow to carry the load",
    "unexplained": "no known cause fits the evidence",
}


@dataclass(frozen=True)
class ExampleRequest:
    """One failed request quoted as an example of its cause."""

    request_id: int
    t_s: float  # start, seconds since the report's time zero
    error_kind: str
    connection: str  # "new" or "reused"
    pod: str  # or "unknown"
    pod_method: str
    evidence: str
    #: client → hop → upstream (Pod) where an L7 hop logged the request; None: no hop did
    path: str | None = None


@dataclass(frozen=True)
class CauseRow:
    cause: str
    failed: int
    share: float
    mean_confidence: float
    evidence: str  # the evidence of the most confident example
    examples: list[ExampleRequest]  # the most confident first


@dataclass(frozen=True)
class ConnectionRow:
    kind: str  # "new" or "reused"
    requests: int
    failed: int
    disruption_s: int


@dataclass
class RunFacts:
    """Everything quoted by the report of one run."""

    run_id: str
    status: str
    backend: str
    scenario_name: str
    t0_ns: int  # the report's time zero: load start
    phases: dict[str, int]
    total: int
    failed: int
    causes: list[CauseRow]
    connections: list[ConnectionRow]
    timings: dict[str, Any]
    settings: RolloutSettings
    headline: str
    inputs: dict[str, Any] = field(default_factory=dict)
    #: Why the analysis saw less than happened (summary.json ``degraded_because``): counts built
    #: on what it lost are lower bounds.
    degraded_because: list[str] = field(default_factory=list)
    #: Failures per way they were tied to a Pod (summary.json ``pod_match``).
    pod_match: dict[str, int] = field(default_factory=dict)
    #: p99 of (request start − Pod deletion) over endpoint-lag failures, in ms, and how many:
    #: traffic routed to a Pod that long after its deletion shows propagation lasted at least that
    #: long, even where node captures could not measure it.
    lag_after_deletion_ms: float | None = None
    lag_samples: int = 0
    #: Container exits without a deletion, by "exit <code> (<reason>)": what crashed or was
    #: killed by its liveness probe (from the pod_states table).
    container_exits: dict[str, int] = field(default_factory=dict)
    #: What ``rolltrace import`` said of the traces it assembled (run.json ``import.notes``): how
    #: requests were joined to the capture, traffic left out, coarse watch times.
    import_notes: list[str] = field(default_factory=list)
    #: What to change, as the analysis decided it (summary.json ``recommendations``).
    recommendations: list[Recommendation] = field(default_factory=list)
    #: Why the run is not ``complete`` (run.json ``status_reasons``): stopped early, a component
    #: that died, a full disk, a load that fell short.
    status_reasons: list[str] = field(default_factory=list)
    #: The load asked for and sent (run.json ``load``), None for runs that do not record it.
    delivered_rate: float | None = None
    asked_rate: float | None = None
    #: Per L7 hop whose access log the run holds: requests it retried and masked, their failed
    #: attempts and latency cost (summary.json ``masked_retries``); empty without hop logs.
    masked_retries: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_by_cause(self) -> dict[str, int]:
        return {row.cause: row.failed for row in self.causes}


def cause_table(
    failures: pd.DataFrame, t0_ns: int, evidence: dict[str, str], examples: int = 3
) -> list[CauseRow]:
    """Counts, shares and the evidence that decided each cause, most frequent first.
    ``evidence``: per cause, the evidence of its most confident failure (the summary's
    ``evidence_examples``)."""
    total = len(failures)
    rows = []
    for cause in cause_order(failures["cause"].astype(str).unique()):
        group = failures[failures["cause"].astype(str) == cause]
        best = group.sort_values(["confidence", "start_ns"], ascending=[False, True])
        rows.append(
            CauseRow(
                cause=cause,
                failed=len(group),
                share=len(group) / total,
                mean_confidence=round(float(group["confidence"].mean()), 3),
                evidence=evidence[cause],
                examples=[
                    ExampleRequest(
                        request_id=int(row["request_id"]),
                        t_s=(int(row["start_ns"]) - t0_ns) / _NS_PER_S,
                        error_kind=str(row["error_kind"]),
                        connection="reused" if bool(row["conn_reused"]) else "new",
                        pod="unknown" if pd.isna(row["pod"]) else str(row["pod"]),
                        pod_method=str(row["pod_method"]),
                        evidence=str(row["evidence"]),
                        path=None if pd.isna(row.get("path", pd.NA)) else str(row["path"]),
                    )
                    for _, row in best.head(examples).iterrows()
                ],
            )
        )
    return sorted(rows, key=lambda r: -r.failed)


def connection_table(requests: pd.DataFrame, failures: pd.DataFrame) -> list[ConnectionRow]:
    """Requests, failures and disruption seconds for new and for reused connections."""
    reused_req = ~requests["conn_new"].astype(bool)
    reused_fail = failures["conn_reused"].astype(bool)
    seconds = metrics.disruption_seconds(failures)
    return [
        ConnectionRow(
            kind=kind,
            requests=int(req_mask.sum()),
            failed=int(fail_mask.sum()),
            disruption_s=seconds[kind],
        )
        for kind, req_mask, fail_mask in (
            ("new", ~reused_req, ~reused_fail),
            ("reused", reused_req, reused_fail),
        )
    ]


def cause_detail(cause: str, group: pd.DataFrame) -> str:
    """The number that makes a cause's sentence a finding, from the failures table itself."""

    def _max_s(column: str) -> float | None:
        values = pd.to_numeric(group[column], errors="coerce").dropna()
        return None if values.empty else float(values.max()) / 1000

    lagging = cause in {"endpoint-lag", "proxy-endpoint-lag"}
    if lagging and (late := _max_s("ms_since_deletion")) is not None:
        return f", up to {late:.1f} s after their deletion was observed"
    if cause == "not-ready" and (late := _max_s("ms_since_ready")) is not None:
        return f", up to {late:.1f} s after they were first seen Ready"
    per_pod = {"inflight-cut", "keepalive-race", "backend-keepalive-race", "container-restart"}
    if cause in per_pod or cause == "killed-at-grace":
        return f", on {group['pod'].nunique()} Pod(s)"
    span = (int(group["end_ns"].max()) - int(group["start_ns"].min())) / _NS_PER_S
    return f", over {span:.1f} s"


def headline(total: int, failures: pd.DataFrame, causes: list[CauseRow]) -> str:
    """The finding in one sentence, with the counts of the tables."""
    failed = sum(row.failed for row in causes)
    if failed == 0:
        return f"No request failed ({total} requests)"
    top = causes[0]
    detail = cause_detail(top.cause, failures[failures["cause"].astype(str) == top.cause])
    text = (
        f"{failed} of {total} requests failed; {top.failed} because "
        f"{CAUSE_PHRASE.get(top.cause, top.cause)}{detail}"
    )
    if len(causes) > 1:
        others = ", ".join(f"{row.failed} {row.cause}" for row in causes[1:])
        text += f" ({others})"
    return text


def run_facts(run: Run) -> RunFacts:
    meta = run.meta
    first = int(run.requests["start_ns"].min()) if len(run.requests) else 0
    t0 = meta.phase("load_start") or first
    causes = cause_table(run.failures, int(t0), run.summary["evidence_examples"])
    total = len(run.requests)
    scenario = meta.scenario
    lag_ms, lag_n = lag_after_deletion(run.failures)
    return RunFacts(
        run_id=meta.run_id,
        status=meta.status.value,
        backend=meta.backend,
        scenario_name=scenario_name(scenario, meta.run_id),
        t0_ns=int(t0),
        phases=dict(meta.phases),
        total=total,
        failed=len(run.failures),
        causes=causes,
        connections=connection_table(run.requests, run.failures),
        timings=dict(run.summary["timings"]),
        settings=rollout_settings(scenario, meta.service, meta.extra_fields().get("hops")),
        headline=headline(total, run.failures, causes),
        inputs=dict(run.summary["inputs"]),
        degraded_because=list(run.summary.get("degraded_because", [])),
        pod_match=dict(run.summary.get("pod_match", {})),
        lag_after_deletion_ms=lag_ms,
        lag_samples=lag_n,
        container_exits=container_exits(run.pod_states),
        import_notes=[str(n) for n in (meta.extra_fields().get("import") or {}).get("notes", [])],
        recommendations=[
            Recommendation.from_json(r) for r in run.summary.get("recommendations") or []
        ],
        status_reasons=list(meta.status_reasons),
        delivered_rate=meta.load.delivered_rate if meta.load is not None else None,
        asked_rate=meta.load.asked_rate if meta.load is not None else None,
        masked_retries=dict(run.summary.get("masked_retries") or {}),
    )


def read_truth(path: str | os.PathLike[str]) -> pd.DataFrame:
    """truth.jsonl's lifecycle lines (ground truth of the local cluster or the trace builder)
    as ``ts_ns, event, pod, node`` plus ``endpoints`` (list of Pod names) for rules-programmed.
    Drawn in the report, clearly labelled; never used to decide a cause. Read tolerantly by
    ``events.read_truth`` (damaged lines are left out); empty when absent."""
    truth = events.read_truth(path, tolerant=True)
    truth = truth[truth["event"] != TruthEvent.REQUEST_CAUSE.value]
    endpoints = [
        [e.get("pod") for e in eps if isinstance(e, dict)] if isinstance(eps, list) else None
        for eps in (fields.get("endpoints") for fields in truth["fields"])
    ]
    return truth.assign(endpoints=pd.Series(endpoints, index=truth.index, dtype=object))[
        ["ts_ns", "event", "pod", "node", "endpoints"]
    ]


def rules_dropped(truth: pd.DataFrame) -> pd.DataFrame:
    """When each node's rules stopped listing each Pod they had listed: ``pod, node, ts_ns``."""
    rules = truth[truth["event"] == TruthEvent.RULES_PROGRAMMED.value]
    out = []
    for node, group in rules.groupby("node", sort=True):
        listed: set[str] = set()
        for ts, endpoints in zip(group["ts_ns"], group["endpoints"], strict=True):
            now = {str(p) for p in endpoints or [] if p}
            out += [{"pod": pod, "node": str(node), "ts_ns": int(ts)} for pod in listed - now]
            listed = now
    return pd.DataFrame(out, columns=["pod", "node", "ts_ns"])
