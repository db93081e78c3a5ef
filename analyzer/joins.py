"""Joins between the canonical tables: requests ↔ client connections ↔ node connections ↔ Pods.

Pure functions over frames. Every join is vectorized (``merge_asof``) because a run holds
millions of requests and packets; nothing here loops per request.

How a request finds its Pod (the ``pod_method`` column, ``PodMatch``), best evidence first:

1. ``header``: a response named the Pod (``X-Pod-Name``, the requests' ``pod`` column) — this
   request's, or another one's on the same connection (a connection reaches one Pod).
2. ``node-capture``: the request's client connection is correlated with a connection on a
   node-side capture (the Pod side of the NAT), whose server address is the Pod IP. Correlation:
   first by the client's own address and port when the load balancer preserves the source
   (``externalTrafficPolicy: Local``, or a Cluster hop that does not masquerade): the first node
   SYN from that address and port at or after the client's SYN, within ``NODE_SYN_WINDOW_NS``
   (SYN retransmissions may be what gets through). Then by port alone, the same way: a
   masquerading node (Cluster policy) rewrites the address but keeps the source port whenever it
   is free. Last, when the port was rewritten too, the node connection whose SYN is nearest in
   time to the client's SYN within ``SNAT_SYN_WINDOW_NS`` that no other client connection
   claimed and whose handshake had the same outcome (answered or not). Node-side "connections"
   on which the client side sent nothing (an ``-i any`` capture's de-NATed copy of a Pod's
   replies) never take part. The Pod IP is then resolved to the Pod that held that IP at that
   moment.
3. ``inferred``: neither exists, so the Pod is inferred from which Pods were in which state at
   request start (pods table): a connection-level failure points at the Pod most recently
   deleted (the one lagging rules may still send to) unless that Pod demonstrably accepted new
   connections just before *and* after (then at the Pod most recently made Ready, which may not
   listen yet); a 5xx at the Pod most recently made Ready; anything else at the most recently
   deleted Pod. Only done for failed requests.
4. ``none``: no evidence at all.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.schema import ErrorKind, PodMatch

#: Each ``PodMatch`` text once, as Python objects: a code per request picks its value.
_POD_MATCHES = np.array([m.value for m in PodMatch], dtype=object)
_POD_MATCH_CODE = {m: code for code, m in enumerate(PodMatch)}

# A request's start is taken on the client before connect() sends the SYN that the capture sees
SYN_AFTER_START_SLACK_NS = 200_000_000
# Node SYN after the client SYN: LB + kube-proxy forwarding, or a SYN retransmission that got through
NODE_SYN_WINDOW_NS = 3_500_000_000
# Without a preserved source port only time proximity is left; keep it tight to stay unambiguous
SNAT_SYN_WINDOW_NS = 5_000_000
# A relist after a GAP delivers its objects shortly after the GAP marker
RELIST_SLACK_NS = 2_000_000_000
# A Pod that answered new connections within this long before and after a moment was accepting
ACCEPTING_WINDOW_NS = 1_000_000_000
# How long after its deletion (or readiness) a Pod stays a plausible target of a cut or a 5xx
# nothing else names: such answers come from a Pod that still runs, and a Pod outlives its
# deletion by its grace period (30 s by default). A refused or unanswered SYN has no horizon:
# a node's rules may send to a deleted Pod for as long as they lag.
INFERENCE_HORIZON_NS = 30_000_000_000

#: Error kinds of a connection that was never established (it was refused or never answered)
CONNECT_FAILURES = {
    ErrorKind.REFUSED.value,
    ErrorKind.CONNECT_TIMEOUT.value,
    ErrorKind.UNREACHABLE.value,
}


def lookup(keys: pd.Series, table: pd.Series) -> pd.Series:
    """``table[key]`` for every key, NA where absent, keeping ``table``'s dtype exactly.

    ``Series.map`` may hand back floats (or Arrow doubles) for nanosecond columns, which cannot
    hold 1.8e18 exactly; positions from the index keep integers integers.
    """
    if table.index.has_duplicates:
        table = table[~table.index.duplicated(keep="last")]
    if table.empty:
        floats = getattr(table.dtype, "kind", "") == "f"  # float64 has NaN, not NA
        missing = np.nan if floats else pd.NA
        empty: pd.Series = pd.Series(missing, index=keys.index, dtype=_nullable(table.dtype))
        return empty
    pos = _positions(pd.Index(table.index), keys)
    found = pos >= 0
    if isinstance(table.dtype, pd.api.extensions.ExtensionDtype):
        # taken where they are held, NA where absent: through numpy, a text column would be
        # made Python strings and back (0.2 s per million rows)
        dtype = table.dtype if found.all() else _nullable(table.dtype)
        taken: pd.Series = pd.Series(
            table.array.take(pos, allow_fill=True), index=keys.index, dtype=dtype
        )
        return taken
    values = table.iloc[np.where(found, pos, 0)]
    out = pd.Series(values.to_numpy(), index=keys.index, dtype=table.dtype)
    if not found.all():
        out = out.astype(_nullable(table.dtype))
        out[~found] = pd.NA
    return out


def _positions(index: pd.Index, keys: pd.Series) -> npt.NDArray[np.intp]:
    """Each key's position in ``index`` (unique), -1 where absent or NA. Integer keys are
    looked up as integers (a nullable column through numpy would be Python objects, hashed one
    by one), and into an index of consecutive integers (connection keys: a capture's rows are
    one run of them) by arithmetic, without a hash table."""
    if not (pd.api.types.is_integer_dtype(keys.dtype) and pd.api.types.is_integer_dtype(index)):
        return index.get_indexer(pd.Index(keys.to_numpy()))
    present = keys.notna().to_numpy()
    values = keys.to_numpy(dtype=np.int64, na_value=0)
    consecutive = (
        len(index) > 0
        and index.is_monotonic_increasing
        and int(index[-1]) - int(index[0]) + 1 == len(index)
    )
    if consecutive:
        pos = values - int(index[0])
        present = present & (pos >= 0) & (pos < len(index))
    else:
        pos = index.get_indexer(pd.Index(values))
    return np.where(present, pos, -1).astype(np.intp)


def _nullable(dtype: Any) -> Any:
    """The NA-capable version of a dtype (int64 → Int64, bool → boolean)."""
    kind = getattr(dtype, "kind", "")
    return {"i": "Int64", "u": "Int64", "b": "boolean", "f": "float64"}.get(kind, dtype)


def shared_codes(*columns: pd.Series) -> list[np.ndarray]:
    """Integer codes for string columns, consistent across them: ``merge_asof`` groups by
    integers many times faster than by Python strings (millions of rows)."""
    sizes = [len(c) for c in columns]
    codes, _ = pd.factorize(pd.concat([c.astype("string") for c in columns], ignore_index=True))
    return np.split(codes.astype("int64"), np.cumsum(sizes)[:-1])


def request_connections(requests: pd.DataFrame, client_conns: pd.DataFrame) -> pd.Series:
    """``conn_key`` of each request's client-capture connection (Int64, NA when not captured).

    A connection is matched on (local IP, local port) and time: the latest connection whose SYN
    is not after the request start (plus a small slack) and that was still alive at the start.
    Reused requests inherit the match of the first request on their ``conn_id``: their own start
    may lie after a port was reused by another connection, the first one's never does.
    """
    out = pd.Series(pd.NA, index=requests.index, dtype="Int64", name="conn_key")
    if requests.empty or client_conns.empty:
        return out
    firsts = (
        requests.loc[
            requests["local_ip"].notna() & requests["local_port"].notna(),
            ["conn_id", "start_ns", "local_ip", "local_port"],
        ]
        .sort_values("start_ns", kind="stable")
        .drop_duplicates("conn_id")
    )
    left_ip, right_ip = shared_codes(firsts["local_ip"], client_conns["client_ip"])
    left = pd.DataFrame(
        {
            "conn_id": firsts["conn_id"].to_numpy(),
            "ip": left_ip,
            "port": firsts["local_port"].astype("int64").to_numpy(),
            "start_ns": firsts["start_ns"].to_numpy(dtype="int64"),
            "t": firsts["start_ns"].to_numpy(dtype="int64") + SYN_AFTER_START_SLACK_NS,
        }
    ).sort_values("t", kind="stable")
    right = pd.DataFrame(
        {
            "ip": right_ip,
            "port": client_conns["client_port"].to_numpy(dtype="int64"),
            "t": client_conns["syn_ns"].to_numpy(dtype="int64"),
            "conn_end": client_conns["end_ns"].to_numpy(dtype="int64"),
            "conn_key": client_conns["conn_key"].to_numpy(dtype="int64"),
        }
    ).sort_values("t", kind="stable")
    merged = pd.merge_asof(left, right, on="t", by=["ip", "port"], direction="backward")
    alive = merged["conn_end"] >= merged["start_ns"] - SYN_AFTER_START_SLACK_NS
    matched = merged[merged["conn_key"].notna() & alive]
    key_by_conn = pd.Series(
        matched["conn_key"].astype("int64").to_numpy(), index=matched["conn_id"].to_numpy()
    )
    out[:] = lookup(requests["conn_id"], key_by_conn).astype("Int64").to_numpy()
    return out


def _carries_client_packets(node_conns: pd.DataFrame) -> pd.Series:
    """Node-side connections on which the client side sent something (SYN, data, FIN or RST).

    On an ``-i any`` capture a bridged Pod's replies are seen twice: on its veth, and again on
    the bridge after the NAT was undone, addressed to the client's own address and port. That
    second copy assembles into a "connection" of replies only, which would claim the client
    connection by address and port and push the real Pod-side view onto another request.
    """
    return (
        (node_conns["syn_count"].fillna(0) > 0)
        | (node_conns["bytes_c2s"].fillna(0) > 0)
        | node_conns["client_fin_ns"].notna()
        | node_conns["client_rst_ns"].notna()
    )


def _join_frames(
    client_conns: pd.DataFrame, node_conns: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sides as (ip code, port, SYN time, answered) frames sorted by SYN time."""
    left_ip, right_ip = shared_codes(client_conns["client_ip"], node_conns["client_ip"])
    left = pd.DataFrame(
        {
            "idx": client_conns.index.to_numpy(),
            "ip": left_ip,
            "port": client_conns["client_port"].to_numpy(dtype="int64"),
            "t": client_conns["syn_ns"].to_numpy(dtype="int64"),
            "answered": client_conns["synack_ns"].notna().to_numpy(),
        }
    ).sort_values("t", kind="stable")
    right = pd.DataFrame(
        {
            "ip": right_ip,
            "port": node_conns["client_port"].to_numpy(dtype="int64"),
            "t": node_conns["syn_ns"].to_numpy(dtype="int64"),
            "node_key": node_conns["conn_key"].to_numpy(dtype="int64"),
            "answered": node_conns["synack_ns"].notna().to_numpy(),
        }
    ).sort_values("t", kind="stable")
    return left, right


