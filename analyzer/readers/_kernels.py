"""Compiled loops of the capture reader: the record walks, the header decode, the copies.

A record's length says where the next record starts, so finding the frames is a loop that
cannot be vectorized. In Python it cost one ``struct.unpack_from`` per record, the largest single
share of the reader's CPU; compiled by numba it runs at memory speed. Each walk stops after
``limit`` records so that a caller reads a file in bounded chunks, and reports why it stopped.
``decode_tcp`` reads each frame's headers where the link layer and IP options put them,
``mark_copies`` finds loopback copies with hash chains that carry from one chunk to the next,
and ``number_values`` numbers a chunk's address keys.

The functions are compiled on first use and cached next to this module (``__pycache__``), so
only the first process after an install (or a change of this file) pays the compilation.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

F = TypeVar("F", bound=Callable[..., Any])
#: The analyzer's one way to compile a kernel: on first use, cached in __pycache__ for later
#: processes, releasing the GIL (the packets.parquet writer thread runs alongside).
compiled = cast(Callable[[F], F], numba.njit(cache=True, nogil=True))

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


class Stop(IntEnum):
    """Why a walk returned."""

    LIMIT = 0  # ``limit`` records found and more follow
    END = 1  # the last record ends where the file does
    SHORT_HEADER = 2  # bytes remain after the last record, fewer than a record header
    FRAME_PAST_END = 3  # the next record's frame runs past the end of the file
    IMPLAUSIBLE_CAPLEN = 4  # the next record claims more captured bytes than any capture keeps
    OTHER_BLOCK = 5  # pcapng: the next block is not an enhanced packet block


@compiled
def _u32(buf: U8, pos: int, big_endian: bool) -> int:
    b0, b1 = np.int64(buf[pos]), np.int64(buf[pos + 1])
    b2, b3 = np.int64(buf[pos + 2]), np.int64(buf[pos + 3])
    if big_endian:
        return int((b0 << 24) | (b1 << 16) | (b2 << 8) | b3)
    return int((b3 << 24) | (b2 << 16) | (b1 << 8) | b0)


@compiled
def walk_pcap(
    buf: U8,
    offset: int,
    big_endian: bool,
    max_caplen: int,
    ticks_to_ns: int,
    out: npt.NDArray[np.int64],
) -> tuple[int, int, int]:
    """Classic pcap records from ``offset``: fills ``out`` (3 × limit: frame offset, captured
    length, time in ns) and returns (records found, offset of the next record, ``Stop``).

    A record is taken only when its frame lies within the file and its captured length is
    plausible, so the records before the returned offset are all whole.
    """
    end = len(buf)
    limit = out.shape[1]
    found = 0
    while True:
        if offset + 16 > end:
            return found, offset, Stop.END if offset == end else Stop.SHORT_HEADER
        caplen = _u32(buf, offset + 8, big_endian)
        if offset + 16 + caplen > end:
            return found, offset, Stop.FRAME_PAST_END
        if caplen > max_caplen:
            return found, offset, Stop.IMPLAUSIBLE_CAPLEN
        if found == limit:
            return found, offset, Stop.LIMIT
        seconds = _u32(buf, offset, big_endian)
        ticks = _u32(buf, offset + 4, big_endian)
        out[0, found] = offset + 16
        out[1, found] = caplen
        out[2, found] = seconds * 1_000_000_000 + ticks * ticks_to_ns
        found += 1
        offset += 16 + caplen


@compiled
def walk_enhanced_blocks(
    buf: U8, offset: int, big_endian: bool, out: npt.NDArray[np.int64]
) -> tuple[int, int, int]:
    """A run of pcapng enhanced packet blocks from ``offset``: fills ``out`` with their offsets
    and returns (blocks found, offset after them, ``Stop``). Only the block type and a minimal
    length are checked here; the caller validates every block's fields vectorized."""
    end = len(buf)
    limit = len(out)
    found = 0
    while offset + 12 <= end:
        kind = _u32(buf, offset, big_endian)
        length = _u32(buf, offset + 4, big_endian)
        if kind != 6 or length < 32:
            return found, offset, Stop.OTHER_BLOCK
        if found == limit:
            return found, offset, Stop.LIMIT
        out[found] = offset
        found += 1
        offset += length
    return found, offset, Stop.END


