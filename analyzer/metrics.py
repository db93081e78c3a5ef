"""Metrics over attributed failures: totals by cause, disruption windows and seconds, latency per
second, and the timings a rollout's settings should be tuned against (readiness lead, effective
endpoint propagation, effective drain).

Disruption seconds follow OpenShift's disruption monitor: a second counts when at least one
request of that kind (new connection / reused connection) failed in it, so one bad second with a
thousand failures weighs the same as one with a single failure — it measures *how long* users
were hurt, the counts say *how many*.
"""

from __future__ import annotations

import json
import math
from typing import NotRequired, TypedDict

import numpy as np
import pandas as pd

from analyzer.joins import lookup
from analyzer.schema import WINDOWS, Cause, ErrorKind, check_frame

DEFAULT_MERGE_GAP_NS = 1_000_000_000
_SECOND_NS = 1_000_000_000
#: How often the bound on the next run's longest timing may be too low: one rollout in twenty.
BOUND_CONFIDENCE = 0.95
#: Below three samples the bound is not worth quoting: with two, Student's t (1 degree of
#: freedom) at 1 − 0.05/2 is 12.7 standard deviations, i.e. "anything".
MIN_BOUND_SAMPLES = 3


class TimingStats(TypedDict):
    """Distribution of one measured timing, in ms; None where there were no samples."""

    n: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def failed_by_cause(failures: pd.DataFrame) -> dict[str, int]:
    """Failure count per cause, every cause present (zeros included) so budgets can name any."""
    counts = failures["cause"].astype(str).value_counts()
    return {c.value: int(counts.get(c.value, 0)) for c in Cause}


def disruption_windows(
    failures: pd.DataFrame, merge_gap_ns: int = DEFAULT_MERGE_GAP_NS
) -> pd.DataFrame:
    """Failures merged into windows when a failure starts less than ``merge_gap_ns`` after the
    window's latest end; each window carries its cause mix."""
    if failures.empty:
        return WINDOWS.empty()
    f = failures.sort_values("start_ns", kind="stable")
    start = f["start_ns"].to_numpy(dtype="int64")
    end = f["end_ns"].to_numpy(dtype="int64")
    running_end = np.maximum.accumulate(end)
    new_window = np.empty(len(f), dtype=bool)
    new_window[0] = True
    new_window[1:] = start[1:] - running_end[:-1] >= merge_gap_ns
    window_id = np.cumsum(new_window) - 1
    f = f.assign(window_id=window_id, reused=f["conn_reused"].astype(bool))
    grouped = f.groupby("window_id", sort=True)
    mix = pd.crosstab(f["window_id"], f["cause"].astype(str))
    causes = [
        json.dumps({str(c): int(n) for c, n in row.items() if n}, sort_keys=True)
        for _, row in mix.iterrows()
    ]
    # ties go to the cause listed first in the Cause enum, so the choice is stable
    order = [c.value for c in Cause if c.value in mix.columns]
    dominant = mix[order].idxmax(axis=1).astype(str).tolist()
    out = pd.DataFrame(
        {
            "window_id": grouped.size().index.to_numpy(dtype="int64"),
            "start_ns": grouped["start_ns"].min().to_numpy(dtype="int64"),
            "end_ns": grouped["end_ns"].max().to_numpy(dtype="int64"),
            "failed": grouped.size().to_numpy(dtype="int64"),
            "new_failed": (grouped.size() - grouped["reused"].sum()).to_numpy(dtype="int64"),
            "reused_failed": grouped["reused"].sum().to_numpy(dtype="int64"),
            "dominant_cause": pd.array(dominant, dtype="string"),
            "causes": pd.array(causes, dtype="string"),
        }
    )
    return check_frame(out, WINDOWS, "metrics windows")


def disruption_seconds(failures: pd.DataFrame) -> dict[str, int]:
    """Seconds with at least one failed request, for new and for reused connections."""
    second = failures["start_ns"].to_numpy(dtype="int64") // _SECOND_NS
    reused = failures["conn_reused"].to_numpy(dtype=bool)
    return {
        "new": len(np.unique(second[~reused])),
        "reused": len(np.unique(second[reused])),
    }


