"""Read pcap / pcapng captures into the packets table, fast, whole or in bounded chunks.

Captures of a rollout hold millions of segments, so the reader never builds a Python object per
packet: the file is mapped as one numpy buffer, the compiled record walk
(``analyzer.readers.pcap_formats``) yields frame offsets, and the compiled header decode
(``analyzer.readers._kernels.decode_tcp``) reads every field at its computed offset. Link
layers, IPv6 extension headers and VLAN tags only shift those offsets. Rows that are not TCP,
are non-first fragments or whose headers were cut by the snapshot length are dropped; payload
lengths come from the IP length fields, because the snapshot length usually truncates the
captured bytes.

Three ways to read, with identical rows:

- ``read_pcap(path)`` → one ``PACKETS`` table of the whole file.
- ``iter_pcap(path, *, capture=None, chunk_packets=CHUNK_PACKETS, on_damage="raise",
  dedupe_loopback=True) -> Iterator[pd.DataFrame]`` → the same rows as consecutive ``PACKETS``
  tables, in file order, each decoded from ``chunk_packets`` captured records (fewer rows when
  some records are not TCP or are loopback copies; the last chunk may be short). Each table has
  its own ``RangeIndex`` from 0 and ``attrs["duplicates_dropped"]`` for its rows;
  ``pd.concat(chunks, ignore_index=True)`` equals ``read_pcap``. Memory is per chunk: the
  record walk, the decoding temporaries and the table of one chunk, plus the mapped file's
  pages (released behind the walk). A file without packets still yields one empty table.
  Damage: with ``on_damage="keep"`` the last table (possibly empty) carries ``attrs["damage"]``;
  with ``"raise"`` every table before the damage is yielded, then ``TraceError`` is raised with
  ``kept`` = the number of packets yielded.
- ``iter_packet_chunks(path, ...)`` (same arguments) → the same chunks before their tables are
  made: ``PacketChunk``s of integer columns whose addresses are codes into the chunk's distinct
  address texts. The analysis tracks connections and writes packets.parquet from these
  (``PacketChunk.arrow()``), so no address is formatted or hashed once per packet.

Loopback copies (``dedupe_loopback``) are judged against the segments before them in the file,
carried across chunk boundaries (``_SeenSegments``), so the rows kept do not depend on the
chunk size.

Payload bytes are not read by default. ``read_pcap_payloads`` / ``iter_pcap_payloads`` (same
arguments plus ``payload_bytes``; the iterator yields ``(packets, PayloadPrefixes)`` pairs whose
``rows`` index that chunk's table) also keep the first bytes of each segment's payload
(``PayloadPrefixes``), for readers of application lines such as ``analyzer.readers.http1``: one
more fixed-width gather over the segments that carry data.
"""

from __future__ import annotations

import ipaddress
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import TraceError
from analyzer.readers import _kernels as k
from analyzer.readers.pcap_formats import Records, iter_records
from analyzer.schema import PACKETS, check_frame, read_back_metadata

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

DUPLICATE_WINDOW_NS = 1_000_000
"""Two identical segments closer than this are one segment captured twice (loopback, ``-i any``)."""

CHUNK_PACKETS = 262_144
"""Captured records decoded at a time by default: bounds the temporaries (some 200 bytes a
record) to about 50 MB, while the per-chunk overhead stays small against the decoding."""


@dataclass
class _Segments:
    """TCP segments as integer columns; addresses are codes into ``texts`` (an Arrow string
    array: built, joined and decoded by Arrow, never as Python strings)."""

    columns: dict[str, I64]
    texts: pa.Array

    def __len__(self) -> int:
        return len(self.columns["ts_ns"])

    @staticmethod
    def merge(parts: list[_Segments]) -> _Segments:
        """One table of the parts, renumbering each part's address codes into one shared list
        of texts. It empties the parts' columns as it goes: at the peak one column is held
        twice, not the table."""
        if len(parts) == 1:
            return parts[0]
        encoded = pa.concat_arrays([part.texts for part in parts]).dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        ends = np.cumsum([len(part.texts) for part in parts])
        renumbers = [
            code if len(code) else np.zeros(1, np.int64) for code in np.split(codes, ends[:-1])
        ]
        columns = {}
        for name in list(parts[0].columns):
            pieces = [part.columns.pop(name) for part in parts]
            if name in ("src", "dst"):
                pieces = [
                    renumber[piece] for renumber, piece in zip(renumbers, pieces, strict=True)
                ]
            columns[name] = np.concatenate(pieces)
        return _Segments(columns, encoded.dictionary)