def _forward_match(left: pd.DataFrame, right: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The first node SYN at or after each client SYN with the same ``by`` keys, each node
    connection used once."""
    merged = pd.merge_asof(
        left[["idx", "t", *by]],
        right[["t", "node_key", *by]],
        on="t",
        by=by,
        direction="forward",
        tolerance=NODE_SYN_WINDOW_NS,
    )
    return merged[merged["node_key"].notna()].drop_duplicates("node_key")


def _nearest_match(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """SNAT with a new port: only SYN time is left. A node connection is used once, by the
    nearest client SYN, and only by a client connection with the same handshake outcome: a
    client SYN that went unanswered cannot be a node connection whose Pod answered it."""
    near = pd.merge_asof(
        left[["idx", "t", "answered"]],
        right[["t", "node_key", "answered"]].assign(node_t=right["t"]),
        on="t",
        by="answered",
        direction="nearest",
        tolerance=SNAT_SYN_WINDOW_NS,
    )
    near = near[near["node_key"].notna()]
    near = near.assign(gap=(near["node_t"] - near["t"]).abs()).sort_values("gap", kind="stable")
    return near.drop_duplicates("node_key")


def node_connections_for(client_conns: pd.DataFrame, node_conns: pd.DataFrame) -> pd.Series:
    """For each client connection (by index), the ``conn_key`` of its node-side connection."""
    out = pd.Series(pd.NA, index=client_conns.index, dtype="Int64", name="node_conn_key")
    node_conns = node_conns[_carries_client_packets(node_conns)]
    if client_conns.empty or node_conns.empty:
        return out
    left, right = _join_frames(client_conns, node_conns)
    matched = [_forward_match(left, right, ["ip", "port"])]
    # When node-side connections carry the clients' own addresses, the path preserves the source
    # (externalTrafficPolicy Local, no masquerade): a client connection with no exact match never
    # reached a Pod (e.g. dropped at a node without local endpoints), and guessing one by port
    # or SYN time would tie it to an unrelated connection.
    if node_conns["client_ip"].isin(client_conns["client_ip"].dropna().unique()).mean() < 0.9:
        # masquerade rewrites the address but keeps the port when it can (iptables/nft
        # MASQUERADE); when it rewrote the port too, only the SYN time is left
        # (a client SYN that went unanswered is never a node connection whose Pod answered it:
        # the Pod that did not answer may have left no node-side trace, its netns gone)
        for stage in (partial(_forward_match, by=["port", "answered"]), _nearest_match):
            taken = pd.concat(matched)
            left = left[~left["idx"].isin(taken["idx"])]
            right = right[~right["node_key"].isin(taken["node_key"])]
            if left.empty or right.empty:
                break
            matched.append(stage(left, right))
    found = pd.concat(matched)
    out[found["idx"].to_numpy()] = found["node_key"].astype("int64").to_numpy()
    return out


def pods_by_ip(ips: pd.Series, times: pd.Series, pods: pd.DataFrame) -> pd.Series:
    """The Pod that held each IP at each time (IPs are recycled: the latest Pod created before).

    Pods are matched as integer codes and named by one take at the end: writing millions of
    strings into a Series row by row label is what such a join would otherwise spend its time on.
    """
    known = (ips.notna() & times.notna()).to_numpy()
    pods = pods[pods["ip"].notna()]
    names = pd.array(pods["pod"].astype(str).to_numpy(), dtype="string")
    codes = np.full(len(ips), -1, dtype=np.int64)
    if known.any() and not pods.empty:
        left_ip, right_ip = shared_codes(ips[known], pods["ip"])
        left = pd.DataFrame(
            {
                "row": np.flatnonzero(known),
                "ip": left_ip,
                "t": times[known].to_numpy(dtype="int64"),
            }
        ).sort_values("t", kind="stable")
        right = pd.DataFrame(
            {
                "ip": right_ip,
                "t": pods["created_ns"].to_numpy(dtype="int64"),
                "pod": np.arange(len(pods)),
            }
        ).sort_values("t", kind="stable")
        # a Pod is first *seen* by the watcher slightly after its IP may already carry traffic
        merged = pd.merge_asof(left, right, on="t", by="ip", direction="nearest")
        merged = merged[merged["pod"].notna()]
        codes[merged["row"].to_numpy()] = merged["pod"].to_numpy(dtype=np.int64)
    return pd.Series(names.take(codes, allow_fill=True), index=ips.index, name="pod")


def earliest_possible(times: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Each transition time, or the start of the watch GAP it was detected after.

    A transition first seen when the watch recovered from a gap happened somewhere between the
    gap's start and its detection (``*_late`` in the pods table); the detection is only an upper
    bound. Rules ask "could the Pod already have been deleted / started then?", so they get the
    lower bound. ``gaps`` holds rows (since_ns, recv_ns) of the GAP markers.
    """
    out = times.copy()
    for since, until in gaps:
        late = (times >= since) & (times <= until + RELIST_SLACK_NS)
        out[late] = np.fmin(out[late], since)
    return out


def pod_states(
    pod_names: pd.Series,
    times: pd.Series,
    pods: pd.DataFrame,
    gaps: np.ndarray | None = None,
) -> pd.DataFrame:
    """Each (Pod, time)'s lifecycle state and the ms since its deletion / readiness.

    States: pending (created, container not started), starting (started, not Ready), ready,
    terminating (deletion requested, containers still running), gone (terminated or deleted),
    unknown (no such Pod in the watch, or before it was first seen). Transitions detected after
    a watch GAP count from the gap's start (``earliest_possible``).
    """
    info = pods.drop_duplicates("pod", keep="last").set_index("pod")
    idx = pod_names.index
    names = pod_names.astype("string")
    t = times.to_numpy(dtype="float64")

    def col(name: str) -> np.ndarray:
        series = lookup(names, info[name]) if name in info.columns else pd.Series(pd.NA, index=idx)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return values if gaps is None else earliest_possible(values, gaps)

    created, started, ready = col("created_ns"), col("started_ns"), col("ready_ns")
    deletion, terminated, deleted = col("deletion_ns"), col("terminated_ns"), col("deleted_ns")
    gone_at = np.fmin(terminated, deleted)
    state = np.select(
        [
            np.isnan(created) | (t < created),
            t >= gone_at,
            t >= deletion,
            t >= ready,
            t >= started,
        ],
        ["unknown", "gone", "terminating", "ready", "starting"],
        default="pending",
    )
    state_series = pd.Series(state, index=idx, dtype="string")
    state_series[names.isna()] = pd.NA
    node = lookup(names, info["node"]) if "node" in info.columns else pd.Series(pd.NA, index=idx)
    return pd.DataFrame(
        {
            "pod_state": state_series,
            "node": node.astype("string"),
            "ms_since_deletion": pd.array((t - deletion) / 1e6, dtype="Float64"),
            "ms_since_ready": pd.array((t - ready) / 1e6, dtype="Float64"),
        },
        index=idx,
    )


def interval_state_at(
    pod_names: pd.Series,
    times: pd.Series,
    pod_intervals: pd.DataFrame,
    gaps: np.ndarray | None = None,
) -> pd.Series:
    """Each (Pod, time)'s state from the ``POD_STATES`` intervals (NA before the Pod was first
    seen, or for an unknown Pod). An interval first seen after a watch GAP starts at the gap's
    start (``earliest_possible``), as the first-transition states do."""
    out = pd.Series(pd.NA, index=pod_names.index, dtype="string", name="interval_state")
    known = (pod_names.notna() & times.notna()).to_numpy()
    if not known.any() or pod_intervals.empty:
        return out
    from_ns = pod_intervals["from_ns"].to_numpy(dtype="float64")
    if gaps is not None:
        late = pod_intervals["from_late"].to_numpy(dtype=bool)
        from_ns = np.where(late, earliest_possible(from_ns, gaps), from_ns)
    left_pod, right_pod = shared_codes(pod_names[known], pod_intervals["pod"])
    left = pd.DataFrame(
        {"i": np.flatnonzero(known), "pod": left_pod, "t": times[known].to_numpy(dtype="float64")}
    )
    right = pd.DataFrame(
        {"pod": right_pod, "t": from_ns, "state": pod_intervals["state"].astype(str).to_numpy()}
    )
    merged = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        right.sort_values("t", kind="stable"),
        on="t",
        by="pod",
        direction="backward",
    )
    found = merged["state"].notna().to_numpy()
    out.iloc[merged["i"].to_numpy()[found]] = merged["state"].to_numpy()[found]
    return out


