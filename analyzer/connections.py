"""Packets → TCP connections: one row per (capture, 4-tuple, SYN) with handshake, data, close.

Attribution never looks at single packets; it asks "how did the connection this request used
end, and when did each side say so". This module answers that once, for every capture.

Captures hold tens of millions of packets, more than fit in memory at once, so connections are
tracked as packets stream by (``ConnectionTracker``, fed one packets table after another): the
tracker keeps one row of figures per connection (the output) and a few per flow (the state the
rules below need), never the packets. The per-packet rules are genuinely sequential, so they run
in one compiled loop (numba) over each chunk; everything around it is vectorized.

A flow is (capture, unordered pair of endpoints); each flow's packets are taken in time order,
ties in the order given. Chunks may come in any order as long as no packet of a flow is earlier
than one of that flow in an earlier chunk (``PacketOrderError`` otherwise: a capture is in time
order except for reordering across CPUs, which never splits a flow). Fed as one table or as
any split of it, the result is the same.

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

Rows are ordered by capture, then SYN time, then endpoints; ``conn_key`` numbers them so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.readers._kernels import compiled
from analyzer.readers.pcap import PacketChunk
from analyzer.schema import CONNECTIONS, PACKETS, ConnectionOutcome, check_frame

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

#: A SYN this long after the flow's previous packet starts a new connection even with the same
#: ISN; longer than Linux's whole SYN retry schedule (1+2+4+8+16+32 s) so retries never split.
DEFAULT_REUSE_GAP_S = 120.0

_NONE = np.iinfo(np.int64).max  # "no such packet" in the first/last figures

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


# Columns of the per-connection table. A direction is 0 (from the source of the connection's
# first packet) or 1 (back): which one is the client may only be known at the end (a
# connection already open when the capture began), so figures are kept per direction.
_CAP, _SRC, _DST, _FIRST_TS, _END_TS, _SYN_DIR, _SYNACK_DIR, _DIRECTED = range(8)
# per direction d, at column _DIRECTED + d * _PER_DIRECTION + one of:
_SYN_TS, _SYNS, _SYNACK_TS, _ESTABLISHED_TS, _PURE_ACK_TS = range(5)
_DATA_FIRST, _DATA_LAST, _BYTES, _FIN_TS, _RST_TS = range(5, 10)
_PER_DIRECTION = 10
_CONN_COLUMNS = _DIRECTED + 2 * _PER_DIRECTION

# Columns of the flow table (open addressing; _F_CONN < 0 marks a free slot).
_F_CAP, _F_LO, _F_HI, _F_CONN, _F_HAS_SYN, _F_SYN_SEQ, _F_CLOSED, _F_LAST_TS = range(8)
_FLOW_COLUMNS = 8

# Why the compiled loop returned.
_DONE, _NEED_CONN_ROWS, _NEED_FLOW_SLOTS, _OUT_OF_ORDER = range(4)

_INITIAL_ROWS = 1024  # both tables double when full: small inputs stay small
_TRACKED = ("ts_ns", "sport", "dport", "flags", "seq", "payload_len")  # besides addresses


class PacketOrderError(ValueError):
    """A packet of a flow is earlier than a packet of that flow in an earlier chunk."""


def tcp_connections(
    packets: pd.DataFrame,
    server_ports: Collection[int] | None = None,
    *,
    reuse_gap_s: float = DEFAULT_REUSE_GAP_S,
) -> pd.DataFrame:
    """One row per TCP connection in ``packets`` (a PACKETS frame), as a CONNECTIONS frame.

    ``server_ports`` only matters for connections whose handshake is not in the capture.
    """
    return tcp_connections_chunked([packets], server_ports, reuse_gap_s=reuse_gap_s)


def tcp_connections_chunked(
    chunks: Iterable[pd.DataFrame],
    server_ports: Collection[int] | None = None,
    *,
    reuse_gap_s: float = DEFAULT_REUSE_GAP_S,
) -> pd.DataFrame:
    """``tcp_connections`` of the packets tables ``chunks`` read one after another (see the
    module docstring for the order they must come in); the same rows as of their concatenation."""
    tracker = ConnectionTracker(server_ports, reuse_gap_s=reuse_gap_s)
    for chunk in chunks:
        tracker.add(chunk)
    return number_connections([tracker.rows()])


class ConnectionTracker:
    """Connections of packets fed chunk by chunk; memory grows with connections, not packets."""

    def __init__(
        self,
        server_ports: Collection[int] | None = None,
        *,
        reuse_gap_s: float = DEFAULT_REUSE_GAP_S,
    ) -> None:
        self._server_ports = np.asarray(sorted(server_ports or ()), dtype=np.int64)
        self._reuse_gap_ns = int(reuse_gap_s * 1e9)
        self._captures: dict[str, int] = {}
        self._addresses: dict[str, int] = {}
        self._conns = np.zeros((_INITIAL_ROWS, _CONN_COLUMNS), dtype=np.int64)
        self._flows = _empty_flows(2 * _INITIAL_ROWS)
        self._counts = np.zeros(2, dtype=np.int64)  # connections, flows

    def add(self, packets: pd.DataFrame | PacketChunk) -> None:
        """Track the packets of one more chunk: a PACKETS table, or a reader's ``PacketChunk``
        (the same rows with addresses already as codes: no text to hash per packet). Raises
        ``PacketOrderError`` when a flow's packet is earlier than one already tracked (the
        tracker is then unusable)."""
        if not isinstance(packets, PacketChunk):
            check_frame(packets, PACKETS, "tcp_connections input")
        if not len(packets):
            return
        if isinstance(packets, PacketChunk):
            columns = packets.columns
            texts = packets.addresses.to_pylist()
            known = [self._addresses.setdefault(text, len(self._addresses)) for text in texts]
            addresses = np.array(known, dtype=np.int64)
            src, dst = addresses[columns["src"]], addresses[columns["dst"]]
            capture = self._captures.setdefault(packets.capture, len(self._captures))
            captures = np.full(len(packets), capture, dtype=np.int64)
        else:
            columns = {name: packets[name].to_numpy(np.int64) for name in _TRACKED}
            src, dst = (
                _codes(packets["src"], self._addresses),
                _codes(packets["dst"], self._addresses),
            )
            captures = _codes(packets["capture"], self._captures)
        self._feed(captures, src, dst, columns)

    def _feed(
        self, captures: Int64Array, src: Int64Array, dst: Int64Array, columns: dict[str, Int64Array]
    ) -> None:
        """Feed one chunk (address codes, the other columns by name) to the compiled loop."""
        ts = columns["ts_ns"]
        in_order = len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all())
        order = np.zeros(0, np.int64) if in_order else np.argsort(ts, kind="stable")
        tracked = (
            captures,
            src * 65536 + columns["sport"],
            dst * 65536 + columns["dport"],
            ts,
            columns["flags"],
            columns["seq"],
            columns["payload_len"],
        )
        position = 0
        while True:
            position, status = _track(
                *tracked, order, position, self._flows, self._conns, self._counts,
                self._reuse_gap_ns,
            )  # fmt: skip
            if status == _DONE:
                return
            if status == _NEED_CONN_ROWS:
                grown = np.empty((2 * len(self._conns), _CONN_COLUMNS), dtype=np.int64)
                grown[: len(self._conns)] = self._conns  # a new row is filled when opened
                self._conns = grown
            elif status == _NEED_FLOW_SLOTS:
                self._flows = _rehashed(self._flows, 2 * len(self._flows))
            else:
                raise PacketOrderError(
                    f"packet {int(order[position]) if len(order) else position} of this chunk is "
                    "earlier than a packet of its flow in an earlier chunk"
                )

    def rows(self) -> pd.DataFrame:
        """The CONNECTIONS columns but ``conn_key``, one row per connection, in CONNECTIONS
        order (``number_connections`` joins trackers' rows and numbers them)."""
        conns = self._conns[: self._counts[0]]
        directions = self._client_directions(conns)
        client_ep = np.where(directions == 0, conns[:, _SRC], conns[:, _DST])
        server_ep = np.where(directions == 0, conns[:, _DST], conns[:, _SRC])
        syn_ns = conns[np.arange(len(conns)), _DIRECTED + directions * _PER_DIRECTION + _SYN_TS]
        syn_ns = np.where(syn_ns < _NONE, syn_ns, conns[:, _FIRST_TS])
        rows = self._order(conns[:, _CAP], client_ep, server_ep, syn_ns)
        client_dir, client_ep, server_ep = directions[rows], client_ep[rows], server_ep[rows]
        server_dir = 1 - client_dir

        def side(direction: Int64Array, figure: int) -> Int64Array:
            picked: Int64Array = conns[rows, _DIRECTED + direction * _PER_DIRECTION + figure]
            return picked

        client_fin, server_fin = side(client_dir, _FIN_TS), side(server_dir, _FIN_TS)
        client_rst, server_rst = side(client_dir, _RST_TS), side(server_dir, _RST_TS)
        synack_ns, syn_count = side(server_dir, _SYNACK_TS), side(client_dir, _SYNS)
        outcome = _outcomes(syn_count, synack_ns, client_rst, server_rst, client_fin, server_fin)
        addresses = pd.Index(list(self._addresses))
        return pd.DataFrame(
            {
                "capture": _strings(pd.Index(list(self._captures)), conns[rows, _CAP]),
                "client_ip": _strings(addresses, client_ep // 65536),
                "client_port": client_ep % 65536,
                "server_ip": _strings(addresses, server_ep // 65536),
                "server_port": server_ep % 65536,
                "syn_ns": syn_ns[rows],
                "syn_count": syn_count,
                "synack_ns": _nullable(synack_ns),
                "established_ns": _nullable(side(client_dir, _ESTABLISHED_TS)),
                "first_c2s_data_ns": _nullable(side(client_dir, _DATA_FIRST)),
                "last_c2s_data_ns": _nullable(side(client_dir, _DATA_LAST)),
                "first_s2c_data_ns": _nullable(side(server_dir, _DATA_FIRST)),
                "last_s2c_data_ns": _nullable(side(server_dir, _DATA_LAST)),
                "bytes_c2s": side(client_dir, _BYTES),
                "bytes_s2c": side(server_dir, _BYTES),
                "client_fin_ns": _nullable(client_fin),
                "server_fin_ns": _nullable(server_fin),
                "fin_first": _first_side(client_fin, server_fin),
                "client_rst_ns": _nullable(client_rst),
                "server_rst_ns": _nullable(server_rst),
                "rst_first": _first_side(client_rst, server_rst),
                "end_ns": conns[rows, _END_TS],
                "outcome": _strings(_OUTCOMES, outcome),
            }
        )

    def _order(
        self, captures: Int64Array, client_ep: Int64Array, server_ep: Int64Array, syn_ns: Int64Array
    ) -> Int64Array:
        """The connections' CONNECTIONS order: by capture name, SYN time, then the endpoints
        (addresses in text order, then ports) and when each began. Ordering here, on
        integers, spares reordering text columns afterwards."""
        address_ranks = _text_ranks(self._addresses)
        client = address_ranks[client_ep // 65536] * 65536 + client_ep % 65536
        server = address_ranks[server_ep // 65536] * 65536 + server_ep % 65536
        began = np.arange(len(syn_ns))
        low, high = np.minimum(client, server), np.maximum(client, server)
        order: Int64Array = np.lexsort(
            (began, high, low, syn_ns, _text_ranks(self._captures)[captures])
        )
        return order

    def _client_directions(self, conns: Int64Array) -> Int64Array:
        """Per connection, the client's direction: the SYN's sender, else the SYN-ACK's
        receiver, else by port (see the module docstring)."""
        first_src, first_dst = conns[:, _SRC], conns[:, _DST]
        src_port, dst_port = first_src % 65536, first_dst % 65536
        src_serves = np.isin(src_port, self._server_ports)
        dst_serves = np.isin(dst_port, self._server_ports)
        by_port = np.where(
            src_serves & ~dst_serves,
            1,
            np.where(dst_serves & ~src_serves, 0, np.where(src_port >= dst_port, 0, 1)),
        )
        syn_dir, synack_dir = conns[:, _SYN_DIR], conns[:, _SYNACK_DIR]
        client = np.where(syn_dir >= 0, syn_dir, np.where(synack_dir >= 0, 1 - synack_dir, by_port))
        # a flow from an endpoint to itself has one direction only
        return np.where(first_src == first_dst, 0, client).astype(np.int64)


def number_connections(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The CONNECTIONS table of trackers' ``rows()`` (no flow in two of them): ordered by
    capture, SYN time, then the endpoints (addresses in text order, then ports) and when each
    began, and numbered in that order by ``conn_key``. Parts of one capture each (a tracker
    per capture) are in that order once sorted by capture name: only they are not sorted again."""
    parts = [part for part in parts if not part.empty]
    if not parts:
        return CONNECTIONS.empty()
    captures = [_only_capture(part) for part in parts]
    if len(parts) == 1 or (None not in captures and len(set(captures)) == len(captures)):
        by_name = sorted(range(len(parts)), key=lambda i: str(captures[i]))
        out = pd.concat([parts[i] for i in by_name], ignore_index=True)
    else:
        out = _ordered(pd.concat(parts, ignore_index=True))
    out.insert(0, "conn_key", np.arange(len(out), dtype=np.int64))
    return check_frame(out, CONNECTIONS, "tcp_connections output")


def rows_where(connections: pd.DataFrame, keep: pd.Series) -> pd.DataFrame:
    """``connections[keep]``, as a slice of the table when the rows kept are one run, which a
    capture's rows are (CONNECTIONS is ordered by capture first): a slice shares the columns,
    where a mask copies each of them, the text ones string by string (for the 1M-request
    bench's client and node rows, the joins stage took 0.28 s of CPU less)."""
    kept = np.flatnonzero(keep.to_numpy(dtype=bool))
    if len(kept) and kept[-1] - kept[0] + 1 == len(kept):
        return connections.iloc[kept[0] : kept[-1] + 1]
    return connections.iloc[kept]


def _only_capture(part: pd.DataFrame) -> str | None:
    """The one capture ``part``'s rows come from, or None when they come from several."""
    first = str(part["capture"].iloc[0])
    return first if bool((part["capture"] == first).all()) else None


def _ordered(out: pd.DataFrame) -> pd.DataFrame:
    """Rows of several trackers, in CONNECTIONS order (``ConnectionTracker._order``'s, over
    all of them)."""
    n = len(out)
    ranks, _ = pd.factorize(pd.concat([out["client_ip"], out["server_ip"]]), sort=True)
    client = ranks[:n].astype(np.int64) * 65536 + out["client_port"].to_numpy(np.int64)
    server = ranks[n:].astype(np.int64) * 65536 + out["server_port"].to_numpy(np.int64)
    capture, _ = pd.factorize(out["capture"], sort=True)
    syn_ns = out["syn_ns"].to_numpy(np.int64)
    order = np.lexsort(
        (np.arange(n), np.maximum(client, server), np.minimum(client, server), syn_ns, capture)
    )
    return out.take(order).reset_index(drop=True)


def _text_ranks(names: dict[str, int]) -> Int64Array:
    """Each name's rank in text order, indexed by its code in ``names``."""
    texts = list(names)
    ranks = np.empty(len(texts), dtype=np.int64)
    ranks[sorted(range(len(texts)), key=texts.__getitem__)] = np.arange(len(texts))
    return ranks


def _codes(column: pd.Series, names: dict[str, int]) -> Int64Array:
    """``column``'s texts as codes into ``names``, adding the texts it has not seen: flows are
    keyed by integers, and codes stay the same from one chunk to the next."""
    first = column.iloc[0]
    # a capture's name in its own chunk: one comparison pass, no hashing
    if column.iloc[-1] == first and bool((column == first).all()):
        return np.full(len(column), names.setdefault(first, len(names)), dtype=np.int64)
    local, uniques = pd.factorize(column)
    known = np.array([names.setdefault(text, len(names)) for text in uniques], dtype=np.int64)
    codes: Int64Array = known[local]
    return codes


def _empty_flows(slots: int) -> Int64Array:
    flows = np.zeros((slots, _FLOW_COLUMNS), dtype=np.int64)
    flows[:, _F_CONN] = -1
    return flows


@compiled
def _slot(flows: Int64Array, cap: int, lo: int, hi: int) -> int:
    """The flow table slot of (cap, lo, hi): its own, or the free one it is to take (linear
    probing from a multiplicative hash; the table's size is a power of two)."""
    mask = len(flows) - 1
    h = (cap * 0x7FEB352D) ^ (lo * 0x2545F4914F6CDD1D) ^ (hi * 0x5851F42D4C957F2D)
    slot = (h ^ (h >> 29)) & mask
    while flows[slot, _F_CONN] >= 0:
        if flows[slot, _F_LO] == lo and flows[slot, _F_HI] == hi and flows[slot, _F_CAP] == cap:
            return int(slot)
        slot = (slot + 1) & mask
    return int(slot)


@compiled
def _rehash_into(old: Int64Array, new: Int64Array) -> None:
    for row in range(len(old)):
        if old[row, _F_CONN] >= 0:
            new[_slot(new, old[row, _F_CAP], old[row, _F_LO], old[row, _F_HI])] = old[row]


def _rehashed(flows: Int64Array, slots: int) -> Int64Array:
    new = _empty_flows(slots)
    _rehash_into(flows, new)
    return new


@compiled
def _starts_connection(flow: Int64Array, ts: int, flags: int, seq: int, reuse_gap_ns: int) -> bool:
    """Whether a packet of a flow that has packets already opens a new connection (module
    docstring: a SYN after midstream packets, with a new ISN, after a close, or after a gap)."""
    if (flags & (SYN | ACK)) != SYN:
        return False
    if flow[_F_HAS_SYN] == 0:
        return True
    new_isn = flow[_F_SYN_SEQ] != seq
    return bool(new_isn or flow[_F_CLOSED] != 0 or ts - flow[_F_LAST_TS] > reuse_gap_ns)


@compiled
def _remember(flow: Int64Array, ts: int, flags: int, seq: int) -> None:
    """The flow's state after a packet: its last SYN's ISN, whether it closed since, its time."""
    if (flags & (SYN | ACK)) == SYN:
        flow[_F_HAS_SYN], flow[_F_SYN_SEQ], flow[_F_CLOSED] = 1, seq, 0
    elif flags & (FIN | RST):
        flow[_F_CLOSED] = 1
    flow[_F_LAST_TS] = ts


@compiled
def _open(conn: Int64Array, cap: int, src: int, dst: int, ts: int) -> None:
    conn[:] = _NONE
    conn[_CAP], conn[_SRC], conn[_DST], conn[_FIRST_TS] = cap, src, dst, ts
    conn[_SYN_DIR] = conn[_SYNACK_DIR] = -1
    for d in range(2):
        base = _DIRECTED + d * _PER_DIRECTION
        conn[base + _SYNS] = conn[base + _BYTES] = 0


@compiled
def _count(conn: Int64Array, ts: int, src: int, flags: int, payload: int) -> None:
    """Add one packet to its connection's first/last/total figures, by direction. The
    handshake's ACK is the first pure ACK at or after the other side's first SYN-ACK: one that
    came before the SYN-ACK at the same instant counts too."""
    d = 0 if src == conn[_SRC] else 1
    mine = _DIRECTED + d * _PER_DIRECTION
    theirs = _DIRECTED + (1 - d) * _PER_DIRECTION
    conn[_END_TS] = ts
    kind = flags & (SYN | ACK)
    if kind == SYN:
        if conn[_SYN_DIR] < 0:
            conn[_SYN_DIR] = d
        conn[mine + _SYNS] += 1
        conn[mine + _SYN_TS] = min(conn[mine + _SYN_TS], ts)
    elif kind == SYN | ACK:
        if conn[_SYNACK_DIR] < 0:
            conn[_SYNACK_DIR] = d
        if conn[mine + _SYNACK_TS] == _NONE:
            conn[mine + _SYNACK_TS] = ts
            if conn[theirs + _PURE_ACK_TS] == ts:
                conn[theirs + _ESTABLISHED_TS] = ts
    elif kind == ACK:
        conn[mine + _PURE_ACK_TS] = ts
        if conn[mine + _ESTABLISHED_TS] == _NONE and ts >= conn[theirs + _SYNACK_TS]:
            conn[mine + _ESTABLISHED_TS] = ts
    if payload > 0:
        conn[mine + _DATA_FIRST] = min(conn[mine + _DATA_FIRST], ts)
        conn[mine + _DATA_LAST] = ts
    conn[mine + _BYTES] += payload
    if flags & FIN:
        conn[mine + _FIN_TS] = min(conn[mine + _FIN_TS], ts)
    if flags & RST:
        conn[mine + _RST_TS] = min(conn[mine + _RST_TS], ts)


@compiled
def _track(
    cap: Int64Array,
    src: Int64Array,
    dst: Int64Array,
    ts: Int64Array,
    flags: Int64Array,
    seq: Int64Array,
    payload: Int64Array,
    order: Int64Array,
    position: int,
    flows: Int64Array,
    conns: Int64Array,
    counts: Int64Array,
    reuse_gap_ns: int,
) -> tuple[int, int]:
    """Feed packets ``order[position:]`` (or ``position:`` when ``order`` is empty, the chunk
    being in time order already) to their flows and connections. Returns where it stopped and
    why: done, or a table is full (the caller grows it and calls again from there), or a
    packet is out of order."""
    for k in range(position, len(ts)):
        if counts[0] == len(conns):
            return k, _NEED_CONN_ROWS
        if 2 * (counts[1] + 1) > len(flows):
            return k, _NEED_FLOW_SLOTS
        i = order[k] if len(order) else k
        lo, hi = min(src[i], dst[i]), max(src[i], dst[i])
        flow = flows[_slot(flows, cap[i], lo, hi)]
        if flow[_F_CONN] < 0:
            flow[_F_CAP], flow[_F_LO], flow[_F_HI] = cap[i], lo, hi
            flow[_F_HAS_SYN] = flow[_F_CLOSED] = 0
            counts[1] += 1
            opens = True
        elif ts[i] < flow[_F_LAST_TS]:
            return k, _OUT_OF_ORDER
        else:
            opens = _starts_connection(flow, ts[i], flags[i], seq[i], reuse_gap_ns)
        if opens:
            flow[_F_CONN] = counts[0]
            counts[0] += 1
            _open(conns[flow[_F_CONN]], cap[i], src[i], dst[i], ts[i])
        _remember(flow, ts[i], flags[i], seq[i])
        _count(conns[flow[_F_CONN]], ts[i], src[i], flags[i], payload[i])
    return len(ts), _DONE


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
    """First/last figures (_NONE for "none") as a nullable Int64 column."""
    return pd.arrays.IntegerArray(values, values == _NONE)


def _first_side(client: Int64Array, server: Int64Array) -> pd.api.extensions.ExtensionArray:
    none = (client == _NONE) & (server == _NONE)
    return _strings(_SIDES, np.where(none, -1, np.where(client <= server, 0, 1)))