def _dotted_quads(addresses: I64) -> pa.Array:
    """IPv4 addresses as text, vectorized (a client capture can hold many thousand hosts)."""
    octets = [pa.array((addresses >> shift) & 0xFF).cast(pa.string()) for shift in (24, 16, 8, 0)]
    texts: pa.Array = pc.binary_join_element_wise(*octets, ".").cast(pa.large_string())
    return texts


def _addresses(fields: I64, buf: U8, records: Records, rows: I64) -> tuple[I64, I64, pa.Array]:
    """Source and destination as codes into an array of address texts, each formatted once:
    the rows' address keys (``decode_tcp``'s SRC_KEY / DST_KEY) are numbered, then only the
    distinct ones become text (an IPv6 one from the bytes of its first row in ``buf``; the
    rows are records ``rows``)."""
    n = fields.shape[1]
    codes, keys = _numbered(np.concatenate([fields[k.SRC_KEY], fields[k.DST_KEY]]))
    v6 = np.flatnonzero(keys < 0)  # an IPv6 key has its top bit set
    texts = _dotted_quads(np.where(keys < 0, 0, keys))
    if len(v6):
        _, first = np.unique(codes, return_index=True)
        row = first[v6] % n
        at = records.data_start[rows[row]] + fields[k.IP_REL, row] + np.where(first[v6] < n, 8, 24)
        formatted = texts.to_numpy(zero_copy_only=False)
        for code, start in zip(v6, at, strict=True):
            formatted[code] = str(ipaddress.IPv6Address(buf[start : start + 16].tobytes()))
        texts = pa.array(formatted, type=pa.large_string())
    return codes[:n], codes[n:], texts


def _numbered(values: I64) -> tuple[I64, I64]:
    """``pd.factorize(values)`` (codes in order of first appearance, then the distinct values),
    compiled: the addresses of the ingest bench's million packets in 22 ms instead of 55."""
    bits = max(4, (2 * len(values) - 1).bit_length())  # a table at most half full
    slots = np.full(1 << bits, -1, dtype=np.int64)
    numbered, codes = np.empty(len(values), np.int64), np.empty(len(values), np.int64)
    count = k.number_values(values, slots, bits, numbered, codes)
    return codes, numbered[:count]


def _decoded(buf: U8, records: Records) -> tuple[I64, I64]:
    """Every record's link, IP and TCP headers decoded (compiled, ``decode_tcp``), only the rows
    that are whole TCP headers kept: their fields (DECODED_FIELDS × rows) and their records'
    positions."""
    fields = np.zeros((k.DECODED_FIELDS, records.count), dtype=np.int64)
    k.decode_tcp(buf, records.data_start, records.caplen, records.linktype, records.ts_ns, fields)
    kept = fields[k.KEEP] == 1
    if kept.all():
        return fields, np.arange(records.count)
    rows = np.flatnonzero(kept)
    return fields[:, rows], rows


def _segments(
    buf: U8, fields: I64, rows: I64, records: Records, *, payload: bool = False
) -> _Segments:
    """The decoded rows ``fields`` (of records ``rows``) as named columns."""
    src, dst, texts = _addresses(fields, buf, records, rows)
    columns = {
        "ts_ns": fields[k.TS],
        "src": src,
        "dst": dst,
        "sport": fields[k.SPORT],
        "dport": fields[k.DPORT],
        "flags": fields[k.FLAGS],
        "seq": fields[k.SEQ],
        "ack": fields[k.ACK],
        "payload_len": fields[k.PAYLOAD_LEN],
        "ip_version": fields[k.VERSION],
    }
    if payload:
        payload_rel = fields[k.PAYLOAD_REL]  # from the frame's start
        columns["payload_at"] = records.data_start[rows] + payload_rel
        room = np.maximum(fields[k.PAYLOAD_LEN], 0)
        columns["payload_captured"] = np.clip(records.caplen[rows] - payload_rel, 0, room)
    return _Segments(columns, texts)


