"""Read pcap / pcapng captures into the packets table, fast.

Captures of a rollout hold millions of segments, so the reader never builds a Python object per
packet: the file is one numpy buffer, the record walk (``analyzer.readers.pcap_formats``) yields frame
offsets, and every header field is a vectorized gather at computed offsets. Link layers, IPv6
extension headers and VLAN tags only shift those offsets. Rows that are not TCP, are non-first
fragments or whose headers were cut by the snapshot length are dropped; payload lengths come from
the IP length fields, because the snapshot length usually truncates the captured bytes.

Payload bytes are not read by default. ``read_pcap_payloads`` also keeps the first bytes of each
segment's payload (``PayloadPrefixes``), for readers of application lines such as
``analyzer.readers.http1``: one more fixed-width gather over the segments that carry data.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import TraceError
from analyzer.readers.pcap_formats import Records, is_pcapng, scan_pcap, scan_pcapng
from analyzer.schema import PACKETS, check_frame

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

DUPLICATE_WINDOW_NS = 1_000_000
"""Two identical segments closer than this are one segment captured twice (loopback, ``-i any``)."""

_VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, Darwin
_RAW_IP = (12, 14, 101)
_IPV6_EXTENSIONS = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options
_MAX_EXTENSIONS = 8
_TCP = 6


class _Window:
    """A fixed-width copy of the bytes at one offset per row: each frame's first 64 bytes.

    Copying the headers once into a compact matrix makes every later field read a column
    slice (or a small per-row gather) instead of a cache-missing gather over the whole file.
    ``shift`` moves the origin of field offsets (to the IP or TCP header) without copying; an
    int when it is the same on every row, so that reads stay column slices. Bytes past the end of
    the file read as zero and offsets past the width are clipped: callers check lengths.
    """

    def __init__(self, buf: U8, origin: I64, width: int) -> None:
        self.origin = origin
        self.shift: int | I64 = 0
        self.rows = np.zeros((len(origin), width), dtype=np.uint8)
        inside = origin <= len(buf) - width
        if inside.any():
            sliding = np.lib.stride_tricks.sliding_window_view(buf, width)
            self.rows[inside] = sliding[origin[inside]]
        edge = np.flatnonzero(~inside & (origin < len(buf)))
        if len(edge):
            index = origin[edge, None] + np.arange(width)
            within = index < len(buf)
            self.rows[edge] = np.where(within, buf[np.minimum(index, len(buf) - 1)], 0)

    def _view(self, origin: I64, rows: npt.NDArray[np.uint8], shift: int | I64) -> _Window:
        window = _Window.__new__(_Window)
        window.origin, window.rows, window.shift = origin, rows, _uniform(shift)
        return window

    @property
    def width(self) -> int:
        return int(self.rows.shape[1])

    @property
    def base(self) -> I64:
        """Each row's field origin as a file offset."""
        base: I64 = np.add(self.origin, self.shift, dtype=np.int64)
        return base

    def at(self, shift: int | I64) -> _Window:
        return self._view(self.origin, self.rows, self.shift + shift)

    def subset(self, rows: Mask) -> _Window:
        if rows.all():
            return self
        shift = self.shift if isinstance(self.shift, int) else self.shift[rows]
        return self._view(self.origin[rows], self.rows[rows], shift)

    def u8(self, rel: int | I64) -> I64:
        pos = self.shift + rel
        if isinstance(pos, int):
            return self.rows[:, min(pos, self.width - 1)].astype(np.int64)
        clipped: I64 = np.clip(pos, 0, self.width - 1)
        values: I64 = self.rows[np.arange(len(clipped)), clipped].astype(np.int64)
        return values

    def be16(self, rel: int | I64) -> I64:
        return self._big_endian(rel, 2)

    def be32(self, rel: int | I64) -> I64:
        return self._big_endian(rel, 4)

    def _big_endian(self, rel: int | I64, width: int) -> I64:
        pos = self.shift + rel
        if isinstance(pos, int) and pos + width <= self.width and len(self.rows):
            # the same bytes on every row: read them as one big-endian integer per row, through
            # a strided view of the matrix (no copy before the conversion)
            field = np.ndarray(
                (len(self.rows),),
                dtype=f">u{width}",
                buffer=np.ascontiguousarray(self.rows),
                offset=pos,
                strides=(self.width,),
            )
            values: I64 = field.astype(np.int64)
            return values
        result = self.u8(rel)
        for i in range(1, width):
            result = (result << 8) | self.u8(rel + i)
        return result


