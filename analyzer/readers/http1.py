"""HTTP/1.x start lines read from the first bytes of TCP payloads, many segments at a time.

A client capture holds millions of data segments; only the few that begin a message matter, and
each is recognised by its first line: ``METHOD SP target SP HTTP/1.x`` for a request,
``HTTP/1.x SP code`` for a response. Every test here is a comparison over a byte matrix of just
the columns it needs (one row per segment, read from ``analyzer.readers.pcap.PayloadPrefixes``),
so no Python code runs per segment. Methods and targets become text in one pass as well: their
bytes are checked to be visible ASCII, gathered into one buffer and handed to Arrow.

A line the snapshot length (or the prefix width) cut is still a request line when what is there
matches, and its target is kept cut (``target_cut``). Fewer bytes than the shortest start line
cannot tell a message start from body bytes: such segments are *undecided* and callers fall back
on who spoke last. TLS is recognised by its handshake record header (type 22, version 3.x).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.readers.pcap import PayloadPrefixes

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

MIN_START_LINE = 16
"""Bytes that decide whether a segment starts a message: ``GET / HTTP/1.1\\r\\n``, the shortest
request line, is 16 bytes, and a status line needs 13; a segment with fewer captured bytes (and
more sent) could be either a start line or body bytes."""

MAX_METHOD = 20
"""Longest method token looked for: registered methods reach 16 bytes (BASELINE-CONTROL); a
longer run of capitals before a space is body text, not a method."""

_FIRST = 32
"""Payload bytes read at once per segment: a method and a short target fit, and so does a status
line. Reading them is one random access per segment, the real cost at a million segments;
lines that go on are read further, block by block, for those segments only."""

_SP, _CR = 0x20, 0x0D
_TLS_HANDSHAKE, _TLS_MAJOR = 0x16, 0x03
_VERSION = b"HTTP/1."


def _lookup(accepted: bytes) -> npt.NDArray[np.bool_]:
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(accepted, dtype=np.uint8)] = True
    return table


_TOKEN = _lookup(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")  # method characters
_INVISIBLE = ~_lookup(bytes(range(0x21, 0x7F)))  # what ends a request target
_DIGIT = _lookup(b"0123456789")


class PayloadKind(StrEnum):
    """What a connection's client payload is, as far as the captured bytes tell."""

    HTTP1 = "http1"  # request lines found: requests are rebuilt one by one
    TLS = "tls"  # a TLS handshake: encrypted, connection-level outcome only
    TRUNCATED = "truncated"  # too few bytes captured to read a start line (snap length)
    NOT_HTTP1 = "not-http1"  # bytes captured, but neither HTTP/1.x nor TLS (HTTP/2, other)
    NONE = "none"  # the client sent no data (refused, timed out, closed idle)


@dataclass(frozen=True)
class RequestLines:
    """Per entry of the rows asked about: is it a request line, its method and target (codes
    into ``methods`` / ``targets``, empty text where none), and does it begin a TLS record."""

    found: Mask
    target_cut: Mask  # the target ran to the end of the bytes at hand: it may be longer
    method: I64
    methods: list[str]
    target: I64
    targets: list[str]
    tls: Mask


def decided(captured: I64, payload_len: I64) -> Mask:
    """Rows whose captured bytes are enough to say whether they start a message."""
    whole = (captured >= payload_len) & (captured > 0)
    return np.asarray((captured >= MIN_START_LINE) | whole, dtype=bool)


def _all(payloads: PayloadPrefixes, rows: I64 | None) -> I64:
    return np.arange(len(payloads.rows), dtype=np.int64) if rows is None else rows


def _word_at(matrix: U8, columns: I64) -> npt.NDArray[np.uint64]:
    """Per row, the 8 bytes of ``matrix`` from the row's own column as one little-endian
    integer: one gather per row instead of one per byte (columns must leave 8 bytes)."""
    flat = np.ascontiguousarray(matrix).reshape(-1)
    if len(flat) < 8:
        return np.zeros(len(matrix), dtype=np.uint64)
    words = np.ndarray((len(flat) - 7,), dtype="<u8", buffer=flat, strides=(1,))
    picked: npt.NDArray[np.uint64] = words[np.arange(len(matrix)) * matrix.shape[1] + columns]
    return picked