DUPLICATE_LOOKBACK = 16_384
"""Segments before a row in the file that may hold its earlier copy. Copies lie within
DUPLICATE_WINDOW_NS of each other; 16,384 segments in 1 ms is 16M packets/s, far above what one
capture point writes (tcpdump keeps up to about 1-2M packets/s)."""


@dataclass
class _SeenSegments:
    """What finding copies carries from chunk to chunk about the last DUPLICATE_LOOKBACK
    segments (their keys and times, and ``mark_copies``' hash chains), so that a copy is found
    whether its earlier copy is in its own chunk or in a previous one.

    A segment is a duplicate (a loopback or ``-i any`` copy) when the previous segment with the
    same fields in the file (addresses, ports, seq, ack, flags, payload length), if it is at
    most DUPLICATE_LOOKBACK segments back, was captured within DUPLICATE_WINDOW_NS of it:
    counting it twice would double bytes and fake retransmissions. The rule looks only
    backwards and only a fixed number of segments back, so it gives the same rows for any
    chunking of the file.
    """

    last: I64 = field(default_factory=lambda: np.zeros((k.SEGMENT_KEY_FIELDS + 1, 0), np.int64))
    rows: int = 0  # segments seen so far
    # bucket → newest row there; never a row within DUPLICATE_LOOKBACK of any row
    heads: I64 = field(default_factory=lambda: np.full(2 * DUPLICATE_LOOKBACK, -(1 << 62)))
    chain: I64 = field(default_factory=lambda: np.zeros(DUPLICATE_LOOKBACK, np.int64))
    digests: npt.NDArray[np.uint64] = field(
        default_factory=lambda: np.zeros(DUPLICATE_LOOKBACK, np.uint64)
    )

    def duplicates(self, fields: I64) -> Mask:
        """Which rows of ``fields`` (``decode_tcp``'s, the file's next rows) are copies;
        remembers the last ones."""
        keyed = fields[: k.SEGMENT_KEY_FIELDS + 1]  # the key fields, then the time: a view
        copy = np.zeros(keyed.shape[1], dtype=bool)
        k.mark_copies(
            self.last, keyed, self.rows, self.heads, self.chain, self.digests,
            DUPLICATE_WINDOW_NS, copy,
        )  # fmt: skip
        fresh = keyed.shape[1]
        self.rows += fresh
        if fresh >= DUPLICATE_LOOKBACK:
            self.last = keyed[:, -DUPLICATE_LOOKBACK:].copy()
        else:  # the last ones before, then these: one copy of at most DUPLICATE_LOOKBACK rows
            older = self.last[:, max(0, self.last.shape[1] + fresh - DUPLICATE_LOOKBACK) :]
            self.last = np.concatenate([older, keyed], axis=1)
        return copy


def text_column(codes: I64, texts: list[str] | pa.Array) -> pd.Series:
    """``texts[codes]`` as a string Series (code -1: NA), built by Arrow without a Python loop
    (as large strings: pandas' own string layout, so it takes them without a cast)."""
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    decoded = pa.DictionaryArray.from_arrays(
        indices, pa.array(texts, type=pa.large_string()) if isinstance(texts, list) else texts
    ).dictionary_decode()
    return pd.Series(pd.array(decoded, dtype="str"))


def _repeated(text: str, count: int) -> pd.Series:
    """``text`` ``count`` times as a string Series, laid out directly as Arrow large strings
    (decoding a one-entry dictionary costs a gather per row)."""
    data = text.encode()
    offsets = np.arange(count + 1, dtype=np.int64) * len(data)
    strings = pa.LargeStringArray.from_buffers(
        count, pa.py_buffer(offsets), pa.py_buffer(data * count)
    )
    return pd.Series(pd.array(strings, dtype="str"))


