"""Chunked reading gives exactly the whole-file result: iter_pcap / iter_pcap_payloads against
read_pcap / read_pcap_payloads, for chunks of 1 record, of sizes that split a file unevenly, and
larger than the file; on every container flavour, on the fuzz corpus's damaged files, and with
loopback copies whose earlier copy lies in a previous chunk.
"""

from __future__ import annotations

import struct
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.errors import TraceError
from analyzer.pcap_writer import write_pcap, write_pcapng
from analyzer.readers.pcap import (
    DUPLICATE_LOOKBACK,
    _numbered,
    iter_packet_chunks,
    iter_pcap,
    iter_pcap_payloads,
    packets_parquet_metadata,
    read_pcap,
    read_pcap_payloads,
)
from analyzer.readers.pcap_formats import iter_records
from analyzer.schema import PACKETS, check_frame
from tests.analyzer.test_fuzz_pcap import Mutation, base_captures, mutations
from tests.analyzer.test_pcap import traffic

CHUNKS = (1, 2, 3, 7, 1_000_000)  # one record, sizes that leave a short last chunk, everything


def assert_chunked_equals_whole(path: Path, chunk: int, *, dedupe_loopback: bool = True) -> None:
    """iter_pcap's tables, joined, are read_pcap's table: rows, dtypes, duplicates, damage."""
    whole = read_pcap(path, on_damage="keep", dedupe_loopback=dedupe_loopback)
    chunks = list(
        iter_pcap(path, chunk_packets=chunk, on_damage="keep", dedupe_loopback=dedupe_loopback)
    )
    assert chunks, "a file gives at least one table"
    for table in chunks:
        check_frame(table, PACKETS, "chunk")
        assert "damage" not in table.attrs or table is chunks[-1]
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole)
    dropped = sum(table.attrs["duplicates_dropped"] for table in chunks)
    assert dropped == whole.attrs["duplicates_dropped"]
    assert chunks[-1].attrs.get("damage") == whole.attrs.get("damage")
    _assert_raises_alike(path, chunk, whole)


def _assert_raises_alike(path: Path, chunk: int, whole: pd.DataFrame) -> None:
    """With on_damage="raise" the iterator yields the packets before the damage, then raises
    the error read_pcap raises (its ``kept`` is their count)."""
    if "damage" not in whole.attrs:
        return
    yielded = 0
    with pytest.raises(TraceError) as chunked:
        for table in iter_pcap(path, chunk_packets=chunk):
            yielded += len(table)
    with pytest.raises(TraceError) as at_once:
        read_pcap(path)
    assert str(chunked.value) == str(at_once.value)
    assert chunked.value.kept == yielded == len(whole)


@pytest.mark.parametrize("base", range(len(base_captures())))
@pytest.mark.parametrize("chunk", CHUNKS)
def test_every_flavour_chunked_equals_whole(tmp_path: Path, base: int, chunk: int) -> None:
    path = tmp_path / "base.pcap"
    path.write_bytes(base_captures()[base])
    assert_chunked_equals_whole(path, chunk)


def _pcapng_block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def test_pcapng_state_crosses_chunks(tmp_path: Path) -> None:
    """Interfaces declared between packets, a second section in the other byte order, simple
    packet blocks (whose time is the previous packet's, possibly in the previous chunk)."""
    frame = traffic(40).assign(interface=np.arange(40) % 2)
    first, second = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    write_pcapng(first, frame.iloc[:20], linktype=["ethernet", "sll2"])
    write_pcapng(second, frame.iloc[20:], linktype=["null", "raw"], big_endian=True, tsresol=6)
    raw = tmp_path / "raw.pcapng"
    write_pcapng(raw, traffic(3, ipv6=False), linktype="raw")
    frame_bytes = raw.read_bytes()[-(32 + 20 + 20) :][28:-4]  # the last block's IPv4 packet
    simple = _pcapng_block(3, struct.pack("<I", 40) + frame_bytes[:40])
    both = tmp_path / "both.pcapng"
    data = first.read_bytes()
    # two simple packet blocks after the first section's packets: they name interface 0
    both.write_bytes(data + simple + simple + second.read_bytes())
    for chunk in (*CHUNKS, 19, 21):
        assert_chunked_equals_whole(both, chunk)


def test_chunks_hold_the_records_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "t.pcapng"
    write_pcapng(path, traffic(50))
    buf = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    for chunk in (1, 7, 50, 64):
        sizes = [records.count for records in iter_records(buf, chunk)]
        assert sum(sizes) == 50
        assert all(size == chunk for size in sizes[:-1]) and 0 < sizes[-1] <= chunk


def test_loopback_copies_in_a_previous_chunk_are_dropped(tmp_path: Path) -> None:
    frame = traffic(40, ipv6=False)
    copies = frame.assign(ts_ns=frame["ts_ns"] + 20_000)
    doubled = pd.concat([frame, copies]).sort_values("ts_ns", kind="stable")
    path = tmp_path / "lo.pcap"
    write_pcap(path, doubled, linktype="sll")
    assert read_pcap(path).attrs["duplicates_dropped"] == 40
    for chunk in (1, 3, 41, 80):  # every copy's original is in the previous chunk at size 1
        assert_chunked_equals_whole(path, chunk)
        assert_chunked_equals_whole(path, chunk, dedupe_loopback=False)


