"""Cause attribution: every failed request gets exactly one ``Cause``, its evidence and a confidence.

Pure: frames in, frames out, and only what a real cluster also shows (requests, packets, watch
events) — never truth.jsonl, which exists to score this module. The rules, their evidence and
their confidences are documented for people in ``docs/causes.md``; keep both in step.

Two steps, so that each can be tested on its own:

* ``cluster_state_at`` / ``failure_features`` gather, per failed request, the facts a rule may
  look at: the Pod and the state it was in at that moment (from the ``pod_states`` intervals:
  restarts, readiness flips, the grace period's end), the connection and how it ended, how many
  endpoints were ready, whether a node had lost its local endpoint. Every timing they compare
  with comes from the run itself (measured propagation, observed warm-up and idle closes, probe
  and LB settings in run.json, the Pod's own grace period); the few constants left say why.
* ``decide`` applies the rules in a fixed order (first match wins) with ``numpy.select``: a
  rollout that fails 100k requests is decided in one pass, not one Python call per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analyzer import hop_paths, joins, metrics
from analyzer.schema import (
    FAILURES,
    AttemptOutcome,
    Cause,
    ErrorKind,
    PodMatch,
    PodState,
    check_frame,
)

#: A server close seen at most this long after the request started still raced the request: the
#: FIN (or bare RST) and the request crossed on the wire (about one round trip, generously).
RACE_CROSSING_MS = 50.0
#: Without packets, a reused connection that failed this fast never had the request served.
FAST_FAILURE_MS = 20.0
#: Rules lag assumed when the run measured no propagation: kube-proxy's default minSyncPeriod
#: (1 s) is how long after a slice change a node's rules may still show the old endpoints.
DEFAULT_RULES_LAG_MS = 1_000.0
#: A second is congested when its p90 latency exceeds this many times the run's typical latency
#: (an order of magnitude of queueing, far above request-to-request jitter).
CONGESTION_FACTOR = 5.0
_SECOND_NS = 1_000_000_000
#: A Pod transition the watch reported this long after the request started still explains it
#: (watch delivery lags the API server by up to a few hundred ms).
WATCH_LAG_MS = 500.0
#: A bare RST closes a keep-alive connection the server found idle when the request met it
#: after at least this share of the run's usual server idle close (p90 of observed idle
#: closes): a request in steady traffic follows the previous one far sooner.
IDLE_TIMEOUT_SHARE = 0.5
#: Exit code of a container killed by SIGKILL (128 + 9): the kubelet's kill at the grace end.
SIGKILL_EXIT_CODE = 137
#: The kubelet never gives a container less than this after its preStop hook returns, even when
#: the hook used up the grace period: the SIGKILL comes up to this long after the grace ends.
KUBELET_MIN_GRACE_S = 2.0

_CONNECT_FAILURES = tuple(joins.CONNECT_FAILURES)
_CUT_KINDS = (ErrorKind.RESET.value, ErrorKind.EOF.value)
_DIRECT_POD = (PodMatch.HEADER.value, PodMatch.NODE_CAPTURE.value, PodMatch.HOP_LOG.value)
#: The hop-log facts of a failure no hop decided (``analyzer.hop_paths.hop_facts``' columns).
_NO_HOP: dict[str, Any] = {
    "hop": pd.NA,
    "hop_join": pd.NA,
    "upstream_addr": pd.NA,
    "hop_outcome": pd.NA,
    "hop_kind": pd.NA,
    "attempt_reused": False,
    "attempt_ms": np.nan,
    "hop_pod": pd.NA,
    "ms_since_leaving": np.nan,
    "upstream_close_ms": np.nan,
    "sync_interval_ms": np.nan,
    "hop_idle_ms": np.nan,
    "app_keepalive_ms": np.nan,
}


@dataclass(frozen=True)
class ServiceContext:
    """What attribution needs to know about the Service beyond the tables."""

    desired_replicas: int | None  # None: unknown, capacity is then never called short
    local_policy: bool  # externalTrafficPolicy: Local
    nodes: tuple[str, ...]  # nodes the LB may send to (for lb-lag)
    # The LB sends straight to Pod IPs (AWS/GKE "IP mode"): kube-proxy is not on the path, so
    # a new connection that met a Pod no longer serving was sent there by the LB's lag.
    lb_targets_pods: bool = False
    # How long a node's rules may trail the slices (the run's longest measured propagation,
    # else DEFAULT_RULES_LAG_MS)
    rules_lag_ms: float = DEFAULT_RULES_LAG_MS
    # How long before the watch shows a Pod NotReady its app may already fail: the readiness
    # probe's period × failureThreshold + timeout (run.json scenario.pod.readiness_probe);
    # None: unknown, then only "no success between the failure and NotReady" bounds it
    readiness_detect_ms: float | None = None
    # How long an LB keeps sending to a node after its last local endpoint left: health-check
    # interval × unhealthy threshold + timeout (run.json scenario.cluster.lb); None: unknown,
    # then a node lacks a local endpoint from losing its last one until it gets one again
    lb_unhealthy_after_ms: float | None = None
    # kube-proxy sends to serving terminating endpoints when a node has no ready one (KEP-1669,
    # on by default since Kubernetes 1.28): such an endpoint keeps the node usable
    terminating_fallback: bool = True
    # Per node, how long its rules were seen to trail the slices (measured propagation through
    # that node, under Local policy the capture's node); rules_lag_ms where not measured
    rules_lag_by_node_ms: dict[str, float] = field(default_factory=dict)
    # A measured lag is the last SYN a node was seen forwarding by its old rules: they changed
    # up to about one SYN interval through that node later. Within that spread a new local
    # endpoint only possibly reached a measured node's rules (``_nodes_lacking_local``)
    rules_lag_spread_ms: float = 0.0
    # How far a watch event's recorded time may be from when it happened: 0 for receive times;
    # for coarse times (kubectl imports, run.json ``event_times``) a typical bounds width
    # (``event_time_uncertainty_ms``). Endpoint changes then only surely or possibly happened.
    event_uncertainty_ms: float = 0.0


def event_time_uncertainty_ms(event_times: object) -> float:
    """How far a coarse event time may be off, from run.json ``event_times`` (written by the
    kubectl import): the median width of the events' [earliest, latest] bounds — each estimate
    lies inside its bounds, so it is off by at most that much. 0 when the times are receive
    times (no entry) or the import found no two-sided bounds."""
    if not isinstance(event_times, dict) or not event_times.get("coarse"):
        return 0.0
    width = event_times.get("median_uncertainty_ms")
    return float(width) if isinstance(width, int | float) and width > 0 else 0.0


def _step_count(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many [start, end) intervals cover each time (ends may be +inf)."""
    starts_sorted = np.sort(starts)
    ends_sorted = np.sort(ends)
    opened = np.searchsorted(starts_sorted, times, side="right")
    closed = np.searchsorted(ends_sorted, times, side="right")
    return (opened - closed).astype("int64")