def _frame(segments: _Segments, capture: str) -> pd.DataFrame:
    columns: dict[str, object] = {
        "ts_ns": segments.columns["ts_ns"],
        "capture": _repeated(capture, len(segments)),
        "src": text_column(segments.columns["src"], segments.texts),
        "dst": text_column(segments.columns["dst"], segments.texts),
    }
    columns.update({c: segments.columns[c] for c in PACKETS.names if c not in columns})
    return pd.DataFrame(columns, copy=False)  # no copy into one 2-D block: it would double memory


@dataclass(frozen=True)
class PayloadPrefixes:
    """The first ``width`` bytes of each TCP payload of a packets table, aligned with its rows.

    Only segments that carry data have an entry. The bytes are not gathered per entry: they are
    read from a copy of the capture's bytes that holds them (the span of the file from the
    first payload to the end of the last, one copy per chunk read) when a reader asks for some
    columns of some entries, so that a parser reading a few bytes of most segments does not pay
    for a gather of all of them. ``captured`` is how much of each
    payload can be read (what the capture holds, up to ``width``; the snapshot length may cut it
    to 0): a reader must tell "not captured" from "not there", e.g. a TLS record from a cut line.
    """

    rows: I64  # positions (iloc) in the packets table of the segments with payload_len > 0
    captured: I64  # readable payload bytes per entry: 0 ≤ captured ≤ min(payload_len, width)
    width: int
    buffer: U8  # a copy of the capture's bytes that holds the payloads
    at: I64  # where each entry's payload starts in ``buffer``

    @classmethod
    def gather(cls, buf: U8, segments: _Segments, width: int) -> PayloadPrefixes:
        """The payloads of every segment that carries data, readable up to ``width`` bytes
        (copied out of ``buf``: the file's mapping is released as the reader moves on)."""
        rows = np.flatnonzero(segments.columns["payload_len"] > 0)
        captured = np.minimum(segments.columns["payload_captured"][rows], width)
        at = segments.columns["payload_at"][rows]
        first = int(at.min()) if len(at) else 0
        last = int((at + captured).max()) if len(at) else 0
        return cls(rows, captured, width, buf[first:last].copy(), at - first)

    @classmethod
    def concat(cls, parts: list[PayloadPrefixes], table_rows: list[int]) -> PayloadPrefixes:
        """The prefixes of consecutive tables of ``table_rows`` rows each, as one (the rows of
        each part move down by the rows of the tables before it)."""
        row_shift = np.cumsum([0, *table_rows[:-1]])
        buffer_shift = np.cumsum([0, *(len(p.buffer) for p in parts[:-1])])
        width = parts[0].width
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.rows + shift for p, shift in zip(parts, row_shift, strict=True)]),
            np.concatenate([p.captured for p in parts]),
            width,
            np.concatenate([p.buffer for p in parts]),
            np.concatenate([p.at + shift for p, shift in zip(parts, buffer_shift, strict=True)]),
        )

    @classmethod
    def from_matrix(cls, head: U8, captured: I64) -> PayloadPrefixes:
        """Prefixes held in a (entries, width) matrix, e.g. built by hand."""
        width = int(head.shape[1])
        buffer = np.ascontiguousarray(head, dtype=np.uint8).reshape(-1)
        entries = np.arange(len(head), dtype=np.int64)
        return cls(entries, np.minimum(captured, width), width, buffer, entries * width)

    def columns(self, entries: I64, first: int | I64, count: int) -> U8:
        """Bytes ``[first, first + count)`` of the payloads of ``entries`` as a matrix (``first``
        one column for all, or one per entry), zero past each one's readable bytes (whatever
        follows in the file is not its payload)."""
        start = self.at[entries] + first
        last = len(self.buffer) - count  # the last start a window of ``count`` bytes fits at
        if last >= 0:
            windows = np.lib.stride_tricks.sliding_window_view(self.buffer, count)
            out: U8 = windows[np.minimum(start, last)]  # one copy, straight into the result
        else:
            out = np.zeros((len(entries), count), dtype=np.uint8)
        edge = np.flatnonzero(start > last)  # payloads in the file's last bytes
        if len(edge) and len(self.buffer):
            index = np.minimum(start[edge, None] + np.arange(count), len(self.buffer) - 1)
            out[edge] = self.buffer[index]
        readable = self.captured[entries] - first
        short = np.flatnonzero(readable < count)
        out[short] *= np.arange(count) < readable[short, None]
        return out

    @property
    def head(self) -> U8:
        """Every entry's readable bytes as one (entries, width) matrix (a copy)."""
        return self.columns(np.arange(len(self.rows)), 0, self.width)


