"""Packets → TCP connections: one row per (capture, 4-tuple, SYN) with handshake, data, close.

Attribution never looks at single packets; it asks "how did the connection this request used
end, and when did each side say so". This module answers that once, for every capture.

It runs on captures of ten million packets, so there is no Python loop per packet or per
connection: packets are sorted by (flow, time) so that each connection is one contiguous slice,
and every per-connection figure is a ``numpy.ufunc.reduceat`` over masked columns.

Rules, in order of how they decide:

* **Splitting a flow into connections** (port reuse): a SYN without ACK starts a new connection
  when it is the first SYN of the flow after other packets, carries a different initial sequence
  number than the previous SYN (a retransmission repeats it), follows a FIN or RST of the same
  flow, or comes more than ``reuse_gap_s`` after the flow's previous packet.
* **Client side**: the sender of the SYN; without a captured SYN, the receiver of a SYN-ACK;
  without either (connection already open when the capture began), the side whose port is not
  in ``server_ports``, and failing that the side with the higher port (ephemeral ports are high).
* **Outcome**: a SYN answered by RST and never by SYN-ACK is ``refused``; a SYN never answered
  is ``syn-timeout``; otherwise any RST makes it ``reset-by-<side that reset first>`` (a RST
  after a FIN still means the close was not clean: it is the keep-alive race's signature);
  otherwise a FIN makes it ``closed-by-<side that sent FIN first>``; else ``open-at-end``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.schema import CONNECTIONS, PACKETS, ConnectionOutcome, check_frame

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

#: A SYN this long after the flow's previous packet starts a new connection even with the same
#: ISN; longer than Linux's whole SYN retry schedule (1+2+4+8+16+32 s) so retries never split.
DEFAULT_REUSE_GAP_S = 120.0

_NONE = np.iinfo(np.int64).max  # "no such packet" in masked minimum reductions

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def tcp_connections(
    packets: pd.DataFrame,
    server_ports: Collection[int] | None = None,
    *,
    reuse_gap_s: float = DEFAULT_REUSE_GAP_S,
) -> pd.DataFrame:
    """One row per TCP connection in ``packets`` (a PACKETS frame), as a CONNECTIONS frame.

    ``server_ports`` only matters for connections whose handshake is not in the capture.
    Rows are ordered by capture, then SYN time; ``conn_key`` numbers them in that order.
    """
    check_frame(packets, PACKETS, "tcp_connections input")
    if packets.empty:
        return CONNECTIONS.empty()

    cap_codes, cap_index = pd.factorize(packets["capture"], sort=True)
    ip_codes, ip_index = pd.factorize(
        pd.concat([packets["src"], packets["dst"]], ignore_index=True), sort=True
    )
    cap_names, ip_names = cap_index.to_numpy(object), ip_index.to_numpy(object)
    n = len(packets)
    src_ep = ip_codes[:n].astype(np.int64) * 65536 + packets["sport"].to_numpy(np.int64)
    dst_ep = ip_codes[n:].astype(np.int64) * 65536 + packets["dport"].to_numpy(np.int64)
    lo, hi = np.minimum(src_ep, dst_ep), np.maximum(src_ep, dst_ep)
    pair_codes, _ = pd.factorize(lo * (int(max(hi.max(), 0)) + 1) + hi)
    flow = pair_codes.astype(np.int64) * len(cap_names) + cap_codes

    ts_all = packets["ts_ns"].to_numpy(np.int64)
    order = np.lexsort((ts_all, flow))
    flow = flow[order]
    ts = ts_all[order]
    flags = packets["flags"].to_numpy(np.int64)[order]
    seq = packets["seq"].to_numpy(np.int64)[order]
    payload = packets["payload_len"].to_numpy(np.int64)[order]
    src_ep, dst_ep = src_ep[order], dst_ep[order]

    start = _connection_starts(flow, ts, flags, seq, int(reuse_gap_s * 1e9))
    starts = np.flatnonzero(start)
    conn = np.cumsum(start) - 1

    is_syn = (flags & (SYN | ACK)) == SYN
    is_synack = (flags & (SYN | ACK)) == (SYN | ACK)
    client_ep = _client_endpoints(starts, conn, src_ep, dst_ep, is_syn, is_synack, server_ports)
    c2s = src_ep == client_ep[conn]
    s2c = ~c2s

    def first(mask: BoolArray) -> Int64Array:
        return np.minimum.reduceat(np.where(mask, ts, _NONE), starts)

    def last(mask: BoolArray) -> Int64Array:
        return np.maximum.reduceat(np.where(mask, ts, -1), starts)

    syn_ns = first(is_syn & c2s)
    synack_ns = first(is_synack & s2c)
    # The handshake's last ACK: the client's first non-SYN ACK at or after the SYN-ACK.
    established_ns = first(
        c2s & ((flags & (SYN | ACK)) == ACK) & (ts >= synack_ns[conn]) & (synack_ns[conn] < _NONE)
    )
    has_data = payload > 0
    fin, rst = (flags & FIN) != 0, (flags & RST) != 0
    client_fin, server_fin = first(fin & c2s), first(fin & s2c)
    client_rst, server_rst = first(rst & c2s), first(rst & s2c)
    syn_count = np.add.reduceat((is_syn & c2s).astype(np.int64), starts)
    first_ts = ts[starts]
    end_ns = np.maximum.reduceat(ts, starts)

    cap_of_conn = cap_codes[order][starts]
    server_ep = np.where(client_ep == src_ep[starts], dst_ep[starts], src_ep[starts])
    outcome = _outcomes(syn_count, synack_ns, client_rst, server_rst, client_fin, server_fin)

    out = pd.DataFrame(
        {
            "capture": pd.array(cap_names[cap_of_conn], dtype="string"),
            "client_ip": pd.array(ip_names[client_ep // 65536], dtype="string"),
            "client_port": client_ep % 65536,
            "server_ip": pd.array(ip_names[server_ep // 65536], dtype="string"),
            "server_port": server_ep % 65536,
            "syn_ns": np.where(syn_ns < _NONE, syn_ns, first_ts),
            "syn_count": syn_count,
            "synack_ns": _nullable(synack_ns),
            "established_ns": _nullable(established_ns),
            "first_c2s_data_ns": _nullable(first(has_data & c2s)),
            "last_c2s_data_ns": _nullable(last(has_data & c2s)),
            "first_s2c_data_ns": _nullable(first(has_data & s2c)),
            "last_s2c_data_ns": _nullable(last(has_data & s2c)),
            "bytes_c2s": np.add.reduceat(np.where(c2s, payload, 0), starts),
            "bytes_s2c": np.add.reduceat(np.where(s2c, payload, 0), starts),
            "client_fin_ns": _nullable(client_fin),
            "server_fin_ns": _nullable(server_fin),
            "fin_first": _first_side(client_fin, server_fin),
            "client_rst_ns": _nullable(client_rst),
            "server_rst_ns": _nullable(server_rst),
            "rst_first": _first_side(client_rst, server_rst),
            "end_ns": end_ns,
            "outcome": pd.array(outcome, dtype="string"),
        }
    )
    out = out.sort_values(["capture", "syn_ns"], kind="stable", ignore_index=True)
    out.insert(0, "conn_key", np.arange(len(out), dtype=np.int64))
    return check_frame(out, CONNECTIONS, "tcp_connections output")


def _connection_starts(
    flow: Int64Array, ts: Int64Array, flags: Int64Array, seq: Int64Array, reuse_gap_ns: int
) -> BoolArray:
    """Which packets (sorted by flow, time) open a connection: see the module docstring."""
    n = len(flow)
    start = np.ones(n, dtype=bool)
    start[1:] = flow[1:] != flow[:-1]
    syn_idx = np.flatnonzero((flags & (SYN | ACK)) == SYN)
    if len(syn_idx) == 0:
        return start
    closing = ((flags & (FIN | RST)) != 0).astype(np.int64)
    closes_before = np.concatenate(([0], np.cumsum(closing)))  # closes in packets [0, i)
    flow_first = np.flatnonzero(start)[np.searchsorted(np.flatnonzero(start), syn_idx, "right") - 1]

    prev_syn = np.concatenate(([-1], syn_idx[:-1]))
    has_prev_syn = prev_syn >= 0
    has_prev_syn[has_prev_syn] = flow[prev_syn[has_prev_syn]] == flow[syn_idx[has_prev_syn]]
    since = np.where(has_prev_syn, prev_syn + 1, flow_first)
    closed_since = closes_before[syn_idx] > closes_before[since]
    new_isn = has_prev_syn & (seq[syn_idx] != seq[np.maximum(prev_syn, 0)])
    # Packets of the flow before its first SYN belong to a connection already open at capture
    # start; the SYN after them is a new connection.
    after_midstream = ~has_prev_syn & (syn_idx > flow_first)
    prev_ts = ts[np.maximum(syn_idx - 1, 0)]
    long_gap = (syn_idx > flow_first) & (ts[syn_idx] - prev_ts > reuse_gap_ns)
    start[syn_idx] |= closed_since | new_isn | after_midstream | long_gap
    return start


def _client_endpoints(
    starts: Int64Array,
    conn: Int64Array,
    src_ep: Int64Array,
    dst_ep: Int64Array,
    is_syn: BoolArray,
    is_synack: BoolArray,
    server_ports: Collection[int] | None,
) -> Int64Array:
    """Per connection, the client's endpoint code (ip code × 65536 + port)."""
    n_conn = len(starts)
    client = np.full(n_conn, -1, dtype=np.int64)
    # The SYN sender overrides the SYN-ACK receiver; within each, the first packet decides.
    for mask, ep in ((is_synack, dst_ep), (is_syn, src_ep)):
        idx = np.flatnonzero(mask)
        conns, first_pos = np.unique(conn[idx], return_index=True)
        client[conns] = ep[idx[first_pos]]
    missing = client < 0
    if missing.any():
        a, b = src_ep[starts][missing], dst_ep[starts][missing]
        a_port, b_port = a % 65536, b % 65536
        known = np.asarray(sorted(server_ports or ()), dtype=np.int64)
        a_srv, b_srv = np.isin(a_port, known), np.isin(b_port, known)
        by_port = np.where(a_port >= b_port, a, b)
        client[missing] = np.where(a_srv & ~b_srv, b, np.where(b_srv & ~a_srv, a, by_port))
    return client


