"""Failed client requests through an L7 hop: which hop log line each one was, and what the hop's
failed upstream attempt met.

A hop (an ingress proxy, an L7 load balancer) answers its client 502 / 504 itself when its
upstream attempt fails, so the client's request names no Pod and its connection shows nothing
of the Pod's: the hop's access log is the only record of where the request went
(``analyzer.readers.accesslog``). This module joins the client's failed requests to the hop's
lines and, for a failure the hop decided, describes the deciding attempt: its upstream address
and the Pod that held it, when it was made, whether it reused a pooled connection, how long
after the Pod's endpoint left it was sent, and whether packets show the Pod closing a
connection to that address as the attempt met it. ``analyzer.attribution`` decides the cause.

The join (docs/causes.md, "L7 hops"):

- **exact** where the log has the client's port and connection position (rolltrace's nginx
  JSON): the hop's ``remote_port`` is the client's local port (the L7 hop terminates the client's
  TCP; an SNAT in front keeps the port unless two clients collide), its
  ``connection_requests`` the client's ``conn_seq``, and the hop received the request while the
  client had it open. A port reused by a later connection is a different client request: the
  time window tells them apart.
- **coarse** where it has neither (ingress-nginx's default format: one-second ``$time_local``,
  no client port): a failed client request and a hop line are paired when they have the same
  status and ended in the same second, in order within it. Which line of that second is which
  request is a guess, so causes decided through a coarse join carry a lower confidence.

Pure: frames in, frames out, vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from analyzer import joins, metrics
from analyzer.rundir import number_or_none
from analyzer.schema import L7_LB_HOP, AttemptOutcome, ErrorKind, PodMatch

_SECOND_NS = 1_000_000_000
#: Where a hop's log times may sit against the client's: ``$msec`` and ``$request_time`` are
#: each cut to the log's resolution, so a hop request's start lies within two resolutions of
#: the true one.
ROUNDING_RESOLUTIONS = 2
#: A close by the Pod seen this long around a reused attempt still met it: the close and the
#: request crossed on the wire (the same crossing window as a client's keep-alive race).
CROSSING_MS = 50.0
_SEQ_BITS = 24  # connection_requests < 16M requests per connection
_STATUS_BITS = 10  # an HTTP status < 1024

#: What the hop's failed attempt was, as the client's error kind it stands for: the L4 rules
#: then read it as they read a client's own refused, unanswered or cut connection.
ATTEMPT_KIND = {
    AttemptOutcome.CONNECT_ERROR.value: ErrorKind.REFUSED.value,
    AttemptOutcome.NO_SERVER.value: ErrorKind.REFUSED.value,
    AttemptOutcome.CONNECT_TIMEOUT.value: ErrorKind.CONNECT_TIMEOUT.value,
    AttemptOutcome.NO_RESPONSE.value: ErrorKind.RESET.value,
    AttemptOutcome.RESPONSE_TIMEOUT.value: ErrorKind.READ_TIMEOUT.value,
    AttemptOutcome.HTTP_5XX.value: ErrorKind.HTTP_5XX.value,
    AttemptOutcome.FAILED_5XX.value: ErrorKind.HTTP_5XX.value,
}


class HopJoin(StrEnum):
    """How a client request was tied to a hop's log line (the failures ``hop_join`` column)."""

    EXACT = "exact"  # client port + connection position + time window
    TIMED = "timed"  # connection position + status + millisecond time window (port rewritten)
    COARSE = "coarse"  # status + the log's second, in order: a guess within the second


@dataclass(frozen=True)
class HopSettings:
    """What run.json says of one hop and of the app behind it; None: not recorded (an imported
    log says nothing of its hop's settings)."""

    sync_interval_s: float | None = None  # how often the hop applies endpoint changes
    idle_timeout_s: float | None = (
        None  # the hop closes a pooled upstream connection idle this long
    )
    app_keepalive_s: float | None = None  # the app closes a keep-alive connection idle this long