class _MappedFile:
    """A capture mapped read-only. The pages behind the reader are handed back to the kernel as
    it moves on: they are file pages, and the process's RSS would otherwise grow to the file's
    size (they are read again from the page cache if anything touches them later)."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.buf: U8 = (
            np.frombuffer(self._map, dtype=np.uint8) if self._map else np.zeros(0, np.uint8)
        )
        self._released = 0

    def release_before(self, offset: int) -> None:
        end = offset - offset % mmap.PAGESIZE
        if self._map is not None and end > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end


@dataclass(frozen=True)
class _Chunk:
    segments: _Segments
    prefixes: PayloadPrefixes | None
    duplicates_dropped: int
    damage: str | None  # "byte N: what is wrong", on the file's last chunk when it is damaged


def _chunks(
    path: Path, dedupe_loopback: bool, payload_bytes: int, chunk_packets: int
) -> Iterator[_Chunk]:
    """The file's TCP segments, decoded ``chunk_packets`` captured records at a time."""
    mapped = _MappedFile(path)
    seen = _SeenSegments() if dedupe_loopback else None
    for records in iter_records(mapped.buf, chunk_packets):
        fields, rows = _decoded(mapped.buf, records)
        dropped = 0
        if seen is not None:
            duplicate = seen.duplicates(fields)
            dropped = int(duplicate.sum())
            if dropped:
                fields, rows = fields[:, ~duplicate], rows[~duplicate]
        segments = _segments(mapped.buf, fields, rows, records, payload=payload_bytes > 0)
        prefixes = (
            PayloadPrefixes.gather(mapped.buf, segments, payload_bytes) if payload_bytes else None
        )
        mapped.release_before(records.walked_to)
        yield _Chunk(segments, prefixes, dropped, records.damage)


def _table(segments: _Segments, capture: str, duplicates_dropped: int) -> pd.DataFrame:
    packets = check_frame(_frame(segments, capture), PACKETS, "read_pcap")
    packets.attrs["duplicates_dropped"] = duplicates_dropped
    return packets


@dataclass(frozen=True)
class PacketChunk:
    """One chunk of a capture's TCP segments before any per-row text is made: ``columns`` holds
    the PACKETS integer columns by name, plus ``src`` and ``dst`` as codes into ``addresses``
    (each address of the chunk once). The connection tracker and the packets.parquet writer
    take it as it is, so that addresses are formatted once per chunk, not once per packet, and
    nobody hashes them again; ``frame()`` is the PACKETS table ``iter_pcap`` yields."""

    segments: _Segments
    capture: str
    duplicates_dropped: int
    damage: str | None = None  # "path: byte N: ...; kept K packets ..." (on_damage="keep")

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def columns(self) -> dict[str, I64]:
        return self.segments.columns

    @property
    def addresses(self) -> pa.Array:
        return self.segments.texts

    def frame(self) -> pd.DataFrame:
        """The PACKETS table, with ``attrs["duplicates_dropped"]`` (and ``"damage"``)."""
        packets = _table(self.segments, self.capture, self.duplicates_dropped)
        if self.damage is not None:
            packets.attrs["damage"] = self.damage
        return packets

    def arrow(self) -> pa.Table:
        """The PACKETS table in Arrow for packets.parquet, its text columns as dictionaries:
        the file stores them dictionary-encoded anyway, and a writer handed the dictionary does
        not hash every row's text. A file of these tables reads back as PACKETS tables once
        ``packets_parquet_metadata()`` is written over its metadata."""
        codes = {name: self.columns[name].astype(np.int32) for name in ("src", "dst")}
        codes["capture"] = np.zeros(len(self), dtype=np.int32)
        texts = {"capture": pa.array([self.capture], pa.large_string())}
        return pa.table(
            {
                name: pa.DictionaryArray.from_arrays(codes[name], texts.get(name, self.addresses))
                if name in codes
                else self.columns[name]
                for name in PACKETS.names
            },
            schema=_packets_arrow_schema(),
        )


