"""Connections and requests of the traffic model → TCP segments, as PACKETS frames per capture.

Every segment kind (SYN and its retries, SYN-ACK, RST answer, request, response, the close
handshakes) is one vectorized mask over the connection or request table, so ten million packets
cost a few seconds. Sequence numbers are consistent per direction (SYN and FIN count one byte),
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

from dataclasses import dataclass
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


@dataclass
class _Segments:
    conn: list[I64]
    ts: list[F64]
    way: list[I64]
    flags: list[I64]
    payload: list[I64]
    message: list[I64]

    def add(
        self,
        conn: I64,
        ts: F64,
        way: int,
        flags: int,
        payload: I64 | int = 0,
        message: I64 | int = NO_MESSAGE,
    ) -> None:
        n = len(conn)
        self.conn.append(conn)
        self.ts.append(ts)
        self.way.append(np.full(n, way))
        self.flags.append(np.full(n, flags))
        self.payload.append(np.broadcast_to(np.asarray(payload, dtype=np.int64), (n,)))
        self.message.append(np.broadcast_to(np.asarray(message, dtype=np.int64), (n,)))


def _handshake_segments(seg: _Segments, c: pd.DataFrame, rtt: float) -> None:
    """SYNs (and their retries), SYN-ACK + ACK, or the RST that refused the connection."""
    row = np.arange(len(c))
    syn = c["syn"].to_numpy()
    syn_count = c["syn_count"].to_numpy()
    offsets = np.concatenate(([0.0], SYN_RETRIES_S))
    for k in range(int(syn_count.max(initial=0))):
        m = syn_count > k
        seg.add(row[m], syn[m] + offsets[k], C2S, SYN)
    answer = c["answer"].to_numpy()
    m = answer == Answer.SYNACK
    est = c["established"].to_numpy()
    seg.add(row[m], est[m] - rtt / 10, S2C, SYN | ACK)
    seg.add(row[m], est[m], C2S, ACK)
    m = (answer == Answer.RST_POD) | (answer == Answer.RST_SERVICE)
    seg.add(row[m], syn[m] + rtt, S2C, RST | ACK)


def _request_segments(
    seg: _Segments, c: pd.DataFrame, q: pd.DataFrame, rtt: float, messages: _Messages
) -> None:
    """Each request sent, and its response with the client's ACK."""
    conn_row = pd.Index(c["conn_id"]).get_indexer(q["conn_id"])
    send = q["send"].to_numpy()
    m = ~np.isnan(send)
    slow = q["slow"].to_numpy(bool)
    request_bytes = np.where(slow[m], REQUEST_BYTES[True], REQUEST_BYTES[False])
    seg.add(conn_row[m], send[m], C2S, PSH | ACK, request_bytes, messages.requests(slow[m]))
    first_byte = q["first_byte"].to_numpy()
    m = ~np.isnan(first_byte)
    status = q["status"].to_numpy()
    resp = np.where(status[m] == 503, RESPONSE_BYTES[503], RESPONSE_BYTES[200])
    seg.add(conn_row[m], first_byte[m], S2C, PSH | ACK, resp, messages.responses(status[m]))
    seg.add(conn_row[m], first_byte[m] + rtt / 10, C2S, ACK)


def _close_segments(seg: _Segments, c: pd.DataFrame, rtt: float) -> None:
    """FIN handshakes, server resets and the two race closes."""
    row = np.arange(len(c))
    close = c["close"].to_numpy()
    close_t = c["close_t"].to_numpy()
    for kind, first_way in ((Close.CLIENT_FIN, C2S), (Close.SERVER_FIN, S2C)):
        m = close == kind
        seg.add(row[m], close_t[m], first_way, FIN | ACK)
        seg.add(row[m], close_t[m] + rtt / 2, 1 - first_way, FIN | ACK)
        seg.add(row[m], close_t[m] + rtt, first_way, ACK)
    m = close == Close.SERVER_RST
    seg.add(row[m], close_t[m], S2C, RST | ACK)
    race_t = c["race_t"].to_numpy()
    m = close == Close.RACE
    seg.add(row[m], close_t[m], S2C, FIN | ACK)
    seg.add(row[m], race_t[m], S2C, RST)
    m = close == Close.RST_RACE  # abort (SO_LINGER 0), then the closed socket answers the data
    seg.add(row[m], close_t[m], S2C, RST | ACK)
    seg.add(row[m], race_t[m], S2C, RST)


def _segments(traffic: Traffic, rtt: float, messages: _Messages) -> pd.DataFrame:
    """All segments of every connection, client-side times, sorted by (connection, time)."""
    c = traffic.conns
    seg = _Segments([], [], [], [], [], [])
    _handshake_segments(seg, c, rtt)
    _request_segments(seg, c, traffic.requests, rtt, messages)
    _close_segments(seg, c, rtt)
    frame = pd.DataFrame(
        {
            "conn": np.concatenate(seg.conn),
            "ts": np.concatenate(seg.ts),
            "way": np.concatenate(seg.way),
            "flags": np.concatenate(seg.flags),
            "payload": np.concatenate(seg.payload),
            "message": np.concatenate(seg.message),
        }
    )
    frame = frame.sort_values(["conn", "ts"], kind="stable", ignore_index=True)
    _number(frame, c, seed=len(c))
    return frame


