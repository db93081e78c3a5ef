"""Connections and requests of the traffic model → TCP segments, as PACKETS frames per capture.

Every segment kind (SYN and its retries, SYN-ACK, RST answer, request, response, the close
handshakes) is one vectorized mask over the connection or request table, so ten million packets
cost a few seconds.

The segments are made and handed out in time windows, so that a run of 100M packets never holds
them all: a window takes the connections and requests whose segments reach into it (found from
each row's first and last segment time, computed once), keeps the segments that fall in it, and
numbers them from each connection's bytes sent in earlier windows. Each capture keeps back only
the packets that a later window could still precede (the node captures see client→server
segments ``one_way`` later and server→client ones earlier than the client), so every capture
comes out in exactly the order of one whole-run sort: time, then connection, then the
connection's own order. The window size changes nothing in the bytes written. Sequence numbers are consistent per direction (SYN and FIN count one byte),
which keeps tcpdump, tshark and scapy happy and lets readers be cross-checked on these files.

Request and response segments carry real HTTP/1.1 messages (request line and headers; status
line, headers and body) of the model's sizes, so that readers of payload bytes
(``analyzer.readers.http1``) can be checked and benchmarked on these captures.

The client capture sees the client ↔ LB address; a node capture sees the same segments on the
Pod's node after the NAT (client or SNAT address ↔ Pod IP:target port), ``one_way`` later for
client→server segments and earlier for server→client ones, unanswered SYNs to a gone Pod
included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from http import HTTPStatus

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.tracebuilder.model import SERVICE_PORT, TARGET_PORT, Cluster
from analyzer.tracebuilder.traffic import SYN_RETRIES_S, Answer, Close, Traffic

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
C2S, S2C = 0, 1
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

REQUEST_BYTES = {False: 78, True: 82}  # GET / and GET /slow with a few headers
RESPONSE_BYTES = {200: 312, 503: 190}
PATHS = {False: "/", True: "/slow"}
NO_MESSAGE = -1


def request_message(path: str, size: int) -> bytes:
    """A GET of ``path`` as a client sends it, padded by a header to exactly ``size`` bytes."""
    head = f"GET {path} HTTP/1.1\r\nHost: demo\r\nUser-Agent: rolltrace-loadgen\r\n"
    pad = size - len(head) - len("X-Pad: \r\n\r\n")
    if pad < 0:
        raise ValueError(f"a request of {path} does not fit in {size} bytes")
    return f"{head}X-Pad: {'x' * pad}\r\n\r\n".encode()


def response_message(status: int, size: int) -> bytes:
    """A response with ``status`` and a plain-text body filling it to exactly ``size`` bytes."""
    line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain\r\n"
    body_len = size - len(line) - len("Content-Length: \r\n\r\n")
    body_len -= len(str(body_len))  # the length's own digits come out of the body
    if body_len < 0:
        raise ValueError(f"a {status} response does not fit in {size} bytes")
    message = f"{line}Content-Length: {body_len}\r\n\r\n{'o' * body_len}".encode()
    assert len(message) == size, (status, size)  # one digit fewer would shift the body
    return message


class _Messages:
    """The distinct payloads of a capture: each segment carries a code into ``payloads``."""

    def __init__(self, statuses: I64) -> None:
        self.payloads = [
            request_message(PATHS[slow], REQUEST_BYTES[slow]) for slow in (False, True)
        ]
        self.statuses = np.unique(statuses[statuses > 0])
        for status in self.statuses:
            size = RESPONSE_BYTES.get(int(status), RESPONSE_BYTES[200])
            self.payloads.append(response_message(int(status), size))

    def requests(self, slow: npt.NDArray[np.bool_]) -> I64:
        return slow.astype(np.int64)

    def responses(self, status: I64) -> I64:
        codes: I64 = 2 + np.searchsorted(self.statuses, status)
        return codes


class _Table(IntEnum):
    CONN = 0
    REQUEST = 1


@dataclass(frozen=True)
class _Kind:
    """Segments of one kind: row ``rows[i]`` of the connection or request table sends one at
    ``ts[i]``."""

    table: _Table
    rows: I64
    ts: F64
    way: int
    flags: int
    payload: I64 | int = 0
    message: I64 | int = NO_MESSAGE


def _handshake_kinds(c: pd.DataFrame, rtt: float) -> Iterator[_Kind]:
    """SYNs (and their retries), SYN-ACK + ACK, or the RST that refused the connection."""
    row = np.arange(len(c))
    syn = c["syn"].to_numpy()
    syn_count = c["syn_count"].to_numpy()
    offsets = np.concatenate(([0.0], SYN_RETRIES_S))
    for k in range(int(syn_count.max(initial=0))):
        m = syn_count > k
        yield _Kind(_Table.CONN, row[m], syn[m] + offsets[k], C2S, SYN)
    answer = c["answer"].to_numpy()
    m = answer == Answer.SYNACK
    est = c["established"].to_numpy()
    yield _Kind(_Table.CONN, row[m], est[m] - rtt / 10, S2C, SYN | ACK)
    yield _Kind(_Table.CONN, row[m], est[m], C2S, ACK)
    m = (answer == Answer.RST_POD) | (answer == Answer.RST_SERVICE)
    yield _Kind(_Table.CONN, row[m], syn[m] + rtt, S2C, RST | ACK)


def _request_kinds(q: pd.DataFrame, rtt: float, messages: _Messages) -> Iterator[_Kind]:
    """Each request sent, and its response with the client's ACK."""
    row = np.arange(len(q))
    send = q["send"].to_numpy()
    m = ~np.isnan(send)
    slow = q["slow"].to_numpy(bool)
    request_bytes = np.where(slow[m], REQUEST_BYTES[True], REQUEST_BYTES[False])
    yield _Kind(
        _Table.REQUEST,
        row[m],
        send[m],
        C2S,
        PSH | ACK,
        request_bytes,
        messages.requests(slow[m]),
    )
    first_byte = q["first_byte"].to_numpy()
    m = ~np.isnan(first_byte)
    status = q["status"].to_numpy()
    resp = np.where(status[m] == 503, RESPONSE_BYTES[503], RESPONSE_BYTES[200])
    codes = messages.responses(status[m])
    yield _Kind(_Table.REQUEST, row[m], first_byte[m], S2C, PSH | ACK, resp, codes)
    yield _Kind(_Table.REQUEST, row[m], first_byte[m] + rtt / 10, C2S, ACK)