def success_latency_ms(requests: pd.DataFrame) -> pd.Series:
    """Latency (start → end) of the successful requests, in ms (from the two columns alone: a
    boolean filter of the frame would copy every column of millions of rows)."""
    ok = (requests["error_kind"] == ErrorKind.OK.value).to_numpy(dtype=bool, na_value=False)
    latency = requests["end_ns"].to_numpy(dtype="int64") - requests["start_ns"].to_numpy("int64")
    return pd.Series(latency[ok].astype("float64") / 1e6)


def latency_per_second(requests: pd.DataFrame) -> pd.DataFrame:
    """Per second of request start: count, failures and latency percentiles (ms) of successes."""
    columns = ["second_ns", "requests", "failed", "p50_ms", "p90_ms", "p99_ms", "max_ms"]
    if requests.empty:
        return pd.DataFrame({c: pd.Series([], dtype="float64") for c in columns})
    second = requests["start_ns"].to_numpy(dtype="int64") // _SECOND_NS * _SECOND_NS
    latency = (requests["end_ns"] - requests["start_ns"]).to_numpy(dtype="float64") / 1e6
    ok = (requests["error_kind"] == ErrorKind.OK.value).to_numpy()
    frame = pd.DataFrame({"second_ns": second, "latency_ms": latency, "failed": ~ok})
    counts = frame.groupby("second_ns").agg(
        requests=("latency_ms", "size"), failed=("failed", "sum")
    )
    quantiles = (
        frame[ok]
        .groupby("second_ns")["latency_ms"]
        .quantile(np.array([0.5, 0.9, 0.99, 1.0]))
        .unstack()
        .rename(columns={0.5: "p50_ms", 0.9: "p90_ms", 0.99: "p99_ms", 1.0: "max_ms"})
    )
    out = counts.join(quantiles, how="left").reset_index()
    return out.astype({"second_ns": "int64", "requests": "int64", "failed": "int64"})[columns]


def timing_stats(values_ms: pd.Series) -> TimingStats:
    values = pd.to_numeric(values_ms, errors="coerce").dropna().to_numpy(dtype="float64")
    if len(values) == 0:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "max_ms": round(float(values.max()), 3),
    }


def served_spans(requests: pd.DataFrame) -> pd.DataFrame:
    """Per Pod (the index) that served a request: the ends (ns) of its first and last
    successful responses, ``first_ns`` and ``last_ns``. Made once per analysis and passed
    along: filtering a million requests for successes and grouping them by Pod costs about a
    tenth of a second each time."""
    ok = (requests["error_kind"] == ErrorKind.OK.value) & requests["pod_matched"].notna()
    # only the two columns read: a boolean filter copies every column it keeps
    served = requests.loc[ok, ["pod_matched", "end_ns"]]
    ends = served.groupby("pod_matched", observed=True)["end_ns"].agg(["min", "max"])
    return ends.rename(columns={"min": "first_ns", "max": "last_ns"}).astype("int64")


def readiness_lead(pods: pd.DataFrame, spans: pd.DataFrame, since_ns: int) -> pd.Series:
    """Per Pod made Ready at or after ``since_ns`` (load start): Ready observed → its first
    successful response (``served_spans``), in ms. Negative values mean traffic arrived before
    the watch saw Ready."""
    first_ok = spans["first_ns"].astype("float64")
    became_ready = pods[pods["ready_ns"].notna() & (pods["ready_ns"] >= since_ns)]
    first = lookup(became_ready["pod"], first_ok).astype("float64")
    lead = pd.Series(
        (first - became_ready["ready_ns"].astype("float64")).to_numpy() / 1e6,
        index=became_ready["pod"].astype(str).to_numpy(),
        dtype="float64",
    )
    return lead.dropna()


