"""Requests rebuilt from packets: start lines, keep-alive, errors, truncation, TLS, a real capture,
the trace builder's runs, and the reconciliation with a request log."""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from analyzer.connections import tcp_connections
from analyzer.errors import TraceError
from analyzer.pcap_writer import write_pcap
from analyzer.readers.http1 import request_lines, status_lines
from analyzer.readers.packet_requests import PREFIX_BYTES, requests_from_packets
from analyzer.readers.pcap import PayloadPrefixes, read_pcap, read_pcap_payloads
from analyzer.readers.requests import check_requests, read_requests
from analyzer.schema import REQUESTS, check_frame
from analyzer.tracebuilder.build import build_run
from tests.analyzer.test_pcap_tcpdump import _closed_port, wait_until_capturing, wait_until_flushed
from tests.conftest import require
from tests.servers import serving

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CLIENT, SERVER, PORT = "10.0.0.2", "203.0.113.10", 80
T0_NS = 1_790_000_000_000_000_000


# --------------------------------------------------------------------------------------------
# start lines, on byte matrices


def prefixes(lines: list[bytes], width: int = 32) -> PayloadPrefixes:
    head = np.zeros((len(lines), width), dtype=np.uint8)
    captured = np.array([min(len(line), width) for line in lines], dtype=np.int64)
    for row, line in enumerate(lines):
        head[row, : captured[row]] = np.frombuffer(line[:width], dtype=np.uint8)
    return PayloadPrefixes.from_matrix(head, captured)


def test_request_lines_are_found_with_their_method_and_target() -> None:
    lines = [
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"POST /api/v1?x=1 HTTP/1.0\r\n",
        b"VERSION-CONTROL /a HTTP/1.1\r\n",
        b"GET /a/very/long/path/cut/by/the/snaplen",
        b"GET / HTTP/1",  # cut inside the version: what is there matches
    ]
    found = request_lines(prefixes(lines))
    assert found.found.all()
    methods = [found.methods[m] for m in found.method]
    assert methods == ["GET", "POST", "VERSION-CONTROL", "GET", "GET"]
    assert [found.targets[t] for t in found.target] == [
        "/",
        "/api/v1?x=1",
        "/a",
        lines[3][4:32].decode(),  # as much as the 32 bytes at hand hold
        "/",
    ]
    assert found.target_cut.tolist() == [False, False, False, True, False]


def test_what_is_not_a_request_line_is_refused() -> None:
    lines = [
        b"get / HTTP/1.1\r\n",  # methods are case-sensitive
        b"GET  / HTTP/1.1\r\n",  # empty target
        b"GET /a\x00b HTTP/1.1\r\n",  # a control byte in the target
        b"GET /\xc3\xa9 HTTP/1.1\r\n",  # non-ASCII
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTX/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"hello world, a body",
        b"PRI * HTTP/2.0\r\n\r\nSM",
        b"GET",
        b"",
    ]
    assert not request_lines(prefixes(lines)).found.any()