#: The PACKETS text columns (capture, addresses): Arrow dictionaries in ``PacketChunk.arrow``,
#: dictionary-encoded in packets.parquet.
PACKETS_TEXT = tuple(column.name for column in PACKETS.columns if column.dtype == "string")


@cache
def _packets_arrow_schema() -> pa.Schema:
    """``PacketChunk.arrow``'s schema: text as dictionaries, and each column nullable only if
    PACKETS says so (none is: every packet has every field). Parquet then writes no
    definition levels: a third of the CPU of writing packets.parquet."""
    text = pa.dictionary(pa.int32(), pa.large_string())
    return pa.schema(
        pa.field(
            column.name,
            text if column.name in PACKETS_TEXT else pa.int64(),
            nullable=column.nullable,
        )
        for column in PACKETS.columns
    )


@cache
def packets_parquet_metadata() -> dict[bytes, bytes]:
    """The key-value metadata (pandas' and Arrow's schemas) of a Parquet file written from
    PACKETS tables: written over that of a file of ``PacketChunk.arrow`` tables, it makes
    readers see the PACKETS strings and dtypes, not dictionaries."""
    no_rows = {name: np.zeros(0, np.int64) for name in PACKETS.names}
    empty = _Segments(no_rows, pa.array([], pa.large_string()))
    return read_back_metadata(pa.Schema.from_pandas(_frame(empty, ""), preserve_index=False))


def _damage_text(damage: str, kept: int) -> str:
    location, _, what = damage.partition(": ")
    return f"{location}: {what}; kept {kept} packets read before it"


def _damaged(path: Path, damage: str, kept: object) -> TraceError:
    location, _, message = damage.partition(": ")
    return TraceError(str(path), location, message, kept=kept)


def _read(
    path: Path, capture: str | None, dedupe_loopback: bool, payload_bytes: int
) -> tuple[pd.DataFrame, PayloadPrefixes | None, str | None]:
    """The packets table of the whole file, the payload prefixes when asked for, and the damage
    found, if any: the chunks of ``_chunks``, joined."""
    chunks = list(_chunks(path, dedupe_loopback, payload_bytes, CHUNK_PACKETS))
    rows = [len(chunk.segments) for chunk in chunks]
    prefixes = [chunk.prefixes for chunk in chunks if chunk.prefixes is not None]
    joined = PayloadPrefixes.concat(prefixes, rows) if prefixes else None
    dropped = sum(chunk.duplicates_dropped for chunk in chunks)
    damage = chunks[-1].damage
    segments = _Segments.merge([chunk.segments for chunk in chunks])
    del chunks
    packets = _table(segments, capture if capture is not None else path.stem, dropped)
    return packets, joined, _damage_text(damage, len(packets)) if damage else None


def _iter_chunks(
    path: Path,
    capture: str | None,
    on_damage: Literal["raise", "keep"],
    dedupe_loopback: bool,
    payload_bytes: int,
    chunk_packets: int,
) -> Iterator[tuple[PacketChunk, PayloadPrefixes | None]]:
    """One chunk (and its prefixes) at a time; damage as ``iter_pcap`` says."""
    name = capture if capture is not None else path.stem
    yielded = 0
    for chunk in _chunks(path, dedupe_loopback, payload_bytes, chunk_packets):
        packets = PacketChunk(chunk.segments, name, chunk.duplicates_dropped)
        yielded += len(packets)
        if chunk.damage is None:
            yield packets, chunk.prefixes
            continue
        damage = _damage_text(chunk.damage, yielded)
        if on_damage == "raise":
            if len(packets):
                yield packets, chunk.prefixes
            raise _damaged(path, damage, yielded)
        yield replace(packets, damage=f"{path}: {damage}"), chunk.prefixes