def _close_kinds(c: pd.DataFrame, rtt: float) -> Iterator[_Kind]:
    """FIN handshakes, server resets and the two race closes."""
    row = np.arange(len(c))
    close = c["close"].to_numpy()
    close_t = c["close_t"].to_numpy()
    for kind, first_way in ((Close.CLIENT_FIN, C2S), (Close.SERVER_FIN, S2C)):
        m = close == kind
        yield _Kind(_Table.CONN, row[m], close_t[m], first_way, FIN | ACK)
        yield _Kind(_Table.CONN, row[m], close_t[m] + rtt / 2, 1 - first_way, FIN | ACK)
        yield _Kind(_Table.CONN, row[m], close_t[m] + rtt, first_way, ACK)
    m = close == Close.SERVER_RST
    yield _Kind(_Table.CONN, row[m], close_t[m], S2C, RST | ACK)
    race_t = c["race_t"].to_numpy()
    m = close == Close.RACE
    yield _Kind(_Table.CONN, row[m], close_t[m], S2C, FIN | ACK)
    yield _Kind(_Table.CONN, row[m], race_t[m], S2C, RST)
    m = close == Close.RST_RACE  # abort (SO_LINGER 0), then the closed socket answers the data
    yield _Kind(_Table.CONN, row[m], close_t[m], S2C, RST | ACK)
    yield _Kind(_Table.CONN, row[m], race_t[m], S2C, RST)


def _kinds(c: pd.DataFrame, q: pd.DataFrame, rtt: float, messages: _Messages) -> Iterator[_Kind]:
    """Every segment kind, in the order that breaks ties between a connection's segments sent
    at the same instant."""
    yield from _handshake_kinds(c, rtt)
    yield from _request_kinds(q, rtt, messages)
    yield from _close_kinds(c, rtt)


@dataclass
class _Spans:
    """Per connection and per request, the times of its first and last segment."""

    first: tuple[F64, F64]  # (connections, requests)
    last: tuple[F64, F64]
    segments: int

    @classmethod
    def of(cls, c: pd.DataFrame, q: pd.DataFrame, rtt: float, messages: _Messages) -> _Spans:
        first = (np.full(len(c), np.inf), np.full(len(q), np.inf))
        last = (np.full(len(c), -np.inf), np.full(len(q), -np.inf))
        segments = 0
        for kind in _kinds(c, q, rtt, messages):
            if np.isnan(kind.ts).any():
                raise ValueError(f"a segment of kind {kind.flags:#04x} has no time")
            t = kind.table
            first[t][kind.rows] = np.minimum(first[t][kind.rows], kind.ts)
            last[t][kind.rows] = np.maximum(last[t][kind.rows], kind.ts)
            segments += len(kind.rows)
        return cls(first, last, segments)