def test_status_lines_and_tls_records() -> None:
    lines = [
        b"HTTP/1.1 503 Service Unavailable\r\n",
        b"HTTP/1.0 200\r\n",
        b"HTTP/1.1 404",  # the captured bytes end after the code
        b"HTTP/1.1 99 x\r\n",
        b"HTTP/1.1 600 x\r\n",
        b"HTTP/2 200\r\n",
        b"http/1.1 200 OK\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ]
    payloads = prefixes(lines)
    found, code = status_lines(payloads)
    assert found.tolist() == [True, True, True, False, False, False, False, False]
    assert code[:3].tolist() == [503, 200, 404]
    assert request_lines(payloads).tls.tolist() == [False] * 7 + [True]
    # a subset of the entries, as callers ask for one direction's segments
    assert status_lines(payloads, np.array([7, 0]))[1].tolist() == [0, 503]


# --------------------------------------------------------------------------------------------
# handmade conversations, written as pcap files


@dataclass
class Segment:
    ms: float
    client: bool
    flags: int
    payload: bytes = b""
    resend: bool = False  # the same bytes again, from the same sequence number


def handshake(ms: float) -> list[Segment]:
    return [
        Segment(ms, True, SYN),
        Segment(ms + 0.1, False, SYN | ACK),
        Segment(ms + 0.2, True, ACK),
    ]


def request(ms: float, path: str = "/", method: str = "GET") -> Segment:
    return Segment(ms, True, PSH | ACK, f"{method} {path} HTTP/1.1\r\nHost: demo\r\n\r\n".encode())


def response(ms: float, status: int = 200, body: bytes = b"hello") -> Segment:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    return Segment(ms, False, PSH | ACK, head + body)


def client_close(ms: float) -> list[Segment]:
    return [
        Segment(ms, True, FIN | ACK),
        Segment(ms + 0.1, False, FIN | ACK),
        Segment(ms + 0.2, True, ACK),
    ]


def conversation(port: int, segments: list[Segment], t0_ms: float = 0.0) -> pd.DataFrame:
    """PACKETS rows (plus payload bytes) of one connection, with consistent seq/ack."""
    sent = {True: 1000, False: 900_000}
    rows = []
    for s in segments:
        if s.resend:
            sent[s.client] -= len(s.payload) + (1 if s.flags & (SYN | FIN) else 0)
        src, dst = (CLIENT, SERVER) if s.client else (SERVER, CLIENT)
        rows.append(
            {
                "ts_ns": T0_NS + int((t0_ms + s.ms) * 1e6),
                "src": src,
                "dst": dst,
                "sport": port if s.client else PORT,
                "dport": PORT if s.client else port,
                "flags": s.flags,
                "seq": sent[s.client],
                "ack": sent[not s.client] if s.flags & ACK else 0,
                "payload_len": len(s.payload),
                "payload": s.payload or None,
                "ip_version": 4,
            }
        )
        sent[s.client] += len(s.payload) + (1 if s.flags & (SYN | FIN) else 0)
    return pd.DataFrame(rows)


def rebuild(tmp_path: Path, *conversations: pd.DataFrame, snaplen: int = 262144) -> pd.DataFrame:
    frame = pd.concat(conversations, ignore_index=True).sort_values("ts_ns", kind="stable")
    path = tmp_path / "client.pcap"
    write_pcap(path, frame, snaplen=snaplen)
    packets, payloads = read_pcap_payloads(path, PREFIX_BYTES)
    rows, notes = requests_from_packets(packets, tcp_connections(packets, {PORT}), payloads)
    check_frame(rows, REQUESTS, "test")
    assert not [p for p in check_requests(rows) if p.severity == "error"]
    rows.attrs["notes"] = notes
    return rows


def on_port(rows: pd.DataFrame, port: int) -> pd.DataFrame:
    return rows[rows["local_port"] == port].sort_values("conn_seq").reset_index(drop=True)


def test_keepalive_requests_are_matched_to_their_responses_in_order(tmp_path: Path) -> None:
    keepalive = [
        *handshake(0),
        request(1, "/a"),
        response(3, 200),
        request(10, "/b"),
        response(12, 404),
        request(20, "/c", "POST"),
        Segment(21, False, PSH | ACK, b"HTTP/1.1 100 Continue\r\n\r\n"),  # interim: not an answer
        response(25, 503, b"x" * 100),
        Segment(26, False, PSH | ACK, b"more body bytes"),  # the response goes on
        *client_close(40),
    ]
    rows = rebuild(tmp_path, conversation(40001, keepalive))
    got = on_port(rows, 40001)
    assert got["path"].tolist() == ["/a", "/b", "/c"]
    assert got["method"].tolist() == ["GET", "GET", "POST"]
    assert got["status_code"].tolist() == [200, 404, 503]
    assert got["error_kind"].tolist() == ["ok", "http-4xx", "http-5xx"]
    assert got["conn_new"].tolist() == [True, False, False]
    assert (got["user_kind"] == "keepalive").all()
    ms = (got[["start_ns", "first_byte_ns", "end_ns"]] - T0_NS) / 1e6
    assert ms.iloc[0].tolist() == [0, 3, 3]  # a new connection's request starts at its SYN
    assert ms.iloc[1].tolist() == [10, 12, 12]
    assert ms.iloc[2].tolist() == [20, 25, 26]  # ends with the server's last data
    assert got["connect_ns"].iloc[0] == T0_NS + 200_000  # the client's ACK
    assert got["connect_ns"].iloc[1:].isna().all()


def again(segment: Segment, ms: float) -> Segment:
    """``segment``'s bytes sent again at ``ms`` (a retransmission)."""
    return Segment(ms, segment.client, segment.flags, segment.payload, resend=True)


def test_pipelined_requests_and_retransmissions(tmp_path: Path) -> None:
    second = request(1.5, "/two")
    pipelined = [
        *handshake(0),
        request(1, "/one"),
        second,
        again(second, 2.6),  # a copy more than a loopback duplicate's 1 ms later
        response(3, 200),
        response(4, 201),
        *client_close(10),
    ]
    lost, answer = request(1, "/x"), response(202, 200)
    retransmitted = [*handshake(0), lost, again(lost, 201), answer, again(answer, 205)]
    rows = rebuild(tmp_path, conversation(40002, pipelined), conversation(40003, retransmitted))
    assert rows.attrs["notes"].retransmissions == 3
    two = on_port(rows, 40002)
    assert two["path"].tolist() == ["/one", "/two"]
    assert two["status_code"].tolist() == [200, 201]
    one = on_port(rows, 40003)
    assert one["status_code"].tolist() == [200]
    assert one["end_ns"].tolist() == [T0_NS + 202_000_000]  # the copy is not new data


@pytest.mark.parametrize(
    ("ending", "kind", "end_ms"),
    [
        ([Segment(5, False, RST | ACK)], "reset", 5),
        ([Segment(5, False, FIN | ACK), Segment(5.1, True, FIN | ACK)], "eof", 5),
        # the server closed the idle connection; the request crossed its FIN and met a RST
        ([Segment(0.5, False, FIN | ACK), Segment(6, False, RST)], "reset", 6),
        ([Segment(30, True, FIN | ACK), Segment(30.1, False, FIN | ACK)], "read-timeout", 30),
        ([], "other", 1),
    ],
)
def test_a_request_without_response_fails_by_what_closed_it(
    tmp_path: Path, ending: list[Segment], kind: str, end_ms: float
) -> None:
    segments = [*handshake(0), request(1, "/first"), response(1.2), request(1.3, "/lost"), *ending]
    segments.sort(key=lambda s: s.ms)
    got = on_port(rebuild(tmp_path, conversation(40004, segments)), 40004)
    assert got["error_kind"].tolist() == ["ok", kind]
    lost = got.iloc[1]
    assert pd.isna(lost["status_code"]) and pd.isna(lost["first_byte_ns"])
    assert lost["end_ns"] == T0_NS + int(max(end_ms, 1.3) * 1e6)
    assert isinstance(lost["error_detail"], str) and lost["error_detail"].startswith("no response")


def test_failed_connections_and_idle_ones(tmp_path: Path) -> None:
    refused = [Segment(0, True, SYN), Segment(0.1, False, RST | ACK)]
    timed_out = [Segment(0, True, SYN), Segment(1000, True, SYN, resend=True)]
    timed_out.append(Segment(3000, True, SYN, resend=True))
    reset_at_once = [*handshake(0), Segment(0.5, False, RST | ACK)]
    idle = [*handshake(0), *client_close(5)]  # a pre-connect the client never used
    rows = rebuild(
        tmp_path,
        conversation(40010, refused),
        conversation(40011, timed_out),
        conversation(40012, reset_at_once),
        conversation(40013, idle),
    )
    kinds = rows.set_index("local_port")["error_kind"].to_dict()
    assert kinds == {40010: "refused", 40011: "connect-timeout", 40012: "reset"}
    assert (rows["method"] == "").all() and rows["status_code"].isna().all()
    assert rows.attrs["notes"].without_request == 1
    timeout = rows[rows["local_port"] == 40011].iloc[0]
    assert timeout["end_ns"] == T0_NS + 3000 * 1_000_000


def test_truncated_payloads_give_connection_outcomes(tmp_path: Path) -> None:
    answered = [
        *handshake(0),
        request(1, "/a"),
        response(2),
        request(3, "/b"),
        response(4),
        *client_close(5),
    ]
    unanswered = [*handshake(0), request(1, "/a"), Segment(9, False, RST | ACK)]
    # 54 bytes: Ethernet + IPv4 + TCP headers, no payload byte
    rows = rebuild(
        tmp_path, conversation(40020, answered), conversation(40021, unanswered), snaplen=54
    )
    assert rows.set_index("local_port")["error_kind"].to_dict() == {40020: "ok", 40021: "reset"}
    assert (rows["payload_kind"] == "truncated").all()
    assert rows.attrs["notes"].connection_level["truncated"] == 2
    assert rows.attrs["notes"].from_request_lines == 0
    assert "truncated" in " ".join(rows.attrs["notes"].sentences())


def test_a_cut_target_is_kept_and_counted(tmp_path: Path) -> None:
    long_path = "/" + "a" * 300
    segments = [*handshake(0), request(1, long_path), response(2), *client_close(3)]
    rows = rebuild(tmp_path, conversation(40022, segments), snaplen=14 + 40 + 100)
    got = on_port(rows, 40022)
    assert got["status_code"].tolist() == [200]
    # 100 payload bytes captured: "GET " and the target's first 96 bytes
    assert got["path"].iloc[0] == long_path[:96]
    assert rows.attrs["notes"].targets_cut == 1


def test_tls_connections_are_connection_level(tmp_path: Path) -> None:
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200)
    server_hello = b"\x16\x03\x03\x00\x7a\x02" + bytes(120)
    answered = [
        *handshake(0),
        Segment(1, True, PSH | ACK, hello),
        Segment(2, False, PSH | ACK, server_hello),
        *client_close(9),
    ]
    refused_after_hello = [
        *handshake(0),
        Segment(1, True, PSH | ACK, hello),
        Segment(2, False, RST | ACK),
    ]
    rows = rebuild(
        tmp_path, conversation(40030, answered), conversation(40031, refused_after_hello)
    )
    assert rows.set_index("local_port")["error_kind"].to_dict() == {40030: "ok", 40031: "reset"}
    assert (rows["payload_kind"] == "tls").all()
    assert rows.attrs["notes"].connection_level["tls"] == 2
    assert rows["error_detail"].str.startswith("connection outcome only (tls)").all()


