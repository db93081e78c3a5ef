"""Fuzz the requests rebuilt from packets: 10,000 mutated HTTP/1.1 conversations and 10,000
damaged captures.

Conversations (keep-alive, pipelining, a retransmission, an interim response, errors, TLS) have
their payload bytes overwritten with fragments of start lines (``HTTP/1.1 ``, ``GET ``, digits,
CR LF, a TLS record header, control and non-ASCII bytes) or random bytes, which reach every
branch of the start-line parser; fifty of them share one capture, cut by a random snap length,
so that ten thousand cost two hundred rebuilds. Whole captures are damaged the ways files get
damaged (the mutations of test_fuzz_pcap, and the same fragments written anywhere). Reading may
only raise ``TraceError`` naming a byte offset; whatever was read must become a valid REQUESTS
table that breaks no row rule (and, for the conversations, unique request ids), never
another exception.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.connections import tcp_connections
from analyzer.errors import TraceError
from analyzer.pcap_writer import write_pcap, write_pcapng
from analyzer.readers.http1 import request_lines, status_lines
from analyzer.readers.packet_requests import PREFIX_BYTES, requests_from_packets
from analyzer.readers.pcap import PayloadPrefixes, read_pcap_payloads
from analyzer.readers.requests import check_requests
from analyzer.schema import REQUESTS, check_frame
from tests.analyzer.test_fuzz_pcap import Mutation, mutations
from tests.analyzer.test_http1 import (
    PSH,
    RST,
    Segment,
    again,
    client_close,
    conversation,
    handshake,
    request,
    response,
)

CONVERSATIONS = 10_000
PER_CAPTURE = 50
CAPTURES = 10_000
BYTE_OFFSET = re.compile(r"byte \d+")
FRAGMENTS = [
    b"HTTP/1.1 ",
    b"HTTP/1.0 200",
    b"GET ",
    b"POST /",
    b" HTTP/1.",
    b"\r\n",
    b"200",
    b"999",
    b"1",
    b" ",
    b"\x16\x03",
    b"\x00",
    b"\xff" * 8,
    b"A" * 30,
]


def _conversations() -> list[list[Segment]]:
    """Keep-alive, pipelining, a retransmission, an interim response, errors and TLS."""
    second = request(1.5, "/two")
    hello = b"\x16\x03\x01\x00\x05hello"
    return [
        [
            *handshake(0),
            *(request(1, "/a"), response(2), request(3, "/b", "POST")),
            Segment(4, False, PSH | 0x10, b"HTTP/1.1 100 Continue\r\n\r\n"),
            *(response(5, 503), *client_close(9)),
        ],
        [*handshake(0), request(1, "/one"), second, again(second, 3), response(4), response(5)],
        [*handshake(0), request(1, "/lost"), Segment(2, False, RST | 0x10)],
        [*handshake(0), Segment(1, True, PSH | 0x10, hello), Segment(2, False, PSH | 0x10, hello)],
    ]


def _traffic() -> pd.DataFrame:
    frames = [conversation(41000 + i, c, t0_ms=i * 0.01) for i, c in enumerate(_conversations())]
    return pd.concat(frames, ignore_index=True).sort_values("ts_ns", kind="stable")


@cache
def base_captures() -> tuple[bytes, ...]:
    """The traffic as pcap and pcapng, whole and cut by a snap length before any whole line."""
    frame = _traffic()
    captures = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base"
        for snaplen in (262144, 14 + 40 + 8):
            write_pcap(path, frame, snaplen=snaplen)
            captures.append(path.read_bytes())
        write_pcapng(path, frame, linktype="sll2")
        captures.append(path.read_bytes())
    return tuple(captures)


@dataclass(frozen=True)
class PayloadWrite:
    """Overwrite bytes at a position with a start-line fragment (lengths stay as they were)."""

    position: int
    fragment: int

    def apply(self, data: bytearray) -> bytearray:
        if data:
            piece = FRAGMENTS[self.fragment % len(FRAGMENTS)]
            pos = self.position % len(data)
            data[pos : pos + len(piece)] = piece[: len(data) - pos]
        return data


payload_writes = st.builds(
    PayloadWrite, position=st.integers(0, 4_000), fragment=st.integers(0, len(FRAGMENTS) - 1)
)


def _check(path: Path, keep: bool) -> pd.DataFrame:
    try:
        packets, payloads = read_pcap_payloads(
            path, PREFIX_BYTES, on_damage="keep" if keep else "raise"
        )
    except TraceError as error:
        assert not keep, "on_damage='keep' must not raise for damage it located"
        assert BYTE_OFFSET.search(str(error)), str(error)
        packets, payloads = error.kept
    assert isinstance(payloads, PayloadPrefixes)
    assert len(payloads.rows) == 0 or payloads.rows.max() < len(packets)
    rows, notes = requests_from_packets(packets, tcp_connections(packets, {80}), payloads)
    check_frame(rows, REQUESTS, "fuzz")
    assert not [p for p in check_requests(rows) if p.severity == "error"]
    assert notes.requests == len(rows)
    return rows


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(
    max_examples=CAPTURES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    base=st.integers(0, 2),
    changes=st.lists(st.one_of(mutations, payload_writes), min_size=1, max_size=4),
    keep=st.booleans(),
)
def test_mutated_captures_rebuild_or_fail_located(
    tmp_path: Path, base: int, changes: list[Mutation | PayloadWrite], keep: bool
) -> None:
    data = bytearray(base_captures()[base])
    for change in changes:
        data = change.apply(data)
    path = tmp_path / "fuzz.pcap"
    path.write_bytes(bytes(data))
    _check(path, keep)


@dataclass(frozen=True)
class PayloadEdit:
    """Overwrite bytes of one payload-bearing segment (its length stays as it was)."""

    segment: int
    position: int
    piece: bytes

    def apply(self, segments: list[Segment]) -> None:
        carrying = [i for i, s in enumerate(segments) if s.payload]
        if not carrying or not self.piece:
            return
        index = carrying[self.segment % len(carrying)]
        payload = bytearray(segments[index].payload)
        pos = self.position % len(payload)
        payload[pos : pos + len(self.piece)] = self.piece
        old = segments[index]
        segments[index] = Segment(
            old.ms, old.client, old.flags, bytes(payload[: len(old.payload)]), old.resend
        )


edits = st.builds(
    PayloadEdit,
    segment=st.integers(0, 16),
    position=st.integers(0, 80),
    piece=st.one_of(st.sampled_from(FRAGMENTS), st.binary(min_size=1, max_size=8)),
)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(
    max_examples=CONVERSATIONS // PER_CAPTURE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, 3), st.lists(edits, min_size=1, max_size=3)),
        min_size=PER_CAPTURE,
        max_size=PER_CAPTURE,
    ),
    payload_bytes=st.sampled_from([0, 8, 16, 40, 100, 262144]),
)
def test_mutated_conversations_rebuild(
    tmp_path: Path, picks: list[tuple[int, list[PayloadEdit]]], payload_bytes: int
) -> None:
    bases = _conversations()
    frames = []
    for number, (base, changes) in enumerate(picks):
        segments = list(bases[base])
        for change in changes:
            change.apply(segments)
        frames.append(conversation(42000 + number, segments, t0_ms=number * 0.01))
    traffic = pd.concat(frames, ignore_index=True).sort_values("ts_ns", kind="stable")
    path = tmp_path / "conversations.pcap"
    write_pcap(path, traffic, snaplen=54 + payload_bytes)  # Ethernet + IPv4 + TCP headers first
    rows = _check(path, keep=False)
    assert set(rows["local_port"]) <= set(range(42000, 42000 + PER_CAPTURE))
    assert rows["request_id"].is_unique


def test_unmutated_bases_rebuild_every_request(tmp_path: Path) -> None:
    """The corpus starts from captures whose requests are all rebuilt (else it fuzzes nothing)."""
    for index, data in enumerate(base_captures()):
        path = tmp_path / f"base{index}.pcap"
        path.write_bytes(data)
        packets, payloads = read_pcap_payloads(path, PREFIX_BYTES)
        rows, notes = requests_from_packets(packets, tcp_connections(packets, {80}), payloads)
        if index == 1:  # the snap length cut every start line: one outcome per connection
            assert notes.connection_level == {"tls": 1, "truncated": 3, "not-http1": 0}
        else:
            assert sorted(rows["path"]) == ["", "/a", "/b", "/lost", "/one", "/two"]


@settings(max_examples=2_000, deadline=None, database=None)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.lists(st.sampled_from(FRAGMENTS), max_size=6).map(b"".join),
        ),
        min_size=1,
        max_size=8,
    ),
    width=st.integers(16, 48),
)
def test_start_line_parsers_take_any_bytes(lines: list[bytes], width: int) -> None:
    head = np.zeros((len(lines), width), dtype=np.uint8)
    captured = np.array([min(len(line), width) for line in lines], dtype=np.int64)
    for row, line in enumerate(lines):
        head[row, : captured[row]] = np.frombuffer(line[:width], dtype=np.uint8)
    payloads = PayloadPrefixes.from_matrix(head, captured)
    found = request_lines(payloads)
    for row in np.flatnonzero(found.found):
        method, target = found.methods[found.method[row]], found.targets[found.target[row]]
        assert target and lines[row].startswith(f"{method} {target}".encode())
    assert not any(found.targets[t] for t in found.target[~found.found])
    status, code = status_lines(payloads)
    assert ((code >= 100) & (code <= 599))[status].all()