def _prefix_of(words: npt.NDArray[np.uint64], pattern: bytes, available: I64) -> Mask:
    """Whether each word begins with as much of ``pattern`` (≤ 8 bytes) as ``available`` bytes
    of it hold."""
    count = np.clip(available, 0, len(pattern)).astype(np.uint64)
    mask = np.where(count >= 8, np.uint64(2**64 - 1), (np.uint64(1) << (count * np.uint64(8))) - 1)
    expected = np.uint64(int.from_bytes(pattern.ljust(8, b"\0"), "little"))
    same: Mask = (words & mask) == (expected & mask)
    return same


def status_lines(payloads: PayloadPrefixes, rows: I64 | None = None) -> tuple[Mask, I64]:
    """Which of ``rows`` (entries of ``payloads``; default all) begin ``HTTP/1.x SP code``
    (code 100..599, then SP, CR or the captured end), and the status code of each (0 elsewhere);
    results are per entry of ``rows``."""
    rows = _all(payloads, rows)
    have = payloads.captured[rows]
    line = payloads.columns(rows, 0, 16)  # "HTTP/1." digit SP three digits, then SP or CR
    found = _prefix_of(
        _word_at(line, np.zeros(len(rows), np.int64)), _VERSION, np.full(len(rows), 7)
    )
    found &= _DIGIT[line[:, 7]] & (line[:, 8] == _SP) & (have >= 12)
    found &= _DIGIT[line[:, 9]] & _DIGIT[line[:, 10]] & _DIGIT[line[:, 11]]
    found &= (line[:, 12] == _SP) | (line[:, 12] == _CR) | (have == 12)
    digits = line[:, 9:12].astype(np.int64) - ord("0")
    code = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    found &= (code >= 100) & (code <= 599)
    return found, np.where(found, code, 0)


def _method_ends(block: U8) -> tuple[Mask, I64]:
    """Which rows begin with a method token (capitals, '-' or '_') then SP, and the SP's column."""
    span = min(block.shape[1], MAX_METHOD + 1)
    token = _TOKEN[block[:, :span]]
    end = token.argmin(axis=1).astype(np.int64)  # the first byte that is no token character
    row = np.arange(len(block))
    found: Mask = (end >= 1) & ~token[row, end] & (block[row, end] == _SP)
    return found, end


def _first_stop(block: U8, first: int, after: I64) -> I64:
    """Per row, the first column of ``block`` (starting at column ``first``) past ``after`` that
    is not visible ASCII (SP, CR, a control or non-ASCII byte, or the zero padding past the
    readable bytes); -1 where the block has none."""
    ends = _INVISIBLE[block] & (first + np.arange(block.shape[1]) > after[:, None])
    at = ends.argmax(axis=1)
    stop: I64 = np.where(ends[np.arange(len(block)), at], first + at, -1)
    return stop


def _line_stops(payloads: PayloadPrefixes, rows: I64, block: U8, after: I64) -> I64:
    """Where each row's target ends: in the first block read, else in the next blocks, read for
    the rows still going only; the width when the line runs past it."""
    stop = _first_stop(block, 0, after)
    for first in range(block.shape[1], payloads.width, _FIRST):
        going = np.flatnonzero(stop < 0)
        if not len(going):
            break
        more = payloads.columns(rows[going], first, min(_FIRST, payloads.width - first))
        stop[going] = _first_stop(more, first, after[going])
    return np.where(stop < 0, payloads.width, stop)