def _outcomes(
    syn_count: Int64Array,
    synack_ns: Int64Array,
    client_rst: Int64Array,
    server_rst: Int64Array,
    client_fin: Int64Array,
    server_fin: Int64Array,
) -> npt.NDArray[Any]:
    no_synack = (syn_count > 0) & (synack_ns == _NONE)
    any_rst = (client_rst < _NONE) | (server_rst < _NONE)
    any_fin = (client_fin < _NONE) | (server_fin < _NONE)
    conditions = [
        no_synack & (server_rst < _NONE),
        no_synack,
        any_rst & (server_rst <= client_rst),
        any_rst,
        any_fin & (server_fin <= client_fin),
        any_fin,
    ]
    choices = [
        ConnectionOutcome.REFUSED.value,
        ConnectionOutcome.SYN_TIMEOUT.value,
        ConnectionOutcome.RESET_BY_SERVER.value,
        ConnectionOutcome.RESET_BY_CLIENT.value,
        ConnectionOutcome.CLOSED_BY_SERVER.value,
        ConnectionOutcome.CLOSED_BY_CLIENT.value,
    ]
    return np.select(conditions, choices, default=ConnectionOutcome.OPEN_AT_END.value)


def _nullable(values: Int64Array) -> pd.arrays.IntegerArray:
    """Masked-reduction results (sentinels for "none") as a nullable Int64 column."""
    missing = (values == _NONE) | (values < 0)
    return pd.arrays.IntegerArray(values, missing)


def _first_side(client: Int64Array, server: Int64Array) -> pd.api.extensions.ExtensionArray:
    side = np.where(client <= server, "client", "server").astype(object)
    side[(client == _NONE) & (server == _NONE)] = None
    return pd.array(side, dtype="string")