# Rows of ``decode_tcp``'s output, one field each. The first SEGMENT_KEY_FIELDS rows are what
# makes two captured segments the same segment, then its time: ``mark_copies`` reads them as
# one block (``out[:SEGMENT_KEY_FIELDS + 1]``, a view).
(
    SRC_KEY,  # an IPv4 address's value; an IPv6 address's 64-bit hash with the top bit set
    DST_KEY,
    SPORT,
    DPORT,
    SEQ,
    ACK,
    FLAGS,
    PAYLOAD_LEN,
    TS,
    KEEP,
    VERSION,
    PAYLOAD_REL,
    IP_REL,  # where the IP header starts in the frame (an IPv6 address is read from there)
) = range(13)
DECODED_FIELDS = 13
SEGMENT_KEY_FIELDS = 8

_VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, Darwin
_IPV6_EXTENSIONS = (0, 43, 44, 51, 60)  # hop-by-hop, routing, fragment, AH, destination options
_MAX_EXTENSIONS = 8
_TCP = 6


@compiled
def _byte(buf: U8, pos: int) -> int:
    """The byte at ``pos``, 0 past the end of the file (callers check captured lengths)."""
    return int(buf[pos]) if pos < len(buf) else 0


@compiled
def _be16(buf: U8, pos: int) -> int:
    return (_byte(buf, pos) << 8) | _byte(buf, pos + 1)


@compiled
def _be32(buf: U8, pos: int) -> int:
    return (_be16(buf, pos) << 16) | _be16(buf, pos + 2)


@compiled
def _network_layer(buf: U8, frame: int, linktype: int) -> tuple[int, int]:
    """(offset of the IP header in the frame, IP version the link layer gives; 0: not IP)."""
    ethertype = 0
    if linktype == 1:  # Ethernet, with up to two VLAN tags (802.1Q, QinQ's outer tag)
        ip_rel = 14
        ethertype = _be16(buf, frame + 12)
        for _tag in range(2):
            if ethertype in _VLAN_ETHERTYPES:
                ethertype = _be16(buf, frame + ip_rel + 2)
                ip_rel += 4
    elif linktype == 113:  # Linux cooked v1
        ip_rel, ethertype = 16, _be16(buf, frame + 14)
    elif linktype == 276:  # Linux cooked v2
        ip_rel, ethertype = 20, _be16(buf, frame)
    elif linktype in (12, 14, 101):  # raw IP
        return 0, _byte(buf, frame) >> 4
    elif linktype == 228 or linktype == 229:  # raw IPv4, raw IPv6
        return 0, 4 if linktype == 228 else 6
    elif linktype == 0 or linktype == 108:  # BSD loopback: a 4-byte family in either order
        first, last = _byte(buf, frame), _byte(buf, frame + 3)
        family = first if first != 0 else last
        return 4, 4 if family == 2 else (6 if family in _AF_INET6 else 0)
    else:
        return 0, 0
    return ip_rel, 4 if ethertype == 0x0800 else (6 if ethertype == 0x86DD else 0)


@compiled
def _ipv6_transport(buf: U8, ip: int) -> tuple[int, int, bool]:
    """(TCP header offset from the IP header, IP payload bytes after the header chain, is TCP
    in a first fragment), walking up to _MAX_EXTENSIONS extension headers."""
    next_header = _byte(buf, ip + 6)
    remaining = _be16(buf, ip + 4)
    rel = 40
    ok = True
    for _hop in range(_MAX_EXTENSIONS):
        if not ok or next_header not in _IPV6_EXTENSIONS:
            break
        ext = ip + rel
        if next_header == 44:  # fragment: TCP only in first fragments
            ok = (_be16(buf, ext + 2) >> 3) == 0
            length = 8
        elif next_header == 51:  # authentication header counts 4-byte words
            length = (_byte(buf, ext + 1) + 2) * 4
        else:
            length = (_byte(buf, ext + 1) + 1) * 8
        next_header = _byte(buf, ext)
        rel += length
        remaining -= length
    return rel, remaining, ok and next_header == _TCP and remaining >= 0


