"""Scores the analyzer's causes against the local cluster's ground truth (truth.jsonl).

The analyzer decides causes from what a real cluster shows; the local cluster also records what
really happened: when each app listened, became able to serve, stopped accepting and exited,
which endpoints each node's rules held at every moment, and what the LB believed about each
target. From that state at a failed request's start, this module derives the causes that are
*admissible* for it (usually exactly one). Agreement is the share of failed requests whose
analyzer cause is admissible.

The one fact truth cannot give is which Pod a failed connection reached (the kernel's random
NAT choice is not logged). Where the response named the Pod, or a node-side capture saw the
connection reach it, that identity is fact and is used; otherwise every Pod the rules could
have chosen is considered, and the admissible set is the union over them.

Trace-builder runs carry the injected cause of each failed request as ``request-cause`` lines;
those are used directly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from analyzer.events import read_truth
from analyzer.rundir import RunPaths, read_run_meta
from analyzer.schema import Cause, PodMatch

_CONNECT_ERRORS = {"refused", "connect-timeout", "unreachable"}
_CUT_ERRORS = {"reset", "eof"}
_CLOSE_RACE_NS = 2_000_000_000  # a server close this long before a send still races it


@dataclass
class PodTruth:
    node: str | None = None
    listening_ns: int | None = None
    ready_ns: int | None = None
    stopped_ns: int | None = None
    exited_ns: int | None = None


@dataclass
class TruthState:
    pods: dict[str, PodTruth] = field(default_factory=lambda: defaultdict(PodTruth))
    # node -> [(ts, {pod: terminating})] in time order
    rules: dict[str, list[tuple[int, dict[str, bool]]]] = field(default_factory=dict)
    # LB target -> [(ts, healthy)]
    lb_health: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    # [(ts, targets)]: what the LB sends to (Pod names in Pod-target mode, else node names)
    lb_targets: list[tuple[int, set[str]]] = field(default_factory=list)
    injected: dict[int, str] = field(default_factory=dict)

    def rules_at(self, node: str, t: int) -> dict[str, bool] | None:
        return _value_at(self.rules.get(node, []), t, None)

    def lb_targets_at(self, t: int) -> set[str]:
        return _value_at(self.lb_targets, t, set())

    def lb_healthy_at(self, target: str, t: int) -> bool:
        # a registered target is sent traffic until checks say otherwise
        return _value_at(self.lb_health.get(target, []), t, True)


V = TypeVar("V")
D = TypeVar("D")


def _value_at(history: list[tuple[int, V]], t: int, default: D) -> V | D:
    """The last value recorded at or before ``t`` in a time-ordered history, else ``default``."""
    current: V | D = default
    for ts, value in history:
        if ts > t:
            break
        current = value
    return current


def truth_state(path: Path) -> TruthState:
    """The ground-truth state from truth.jsonl, read and checked by the analyzer's reader
    (which sorts by time, so the first record of each kind is the earliest)."""
    state = TruthState()
    for row in read_truth(path).to_dict("records"):
        event, ts, fields = row["event"], int(row["ts_ns"]), row["fields"]
        pod = row["pod"] if isinstance(row["pod"], str) else None
        node = row["node"] if isinstance(row["node"], str) else None
        if pod and node and str(row["source"]).startswith("kubelet/"):
            state.pods[pod].node = node
        if event == "request-cause":
            state.injected[int(fields["request_id"])] = str(fields["cause"])
        elif event == "listening" and pod:
            state.pods[pod].listening_ns = state.pods[pod].listening_ns or ts
        elif event == "ready-to-serve" and pod:
            state.pods[pod].ready_ns = state.pods[pod].ready_ns or ts
        elif event == "stopped-accepting" and pod:
            state.pods[pod].stopped_ns = state.pods[pod].stopped_ns or ts
        elif event == "exited" and pod:
            truth = state.pods[pod]
            truth.exited_ns = truth.exited_ns or ts
            truth.stopped_ns = truth.stopped_ns or ts
        elif event == "rules-programmed" and node:
            endpoints = {e["pod"]: bool(e.get("terminating")) for e in fields["endpoints"]}
            state.rules.setdefault(node, []).append((ts, endpoints))
        elif event == "lb-targets-changed":
            state.lb_targets.append((ts, set(fields["targets"])))
        elif event == "lb-health-changed":
            state.lb_health.setdefault(fields["target"], []).append((ts, bool(fields["healthy"])))
    return state


def _pod_problem(truth: PodTruth, t: int) -> str | None:
    """Why a Pod reached at time t could not serve a new connection, if it could not."""
    if truth.stopped_ns is not None and truth.stopped_ns <= t:
        return Cause.ENDPOINT_LAG
    if truth.ready_ns is None or t < truth.ready_ns:
        return Cause.NOT_READY
    return None


def _local_usable(state: TruthState, node: str, t: int, fallback: bool) -> set[str]:
    """Endpoints a node may use for external traffic under Local policy: its own ready Pods,
    or (KEP-1669 fallback) its own serving-terminating ones when it has no ready Pod."""
    local = {p: term for p, term in (state.rules_at(node, t) or {}).items()
             if state.pods.get(p, PodTruth()).node == node}  # fmt: skip
    ready = {p for p, terminating in local.items() if not terminating}
    return ready or (set(local) if fallback else set())


def admissible_causes(
    request: pd.Series,
    failure: pd.Series | None,
    state: TruthState,
    local_policy: bool,
    fallback: bool = True,
    lb_targets_pods: bool = False,
) -> set[str]:
    """The causes consistent with ground truth for one failed request."""
    t, kind = int(request["start_ns"]), str(request["error_kind"])
    known_pod = None
    if failure is not None and failure.get("pod_method") in (
        PodMatch.HEADER,
        PodMatch.NODE_CAPTURE,
    ):
        known_pod = failure.get("pod")
    if kind == "http-5xx" and request.get("pod") is not pd.NA and request.get("pod"):
        truth = state.pods.get(str(request["pod"]))
        ready = truth is not None and truth.ready_ns is not None and truth.ready_ns <= t
        return {Cause.OVERLOAD} if ready else {Cause.NOT_READY}
    routable: dict[str, set[str]] = {}
    for node in state.rules:
        endpoints = state.rules_at(node, t) or {}
        routable[node] = set(endpoints)
    everywhere = set().union(*routable.values()) if routable else set()
    if kind in _CONNECT_ERRORS and lb_targets_pods:
        # the LB picked the Pod from its own target list; kube-proxy was not on the path
        targets = [known_pod] if known_pod else sorted(state.lb_targets_at(t))
        if any(_pod_problem(state.pods.get(p, PodTruth()), t) == Cause.ENDPOINT_LAG
               or p not in state.pods for p in targets):  # fmt: skip
            return {Cause.LB_LAG}
        return {Cause.OVERLOAD, Cause.UNEXPLAINED}
    if kind in _CONNECT_ERRORS:
        causes: set[str] = set()
        candidates = [known_pod] if known_pod else sorted(everywhere)
        for pod in candidates:
            problem = _pod_problem(state.pods.get(pod, PodTruth()), t)
            if problem:
                causes.add(problem)
        if local_policy and any(
            state.lb_healthy_at(node, t) and not _local_usable(state, node, t, fallback)
            for node in routable
        ):
            causes.add(Cause.LB_LAG)
        if not everywhere:
            causes.add(Cause.NO_ENDPOINTS)
        return causes or {Cause.OVERLOAD, Cause.UNEXPLAINED}
    if kind in _CUT_ERRORS:
        pods = [known_pod] if known_pod else sorted(state.pods)
        causes = set()
        end = int(request["end_ns"])
        for pod in pods:
            truth = state.pods.get(pod, PodTruth())
            gone = truth.exited_ns if truth.exited_ns is not None else truth.stopped_ns
            if gone is None:
                continue
            if t <= gone <= end + 50_000_000:
                causes.add(Cause.INFLIGHT_CUT)
            elif t - _CLOSE_RACE_NS <= gone < t:
                causes.add(
                    Cause.KEEPALIVE_RACE if not bool(request["conn_new"]) else Cause.INFLIGHT_CUT
                )
        if not bool(request["conn_new"]):
            causes.add(Cause.KEEPALIVE_RACE)  # idle-timeout closes leave no truth event
        return causes or {Cause.UNEXPLAINED}
    # read-timeout and the rest: too little capacity, or a Pod that vanished mid-request
    causes = {Cause.OVERLOAD}
    if any(_pod_problem(state.pods.get(p, PodTruth()), t) for p in everywhere):
        causes |= {Cause.ENDPOINT_LAG, Cause.INFLIGHT_CUT}
    if local_policy:
        causes.add(Cause.LB_LAG)
    return causes


@dataclass
class Score:
    run: str
    failed: int
    agreed: int
    by_cause: dict[str, tuple[int, int]]  # analyzer cause -> (agreed, total)
    disagreements: list[dict[str, Any]]

    @property
    def agreement(self) -> float:
        return self.agreed / self.failed if self.failed else 1.0


def score_run(run_dir: Path | str) -> Score:
    """Compare an analyzed run's failures table with what truth.jsonl admits."""
    paths = RunPaths(run_dir)
    state = truth_state(paths.truth)
    meta = read_run_meta(paths.run_json)
    policy = meta.scenario.get("service", {}).get("external_traffic_policy", "Cluster")
    fallback = bool(meta.scenario.get("cluster", {}).get("terminating_fallback", True))
    pod_targets = meta.service.get("lb_targets") == "pods"
    requests = pd.read_parquet(paths.requests).set_index("request_id")
    failures = pd.read_parquet(paths.table("failures"))
    agreed = 0
    by_cause: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    disagreements = []
    for row in failures.to_dict("records"):
        request_id = int(row["request_id"])
        if request_id in state.injected:
            admissible = {state.injected[request_id]}
        else:
            request = requests.loc[request_id]
            assert isinstance(request, pd.Series), f"request id {request_id} is not unique"
            admissible = admissible_causes(
                request, pd.Series(row), state, policy == "Local", fallback, pod_targets
            )
        ok = row["cause"] in admissible
        agreed += ok
        by_cause[row["cause"]][0] += ok
        by_cause[row["cause"]][1] += 1
        if not ok:
            disagreements.append(
                {
                    "request_id": request_id,
                    "analyzer": row["cause"],
                    "truth": sorted(admissible),
                    "error_kind": row["error_kind"],
                    "pod": row["pod"],
                    "evidence": row["evidence"],
                }
            )
    return Score(
        str(paths.root),
        len(failures),
        agreed,
        {k: (v[0], v[1]) for k, v in by_cause.items()},
        disagreements,
    )