def test_capture_damage_keeps_the_payloads_read_before_it(tmp_path: Path) -> None:
    segments = [*handshake(0), request(1), response(2), *client_close(3)]
    path = tmp_path / "c.pcap"
    write_pcap(path, conversation(40040, segments))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(TraceError) as error:
        read_pcap_payloads(path, PREFIX_BYTES)
    packets, payloads = error.value.kept
    assert len(packets) == len(segments) - 1
    assert (payloads.rows < len(packets)).all()
    kept, _ = read_pcap_payloads(path, PREFIX_BYTES, on_damage="keep")
    assert "damage" in kept.attrs
    assert read_pcap(path, on_damage="keep").equals(kept)


def test_payloads_stay_aligned_when_loopback_copies_are_dropped(tmp_path: Path) -> None:
    segments = [*handshake(0), request(1, "/dup"), response(2), *client_close(3)]
    frame = conversation(40041, segments)
    doubled = frame.loc[np.repeat(np.arange(len(frame)), 2)].reset_index(drop=True)
    path = tmp_path / "lo.pcap"
    write_pcap(path, doubled)
    packets, payloads = read_pcap_payloads(path, PREFIX_BYTES)
    assert packets.attrs["duplicates_dropped"] == len(frame)
    assert packets["payload_len"].to_numpy()[payloads.rows].tolist() == [
        len(s.payload) for s in segments if s.payload
    ]
    first = bytes(payloads.head[0, : payloads.captured[0]])
    assert first == request(0, "/dup").payload[:PREFIX_BYTES]