def _uniform(offsets: int | I64) -> int | I64:
    """Per-row offsets that are the same on every row, as an int (reads become column slices)."""
    if isinstance(offsets, int):
        return offsets
    if len(offsets) == 0:
        return 0
    first = int(offsets[0])
    return first if bool((offsets == first).all()) else offsets


# Ethernet with two VLAN tags (22) + the fixed IPv6 header (40) fit; so do Ethernet + IPv4 +
# the TCP fields read (14), the common case, which then needs no second copy.
_HEAD_WIDTH = 64
_TCP_FIELDS = 14  # ports, seq, ack, data offset, flags
_COLUMNS = (
    *("ts_ns", "src", "dst", "sport", "dport", "flags", "seq", "ack"),
    *("payload_len", "ip_version"),
)
_PAYLOAD_COLUMNS = ("payload_at", "payload_captured")  # file offset, bytes present in the file
_DECODE_CHUNK = 262_144  # records decoded at a time: bounds the temporary arrays' memory


def _network_layer(head: _Window, linktype: I64) -> tuple[I64, I64]:
    """Per row: offset of the IP header in the frame and the IP version the link layer gives."""
    n = len(linktype)
    ip_rel = np.zeros(n, dtype=np.int64)
    version = np.zeros(n, dtype=np.int64)
    ethertype = np.zeros(n, dtype=np.int64)
    ether = linktype == 1
    if ether.any():
        ethertype = np.where(ether, head.be16(12), ethertype)
        ip_rel[ether] = 14
        for _tag in range(2):  # 802.1Q, and QinQ's outer tag
            tagged = ether & np.isin(ethertype, _VLAN_ETHERTYPES)
            ethertype = np.where(tagged, head.be16(ip_rel + 2), ethertype)
            ip_rel += np.where(tagged, 4, 0)
    for number, field, header_len in ((113, 14, 16), (276, 0, 20)):  # Linux cooked v1, v2
        cooked = linktype == number
        if cooked.any():
            ethertype = np.where(cooked, head.be16(field), ethertype)
            ip_rel[cooked] = header_len
    version[ethertype == 0x0800] = 4
    version[ethertype == 0x86DD] = 6
    raw = np.isin(linktype, _RAW_IP)
    version[raw] = head.u8(0)[raw] >> 4
    version[linktype == 228] = 4
    version[linktype == 229] = 6
    null = (linktype == 0) | (linktype == 108)
    if null.any():
        # the address family is a 4-byte int in either byte order: the non-zero end holds it
        first, last = head.u8(0), head.u8(3)
        family = np.where(first != 0, first, last)
        ip_rel[null] = 4
        version[null & (family == 2)] = 4
        version[null & np.isin(family, _AF_INET6)] = 6
    return ip_rel, version


@dataclass
class _Transport:
    """Where each row's TCP header is and how many IP payload bytes follow the IP header(s)."""

    tcp_rel: I64  # from the start of the IP header
    ip_payload: I64  # bytes after the IPv4 header / IPv6 header chain
    ok: Mask


def _ipv4(ip: _Window, buf: U8) -> _Transport:
    ihl = (ip.u8(0) & 0x0F) * 4
    total = ip.be16(2)
    fragment_offset = ip.be16(6) & 0x1FFF
    ok = (ihl >= 20) & (total >= ihl) & (ip.u8(9) == _TCP) & (fragment_offset == 0)
    return _Transport(ihl, total - ihl, ok)


