"""The requests table rebuilt from a client capture of cleartext HTTP/1.x (docs/trace-format.md,
"Requests from packets"; ``analyzer.importer.pair_requests`` pairs it with a tool's request log).

Any client becomes usable (curl loops, hey, wrk, k6, a browser, real users) when its capture
alone yields ``analyzer.schema.REQUESTS``: one row per request on each connection, with method,
target, status, start, first byte, end, error kind, local port and server address.

How a connection's data segments become requests (no Python code runs per segment or request):

* Each data segment is tied to its connection (``analyzer.connections.tcp_connections``) by its
  address pair and time; a segment whose bytes were all sent before in that direction (same
  start) is a retransmission and is dropped.
* A client segment that begins with a request line starts a request; a server segment that
  begins with a final status line (1xx interim responses aside) starts a response. A segment
  with too few captured bytes to tell (``http1.MIN_START_LINE``) starts a message when the other
  side spoke last. HTTP/1.1 answers in order: the k-th response answers the k-th request
  (keep-alive and pipelining alike).
* A response ends with its last server data segment before the next response (the
  Content-Length may be cut by the snap length, so it is not read).
* A request without a response failed, by what closed its connection first after the last
  answer: a server RST → ``reset``, a server FIN → ``eof``, the client's own FIN/RST → the
  client gave up (``read-timeout``), nothing before the capture ended → ``other``.
* Connections without request lines get one row each with the connection's outcome: refused,
  SYN timeout (``connect-timeout``), reset, EOF, or ``ok`` once the server sent data. That
  covers TLS and payloads the snap length cut (``payload_kind``; ``PacketRequestNotes`` counts
  them), and failed connections that carried no data. A connection the client opened and
  closed without sending anything is not a request and only counted.

What packets cannot tell: the Pod (no ``X-Pod-Name``: ``pod`` is NA), the schedule
(``scheduled_ns`` = ``start_ns``), the load user (``user_kind``: ``keepalive`` on a connection
that carried several requests), and, on a failed request, which error the client library raised
when the server closed with FIN and then RST (it is ``reset``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.readers.http1 import (
    MIN_START_LINE,
    PayloadKind,
    decided,
    request_lines,
    status_lines,
)
from analyzer.readers.pcap import PayloadPrefixes, text_column
from analyzer.schema import REQUESTS, ConnectionOutcome, ErrorKind, check_frame

I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

PREFIX_BYTES = 128
"""Payload bytes readable per segment (``read_pcap_payloads(path, PREFIX_BYTES)``): a request
line with a target of up to ~100 bytes fits whole; a longer target is kept cut and counted.
Only the first 32 are read for every segment (``http1``), the rest for long lines only."""

_NONE = np.iinfo(np.int64).max  # "no such time" (NA) in the integer columns below
_PORTS = 65536
_KINDS = list(PayloadKind)
_ERRORS = list(ErrorKind)
_OUTCOMES = list(ConnectionOutcome)
_NO_ANSWER = {
    ErrorKind.RESET: "no response: the server reset the connection",
    ErrorKind.EOF: "no response: the server closed the connection",
    ErrorKind.READ_TIMEOUT: "no response: the client closed the connection",
    ErrorKind.OTHER: "no response before the capture ended",
}
_DETAILS = list(_NO_ANSWER.values()) + [
    f"connection outcome only ({kind}): {outcome}" for kind in _KINDS for outcome in _OUTCOMES
]
_FAILED_CONNECTION = {  # outcome → error of a connection that carried no readable request
    ConnectionOutcome.REFUSED: ErrorKind.REFUSED,
    ConnectionOutcome.SYN_TIMEOUT: ErrorKind.CONNECT_TIMEOUT,
    ConnectionOutcome.RESET_BY_SERVER: ErrorKind.RESET,
    ConnectionOutcome.CLOSED_BY_SERVER: ErrorKind.EOF,
}


@dataclass(frozen=True)
class PacketRequestNotes:
    """What the rebuilt table holds and what it could not rebuild, for run.json and the report."""

    connections: int  # connections of the capture considered
    requests: int  # rows of the table
    from_request_lines: int  # rows rebuilt from request and status lines
    connection_level: dict[str, int]  # payload kind → connections given one outcome row each
    without_request: int  # connections the client opened and closed without sending data
    retransmissions: int  # data segments dropped as retransmissions
    targets_cut: int  # request targets longer than the bytes captured: kept cut

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def sentences(self) -> list[str]:
        """One sentence per fact a reader of the report needs."""
        out = [
            f"{self.requests} requests rebuilt from packets of {self.connections} connections, "
            f"{self.from_request_lines} of them from their request and status lines."
        ]
        payloadless = {k: v for k, v in self.connection_level.items() if v}
        if payloadless:
            listed = ", ".join(f"{count} {kind}" for kind, count in sorted(payloadless.items()))
            out.append(
                f"Connections without readable request lines ({listed}) have one row each with "
                "the connection's outcome: their requests and statuses are unknown."
            )
        if self.targets_cut:
            out.append(f"{self.targets_cut} request targets were longer than the bytes captured.")
        return out


def requests_from_packets(
    packets: pd.DataFrame, connections: pd.DataFrame, payloads: PayloadPrefixes
) -> tuple[pd.DataFrame, PacketRequestNotes]:
    """The REQUESTS table of one client capture, and notes on what it could not rebuild.

    ``packets`` and ``payloads`` come from one ``read_pcap_payloads`` call (at least
    ``http1.MIN_START_LINE`` bytes wide, ``PREFIX_BYTES`` recommended), ``connections`` from
    ``tcp_connections(packets, ...)``; pass only the connections to keep (e.g. those to the
    Service's address): the data of the others is left out. ``conn_id`` is the connection's
    ``conn_key``; the extra column ``payload_kind`` says how each row was rebuilt.
    """
    if payloads.width < MIN_START_LINE:
        raise ValueError(f"payload prefixes of {payloads.width} bytes cannot hold a start line")
    conns = _Conns.of(packets, connections)
    data = _DataSegments.of(packets, conns, payloads)
    lines = _Lines.of(packets, payloads, data)
    kinds = _payload_kinds(data, lines, len(conns))
    requests = _Requests.of(data, lines, kinds)
    asked = _request_columns(requests, requests.answered(data, lines), conns, lines, data)
    outcomes, without = _connection_columns(conns, kinds, data)
    frame = _frame(_Columns.concat(asked, outcomes), conns)
    counted = np.bincount(kinds, minlength=len(_KINDS))
    notes = PacketRequestNotes(
        connections=len(conns),
        requests=len(frame),
        from_request_lines=len(asked.conn),
        connection_level={
            kind.value: int(counted[i])
            for i, kind in enumerate(_KINDS)
            if kind not in (PayloadKind.HTTP1, PayloadKind.NONE)
        },
        without_request=without,
        retransmissions=data.retransmissions,
        targets_cut=int(lines.cut[data.entry[requests.rows]].sum()),
    )
    return frame, notes


def _pair_keys(a: I64, b: I64, span: int) -> I64:
    """One integer per unordered endpoint pair (-1 when an endpoint is unknown), ordered as the
    pairs are, so that sorting by key groups each pair."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if span * span < 2**62:
        keys: I64 = np.where(lo >= 0, lo * span + hi, -1)
        return keys
    pairs = pd.MultiIndex.from_arrays([lo, hi])  # too many addresses for one int64: rank them
    ranked: I64 = np.where(lo >= 0, pd.factorize(pairs, sort=True)[0], -1).astype(np.int64)
    return ranked


_TIMES = (
    *("syn_ns", "synack_ns", "established_ns", "first_s2c_data_ns", "end_ns"),
    *("client_fin_ns", "client_rst_ns", "server_fin_ns", "server_rst_ns"),
)
_NUMBERS = ("conn_key", "client_port", "server_port", "syn_count")


@dataclass(frozen=True)
class _Conns:
    """The capture's connections, ordered by (address pair, SYN time), as arrays: times with NA
    as _NONE ("never" compares later than anything), the outcome as a position in
    ConnectionOutcome, and endpoints as one integer each, address code × 65536 + port, so that
    matching sides is integer arithmetic."""

    times: dict[str, I64]
    numbers: dict[str, I64]
    outcome: I64
    ips: list[str]
    client: I64
    server: I64
    client_ip: I64  # into ``ips``
    server_ip: I64

    def __len__(self) -> int:
        return len(self.client)

    @classmethod
    def of(cls, packets: pd.DataFrame, connections: pd.DataFrame) -> _Conns:
        if len(packets):
            connections = connections[connections["capture"] == packets["capture"].iloc[0]]
        connections = connections[connections["syn_ns"].to_numpy() >= 0]  # see _stamped
        codes, ips = pd.factorize(pd.concat([connections["client_ip"], connections["server_ip"]]))
        count = len(connections)
        client = codes[:count] * _PORTS + connections["client_port"].to_numpy(np.int64)
        server = codes[count:] * _PORTS + connections["server_port"].to_numpy(np.int64)
        pair = _pair_keys(client, server, max(len(ips), 1) * _PORTS)
        order = np.lexsort((connections["syn_ns"].to_numpy(np.int64), pair))
        outcomes = pd.Index([o.value for o in _OUTCOMES])
        ip_codes = codes.astype(np.int64)
        return cls(
            {n: connections[n].to_numpy(np.int64, na_value=_NONE)[order] for n in _TIMES},
            {n: connections[n].to_numpy(np.int64)[order] for n in _NUMBERS},
            outcomes.get_indexer(pd.Index(connections["outcome"]))[order].astype(np.int64),
            [str(ip) for ip in ips],
            client[order],
            server[order],
            ip_codes[:count][order],
            ip_codes[count:][order],
        )

    @cached_property
    def pairs(self) -> I64:
        return _pair_keys(self.client, self.server, self.span)

    @property
    def span(self) -> int:
        return max(len(self.ips), 1) * _PORTS

    def endpoints(self, packets: pd.DataFrame, rows: I64, side: str) -> I64:
        """Endpoint codes of ``rows`` on one side; -1 where the address is no connection's.
        Only the rows' addresses are hashed (in Arrow), then the few distinct ones looked up."""
        addresses = pa.array(packets[side].array)
        if isinstance(addresses, pa.ChunkedArray):
            addresses = addresses.combine_chunks()
        encoded = pc.dictionary_encode(addresses.take(pa.array(rows)))
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        uniques = pd.Index(encoded.dictionary.to_pylist())
        ip = pd.Index(self.ips).get_indexer(uniques)[codes]
        port = packets["sport" if side == "src" else "dport"].to_numpy(np.int64)[rows]
        endpoint: I64 = np.where(ip >= 0, ip * _PORTS + port, -1)
        return endpoint


@dataclass(frozen=True)
class _DataSegments:
    """The data segments of the connections, sorted by (connection, time), retransmissions
    dropped. ``entry`` indexes the payload prefixes (and ``_Lines``)."""

    conn: I64
    ts: I64
    c2s: Mask
    entry: I64
    retransmissions: int

    @classmethod
    def of(cls, packets: pd.DataFrame, conns: _Conns, payloads: PayloadPrefixes) -> _DataSegments:
        entries = np.flatnonzero(_stamped(packets["ts_ns"].to_numpy(np.int64)[payloads.rows]))
        rows = payloads.rows[entries]
        src = conns.endpoints(packets, rows, "src")
        pair = _pair_keys(src, conns.endpoints(packets, rows, "dst"), conns.span)
        ts = packets["ts_ns"].to_numpy(np.int64)[rows]
        order, conn = _connections_of(pair, ts, conns)
        c2s = src[order] == conns.client[conn]
        # gathered in capture order (front to back), then put in connection order
        seq = packets["seq"].to_numpy(np.int64)[rows][order]
        length = packets["payload_len"].to_numpy(np.int64)[rows][order]
        again = _retransmitted(conn, c2s, seq, length)
        entry = entries[order]
        if not again.any():
            return cls(conn, ts[order], c2s, entry, 0)
        keep = ~again
        return cls(conn[keep], ts[order][keep], c2s[keep], entry[keep], int(again.sum()))


def _stamped(ts: I64) -> Mask:
    """Times a capture can hold: a damaged record's timestamp can overflow to before 1970, and
    such a segment (or a connection opened by one) is left out rather than made a request."""
    stamped: Mask = ts >= 0
    return stamped


def _connections_of(pair: I64, ts: I64, conns: _Conns) -> tuple[I64, I64]:
    """The segments in (connection, time) order, and the connection of each: the one of its
    address pair opened last at or before it (the pair's first, for segments sent before any
    SYN was captured). Segments of pairs without a connection are left out.

    Connections are ordered by (pair, SYN time), so ordering segments by (pair rank, time)
    orders them by connection too. Time enters the search as a count of SYNs seen by then, which
    makes (pair rank, time) one integer for segments and connections alike.
    """
    keys, count = conns.pairs, len(conns.pairs)
    heads = _group_heads(keys)
    first = np.flatnonzero(heads)
    rank = pd.Index(keys[first]).get_indexer(pd.Index(pair))  # unique there: a hash lookup
    rows = np.flatnonzero((rank >= 0) & (pair >= 0))
    syn = conns.times["syn_ns"]
    opened = np.sort(syn)
    seen = np.searchsorted(opened, ts[rows], "right")  # in capture order: a merge, too
    rank = rank[rows]
    order = _by_rank_then_time(rank, ts[rows])
    rows, rank, seen = rows[order], rank[order], seen[order]
    conn_key = (np.cumsum(heads) - 1) * (count + 1) + np.searchsorted(opened, syn, "right")
    conn = np.searchsorted(conn_key, rank * (count + 1) + seen, "right") - 1  # ascending too
    return rows, np.maximum(conn, first[rank]).astype(np.int64)


_RADIX = 16  # numpy sorts 16-bit integers stably by radix, in linear time


def _by_rank_then_time(rank: I64, ts: I64) -> I64:
    """The order of rows by (rank, time). A capture is written in time order (nearly always
    exactly): then a stable sort by rank keeps time order within each rank, done as two
    linear-time radix passes over 16-bit halves instead of a comparison sort."""
    if len(ts) and not bool((ts[1:] >= ts[:-1]).all()):
        by_time: I64 = np.lexsort((ts, rank))
        return by_time
    low = (rank & 0xFFFF).astype(np.uint16)
    order = np.argsort(low, kind="stable")
    for shift in range(_RADIX, int(rank.max(initial=0)).bit_length(), _RADIX):
        part = ((rank[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(part, kind="stable")]
    result: I64 = order.astype(np.int64)
    return result


def _retransmitted(conn: I64, c2s: Mask, seq: I64, length: I64) -> Mask:
    """Segments (sorted by connection, time) whose bytes were all sent before in their
    direction from the same sequence number: a retransmission repeats its start. A segment that
    fills a hole left by reordering has a start of its own and is kept."""
    again = np.zeros(len(conn), dtype=bool)
    for direction in (True, False):
        idx = np.flatnonzero(c2s == direction)
        group = conn[idx]
        heads = _group_heads(group)
        first_seq = seq[idx][np.flatnonzero(heads)][np.cumsum(heads) - 1]
        rel = (seq[idx] - first_seq) % 2**32
        reach = group * 2**33 + rel + length[idx]
        covered = reach <= np.r_[-1, np.maximum.accumulate(reach)[:-1]]
        if not covered.any():
            continue
        codes, _ = pd.factorize(group * 2**33 + rel)  # numbered in order of first appearance
        seen = codes <= np.r_[-1, np.maximum.accumulate(codes)[:-1]]
        again[idx] = covered & seen
    return again


G = TypeVar("G", bound=np.generic)


def _spread(count: int, rows: I64, values: npt.NDArray[G]) -> npt.NDArray[G]:
    """``values`` of ``rows`` placed in an array of ``count`` (zero, False elsewhere)."""
    out = np.zeros(count, dtype=values.dtype)
    out[rows] = values
    return out


@dataclass(frozen=True)
class _Lines:
    """Start lines per payload prefix entry: request lines read from the client's segments,
    status lines from the server's, TLS records from the client's. Methods and targets are
    codes into ``methods`` / ``targets``."""

    decided: Mask
    request: Mask
    cut: Mask
    method: I64
    methods: list[str]
    target: I64
    targets: list[str]
    status_line: Mask
    final_status: Mask  # a status line of a final response (not 1xx but 101)
    status: I64
    tls: Mask
    captured: I64

    @classmethod
    def of(cls, packets: pd.DataFrame, payloads: PayloadPrefixes, data: _DataSegments) -> _Lines:
        captured = payloads.captured
        count = len(captured)
        decides = decided(captured, packets["payload_len"].to_numpy(np.int64)[payloads.rows])
        # entries in capture order: the payloads are then read front to back, not at random
        from_client = _spread(count, data.entry, data.c2s)
        from_server = _spread(count, data.entry, ~data.c2s)
        client, server = np.flatnonzero(from_client), np.flatnonzero(from_server)
        requests = request_lines(payloads, client)
        found, status = status_lines(payloads, server)
        status = _spread(count, server, status)
        return cls(
            decided=decides,
            request=_spread(count, client, requests.found) & decides,  # "GET /a H": any text
            cut=_spread(count, client, requests.target_cut),
            method=_spread(count, client, requests.method),
            methods=requests.methods,
            target=_spread(count, client, requests.target),
            targets=requests.targets,
            status_line=_spread(count, server, found),
            final_status=_spread(count, server, found) & ((status >= 200) | (status == 101)),
            status=status,
            tls=_spread(count, client, requests.tls),
            captured=captured,
        )


def _group_heads(conn: I64) -> Mask:
    """Rows that begin a run of equal values."""
    heads: Mask = np.r_[True, conn[1:] != conn[:-1]] if len(conn) else np.zeros(0, dtype=bool)
    return heads


def _rank_in_group(conn: I64) -> I64:
    """0-based position of each row within its run of equal ``conn`` values."""
    heads = np.flatnonzero(_group_heads(conn))
    ranks: I64 = np.arange(len(conn)) - np.repeat(heads, np.diff(np.r_[heads, len(conn)]))
    return ranks


def _payload_kinds(data: _DataSegments, lines: _Lines, count: int) -> I64:
    """Per connection, a code into PayloadKind: request lines seen, else what its client's
    first captured bytes are, else whether it sent data at all."""
    entry, c2s = data.entry, data.c2s

    def any_per_conn(mask: Mask) -> Mask:
        return np.bincount(data.conn[mask], minlength=count) > 0

    with_bytes = np.flatnonzero(c2s & (lines.captured[entry] > 0))
    first = with_bytes[_group_heads(data.conn[with_bytes])]
    tls = np.zeros(count, dtype=bool)
    tls[data.conn[first]] = lines.tls[entry[first]]
    sent = any_per_conn(c2s)
    position = _KINDS.index
    kinds: I64 = np.select(
        [
            any_per_conn(c2s & lines.request[entry]),
            tls,
            sent & ~any_per_conn(c2s & lines.decided[entry]),
            sent,
        ],
        [
            position(PayloadKind.HTTP1),
            position(PayloadKind.TLS),
            position(PayloadKind.TRUNCATED),
            position(PayloadKind.NOT_HTTP1),
        ],
        default=position(PayloadKind.NONE),
    )
    return kinds


def _turns(data: _DataSegments) -> Mask:
    """Segments sent right after the other side's (or first on their connection)."""
    flipped = np.r_[True, data.c2s[1:] != data.c2s[:-1]] if len(data.c2s) else np.zeros(0, bool)
    turn: Mask = flipped | _group_heads(data.conn)
    return turn


@dataclass(frozen=True)
class _Answers:
    matched: Mask
    first: I64  # data row of the response's status line (valid where matched)
    last: I64  # data row of its last server segment


@dataclass(frozen=True)
class _Requests:
    """The request starts of HTTP/1 connections: positions in the data segments."""

    rows: I64
    conn: I64
    seq: I64  # 0-based position on its connection

    @classmethod
    def of(cls, data: _DataSegments, lines: _Lines, kinds: I64) -> _Requests:
        http = (kinds == _KINDS.index(PayloadKind.HTTP1))[data.conn]
        undecided_turn = ~lines.decided[data.entry] & _turns(data)
        rows = np.flatnonzero(data.c2s & http & (lines.request[data.entry] | undecided_turn))
        conn = data.conn[rows]
        return cls(rows, conn, _rank_in_group(conn))

    def answered(self, data: _DataSegments, lines: _Lines) -> _Answers:
        """The response of each request: the k-th on a connection answers the k-th request;
        it spans the server's data from its status line to the next one."""
        first_request = np.full(int(data.conn.max(initial=-1)) + 1, _NONE, dtype=np.int64)
        heads = _group_heads(self.conn)
        first_request[self.conn[heads]] = data.ts[self.rows[heads]]
        server = np.flatnonzero(~data.c2s & (data.ts > first_request[data.conn]))
        entry = data.entry[server]
        undecided_turn = ~lines.decided[entry] & _turns(data)[server]
        begins = lines.status_line[entry] | undecided_turn  # 1xx too: it ends what came before
        group = np.cumsum(begins) - 1
        starts = server[begins]
        inside = group >= 0
        inside[inside] = data.conn[server[inside]] == data.conn[starts[group[inside]]]
        last = starts.copy()
        last[group[inside]] = server[inside]  # rows ascend: the last write per group wins
        final = (lines.final_status[entry] | undecided_turn)[begins]  # answers, not 1xx
        starts, last = starts[final], last[final]
        response_conn = data.conn[starts]
        keys = response_conn * 2**32 + _rank_in_group(response_conn)
        wanted = self.conn * 2**32 + self.seq
        if not len(keys):
            none = np.zeros(len(wanted), dtype=np.int64)
            return _Answers(np.zeros(len(wanted), dtype=bool), none, none)
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return _Answers(keys[at] == wanted, starts[at], last[at])


@dataclass(frozen=True)
class _Columns:
    """Rows of the table as integer arrays (times with _NONE for NA, texts as codes)."""

    conn: I64
    start: I64
    connect: I64
    first_byte: I64
    end: I64
    conn_new: Mask
    conn_seq: I64
    keepalive: Mask
    method: I64  # into ``methods``
    path: I64  # into ``paths``
    status: I64  # 0: none
    error: I64  # into ErrorKind
    detail: I64  # into _DETAILS, -1: NA
    kind: I64  # into PayloadKind
    methods: list[str]
    paths: list[str]

    @staticmethod
    def concat(first: _Columns, second: _Columns) -> _Columns:
        """Both sets of rows; the second's texts are renumbered after the first's."""
        arrays = {}
        for field in fields(_Columns):
            a, b = getattr(first, field.name), getattr(second, field.name)
            if field.name in ("methods", "paths"):
                continue
            if field.name in ("method", "path"):
                b = b + len(getattr(first, field.name + "s"))
            arrays[field.name] = np.concatenate([a, b])
        return _Columns(
            **arrays, methods=first.methods + second.methods, paths=first.paths + second.paths
        )

    def take(self, order: I64) -> _Columns:
        arrays = {f.name: getattr(self, f.name) for f in fields(_Columns)}
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                arrays[name] = value[order]
        return _Columns(**arrays)


def _unanswered(conns: _Conns, conn: I64, sent: I64) -> tuple[I64, I64]:
    """Error codes (into ErrorKind) and end times of requests left without a response: what
    closed the connection first, the server (RST, else FIN) or the client (it gave up)."""
    times = conns.times
    client_close = np.minimum(times["client_fin_ns"], times["client_rst_ns"])[conn]
    server_rst, server_fin = times["server_rst_ns"][conn], times["server_fin_ns"][conn]
    reset = server_rst < client_close
    eof = ~reset & (server_fin < client_close)
    gave_up = ~reset & ~eof & (client_close < _NONE)
    kinds = [ErrorKind.RESET, ErrorKind.EOF, ErrorKind.READ_TIMEOUT]
    error: I64 = np.select(
        [reset, eof, gave_up], [_ERRORS.index(k) for k in kinds], _ERRORS.index(ErrorKind.OTHER)
    )
    closed = np.select([reset, eof, gave_up], [server_rst, server_fin, client_close], _NONE)
    end = np.where(closed < _NONE, closed, times["end_ns"][conn])
    return error, np.maximum(end, sent)


_DETAIL_OF_ERROR = np.array(
    [list(_NO_ANSWER).index(e) if e in _NO_ANSWER else -1 for e in ErrorKind]
)


def _request_columns(
    requests: _Requests,
    answers: _Answers,
    conns: _Conns,
    lines: _Lines,
    data: _DataSegments,
) -> _Columns:
    """One row per request start of the HTTP/1 connections."""
    conn, rows, times = requests.conn, requests.rows, conns.times
    sent = data.ts[rows]
    opened = (requests.seq == 0) & (conns.numbers["syn_count"][conn] > 0)
    established = np.where(  # the client's ACK: when its connect() returned
        times["established_ns"] < _NONE, times["established_ns"], times["synack_ns"]
    )[conn]
    status = np.where(answers.matched, lines.status[data.entry[answers.first]], 0)
    failure, failed_end = _unanswered(conns, conn, sent)
    error = np.where(
        answers.matched,
        np.select(
            [status >= 500, status >= 400],
            [_ERRORS.index(ErrorKind.HTTP_5XX), _ERRORS.index(ErrorKind.HTTP_4XX)],
            _ERRORS.index(ErrorKind.OK),
        ),
        failure,
    )
    first_byte = np.where(answers.matched, data.ts[answers.first], _NONE)
    entry = data.entry[rows]
    # a start told by turn-taking alone has no line: its method and target are empty
    lined = lines.request[entry]
    no_text = len(lines.methods), len(lines.targets)
    return _Columns(
        conn=conn,
        start=np.where(opened, times["syn_ns"][conn], sent),
        connect=np.where(opened, established, _NONE),
        first_byte=first_byte,
        end=np.where(answers.matched, data.ts[answers.last], failed_end),
        conn_new=opened,
        conn_seq=requests.seq + 1,
        keepalive=(np.bincount(conn, minlength=len(conns)) > 1)[conn],
        method=np.where(lined, lines.method[entry], no_text[0]),
        path=np.where(lined, lines.target[entry], no_text[1]),
        status=status,
        error=error,
        detail=np.where(answers.matched, -1, _DETAIL_OF_ERROR[failure]),
        kind=np.full(len(conn), _KINDS.index(PayloadKind.HTTP1)),
        methods=[*lines.methods, ""],
        paths=[*lines.targets, ""],
    )


def _connection_errors(conns: _Conns, sent: Mask) -> I64:
    """Per connection, the error (into ErrorKind) its outcome stands for, -1 for none: a server
    that answered with data counts as ``ok`` unless it reset the connection; one that sent
    nothing failed by how the connection ended, or the client gave up waiting."""
    outcome = conns.outcome
    by_outcome = np.full(len(_OUTCOMES), -1)
    for o, e in _FAILED_CONNECTION.items():
        by_outcome[_OUTCOMES.index(o)] = _ERRORS.index(e)
    error = by_outcome[outcome]
    answered = conns.times["first_s2c_data_ns"] < _NONE
    reset = outcome == _OUTCOMES.index(ConnectionOutcome.RESET_BY_SERVER)
    error = np.where(answered & ~reset, _ERRORS.index(ErrorKind.OK), error)
    client_closed = np.isin(
        outcome,
        [
            _OUTCOMES.index(ConnectionOutcome.CLOSED_BY_CLIENT),
            _OUTCOMES.index(ConnectionOutcome.RESET_BY_CLIENT),
        ],
    )
    error = np.where(
        (error < 0) & sent & client_closed, _ERRORS.index(ErrorKind.READ_TIMEOUT), error
    )
    codes: I64 = np.where((error < 0) & sent, _ERRORS.index(ErrorKind.OTHER), error)
    return codes


def _connection_columns(conns: _Conns, kinds: I64, data: _DataSegments) -> tuple[_Columns, int]:
    """One row per connection without request lines (its outcome stands for its requests),
    and how many connections carried no request at all (opened and closed by the client)."""
    sent = np.bincount(data.conn[data.c2s], minlength=len(conns)) > 0
    error = _connection_errors(conns, sent)
    without = int(((kinds == _KINDS.index(PayloadKind.NONE)) & (error < 0)).sum())
    conn = np.flatnonzero((kinds != _KINDS.index(PayloadKind.HTTP1)) & (error >= 0))
    times = conns.times
    opened = conns.numbers["syn_count"][conn] > 0
    outcome = conns.outcome[conn]
    none = np.zeros(len(conn), dtype=np.int64)
    columns = _Columns(
        conn=conn,
        start=times["syn_ns"][conn],
        connect=np.where(opened, times["established_ns"][conn], _NONE),
        first_byte=times["first_s2c_data_ns"][conn],
        end=times["end_ns"][conn],
        conn_new=opened,
        conn_seq=none + 1,
        keepalive=np.zeros(len(conn), dtype=bool),
        method=none,
        path=none,
        status=none,
        error=error[conn],
        detail=len(_NO_ANSWER) + kinds[conn] * len(_OUTCOMES) + outcome,
        kind=kinds[conn],
        methods=[""],
        paths=[""],
    )
    return columns, without


def _nullable(values: I64, missing: Mask) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(np.where(missing, 0, values), missing)


def _no_text(count: int) -> pd.Series:
    """A string column of NA only (what packets cannot tell)."""
    return pd.Series(pd.array(pa.nulls(count, pa.large_string()), dtype="str"))


def _frame(columns: _Columns, conns: _Conns) -> pd.DataFrame:
    """The REQUESTS table, ordered by start (then connection and position), numbered."""
    c = columns.take(np.argsort(columns.start, kind="stable"))
    end = np.maximum(c.end, c.start)
    count = len(c.conn)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(count, dtype=np.int64),
            "user_kind": text_column(c.keepalive.astype(np.int64), ["new-connection", "keepalive"]),
            "scheduled_ns": c.start,
            "start_ns": c.start,
            # start ≤ connect, first byte ≤ end, as the table requires
            "connect_ns": _nullable(np.clip(c.connect, c.start, end), c.connect == _NONE),
            "first_byte_ns": _nullable(np.clip(c.first_byte, c.start, end), c.first_byte == _NONE),
            "end_ns": end,
            "local_ip": text_column(conns.client_ip[c.conn], conns.ips),
            "local_port": pd.array(conns.numbers["client_port"][c.conn], "Int64"),
            "remote_ip": text_column(conns.server_ip[c.conn], conns.ips),
            "remote_port": conns.numbers["server_port"][c.conn],
            "conn_id": conns.numbers["conn_key"][c.conn],
            "conn_new": c.conn_new,
            "conn_seq": c.conn_seq,
            "method": text_column(c.method, c.methods),
            "path": text_column(c.path, c.paths),
            "status_code": _nullable(c.status, c.status == 0),
            "error_kind": text_column(c.error, [e.value for e in _ERRORS]),
            "error_detail": text_column(c.detail, _DETAILS),
            "pod": _no_text(count),
            "pod_version": _no_text(count),
            "payload_kind": text_column(c.kind, [k.value for k in _KINDS]),
        },
        copy=False,  # no copy into one 2-D block per dtype
    )
    return check_frame(frame, REQUESTS, "requests_from_packets")