def _accepting(cands: pd.Series, t: np.ndarray, served: pd.DataFrame) -> np.ndarray:
    """Whether each candidate Pod answered new connections successfully both within
    ``ACCEPTING_WINDOW_NS`` before and after ``t``: then it was accepting at ``t`` and did not
    refuse it. A Pod that stopped accepting has successes only before, one not yet listening
    only after."""
    known = cands.notna().to_numpy()
    out = np.zeros(len(cands), dtype=bool)
    if not known.any() or served.empty:
        return out
    cand_codes, served_codes = shared_codes(cands[known], served["pod"])
    left = pd.DataFrame({"i": np.flatnonzero(known), "pod": cand_codes, "t": t[known]})
    left = left.sort_values("t", kind="stable")
    right = pd.DataFrame(
        {"pod": served_codes, "t": served["t"].to_numpy(dtype="int64"), "hit": True}
    ).sort_values("t", kind="stable")
    for direction in ("backward", "forward"):
        side = pd.merge_asof(
            left, right, on="t", by="pod", direction=direction, tolerance=ACCEPTING_WINDOW_NS
        )
        left = left.assign(**{direction: side["hit"].fillna(False).to_numpy(dtype=bool)})
    out[left["i"].to_numpy()] = (left["backward"] & left["forward"]).to_numpy()
    return out