@compiled
def _decode_one(buf: U8, frame: int, caplen: int, linktype: int, out: I64, row: int) -> None:
    ip_rel, version = _network_layer(buf, frame, linktype)
    ip = frame + ip_rel
    if (version != 4 and version != 6) or _byte(buf, ip) >> 4 != version:
        return  # not IP, or the IP header disagrees with the link layer
    if version == 4:
        if ip_rel + 20 > caplen:
            return
        ihl = (_byte(buf, ip) & 0x0F) * 4
        total = _be16(buf, ip + 2)
        first_fragment = (_be16(buf, ip + 6) & 0x1FFF) == 0
        ok = ihl >= 20 and total >= ihl and _byte(buf, ip + 9) == _TCP and first_fragment
        tcp_rel, ip_payload = ihl, total - ihl
        out[SRC_KEY, row], out[DST_KEY, row] = _be32(buf, ip + 12), _be32(buf, ip + 16)
    else:
        if ip_rel + 40 > caplen:
            return
        tcp_rel, ip_payload, ok = _ipv6_transport(buf, ip)
    tcp_rel += ip_rel  # from the frame's start
    if not ok or tcp_rel + 20 > caplen:
        return
    tcp = frame + tcp_rel
    header_len = (_byte(buf, tcp + 12) >> 4) * 4
    payload_len = ip_payload - header_len
    if header_len < 20 or payload_len < 0:
        return
    out[KEEP, row], out[VERSION, row] = 1, version
    out[SPORT, row], out[DPORT, row] = _be16(buf, tcp), _be16(buf, tcp + 2)
    out[FLAGS, row] = _byte(buf, tcp + 13)
    out[SEQ, row], out[ACK, row] = _be32(buf, tcp + 4), _be32(buf, tcp + 8)
    out[PAYLOAD_LEN, row], out[PAYLOAD_REL, row] = payload_len, tcp_rel + header_len
    out[IP_REL, row] = ip_rel
    if version == 6:
        out[SRC_KEY, row], out[DST_KEY, row] = _ipv6_key(buf, ip + 8), _ipv6_key(buf, ip + 24)


@compiled
def _ipv6_key(buf: U8, pos: int) -> int:
    """An IPv6 address as an integer that no IPv4 address is: its 64-bit hash (FNV-style
    multiply and xor-shift of its two halves) with the top bit set; two IPv6 addresses share
    it with odds of 2^-63."""
    digest = np.uint64(0)
    for half in range(2):
        word = np.uint64(0)
        for i in range(8):
            word = (word << np.uint64(8)) | np.uint64(_byte(buf, pos + 8 * half + i))
        digest = _mix(digest, word)
    return int(np.int64(digest | np.uint64(1 << 63)))


@compiled
def _mix(digest: np.uint64, word: np.uint64) -> np.uint64:
    """One step of the 64-bit hash of ``_ipv6_key`` and ``_key_digest``: FNV-style multiply,
    then xor-shift."""
    digest = (digest ^ word) * np.uint64(0x100000001B3)
    return digest ^ (digest >> np.uint64(29))


@compiled
def decode_tcp(buf: U8, frame: I64, caplen: I64, linktype: I64, ts_ns: I64, out: I64) -> None:
    """Decode each frame's link, IP and TCP headers into ``out`` (DECODED_FIELDS × frames, from
    zeros); ``out[KEEP]`` is 1 where the frame is a whole TCP header (not a non-first fragment,
    not cut by the snapshot length)."""
    for row in range(len(frame)):
        out[TS, row] = ts_ns[row]
        _decode_one(buf, frame[row], caplen[row], linktype[row], out, row)