def endpoint_leaving_ns(
    pods: pd.DataFrame, endpoints: pd.DataFrame, *, serving: bool = False
) -> pd.Series:
    """When each deleted Pod's endpoint was first observed not ready (terminating, or removed);
    the Pod's deletion when the slice history does not show it. Index: Pod name.

    ``serving``: when it stopped being ready *or serving* instead — where kube-proxy falls back
    to serving terminating endpoints (KEP-1669), that is when a node's rules start to drop it."""
    deleted = pods[pods["deletion_ns"].notna()].set_index("pod")["deletion_ns"].astype("int64")
    if endpoints.empty or deleted.empty:
        return deleted
    # the end of a Pod's last ready interval is when the slice stopped calling it ready
    # (terminating, not ready, or removed); starting Pods' not-ready intervals come before it
    usable = endpoints["ready"].astype(bool)
    if serving:
        usable |= endpoints["serving"].astype(bool)
    eps = endpoints[endpoints["pod"].notna() & usable]
    last_ready_end = eps.groupby("pod")["to_ns"].max()
    leaving = last_ready_end.reindex(deleted.index).fillna(deleted)
    return pd.Series(leaving.astype("int64"))


def endpoint_propagation(
    leaving_ns: pd.Series,
    node_conns: pd.DataFrame,
    capture_nodes: dict[str, str],
    client_ips: set[str],
) -> pd.DataFrame:
    """Endpoint leaving observed → the last new connection that still reached the Pod, per Pod
    and forwarding node, from node-side captures (``node_conns`` carries the resolved ``pod``).

    The forwarding node is the one whose rules chose the Pod: under Cluster policy it
    masquerades the client, so the connection's source address names it (reported as that
    address: the watch does not list node addresses); when the client's own address arrives
    (Local policy) it is the capture's node.
    """
    columns = {"pod": "string", "node": "string", "propagation_ms": "float64"}
    if node_conns.empty or leaving_ns.empty:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in columns.items()})
    # only the columns read below: a boolean filter copies every column it keeps
    conns = node_conns.loc[
        node_conns["pod"].notna() & (node_conns["syn_count"] > 0),
        ["pod", "syn_ns", "client_ip", "capture"],
    ]
    t0 = lookup(conns["pod"], leaving_ns)
    late = conns[t0.notna() & (conns["syn_ns"] >= t0)]
    source = late["client_ip"].astype(str)
    via = late["capture"].astype(str).map(lambda c: capture_nodes.get(c, c))
    late = late.assign(via=via.where(source.isin(client_ips), source))
    last = late.groupby(["pod", "via"], as_index=False)["syn_ns"].max()
    return pd.DataFrame(
        {
            "pod": last["pod"].astype("string"),
            "node": last["via"].astype("string"),
            "propagation_ms": (last["syn_ns"] - lookup(last["pod"], leaving_ns)).astype("float64")
            / 1e6,
        }
    )


def propagation_from_responses(leaving_ns: pd.Series, requests: pd.DataFrame) -> pd.DataFrame:
    """Without node captures: endpoint leaving observed → the last *new* connection whose
    response named the Pod (header), per Pod. A lower bound of the slowest node's lag, seen
    only while the Pod still answers (e.g. during a preStop sleep); node unknown (NA)."""
    columns = {"pod": "string", "node": "string", "propagation_ms": "float64"}
    new = requests[
        requests["conn_new"].astype(bool)
        & (requests["pod_method"] == "header")
        & requests["pod_matched"].notna()
    ]
    t0 = lookup(new["pod_matched"], leaving_ns)
    late = new[t0.notna() & (new["start_ns"] >= t0)]
    if late.empty:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in columns.items()})
    last = late.groupby("pod_matched")["start_ns"].max()
    return pd.DataFrame(
        {
            "pod": last.index.astype("string"),
            "node": pd.array([pd.NA] * len(last), dtype="string"),
            "propagation_ms": (
                last.to_numpy() - lookup(last.index.to_series(), leaving_ns).to_numpy()
            )
            / 1e6,
        }
    ).astype(columns)


def syn_interval_ms(requests: pd.DataFrame, nodes: int) -> float:
    """The usual time between two new connections through one node (median gap between new
    connections × the nodes they spread over): a measured propagation is the last SYN seen
    still reaching a Pod, so the rules changed up to about this much later. 0 without data."""
    starts = np.sort(requests.loc[requests["conn_new"].astype(bool), "start_ns"].to_numpy("int64"))
    if len(starts) < 2:
        return 0.0
    return float(np.median(np.diff(starts))) / 1e6 * max(nodes, 1)