def _ipv6(ip: _Window, buf: U8) -> _Transport:
    next_header = ip.u8(6)
    remaining = ip.be16(4)
    rel = np.full(len(next_header), 40, dtype=np.int64)
    ok = np.ones(len(next_header), dtype=bool)
    for _hop in range(_MAX_EXTENSIONS):
        extension = np.isin(next_header, _IPV6_EXTENSIONS) & ok
        if not extension.any():
            break
        # extension headers lie beyond the IP window: read them from the file itself
        rows = np.flatnonzero(extension)
        ext = _Window(buf, ip.base[rows] + rel[rows], 4)
        kind = next_header[rows]
        ok[rows] &= ~((kind == 44) & ((ext.be16(2) >> 3) != 0))  # TCP only in first fragments
        length = np.where(
            kind == 44, 8, np.where(kind == 51, (ext.u8(1) + 2) * 4, (ext.u8(1) + 1) * 8)
        )
        next_header[rows] = ext.u8(0)
        rel[rows] += length
        remaining[rows] -= length
    ok &= (next_header == _TCP) & (remaining >= 0)
    return _Transport(rel, remaining, ok)


@dataclass
class _Segments:
    """TCP segments as integer columns; addresses are codes into ``texts``."""

    columns: dict[str, I64]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.columns["ts_ns"])

    def select(self, rows: Mask | I64) -> _Segments:
        return _Segments({name: col[rows] for name, col in self.columns.items()}, self.texts)

    @staticmethod
    def decode_all(buf: U8, records: Records, *, payload: bool = False) -> _Segments:
        """Decode chunk by chunk into preallocated columns (no concatenation copy), renumbering
        each chunk's address codes into one shared list of texts. With ``payload``, each row
        also says where its payload starts in the file and how much of it was captured."""
        names = _COLUMNS + _PAYLOAD_COLUMNS if payload else _COLUMNS
        columns = {name: np.empty(records.count, dtype=np.int64) for name in names}
        index: dict[str, int] = {}
        filled = 0
        for start in range(0, records.count, _DECODE_CHUNK):
            part = _segments(buf, records.slice(start, start + _DECODE_CHUNK), payload=payload)
            renumber = np.array([index.setdefault(t, len(index)) for t in part.texts] or [0])
            rows = slice(filled, filled + len(part))
            for name, column in part.columns.items():
                columns[name][rows] = renumber[column] if name in ("src", "dst") else column
            filled += len(part)
        return _Segments({name: column[:filled] for name, column in columns.items()}, list(index))


def _dotted_quads(addresses: I64) -> list[str]:
    """IPv4 addresses as text, vectorized (a client capture can hold many thousand hosts)."""
    octets = [pa.array((addresses >> shift) & 0xFF).cast(pa.string()) for shift in (24, 16, 8, 0)]
    texts: list[str] = pc.binary_join_element_wise(*octets, ".").to_pylist()
    return texts


def _addresses(ip: _Window, is_v6: Mask) -> tuple[I64, I64, list[str]]:
    """Source and destination as codes into a list of address texts (each formatted once)."""
    n = len(is_v6)
    codes = np.zeros(2 * n, dtype=np.int64)
    texts: list[str] = []
    v4 = ~is_v6
    if v4.any():
        window = ip.subset(v4)
        v4_codes, uniques = pd.factorize(np.concatenate([window.be32(12), window.be32(16)]))
        rows = np.flatnonzero(v4)
        codes[np.concatenate([rows, rows + n])] = v4_codes
        texts += _dotted_quads(uniques)
    if is_v6.any():
        window = ip.subset(is_v6)
        matrix = np.stack([window.u8(8 + i) for i in range(32)], axis=1).astype(np.uint8)
        matrix = np.concatenate([matrix[:, :16], matrix[:, 16:]])
        unique_rows, v6_codes = np.unique(matrix, axis=0, return_inverse=True)
        rows = np.flatnonzero(is_v6)
        codes[np.concatenate([rows, rows + n])] = v6_codes.reshape(-1) + len(texts)
        texts += [str(ipaddress.IPv6Address(bytes(row))) for row in unique_rows]
    return codes[:n], codes[n:], texts