# --------------------------------------------------------------------------------------------
# the trace builder's runs: every request rebuilt as the load generator recorded it


@pytest.mark.parametrize("recipe", ["mixed", "keepalive-race"])
def test_built_runs_are_rebuilt_request_by_request(tmp_path: Path, recipe: str) -> None:
    built = build_run(tmp_path / recipe, recipe, seed=5, rate=150, duration_s=20)
    packets, payloads = read_pcap_payloads(built.paths.packets_dir / "client.pcap", PREFIX_BYTES)
    rows, notes = requests_from_packets(packets, tcp_connections(packets, {PORT}), payloads)
    log = read_requests(built.paths.requests)
    joined = log.merge(rows, on=["local_port", "start_ns"], suffixes=("_log", ""), how="outer")
    assert len(joined) == len(log) == len(rows)  # the same requests, at the same starts
    assert (joined["status_code_log"].fillna(0) == joined["status_code"].fillna(0)).all()
    assert (joined["conn_seq_log"] == joined["conn_seq"]).all()
    lined = joined["payload_kind"] == "http1"
    assert (joined["path_log"][lined] == joined["path"][lined]).all()
    assert notes.from_request_lines == int(lined.sum())
    # a request that crossed the server's FIN met its RST: packets say reset, the client may
    # have read the FIN first and said eof; every other kind is the same
    same = joined["error_kind_log"] == joined["error_kind"]
    race = (joined["error_kind_log"] == "eof") & (joined["error_kind"] == "reset")
    assert (same | race).all()
    assert same.mean() > 0.95