def drain_duration(pods: pd.DataFrame, spans: pd.DataFrame, node_conns: pd.DataFrame) -> pd.Series:
    """Per deleted Pod: deletion observed → the last thing it sent (its last successful
    response, from ``served_spans``; a byte or a FIN on a node-captured connection), in ms:
    what preStop + graceful drain effectively lasted. Only the Pod's own packets count: a
    connection's end can be a client's ACK or retransmission seconds after the Pod exited, and
    a SYN it refused is a node still routing to it, not the Pod draining."""
    deleted = pods[pods["deletion_ns"].notna()].set_index("pod")["deletion_ns"].astype("int64")
    last = [spans["last_ns"]]
    if not node_conns.empty:
        by_pod = node_conns[node_conns["pod"].notna()]
        sent = by_pod[["last_s2c_data_ns", "server_fin_ns"]].max(axis=1, skipna=True)
        last.append(sent.groupby(by_pod["pod"]).max().dropna())
    last_seen = pd.concat(last).groupby(level=0).max().reindex(deleted.index)
    drain = (last_seen - deleted).dropna()
    return pd.Series(drain[drain >= 0].astype("float64") / 1e6)


class UpperBound(TypedDict):
    """An upper bound on the longest of a timing's values in the next run (ms): what a setting
    sized from one run must cover. ``upper_ms`` is None when there are too few samples."""

    statistic: str
    confidence: float
    n: int
    future_n: int
    mean_ms: float | None
    sd_ms: float | None
    max_ms: float | None
    upper_ms: float | None
    #: The node whose samples set the bound, when a per-node model did (then ``mean_ms`` is that
    #: node's mean and ``sd_ms`` the spread within nodes).
    node: NotRequired[str]


def student_t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with an integer ``df`` ≥ 1, in closed form (Abramowitz & Stegun
    26.7.3–4): the analyzer has no statistics library and needs only integer degrees of
    freedom (n − 1)."""
    theta = math.atan2(t, math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2:
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inside = (2 / math.pi) * (
            theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0)
        )
    else:
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        inside = math.sin(theta) * total
    return (1 + inside) / 2


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t, by bisection on its CDF."""
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def upper_prediction_bound(
    values_ms: pd.Series, confidence: float = BOUND_CONFIDENCE, future_n: int | None = None
) -> UpperBound:
    """One-sided normal-theory upper prediction bound on the largest of the next ``future_n``
    values (default: as many as measured), Bonferroni-adjusted:
    mean + t(1 − (1 − confidence)/future_n, n − 1) · sd · √(1 + 1/n), never below the maximum.

    Why this and not max + a fixed margin: with 3–13 samples the maximum of the next run exceeds
    this run's maximum about half the time; the t factor widens the bound exactly as far as few
    samples and a wide spread leave it uncertain."""
    values = pd.to_numeric(values_ms, errors="coerce").dropna().to_numpy(dtype="float64")
    n = len(values)
    future = max(future_n or n, 1)
    bound: UpperBound = {
        "statistic": "one-sided normal prediction bound on the maximum of the next "
        f"{future} sample(s) (Student t, Bonferroni)",
        "confidence": confidence,
        "n": n,
        "future_n": future,
        "mean_ms": None,
        "sd_ms": None,
        "max_ms": None,
        "upper_ms": None,
    }
    if n == 0:
        return bound
    mean, largest = float(values.mean()), float(values.max())
    bound["mean_ms"], bound["max_ms"] = round(mean, 3), round(largest, 3)
    if n < MIN_BOUND_SAMPLES:
        return bound
    sd = float(values.std(ddof=1))
    factor = student_t_quantile(1 - (1 - confidence) / future, n - 1) * math.sqrt(1 + 1 / n)
    bound["sd_ms"] = round(sd, 3)
    bound["upper_ms"] = round(max(mean + factor * sd, largest), 3)
    return bound


