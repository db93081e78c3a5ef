"""Cause attribution: every failed request gets exactly one ``Cause``, its evidence and a confidence.

Pure: frames in, frames out, and only what a real cluster also shows (requests, packets, watch
events) — never truth.jsonl, which exists to score this module. The rules, their evidence and
their confidences are documented for people in ``docs/causes.md``; keep both in step.

Two steps, so that each can be tested on its own:

* ``cluster_state_at`` / ``failure_features`` gather, per failed request, the facts a rule may
  look at (the Pod and its state, the connection and how it ended, how many endpoints were
  ready, whether a node lacked a local endpoint).
* ``decide`` applies the rules in a fixed order (first match wins) with ``numpy.select``: a
  rollout that fails 100k requests is decided in one pass, not one Python call per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analyzer import joins
from analyzer.schema import FAILURES, Cause, ErrorKind, PodMatch, check_frame

#: "A short time after Ready": an application whose readiness passes before it can serve fails
#: its first requests within this window.
NOT_READY_GRACE_MS = 10_000.0
#: A server close seen at most this long after the request started still raced the request: the
#: FIN and the request crossed on the wire (about one round trip, generously).
RACE_CROSSING_MS = 50.0
#: Without packets, a reused connection that failed this fast never had the request served.
FAST_FAILURE_MS = 20.0
#: How long after the Service's ready endpoints reappeared a node's rules may still have
#: none (kube-proxy sync lag: ~1 s by default, seconds in big clusters).
RULES_LAG_ALLOWANCE_MS = 5_000.0
#: A second is congested when its p90 latency exceeds this many times the run's typical latency.
CONGESTION_FACTOR = 5.0
_SECOND_NS = 1_000_000_000
#: A deletion the watch reported this long after the request started still explains it (watch
#: delivery lags the API server by up to a few hundred ms).
WATCH_LAG_MS = 500.0
#: How long after its deletion a Pod may still receive new connections from lagging rules.
LAG_HORIZON_MS = 30_000.0

_CONNECT_FAILURES = tuple(joins.CONNECT_FAILURES)
_CUT_KINDS = (ErrorKind.RESET.value, ErrorKind.EOF.value)
_DIRECT_POD = (PodMatch.HEADER.value, PodMatch.NODE_CAPTURE.value)


@dataclass(frozen=True)
class ServiceContext:
    """What attribution needs to know about the Service beyond the tables."""

    desired_replicas: int | None  # None: unknown, the overload rule then never fires
    local_policy: bool  # externalTrafficPolicy: Local
    nodes: tuple[str, ...]  # nodes the LB may send to (for lb-lag)
    # The LB sends straight to Pod IPs (AWS/GKE "IP mode"): kube-proxy is not on the path, so
    # a new connection that met a Pod no longer serving was sent there by the LB's lag.
    lb_targets_pods: bool = False


def _step_count(times: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many [start, end) intervals cover each time (ends may be +inf)."""
    starts_sorted = np.sort(starts)
    ends_sorted = np.sort(ends)
    opened = np.searchsorted(starts_sorted, times, side="right")
    closed = np.searchsorted(ends_sorted, times, side="right")
    return (opened - closed).astype("int64")


