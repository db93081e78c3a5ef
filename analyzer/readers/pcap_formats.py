"""Walk the record structure of classic pcap and pcapng files, without decoding packets.

The walk computes where each captured frame starts: record lengths chain one record to the
next, so this part is sequential and runs compiled (``analyzer.readers._kernels``), keeping only
integers. What a pcapng block says about itself (lengths, interface, timestamp) is gathered
afterwards with vectorized reads at those offsets; pcapng's rare other blocks (section headers,
interface descriptions, simple packet blocks) are checked one at a time in Python.

``iter_records`` walks ``chunk`` records at a time, carrying what crosses a chunk boundary (the
offset, pcapng's byte order, interfaces and last timestamp), so that a reader's tables and
temporaries are per chunk. Damage stops the walk and is reported with its byte offset on the
last chunk, so a truncated capture still yields every packet before the damage, whatever the
chunk size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from analyzer.readers._kernels import Stop, walk_enhanced_blocks, walk_pcap

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

MAX_CAPLEN = 262_144  # libpcap's largest snapshot length; anything above is a corrupt record
_MAX_CHUNK = 1 << 62  # "no limit": a chunk's arrays are sized by what the file can still hold
_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 1
_PCAPNG_SPB = 3
_PCAPNG_EPB = 6
_BYTE_ORDER_MAGIC = 0x1A2B3C4D


@dataclass(frozen=True)
class Records:
    """Where each captured frame is and what its record header says about it."""

    data_start: I64  # byte offset of the link-layer frame in the file
    caplen: I64  # captured bytes of the frame (within the file by construction)
    linktype: I64
    ts_ns: I64
    damage: str | None  # "byte N: what is wrong" when the walk stopped early
    walked_to: int = 0  # byte offset where the walk stopped: the next chunk begins there

    @property
    def count(self) -> int:
        return len(self.data_start)


@dataclass(frozen=True)
class _Interface:
    linktype: int
    snaplen: int
    tsresol: int  # raw if_tsresol byte
    tsoffset_s: int


def is_pcapng(head: bytes) -> bool:
    return head[:4] == b"\x0a\x0d\x0d\x0a"


def unaligned(buf: U8, dtype: str) -> npt.NDArray[np.uint32] | npt.NDArray[np.uint16]:
    """A view of ``buf`` whose element i is the ``dtype`` value at byte i (any alignment).

    Gathering a multi-byte field through it is one fancy-index instead of one per byte.
    """
    width = np.dtype(dtype).itemsize
    shape = (max(len(buf) - width + 1, 0),)
    view: npt.NDArray[np.uint32] | npt.NDArray[np.uint16] = np.ndarray(
        shape, dtype=dtype, buffer=buf, strides=(1,)
    )
    return view


def read_u32(buf: U8, pos: I64, big_endian: bool | npt.NDArray[np.bool_]) -> I64:
    """Unsigned 32-bit fields at ``pos`` in either byte order (per row when an array is given)."""
    pos = np.clip(pos, 0, max(len(buf) - 4, 0))  # callers reject rows whose fields don't fit
    if isinstance(big_endian, bool):
        return unaligned(buf, ">u4" if big_endian else "<u4")[pos].astype(np.int64)
    be = unaligned(buf, ">u4")[pos].astype(np.int64)
    le = unaligned(buf, "<u4")[pos].astype(np.int64)
    result: I64 = np.where(big_endian, be, le)
    return result


def _first_bad(bad: npt.NDArray[np.bool_]) -> int:
    """Index of the first True, or len when there is none."""
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else len(bad)


def iter_records(buf: U8, chunk: int) -> Iterator[Records]:
    """The records of a classic pcap or pcapng file, ``chunk`` at a time, in file order.

    Every chunk but the last holds exactly ``chunk`` records; the last one says where the file
    is damaged, if it is. A file without a record still gives one (empty) chunk.
    """
    if chunk < 1:
        raise ValueError(f"a chunk holds at least one record, not {chunk}")
    if is_pcapng(buf[:4].tobytes()):
        yield from _pcapng_chunks(buf, chunk)
    else:
        yield from _pcap_chunks(buf, chunk)


def scan_pcap(buf: U8) -> Records:
    """Every record of a classic pcap file, in one table (one chunk without a limit)."""
    return next(_pcap_chunks(buf, _MAX_CHUNK))


def _pcap_chunks(buf: U8, chunk: int) -> Iterator[Records]:
    """Classic pcap: a 24-byte file header, then (16-byte header, frame) records."""
    head = buf[:4].tobytes()
    if len(buf) < 24 or head not in _PCAP_MAGIC:
        yield _nothing("byte 0: not a pcap or pcapng file (bad magic or shorter than a header)")
        return
    order, ticks_to_ns = _PCAP_MAGIC[head]
    big = order == ">"
    snaplen, network = (int(v) for v in read_u32(buf, np.array([16, 20]), big))
    linktype = network & 0xFFFF  # the upper bits carry FCS information
    offset = 24
    while True:
        room = np.empty((3, min(chunk, (len(buf) - offset) // 16 + 1)), dtype=np.int64)
        found, offset, stop = walk_pcap(
            buf, offset, big, max(snaplen, MAX_CAPLEN), ticks_to_ns, room
        )
        yield Records(
            data_start=room[0, :found],
            caplen=room[1, :found],
            linktype=np.full(found, linktype, dtype=np.int64),
            ts_ns=room[2, :found],
            damage=_pcap_damage(buf, offset, stop, big),
            walked_to=offset,
        )
        if stop != Stop.LIMIT:
            return


def _pcap_damage(buf: U8, offset: int, stop: int, big: bool) -> str | None:
    """What stopped a classic pcap walk at ``offset``, if it was damage."""
    if stop == Stop.SHORT_HEADER:
        return f"byte {offset}: truncated record header ({len(buf) - offset} of 16 bytes)"
    if stop == Stop.FRAME_PAST_END:
        return f"byte {offset}: record truncated (its frame runs past the end of the file)"
    if stop == Stop.IMPLAUSIBLE_CAPLEN:
        caplen = int(read_u32(buf, np.array([offset + 8]), big)[0])
        return f"byte {offset}: implausible captured length {caplen}"
    return None


def _nothing(damage: str) -> Records:
    empty = np.zeros(0, dtype=np.int64)
    return Records(empty, empty, empty, empty, damage)


def _parse_idb(data: memoryview, off: int, length: int, order: str) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", data, off + 8)
    tsresol, tsoffset = 6, 0
    pos, stop = off + 16, off + length - 4
    while pos + 4 <= stop:
        code, size = struct.unpack_from(order + "HH", data, pos)
        if code == 0:
            break
        if pos + 4 + size > stop:
            raise _Damage(f"byte {pos}: interface option runs past its block")
        if code == 9 and size >= 1:
            tsresol = data[pos + 4]
        elif code == 14 and size >= 8:
            tsoffset = struct.unpack_from(order + "q", data, pos + 4)[0]
            if abs(tsoffset) > 1 << 32:
                raise _Damage(f"byte {pos}: implausible timestamp offset {tsoffset}")
        pos += 4 + size + (-size % 4)
    if (tsresol & 0x7F) > 63 or (not tsresol & 0x80 and tsresol > 18):
        raise _Damage(f"byte {off}: unusable timestamp resolution {tsresol:#x}")
    return _Interface(linktype, snaplen, tsresol, tsoffset)


class _Damage(Exception):
    """Internal: stops the pcapng walk at a described place."""


@dataclass(frozen=True)
class _Run:
    """Consecutive packet blocks that share a section and the interfaces declared so far."""

    first: int  # index of its first packet block
    section_base: int  # global index of the section's first interface
    declared: int  # interfaces the section had declared when the run began
    big_endian: bool
    simple: bool


@dataclass
class _PcapngChunk:
    """What one chunk of the block walk collected: packet block offsets, in runs."""

    starts: I64
    runs: list[_Run] = field(default_factory=list)
    damage: str | None = None
    finished: bool = False  # the walk reached the end of the file or damage


@dataclass
class _PcapngWalker:
    """The block walk's position and what it learned so far, carried from chunk to chunk:
    byte order, the current section's interfaces, the last packet's time."""

    buf: U8
    offset: int = 0
    big_endian: bool = False
    section_base: int = -1  # global index of the current section's first interface
    interfaces: list[_Interface] = field(default_factory=list)
    last_ts_ns: int = 0  # simple packet blocks carry no time: they inherit this one

    def header(self, offset: int) -> tuple[int, int]:
        """(block type, block length) at ``offset`` in the current byte order."""
        # struct, not a numpy gather: this runs once per non-enhanced block
        fmt = ">II" if self.big_endian else "<II"
        kind, length = struct.unpack_from(fmt, self.buf.data, offset)
        return int(kind), int(length)

    def walk(self, limit: int) -> _PcapngChunk:
        """Up to ``limit`` packet blocks. Runs of enhanced packet blocks take the compiled walk
        (their lengths and interfaces are validated vectorized afterwards); every other block is
        checked here, one at a time."""
        end = len(self.buf)
        chunk = _PcapngChunk(np.empty(min(limit, (end - self.offset) // 12 + 1), np.int64))
        found = 0
        try:
            while self.offset < end:
                if self.section_base >= 0:
                    run_first = found
                    found, self.offset, stop = self._enhanced_run(chunk.starts, found)
                    if found > run_first:
                        chunk.runs.append(self._run(run_first, simple=False))
                    if stop == Stop.LIMIT or self.offset >= end:
                        break
                if found == len(chunk.starts) and self._next_is_simple_block():
                    break
                found = self._block(chunk, found)
            chunk.finished = self.offset >= end
        except _Damage as damage:
            chunk.damage, chunk.finished = str(damage), True
        chunk.starts = chunk.starts[:found]
        return chunk

    def _enhanced_run(self, starts: I64, found: int) -> tuple[int, int, int]:
        more, offset, stop = walk_enhanced_blocks(
            self.buf, self.offset, self.big_endian, starts[found:]
        )
        return found + more, offset, stop

    def _run(self, first: int, *, simple: bool) -> _Run:
        declared = len(self.interfaces) - self.section_base
        return _Run(first, self.section_base, declared, self.big_endian, simple)

    def _next_is_simple_block(self) -> bool:
        return self.offset + 12 <= len(self.buf) and self.header(self.offset)[0] == _PCAPNG_SPB

    def _block(self, chunk: _PcapngChunk, found: int) -> int:
        """Check the block at the walk's offset and step over it; returns packet blocks found."""
        buf, off, end = self.buf, self.offset, len(self.buf)
        if off + 12 > end:
            raise _Damage(f"byte {off}: truncated block header ({end - off} bytes left)")
        kind, length = self.header(off)
        if kind == _PCAPNG_SHB:
            bom = buf[off + 8 : off + 12].tobytes()
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise _Damage(f"byte {off}: section header with an invalid byte-order magic")
            self.big_endian = bom == b"\x1a\x2b\x3c\x4d"
            kind, length = self.header(off)
            self.section_base = len(self.interfaces)
        elif self.section_base < 0:
            raise _Damage(f"byte {off}: a pcapng file must begin with a section header")
        if length < 12 or length % 4 or off + length > end:
            raise _Damage(f"byte {off}: block length {length} does not fit the file")
        if self.header(off + length - 8)[1] != length:
            raise _Damage(f"byte {off}: block's trailing length differs from its header")
        if kind == _PCAPNG_EPB:
            raise _Damage(f"byte {off}: enhanced packet block too short ({length} bytes)")
        if kind == _PCAPNG_SPB:
            chunk.runs.append(self._run(found, simple=True))
            chunk.starts[found] = off
            found += 1
        elif kind == _PCAPNG_IDB:
            if length < 20:
                raise _Damage(f"byte {off}: interface description block too short")
            order = ">" if self.big_endian else "<"
            self.interfaces.append(_parse_idb(buf.data, off, length, order))
        self.offset = off + length
        return found


