"""Write packets tables as real pcap / pcapng bytes.

The trace builder and the benchmarks need captures of millions of packets whose content is known
exactly, so that the reader (and the analysis behind it) can be checked against the truth. The
writer is therefore vectorized: each chunk of packets becomes one numpy buffer, headers are
assembled as ``(rows, bytes)`` matrices and scattered into it; payload bytes stay zero unless a
``payload`` column supplies them. Checksums are not computed (no reader in the project checks
them), but every length field is consistent, so tcpdump, tshark and scapy parse the files.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

LINKTYPES: dict[str, int] = {
    "null": 0,
    "ethernet": 1,
    "raw": 101,
    "loop": 108,
    "sll": 113,
    "ipv4": 228,
    "ipv6": 229,
    "sll2": 276,
}
"""Names accepted for ``linktype`` (an int from the tcpdump.org LINKTYPE list also works)."""

_RAW_LINKTYPES = {12, 14, 101, 228, 229}
_CHUNK = 65_536  # rows per scatter: bounds the (rows × header bytes) index matrix to ~40 MB
_MAX_IP_PAYLOAD = 65_535 - 20


@dataclass(frozen=True)
class _Layout:
    """How one capture format frames a record: fixed bytes before and after the link frame."""

    pre: int  # record header bytes
    post: int  # trailer bytes after the (padded) frame
    align: int  # the frame is padded to this multiple


_PCAP = _Layout(pre=16, post=0, align=1)
_PCAPNG_EPB = _Layout(pre=28, post=4, align=4)


def _linktype_number(linktype: str | int) -> int:
    if isinstance(linktype, int):
        return linktype
    try:
        return LINKTYPES[linktype]
    except KeyError:
        raise ValueError(f"unknown linktype {linktype!r}; use one of {sorted(LINKTYPES)}") from None


def _link_header_len(linktype: int) -> int:
    if linktype in _RAW_LINKTYPES:
        return 0
    lengths = {0: 4, 108: 4, 1: 14, 113: 16, 276: 20}
    if linktype not in lengths:
        raise ValueError(f"cannot write linktype {linktype}")
    return lengths[linktype]


def _put(matrix: U8, col: int, values: npt.ArrayLike, dtype: str) -> None:
    """Store ``values`` (one per row) at byte column ``col`` with the given numpy dtype/order."""
    arr = np.asarray(values).astype(dtype)
    width = arr.dtype.itemsize
    matrix[:, col : col + width] = arr.view(np.uint8).reshape(len(arr), width)


def _address_bytes(addresses: pd.Series, width: int) -> U8:
    """Packed addresses, parsing each distinct text once (a capture has few distinct hosts)."""
    codes, uniques = pd.factorize(addresses)
    table = np.zeros((max(len(uniques), 1), width), dtype=np.uint8)
    for i, text in enumerate(uniques):
        packed = ipaddress.ip_address(str(text)).packed
        if len(packed) != width:
            raise ValueError(f"address {text!r} does not match the row's ip_version")
        table[i] = np.frombuffer(packed, dtype=np.uint8)
    result: U8 = table[codes]
    return result


def _link_matrix(linktype: int, ip_version: int, rows: int, big_endian: bool) -> U8:
    width = _link_header_len(linktype)
    m = np.zeros((rows, width), dtype=np.uint8)
    ethertype = 0x0800 if ip_version == 4 else 0x86DD
    if linktype == 1:
        m[:, 0:6] = (0x02, 0, 0, 0, 0, 0x02)
        m[:, 6:12] = (0x02, 0, 0, 0, 0, 0x01)
        _put(m, 12, np.full(rows, ethertype), ">u2")
    elif linktype == 113:
        _put(m, 0, np.zeros(rows), ">u2")  # packet type: to us
        _put(m, 2, np.full(rows, 772), ">u2")  # ARPHRD_LOOPBACK
        _put(m, 4, np.full(rows, 6), ">u2")
        _put(m, 14, np.full(rows, ethertype), ">u2")
    elif linktype == 276:
        _put(m, 0, np.full(rows, ethertype), ">u2")
        _put(m, 4, np.ones(rows), ">u4")  # interface index
        _put(m, 8, np.full(rows, 772), ">u2")
        m[:, 11] = 6
    elif linktype in (0, 108):
        family = 2 if ip_version == 4 else 24  # AF_INET; BSD's AF_INET6 as libpcap writes it
        order = ">" if (linktype == 108 or big_endian) else "<"
        _put(m, 0, np.full(rows, family), order + "u4")
    return m


def _ip_tcp_matrix(chunk: pd.DataFrame, ip_version: int) -> U8:
    rows = len(chunk)
    payload_len = chunk["payload_len"].to_numpy(dtype=np.int64)
    if ip_version == 4:
        ip = np.zeros((rows, 20), dtype=np.uint8)
        ip[:, 0] = 0x45
        _put(ip, 2, 40 + payload_len, ">u2")
        _put(ip, 6, np.full(rows, 0x4000), ">u2")  # don't fragment
        ip[:, 8] = 64
        ip[:, 9] = 6
        ip[:, 12:16] = _address_bytes(chunk["src"], 4)
        ip[:, 16:20] = _address_bytes(chunk["dst"], 4)
        words = ip.view(">u2").astype(np.uint32).sum(axis=1)
        words = (words & 0xFFFF) + (words >> 16)
        words = (words & 0xFFFF) + (words >> 16)
        _put(ip, 10, ~words & 0xFFFF, ">u2")
    else:
        ip = np.zeros((rows, 40), dtype=np.uint8)
        ip[:, 0] = 0x60
        _put(ip, 4, 20 + payload_len, ">u2")
        ip[:, 6] = 6
        ip[:, 7] = 64
        ip[:, 8:24] = _address_bytes(chunk["src"], 16)
        ip[:, 24:40] = _address_bytes(chunk["dst"], 16)
    tcp = np.zeros((rows, 20), dtype=np.uint8)
    _put(tcp, 0, chunk["sport"].to_numpy(), ">u2")
    _put(tcp, 2, chunk["dport"].to_numpy(), ">u2")
    _put(tcp, 4, chunk["seq"].to_numpy(dtype=np.int64) & 0xFFFFFFFF, ">u4")
    _put(tcp, 8, chunk["ack"].to_numpy(dtype=np.int64) & 0xFFFFFFFF, ">u4")
    tcp[:, 12] = 0x50
    _put(tcp, 13, chunk["flags"].to_numpy(dtype=np.int64) & 0xFF, "u1")
    _put(tcp, 14, np.full(rows, 65535), ">u2")
    return np.hstack([ip, tcp])


def _validate(packets: pd.DataFrame) -> None:
    required = ["ts_ns", "src", "dst", "sport", "dport", "flags", "seq", "ack", "payload_len"]
    missing = [c for c in required if c not in packets.columns]
    if missing:
        raise ValueError(f"packets frame lacks columns {missing}")
    payload_len = packets["payload_len"].to_numpy(dtype=np.int64)
    if len(payload_len) and (payload_len.min() < 0 or payload_len.max() > _MAX_IP_PAYLOAD):
        raise ValueError(f"payload_len must be within 0..{_MAX_IP_PAYLOAD}")


def _ip_versions(packets: pd.DataFrame) -> I64:
    if "ip_version" in packets.columns:
        return packets["ip_version"].to_numpy(dtype=np.int64)
    is_v6 = packets["src"].astype(str).str.contains(":", regex=False).to_numpy()
    return np.where(is_v6, 6, 4).astype(np.int64)


class _RecordHeader(Protocol):
    """Builds the per-record bytes in front of each frame (pcap record header or EPB header)."""

    def __call__(self, ts_ns: I64, caplen: I64, orig_len: I64, interface: I64) -> U8: ...


def _pcap_record_header(
    ts_ns: I64, caplen: I64, orig_len: I64, interface: I64, *, order: str, nanosecond: bool
) -> U8:
    m = np.zeros((len(ts_ns), _PCAP.pre), dtype=np.uint8)
    _put(m, 0, ts_ns // 1_000_000_000, order + "u4")
    _put(m, 4, (ts_ns % 1_000_000_000) // (1 if nanosecond else 1000), order + "u4")
    _put(m, 8, caplen, order + "u4")
    _put(m, 12, orig_len, order + "u4")
    return m


def _epb_header(
    ts_ns: I64, caplen: I64, orig_len: I64, interface: I64, *, order: str, tsresol: int
) -> U8:
    m = np.zeros((len(ts_ns), _PCAPNG_EPB.pre), dtype=np.uint8)
    ticks = _ticks(ts_ns, tsresol)
    _put(m, 0, np.full(len(ts_ns), 6), order + "u4")
    _put(m, 4, 32 + (caplen + 3) // 4 * 4, order + "u4")
    _put(m, 8, interface, order + "u4")
    _put(m, 12, ticks >> np.uint64(32), order + "u4")
    _put(m, 16, ticks & np.uint64(0xFFFFFFFF), order + "u4")
    _put(m, 20, caplen, order + "u4")
    _put(m, 24, orig_len, order + "u4")
    return m


def _ticks(ts_ns: I64, tsresol: int) -> npt.NDArray[np.uint64]:
    """Timestamps in if_tsresol units (decimal 10^-k, or binary 2^-k when the top bit is set)."""
    ts = ts_ns.astype(np.uint64)
    if tsresol & 0x80:
        shift = np.uint64(tsresol & 0x7F)
        seconds = ts // np.uint64(1_000_000_000)
        frac = ts % np.uint64(1_000_000_000)
        result: npt.NDArray[np.uint64] = (seconds << shift) + (
            (frac << shift) // np.uint64(1_000_000_000)
        )
        return result
    if tsresol <= 9:
        return ts // np.uint64(10 ** (9 - tsresol))
    return ts * np.uint64(10 ** (tsresol - 9))


def _encode_chunk(
    chunk: pd.DataFrame,
    layout: _Layout,
    linktypes: Sequence[int],
    snaplen: int,
    big_endian: bool,
    record_header: _RecordHeader,
) -> bytes:
    rows = len(chunk)
    versions = _ip_versions(chunk)
    interface = (
        chunk["interface"].to_numpy(dtype=np.int64)
        if "interface" in chunk.columns
        else np.zeros(rows, dtype=np.int64)
    )
    link_len = np.array([_link_header_len(lt) for lt in linktypes], dtype=np.int64)[interface]
    header_len = link_len + np.where(versions == 4, 40, 60)
    orig_len = header_len + chunk["payload_len"].to_numpy(dtype=np.int64)
    caplen = np.minimum(orig_len, snaplen)
    frame_space = (caplen + layout.align - 1) // layout.align * layout.align
    record_len = layout.pre + frame_space + layout.post
    ends = np.cumsum(record_len)
    starts = ends - record_len
    buf = np.zeros(int(ends[-1]) if rows else 0, dtype=np.uint8)
    pre = record_header(chunk["ts_ns"].to_numpy(dtype=np.int64), caplen, orig_len, interface)
    for iface, linktype in enumerate(linktypes):
        for version in (4, 6):
            sel = np.flatnonzero((versions == version) & (interface == iface))
            if not len(sel):
                continue
            sub = chunk.iloc[sel]
            headers = np.hstack(
                [
                    pre[sel],
                    _link_matrix(linktype, version, len(sel), big_endian),
                    _ip_tcp_matrix(sub, version),
                ]
            )
            # a snaplen shorter than the headers cuts them: write only what fits
            width = headers.shape[1]
            index = starts[sel, None] + np.arange(width)
            keep = np.arange(width) < (layout.pre + caplen[sel, None])
            buf[index[keep]] = headers[keep]
    if layout.post:
        trailer = np.zeros((rows, layout.post), dtype=np.uint8)
        _put(trailer, 0, record_len, (">" if big_endian else "<") + "u4")
        buf[(ends - layout.post)[:, None] + np.arange(layout.post)] = trailer
    if "payload" in chunk.columns:
        data_start = starts + layout.pre + header_len
        _scatter_payloads(
            buf, chunk["payload"], data_start, caplen - header_len, orig_len - header_len
        )
    return buf.tobytes()


def _scatter_payloads(
    buf: U8, payloads: pd.Series, data_start: I64, room: I64, payload_len: I64
) -> None:
    """Write each row's payload bytes (what fits in its captured length) at ``data_start``.

    Captures repeat a few payloads many times (one request line, a few responses), so the work
    is one vectorized scatter per distinct payload; a Categorical column of bytes costs nothing
    to group. Rows without payload bytes (None, empty) stay zero.
    """
    codes, uniques = pd.factorize(payloads)
    for code, payload in enumerate(uniques):
        if not isinstance(payload, bytes | bytearray) or not payload:
            continue
        rows = np.flatnonzero(codes == code)
        wrong = rows[payload_len[rows] != len(payload)]
        if len(wrong):
            raise ValueError(
                f"row {wrong[0]}: payload has {len(payload)} bytes, payload_len differs"
            )
        template = np.frombuffer(bytes(payload), dtype=np.uint8)
        width = int(np.clip(room[rows], 0, len(template)).max())
        index = data_start[rows, None] + np.arange(width)
        fits = np.arange(width) < room[rows, None]
        buf[index[fits]] = np.broadcast_to(template[:width], index.shape)[fits]


def _chunks(packets: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(packets), _CHUNK):
        yield packets.iloc[start : start + _CHUNK]


class PacketFileWriter:
    """An open capture file that packets frames are appended to, one after another.

    A capture too large to hold (the trace builder's 100M-packet runs) is written in pieces: the
    file's bytes are the same as one ``write_pcap`` / ``write_pcapng`` of all the pieces joined,
    since every record is encoded on its own.
    """

    def __init__(self, out: BinaryIO, encode: Callable[[pd.DataFrame], bytes]) -> None:
        self._out = out
        self._encode = encode
        self.written = 0

    def write(self, packets: pd.DataFrame) -> int:
        """Append ``packets`` (rows in file order); return how many were written."""
        _validate(packets)
        for chunk in _chunks(packets):
            self._out.write(self._encode(chunk))
        self.written += len(packets)
        return len(packets)


@contextmanager
def open_pcap(
    path: str | Path,
    *,
    linktype: str | int = "ethernet",
    nanosecond: bool = True,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> Iterator[PacketFileWriter]:
    """A classic pcap file open for appending packets frames (``write_pcap`` in pieces)."""
    number = _linktype_number(linktype)
    _link_header_len(number)
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    header = np.array([magic], dtype=order + "u4").tobytes()
    header += np.array([2, 4], dtype=order + "u2").tobytes()
    header += np.array([0, 0, snaplen, number], dtype=order + "u4").tobytes()
    record_header = partial(_pcap_record_header, order=order, nanosecond=nanosecond)
    with open(path, "wb") as out:
        out.write(header)
        yield PacketFileWriter(
            out,
            partial(
                _encode_chunk,
                layout=_PCAP,
                linktypes=[number],
                snaplen=snaplen,
                big_endian=big_endian,
                record_header=record_header,
            ),
        )


def write_pcap(
    path: str | Path,
    packets: pd.DataFrame,
    *,
    linktype: str | int = "ethernet",
    nanosecond: bool = True,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> int:
    """Write a classic pcap file; return the number of packets written."""
    _validate(packets)
    with open_pcap(
        path, linktype=linktype, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen
    ) as writer:
        return writer.write(packets)


def _pcapng_block(block_type: int, body: bytes, order: str) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = np.array([12 + len(body)], dtype=order + "u4").tobytes()
    return np.array([block_type], dtype=order + "u4").tobytes() + length + body + length


@contextmanager
def open_pcapng(
    path: str | Path,
    *,
    linktype: str | int | Sequence[str | int] = "ethernet",
    tsresol: int = 9,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> Iterator[PacketFileWriter]:
    """A one-section pcapng file open for appending packets frames (``write_pcapng`` in
    pieces)."""
    names = [linktype] if isinstance(linktype, str | int) else list(linktype)
    numbers = [_linktype_number(name) for name in names]
    for number in numbers:
        _link_header_len(number)
    order = ">" if big_endian else "<"
    shb = np.array([0x1A2B3C4D], dtype=order + "u4").tobytes()
    shb += np.array([1, 0], dtype=order + "u2").tobytes()
    shb += np.array([-1], dtype=order + "i8").tobytes()
    record_header = partial(_epb_header, order=order, tsresol=tsresol)
    with open(path, "wb") as out:
        out.write(_pcapng_block(0x0A0D0D0A, shb, order))
        for number in numbers:
            idb = np.array([number, 0], dtype=order + "u2").tobytes()
            idb += np.array([snaplen], dtype=order + "u4").tobytes()
            idb += np.array([9, 1], dtype=order + "u2").tobytes() + bytes([tsresol, 0, 0, 0])
            idb += np.array([0, 0], dtype=order + "u2").tobytes()  # opt_endofopt
            out.write(_pcapng_block(1, idb, order))
        yield PacketFileWriter(
            out,
            partial(
                _encode_chunk,
                layout=_PCAPNG_EPB,
                linktypes=numbers,
                snaplen=snaplen,
                big_endian=big_endian,
                record_header=record_header,
            ),
        )


def write_pcapng(
    path: str | Path,
    packets: pd.DataFrame,
    *,
    linktype: str | int | Sequence[str | int] = "ethernet",
    tsresol: int = 9,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> int:
    """Write a one-section pcapng file (SHB, one IDB per linktype, EPBs); return packets written.

    ``linktype`` may be a list: one interface per entry, and the optional ``interface`` column
    says which interface each packet was captured on. ``tsresol`` is the raw if_tsresol byte
    (6 = µs, 9 = ns, 0x80 | k = 2^-k s). Concatenate files to get a multi-section capture.
    """
    _validate(packets)
    with open_pcapng(
        path, linktype=linktype, tsresol=tsresol, big_endian=big_endian, snaplen=snaplen
    ) as writer:
        return writer.write(packets)