def _latest_leaving_refuser(
    t: np.ndarray, index: pd.Index, pods: pd.DataFrame, served: pd.DataFrame
) -> pd.Series:
    """Per failed request, the most recently deleted Pod that was not demonstrably accepting
    at that moment (no horizon: this is for refused or unanswered SYNs). Every leaving Pod is a candidate, not just the last
    one deleted: in a rollout an earlier-deleted Pod may have stopped accepting while a later
    one is still serving through its preStop."""
    out = pd.Series(pd.NA, index=index, dtype="string")
    deleted = pods[pods["deletion_ns"].notna()]
    if deleted.empty or len(t) == 0:
        return out
    del_ns = deleted["deletion_ns"].to_numpy(dtype="int64")
    since = t[:, None] - del_ns[None, :]  # failed × deleted Pods (both small in a rollout)
    rows, cols = np.nonzero(since >= 0)
    if len(rows) == 0:
        return out
    cands = pd.Series(deleted["pod"].astype(str).to_numpy()[cols])
    refusing = ~_accepting(cands, t[rows], served)
    pairs = pd.DataFrame({"row": rows, "pod": cands.to_numpy(), "del": del_ns[cols]})[refusing]
    latest = pairs.sort_values("del", kind="stable").groupby("row")["pod"].last()
    out.iloc[latest.index.to_numpy()] = latest.to_numpy()
    return out