def _ticks_to_ns(ticks: npt.NDArray[np.uint64], tsresol: int) -> I64:
    """Convert if_tsresol units to ns (decimal 10^-k, or binary 2^-k when the top bit is set)."""
    if tsresol & 0x80:
        shift = tsresol & 0x7F
        seconds = ticks >> np.uint64(shift)
        frac = ticks & np.uint64((1 << shift) - 1)
        if shift <= 32:
            frac_ns = (frac * np.uint64(1_000_000_000)) >> np.uint64(shift)
        else:
            frac_ns = (frac.astype(np.float64) * (1e9 / 2.0**shift)).astype(np.uint64)
        return (seconds * np.uint64(1_000_000_000) + frac_ns).astype(np.int64)
    if tsresol <= 9:
        return (ticks * np.uint64(10 ** (9 - tsresol))).astype(np.int64)
    return (ticks // np.uint64(10 ** (tsresol - 9))).astype(np.int64)


@dataclass(frozen=True)
class _PacketBlocks:
    """Every packet block's header fields, read at the walk's offsets in one vectorized pass;
    ``bad`` marks blocks whose lengths or interface do not hold together."""

    starts: I64  # byte offset of each block
    big: npt.NDArray[np.bool_]
    simple: npt.NDArray[np.bool_]  # simple packet block (no interface id, no timestamp)
    header_len: I64
    caplen: I64
    iface: I64  # global interface index: the section's first interface + the local id
    undeclared: npt.NDArray[np.bool_]  # names an interface its section has not declared yet
    bad: npt.NDArray[np.bool_]

    def head(self, n: int) -> _PacketBlocks:
        """The first ``n`` blocks: everything before the first damaged one."""
        part = slice(0, n)
        return _PacketBlocks(
            self.starts[part],
            self.big[part],
            self.simple[part],
            self.header_len[part],
            self.caplen[part],
            self.iface[part],
            self.undeclared[part],
            self.bad[part],
        )


def _packet_blocks(walk: _PcapngChunk, buf: U8) -> _PacketBlocks:
    """Read each block's length, trailer, captured length and interface id with the byte order
    and block type of the run it belongs to."""
    starts = walk.starts
    run_first = np.array([run.first for run in walk.runs] + [len(starts)], dtype=np.int64)
    per_run = np.diff(run_first)

    def each(values: list[int] | list[bool]) -> I64:
        return np.repeat(np.array(values, dtype=np.int64), per_run)

    big = each([run.big_endian for run in walk.runs]).astype(bool)
    simple = each([run.simple for run in walk.runs]).astype(bool)
    declared = each([run.declared for run in walk.runs])
    length = read_u32(buf, starts + 4, big)
    fits = (length % 4 == 0) & (starts + length <= len(buf)) & (length >= 12)
    trailer = read_u32(buf, np.where(fits, starts + length - 4, starts), big)
    # enhanced: 28 header bytes before the data; simple: 12 (type, length, original length)
    header_len = np.where(simple, 12, 28)
    orig_len = read_u32(buf, starts + np.where(simple, 8, 24), big)
    room = length - header_len - 4
    caplen = np.where(simple, np.minimum(orig_len, room), read_u32(buf, starts + 20, big))
    local = np.where(simple, 0, read_u32(buf, starts + 8, big))
    undeclared = local >= declared
    bad = ~fits | (trailer != length) | (room < 0) | (caplen > room) | (caplen > MAX_CAPLEN)
    iface = each([run.section_base for run in walk.runs]) + local
    return _PacketBlocks(
        starts, big, simple, header_len, caplen, iface, undeclared, bad | undeclared
    )


def _block_times(
    blocks: _PacketBlocks, interfaces: list[_Interface], buf: U8, previous_ts_ns: int
) -> tuple[I64, I64]:
    """(ts_ns, linktype) per block, each in its interface's timestamp resolution and offset;
    ``previous_ts_ns`` is the time of the packet before the first block."""
    starts, big = blocks.starts, blocks.big
    ticks = (read_u32(buf, starts + 12, big).astype(np.uint64) << np.uint64(32)) | read_u32(
        buf, starts + 16, big
    ).astype(np.uint64)
    ts_ns = np.zeros(len(starts), dtype=np.int64)
    linktype = np.zeros(len(starts), dtype=np.int64)
    for index, interface in enumerate(interfaces):
        rows = blocks.iface == index
        if not rows.any():
            continue
        linktype[rows] = interface.linktype
        ts_ns[rows] = _ticks_to_ns(ticks[rows], interface.tsresol) + (
            interface.tsoffset_s * 1_000_000_000
        )
    # simple packet blocks carry no time: they inherit the previous timed packet's
    last_timed = np.maximum.accumulate(np.where(blocks.simple, -1, np.arange(len(starts))))
    ts_ns = np.where(last_timed >= 0, ts_ns[np.maximum(last_timed, 0)], previous_ts_ns)
    return ts_ns, linktype


def _pcapng_chunks(buf: U8, chunk: int) -> Iterator[Records]:
    """pcapng: sections (each with its byte order) of interfaces and packet blocks."""
    walker = _PcapngWalker(buf)
    while True:
        walk = walker.walk(chunk)
        damage = walk.damage
        blocks = _packet_blocks(walk, buf)
        first = _first_bad(blocks.bad)
        if first < len(blocks.starts):
            undeclared = blocks.undeclared[first]
            problem = "names an undeclared interface" if undeclared else "has inconsistent lengths"
            damage = f"byte {blocks.starts[first]}: packet block {problem}"
        kept = blocks.head(first)
        ts_ns, linktype = _block_times(kept, walker.interfaces, buf, walker.last_ts_ns)
        walker.last_ts_ns = int(ts_ns[-1]) if len(ts_ns) else walker.last_ts_ns
        yield Records(
            data_start=kept.starts + kept.header_len,
            caplen=kept.caplen,
            linktype=linktype,
            ts_ns=ts_ns,
            damage=damage,
            walked_to=walker.offset,
        )
        if walk.finished or damage is not None:
            return