def _number(frame: pd.DataFrame, conns: pd.DataFrame, seed: int) -> None:
    """Add seq/ack: per direction, the ISN, plus one for the SYN once it is behind (its
    retransmissions repeat the ISN), plus every payload byte and FIN sent before."""
    conn = frame["conn"].to_numpy()
    way = frame["way"].to_numpy()
    flags = frame["flags"].to_numpy()
    is_syn = (flags & SYN) != 0
    used = frame["payload"].to_numpy() + ((flags & FIN) != 0)
    rng = np.random.default_rng(seed)
    isn = rng.integers(0, 2**32, size=(len(conns), 2), dtype=np.int64)
    new_conn = np.r_[True, conn[1:] != conn[:-1]]
    starts = np.flatnonzero(new_conn)
    group = np.cumsum(new_conn) - 1
    sent = []
    for w in (C2S, S2C):
        mine = np.where(way == w, used, 0)
        total = np.cumsum(mine)
        sent.append(total - (total - mine)[starts][group])  # inclusive, within the connection
    sent_c, sent_s = sent
    own = np.where(way == C2S, sent_c, sent_s) - used + ~is_syn
    other = np.where(way == C2S, sent_s, sent_c) + 1
    frame["seq"] = (isn[conn, way] + own) % 2**32
    ack = (isn[conn, 1 - way] + other) % 2**32
    frame["ack"] = np.where((flags & ACK) != 0, ack, 0)


def _captures(
    cluster: Cluster, traffic: Traffic, seg: pd.DataFrame, t0_ns: int, payloads: list[bytes]
) -> dict[str, pd.DataFrame]:
    r = cluster.recipe
    c = traffic.conns
    one_way = r.rtt_ms / 1000 / 5
    conn = seg["conn"].to_numpy()
    way = seg["way"].to_numpy()
    port = c["port"].to_numpy()[conn]
    common = {
        "flags": seg["flags"].to_numpy(),
        "seq": seg["seq"].to_numpy(),
        "ack": seg["ack"].to_numpy(),
        "payload_len": seg["payload"].to_numpy(),
        "message": seg["message"].to_numpy(),
    }
    ts = seg["ts"].to_numpy()
    addr = cluster.addresses
    common["ip_version"] = np.full(len(ts), addr.version)
    out = {
        "client": _frame(ts, way, addr.client, addr.lb, port, SERVICE_PORT, common, t0_ns, payloads)
    }
    if not r.node_captures:
        return out
    pod = c["pod"].to_numpy()[conn]
    answer = c["answer"].to_numpy()[conn]
    # a SYN the node's rules sent to a Pod is on the node's wire even when nothing answers it:
    # after the Pod's sandbox is gone the node still holds its neighbour entry and sends the
    # SYN onto the Pod bridge (the local cluster's data plane shows exactly this)
    reached = (pod >= 0) & (answer != Answer.RST_SERVICE)
    pod_node = np.array([p.node for p in cluster.pods] + [-1])[pod]
    lb_node = c["node"].to_numpy()[conn]
    shifted = ts + np.where(way == C2S, one_way, -one_way)
    pod_ips = np.array([p.ip for p in cluster.pods] + [""], dtype=object)
    node_ips = np.array([cluster.node_ip(n) for n in range(cluster.nodes)], dtype=object)
    for n in range(cluster.nodes):
        m = reached & (pod_node == n)
        if r.traffic_policy == "Local":
            source: object = addr.client
        else:  # Cluster policy: the receiving node masquerades the client
            source = node_ips[lb_node[m]]
        sub = {k: v[m] for k, v in common.items()}
        out[f"node-{n + 1}"] = _frame(
            shifted[m], way[m], source, pod_ips[pod[m]], port[m], TARGET_PORT, sub, t0_ns, payloads
        )
    return out


def _frame(
    ts: F64,
    way: I64,
    client: object,
    server: object,
    client_port: I64,
    server_port: int,
    common: dict[str, npt.NDArray[np.int64]],
    t0_ns: int,
    payloads: list[bytes],
) -> pd.DataFrame:
    c2s = way == C2S
    client_ip = np.broadcast_to(np.asarray(client, dtype=object), c2s.shape)
    server_ip = np.broadcast_to(np.asarray(server, dtype=object), c2s.shape)
    columns = {k: v for k, v in common.items() if k != "message"}
    frame = pd.DataFrame(
        {
            "ts_ns": t0_ns + np.round(ts * 1e9).astype(np.int64),
            "src": pd.Categorical(np.where(c2s, client_ip, server_ip)),
            "dst": pd.Categorical(np.where(c2s, server_ip, client_ip)),
            "sport": np.where(c2s, client_port, server_port),
            "dport": np.where(c2s, server_port, client_port),
            **columns,
            "payload": pd.Categorical.from_codes(
                common["message"], categories=pd.Index(payloads, dtype=object)
            ),
        }
    )
    return frame.sort_values("ts_ns", kind="stable", ignore_index=True)


def capture_frames(cluster: Cluster, traffic: Traffic, t0_ns: int) -> dict[str, pd.DataFrame]:
    """Capture name → packets (PACKETS columns except ``capture``, plus ``payload``: the HTTP
    message bytes of request and response segments), each sorted by time."""
    messages = _Messages(traffic.requests["status"].to_numpy())
    seg = _segments(traffic, cluster.recipe.rtt_ms / 1000, messages)
    return _captures(cluster, traffic, seg, t0_ns, messages.payloads)