def _segments(buf: U8, records: Records, *, payload: bool = False) -> _Segments:
    """Decode every record's link, IP and TCP headers; keep the rows that are whole TCP headers."""
    caplen = records.caplen
    head = _Window(buf, records.data_start, _HEAD_WIDTH)
    ip_rel, version = _network_layer(head, records.linktype)
    ip = head.at(ip_rel)
    version = np.where(ip.u8(0) >> 4 == version, version, 0)  # the IP header must agree
    tcp_rel = np.zeros(len(caplen), dtype=np.int64)  # from the frame's start
    ip_payload = np.zeros(len(caplen), dtype=np.int64)
    ok = np.zeros(len(caplen), dtype=bool)
    for number, parse, min_header in ((4, _ipv4, 20), (6, _ipv6, 40)):
        rows = (version == number) & (ip_rel + min_header <= caplen)
        if rows.any():
            transport = parse(ip.subset(rows), buf)
            tcp_rel[rows] = ip_rel[rows] + transport.tcp_rel
            ip_payload[rows] = transport.ip_payload
            ok[rows] = transport.ok
    ok &= tcp_rel + 20 <= caplen
    keep = np.flatnonzero(ok)
    src, dst, texts = _addresses(ip.subset(ok), version[keep] == 6)
    tcp_rel = tcp_rel[keep]
    if bool((tcp_rel + _TCP_FIELDS <= _HEAD_WIDTH).all()):
        tcp = head.subset(ok).at(tcp_rel)
    else:  # IPv6 or IP options: the TCP header lies beyond the head copy
        tcp = _Window(buf, records.data_start[keep] + tcp_rel, _TCP_FIELDS)
    header_len = (tcp.u8(12) >> 4) * 4
    payload_len = ip_payload[keep] - header_len
    segments = _Segments(
        {
            "ts_ns": records.ts_ns[keep],
            "src": src,
            "dst": dst,
            "sport": tcp.be16(0),
            "dport": tcp.be16(2),
            "flags": tcp.u8(13),
            "seq": tcp.be32(4),
            "ack": tcp.be32(8),
            "payload_len": payload_len,
            "ip_version": version[keep],
        },
        texts,
    )
    if payload:
        payload_rel = tcp_rel + header_len  # from the frame's start
        segments.columns["payload_at"] = records.data_start[keep] + payload_rel
        captured = np.clip(records.caplen[keep] - payload_rel, 0, np.maximum(payload_len, 0))
        segments.columns["payload_captured"] = captured
    valid = (header_len >= 20) & (payload_len >= 0)
    return segments if valid.all() else segments.select(valid)


_SEGMENT_KEY = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "payload_len")