def hop_settings(extra: dict[str, Any], scenario: dict[str, Any]) -> dict[str, HopSettings]:
    """Per hop, its settings: run.json ``hops`` (a list of entries with ``name``, or a mapping
    by name: ``sync_interval_s``, ``idle_timeout_s`` or ``upstream_keepalive_timeout_s``), else
    for the ``ingress`` hop the scenario's ``cluster.ingress`` and for the ``lb`` hop its
    ``cluster.lb`` in ``l7`` mode (``idle_timeout_s``); the app's keep-alive timeout
    from ``workload.app.keepalive_timeout_s`` (under ``""``). Never required: absent values
    stay None (an imported log says nothing of its hop)."""
    app = ((scenario.get("workload") or {}).get("app") or {}).get("keepalive_timeout_s")
    section = scenario.get("cluster")
    cluster: dict[str, Any] = section if isinstance(section, dict) else {}
    recorded: dict[str, dict[str, Any]] = {}
    ingress = cluster.get("ingress")
    if isinstance(ingress, dict):
        recorded["ingress"] = dict(ingress)
    lb = cluster.get("lb")
    if isinstance(lb, dict) and lb.get("mode") == "l7":  # the L7 LB's log is hops/lb.log
        recorded[L7_LB_HOP] = {"idle_timeout_s": lb.get("idle_timeout_s")}
    hops = extra.get("hops")
    if isinstance(hops, list):  # a list of {name: ..., ...} is read as the same mapping
        hops = {h.get("name"): h for h in hops if isinstance(h, dict)}
    for name, entry in (hops or {}).items() if isinstance(hops, dict) else ():
        if isinstance(entry, dict):
            recorded[str(name)] = {**recorded.get(str(name), {}), **entry}
    return {
        name: HopSettings(
            number_or_none(entry.get("sync_interval_s")),
            number_or_none(entry.get("idle_timeout_s", entry.get("upstream_keepalive_timeout_s"))),
            number_or_none(app),
        )
        for name, entry in recorded.items()
    } | {"": HopSettings(app_keepalive_s=number_or_none(app))}


def _windowed_join(
    failed: pd.DataFrame, hop: pd.DataFrame, client_key: np.ndarray, hop_key: np.ndarray
) -> pd.DataFrame:
    """(row, line) of each failed request a hop line with the same key joins: the latest such
    request that started before the hop received it, if it was still open then (within two
    log resolutions). merge_asof by one integer key, not a cross join; a client request gets
    one hop line at most, the latest that started within it. Keys below 0: unknown."""
    slack = hop["time_resolution_ms"].to_numpy(dtype="float64") * 1e6 * ROUNDING_RESOLUTIONS
    left = pd.DataFrame(
        {
            "key": hop_key,
            "t": hop["start_ns"].to_numpy(dtype="int64") + slack.astype("int64"),
            "line": hop["line"].to_numpy(dtype="int64"),
            "slack": slack,
        }
    )[hop_key >= 0]
    known = client_key >= 0
    right = pd.DataFrame(
        {
            "key": client_key[known],
            "t": failed["start_ns"].to_numpy(dtype="int64")[known],
            "row": np.flatnonzero(known),
            "client_end": failed["end_ns"].to_numpy(dtype="int64")[known],
        }
    )
    merged = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        right.sort_values("t", kind="stable"),
        on="t",
        by="key",
        direction="backward",
    ).dropna(subset=["row"])
    slack_ns = merged["slack"].to_numpy(dtype="float64")
    hop_start = merged["t"].to_numpy(dtype="float64") - slack_ns
    merged = merged[hop_start <= merged["client_end"].to_numpy(dtype="float64") + slack_ns]
    merged = merged.sort_values("t", kind="stable").drop_duplicates("row", keep="last")
    return pd.DataFrame(
        {"row": merged["row"].to_numpy(dtype="int64"), "line": merged["line"].to_numpy("int64")}
    )