@compiled
def _field(seen: I64, fresh: I64, field: int, row: int) -> int:
    """Row ``row`` of ``seen`` then ``fresh`` (fields × rows each), field ``field``."""
    before = seen.shape[1]
    return int(seen[field, row] if row < before else fresh[field, row - before])


@compiled
def _same_key(seen: I64, fresh: I64, earlier: int, later: int) -> bool:
    for field in range(SEGMENT_KEY_FIELDS):
        if _field(seen, fresh, field, earlier) != _field(seen, fresh, field, later):
            return False
    return True


@compiled
def _key_digest(fresh: I64, row: int) -> np.uint64:
    """A 64-bit hash of a row's segment key (``_mix`` per field)."""
    digest = np.uint64(0)
    for field in range(SEGMENT_KEY_FIELDS):
        digest = _mix(digest, np.uint64(fresh[field, row]))
    return digest


@compiled
def mark_copies(
    seen: I64,
    fresh: I64,
    first_row: int,
    heads: I64,
    chain: I64,
    chain_digests: npt.NDArray[np.uint64],
    window_ns: int,
    copy: npt.NDArray[np.bool_],
) -> None:
    """Set ``copy`` for the ``fresh`` rows whose previous row with the same segment key (the
    first SEGMENT_KEY_FIELDS fields) is at most ``len(chain)`` rows back and within
    ``window_ns`` (field TS). ``seen`` holds the rows just before ``fresh`` (fields × rows
    each, ``decode_tcp``'s first fields); rows are numbered across calls, ``fresh``'s first
    being ``first_row``.

    The rows of the last ``len(chain)`` are found as in LZ77's match finder: ``heads`` holds,
    per hash bucket, the newest row whose key hashes there, and ``chain`` (a ring indexed by
    row) each row's previous row in its bucket. Both stay small enough for the CPU's caches and
    carry over to the next call; sorting the keys cost n log n."""
    lookback, buckets = len(chain), len(heads)
    before = seen.shape[1]
    for at in range(fresh.shape[1]):
        row, local = first_row + at, before + at
        digest = _key_digest(fresh, at)
        bucket = np.int64(digest >> np.uint64(1)) % buckets
        earlier = heads[bucket]
        while earlier >= row - lookback:
            earlier_local = earlier - first_row + before
            if chain_digests[earlier % lookback] == digest and _same_key(
                seen, fresh, earlier_local, local
            ):
                gap = _field(seen, fresh, TS, local) - _field(seen, fresh, TS, earlier_local)
                copy[at] = abs(gap) <= window_ns
                break
            earlier = chain[earlier % lookback]
        chain[row % lookback], chain_digests[row % lookback] = heads[bucket], digest
        heads[bucket] = row


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: Fibonacci hashing


@compiled
def number_values(values: I64, slots: I64, bits: int, numbered: I64, codes: I64) -> int:
    """Number ``values`` in order of first appearance, as ``pd.factorize`` does: ``codes[i]``
    is the number of ``values[i]`` and ``numbered[c]`` the value numbered ``c``; returns how
    many there are. ``slots`` is the hash table: ``2**bits`` entries, at least twice as many as
    ``values``, all -1 (free); an entry holds a number. A capture point's packets carry a few
    dozen addresses, so the probes stay in the cache, where a general hash table's do not."""
    mask = len(slots) - 1
    shift = np.uint64(64 - bits)
    count = 0
    for i in range(len(values)):
        value = values[i]
        slot = np.int64((np.uint64(value) * _GOLDEN) >> shift)
        while True:
            number = slots[slot]
            if number < 0:
                slots[slot] = count
                numbered[count] = value
                codes[i] = count
                count += 1
                break
            if numbered[number] == value:
                codes[i] = number
                break
            slot = (slot + 1) & mask
    return count