def _unable_pod_at(t: np.ndarray, index: pd.Index, pod_intervals: pd.DataFrame | None) -> pd.Series:
    """Per time, the Pod (not being deleted) whose container was down or restarting, or that
    had turned NotReady, then: the one a refused SYN most likely met (latest such interval)."""
    out = pd.Series(pd.NA, index=index, dtype="string")
    if pod_intervals is None or len(t) == 0:
        return out
    unable = pod_intervals[pod_intervals["state"].isin(["restarting", "unready"])]
    if unable.empty:
        return out
    right = pd.DataFrame(
        {
            "t": unable["from_ns"].to_numpy(dtype="float64"),
            "to": pd.to_numeric(unable["to_ns"]).to_numpy(dtype="float64", na_value=np.inf),
            "cand": unable["pod"].astype(str).to_numpy(),
        }
    ).sort_values("t", kind="stable")
    left = pd.DataFrame({"i": np.arange(len(t)), "t": t.astype("float64")}).sort_values("t")
    merged = pd.merge_asof(left, right, on="t", direction="backward")
    inside = (merged["t"] < merged["to"]).to_numpy(dtype=bool)
    out.iloc[merged["i"].to_numpy()[inside]] = merged["cand"].to_numpy()[inside]
    return out


def _latest_before(index: pd.Index, t: np.ndarray, pods: pd.DataFrame, column: str) -> pd.Series:
    """Per time, the Pod whose ``column`` event (deletion, Ready, start) came last before it,
    within INFERENCE_HORIZON_NS."""
    events = pods[pods[column].notna()][["pod", column]]
    if events.empty:
        return pd.Series(pd.NA, index=index, dtype="string")
    right = pd.DataFrame(
        {"t": events[column].to_numpy(dtype="int64"), "cand": events["pod"].astype(str)}
    ).sort_values("t", kind="stable")
    left = pd.DataFrame({"idx": index, "t": t}).sort_values("t", kind="stable")
    merged = pd.merge_asof(
        left, right, on="t", direction="backward", tolerance=int(INFERENCE_HORIZON_NS)
    )
    found = pd.Series(merged["cand"].to_numpy(), index=merged["idx"].to_numpy())
    return found.reindex(index).astype("string")