def test_a_copy_further_back_than_the_lookback_is_kept(tmp_path: Path) -> None:
    """The rule looks DUPLICATE_LOOKBACK segments back, whatever the chunking: a copy just
    within it is dropped, one just beyond it is kept."""
    n = DUPLICATE_LOOKBACK + 1
    frame = traffic(n, ipv6=False).assign(ts_ns=1_700_000_000 * 10**9 + np.arange(n) * 10)
    copy_within = frame.iloc[[1]].assign(ts_ns=frame["ts_ns"].iloc[-1] + 10)  # 16,384 back
    copy_beyond = frame.iloc[[0]].assign(ts_ns=frame["ts_ns"].iloc[-1] + 20)  # 16,386 back
    path = tmp_path / "far.pcap"
    write_pcap(path, pd.concat([frame, copy_within, copy_beyond]))
    whole = read_pcap(path)
    assert whole.attrs["duplicates_dropped"] == 1
    assert len(whole) == n + 1
    for chunk in (5_000, DUPLICATE_LOOKBACK, n):
        assert_chunked_equals_whole(path, chunk)


@pytest.mark.parametrize("chunk", [1, 4, 1_000_000])
def test_payload_chunks_equal_whole(tmp_path: Path, chunk: int) -> None:
    line = b"GET /index.html HTTP/1.1\r\n"
    payloads = [line[: i % 4 * 7] for i in range(30)]
    frame = traffic(30).assign(payload_len=[len(p) for p in payloads], payload=payloads)
    path = tmp_path / "p.pcapng"
    write_pcapng(path, frame)
    packets, prefixes = read_pcap_payloads(path, 16)
    pairs = list(iter_pcap_payloads(path, 16, chunk_packets=chunk))
    pd.testing.assert_frame_equal(pd.concat([p for p, _ in pairs], ignore_index=True), packets)
    offsets = np.cumsum([0] + [len(p) for p, _ in pairs[:-1]])
    rows = np.concatenate([part.rows + at for (_, part), at in zip(pairs, offsets, strict=True)])
    np.testing.assert_array_equal(rows, prefixes.rows)
    heads = np.concatenate([part.head for _, part in pairs])
    np.testing.assert_array_equal(heads, prefixes.head)
    assert heads.any(), "the payloads were read"


FUZZ_EXAMPLES = 400


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    base=st.integers(0, len(base_captures()) - 1),
    changes=st.lists(mutations, min_size=1, max_size=4),
    chunk=st.sampled_from(CHUNKS),
)
def test_damaged_files_chunked_equal_whole(base: int, changes: list[Mutation], chunk: int) -> None:
    """The fuzz corpus's mutations: the same rows and the same damage at any chunk size."""
    data = bytearray(base_captures()[base])
    for change in changes:
        data = change.apply(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pcap"
        path.write_bytes(bytes(data))
        assert_chunked_equals_whole(path, chunk)


def test_chunked_reading_holds_one_chunk_at_a_time(tmp_path: Path) -> None:
    """Reading chunk by chunk allocates for one chunk (plus the DUPLICATE_LOOKBACK segments
    carried for loopback copies), not for the file: the whole file's table is far bigger."""
    path = tmp_path / "big.pcap"
    write_pcap(path, traffic(100_000, ipv6=False))
    read_pcap(path)  # the first read loads the compiled kernels: not the reading's memory
    tracemalloc.start()
    try:
        rows = sum(len(table) for table in iter_pcap(path, chunk_packets=1_000))
        chunked_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        whole = read_pcap(path)
        whole_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == len(whole) == 100_000
    carried = DUPLICATE_LOOKBACK * 10 * 8  # key columns, time and hash of the carried segments
    assert chunked_peak < carried + whole_peak / 10, (chunked_peak, whole_peak)


@pytest.mark.parametrize("ipv6", [False, True])
def test_chunks_written_as_arrow_read_back_as_the_packets_table(tmp_path: Path, ipv6: bool) -> None:
    """packets.parquet written from ``PacketChunk.arrow()`` (text columns as dictionaries) with
    ``packets_parquet_metadata()`` reads back as the PACKETS table, with the Arrow schema a
    file written from that table has (large strings, not dictionaries), its columns required
    as PACKETS declares them."""
    path = tmp_path / "mixed.pcap"
    write_pcap(path, traffic(3_000, ipv6=ipv6))
    whole = read_pcap(path)
    written = tmp_path / "packets.parquet"
    chunks = list(iter_packet_chunks(path, chunk_packets=700))
    assert len(chunks) > 1 and sum(len(chunk) for chunk in chunks) == len(whole)
    with pq.ParquetWriter(written, chunks[0].arrow().schema) as file:
        for chunk in chunks:
            file.write_table(chunk.arrow())
        file.add_key_value_metadata(packets_parquet_metadata())
    back = pd.read_parquet(written)
    pd.testing.assert_frame_equal(back, whole)
    as_from_pandas = pa.Schema.from_pandas(whole, preserve_index=False)
    nullable = {column.name: column.nullable for column in PACKETS.columns}
    required = pa.schema(
        [field.with_nullable(nullable[field.name]) for field in as_from_pandas],
        metadata=as_from_pandas.metadata,
    )
    assert pq.read_schema(written).equals(required)  # no column of PACKETS holds nulls


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([0, 1, 0x0A000005, 0x0A600010, -(1 << 63), -12345, (1 << 63) - 1]),
            st.integers(-(1 << 63), (1 << 63) - 1),  # as many distinct keys as rows
        ),
        max_size=300,
    )
)
def test_address_keys_are_numbered_as_factorize_numbers_them(keys: list[int]) -> None:
    """The compiled numbering of address keys (IPv4 values, IPv6 hashes with the top bit set)
    gives pandas' codes and distinct values, in order of first appearance."""
    values = np.array(keys, dtype=np.int64)
    codes, distinct = _numbered(values)
    expected_codes, expected_distinct = pd.factorize(values)
    np.testing.assert_array_equal(codes, expected_codes)
    np.testing.assert_array_equal(distinct, expected_distinct)