def _interval_bounds(
    endpoints: pd.DataFrame, widen_ns: float = 0.0, late_start_ns: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (+inf: still open) of each interval, each moved ``widen_ns`` outwards:
    positive covers every moment the interval may have covered given its events' time
    uncertainty, negative only the moments it surely covered (intervals then shorter than the
    uncertainty vanish); starts then ``late_start_ns`` later (only the moments surely covered
    when the interval may have begun that much later)."""
    starts = endpoints["from_ns"].to_numpy(dtype="float64") - widen_ns + late_start_ns
    ends = pd.to_numeric(endpoints["to_ns"]).to_numpy(dtype="float64", na_value=np.inf) + widen_ns
    kept = ends >= starts  # an empty interval still marks when a state ended
    return starts[kept], ends[kept]


def _recently_below(
    t: np.ndarray, starts: np.ndarray, ends: np.ndarray, threshold: int, allowance: float
) -> np.ndarray:
    """Whether fewer than ``threshold`` intervals covered some moment of [t − allowance, t]
    (counted from the first interval's start: before it the watch had not reported yet)."""
    if len(starts) == 0:
        return np.zeros(len(t), dtype=bool)
    finite = np.isfinite(ends)
    times = np.concatenate([starts, ends[finite]])
    deltas = np.concatenate([np.ones(len(starts)), -np.ones(int(finite.sum()))])
    change_at, inverse = np.unique(times, return_inverse=True)
    count = np.cumsum(np.bincount(inverse, weights=deltas))
    low = np.flatnonzero(count < threshold)
    low_from = change_at[low]
    low_to = np.append(change_at, np.inf)[low + 1]
    return _step_count(t, low_from, low_to + allowance) > 0


def _nodes_lacking_local(
    t: np.ndarray, endpoints: pd.DataFrame, context: ServiceContext, possibly: bool = False
) -> np.ndarray:
    """How many nodes had lost their last usable local endpoint (ready, or serving while
    terminating where the fallback applies) recently enough that the LB may still send to them.
    A node sees the EndpointSlice one rules lag late, both ways: it keeps sending to the old Pod
    until its rules catch up with the loss, and it drops traffic until they catch up with the
    next local endpoint. So each node's endpoint intervals are shifted by its rules lag: none at
    t, one before, and — when the LB's health check timing is known — lost less than that long
    ago. A node that never had a Pod was never healthy to the LB: never counted. Surely: for
    every moment within the events' time uncertainty. ``possibly``: for some such moment, or for
    a rules lag up to ``rules_lag_spread_ms`` past the node's measured one (its rules may have
    taken a new local endpoint that much later)."""
    lacking = np.zeros(len(t), dtype="int64")
    if not context.local_policy:
        return lacking
    usable = endpoints["ready"].astype(bool)
    if context.terminating_fallback:
        usable |= endpoints["serving"].astype(bool)
    horizon = np.inf if context.lb_unhealthy_after_ms is None else context.lb_unhealthy_after_ms
    widen_ns = context.event_uncertainty_ms * 1e6 * (-1 if possibly else 1)
    for node in context.nodes:
        on_node = endpoints[usable & (endpoints["node"].astype("string") == node)]
        if on_node.empty:
            continue
        lag_ns = context.rules_lag_by_node_ms.get(node, context.rules_lag_ms) * 1e6
        measured = possibly and node in context.rules_lag_by_node_ms
        late_ns = context.rules_lag_spread_ms * 1e6 if measured else 0.0
        starts, ends = _interval_bounds(on_node, widen_ns, late_ns)
        # lost recently: a loss (an interval's end, seen through the rules lag) within
        # [t − horizon, t], for every (surely) or some (possibly) moment within its uncertainty
        losses = np.sort(_interval_bounds(on_node)[1] + lag_ns)
        recent = np.searchsorted(losses, t - widen_ns, side="right") > np.searchsorted(
            losses, t - horizon * 1e6 + widen_ns, side="left"
        )
        uncovered = _step_count(t, starts + lag_ns, ends + lag_ns) == 0
        lacking += (uncovered & recent).astype("int64")
    return lacking


def cluster_state_at(
    times: pd.Series, endpoints: pd.DataFrame, context: ServiceContext
) -> pd.DataFrame:
    """Per time: ready endpoints; whether the Service had no ready endpoint recently enough that
    a node's rules may still have shown none (within the run's rules lag);
    whether ready endpoints were below the desired replicas; how many nodes had recently lost
    their last local ready endpoint (``_nodes_lacking_local``). With coarse event times the
    no-endpoint and lacking-node facts come twice: surely (whatever moment within its
    uncertainty each endpoint change happened at) and possibly (for some such moment); so does
    the lacking-node fact where a node's measured rules lag leaves a spread."""
    t = times.to_numpy(dtype="float64")
    ready = endpoints[endpoints["ready"].astype(bool)]
    starts, ends = _interval_bounds(ready)
    uncertainty_ns = context.event_uncertainty_ms * 1e6
    lag_ns = context.rules_lag_ms * 1e6
    # ready only: serving-while-terminating endpoints are a fallback some proxies lack (KEP-1669),
    # and where the fallback works a refusal shows on the Pod's node instead
    no_endpoints = _recently_below(t, *_interval_bounds(ready, uncertainty_ns), 1, lag_ns)
    lacking = _nodes_lacking_local(t, endpoints, context)
    maybe_lacking = _nodes_lacking_local(t, endpoints, context, possibly=True)
    maybe_none = no_endpoints  # precise times: sure and possible agree
    if uncertainty_ns:
        maybe_none = _recently_below(t, *_interval_bounds(ready, -uncertainty_ns), 1, lag_ns)
    short = np.zeros(len(t), dtype=bool)
    if context.desired_replicas:
        short = _recently_below(t, starts, ends, context.desired_replicas, 0.0)
    return pd.DataFrame(
        {
            "ready_endpoints": _step_count(t, starts, ends),
            "no_endpoints_recently": no_endpoints,
            "capacity_short": short,
            "nodes_lacking_local": lacking,
            # narrowing may drop every interval, leaving nothing to count from: keep the sure
            "no_endpoints_possibly": maybe_none | no_endpoints,
            "nodes_possibly_lacking_local": maybe_lacking,
        },
        index=times.index,
    )


def previous_request_end(requests: pd.DataFrame, of: pd.Index) -> pd.Series:
    """For the requests at ``of``: end of the previous request on the same connection (how long
    the connection sat idle), NA for a connection's first request. Looked up by the integer key
    (conn_id, conn_seq − 1) rather than by sorting a million requests."""
    seq_bits = 24  # conn_seq < 16M requests per connection
    keys = requests["conn_id"].to_numpy(dtype="int64") << seq_bits
    keys += requests["conn_seq"].to_numpy(dtype="int64")
    wanted = requests.loc[of]
    want = (
        (wanted["conn_id"].to_numpy(dtype="int64") << seq_bits)
        + wanted["conn_seq"].to_numpy(dtype="int64")
        - 1
    )
    pos = pd.Index(keys).get_indexer(want) if pd.Index(keys).is_unique else np.full(len(of), -1)
    ends = requests["end_ns"].to_numpy(dtype="int64")
    values = pd.array(np.where(pos >= 0, ends[np.maximum(pos, 0)], 0), dtype="Int64")
    values[pos < 0] = pd.NA
    return pd.Series(values, index=of)


def _as_float(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def failure_features(
    requests: pd.DataFrame,
    client_conns: pd.DataFrame,
    pods: pd.DataFrame,
    endpoints: pd.DataFrame,
    context: ServiceContext,
    has_packets: bool,
    gaps: np.ndarray | None = None,
    pod_intervals: pd.DataFrame | None = None,
    hop_facts: pd.DataFrame | None = None,
    spans: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The facts ``decide`` looks at, one row per failed request.

    ``requests`` is the joined requests table: REQUESTS plus ``conn_key`` (the client-capture
    connection), ``pod_matched`` and ``pod_method`` (see ``analyzer.joins``). ``gaps``: the
    watch's GAP markers as rows (since_ns, recv_ns). ``pod_intervals``: the ``POD_STATES``
    table (Pod state over time); without it only the first transitions of ``pods`` are known.
    ``hop_facts``: ``analyzer.hop_paths.hop_facts`` of the failures an L7 hop logged.
    ``spans``: ``metrics.served_spans(requests)``, when the caller has it already.
    """
    failed = requests[requests["error_kind"] != ErrorKind.OK.value]
    states = joins.pod_states(failed["pod_matched"], failed["start_ns"], pods, gaps)
    features = _request_facts(requests, failed, client_conns, has_packets, states)
    features = features.join(states)
    features["server_idle_close_ms"] = server_idle_close_ms(client_conns)
    features["aborted_busy"] = _aborted_busy_connections(features)
    served = _served(requests)
    spans = metrics.served_spans(requests) if spans is None else spans
    features = features.join(_warmup_facts(requests, failed, pods, spans))
    # the client saw the cut when the server closed (packets) or when the request ended
    start, end = _as_float(failed["start_ns"]), _as_float(failed["end_ns"])
    server_close = start + _ms(features, "server_close_ms") * 1e6
    cut_ns = np.where(np.isnan(server_close), end, np.fmax(server_close, start))
    if pod_intervals is not None:
        at_pod = _as_the_pod_saw(failed, hop_facts)
        features = features.join(
            pod_interval_facts(at_pod, cut_ns, pods, pod_intervals, context, served, gaps)
        )
        known = features["interval_state"].notna()
        features.loc[known, "pod_state"] = features.loc[known, "interval_state"]
    else:
        features = features.join(_no_interval_facts(failed.index))
    features = features.join(cluster_state_at(failed["start_ns"], endpoints, context))
    second = failed["start_ns"].to_numpy(dtype="int64") // _SECOND_NS
    congested, after_shortage = congested_seconds(requests, endpoints, context)
    features["capacity_short_recently"] = features["capacity_short"].to_numpy(dtype=bool) | (
        np.isin(second, after_shortage)
    )
    features["congested"] = np.isin(second, congested)
    return features.join(_hop_columns(failed.index, hop_facts))


def _served(requests: pd.DataFrame) -> pd.DataFrame:
    """The successful requests whose Pod is known: its name, their start and whether they
    opened their connection (apart, so that the rows selected on the way are freed at once)."""
    ok = requests.loc[
        (requests["error_kind"] == ErrorKind.OK.value) & requests["pod_matched"].notna(),
        ["pod_matched", "start_ns", "conn_new"],  # only these: a million rows of every column
    ]
    return pd.DataFrame(
        {"pod": ok["pod_matched"].astype(str), "t": ok["start_ns"], "new": ok["conn_new"]}
    )


def _as_the_pod_saw(failed: pd.DataFrame, hop_facts: pd.DataFrame | None) -> pd.DataFrame:
    """``failed`` with each hop-decided failure's error kind replaced by what its hop's attempt
    met at the Pod (refused, cut, ...): the client saw the hop's 502, the Pod saw the attempt."""
    if hop_facts is None or hop_facts.empty:
        return failed
    kind = hop_facts["hop_kind"].dropna()
    kind = kind[kind.index.isin(failed.index)]
    out = failed.copy()
    out.loc[kind.index, "error_kind"] = kind.to_numpy()
    return out


def _hop_columns(index: pd.Index, hop_facts: pd.DataFrame | None) -> pd.DataFrame:
    """The hop facts of every failure: a hop's where one logged it, ``_NO_HOP`` elsewhere."""
    empty = pd.DataFrame({name: [value] * len(index) for name, value in _NO_HOP.items()})
    empty.index = index
    if hop_facts is None or hop_facts.empty:
        return empty
    return (
        hop_facts.reindex(index)
        .fillna({k: v for k, v in _NO_HOP.items() if v is not pd.NA})
        .astype({"attempt_reused": bool})
    )


def _request_facts(
    requests: pd.DataFrame,
    failed: pd.DataFrame,
    client_conns: pd.DataFrame,
    has_packets: bool,
    states: pd.DataFrame,
) -> pd.DataFrame:
    """Per failed request: what the request and its client connection show (reuse, age, idle,
    how and when the server closed it) and whether the Pod's deletion preceded its end."""
    idle_since = previous_request_end(requests, failed.index)
    conns = client_conns.set_index("conn_key")
    key = failed["conn_key"]

    def conn_col(name: str) -> pd.Series:
        if conns.empty:
            return pd.Series(pd.NA, index=failed.index)
        return joins.lookup(key, conns[name])

    start = failed["start_ns"].to_numpy(dtype="float64")
    end = failed["end_ns"].to_numpy(dtype="float64")
    server_fin = _as_float(conn_col("server_fin_ns"))
    server_rst = _as_float(conn_col("server_rst_ns"))
    server_close = np.fmin(server_fin, server_rst)
    deletion = start - _ms(states, "ms_since_deletion") * 1e6
    return pd.DataFrame(
        {
            "request_id": failed["request_id"],
            "start_ns": failed["start_ns"],
            "end_ns": failed["end_ns"],
            "error_kind": failed["error_kind"],
            "status_code": failed["status_code"],
            "first_byte_ns": failed["first_byte_ns"],
            "pod": failed["pod_matched"],
            "pod_method": failed["pod_method"],
            # a refused or unanswered SYN opened no connection to reuse, whatever the recorder says
            "conn_reused": ~failed["conn_new"].astype(bool)
            & ~failed["error_kind"].isin(_CONNECT_FAILURES),
            "conn_age_ms": pd.array(
                (start - _as_float(conn_col("established_ns"))) / 1e6, dtype="Float64"
            ),
            "conn_outcome": conn_col("outcome").astype("string"),
            "server_close_ms": pd.array((server_close - start) / 1e6, dtype="Float64"),
            # an orderly close answered by a reset: the peer's data hit a closed socket
            "fin_then_rst": server_rst >= server_fin,
            # a reset with no FIN before it: the server aborted the connection
            "bare_rst": ~np.isnan(server_rst) & ~(server_fin <= server_rst),
            "has_packets": has_packets & key.notna(),
            "idle_ms": pd.array((start - _as_float(idle_since)) / 1e6, dtype="Float64"),
            "pod_deleted_by_end": deletion <= end,
        },
        index=failed.index,
    )


def _aborted_busy_connections(features: pd.DataFrame) -> np.ndarray:
    """Whether the request's Pod, at the moment it reset this connection (within the crossing
    window), also reset another connection whose request it had long received: an app that
    aborts busy connections is exiting, so its resets at that moment cut requests in flight
    rather than closing idle keep-alive connections (which a draining app does alone)."""
    close_ms = _ms(features, "server_close_ms")
    at = features["start_ns"].to_numpy(dtype="float64") + close_ms * 1e6
    bare = features["bare_rst"].to_numpy(dtype=bool)
    busy = bare & (close_ms > RACE_CROSSING_MS)
    pods = features["pod"].astype("string")
    table = pd.DataFrame({"pod": pods[busy].to_numpy(), "t": at[busy], "hit": 1.0})
    table = table.dropna(subset=["pod"])
    earlier = _asof(pods, at, table.assign(seen=table["t"]), "backward")["seen"].to_numpy()
    later = _asof(pods, at, table.assign(seen=table["t"]), "forward")["seen"].to_numpy()
    window = RACE_CROSSING_MS * 1e6
    near = (np.abs(at - earlier) <= window) | (np.abs(later - at) <= window)
    return np.asarray(bare & ~busy & near, dtype=bool)


def server_idle_close_ms(client_conns: pd.DataFrame) -> float:
    """How long the server usually lets a keep-alive connection idle before closing it: the p90
    of (first server FIN/RST − last response byte) over connections the server closed after
    answering. NaN when no such close was captured (then a bare RST is never called a race)."""
    if client_conns.empty:
        return float("nan")
    closed = client_conns[client_conns["bytes_s2c"] > 0]
    close = np.fmin(_as_float(closed["server_fin_ns"]), _as_float(closed["server_rst_ns"]))
    idle = (close - _as_float(closed["last_s2c_data_ns"])) / 1e6
    idle = idle[idle > 0]
    return float(np.percentile(idle, 90)) if len(idle) else float("nan")


def _warmup_facts(
    requests: pd.DataFrame, failed: pd.DataFrame, pods: pd.DataFrame, spans: pd.DataFrame
) -> pd.DataFrame:
    """Whether each failed request's Pod had answered successfully before it (it could serve:
    a later failure there is not not-ready, however recently it turned Ready) or only after it
    (it was still warming up), and the run's longest observed warm-up: Ready → first success of
    Pods made Ready while load was running. ``spans``: ``metrics.served_spans``."""
    served_ns = _as_float(failed["pod_matched"].map(spans["first_ns"]))
    t = failed["start_ns"].to_numpy(dtype="float64")
    load_start = int(requests["start_ns"].min()) if len(requests) else 0
    lead = metrics.readiness_lead(pods, spans, load_start).to_numpy(dtype="float64")
    lead = lead[lead >= 0]  # negative: traffic came before the watch showed Ready
    return pd.DataFrame(
        {
            "pod_served_before": served_ns < t,
            "pod_served_after": served_ns >= t,
            "warmup_limit_ms": float(lead.max()) if len(lead) else np.nan,
        },
        index=failed.index,
    )


def _no_interval_facts(index: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "interval_state": pd.array([pd.NA] * len(index), dtype="string"),
            "in_restart": False,
            "pod_unable": False,
            "killed_at_grace": False,
            "last_exit_code": pd.array([pd.NA] * len(index), dtype="Int64"),
        },
        index=index,
    )


def _episode_ends(iv: pd.DataFrame, ended: np.ndarray) -> np.ndarray:
    """Per interval row: the start of the first row (itself included) of the same Pod where
    ``ended`` holds, +inf when none does (rows sorted by uid, from_ns)."""
    marks = pd.Series(np.where(ended, iv["from_ns"].to_numpy(dtype="float64"), np.nan))
    return marks.groupby(iv["uid"].to_numpy()).bfill().fillna(np.inf).to_numpy(dtype="float64")


def _restart_and_unready_episodes(iv: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pod, start, end) windows in which each Pod could not serve without being deleted.

    A restart episode runs from the earliest moment its container exit can have happened
    (``last_exit_ns``) until the Pod is Ready again (or deleted). An unready episode (a readiness
    flip with no exit) runs from NotReady until Ready again."""
    iv = iv.sort_values(["uid", "from_ns"], kind="stable").reset_index(drop=True)
    state = iv["state"].astype(str).to_numpy()
    by_pod = iv.groupby("uid", sort=False)
    exit_ns = _as_float(iv["last_exit_ns"])
    prev_exit = _as_float(by_pod["last_exit_ns"].shift())
    prev_state = by_pod["state"].shift().astype("string").fillna("").to_numpy(dtype=object)
    from_ns = iv["from_ns"].to_numpy(dtype="float64")
    leaving = np.isin(state, (PodState.TERMINATING.value, PodState.GONE.value))
    ended = iv["ready"].to_numpy(dtype=bool) | leaving
    until = _episode_ends(iv, ended)
    new_exit = ~np.isnan(exit_ns) & ~(exit_ns == prev_exit) & ~leaving

    def entered(name: str) -> np.ndarray:
        return np.asarray((state == name) & (prev_state != name), dtype=bool)

    restart = new_exit | entered(PodState.RESTARTING.value)
    restarts = pd.DataFrame(
        {
            "pod": iv["pod"].astype(str).to_numpy()[restart],
            "from": np.fmin(np.where(new_exit, exit_ns, from_ns), from_ns)[restart],
            "to": np.fmax(until, from_ns)[restart],
        }
    )
    unready = entered(PodState.UNREADY.value)
    unready_eps = pd.DataFrame(
        {
            "pod": iv["pod"].astype(str).to_numpy()[unready],
            "from": from_ns[unready],
            "to": until[unready],
        }
    )
    return restarts, unready_eps


def _asof(pods: pd.Series, t: np.ndarray, table: pd.DataFrame, direction: str) -> pd.DataFrame:
    """``merge_asof`` of (Pod, time) queries on ``table`` (columns pod, t, ...) by Pod: per
    query row, the table row at or before (``backward``) or after (``forward``) the time, in
    the queries' order (NaN where none)."""
    known = pods.notna().to_numpy() & ~np.isnan(t)
    out = pd.DataFrame(
        {c: np.full(len(pods), np.nan) for c in table.columns if c not in ("pod", "t")}
    )
    if table.empty or not known.any():
        return out
    left_pod, right_pod = joins.shared_codes(pods[known], table["pod"])
    left = pd.DataFrame({"i": np.flatnonzero(known), "pod": left_pod, "t": t[known]})
    right = table.assign(pod=right_pod, t=table["t"].to_numpy(dtype="float64"))
    merged = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        right.sort_values("t", kind="stable"),
        on="t",
        by="pod",
        direction=direction,  # type: ignore[arg-type]
    )
    for column in out.columns:
        out.loc[merged["i"].to_numpy(), column] = merged[column].to_numpy(dtype="float64")
    return out


def _in_episode(pods: pd.Series, t: np.ndarray, episodes: pd.DataFrame) -> np.ndarray:
    """Whether each (Pod, time) falls inside one of that Pod's episodes (pod, from, to)."""
    table = pd.DataFrame({"pod": episodes["pod"], "t": episodes["from"], "to": episodes["to"]})
    return np.asarray(t <= _asof(pods, t, table, "backward")["to"].to_numpy(), dtype=bool)


def _failing_into_unready(
    pods: pd.Series,
    t: np.ndarray,
    unready: pd.DataFrame,
    served: pd.DataFrame,
    detect_ms: float | None,
) -> np.ndarray:
    """Whether the Pod turned NotReady after ``t`` without answering successfully in between
    (its app was already failing while the probe caught up), and — when the probe settings are
    known — within the probe's detection time. ``served`` holds the successes that would prove
    the Pod could serve this request: for a refused SYN only new connections count (an app that
    closed its listener still answers on the connections it has)."""
    nxt = _asof(
        pods,
        t,
        pd.DataFrame({"pod": unready["pod"], "t": unready["from"]}).assign(at=unready["from"]),
        "forward",
    )["at"].to_numpy()
    ok = _asof(pods, t, served.assign(at=served["t"]), "forward")["at"].to_numpy()
    window = np.inf if detect_ms is None else detect_ms * 1e6
    return np.asarray((nxt - t <= window) & ~(ok < nxt), dtype=bool)


def pod_interval_facts(
    failed: pd.DataFrame,
    cut_ns: np.ndarray,
    pods: pd.DataFrame,
    pod_intervals: pd.DataFrame,
    context: ServiceContext,
    served: pd.DataFrame,
    gaps: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per failed request, from the Pod state intervals: the Pod's state at the request start;
    whether the request (its start, or the cut for a cut) fell in a restart episode; whether
    the Pod could not serve because of a readiness flip (``served``: successful requests as
    pod, t); whether its cut came when SIGKILL ended the grace period (between deletion +
    deletionGracePeriodSeconds and the observed termination, at most KUBELET_MIN_GRACE_S
    later; last exit 137 or unknown)."""
    pod = failed["pod_matched"].astype("string")
    start = failed["start_ns"].to_numpy(dtype="float64")
    kind = failed["error_kind"].astype(str).to_numpy()
    at = np.where(np.isin(kind, _CUT_KINDS), cut_ns, start)
    restarts, unready = _restart_and_unready_episodes(pod_intervals)
    connect_failure = np.isin(kind, _CONNECT_FAILURES)
    # each proof's rows are selected as it is used, so that both are never held at once
    into_unready = [
        _failing_into_unready(
            pod, start, unready, served.loc[rows, ["pod", "t"]], context.readiness_detect_ms
        )
        for rows in (slice(None), served["new"].astype(bool))
    ]
    unable = _in_episode(pod, start, unready) | np.where(
        connect_failure, into_unready[1], into_unready[0]
    )
    last = pod_intervals.sort_values("from_ns", kind="stable").drop_duplicates("pod", keep="last")
    last = last.set_index("pod")
    exit_code = joins.lookup(pod, last["last_exit_code"]).astype("Int64")
    grace_s = _as_float(joins.lookup(pod, last["deletion_grace_s"]))
    info = pods.drop_duplicates("pod", keep="last").set_index("pod")
    lag = WATCH_LAG_MS * 1e6
    # the SIGKILL comes at the grace end, or up to KUBELET_MIN_GRACE_S later when a preStop hook
    # used the grace up; the observed termination bounds it from above when the watch saw it
    grace_end = _as_float(joins.lookup(pod, info["deletion_ns"])) + grace_s * _SECOND_NS
    gone = pod_intervals[pod_intervals["state"].astype("string") == PodState.GONE.value]
    gone_at = _as_float(joins.lookup(pod, gone.groupby("pod")["from_ns"].min()))
    exited_by = np.fmin(gone_at, grace_end + KUBELET_MIN_GRACE_S * _SECOND_NS + lag)
    sigkill = exit_code.fillna(SIGKILL_EXIT_CODE).to_numpy(dtype="int64") == SIGKILL_EXIT_CODE
    interval_state = joins.interval_state_at(pod, failed["start_ns"], pod_intervals, gaps)
    return pd.DataFrame(
        {
            "interval_state": interval_state,
            "in_restart": _in_episode(pod, at, restarts),
            "pod_unable": unable,
            "killed_at_grace": (at >= grace_end - lag)
            & (at <= exited_by + lag)
            & (start < exited_by)
            & sigkill,
            "last_exit_code": exit_code,
        },
        index=failed.index,
    )


def congested_seconds(
    requests: pd.DataFrame, endpoints: pd.DataFrame, context: ServiceContext
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds (start_ns // 1 s) of congestion episodes, and of those that began with too little
    capacity.

    A second is congested when the p90 latency of the requests that reached a Pod (connect
    failures never queued) exceeds ``CONGESTION_FACTOR`` × the run's median successful latency;
    an episode is a run of congested seconds, one quiet second tolerated. A queue built while
    ready endpoints were below the desired replicas drains only after capacity returns, so its
    timeouts outlive the shortage; an episode counts as such when any of its seconds was short.
    """
    none = np.array([], dtype="int64")
    # arrays, not a filtered frame: a copy of millions of rows would sit beside the groupby
    kind = requests["error_kind"]
    connected = ~kind.isin(_CONNECT_FAILURES).to_numpy(dtype=bool, na_value=False)
    ok = (kind == ErrorKind.OK.value).to_numpy(dtype=bool, na_value=False)[connected]
    if not ok.any():
        return none, none
    start = requests["start_ns"].to_numpy(dtype="int64")[connected]
    latency = (requests["end_ns"].to_numpy(dtype="int64")[connected] - start) / 1e6
    typical = float(np.median(latency[ok]))
    per_second = pd.Series(latency).groupby(start // _SECOND_NS).quantile(0.9)
    seconds = per_second.index.to_numpy(dtype="int64")
    congested = per_second.to_numpy() > CONGESTION_FACTOR * max(typical, 1.0)
    # episodes: congested seconds, bridging single quiet seconds
    bridged = congested.copy()
    bridged[1:-1] |= congested[:-2] & congested[2:]
    if not context.desired_replicas:
        return seconds[bridged], none
    ready = endpoints[endpoints["ready"].astype(bool)]
    starts, ends = _interval_bounds(ready)
    short = _recently_below(
        (seconds + 1).astype("float64") * _SECOND_NS,
        starts,
        ends,
        context.desired_replicas,
        float(_SECOND_NS),
    )
    episode = np.cumsum(np.r_[True, ~bridged[:-1] | ~bridged[1:] | (np.diff(seconds) > 2)])
    flagged = pd.Series(short & bridged).groupby(episode).transform("any").to_numpy()
    return seconds[bridged], np.asarray(seconds[bridged & flagged], dtype="int64")


@dataclass(frozen=True)
class Rule:
    """One attribution rule: where it holds, the cause it gives, how sure, and its evidence
    template (the name docs/causes.md lists it under)."""

    when: np.ndarray
    cause: Cause
    confidence: float
    template: str


def _flag(f: pd.DataFrame, name: str) -> np.ndarray:
    return f[name].fillna(False).to_numpy(dtype=bool)


def _ms(f: pd.DataFrame, name: str) -> np.ndarray:
    return f[name].to_numpy(dtype="float64", na_value=np.nan)


def _pod_terms(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """What the Pod's record says: leaving (deletion observed), new (not yet able to serve),
    cannot serve (new, or a readiness flip), deleted long ago."""
    state = f["pod_state"].astype("string").fillna("unknown").to_numpy(dtype=object)
    since_deletion = _ms(f, "ms_since_deletion")
    # a Ready Pod is still warming up until its first success (seen later, or within the run's
    # longest observed warm-up); one that already served could serve
    warming = (state == PodState.READY.value) & ~_flag(f, "pod_served_before")
    warming &= _flag(f, "pod_served_after") | (
        _ms(f, "ms_since_ready") <= _ms(f, "warmup_limit_ms")
    )
    new = np.isin(state, (PodState.PENDING.value, PodState.STARTING.value)) | warming
    return {
        # NaN comparisons are False: a Pod never deleted is never leaving; no upper bound, since
        # a node's rules may lag any time (a Pod seen on the wire after its deletion is proof)
        "leaving": since_deletion >= -WATCH_LAG_MS,
        "new": new,
        "cannot_serve": new | _flag(f, "pod_unable"),
        "long_deleted": since_deletion > joins.INFERENCE_HORIZON_NS / 1e6,
    }


def _close_terms(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """How and when the server closed the request's connection, relative to the request."""
    server_close = _ms(f, "server_close_ms")
    # the server closed before the request reached it, or the two crossed on the wire: after a
    # FIN its own RST answered, or with a bare RST while it was closing the connection idle
    # (after an idle like its usual idle close, or while the Pod shut down; a bare RST from a
    # live Pod on a busy connection cut a request in flight)
    crossing = server_close <= RACE_CROSSING_MS
    race_close = _flag(f, "fin_then_rst") & crossing
    idle_like = _ms(f, "idle_ms") >= IDLE_TIMEOUT_SHARE * _ms(f, "server_idle_close_ms")
    rst_race = _flag(f, "bare_rst") & crossing & (idle_like | _flag(f, "pod_deleted_by_end"))
    rst_race &= ~_flag(f, "aborted_busy")
    fast_cut = ~_flag(f, "has_packets") & f["first_byte_ns"].isna().to_numpy()
    fast_cut &= (f["end_ns"] - f["start_ns"]).to_numpy(dtype="float64") <= FAST_FAILURE_MS * 1e6
    return {
        "race_close": race_close,
        "rst_race": rst_race,
        "closed_before": server_close <= 0,
        "closed_during": (server_close > 0) & ~race_close,  # ... or while the request was in flight
        "fast_cut": fast_cut,
    }


def _lb_gap(
    f: pd.DataFrame, kind: np.ndarray, context: ServiceContext, column: str = "nodes_lacking_local"
) -> np.ndarray:
    """An unanswered SYN under Local policy while some node the LB still sent to had no local
    endpoint in its rules (``column``: surely, or only possibly with coarse event times)."""
    lacking = f[column].to_numpy(dtype="int64") > 0
    timeout = kind == ErrorKind.CONNECT_TIMEOUT.value
    return np.asarray(timeout & lacking & bool(context.local_policy), dtype=bool)


def _with_hop_defaults(f: pd.DataFrame) -> pd.DataFrame:
    """``f`` with the hop columns it lacks (features built without hop facts): no hop."""
    missing = {name: value for name, value in _NO_HOP.items() if name not in f.columns}
    return f.assign(**missing) if missing else f


def _hop_terms(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """Which failures an L7 hop decided (its answer stood for a failed attempt), which of
    those rest on a precise join (exact or timed, not coarse) and an attempt outcome the log
    states (not ingress-nginx's bare 5xx), and which show the Pod closing the pooled
    connection in packets."""
    decided = f["hop_kind"].notna().to_numpy(dtype=bool)
    join = f["hop_join"].astype("string").fillna("").to_numpy(dtype=object)
    precise = np.isin(join, (hop_paths.HopJoin.EXACT.value, hop_paths.HopJoin.TIMED.value))
    outcome = f["hop_outcome"].astype("string").fillna("").to_numpy(dtype=object)
    stated = outcome != AttemptOutcome.FAILED_5XX.value
    return {
        "decided": decided,
        # the hop had no upstream to try: its endpoint list was empty
        "empty": decided & (outcome == AttemptOutcome.NO_SERVER.value),
        "sure": decided & precise & stated,
        "closed_seen": decided & ~np.isnan(_ms(f, "upstream_close_ms")),
    }


def _hop_lag(f: pd.DataFrame, kind: np.ndarray, hop: dict[str, np.ndarray]) -> np.ndarray:
    """The hop sent its attempt to a Pod that had already stopped being an endpoint: its own
    list still held it. A refused or unanswered connection counts from up to the watch's lag
    before the deletion was seen (the app may stop accepting as the deletion begins), and so
    does a pooled connection that failed at once (within the crossing window: the draining
    app's close of its idle connections met the hop's request); any other cut or a bare 5xx
    only when the attempt came after it (one in flight before was cut by the exit)."""
    since = _ms(f, "ms_since_leaving")
    near = since >= -WATCH_LAG_MS
    connect = np.isin(kind, _CONNECT_FAILURES)
    cut = np.isin(kind, _CUT_KINDS)
    crossed = cut & _flag(f, "attempt_reused") & (_ms(f, "attempt_ms") <= RACE_CROSSING_MS)
    cut_or_5xx = cut | (kind == ErrorKind.HTTP_5XX.value)
    gone = ((connect | crossed) & near) | (cut_or_5xx & (since >= 0))
    return np.asarray(hop["decided"] & gone, dtype=bool)


def _hop_serving(f: pd.DataFrame, cannot_serve: np.ndarray) -> np.ndarray:
    """The Pod the hop's attempt went to was serving: known, not being deleted (nor about to
    be, within the watch's lag), not starting or flapping (restarts are decided first)."""
    leaving = _ms(f, "ms_since_leaving") >= -WATCH_LAG_MS
    known_pod = f["hop_pod"].notna().to_numpy(dtype=bool)
    return np.asarray(known_pod & ~leaving & ~cannot_serve, dtype=bool)


def _backend_race(
    f: pd.DataFrame, cut: np.ndarray, hop: dict[str, np.ndarray], hop_serving: np.ndarray
) -> np.ndarray:
    """The hop's attempt reused a pooled connection (connect time 0) that closed before a
    response, at a Pod that was serving (``_hop_serving``)."""
    reused = _flag(f, "attempt_reused")
    return np.asarray(hop["decided"] & cut & reused & hop_serving, dtype=bool)


def rules(f: pd.DataFrame, context: ServiceContext) -> list[Rule]:
    """The rules of docs/causes.md in the order they apply (first match wins), evaluated over
    every failure at once. ``f`` is the ``failure_features`` frame (see ``decide``)."""
    f = _with_hop_defaults(f)
    method = f["pod_method"].astype(str).to_numpy()
    hop = _hop_terms(f)
    l4 = ~hop["decided"]  # the client's own connection met the Pod (no hop answered for it)
    kind = np.where(
        hop["decided"],
        f["hop_kind"].astype("string").fillna("").to_numpy(dtype=object),
        f["error_kind"].astype(str).to_numpy(),
    )
    reused, deleted_by_end = _flag(f, "conn_reused") & l4, _flag(f, "pod_deleted_by_end")
    connect_failure = np.isin(kind, _CONNECT_FAILURES)
    cut = np.isin(kind, _CUT_KINDS)
    is_5xx = kind == ErrorKind.HTTP_5XX.value
    read_timeout = kind == ErrorKind.READ_TIMEOUT.value
    timeout = read_timeout | (kind == ErrorKind.CONNECT_TIMEOUT.value)
    direct_pod = np.isin(method, _DIRECT_POD)
    inferred_pod = method == PodMatch.INFERRED.value
    pod = _pod_terms(f)
    # the client's connection packets say nothing of a connection the hop had to the Pod
    close = {name: when & l4 for name, when in _close_terms(f).items()}
    no_packets = ~_flag(f, "has_packets") | hop["decided"]
    hop_serving = _hop_serving(f, pod["cannot_serve"])
    hop_lag, race = _hop_lag(f, kind, hop), _backend_race(f, cut, hop, hop_serving)
    pod_leaving, pod_new, cannot_serve = pod["leaving"], pod["new"], pod["cannot_serve"]
    lb_gap = _lb_gap(f, kind, context)
    maybe_lb_gap = _lb_gap(f, kind, context, "nodes_possibly_lacking_local")
    no_endpoints = _flag(f, "no_endpoints_recently")
    maybe_none = _flag(f, "no_endpoints_possibly")
    capacity_short = _flag(f, "capacity_short_recently")
    # an unanswered SYN while too few Pods queue may be a dropped SYN rather than rules lagging
    # behind a deletion long past (a recent one, within the inference horizon, still wins)
    queued = timeout & capacity_short & pod["long_deleted"]
    restart = _flag(f, "in_restart") & (connect_failure | cut | is_5xx)
    lb_pods = np.bool_(context.lb_targets_pods)
    race_close, closed_during = close["race_close"], close["closed_during"]
    return [
        # the container exited or was killed under the request: the Pod's own record decides
        Rule(restart & direct_pod, Cause.CONTAINER_RESTART, 0.9, "restart"),
        Rule(cut & _flag(f, "killed_at_grace"), Cause.KILLED_AT_GRACE, 0.9, "killed-at-grace"),
        # an L7 hop answered for the Pod: its failed attempt and what the Pod was doing decide
        Rule(hop_lag & hop["sure"], Cause.PROXY_ENDPOINT_LAG, 0.9, "proxy-lag"),
        Rule(race & hop["closed_seen"], Cause.BACKEND_KEEPALIVE_RACE, 0.95, "backend-race"),
        Rule(race, Cause.BACKEND_KEEPALIVE_RACE, 0.8, "backend-race"),
        Rule(hop_lag, Cause.PROXY_ENDPOINT_LAG, 0.6, "proxy-lag"),
        Rule(hop["empty"], Cause.NO_ENDPOINTS, 0.8, "hop-empty"),
        # Pod-target LBs: the LB, not kube-proxy, chose the Pod the SYN met
        Rule(connect_failure & lb_pods & pod_leaving & l4, Cause.LB_LAG, 0.85, "lb-lag-pods"),
        Rule(connect_failure & lb_pods & ~pod_new & l4, Cause.LB_LAG, 0.6, "lb-lag-pods"),
        # connection-level failures of new connections: what the SYN met decides
        Rule(
            connect_failure & direct_pod & pod_leaving & l4, Cause.ENDPOINT_LAG, 0.95, "lag-direct"
        ),
        Rule(connect_failure & direct_pod & cannot_serve, Cause.NOT_READY, 0.9, "not-ready"),
        Rule(connect_failure & ~direct_pod & no_endpoints, Cause.NO_ENDPOINTS, 0.9, "no-endpoints"),
        Rule(connect_failure & ~direct_pod & lb_gap, Cause.LB_LAG, 0.75, "lb-lag"),
        # coarse event times: the answer depends on where in its bounds an endpoint change was
        # (lower confidence); a node the LB may still send to outranks a possibly empty Service:
        # the LB keeps sending for its health-check time, and a gap that surely left the
        # Service empty was already claimed by the sure rule above
        Rule(connect_failure & ~direct_pod & maybe_lb_gap, Cause.LB_LAG, 0.5, "lb-lag-coarse"),
        Rule(connect_failure & ~direct_pod & maybe_none, Cause.NO_ENDPOINTS, 0.5, "none-coarse"),
        Rule(restart & inferred_pod, Cause.CONTAINER_RESTART, 0.6, "restart"),
        Rule(
            connect_failure & inferred_pod & pod_leaving & ~queued & l4,
            Cause.ENDPOINT_LAG,
            0.6,
            "lag-inferred",
        ),
        Rule(connect_failure & inferred_pod & cannot_serve, Cause.NOT_READY, 0.5, "not-ready"),
        # established connections closed by the server: *when* and *how* it closed decides
        Rule(cut & reused & race_close, Cause.KEEPALIVE_RACE, 0.95, "race-packets"),
        Rule(cut & reused & close["rst_race"], Cause.KEEPALIVE_RACE, 0.85, "race-rst"),
        Rule(cut & pod_new & ~deleted_by_end, Cause.NOT_READY, 0.85, "not-ready-cut"),
        Rule(cut & closed_during & deleted_by_end, Cause.INFLIGHT_CUT, 0.95, "cut-packets"),
        Rule(cut & reused & close["closed_before"], Cause.KEEPALIVE_RACE, 0.8, "race-packets"),
        Rule(cut & closed_during, Cause.INFLIGHT_CUT, 0.7, "cut-packets"),
        Rule(cut & reused & close["fast_cut"], Cause.KEEPALIVE_RACE, 0.6, "race-timing"),
        Rule(cut & no_packets & deleted_by_end, Cause.INFLIGHT_CUT, 0.7, "cut-state"),
        # application answers and timeouts: the most possible reasons, so last
        Rule(is_5xx & cannot_serve, Cause.NOT_READY, 0.9, "not-ready"),
        Rule(is_5xx & no_endpoints, Cause.NO_ENDPOINTS, 0.8, "no-endpoints"),
        Rule((is_5xx | timeout) & capacity_short, Cause.OVERLOAD, 0.7, "overload"),
        Rule(is_5xx & pod_leaving & ~reused & l4, Cause.ENDPOINT_LAG, 0.6, "lag-5xx"),
        Rule((is_5xx | timeout) & _flag(f, "congested"), Cause.OVERLOAD, 0.6, "overload-slow"),
        Rule((is_5xx | read_timeout) & deleted_by_end, Cause.INFLIGHT_CUT, 0.6, "cut-state"),
        # the hop's read timed out at a Pod that was there and serving: too slow
        Rule(hop["decided"] & read_timeout & hop_serving, Cause.OVERLOAD, 0.6, "hop-timeout"),
    ]


def decide(features: pd.DataFrame, context: ServiceContext) -> pd.DataFrame:
    """Apply the rules of docs/causes.md (first match wins); return a FAILURES frame.

    ``features`` holds one row per failed request with the FAILURES evidence columns plus:
    ``status_code``, ``first_byte_ns``, ``server_close_ms`` (first server FIN/RST on the
    request's connection − request start, NA without packets), ``has_packets``, ``idle_ms``,
    ``fin_then_rst`` (the server's FIN was followed by its RST), ``bare_rst`` (a server RST with
    no FIN before it), ``server_idle_close_ms`` (the run's usual idle close),
    ``pod_deleted_by_end`` (the Pod's deletion was observed before the request ended),
    ``pod_served_before`` / ``pod_served_after`` (the Pod answered a request successfully
    before / only after this one), ``warmup_limit_ms``, the ``pod_interval_facts`` columns
    (``in_restart``, ``pod_unable``, ``killed_at_grace``, ``last_exit_code``), ``congested`` and
    the ``cluster_state_at`` columns.
    """
    f = _with_hop_defaults(features)
    decided = rules(f, context)
    conditions = [r.when for r in decided]
    cause = np.select(conditions, [r.cause.value for r in decided], Cause.UNEXPLAINED.value)
    confidence = np.select(conditions, [r.confidence for r in decided], default=0.0)
    template = np.select(conditions, [r.template for r in decided], default="unexplained")
    out = pd.DataFrame(
        {
            "request_id": f["request_id"].to_numpy(dtype="int64"),
            "start_ns": f["start_ns"].to_numpy(dtype="int64"),
            "end_ns": f["end_ns"].to_numpy(dtype="int64"),
            "error_kind": pd.array(f["error_kind"].astype(str).to_numpy(), dtype="string"),
            "cause": pd.array(cause, dtype="string"),
            "confidence": confidence.astype("float64"),
            "evidence": pd.array(_evidence(f, template, context), dtype="string"),
            "pod": f["pod"].astype("string").to_numpy(),
            "pod_method": pd.array(f["pod_method"].astype(str).to_numpy(), dtype="string"),
            "pod_state": f["pod_state"].astype("string").to_numpy(),
            "node": f["node"].astype("string").to_numpy(),
            "ms_since_deletion": pd.array(_ms(f, "ms_since_deletion"), dtype="Float64"),
            "ms_since_ready": pd.array(_ms(f, "ms_since_ready"), dtype="Float64"),
            "conn_age_ms": f["conn_age_ms"].astype("Float64").to_numpy(),
            "conn_reused": _flag(f, "conn_reused"),
            "conn_outcome": f["conn_outcome"].astype("string").to_numpy(),
            **_hop_output(f),
        }
    )
    for column in ("ms_since_deletion", "ms_since_ready", "conn_age_ms"):
        out[column] = out[column].astype("Float64")
    for column in ("pod", "pod_state", "node", "conn_outcome", "hop", "hop_join", "path"):
        out[column] = out[column].astype("string")
    return check_frame(out, FAILURES, "attribution output")


def _hop_output(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """The failures' hop columns: the hop that decided a failure (its own answer stood for a
    failed attempt; NA where the Pod's answer or the client's connection decided), how the
    request was joined to its log, and the path client → hop → upstream (Pod) it took."""
    logged = f["hop"].notna().to_numpy(dtype=bool)
    decided = f["hop_kind"].notna().to_numpy(dtype=bool)
    hop = f["hop"].astype("string").where(decided)
    path = pd.Series(pd.NA, index=f.index, dtype="string")
    if logged.any():
        path[logged] = hop_paths.path_text(f[logged])
    return {
        "hop": hop.to_numpy(),
        "hop_join": f["hop_join"].astype("string").where(logged).to_numpy(),
        "path": path.to_numpy(),
    }


def _fmt_ms(value: float) -> str:
    return "?" if np.isnan(value) else f"{value:.0f} ms"


def _when(since_del: float) -> str:
    if since_del >= 0:
        return f"{_fmt_ms(since_del)} before the request started"
    return f"{_fmt_ms(-since_del)} after the request started"


def _race(r: dict[str, Any]) -> str:
    close = r["close"]
    when = (
        f"{_fmt_ms(-close)} before the request was sent"
        if close <= 0
        else f"{_fmt_ms(close)} after it, crossing the request on the wire"
    )
    how = "with a bare RST" if r["tpl"] == "race-rst" else "(FIN, then RST)"
    return (
        f"{r['kind']} on a reused connection idle {_fmt_ms(r['idle'])}: the server closed it "
        f"{how} {when}"
    )


def _not_ready(r: dict[str, Any]) -> str:
    if r["state"] == PodState.UNREADY.value or r["unable"]:
        return (
            f"{r['kind']} from {r['pod']} {r['via']} while a readiness flip (no deletion, no "
            f"container exit) left it unable to serve"
        )
    if np.isnan(r["since_ready"]) or r["state"] != PodState.READY.value:
        return f"{r['kind']} from {r['pod']} {r['via']}, which had started but was not Ready yet"
    return (
        f"{r['kind']} from {r['pod']} {r['via']}, {_fmt_ms(r['since_ready'])} after it was first "
        f"seen Ready and before its first successful answer (still warming up)"
    )


def _cut(r: dict[str, Any]) -> str:
    s = f"{r['kind']} mid-request from {r['pod']} {r['via']}, whose deletion was observed "
    s += _when(r["since_del"])
    if not np.isnan(r["close"]):
        s += f"; the server closed {_fmt_ms(r['close'])} after the request started"
    return s


_SENTENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "restart": lambda r: (
        f"{r['kind']} at {r['pod']} {r['via']} while its container was exited or restarting "
        f"(last exit code {r['exit']}), the Pod not being deleted"
    ),
    "killed-at-grace": lambda r: (
        f"{r['kind']} mid-request from {r['pod']} {r['via']} when its grace period ran out "
        f"({_fmt_ms(r['since_del'])} after its deletion was observed; exit code {r['exit']}: "
        f"SIGKILL)"
    ),
    "no-endpoints": lambda r: (
        f"{r['kind']} while the Service had no usable endpoint (now or within the rules lag)"
    ),
    "lb-lag-coarse": lambda r: (
        f"SYN unanswered while {r['possibly_lacking']} node(s) may have lost their last usable "
        f"local endpoint under externalTrafficPolicy Local: whether they had depends on when, "
        + (
            f"within the watch's ±{_fmt_ms(r['uncertainty'])} time uncertainty (coarse event "
            f"times), the endpoint change happened"
            if r["uncertainty"]
            else f"within one SYN interval ({_fmt_ms(r['spread'])}) past the node's measured "
            f"rules lag, its rules took the new local endpoint"
        )
        + ", hence the lower confidence"
    ),
    "none-coarse": lambda r: (
        f"{r['kind']} while the Service may have had no usable endpoint: whether it had depends "
        f"on when, within the watch's ±{_fmt_ms(r['uncertainty'])} time uncertainty (coarse "
        f"event times), the endpoint changes happened, hence the lower confidence"
    ),
    "lag-direct": lambda r: (
        f"new connection {r['kind']} at {r['pod']} {r['via']}, {_fmt_ms(r['since_del'])} after "
        f"its deletion was observed: rules still sent new connections to it"
    ),
    "lb-lag-pods": lambda r: (
        f"new connection {r['kind']} at {r['pod']} {r['via']} sent by a load balancer that "
        f"targets Pods directly ({_fmt_ms(r['since_del'])} after the Pod's deletion): the LB "
        f"had not yet deregistered it"
    ),
    "lb-lag": lambda r: (
        f"SYN unanswered while {r['lacking']} node(s) had recently lost their last usable local "
        f"endpoint under externalTrafficPolicy Local (the LB still sent to them)"
    ),
    "race-packets": _race,
    "race-rst": _race,
    "race-timing": lambda r: (
        f"{r['kind']} within {FAST_FAILURE_MS:.0f} ms on a reused connection idle "
        f"{_fmt_ms(r['idle'])} (no packets: timing only)"
    ),
    "not-ready": _not_ready,
    "not-ready-cut": _not_ready,
    "cut-packets": _cut,
    "cut-state": _cut,
    "overload": lambda r: (
        f"{r['kind']} while only {r['ready']} endpoints were ready (fewer than desired)"
    ),
    "overload-slow": lambda r: (
        f"{r['kind']} in a congested second (p90 latency over {CONGESTION_FACTOR:.0f}× the "
        f"run's median) with {r['ready']} ready endpoints"
    ),
}
_SENTENCES["lag-inferred"] = _SENTENCES["lag-5xx"] = _SENTENCES["lag-direct"]


def _joined_how(r: dict[str, Any]) -> str:
    if r["join"] == "coarse":
        return " (tied to the hop's log by status and second only: a coarse join)"
    return ""


def _proxy_lag_sentence(r: dict[str, Any]) -> str:
    since, sync = r["since_leaving"], r["sync"]
    compared = (
        f", {'within' if since <= sync else 'beyond'} the hop's sync interval of {_fmt_ms(sync)}"
        if not np.isnan(sync)
        else ""
    )
    return (
        f"{r['kind']} answered by {r['hop']}: its attempt to {r['addr']} ({r['pod']}) ended "
        f"{r['outcome']} {_fmt_ms(since) if since >= 0 else f'{_fmt_ms(-since)} before'} "
        f"{'after ' if since >= 0 else ''}the Pod's endpoint left the Service{compared}: "
        f"the hop's own endpoint list still held it{_joined_how(r)}"
    )


def _backend_race_sentence(r: dict[str, Any]) -> str:
    s = (
        f"{r['kind']} answered by {r['hop']}: it reused a pooled connection to {r['addr']} "
        f"({r['pod']}, serving, not being deleted) that closed before a response "
        f"({r['outcome']})"
    )
    if not np.isnan(r["upstream_close"]):
        s += f"; packets show the Pod closing it {_fmt_ms(abs(r['upstream_close']))} "
        s += "before the attempt" if r["upstream_close"] <= 0 else "after the attempt was sent"
    if not np.isnan(r["app_keepalive"]) and not np.isnan(r["hop_idle"]):
        relation = "below" if r["app_keepalive"] < r["hop_idle"] else "not below"
        s += (
            f"; the app's keep-alive timeout {_fmt_ms(r['app_keepalive'])} is {relation} the "
            f"hop's idle timeout {_fmt_ms(r['hop_idle'])}"
        )
    return s + _joined_how(r)


_SENTENCES["proxy-lag"] = _proxy_lag_sentence
_SENTENCES["hop-empty"] = lambda r: (
    f"{r['kind']} answered by {r['hop']} with no upstream to try ({r['addr']}): its endpoint "
    f"list was empty"
)
_SENTENCES["hop-timeout"] = lambda r: (
    f"{r['kind']} answered by {r['hop']}: its attempt to {r['addr']} ({r['pod']}, serving, not "
    f"being deleted) timed out waiting for the response"
)
_SENTENCES["backend-race"] = _backend_race_sentence


def _evidence(f: pd.DataFrame, template: np.ndarray, context: ServiceContext) -> list[str]:
    """One sentence per failure naming the decisive signal (for people, so not vectorized)."""
    columns = {
        "tpl": template,
        "kind": f["error_kind"].astype(str),
        "pod": f["pod"].astype("string").fillna("an unknown Pod"),
        "via": "(Pod from " + f["pod_method"].astype(str) + ")",
        "state": f["pod_state"].astype("string").fillna("unknown"),
        "since_del": _ms(f, "ms_since_deletion"),
        "since_ready": _ms(f, "ms_since_ready"),
        "close": _ms(f, "server_close_ms"),
        "idle": _ms(f, "idle_ms"),
        "ready": f["ready_endpoints"].to_numpy(dtype="int64"),
        "lacking": f["nodes_lacking_local"].to_numpy(dtype="int64"),
        "possibly_lacking": f["nodes_possibly_lacking_local"].to_numpy(dtype="int64"),
        "uncertainty": context.event_uncertainty_ms,
        "spread": context.rules_lag_spread_ms,
        "unable": _flag(f, "pod_unable"),
        "exit": f["last_exit_code"].astype("string").fillna("unknown"),
        "hop": f["hop"].astype("string").fillna("a hop"),
        "addr": f["upstream_addr"].astype("string").fillna("an unknown upstream"),
        "outcome": f["hop_outcome"].astype("string").fillna("?"),
        "join": f["hop_join"].astype("string").fillna(""),
        "since_leaving": _ms(f, "ms_since_leaving"),
        "sync": _ms(f, "sync_interval_ms"),
        "upstream_close": _ms(f, "upstream_close_ms"),
        "hop_idle": _ms(f, "hop_idle_ms"),
        "app_keepalive": _ms(f, "app_keepalive_ms"),
    }
    # plain Python values per column, zipped into one dict per failure: a DataFrame's
    # to_dict("records") boxes every cell through pandas, ten times slower
    count = len(f)
    values = [
        [column] * count if np.isscalar(column) else np.asarray(column).tolist()
        for column in columns.values()
    ]
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    return [_SENTENCES.get(str(r["tpl"]), _unmatched)(r) for r in rows]


def _unmatched(r: dict[str, Any]) -> str:
    return f"{r['kind']} from {r['pod']} {r['via']}: no rule matched"