class _Active:
    """The rows of one table whose segments reach into the current window, window after
    window: rows join in order of their first segment and leave after their last."""

    def __init__(self, first: F64, last: F64) -> None:
        sent = np.flatnonzero(np.isfinite(first))  # a refused request sends nothing
        self._order = sent[np.argsort(first[sent], kind="stable")]
        self._first = first[self._order]
        self._last = last
        self._joined = 0
        self._rows = np.empty(0, dtype=np.int64)

    def rows(self, start: float, stop: float) -> I64:
        """Rows with a segment in [start, stop), ascending (the table's own order)."""
        joining = int(np.searchsorted(self._first, stop, side="left"))
        staying = self._rows[self._last[self._rows] >= start]
        self._rows = np.concatenate([staying, self._order[self._joined : joining]])
        self._joined = joining
        return np.sort(self._rows)


@dataclass
class _Window:
    """The segments of one time window in connection order (client-side times)."""

    conn: I64
    ts: F64
    way: I64
    flags: I64
    payload: I64
    message: I64
    order: I64  # run-wide count, increasing along each connection's segments: breaks ties

    @classmethod
    def of(cls, kinds: list[_Kind], conn_ids: tuple[I64, I64], first_order: int) -> _Window:
        def column(get: Callable[[_Kind], I64 | int]) -> I64:
            parts = [
                np.broadcast_to(np.asarray(get(k), dtype=np.int64), len(k.rows)) for k in kinds
            ]
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

        conn = column(lambda k: conn_ids[k.table][k.rows])
        ts = np.concatenate([k.ts for k in kinds]) if kinds else np.empty(0)
        by_conn = np.lexsort((ts, conn))  # stable: same instant → kind order
        cols = [column(lambda k: k.way), column(lambda k: k.flags)]
        cols += [column(lambda k: k.payload), column(lambda k: k.message)]
        way, flags, payload, message = (col[by_conn] for col in cols)
        order = first_order + np.arange(len(conn), dtype=np.int64)
        return cls(conn[by_conn], ts[by_conn], way, flags, payload, message, order)


class _Numbering:
    """seq/ack per segment: per direction, the ISN, plus one for the SYN once it is behind (its
    retransmissions repeat the ISN), plus every payload byte and FIN sent before, in this
    window or an earlier one."""

    def __init__(self, conns: int) -> None:
        rng = np.random.default_rng(conns)
        self.isn = rng.integers(0, 2**32, size=(conns, 2), dtype=np.int64)
        self.sent = np.zeros((conns, 2), dtype=np.int64)  # bytes + FINs of earlier windows

    def number(self, w: _Window) -> tuple[I64, I64]:
        conn, way, flags = w.conn, w.way, w.flags
        if not len(conn):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        is_syn = (flags & SYN) != 0
        used = w.payload + ((flags & FIN) != 0)
        new_conn = np.r_[True, conn[1:] != conn[:-1]]
        starts = np.flatnonzero(new_conn)
        ends = np.r_[starts[1:], len(conn)] - 1
        group = np.cumsum(new_conn) - 1
        sent = []
        for d in (C2S, S2C):
            mine = np.where(way == d, used, 0)
            total = np.cumsum(mine)
            within = total - (total - mine)[starts][group]  # inclusive, within the connection
            sent.append(within + self.sent[conn, d])
        sent_c, sent_s = sent
        self.sent[conn[ends], C2S] = sent_c[ends]
        self.sent[conn[ends], S2C] = sent_s[ends]
        own = np.where(way == C2S, sent_c, sent_s) - used + ~is_syn
        other = np.where(way == C2S, sent_s, sent_c) + 1
        seq = (self.isn[conn, way] + own) % 2**32
        ack = np.where((flags & ACK) != 0, (self.isn[conn, 1 - way] + other) % 2**32, 0)
        return seq, ack


