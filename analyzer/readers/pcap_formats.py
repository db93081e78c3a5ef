"""Walk the record structure of classic pcap and pcapng files, without decoding packets.

The walk is the only per-record Python loop of the reader: it computes where each captured
frame starts (record lengths chain one record to the next, so this part is sequential), keeping
only integers. Everything a record says about itself (timestamps, lengths, interface) is gathered
afterwards with vectorized reads at those offsets. Damage stops the walk and is reported with its
byte offset, so a truncated capture still yields every packet before the damage.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

MAX_CAPLEN = 262_144  # libpcap's largest snapshot length; anything above is a corrupt record
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

    @property
    def count(self) -> int:
        return len(self.data_start)

    def slice(self, start: int, stop: int) -> Records:
        part = slice(start, stop)
        return Records(
            self.data_start[part],
            self.caplen[part],
            self.linktype[part],
            self.ts_ns[part],
            self.damage,
        )


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


def scan_pcap(data: bytes, buf: U8) -> Records:
    """Classic pcap: a 24-byte file header, then (16-byte header, frame) records."""
    if len(data) < 24 or data[:4] not in _PCAP_MAGIC:
        return _nothing("byte 0: not a pcap or pcapng file (bad magic or shorter than a header)")
    order, ticks_to_ns = _PCAP_MAGIC[data[:4]]
    snaplen, network = struct.unpack_from(order + "II", data, 16)
    linktype = network & 0xFFFF  # the upper bits carry FCS information
    caplen_at = struct.Struct(order + "I").unpack_from
    offsets = array("q")  # 8 bytes per record, where a list of ints would take ~40
    append = offsets.append
    end = len(data)
    off = 24
    while off + 16 <= end:
        append(off)
        off += 16 + caplen_at(data, off + 8)[0]
    damage = None
    if off > end:  # the last record's frame runs past the end of the file
        off = offsets.pop()
        damage = f"byte {off}: record truncated (its frame runs past the end of the file)"
    elif off < end:
        damage = f"byte {off}: truncated record header ({end - off} of 16 bytes)"
    starts = np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, np.int64)
    big = order == ">"
    caplen = read_u32(buf, starts + 8, big)
    too_long = caplen > max(snaplen, MAX_CAPLEN)
    first = _first_bad(too_long)
    if first < len(starts):
        damage = f"byte {starts[first]}: implausible captured length {caplen[first]}"
        starts, caplen = starts[:first], caplen[:first]
    ts_ns = (
        read_u32(buf, starts, big) * 1_000_000_000 + read_u32(buf, starts + 4, big) * ticks_to_ns
    )
    return Records(
        data_start=starts + 16,
        caplen=caplen,
        linktype=np.full(len(starts), linktype, dtype=np.int64),
        ts_ns=ts_ns,
        damage=damage,
    )


def _nothing(damage: str) -> Records:
    empty = np.zeros(0, dtype=np.int64)
    return Records(empty, empty, empty, empty, damage)


def _parse_idb(data: bytes, off: int, length: int, order: str) -> _Interface:
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
class _PcapngWalk:
    """What the block walk collected: packet block offsets, in runs, and the interfaces."""

    starts: array[int] = field(default_factory=lambda: array("q"))
    runs: list[_Run] = field(default_factory=list)
    interfaces: list[_Interface] = field(default_factory=list)
    damage: str | None = None


def _walk_pcapng(data: bytes) -> _PcapngWalk:
    """Walk the blocks. Runs of enhanced packet blocks take a tight loop that only records
    offsets (their lengths and interfaces are validated vectorized afterwards); every other block
    is checked here, one at a time."""
    walk = _PcapngWalk()
    end = len(data)
    off = 0
    order = "<"
    section_base = -1  # global index of the current section's first interface
    header = {"<": struct.Struct("<II").unpack_from, ">": struct.Struct(">II").unpack_from}
    append = walk.starts.append
    try:
        while off < end:
            if section_base >= 0:
                first, unpack = len(walk.starts), header[order]
                while off + 12 <= end:
                    kind, length = unpack(data, off)
                    if kind != _PCAPNG_EPB or length < 32:
                        break
                    append(off)
                    off += length
                if len(walk.starts) > first:
                    declared = len(walk.interfaces) - section_base
                    walk.runs.append(_Run(first, section_base, declared, order == ">", False))
                if off >= end:
                    break
            if off + 12 > end:
                raise _Damage(f"byte {off}: truncated block header ({end - off} bytes left)")
            kind, length = header[order](data, off)
            if kind == _PCAPNG_SHB:
                bom = data[off + 8 : off + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    raise _Damage(f"byte {off}: section header with an invalid byte-order magic")
                kind, length = header[order](data, off)
                section_base = len(walk.interfaces)
            elif section_base < 0:
                raise _Damage(f"byte {off}: a pcapng file must begin with a section header")
            if length < 12 or length % 4 or off + length > end:
                raise _Damage(f"byte {off}: block length {length} does not fit the file")
            if header[order](data, off + length - 8)[1] != length:
                raise _Damage(f"byte {off}: block's trailing length differs from its header")
            if kind == _PCAPNG_EPB:
                raise _Damage(f"byte {off}: enhanced packet block too short ({length} bytes)")
            if kind == _PCAPNG_SPB:
                declared = len(walk.interfaces) - section_base
                walk.runs.append(_Run(len(walk.starts), section_base, declared, order == ">", True))
                append(off)
            elif kind == _PCAPNG_IDB:
                if length < 20:
                    raise _Damage(f"byte {off}: interface description block too short")
                walk.interfaces.append(_parse_idb(data, off, length, order))
            off += length
    except _Damage as damage:
        walk.damage = str(damage)
    return walk


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


def _packet_blocks(walk: _PcapngWalk, buf: U8) -> _PacketBlocks:
    """Read each block's length, trailer, captured length and interface id with the byte order
    and block type of the run it belongs to."""
    starts = np.frombuffer(walk.starts, dtype=np.int64) if walk.starts else np.zeros(0, np.int64)
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


def _block_times(blocks: _PacketBlocks, interfaces: list[_Interface], buf: U8) -> tuple[I64, I64]:
    """(ts_ns, linktype) per block, each in its interface's timestamp resolution and offset."""
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
    # simple packet blocks carry no time: they inherit the previous timed packet's (or 0)
    last_timed = np.maximum.accumulate(np.where(blocks.simple, -1, np.arange(len(starts))))
    ts_ns = np.where(last_timed >= 0, ts_ns[np.maximum(last_timed, 0)], 0)
    return ts_ns, linktype


def scan_pcapng(data: bytes, buf: U8) -> Records:
    """pcapng: sections (each with its byte order) of interfaces and packet blocks."""
    walk = _walk_pcapng(data)
    damage = walk.damage
    blocks = _packet_blocks(walk, buf)
    first = _first_bad(blocks.bad)
    if first < len(blocks.starts):
        undeclared = blocks.undeclared[first]
        problem = "names an undeclared interface" if undeclared else "has inconsistent lengths"
        damage = f"byte {blocks.starts[first]}: packet block {problem}"
    kept = blocks.head(first)
    ts_ns, linktype = _block_times(kept, walk.interfaces, buf)
    return Records(
        data_start=kept.starts + kept.header_len,
        caplen=kept.caplen,
        linktype=linktype,
        ts_ns=ts_ns,
        damage=damage,
    )
