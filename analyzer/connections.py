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
from dataclasses import dataclass

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
    pk = _SortedPackets.of(packets)
    syn_seq = packets["seq"].to_numpy(np.int64)[pk.order[pk.syn_idx]]
    start = _connection_starts(
        pk.flow, pk.ts, pk.flags, pk.syn_idx, syn_seq, int(reuse_gap_s * 1e9)
    )
    starts = np.flatnonzero(start)
    runs = _Runs(np.cumsum(start) - 1, pk.ts, len(starts))
    out = _connection_frame(pk, runs, starts, server_ports)
    # capture names are sorted, so ordering by code orders by capture name
    cap_of_conn = pk.capture_codes[pk.order[starts]]
    out = out.take(np.lexsort((out["syn_ns"].to_numpy(), cap_of_conn))).reset_index(drop=True)
    out.insert(0, "conn_key", np.arange(len(out), dtype=np.int64))
    return check_frame(out, CONNECTIONS, "tcp_connections output")


@dataclass(frozen=True)
class _SortedPackets:
    """The packet columns the connection rules read, sorted by (flow, time) so that each flow is
    one contiguous slice; an endpoint is one integer (ip code × 65536 + port) so that comparing
    sides is integer arithmetic, not string work, on millions of packets."""

    order: Int64Array  # row of ``packets`` at each sorted position
    flow: Int64Array
    ts: Int64Array
    flags: Int64Array
    src: Int64Array
    dst: Int64Array
    payload: Int64Array
    is_syn: BoolArray  # SYN without ACK: a client opening (or retrying) a connection
    syn_idx: Int64Array
    is_synack: BoolArray
    capture_codes: Int64Array  # per row of ``packets`` (unsorted), into capture_names
    capture_names: pd.Index
    ip_names: pd.Index

    @classmethod
    def of(cls, packets: pd.DataFrame) -> _SortedPackets:
        """Code captures and addresses, key each flow by (capture, unordered endpoint pair)."""
        cap_codes, cap_names = pd.factorize(packets["capture"], sort=True)
        ip_codes, ip_names = pd.factorize(
            pd.concat([packets["src"], packets["dst"]], ignore_index=True), sort=True
        )
        n = len(packets)
        src_all = ip_codes[:n].astype(np.int64) * 65536 + packets["sport"].to_numpy(np.int64)
        dst_all = ip_codes[n:].astype(np.int64) * 65536 + packets["dport"].to_numpy(np.int64)
        lo, hi = np.minimum(src_all, dst_all), np.maximum(src_all, dst_all)
        span = int(hi.max()) + 1
        if span * span * len(cap_names) < 2**62:  # the usual few addresses: an arithmetic key
            pair = lo * span + hi
        else:  # too many addresses for one int64 key: number the pairs
            pairs = pd.DataFrame({"lo": lo, "hi": hi}).groupby(["lo", "hi"], sort=False)
            pair = pairs.ngroup().to_numpy(np.int64)
        flow_all = pair * len(cap_names) + cap_codes
        ts_all = packets["ts_ns"].to_numpy(np.int64)
        order = np.lexsort((ts_all, flow_all))
        flags = packets["flags"].to_numpy(np.int64)[order]
        is_syn = (flags & (SYN | ACK)) == SYN
        return cls(
            order=order,
            flow=flow_all[order],
            ts=ts_all[order],
            flags=flags,
            src=src_all[order],
            dst=dst_all[order],
            payload=packets["payload_len"].to_numpy(np.int64)[order],
            is_syn=is_syn,
            syn_idx=np.flatnonzero(is_syn),
            is_synack=(flags & (SYN | ACK)) == (SYN | ACK),
            capture_codes=cap_codes,
            capture_names=cap_names,
            ip_names=ip_names,
        )


def _client_sides(
    pk: _SortedPackets, runs: _Runs, starts: Int64Array, server_ports: Collection[int] | None
) -> tuple[Int64Array, Int64Array, BoolArray]:
    """(client endpoint, server endpoint) per connection and whether each packet goes client →
    server: every later figure is split by direction."""
    syn_idx, synack_idx = pk.syn_idx, np.flatnonzero(pk.is_synack)
    first_src, first_dst = pk.src[starts], pk.dst[starts]
    client_ep = _client_endpoints(
        (runs.conn[synack_idx], pk.dst[synack_idx]),
        (runs.conn[syn_idx], pk.src[syn_idx]),
        first_src,
        first_dst,
        server_ports,
    )
    server_ep = np.where(client_ep == first_src, first_dst, first_src)
    c2s = pk.src == client_ep[runs.conn]
    return client_ep, server_ep, c2s