def _duplicates(segments: _Segments) -> Mask:
    """Later copies of a segment seen again within DUPLICATE_WINDOW_NS of the previous copy.

    On loopback and ``-i any`` captures the same segment is captured on the way out and on the
    way in (or on two interfaces); counting it twice would double bytes and fake retransmissions.
    A 64-bit hash of the segment's fields finds the rows that repeat (one fast sort of the hash
    with the row number packed into its low bits); only those are ordered by time and compared
    exactly.
    """
    columns = segments.columns
    n = len(segments)
    duplicate = np.zeros(n, dtype=bool)
    if n < 2:
        return duplicate
    digest = np.zeros(n, dtype=np.uint64)
    for name in _SEGMENT_KEY:
        digest = (digest ^ columns[name].astype(np.uint64)) * np.uint64(0x100000001B3)
        digest ^= digest >> np.uint64(29)
    bits = np.uint64((n - 1).bit_length())
    keyed = np.sort((digest >> bits << bits) | np.arange(n, dtype=np.uint64))
    hashes = keyed >> bits
    same_hash = hashes[1:] == hashes[:-1]
    repeats = np.zeros(n, dtype=bool)
    repeats[1:] |= same_hash
    repeats[:-1] |= same_hash
    if not repeats.any():
        return duplicate
    rows = (keyed[repeats] & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
    order = rows[np.lexsort((columns["ts_ns"][rows], hashes[repeats]))]
    same = np.diff(columns["ts_ns"][order]) <= DUPLICATE_WINDOW_NS
    for name in _SEGMENT_KEY:
        column = columns[name][order]
        same &= column[1:] == column[:-1]
    duplicate[order[1:]] = same
    return duplicate


def text_column(codes: I64, texts: list[str]) -> pd.Series:
    """``texts[codes]`` as a string Series (code -1: NA), built by Arrow without a Python loop
    (as large strings: pandas' own string layout, so it takes them without a cast)."""
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    decoded = pa.DictionaryArray.from_arrays(
        indices, pa.array(texts, type=pa.large_string())
    ).dictionary_decode()
    return pd.Series(pd.array(decoded, dtype="str"))


def _frame(segments: _Segments, capture: str) -> pd.DataFrame:
    columns: dict[str, object] = {
        "ts_ns": segments.columns["ts_ns"],
        "capture": text_column(np.zeros(len(segments), dtype=np.int64), [capture]),
        "src": text_column(segments.columns["src"], segments.texts),
        "dst": text_column(segments.columns["dst"], segments.texts),
    }
    columns.update({c: segments.columns[c] for c in PACKETS.names if c not in columns})
    return pd.DataFrame(columns, copy=False)  # no copy into one 2-D block: it would double memory


@dataclass(frozen=True)
class PayloadPrefixes:
    """The first ``width`` bytes of each TCP payload of a packets table, aligned with its rows.

    Only segments that carry data have an entry. The bytes are not copied: they are read from
    the capture's bytes (kept here, so the file's size stays in memory while this object lives)
    when a reader asks for some columns of some entries, so that a parser reading a few bytes of
    most segments does not pay for a copy of all of them. ``captured`` is how much of each
    payload can be read (what the capture holds, up to ``width``; the snapshot length may cut it
    to 0): a reader must tell "not captured" from "not there", e.g. a TLS record from a cut line.
    """

    rows: I64  # positions (iloc) in the packets table of the segments with payload_len > 0
    captured: I64  # readable payload bytes per entry: 0 ≤ captured ≤ min(payload_len, width)
    width: int
    buffer: U8  # the capture's bytes
    at: I64  # where each entry's payload starts in ``buffer``

    @classmethod
    def gather(cls, buf: U8, segments: _Segments, width: int) -> PayloadPrefixes:
        """The payloads of every segment that carries data, readable up to ``width`` bytes."""
        rows = np.flatnonzero(segments.columns["payload_len"] > 0)
        captured = np.minimum(segments.columns["payload_captured"][rows], width)
        return cls(rows, captured, width, buf, segments.columns["payload_at"][rows])

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

    def select(self, keep: Mask) -> PayloadPrefixes:
        """The entries of the rows ``keep`` retains, renumbered to the selected table."""
        position = np.cumsum(keep) - 1
        kept = keep[self.rows]
        return PayloadPrefixes(
            position[self.rows[kept]], self.captured[kept], self.width, self.buffer, self.at[kept]
        )


def _read(
    path: Path, capture: str | None, dedupe_loopback: bool, payload_bytes: int
) -> tuple[pd.DataFrame, PayloadPrefixes | None, str | None]:
    """The packets table, the payload prefixes when asked for, and the damage found, if any."""
    name = capture if capture is not None else path.stem
    data = path.read_bytes()
    buf = np.frombuffer(data, dtype=np.uint8)
    records = scan_pcapng(data, buf) if is_pcapng(data) else scan_pcap(data, buf)
    segments = _Segments.decode_all(buf, records, payload=payload_bytes > 0)
    prefixes = PayloadPrefixes.gather(buf, segments, payload_bytes) if payload_bytes > 0 else None
    del data, buf  # unless the prefixes read from them, free the file's bytes before the table
    duplicate = _duplicates(segments) if dedupe_loopback else np.zeros(0, dtype=bool)
    if duplicate.any():
        segments = segments.select(~duplicate)
        prefixes = prefixes.select(~duplicate) if prefixes is not None else None
    packets = check_frame(_frame(segments, name), PACKETS, "read_pcap")
    packets.attrs["duplicates_dropped"] = int(duplicate.sum())
    if records.damage is None:
        return packets, prefixes, None
    location, _, what = records.damage.partition(": ")
    return packets, prefixes, f"{location}: {what}; kept {len(packets)} packets read before it"


def _damaged(path: Path, damage: str, kept: object) -> TraceError:
    location, _, message = damage.partition(": ")
    return TraceError(str(path), location, message, kept=kept)


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
    if payload_bytes < 1:
        raise ValueError(f"payload_bytes must be at least 1, not {payload_bytes}")
    path = Path(path)
    packets, prefixes, damage = _read(path, capture, dedupe_loopback, payload_bytes)
    assert prefixes is not None  # payload_bytes > 0 always gathers them
    if damage is not None:
        if on_damage == "raise":
            raise _damaged(path, damage, (packets, prefixes))
        packets.attrs["damage"] = f"{path}: {damage}"
    return packets, prefixes