def iter_packet_chunks(
    path: str | Path,
    *,
    capture: str | None = None,
    chunk_packets: int = CHUNK_PACKETS,
    on_damage: Literal["raise", "keep"] = "raise",
    dedupe_loopback: bool = True,
) -> Iterator[PacketChunk]:
    """``iter_pcap``'s chunks before their tables are made (``PacketChunk.frame()`` makes each
    one): for a reader that takes addresses as codes, such as the connection tracker."""
    for chunk, _ in _iter_chunks(Path(path), capture, on_damage, dedupe_loopback, 0, chunk_packets):
        yield chunk


def iter_pcap(
    path: str | Path,
    *,
    capture: str | None = None,
    chunk_packets: int = CHUNK_PACKETS,
    on_damage: Literal["raise", "keep"] = "raise",
    dedupe_loopback: bool = True,
) -> Iterator[pd.DataFrame]:
    """``read_pcap``'s rows as consecutive ``PACKETS`` tables of ``chunk_packets`` captured
    records each, with memory bounded by the chunk (see the module docstring)."""
    for chunk in iter_packet_chunks(
        path,
        capture=capture,
        chunk_packets=chunk_packets,
        on_damage=on_damage,
        dedupe_loopback=dedupe_loopback,
    ):
        yield chunk.frame()


def iter_pcap_payloads(
    path: str | Path,
    payload_bytes: int,
    *,
    capture: str | None = None,
    chunk_packets: int = CHUNK_PACKETS,
    on_damage: Literal["raise", "keep"] = "raise",
    dedupe_loopback: bool = True,
) -> Iterator[tuple[pd.DataFrame, PayloadPrefixes]]:
    """``iter_pcap`` with each chunk's payload prefixes (their ``rows`` index its table)."""
    _check_payload_bytes(payload_bytes)
    for chunk, prefixes in _iter_chunks(
        Path(path), capture, on_damage, dedupe_loopback, payload_bytes, chunk_packets
    ):
        assert prefixes is not None  # payload_bytes > 0 always gathers them
        yield chunk.frame(), prefixes


def _check_payload_bytes(payload_bytes: int) -> None:
    if payload_bytes < 1:
        raise ValueError(f"payload_bytes must be at least 1, not {payload_bytes}")


def read_pcap(
    path: str | Path,
    *,
    capture: str | None = None,
    on_damage: Literal["raise", "keep"] = "raise",
    dedupe_loopback: bool = True,
) -> pd.DataFrame:
    """Read a pcap or pcapng file into a ``PACKETS`` table (TCP segments only).

    ``attrs["duplicates_dropped"]`` counts segments dropped as loopback/``-i any`` copies. A
    damaged file raises ``TraceError`` (``kept`` = the packets before the damage), or with
    ``on_damage="keep"`` returns those packets with ``attrs["damage"]`` describing it.
    """
    path = Path(path)
    packets, _, damage = _read(path, capture, dedupe_loopback, payload_bytes=0)
    if damage is not None:
        if on_damage == "raise":
            raise _damaged(path, damage, packets)
        packets.attrs["damage"] = f"{path}: {damage}"
    return packets


def read_pcap_payloads(
    path: str | Path,
    payload_bytes: int,
    *,
    capture: str | None = None,
    on_damage: Literal["raise", "keep"] = "raise",
    dedupe_loopback: bool = True,
) -> tuple[pd.DataFrame, PayloadPrefixes]:
    """``read_pcap`` plus the first ``payload_bytes`` bytes of every segment's payload.

    The packets table is the one ``read_pcap`` returns (same rows, same attrs); on damage the
    ``TraceError``'s ``kept`` is the pair read before it.
    """
    _check_payload_bytes(payload_bytes)
    path = Path(path)
    packets, prefixes, damage = _read(path, capture, dedupe_loopback, payload_bytes)
    assert prefixes is not None  # payload_bytes > 0 always gathers them
    if damage is not None:
        if on_damage == "raise":
            raise _damaged(path, damage, (packets, prefixes))
        packets.attrs["damage"] = f"{path}: {damage}"
    return packets, prefixes