def _established(pk: _SortedPackets, runs: _Runs, c2s: BoolArray) -> tuple[Int64Array, Int64Array]:
    """(SYN-ACK time, handshake's last ACK time) per connection: the ACK is the client's first
    non-SYN ACK at or after the SYN-ACK."""
    synack_ns = runs.first(pk.is_synack & ~c2s)
    pure_ack = np.flatnonzero(c2s & ((pk.flags & (SYN | ACK)) == ACK))
    after_synack = pure_ack[pk.ts[pure_ack] >= synack_ns[runs.conn[pure_ack]]]
    return synack_ns, runs.first_of(after_synack)


def _connection_frame(
    pk: _SortedPackets, runs: _Runs, starts: Int64Array, server_ports: Collection[int] | None
) -> pd.DataFrame:
    """The CONNECTIONS columns (but ``conn_key``), one row per connection in flow order: each
    figure is a masked first/last/total reduction over the connection's packets."""
    client_ep, server_ep, c2s = _client_sides(pk, runs, starts, server_ports)
    s2c = ~c2s
    synack_ns, established_ns = _established(pk, runs, c2s)
    syn_ns = runs.first(pk.is_syn & c2s)
    has_data = pk.payload > 0
    fin, rst = (pk.flags & FIN) != 0, (pk.flags & RST) != 0
    client_fin, server_fin = runs.first(fin & c2s), runs.first(fin & s2c)
    client_rst, server_rst = runs.first(rst & c2s), runs.first(rst & s2c)
    syn_count = np.bincount(runs.conn[pk.is_syn & c2s], minlength=runs.count)
    outcome = _outcomes(syn_count, synack_ns, client_rst, server_rst, client_fin, server_fin)
    return pd.DataFrame(
        {
            "capture": _strings(pk.capture_names, pk.capture_codes[pk.order[starts]]),
            "client_ip": _strings(pk.ip_names, client_ep // 65536),
            "client_port": client_ep % 65536,
            "server_ip": _strings(pk.ip_names, server_ep // 65536),
            "server_port": server_ep % 65536,
            "syn_ns": np.where(syn_ns < _NONE, syn_ns, pk.ts[starts]),
            "syn_count": syn_count.astype(np.int64),
            "synack_ns": _nullable(synack_ns),
            "established_ns": _nullable(established_ns),
            "first_c2s_data_ns": _nullable(runs.first(has_data & c2s)),
            "last_c2s_data_ns": _nullable(runs.last(has_data & c2s)),
            "first_s2c_data_ns": _nullable(runs.first(has_data & s2c)),
            "last_s2c_data_ns": _nullable(runs.last(has_data & s2c)),
            "bytes_c2s": runs.total(pk.payload, c2s),
            "bytes_s2c": runs.total(pk.payload, s2c),
            "client_fin_ns": _nullable(client_fin),
            "server_fin_ns": _nullable(server_fin),
            "fin_first": _first_side(client_fin, server_fin),
            "client_rst_ns": _nullable(client_rst),
            "server_rst_ns": _nullable(server_rst),
            "rst_first": _first_side(client_rst, server_rst),
            "end_ns": pk.ts[np.r_[starts[1:] - 1, len(pk.ts) - 1]],
            "outcome": _strings(_OUTCOMES, outcome),
        }
    )


@dataclass(frozen=True)
class _Runs:
    """Packets sorted by (flow, time) so that each connection is one contiguous run: the first
    or last time of any subset of packets per connection costs O(subset), not O(packets)."""

    conn: Int64Array  # connection index of each packet (non-decreasing)
    ts: Int64Array
    count: int

    def first_of(self, idx: Int64Array) -> Int64Array:
        """Per connection, the time of the first packet among ``idx`` (ascending); _NONE if none."""
        c = self.conn[idx]
        head = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, dtype=bool)
        out = np.full(self.count, _NONE, dtype=np.int64)
        out[c[head]] = self.ts[idx[head]]
        return out

    def first(self, mask: BoolArray) -> Int64Array:
        return self.first_of(np.flatnonzero(mask))

    def last(self, mask: BoolArray) -> Int64Array:
        idx = np.flatnonzero(mask)
        c = self.conn[idx]
        tail = np.r_[c[1:] != c[:-1], True] if len(c) else np.zeros(0, dtype=bool)
        out = np.full(self.count, _NONE, dtype=np.int64)
        out[c[tail]] = self.ts[idx[tail]]
        return out

    def total(self, values: Int64Array, mask: BoolArray) -> Int64Array:
        sums = np.bincount(self.conn[mask], weights=values[mask], minlength=self.count)
        return np.rint(sums).astype(np.int64)


def _connection_starts(
    flow: Int64Array,
    ts: Int64Array,
    flags: Int64Array,
    syn_idx: Int64Array,
    syn_seq: Int64Array,
    reuse_gap_ns: int,
) -> BoolArray:
    """Which packets (sorted by flow, time) open a connection: see the module docstring.
    ``syn_idx`` are the positions of SYNs without ACK, ``syn_seq`` their sequence numbers."""
    n = len(flow)
    start = np.ones(n, dtype=bool)
    start[1:] = flow[1:] != flow[:-1]
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
    prev_seq = np.concatenate(([-1], syn_seq[:-1]))
    new_isn = has_prev_syn & (syn_seq != prev_seq)
    # Packets of the flow before its first SYN belong to a connection already open at capture
    # start; the SYN after them is a new connection.
    after_midstream = ~has_prev_syn & (syn_idx > flow_first)
    prev_ts = ts[np.maximum(syn_idx - 1, 0)]
    long_gap = (syn_idx > flow_first) & (ts[syn_idx] - prev_ts > reuse_gap_ns)
    start[syn_idx] |= closed_since | new_isn | after_midstream | long_gap
    return start


def _client_endpoints(
    synack_receivers: tuple[Int64Array, Int64Array],
    syn_senders: tuple[Int64Array, Int64Array],
    first_src: Int64Array,
    first_dst: Int64Array,
    server_ports: Collection[int] | None,
) -> Int64Array:
    """Per connection, the client's endpoint code (ip code × 65536 + port), from (connection,
    endpoint) pairs in packet order and each connection's first packet's endpoints."""
    client = np.full(len(first_src), -1, dtype=np.int64)
    # The SYN sender overrides the SYN-ACK receiver; within each, the first packet decides.
    for conns, endpoints in (synack_receivers, syn_senders):
        head = np.r_[True, conns[1:] != conns[:-1]] if len(conns) else np.zeros(0, dtype=bool)
        client[conns[head]] = endpoints[head]
    missing = client < 0
    if missing.any():
        a, b = first_src[missing], first_dst[missing]
        a_port, b_port = a % 65536, b % 65536
        known = np.asarray(sorted(server_ports or ()), dtype=np.int64)
        a_srv, b_srv = np.isin(a_port, known), np.isin(b_port, known)
        by_port = np.where(a_port >= b_port, a, b)
        client[missing] = np.where(a_srv & ~b_srv, b, np.where(b_srv & ~a_srv, a, by_port))
    return client


_OUTCOMES = pd.Index([o.value for o in ConnectionOutcome])
_SIDES = pd.Index(["client", "server"])


def _outcomes(
    syn_count: Int64Array,
    synack_ns: Int64Array,
    client_rst: Int64Array,
    server_rst: Int64Array,
    client_fin: Int64Array,
    server_fin: Int64Array,
) -> Int64Array:
    """Outcome codes (positions in _OUTCOMES), by the rules of the module docstring."""
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
        ConnectionOutcome.REFUSED,
        ConnectionOutcome.SYN_TIMEOUT,
        ConnectionOutcome.RESET_BY_SERVER,
        ConnectionOutcome.RESET_BY_CLIENT,
        ConnectionOutcome.CLOSED_BY_SERVER,
        ConnectionOutcome.CLOSED_BY_CLIENT,
    ]
    position = list(ConnectionOutcome).index
    codes: Int64Array = np.select(
        conditions, [position(c) for c in choices], default=position(ConnectionOutcome.OPEN_AT_END)
    )
    return codes


def _strings(names: pd.Index, codes: Int64Array) -> pd.api.extensions.ExtensionArray:
    """``names[codes]`` as a string column (-1 → NA), built by one take on the few uniques."""
    uniques = pd.array(np.asarray(names, dtype=object), dtype="string")
    return uniques.take(codes, allow_fill=True)


def _nullable(values: Int64Array) -> pd.arrays.IntegerArray:
    """Masked-reduction results (_NONE for "none") as a nullable Int64 column."""
    return pd.arrays.IntegerArray(values, values == _NONE)


def _first_side(client: Int64Array, server: Int64Array) -> pd.api.extensions.ExtensionArray:
    none = (client == _NONE) & (server == _NONE)
    return _strings(_SIDES, np.where(none, -1, np.where(client <= server, 0, 1)))
