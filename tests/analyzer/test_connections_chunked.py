"""tcp_connections fed chunk by chunk gives exactly the whole table's connections.

Chunks of one packet, sizes that split captures unevenly, captures interleaved chunk by chunk,
rows shuffled inside a chunk; on trace-builder runs, on the pcap fuzz corpus, on random
packet sequences (every flag combination, port reuse, ties in time) and on real tcpdump
captures. A flow that goes back in time from one chunk to the next is refused, and the analysis
then tracks that capture again from the whole file.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer import pipeline
from analyzer.connections import (
    ConnectionTracker,
    PacketOrderError,
    number_connections,
    tcp_connections,
    tcp_connections_chunked,
)
from analyzer.readers.pcap import iter_packet_chunks, iter_pcap, read_pcap
from analyzer.rundir import RunPaths
from analyzer.schema import PACKETS, check_frame
from analyzer.tracebuilder import build_run
from tests.analyzer.handmade import make_run, tcp_pcap
from tests.analyzer.test_fuzz_pcap import base_captures
from tests.analyzer.test_pcap_tcpdump import capture_real_traffic
from tests.analyzer.test_pcap_tcpdump import http_server as http_server  # a fixture

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
SERVER_PORTS = {80, 8080}
MS = 1_000_000


def split(packets: pd.DataFrame, cuts: Sequence[int]) -> list[pd.DataFrame]:
    """``packets`` cut at the given row positions (each chunk with its own index from 0)."""
    edges = [0, *sorted({cut for cut in cuts if 0 < cut < len(packets)}), len(packets)]
    return [packets.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(edges)]


def every(packets: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return split(packets, range(0, len(packets), size))


def assert_same_connections(chunks: Sequence[pd.DataFrame], whole: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(tcp_connections_chunked(chunks, SERVER_PORTS), whole)


def interleaved(captures: list[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    """One chunk of each capture in turn: flows never span captures, so order across them is
    free."""
    pieces = [every(capture, size) for capture in captures]
    for round_ in range(max(len(p) for p in pieces)):
        yield from (p[round_] for p in pieces if round_ < len(p))


@pytest.fixture(scope="module")
def built_captures(tmp_path_factory: pytest.TempPathFactory) -> list[pd.DataFrame]:
    """A mixed rollout (four causes, keep-alive and new connections, node captures) read back
    capture by capture."""
    built = build_run(tmp_path_factory.mktemp("built") / "mixed", "mixed", seed=3, duration_s=15.0)
    return [read_pcap(path) for path in RunPaths(built.path).captures()]


def test_built_run_in_chunks_of_every_size(built_captures: list[pd.DataFrame]) -> None:
    whole_table = pd.concat(built_captures, ignore_index=True)
    whole = tcp_connections(whole_table, SERVER_PORTS)
    assert len(whole) > 100 and whole["outcome"].nunique() >= 3  # a run worth splitting
    rng = np.random.default_rng(5)
    for size in (997, 20_000, 1 << 20):
        assert_same_connections(every(whole_table, size), whole)
        assert_same_connections(list(interleaved(built_captures, size)), whole)
    cuts = rng.integers(0, len(whole_table), size=40)
    assert_same_connections(split(whole_table, cuts), whole)


def test_built_run_one_packet_at_a_time(built_captures: list[pd.DataFrame]) -> None:
    """One packet per chunk (on the first connections of each capture: a chunk costs a call)."""
    heads = [capture.iloc[:400] for capture in built_captures[:3]]
    whole = tcp_connections(pd.concat(heads, ignore_index=True), SERVER_PORTS)
    assert_same_connections(list(interleaved(heads, 1)), whole)


def test_rows_shuffled_inside_chunks(built_captures: list[pd.DataFrame]) -> None:
    """Inside a chunk packets may come in any order (ties keep the order given)."""
    rng = np.random.default_rng(9)
    chunks = [
        chunk.take(rng.permutation(len(chunk))).reset_index(drop=True)
        for chunk in every(built_captures[0], 5000)
    ]
    whole = tcp_connections(pd.concat(chunks, ignore_index=True), SERVER_PORTS)
    assert_same_connections(chunks, whole)


@pytest.mark.parametrize("base", range(len(base_captures())))
def test_fuzz_corpus_captures(tmp_path: Path, base: int) -> None:
    path = tmp_path / "base.pcap"
    path.write_bytes(base_captures()[base])
    packets = read_pcap(path, on_damage="keep")
    whole = tcp_connections(packets, SERVER_PORTS)
    for size in (1, 2, 3, 7):
        assert_same_connections(every(packets, size), whole)
    assert_same_connections(list(iter_pcap(path, chunk_packets=3, on_damage="keep")), whole)


@pytest.fixture(scope="module")
def built_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The captures of a mixed rollout with IPv6 addresses (three nodes' and the client's)."""
    built = build_run(
        tmp_path_factory.mktemp("built6") / "mixed", "mixed", seed=4, duration_s=8.0, ipv6=True
    )
    return RunPaths(built.path).captures()