def _within(kind: _Kind, start: float, stop: float) -> _Kind:
    """The segments of ``kind`` sent in [start, stop)."""
    m = (kind.ts >= start) & (kind.ts < stop)

    def pick(values: I64 | int) -> I64 | int:
        return values if isinstance(values, int) else values[m]

    return _Kind(
        kind.table,
        kind.rows[m],
        kind.ts[m],
        kind.way,
        kind.flags,
        pick(kind.payload),
        pick(kind.message),
    )


class _Held:
    """A capture's packets held back until no later window can come before them in time."""

    def __init__(self) -> None:
        self._pending: pd.DataFrame | None = None

    def push(self, frame: pd.DataFrame, before_ns: int) -> pd.DataFrame:
        """Add ``frame``; return, in file order, the packets earlier than ``before_ns``."""
        joined = frame if self._pending is None else pd.concat([self._pending, frame])
        order = np.lexsort((joined["_order"], joined["_conn"], joined["ts_ns"]))
        joined = joined.take(order)
        cut = int(np.searchsorted(joined["ts_ns"].to_numpy(), before_ns, side="left"))
        self._pending = joined.iloc[cut:]
        return _released(joined.iloc[:cut])

    def rest(self) -> pd.DataFrame:
        """Everything still held, in file order (at least the empty frame of its columns)."""
        rest, self._pending = self._pending, None
        assert rest is not None, "every window pushes to every capture"
        return _released(rest)


def _released(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["_conn", "_order"]).reset_index(drop=True)


@dataclass(frozen=True)
class _Wire:
    """What the captures need of each connection (indexed by connection id) and of the run."""

    port: I64
    pod: I64
    answer: I64
    lb_node: I64
    pod_node: I64
    pod_ips: npt.NDArray[np.object_]
    node_ips: npt.NDArray[np.object_]
    addresses: pd.Index
    payloads: pd.Index
    t0_ns: int

    @classmethod
    def of(cls, cluster: Cluster, conns: pd.DataFrame, payloads: list[bytes], t0_ns: int) -> _Wire:
        pod_ips = np.array([p.ip for p in cluster.pods] + [""], dtype=object)
        node_ips = np.array([cluster.node_ip(n) for n in range(cluster.nodes)], dtype=object)
        addr = cluster.addresses
        every = [addr.client, addr.lb, *node_ips, *pod_ips[:-1]]
        return cls(
            port=conns["port"].to_numpy(),
            pod=conns["pod"].to_numpy(),
            answer=conns["answer"].to_numpy(),
            lb_node=conns["node"].to_numpy(),
            pod_node=np.array([p.node for p in cluster.pods] + [-1])[conns["pod"].to_numpy()],
            pod_ips=pod_ips,
            node_ips=node_ips,
            addresses=pd.Index(pd.unique(np.array(every, dtype=object)), dtype=object),
            payloads=pd.Index(payloads, dtype=object),
            t0_ns=t0_ns,
        )


def _window_frames(
    cluster: Cluster, wire: _Wire, w: _Window, seq: I64, ack: I64
) -> Iterator[tuple[str, pd.DataFrame]]:
    """This window's packets per capture, client first, in connection order."""
    r = cluster.recipe
    one_way = r.rtt_ms / 1000 / 5
    addr = cluster.addresses
    conn, way = w.conn, w.way
    port = wire.port[conn]
    common = {
        "flags": w.flags,
        "seq": seq,
        "ack": ack,
        "payload_len": w.payload,
        "message": w.message,
        "ip_version": np.full(len(conn), addr.version),
        "_conn": conn,
        "_order": w.order,
    }
    yield "client", _frame(w.ts, way, addr.client, addr.lb, port, SERVICE_PORT, common, wire)
    if not r.node_captures:
        return
    pod = wire.pod[conn]
    # a SYN the node's rules sent to a Pod is on the node's wire even when nothing answers it:
    # after the Pod's sandbox is gone the node still holds its neighbour entry and sends the
    # SYN onto the Pod bridge (the local cluster's data plane shows exactly this)
    reached = (pod >= 0) & (wire.answer[conn] != Answer.RST_SERVICE)
    pod_node = wire.pod_node[conn]
    shifted = w.ts + np.where(way == C2S, one_way, -one_way)
    for n in range(cluster.nodes):
        m = reached & (pod_node == n)
        if r.traffic_policy == "Local":
            source: object = addr.client
        else:  # Cluster policy: the receiving node masquerades the client
            source = wire.node_ips[wire.lb_node[conn[m]]]
        sub = {k: v[m] for k, v in common.items()}
        server = wire.pod_ips[pod[m]]
        frame = _frame(shifted[m], way[m], source, server, port[m], TARGET_PORT, sub, wire)
        yield f"node-{n + 1}", frame