def _interval_bounds(endpoints: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    starts = endpoints["from_ns"].to_numpy(dtype="float64")
    ends = pd.to_numeric(endpoints["to_ns"]).to_numpy(dtype="float64", na_value=np.inf)
    return starts, ends


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


def cluster_state_at(
    times: pd.Series, endpoints: pd.DataFrame, context: ServiceContext
) -> pd.DataFrame:
    """Per time: ready endpoints; whether the Service had no ready endpoint recently enough that
    a node's rules may still have shown none;
    whether ready endpoints were below the desired replicas recently enough for the backlog to
    persist; how many nodes had no local ready endpoint."""
    t = times.to_numpy(dtype="float64")
    ready = endpoints[endpoints["ready"].astype(bool)]
    starts, ends = _interval_bounds(ready)
    # ready only: serving-while-terminating endpoints are a fallback some proxies lack (KEP-1669),
    # and where the fallback works a refusal shows on the Pod's node instead
    no_endpoints = _recently_below(t, starts, ends, 1, RULES_LAG_ALLOWANCE_MS * 1e6)
    short = np.zeros(len(t), dtype=bool)
    if context.desired_replicas:
        short = _recently_below(t, starts, ends, context.desired_replicas, 0.0)
    lacking = np.zeros(len(t), dtype="int64")
    if context.local_policy:
        for node in context.nodes:
            on_node = ready[ready["node"].astype("string") == node]
            node_starts, node_ends = _interval_bounds(on_node)
            lacking += (_step_count(t, node_starts, node_ends) == 0).astype("int64")
    return pd.DataFrame(
        {
            "ready_endpoints": _step_count(t, starts, ends),
            "no_endpoints_recently": no_endpoints,
            "capacity_short": short,
            "nodes_lacking_local": lacking,
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


def failure_features(
    requests: pd.DataFrame,
    client_conns: pd.DataFrame,
    pods: pd.DataFrame,
    endpoints: pd.DataFrame,
    context: ServiceContext,
    has_packets: bool,
    gaps: np.ndarray | None = None,
) -> pd.DataFrame:
    """The facts ``decide`` looks at, one row per failed request.

    ``requests`` is the joined requests table: REQUESTS plus ``conn_key`` (the client-capture
    connection), ``pod_matched`` and ``pod_method`` (see ``analyzer.joins``). ``gaps``: the
    watch's GAP markers as rows (since_ns, recv_ns).
    """
    failed = requests[requests["error_kind"] != ErrorKind.OK.value]
    idle_since = previous_request_end(requests, failed.index)
    conns = client_conns.set_index("conn_key")
    key = failed["conn_key"]

    def conn_col(name: str) -> pd.Series:
        if conns.empty:
            return pd.Series(pd.NA, index=failed.index)
        return joins.lookup(key, conns[name])

    def as_float(series: pd.Series) -> np.ndarray:
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

    start = failed["start_ns"].to_numpy(dtype="float64")
    end = failed["end_ns"].to_numpy(dtype="float64")
    established = as_float(conn_col("established_ns"))
    server_fin = as_float(conn_col("server_fin_ns"))
    server_rst = as_float(conn_col("server_rst_ns"))
    server_close = np.fmin(server_fin, server_rst)
    states = joins.pod_states(failed["pod_matched"], failed["start_ns"], pods, gaps)
    deletion = start - states["ms_since_deletion"].to_numpy(dtype="float64", na_value=np.nan) * 1e6
    features = pd.DataFrame(
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
            "conn_age_ms": pd.array((start - established) / 1e6, dtype="Float64"),
            "conn_outcome": conn_col("outcome").astype("string"),
            "server_close_ms": pd.array((server_close - start) / 1e6, dtype="Float64"),
            # an orderly close answered by a reset: the peer's data hit a closed socket
            "fin_then_rst": server_rst >= server_fin,
            "has_packets": has_packets & key.notna(),
            "idle_ms": pd.array((start - as_float(idle_since)) / 1e6, dtype="Float64"),
            "pod_deleted_by_end": deletion <= end,
        },
        index=failed.index,
    )
    # A Pod that already answered successfully could serve: a later failure there is not
    # not-ready, however recently it turned Ready (e.g. SYNs dropped by an overloaded host).
    ok = requests[requests["error_kind"] == ErrorKind.OK.value]
    first_ok = ok.groupby("pod_matched")["end_ns"].min()
    served_since = failed["pod_matched"].map(first_ok)
    served_ns = pd.to_numeric(served_since, errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )
    features["pod_served_before"] = served_ns < failed["start_ns"].to_numpy(dtype="float64")
    features = features.join(states)
    features = features.join(cluster_state_at(failed["start_ns"], endpoints, context))
    overloaded = congested_by_shortage(requests, endpoints, context)
    second = failed["start_ns"].to_numpy(dtype="int64") // _SECOND_NS
    features["capacity_short_recently"] = features["capacity_short"].to_numpy(dtype=bool) | (
        np.isin(second, overloaded)
    )
    return features


def congested_by_shortage(
    requests: pd.DataFrame, endpoints: pd.DataFrame, context: ServiceContext
) -> np.ndarray:
    """Seconds (start_ns // 1 s) of congestion episodes that began with too little capacity.

    A queue built while ready endpoints were below the desired replicas drains only after
    capacity returns, so its timeouts outlive the shortage by as long as the backlog takes to
    clear. An episode is a run of congested seconds (p90 latency > ``CONGESTION_FACTOR`` × the
    run's median successful latency, one quiet second tolerated); it counts when any of its
    seconds had a capacity shortage.
    """
    if not context.desired_replicas or requests.empty:
        return np.array([], dtype="int64")
    start = requests["start_ns"].to_numpy(dtype="int64")
    latency = (requests["end_ns"].to_numpy(dtype="int64") - start) / 1e6
    ok = (requests["error_kind"] == ErrorKind.OK.value).to_numpy()
    if not ok.any():
        return np.array([], dtype="int64")
    typical = float(np.median(latency[ok]))
    per_second = pd.Series(latency).groupby(start // _SECOND_NS).quantile(0.9)
    seconds = per_second.index.to_numpy(dtype="int64")
    congested = per_second.to_numpy() > CONGESTION_FACTOR * max(typical, 1.0)
    ready = endpoints[endpoints["ready"].astype(bool)]
    starts, ends = _interval_bounds(ready)
    short = _recently_below(
        (seconds + 1).astype("float64") * _SECOND_NS,
        starts,
        ends,
        context.desired_replicas,
        float(_SECOND_NS),
    )
    # episodes: congested seconds, bridging single quiet seconds
    bridged = congested.copy()
    bridged[1:-1] |= congested[:-2] & congested[2:]
    episode = np.cumsum(np.r_[True, ~bridged[:-1] | ~bridged[1:] | (np.diff(seconds) > 2)])
    flagged = pd.Series(short & bridged).groupby(episode).transform("any").to_numpy()
    return np.asarray(seconds[bridged & flagged], dtype="int64")


def decide(features: pd.DataFrame, context: ServiceContext) -> pd.DataFrame:
    """Apply the rules of docs/causes.md (first match wins); return a FAILURES frame.

    ``features`` holds one row per failed request with the FAILURES evidence columns plus:
    ``status_code``, ``first_byte_ns``, ``server_close_ms`` (first server FIN/RST on the
    request's connection − request start, NA without packets), ``has_packets``, ``idle_ms``,
    ``fin_then_rst`` (the server's FIN was followed by its RST), ``pod_deleted_by_end`` (the
    Pod's deletion was observed before the request ended), ``pod_served_before`` (the Pod had
    already answered a request successfully) and the ``cluster_state_at`` columns.
    """
    f = features
    kind = f["error_kind"].astype(str).to_numpy()
    state = f["pod_state"].astype("string").fillna("unknown").to_numpy(dtype=object)
    method = f["pod_method"].astype(str).to_numpy()
    reused = f["conn_reused"].to_numpy(dtype=bool)
    has_packets = f["has_packets"].to_numpy(dtype=bool)
    no_bytes = f["first_byte_ns"].isna().to_numpy()
    duration_ms = (f["end_ns"] - f["start_ns"]).to_numpy(dtype="float64") / 1e6
    since_ready = f["ms_since_ready"].to_numpy(dtype="float64", na_value=np.nan)
    since_deletion = f["ms_since_deletion"].to_numpy(dtype="float64", na_value=np.nan)
    server_close = f["server_close_ms"].to_numpy(dtype="float64", na_value=np.nan)
    fin_then_rst = f["fin_then_rst"].to_numpy(dtype=bool)
    deleted_by_end = f["pod_deleted_by_end"].to_numpy(dtype=bool)
    lacking = f["nodes_lacking_local"].to_numpy(dtype="int64")
    no_endpoints = f["no_endpoints_recently"].to_numpy(dtype=bool)
    capacity_short = f["capacity_short_recently"].to_numpy(dtype=bool)

    connect_failure = np.isin(kind, _CONNECT_FAILURES)
    cut = np.isin(kind, _CUT_KINDS)
    is_5xx = kind == ErrorKind.HTTP_5XX.value
    read_timeout = kind == ErrorKind.READ_TIMEOUT.value
    timeout = read_timeout | (kind == ErrorKind.CONNECT_TIMEOUT.value)
    direct_pod = np.isin(method, _DIRECT_POD)
    inferred_pod = method == PodMatch.INFERRED.value
    # NaN comparisons are False: a Pod never deleted is never leaving
    pod_leaving = (since_deletion >= -WATCH_LAG_MS) & (since_deletion <= LAG_HORIZON_MS)
    served_before = f["pod_served_before"].to_numpy(dtype=bool)
    pod_new = np.isin(state, ("pending", "starting")) | (
        (state == "ready") & (since_ready <= NOT_READY_GRACE_MS) & ~served_before
    )
    # the server closed before the request reached it (or the two crossed on the wire) ...
    race_close = fin_then_rst & (server_close <= RACE_CROSSING_MS)
    closed_before = server_close <= 0
    # ... or while the request was in flight
    closed_during = (server_close > 0) & ~race_close
    lb_gap = (
        (kind == ErrorKind.CONNECT_TIMEOUT.value) & (lacking > 0) & np.bool_(context.local_policy)
    )

    lb_pods = np.bool_(context.lb_targets_pods)
    rules: list[tuple[np.ndarray, Cause, float, str]] = [
        # Pod-target LBs: the LB, not kube-proxy, chose the Pod the SYN met
        (connect_failure & lb_pods & pod_leaving, Cause.LB_LAG, 0.85, "lb-lag-pods"),
        (connect_failure & lb_pods & ~pod_new, Cause.LB_LAG, 0.6, "lb-lag-pods"),
        # connection-level failures of new connections: what the SYN met decides
        (connect_failure & direct_pod & pod_leaving, Cause.ENDPOINT_LAG, 0.95, "lag-direct"),
        (connect_failure & direct_pod & pod_new, Cause.NOT_READY, 0.9, "not-ready-connect"),
        (connect_failure & ~direct_pod & no_endpoints, Cause.NO_ENDPOINTS, 0.9, "no-endpoints"),
        (connect_failure & ~direct_pod & lb_gap, Cause.LB_LAG, 0.75, "lb-lag"),
        (connect_failure & inferred_pod & pod_leaving, Cause.ENDPOINT_LAG, 0.6, "lag-inferred"),
        (connect_failure & inferred_pod & pod_new, Cause.NOT_READY, 0.5, "not-ready-connect"),
        # established connections closed by the server: *when* it closed decides
        (cut & reused & race_close, Cause.KEEPALIVE_RACE, 0.95, "race-packets"),
        (cut & closed_during & deleted_by_end, Cause.INFLIGHT_CUT, 0.95, "cut-packets"),
        (cut & reused & closed_before, Cause.KEEPALIVE_RACE, 0.8, "race-packets"),
        (cut & closed_during, Cause.INFLIGHT_CUT, 0.7, "cut-packets"),
        (
            cut & reused & ~has_packets & no_bytes & (duration_ms <= FAST_FAILURE_MS),
            Cause.KEEPALIVE_RACE,
            0.6,
            "race-timing",
        ),
        (cut & ~has_packets & deleted_by_end, Cause.INFLIGHT_CUT, 0.7, "cut-state"),
        # application answers and timeouts: the most possible reasons, so last
        (is_5xx & pod_new, Cause.NOT_READY, 0.9, "not-ready-5xx"),
        (is_5xx & no_endpoints, Cause.NO_ENDPOINTS, 0.8, "no-endpoints"),
        ((is_5xx | timeout) & capacity_short, Cause.OVERLOAD, 0.7, "overload"),
        (is_5xx & pod_leaving & ~reused, Cause.ENDPOINT_LAG, 0.6, "lag-5xx"),
        ((is_5xx | read_timeout) & deleted_by_end, Cause.INFLIGHT_CUT, 0.6, "cut-state"),
    ]
    conditions = [r[0] for r in rules]
    cause = np.select(conditions, [r[1].value for r in rules], default=Cause.UNEXPLAINED.value)
    confidence = np.select(conditions, [r[2] for r in rules], default=0.0)
    template = np.select(conditions, [r[3] for r in rules], default="unexplained")

    out = pd.DataFrame(
        {
            "request_id": f["request_id"].to_numpy(dtype="int64"),
            "start_ns": f["start_ns"].to_numpy(dtype="int64"),
            "end_ns": f["end_ns"].to_numpy(dtype="int64"),
            "error_kind": pd.array(kind, dtype="string"),
            "cause": pd.array(cause, dtype="string"),
            "confidence": confidence.astype("float64"),
            "evidence": pd.array(_evidence(f, template), dtype="string"),
            "pod": f["pod"].astype("string").to_numpy(),
            "pod_method": pd.array(method, dtype="string"),
            "pod_state": f["pod_state"].astype("string").to_numpy(),
            "node": f["node"].astype("string").to_numpy(),
            "ms_since_deletion": pd.array(since_deletion, dtype="Float64"),
            "ms_since_ready": pd.array(since_ready, dtype="Float64"),
            "conn_age_ms": f["conn_age_ms"].astype("Float64").to_numpy(),
            "conn_reused": reused,
            "conn_outcome": f["conn_outcome"].astype("string").to_numpy(),
        }
    )
    for column in ("ms_since_deletion", "ms_since_ready", "conn_age_ms"):
        out[column] = out[column].astype("Float64")
    for column in ("pod", "pod_state", "node", "conn_outcome"):
        out[column] = out[column].astype("string")
    return check_frame(out, FAILURES, "attribution output")


def _fmt_ms(value: float) -> str:
    return "?" if np.isnan(value) else f"{value:.0f} ms"


def _evidence(f: pd.DataFrame, template: np.ndarray) -> list[str]:
    """One sentence per failure naming the decisive signal (for people, so not vectorized)."""
    rows = zip(
        template,
        f["error_kind"].astype(str),
        f["pod"].astype("string").fillna("an unknown Pod"),
        f["pod_method"].astype(str),
        f["ms_since_deletion"].to_numpy(dtype="float64", na_value=np.nan),
        f["ms_since_ready"].to_numpy(dtype="float64", na_value=np.nan),
        f["server_close_ms"].to_numpy(dtype="float64", na_value=np.nan),
        f["idle_ms"].to_numpy(dtype="float64", na_value=np.nan),
        f["ready_endpoints"].to_numpy(dtype="int64"),
        f["nodes_lacking_local"].to_numpy(dtype="int64"),
        strict=True,
    )
    sentences = []
    for tpl, kind, pod, method, since_del, since_ready, close, idle, ready, lacking in rows:
        via = f"(Pod from {method})"
        if tpl == "no-endpoints":
            s = f"{kind} while the Service had no usable endpoint (now or within the rules lag)"
        elif tpl in ("lag-direct", "lag-inferred", "lag-5xx"):
            s = (
                f"new connection {kind} at {pod} {via}, {_fmt_ms(since_del)} after its deletion "
                f"was observed: rules still sent new connections to it"
            )
        elif tpl in ("not-ready-connect", "not-ready-5xx"):
            s = f"{kind} from {pod} {via}, {_fmt_ms(since_ready)} after it was first seen Ready"
            if np.isnan(since_ready):
                s = f"{kind} from {pod} {via}, which had started but was not Ready yet"
        elif tpl == "lb-lag-pods":
            s = (
                f"new connection {kind} at {pod} {via} sent by a load balancer that targets Pods "
                f"directly ({_fmt_ms(since_del)} after the Pod's deletion): the LB had not yet "
                f"deregistered it"
            )
        elif tpl == "lb-lag":
            s = (
                f"SYN unanswered while {lacking} node(s) had no local ready endpoint under "
                f"externalTrafficPolicy Local"
            )
        elif tpl == "race-packets":
            when = (
                f"{_fmt_ms(-close)} before the request was sent"
                if close <= 0
                else f"{_fmt_ms(close)} after it, crossing the request on the wire"
            )
            s = f"{kind} on a reused connection idle {_fmt_ms(idle)}: the server closed it {when}"
        elif tpl == "race-timing":
            s = (
                f"{kind} within {FAST_FAILURE_MS:.0f} ms on a reused connection idle "
                f"{_fmt_ms(idle)} (no packets: timing only)"
            )
        elif tpl in ("cut-packets", "cut-state"):
            when = (
                f"{_fmt_ms(since_del)} before the request started"
                if since_del >= 0
                else f"{_fmt_ms(-since_del)} after the request started"
            )
            s = f"{kind} mid-request from {pod} {via}, whose deletion was observed {when}"
            if not np.isnan(close):
                s += f"; the server closed {_fmt_ms(close)} after the request started"
        elif tpl == "overload":
            s = f"{kind} while only {ready} endpoints were ready (fewer than desired)"
        else:
            s = f"{kind} from {pod} {via}: no rule matched"
        sentences.append(s)
    return sentences