def test_reader_chunks_track_as_their_tables(built_paths: list[Path]) -> None:
    """Fed the reader's ``PacketChunk``s (addresses as codes), a tracker finds the rows it
    finds in their PACKETS tables, whatever the chunk size."""
    whole = tcp_connections(
        pd.concat([read_pcap(path) for path in built_paths], ignore_index=True), SERVER_PORTS
    )
    for size in (1_000, 1 << 20):
        tracker = ConnectionTracker(SERVER_PORTS)
        for path in built_paths:
            for chunk in iter_packet_chunks(path, chunk_packets=size):
                tracker.add(chunk)
        pd.testing.assert_frame_equal(number_connections([tracker.rows()]), whole)


def test_trackers_of_one_capture_each_or_several(built_paths: list[Path]) -> None:
    """Parts of one capture each are joined in capture order; parts whose captures interleave
    in that order are sorted again: both give one tracker's table."""
    captures = [read_pcap(path) for path in built_paths]
    whole = tcp_connections(pd.concat(captures, ignore_index=True), SERVER_PORTS)

    def rows(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
        tracker = ConnectionTracker(SERVER_PORTS)
        for table in tables:
            tracker.add(table)
        return tracker.rows()

    one_each = [rows([capture]) for capture in reversed(captures)]
    pd.testing.assert_frame_equal(number_connections(one_each), whole)
    interleaving = [rows(captures[::2]), rows(captures[1::2])]
    pd.testing.assert_frame_equal(number_connections(interleaving), whole)


_FLAGS = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK, SYN | FIN, FIN, 0]
_ENDPOINTS = [("10.0.0.5", 40000), ("10.0.0.5", 40001), ("10.96.0.10", 80), ("fd00::1", 80)]
_PACKET = st.tuples(
    st.sampled_from(["client", "node-1"]),
    st.integers(0, 3),  # source endpoint
    st.integers(0, 3),  # destination endpoint (may be the source: a flow to itself)
    st.sampled_from(_FLAGS),
    st.integers(1, 2),  # sequence number: a retransmitted SYN repeats it
    st.sampled_from([0, 0, 120]),  # payload
    st.sampled_from([0, 0, 1, 5, 200_000]),  # ms after the previous packet (ties, reuse gap)
)