def _key(first: pd.Series, second: pd.Series, bits: int) -> np.ndarray:
    """Two integer columns as one int64 key (``first << bits | second``), −1 where either is
    missing."""
    a = pd.to_numeric(first).to_numpy(dtype="float64", na_value=np.nan)
    b = pd.to_numeric(second).to_numpy(dtype="float64", na_value=np.nan)
    missing = np.isnan(a) | np.isnan(b)
    key = (np.nan_to_num(a).astype("int64") << bits) + np.nan_to_num(b).astype("int64")
    return np.where(missing, -1, key)


def _exact_join(failed: pd.DataFrame, hop: pd.DataFrame) -> pd.DataFrame:
    """Where the hop saw the client's own port: (port, connection position) and the window."""
    return _windowed_join(
        failed,
        hop,
        _key(failed["local_port"], failed["conn_seq"], _SEQ_BITS),
        _key(hop["client_port"], hop["connection_requests"], _SEQ_BITS),
    )


def _timed_join(failed: pd.DataFrame, hop: pd.DataFrame, free: np.ndarray) -> pd.DataFrame:
    """Where an SNAT in front of the hop rewrote the client's port (the local cluster's
    masquerade does): (connection position, status) and the millisecond window, over the
    requests still ``free``."""
    client_key = _key(failed["conn_seq"], failed["status_code"], _STATUS_BITS)
    return _windowed_join(
        failed,
        hop,
        np.where(free, client_key, -1),
        _key(hop["connection_requests"], hop["status"], _STATUS_BITS),
    )


def _coarse_join(failed: pd.DataFrame, hop: pd.DataFrame) -> pd.DataFrame:
    """(row, line) pairs of failed requests that got a status and hop lines without a client
    port: the same status, ended in the same second of the log, k-th with k-th in order."""
    answered = failed["status_code"].notna().to_numpy()
    client = pd.DataFrame(
        {
            "row": np.flatnonzero(answered),
            "status": failed["status_code"].to_numpy(dtype="float64", na_value=np.nan)[answered],
            "second": failed["end_ns"].to_numpy(dtype="int64")[answered] // _SECOND_NS,
            "t": failed["end_ns"].to_numpy(dtype="int64")[answered],
        }
    ).sort_values("t", kind="stable")
    lines = pd.DataFrame(
        {
            "line": hop["line"].to_numpy(dtype="int64"),
            "status": hop["status"].to_numpy(dtype="float64"),
            "second": hop["end_ns"].to_numpy(dtype="int64") // _SECOND_NS,
        }
    ).sort_values("line", kind="stable")
    keys = ["status", "second"]
    client["k"] = client.groupby(keys).cumcount()
    lines["k"] = lines.groupby(keys).cumcount()
    paired = client.merge(lines, on=[*keys, "k"], how="inner")
    return paired[["row", "line"]].astype("int64")