def _frame(
    ts: F64,
    way: I64,
    client: object,
    server: object,
    client_port: I64,
    server_port: int,
    common: dict[str, I64],
    wire: _Wire,
) -> pd.DataFrame:
    c2s = way == C2S
    client_ip = np.broadcast_to(np.asarray(client, dtype=object), c2s.shape)
    server_ip = np.broadcast_to(np.asarray(server, dtype=object), c2s.shape)
    columns = {k: v for k, v in common.items() if k != "message"}
    return pd.DataFrame(
        {
            "ts_ns": wire.t0_ns + np.round(ts * 1e9).astype(np.int64),
            "src": pd.Categorical(np.where(c2s, client_ip, server_ip), categories=wire.addresses),
            "dst": pd.Categorical(np.where(c2s, server_ip, client_ip), categories=wire.addresses),
            "sport": np.where(c2s, client_port, server_port),
            "dport": np.where(c2s, server_port, client_port),
            **columns,
            "payload": pd.Categorical.from_codes(common["message"], categories=wire.payloads),
        }
    )


def capture_names(cluster: Cluster) -> list[str]:
    """The captures of a run: the client's, and one per node unless node captures are off."""
    nodes = [f"node-{n + 1}" for n in range(cluster.nodes)] if cluster.recipe.node_captures else []
    return ["client", *nodes]


WINDOW_SEGMENTS = 250_000  # segments per window on average: ~0.2 GB of frames and their sorts


def capture_chunks(
    cluster: Cluster, traffic: Traffic, t0_ns: int, *, window_segments: int = WINDOW_SEGMENTS
) -> Iterator[tuple[str, pd.DataFrame]]:
    """(capture name, packets) in file order per capture: PACKETS columns except ``capture``,
    plus ``payload`` (the HTTP message bytes of request and response segments). Every capture
    of ``capture_names`` yields at least once, its last piece after all windows."""
    c, q = traffic.conns, traffic.requests
    if not np.array_equal(c["conn_id"].to_numpy(), np.arange(len(c))):
        raise ValueError("connections must be numbered 0..n-1 in table order")
    rtt = cluster.recipe.rtt_ms / 1000
    messages = _Messages(q["status"].to_numpy())
    spans = _Spans.of(c, q, rtt, messages)
    active = [_Active(spans.first[t], spans.last[t]) for t in _Table]
    numbering = _Numbering(len(c))
    wire = _Wire.of(cluster, c, messages.payloads, t0_ns)
    lead = {name: 0.0 if name == "client" else rtt / 5 for name in capture_names(cluster)}
    held = {name: _Held() for name in lead}
    first, last, width = 0.0, 0.0, 1.0  # no segment: one empty window
    if spans.segments:
        first = min(float(spans.first[t].min()) for t in _Table)
        last = max(float(spans.last[t].max()) for t in _Table)
        width = (last - first) * window_segments / spans.segments or 1.0
    made, k = 0, 0
    while first + k * width <= last:
        start, stop = first + k * width, first + (k + 1) * width
        conn_rows, req_rows = (a.rows(start, stop) for a in active)
        sub_q = q.iloc[req_rows]
        kinds = [
            _within(kind, start, stop) for kind in _kinds(c.iloc[conn_rows], sub_q, rtt, messages)
        ]
        w = _Window.of(kinds, (conn_rows, sub_q["conn_id"].to_numpy()), made)
        made += len(w.conn)
        seq, ack = numbering.number(w)
        for name, frame in _window_frames(cluster, wire, w, seq, ack):
            ready = held[name].push(frame, t0_ns + int(np.round((stop - lead[name]) * 1e9)))
            if len(ready):
                yield name, ready
        k += 1
    if made != spans.segments:
        raise RuntimeError(f"windows made {made:,} segments of {spans.segments:,}")
    for name, pending in held.items():
        yield name, pending.rest()


def capture_frames(cluster: Cluster, traffic: Traffic, t0_ns: int) -> dict[str, pd.DataFrame]:
    """Capture name → all its packets, as ``capture_chunks`` hands them out, joined (for runs
    small enough to hold)."""
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in capture_names(cluster)}
    for name, frame in capture_chunks(cluster, traffic, t0_ns):
        parts[name].append(frame)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