def infer_pods(
    failed: pd.DataFrame,
    pods: pd.DataFrame,
    served: pd.DataFrame | None = None,
    pod_intervals: pd.DataFrame | None = None,
) -> pd.Series:
    """The most likely Pod for failed requests with no direct evidence (see module doc, rule 3).

    ``served``: successful new connections with a known Pod (columns ``pod``, ``t``): a
    candidate that was demonstrably accepting new connections at that moment did not refuse one.
    """
    out = pd.Series(pd.NA, index=failed.index, dtype="string", name="pod")
    if failed.empty or pods.empty:
        return out
    t = failed["start_ns"].to_numpy(dtype="int64")
    connect_failure = failed["error_kind"].isin(CONNECT_FAILURES).to_numpy()
    is_5xx = (failed["error_kind"] == ErrorKind.HTTP_5XX.value).to_numpy()

    leaving = _latest_before(failed.index, t, pods, "deletion_ns")
    newest = _latest_before(failed.index, t, pods, "ready_ns").fillna(
        _latest_before(failed.index, t, pods, "started_ns")
    )
    served = served if served is not None else pd.DataFrame({"pod": [], "t": []})
    refuser = _latest_leaving_refuser(t, failed.index, pods, served)
    deleted_at = pods.drop_duplicates("pod", keep="last").set_index("pod")["deletion_ns"]
    since = t - pd.to_numeric(lookup(refuser, deleted_at)).to_numpy(
        dtype="float64", na_value=np.nan
    )
    recent_refuser = since <= INFERENCE_HORIZON_NS  # NaN (no refuser) is False
    newest_refuses = newest.notna().to_numpy() & ~_accepting(newest, t, served)
    unable = _unable_pod_at(t, failed.index, pod_intervals)
    # a Pod deleted recently beats one down or NotReady without deletion, which beats a new one
    # not listening yet, which beats lagging rules pointing at a Pod deleted long ago
    connect_choice = np.where(
        recent_refuser,
        refuser,
        np.where(
            unable.notna().to_numpy(),
            unable,
            np.where(newest_refuses, newest, refuser.fillna(leaving).fillna(newest)),
        ),
    )
    choice = np.where(
        connect_failure, connect_choice, np.where(is_5xx, newest.fillna(leaving), leaving)
    )
    out[:] = pd.array(choice, dtype="string")
    return out