def _per_node_bound(
    values: pd.Series, nodes: pd.Series, confidence: float, future: int
) -> UpperBound | None:
    """The bound with each node's own mean and the spread pooled within nodes:
    max over nodes of mean_node + t(1 − (1 − confidence)/future, n − k) · s_within · √(1 + 1/n_node).
    None without at least two nodes and MIN_BOUND_SAMPLES − 1 degrees of freedom within them."""
    frame = pd.DataFrame({"ms": values, "node": nodes}).dropna()
    groups = frame.groupby("node")["ms"]
    n, k = len(frame), groups.ngroups
    if k < 2 or n - k < MIN_BOUND_SAMPLES - 1:
        return None
    within = math.sqrt(float(((frame["ms"] - groups.transform("mean")) ** 2).sum()) / (n - k))
    factor = student_t_quantile(1 - (1 - confidence) / future, n - k)
    mean, count = groups.mean(), groups.count()
    per_node = mean + factor * within * np.sqrt(1 + 1 / count)
    slowest = str(per_node.idxmax())
    return {
        "statistic": "one-sided normal prediction bound on the maximum of the next "
        f"{future} sample(s), each node's mean with the spread within nodes (Student t, "
        "Bonferroni)",
        "confidence": confidence,
        "n": n,
        "future_n": future,
        "mean_ms": round(float(mean[slowest]), 3),
        "sd_ms": round(within, 3),
        "max_ms": round(float(frame["ms"].max()), 3),
        "upper_ms": round(max(float(per_node.max()), float(frame["ms"].max())), 3),
        "node": slowest,
    }


def node_aware_upper_bound(
    values_ms: pd.Series, nodes: pd.Series, confidence: float = BOUND_CONFIDENCE
) -> UpperBound:
    """The smaller of two upper prediction bounds on the next run's longest propagation, each at
    half the error (Bonferroni: where both hold, the smaller holds with ``confidence``): the
    pooled one, and one that gives each node its own mean.

    Why both: nodes differ (a slow proxy, an overloaded node), and pooling a fast node's samples
    with a slow one's reads their gap as noise, inflating the pooled bound: two nodes at 0.4 s
    and one at 10 s bound the next run at 23 s, while per node it is about 14 s. Where nodes do
    not differ, the per-node model has fewer degrees of freedom and is the looser one, and the
    pooled bound stands."""
    half = 1 - (1 - confidence) / 2
    pooled = upper_prediction_bound(values_ms, half)
    per_node = _per_node_bound(
        pd.to_numeric(values_ms, errors="coerce"), nodes, half, max(pooled["future_n"], 1)
    )
    found = [b for b in (pooled, per_node) if b is not None and b["upper_ms"] is not None]
    best = min(found, key=lambda b: float(b["upper_ms"] or 0.0)) if found else pooled
    return {**best, "confidence": confidence}


def node_names_by_address(pods: pd.DataFrame) -> dict[str, str]:
    """Node address → node name from the Pods' ``status.hostIP`` and ``spec.nodeName``: a
    namespaced watch cannot read Node objects, but every Pod names its node and that node's
    address."""
    if "host_ip" not in pods.columns:
        return {}
    known = pods[pods["host_ip"].notna() & pods["node"].notna()]
    pairs = known.drop_duplicates("host_ip")
    return dict(zip(pairs["host_ip"].astype(str), pairs["node"].astype(str), strict=True))


def name_forwarding_nodes(
    propagation: pd.DataFrame, pods: pd.DataFrame, capture_nodes: set[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """Propagation samples with the forwarding node *named*, and the addresses of the samples
    left out because they name no node.

    A masquerading source equal to a node's hostIP names that node; a forwarding node already
    named (a node capture's node, or a Pod's node) stays; a sample without a node (seen through
    responses, no node capture) stays without one. Any other address is no node's and its
    samples are left out: on the local cluster it is a node's Pod-network gateway, whose
    connections mix locally forwarded client traffic with the kubelet's probes, and probes go on
    until the container stops, so the last of them measures no routing (in a preStop 5 s run
    they set the maximum at 4.7 s while every node had dropped the Pod by 3 s)."""
    names = node_names_by_address(pods)
    known = {*names.values(), *capture_nodes, *pods["node"].dropna().astype(str)}
    via = propagation["node"].astype("string")
    named = via.map(lambda v: names.get(v, v if v in known else None), na_action="ignore")
    left_out = via.notna() & named.isna()
    kept = propagation[~left_out].assign(node=named[~left_out].astype("string"))
    return kept.reset_index(drop=True), via[left_out].astype(str).reset_index(drop=True)