def _join_hop(failed: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """(row, line, hop_join) of one hop's failing lines: exact where the client's port and
    connection position match, timed for the remaining lines with a connection position and
    the requests no exact join took, coarse for lines without one."""
    precise = lines[lines["connection_requests"].notna()]
    exact = _exact_join(failed, precise)
    free = np.ones(len(failed), dtype=bool)
    free[exact["row"].to_numpy()] = False
    timed = _timed_join(failed, precise[~precise["line"].isin(exact["line"])], free)
    coarse = _coarse_join(failed, lines[lines["connection_requests"].isna()])
    return pd.concat(
        [
            exact.assign(hop_join=HopJoin.EXACT.value),
            timed.assign(hop_join=HopJoin.TIMED.value),
            coarse.assign(hop_join=HopJoin.COARSE.value),
        ],
        ignore_index=True,
    )


#: Which join wins when two hops logged one request (an L7 LB in front of an ingress).
_JOIN_RANK = {HopJoin.EXACT.value: 0, HopJoin.TIMED.value: 1, HopJoin.COARSE.value: 2}


def join_failures(failed: pd.DataFrame, hop_requests: pd.DataFrame) -> pd.DataFrame:
    """Per failed client request a hop logged: ``hop``, ``line``, ``hop_join`` (``HopJoin``),
    indexed like ``failed``. Each hop is joined on its own; where two hops logged the same
    request, the more precise join wins. Only hop lines that answered a failure (status ≥ 500)
    are joined: a client failure is never paired with a line the hop answered well."""
    failing = hop_requests[hop_requests["status"] >= 500]
    parts = [
        _join_hop(failed, lines).assign(hop=str(hop))
        for hop, lines in failing.groupby("hop", sort=True)
        if not failed.empty
    ]
    joined = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if joined.empty:
        return pd.DataFrame(
            {"hop": pd.Series(dtype="string"), "line": pd.Series(dtype="int64")},
            index=failed.index[:0],
        ).assign(hop_join=pd.Series(dtype="string"))
    joined["rank"] = joined["hop_join"].map(_JOIN_RANK)
    joined = joined.sort_values(["row", "rank", "hop"], kind="stable")
    joined = joined.drop_duplicates("row", keep="first")
    return pd.DataFrame(
        {
            "hop": pd.array(joined["hop"].to_numpy(), dtype="string"),
            "line": joined["line"].to_numpy(dtype="int64"),
            "hop_join": pd.array(joined["hop_join"].to_numpy(), dtype="string"),
        },
        index=failed.index[joined["row"].to_numpy(dtype="int64")],
    )


def _unattempted(hop_requests: pd.DataFrame) -> pd.DataFrame:
    """A hop_attempts row for each failed line that tried no upstream at all (ingress-nginx
    answers 503 when its endpoint list is empty): a ``no-server`` attempt of the line's
    upstream group, so that it is decided like one."""
    none = hop_requests[(hop_requests["attempts"] == 0) & (hop_requests["status"] >= 500)]
    return pd.DataFrame(
        {
            "hop": none["hop"].astype(str).to_numpy(),
            "line": none["line"].to_numpy(dtype="int64"),
            "attempt": 1,
            "upstream_addr": none["upstream"].astype("string").fillna("-").to_numpy(),
            "upstream_ip": pd.array([pd.NA] * len(none), dtype="string"),
            "upstream_port": pd.array([pd.NA] * len(none), dtype="Int64"),
            "connect_ms": np.nan,
            "response_ms": np.nan,
            "outcome": AttemptOutcome.NO_SERVER.value,
        }
    )


def _deciding_attempts(joined: pd.DataFrame, hop_attempts: pd.DataFrame) -> pd.DataFrame:
    """Per joined request (same index): its line's last failed attempt (the one whose failure
    the hop answered with), and how long the attempts before it took (ms, their logged times
    added up)."""
    failed = hop_attempts[hop_attempts["outcome"].astype(str).isin(ATTEMPT_KIND)]
    last = failed.sort_values("attempt", kind="stable").drop_duplicates(
        ["hop", "line"], keep="last"
    )
    before = hop_attempts["response_ms"].fillna(0.0).astype("float64")
    earlier = before.groupby([hop_attempts["hop"], hop_attempts["line"]]).cumsum() - before
    last = last.assign(earlier_ms=earlier.loc[last.index].to_numpy(dtype="float64"))
    keys = pd.MultiIndex.from_frame(joined[["hop", "line"]].astype({"hop": str}))
    table = last.set_index(pd.MultiIndex.from_frame(last[["hop", "line"]].astype({"hop": str})))
    positions = table.index.get_indexer(keys)
    found = positions >= 0
    picked = table.iloc[np.where(found, positions, 0)].reset_index(drop=True)
    picked.index = joined.index
    return pd.DataFrame(picked[found])


def upstream_closed_ms(
    addr_ip: pd.Series, addr_port: pd.Series, at_ns: np.ndarray, connections: pd.DataFrame
) -> np.ndarray:
    """Per attempt: the Pod's close (first FIN or RST from the server side) of a connection to
    that address nearest the attempt, in ms relative to it, where one within ``CROSSING_MS``
    was captured on a connection that then still carried the hop's data (the request met a
    closing connection); NaN where none was captured."""
    out = np.full(len(at_ns), np.nan)
    conns = connections[connections["server_ip"].isin(set(addr_ip.dropna().astype(str)))]
    if conns.empty or not len(at_ns):
        return out
    close = np.fmin(
        pd.to_numeric(conns["server_fin_ns"]).to_numpy(dtype="float64", na_value=np.nan),
        pd.to_numeric(conns["server_rst_ns"]).to_numpy(dtype="float64", na_value=np.nan),
    )
    data_after = (
        pd.to_numeric(conns["last_c2s_data_ns"]).to_numpy(dtype="float64", na_value=np.nan)
        >= close - CROSSING_MS * 1e6
    )
    keep = ~np.isnan(close) & data_after
    addr = conns["server_ip"].astype(str) + ":" + conns["server_port"].astype(str)
    wanted = addr_ip.astype("string") + ":" + addr_port.astype("string")
    left_code, right_code = joins.shared_codes(wanted.fillna(""), addr[keep])
    # integer times: merge_asof's tolerance is an integer for integer keys
    left = pd.DataFrame({"i": np.arange(len(at_ns)), "a": left_code, "t": at_ns})
    left = left[~np.isnan(at_ns)].astype({"t": "int64"})
    right = pd.DataFrame({"a": right_code, "t": close[keep].astype("int64"), "close": close[keep]})
    merged = pd.merge_asof(
        left.sort_values("t"),
        right.sort_values("t"),
        on="t",
        by="a",
        direction="nearest",
        tolerance=int(CROSSING_MS * 1e6),
    )
    out[merged["i"].to_numpy()] = (merged["close"] - merged["t"]).to_numpy() / 1e6
    return out


def _leaving_ns(pods: pd.DataFrame, endpoints: pd.DataFrame) -> pd.Series:
    """Per deleted Pod, when it stopped being an endpoint the hop should use: the earlier of
    its deletion (the hop's controller watches Pods' endpoints turn terminating with it) and
    the end of its last ready endpoint interval."""
    deleted = pods[pods["deletion_ns"].notna()].drop_duplicates("pod", keep="last")
    deletion = deleted.set_index("pod")["deletion_ns"].astype("float64")
    ready_end = metrics.endpoint_leaving_ns(pods, endpoints).astype("float64")
    return pd.Series(np.fmin(deletion, ready_end.reindex(deletion.index).fillna(deletion)))


def _pod_holding(ips: pd.Series, at: np.ndarray, pods: pd.DataFrame) -> pd.Series:
    """The Pod that held each address when the hop sent to it: the latest one with that IP
    created before the attempt. A hop learns a Pod's address from the same watch, so a Pod is
    always seen before a hop sends to it, and a Pod that took a recycled address later is not
    the one the hop meant (``joins.pods_by_ip`` takes the nearest, for captures that may see
    a Pod's traffic before the watcher sees the Pod)."""
    with_ip = pods[pods["ip"].notna()]
    out = pd.Series(pd.NA, index=ips.index, dtype="string")
    known = ips.notna().to_numpy() & ~np.isnan(at)
    if with_ip.empty or not known.any():
        return out
    left_ip, right_ip = joins.shared_codes(ips[known], with_ip["ip"])
    left = pd.DataFrame({"row": np.flatnonzero(known), "ip": left_ip, "t": at[known]})
    right = pd.DataFrame(
        {
            "ip": right_ip,
            "t": with_ip["created_ns"].to_numpy(dtype="float64"),
            "pod": with_ip["pod"].astype(str).to_numpy(),
        }
    )
    merged = pd.merge_asof(
        left.sort_values("t"), right.sort_values("t"), on="t", by="ip", direction="backward"
    ).dropna(subset=["pod"])
    out.iloc[merged["row"].to_numpy()] = merged["pod"].to_numpy()
    return out


def hop_facts(
    failed: pd.DataFrame,
    hop_requests: pd.DataFrame,
    hop_attempts: pd.DataFrame,
    pods: pd.DataFrame,
    endpoints: pd.DataFrame,
    connections: pd.DataFrame,
    settings: dict[str, HopSettings],
) -> pd.DataFrame:
    """Per failed client request a hop logged (index: ``failed``'s), what its hop's deciding
    attempt shows: ``hop``, ``hop_join``, ``upstream_addr``, ``hop_outcome``, ``hop_kind`` (the
    attempt as a client error kind; NA when the Pod itself answered 5xx, which the hop only
    passed on), ``attempt_reused`` (connect time logged as 0: a pooled connection, or one
    connected within the log's millisecond), ``attempt_ms`` (its upstream time), ``hop_pod``
    (the Pod holding the address then), ``ms_since_leaving`` (when the attempt was made — the
    client's start + the earlier attempts' times — minus the Pod's endpoint leaving),
    ``upstream_close_ms`` (packets: the Pod's close of a connection to it, relative to the
    attempt) and the hop's settings in ms (``sync_interval_ms``, ``hop_idle_ms``,
    ``app_keepalive_ms``; NaN unknown)."""
    joined = join_failures(failed, hop_requests)
    unattempted = _unattempted(hop_requests)
    tried = hop_attempts
    if not unattempted.empty:
        tried = pd.concat([hop_attempts, unattempted], ignore_index=True)
    attempt = _deciding_attempts(joined, tried)
    joined = joined.loc[attempt.index]
    start = failed.loc[attempt.index, "start_ns"].to_numpy(dtype="float64")
    at = start + attempt["earlier_ms"].to_numpy(dtype="float64") * 1e6
    outcome = attempt["outcome"].astype(str)
    pod = _pod_holding(attempt["upstream_ip"], at, pods)
    leaving = _as_float(joins.lookup(pod, _leaving_ns(pods, endpoints)))
    chosen = [settings.get(str(h), settings.get("", HopSettings())) for h in joined["hop"]]
    return pd.DataFrame(
        {
            "hop": joined["hop"],
            "hop_join": joined["hop_join"],
            "upstream_addr": attempt["upstream_addr"].astype("string"),
            "hop_outcome": pd.array(outcome.to_numpy(), dtype="string"),
            "hop_kind": pd.array(
                outcome.map(ATTEMPT_KIND)
                .where(outcome != AttemptOutcome.HTTP_5XX.value)
                .to_numpy(),
                dtype="string",
            ),
            "attempt_reused": (attempt["connect_ms"] == 0).to_numpy(dtype=bool),
            "attempt_ms": attempt["response_ms"].to_numpy(dtype="float64"),
            "hop_pod": pod,
            "ms_since_leaving": (at - leaving) / 1e6,
            "upstream_close_ms": upstream_closed_ms(
                attempt["upstream_ip"], attempt["upstream_port"], at, connections
            ),
            "sync_interval_ms": [_ms(s.sync_interval_s) for s in chosen],
            "hop_idle_ms": [_ms(s.idle_timeout_s) for s in chosen],
            "app_keepalive_ms": [_ms(s.app_keepalive_s) for s in chosen],
        },
        index=attempt.index,
    )


def _ms(seconds: float | None) -> float:
    return np.nan if seconds is None else seconds * 1000


def _as_float(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def path_text(facts: pd.DataFrame) -> pd.Series:
    """Each request's path for people: ``client → HOP → ADDRESS (POD)``."""
    pod = facts["hop_pod"].astype("string").fillna("Pod unknown")
    return "client → " + facts["hop"] + " → " + facts["upstream_addr"] + " (" + pod + ")"


def with_hop_pods(requests: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """``requests`` (joined: ``pod_matched``, ``pod_method``) with the Pod of each hop's
    deciding attempt where the hop log named one: the address the hop sent to is as direct a
    record as a node capture's."""
    named = facts.index[facts["hop_pod"].notna().to_numpy()]
    if not len(named):
        return requests
    out = requests.copy()
    out.loc[named, "pod_matched"] = facts.loc[named, "hop_pod"].to_numpy()
    out.loc[named, "pod_method"] = PodMatch.HOP_LOG.value
    return out