def _after_target(
    payloads: PayloadPrefixes, rows: I64, block: U8, stop: I64, available: I64
) -> Mask:
    """Whether each row's bytes from its target's end read `` HTTP/1.`` as far as the
    ``available`` bytes reach: from the block already read when they lie in it, else read again
    (long targets, for those rows only)."""
    width = block.shape[1]
    words = np.zeros(len(rows), dtype=np.uint64)
    if width >= 8:
        words = _word_at(block, np.minimum(stop, width - 8))
    beyond = np.flatnonzero(stop + 8 > width)
    if len(beyond):
        words[beyond] = payloads.columns(rows[beyond], stop[beyond], 8).view("<u8")[:, 0]
    return _prefix_of(words, b" HTTP/1.", available)


def request_lines(payloads: PayloadPrefixes, rows: I64 | None = None) -> RequestLines:
    """Which of ``rows`` (entries of ``payloads``; default all) begin ``METHOD SP target SP
    HTTP/1.x``, or that line cut by the bytes at hand, with their methods and targets, and
    which begin a TLS record; results are per entry of ``rows``.

    The first ``_FIRST`` bytes of every row are read once; only targets that go on past them are
    read further.
    """
    rows = _all(payloads, rows)
    have = payloads.captured[rows]
    block = payloads.columns(rows, 0, min(_FIRST, payloads.width))
    tls = (block[:, 0] == _TLS_HANDSHAKE) & (block[:, 1] == _TLS_MAJOR) & (have >= 2)
    method_ok, method_end = _method_ends(block)
    found = method_ok & (have > method_end + 1)
    target_end = np.zeros(len(rows), dtype=np.int64)
    cut = np.zeros(len(rows), dtype=bool)
    lines = np.flatnonzero(found)
    if len(lines):
        limit = have[lines]
        line_block = block if len(lines) == len(rows) else block[lines]
        stop = _line_stops(payloads, rows[lines], line_block, method_end[lines])
        ran_out = stop >= limit
        version = _after_target(payloads, rows[lines], line_block, stop, limit - stop)
        ok = (stop > method_end[lines] + 1) & (ran_out | version)
        found[lines] = ok
        target_end[lines] = np.where(ok, np.minimum(stop, limit), 0)
        cut[lines] = ran_out & ok
    method_end = np.where(found, method_end, 0)
    method, methods = _texts(payloads, rows, block, np.zeros(len(rows), np.int64), method_end)
    target, targets = _texts(payloads, rows, block, method_end + 1, target_end)
    return RequestLines(found, cut, method, methods, target, targets, tls)


def _texts(
    payloads: PayloadPrefixes, rows: I64, block: U8, begin: I64, end: I64
) -> tuple[I64, list[str]]:
    """Bytes ``[begin, end)`` of each row as text codes: from the block already read, and for
    the rows whose text goes on past it, from one more read of those rows."""
    long = np.flatnonzero(end > block.shape[1])
    if not len(long):
        return text_codes(block, begin, end)
    codes, texts = text_codes(block, begin, np.where(end > block.shape[1], begin, end))
    wide = payloads.columns(rows[long], 0, int(end[long].max()))
    long_codes, long_texts = text_codes(wide, begin[long], end[long])
    codes[long] = long_codes + len(texts)
    return codes, texts + long_texts


def text_codes(matrix: U8, begin: I64, end: I64) -> tuple[I64, list[str]]:
    """Bytes ``[begin, end)`` of each row of ``matrix`` as texts: a code per row into a list of
    the distinct texts (empty where end ≤ begin).

    The bytes must be visible ASCII (``request_lines`` checks them), so they are valid UTF-8.
    Every row's slice is gathered into one buffer by a boolean mask (row-major order keeps the
    slices in row order), which Arrow reads as a string array and encodes, with no Python loop.
    """
    length = np.maximum(end - begin, 0)
    width = int(end.max(initial=0))
    columns = np.arange(width)
    inside = (columns >= begin[:, None]) & (columns < (begin + length)[:, None])
    data = np.ascontiguousarray(matrix[:, :width][inside])
    offsets = np.concatenate(([0], np.cumsum(length))).astype(np.int64)
    array = pa.Array.from_buffers(
        pa.large_string(), len(length), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    encoded = pc.dictionary_encode(array)
    codes: I64 = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, [str(text) for text in encoded.dictionary.to_pylist()]