def test_connections_to_other_servers_are_left_out(tmp_path: Path) -> None:
    built = build_run(tmp_path / "run", "mixed", seed=1, rate=50, duration_s=10)
    packets, payloads = read_pcap_payloads(built.paths.packets_dir / "client.pcap", PREFIX_BYTES)
    connections = tcp_connections(packets, {PORT})
    kept = connections[connections["client_port"] % 2 == 0]
    rows, notes = requests_from_packets(packets, kept, payloads)
    assert set(rows["conn_id"]) <= set(kept["conn_key"])
    assert notes.connections == len(kept)
    assert (rows["local_port"] % 2 == 0).all()


# --------------------------------------------------------------------------------------------
# a real capture: Python's http.server on loopback, captured by tcpdump


class _Outcomes(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    STATUS: ClassVar[dict[str, int]] = {"/ok": 200, "/missing": 404, "/fail": 503}

    def do_GET(self) -> None:
        if self.path == "/reset":  # abort: SO_LINGER 0 turns close into RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if self.path == "/eof":
            self.close_connection = True
            return
        body = b"x" * 40
        self.send_response(self.STATUS[self.path])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def outcome_server() -> Iterator[int]:
    with serving(_Outcomes) as port:
        yield port


def _send(port: int, paths: list[str]) -> list[str]:
    """Requests on one connection; what the client saw for each."""
    seen = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for path in paths:
            try:
                connection.request("GET", path)
                answer = connection.getresponse()
                answer.read()
                seen.append(str(answer.status))
            except (ConnectionError, http.client.HTTPException) as error:
                seen.append(type(error).__name__)
    finally:
        connection.close()
    return seen


@pytest.mark.root
def test_a_real_tcpdump_capture_is_rebuilt(tmp_path: Path, outcome_server: int) -> None:
    require("tcpdump", root=True)
    closed, probe = _closed_port(), _closed_port()
    path = tmp_path / "real.pcap"
    ports = (outcome_server, closed, probe)
    bpf = " or ".join(f"tcp port {p}" for p in ports)
    command = ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", str(path), bpf]
    capture = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_capturing(path, probe)
        seen = _send(outcome_server, ["/ok", "/missing", "/fail", "/ok"])
        seen += _send(outcome_server, ["/reset"]) + _send(outcome_server, ["/eof"])
        with socket.socket() as refused, pytest.raises(ConnectionRefusedError):
            refused.connect(("127.0.0.1", closed))
        subprocess.run(["sleep", "0.3"], check=True)
        wait_until_flushed(path, probe)
    finally:
        capture.terminate()
        capture.wait(timeout=10)
    assert seen[:4] == ["200", "404", "503", "200"]

    packets, payloads = read_pcap_payloads(path, PREFIX_BYTES)
    connections = tcp_connections(packets, {outcome_server, closed})
    ours = connections[connections["server_port"].isin([outcome_server, closed])]
    rows, notes = requests_from_packets(packets, ours, payloads)
    assert not [p for p in check_requests(rows) if p.severity == "error"]
    got = rows.sort_values("start_ns")
    assert got["path"].tolist() == ["/ok", "/missing", "/fail", "/ok", "/reset", "/eof", ""]
    assert got["status_code"].fillna(0).tolist() == [200, 404, 503, 200, 0, 0, 0]
    assert got["error_kind"].tolist() == [
        *("ok", "http-4xx", "http-5xx", "ok"),
        *("reset", "eof", "refused"),
    ]
    assert got["conn_seq"].tolist() == [1, 2, 3, 4, 1, 1, 1]
    assert notes.from_request_lines == 6 and notes.retransmissions == 0