def _random_packets(rows: list[tuple[str, int, int, int, int, int, int]]) -> pd.DataFrame:
    ts = np.cumsum([row[6] for row in rows]) * MS
    frame = pd.DataFrame(
        {
            "ts_ns": ts,
            "capture": [row[0] for row in rows],
            "src": [_ENDPOINTS[row[1]][0] for row in rows],
            "dst": [_ENDPOINTS[row[2]][0] for row in rows],
            "sport": [_ENDPOINTS[row[1]][1] for row in rows],
            "dport": [_ENDPOINTS[row[2]][1] for row in rows],
            "flags": [row[3] for row in rows],
            "seq": [row[4] for row in rows],
            "ack": 0,
            "payload_len": [row[5] for row in rows],
            "ip_version": [6 if ":" in _ENDPOINTS[row[1]][0] else 4 for row in rows],
        }
    )
    return check_frame(
        frame.astype({"capture": "string", "src": "string", "dst": "string"}), PACKETS, "test"
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PACKET, min_size=1, max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_random_packets_any_split(
    rows: list[tuple[str, int, int, int, int, int, int]], cuts: list[int]
) -> None:
    packets = _random_packets(rows)
    assert_same_connections(split(packets, cuts), tcp_connections(packets, SERVER_PORTS))


def test_a_flow_going_back_in_time_across_chunks_is_refused() -> None:
    packets = _random_packets(
        [("client", 0, 2, SYN, 1, 0, 5), ("client", 2, 0, SYN | ACK, 1, 0, 5)]
    )
    later_first = packets.iloc[::-1].reset_index(drop=True)
    # within one chunk the order is free: sorted by time
    whole = tcp_connections(later_first)
    assert whole.loc[0, "synack_ns"] == packets.loc[1, "ts_ns"]
    with pytest.raises(PacketOrderError, match="earlier than a packet of its flow"):
        tcp_connections_chunked(every(later_first, 1))
    # another flow may go back in time: it has no packet yet
    other = packets.assign(sport=packets["sport"].where(packets["sport"] != 40000, 40001))
    other = other.assign(dport=other["dport"].where(other["dport"] != 40000, 40001))
    mixed = [packets.iloc[1:].reset_index(drop=True), other.iloc[:1]]
    pd.testing.assert_frame_equal(
        tcp_connections_chunked(mixed), tcp_connections(pd.concat(mixed, ignore_index=True))
    )


def test_analysis_tracks_an_unordered_capture_again_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture whose flow goes back in time across chunks still gets the whole table's
    connections in the analysis (tracked again from the whole file)."""
    run = make_run(tmp_path / "run")
    t0 = 1_700_000_000_000_000_000
    segments = [
        (t0, SYN),
        (t0 + 3_000_000, SYN | ACK),
        (t0 + 2_000_000, ACK),
        (t0 + 4_000_000, FIN),
    ]
    capture = run / "packets" / "client.pcap"
    capture.write_bytes(tcp_pcap(segments))
    one_packet_chunks = functools.partial(iter_packet_chunks, chunk_packets=1)
    monkeypatch.setattr(pipeline, "iter_packet_chunks", one_packet_chunks)
    with pytest.raises(PacketOrderError):
        tcp_connections_chunked(iter_pcap(capture, chunk_packets=1))
    analysis = pipeline.analyze(RunPaths(run), write_tables=False, write_summary=False)
    expected = tcp_connections(read_pcap(capture), {80, 8080})
    pd.testing.assert_frame_equal(analysis.tables["connections"], expected)
    assert len(analysis.tables["packets"]) == len(segments)


@pytest.mark.root
@pytest.mark.parametrize("name", ["lo-ethernet-ns", "any-sll2", "lo-pcapng"])
def test_real_capture_in_chunks(tmp_path: Path, http_server: int, name: str) -> None:
    """tcpdump / dumpcap captures of real loopback traffic (keep-alive, Connection: close, a
    refused connect), read in chunks of several sizes."""
    path, _ = capture_real_traffic(name, tmp_path, http_server)
    packets = read_pcap(path)
    whole = tcp_connections(packets, {http_server})
    assert len(whole) >= 6 and "refused" in set(whole["outcome"])
    for size in (1, 7, len(packets) // 3 + 1):
        chunks = list(iter_pcap(path, chunk_packets=size))
        pd.testing.assert_frame_equal(tcp_connections_chunked(chunks, {http_server}), whole)