def _first_per_connection(texts: pd.Series, conn_id: pd.Series) -> pd.Series:
    """Each row's connection's first text that is not NA, as
    ``texts.groupby(conn_id).transform("first")`` gives it, grouped as integer codes: a
    groupby of a million texts costs twice as much (0.19 against 0.09 s)."""
    codes, uniques = pd.factorize(texts)
    as_float = pd.Series(np.where(codes >= 0, codes, np.nan))  # NaN: what "first" skips
    first = as_float.groupby(conn_id.to_numpy()).transform("first").to_numpy()
    taken = np.where(np.isnan(first), -1, first).astype(np.int64)
    names = pd.array(np.asarray(uniques, dtype=object), dtype="string").take(taken, allow_fill=True)
    return pd.Series(names, index=texts.index, name=texts.name)


def attach_pods(
    requests: pd.DataFrame,
    node_pod: pd.Series,
    pods: pd.DataFrame,
    pod_intervals: pd.DataFrame | None = None,
    through_l7_hop: bool = False,
) -> pd.DataFrame:
    """``pod`` and ``pod_method`` for every request: header, else node capture, else inferred.

    ``node_pod`` holds, per request, the Pod resolved from its node-side connection (NA when
    there is none). Inference is only attempted for failed requests: successes that named no Pod
    carry no question to answer. ``through_l7_hop``: the client's connections end at an L7 hop
    (the run has a hop log), which sends each request to a Pod of its choosing, so a header
    names the Pod of its own response only.
    """
    header = requests["pod"].astype("string")
    if not through_l7_hop:
        # a connection reaches one Pod: a Pod named on any response of it names it for all
        header = _first_per_connection(header, requests["conn_id"])
    pod = header.copy()
    # the methods as codes into _POD_MATCHES, made text once at the end: each masked
    # assignment to a text column would rebuild its million rows, and a text fill makes a
    # string object per row
    method = np.full(len(requests), _POD_MATCH_CODE[PodMatch.NONE], dtype=np.int8)
    method[header.notna().to_numpy()] = _POD_MATCH_CODE[PodMatch.HEADER]
    from_node = header.isna() & node_pod.notna()
    pod[from_node] = node_pod[from_node]
    method[from_node.to_numpy()] = _POD_MATCH_CODE[PodMatch.NODE_CAPTURE]
    need = pod.isna() & (requests["error_kind"] != ErrorKind.OK.value)
    if need.any():
        ok_new = (requests["error_kind"] == ErrorKind.OK.value) & requests["conn_new"].astype(bool)
        served = pd.DataFrame({"pod": pod[ok_new & pod.notna()]})
        served["t"] = requests.loc[served.index, "start_ns"]
        inferred = infer_pods(requests[need], pods, served, pod_intervals)
        pod[need] = inferred
        method[(need & pod.notna()).to_numpy(dtype=bool, na_value=False)] = _POD_MATCH_CODE[
            PodMatch.INFERRED
        ]
    # not copied: two columns of millions of strings, made here and held by no one else
    return pd.DataFrame(
        {"pod": pod, "pod_method": pd.array(_POD_MATCHES[method], dtype="string")},
        index=requests.index,
        copy=False,
    )
