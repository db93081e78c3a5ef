"""read_pcap against the truth (the frame the writer was given) and against scapy, field by field.

Every capture here is read twice: by our vectorized reader and by scapy, an independent parser.
The tcpdump-written captures are in test_pcap_tcpdump.py; damage and fuzzing in test_fuzz_pcap.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgReader, PcapReader, wrpcap

from analyzer import read_pcap
from analyzer.errors import TraceError
from analyzer.pcap_writer import write_pcap, write_pcapng
from analyzer.schema import PACKETS, check_frame

FIELDS = ["ts_ns", "src", "dst", "sport", "dport", "flags", "seq", "ack", "payload_len"]


def scapy_packets(path: Path, limit: int | None = None) -> pd.DataFrame:
    """The reference: scapy's parse of every TCP segment, payload length from the IP lengths."""
    reader = PcapNgReader if path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a" else PcapReader
    rows = []
    with reader(str(path)) as packets:
        for index, packet in enumerate(packets):
            if limit is not None and index >= limit:
                break
            if TCP not in packet:
                continue
            tcp = packet[TCP]
            if IP in packet:
                ip = packet[IP]
                if ip.frag:
                    continue
                payload_len = ip.len - ip.ihl * 4 - tcp.dataofs * 4
            else:
                ip = packet[IPv6]
                if IPv6ExtHdrFragment in packet and packet[IPv6ExtHdrFragment].offset:
                    continue
                extensions = len(bytes(ip.payload)) - len(bytes(tcp))
                payload_len = ip.plen - extensions - tcp.dataofs * 4
            rows.append(
                {
                    "ts_ns": int(packet.time * 1_000_000_000),
                    "src": ip.src,
                    "dst": ip.dst,
                    "sport": tcp.sport,
                    "dport": tcp.dport,
                    "flags": int(tcp.flags) & 0xFF,
                    "seq": tcp.seq,
                    "ack": tcp.ack,
                    "payload_len": payload_len,
                }
            )
    return pd.DataFrame(rows, columns=FIELDS)


def assert_same(ours: pd.DataFrame, reference: pd.DataFrame, ts_tolerance_ns: int = 0) -> None:
    assert len(ours) == len(reference), (len(ours), len(reference))
    assert len(ours) > 0
    for field in FIELDS:
        got = ours[field].astype(object if field in ("src", "dst") else "int64").to_numpy()
        want = reference[field].astype(object if field in ("src", "dst") else "int64").to_numpy()
        if field == "ts_ns" and ts_tolerance_ns:
            assert np.abs(got - want).max() <= ts_tolerance_ns, field
        else:
            mismatch = np.flatnonzero(got != want)
            assert not len(mismatch), (
                f"{field} differs at rows {mismatch[:5]}: {got[mismatch[:5]]} vs {want[mismatch[:5]]}"
            )


def traffic(n: int = 60, *, ipv6: bool = True, seed: int = 7) -> pd.DataFrame:
    """A packets frame with both IP versions, every flag bit, extreme seq/ack and payloads."""
    rng = np.random.default_rng(seed)
    version = np.where(rng.random(n) < 0.3, 6, 4) if ipv6 else np.full(n, 4)
    src4 = np.array(["10.0.0.1", "10.0.0.2", "192.168.255.254"])
    src6 = np.array(["fd00::1", "2001:db8::abcd:1", "::1"])
    return pd.DataFrame(
        {
            "ts_ns": 1_700_000_000_000_000_000 + np.cumsum(rng.integers(1_000, 10**9, n)),
            "capture": "t",
            "src": np.where(version == 4, src4[rng.integers(0, 3, n)], src6[rng.integers(0, 3, n)]),
            "dst": np.where(version == 4, src4[rng.integers(0, 3, n)], src6[rng.integers(0, 3, n)]),
            "sport": rng.integers(0, 65536, n),
            "dport": rng.integers(0, 65536, n),
            "flags": rng.integers(0, 256, n),
            "seq": np.r_[[0, 2**32 - 1], rng.integers(0, 2**32, n - 2)],
            "ack": np.r_[[2**32 - 1, 0], rng.integers(0, 2**32, n - 2)],
            "payload_len": np.r_[[0, 1460, 65_000], rng.integers(0, 2000, n - 3)],
            "ip_version": version,
        }
    )


def _truth(frame: pd.DataFrame, nanosecond: bool = True) -> pd.DataFrame:
    truth = frame.copy()
    if not nanosecond:
        truth["ts_ns"] = truth["ts_ns"] // 1000 * 1000
    return truth


@pytest.mark.parametrize("linktype", ["ethernet", "raw", "sll", "sll2", "null", "loop", 12, 14])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_link_types_byte_orders_and_resolutions(
    tmp_path: Path, linktype: str | int, big_endian: bool, nanosecond: bool
) -> None:
    frame = traffic()
    path = tmp_path / "client.pcap"
    write_pcap(
        path, frame, linktype=linktype, big_endian=big_endian, nanosecond=nanosecond, snaplen=96
    )
    ours = read_pcap(path)
    check_frame(ours, PACKETS, "test")
    assert (ours["capture"] == "client").all()
    assert ours["ip_version"].tolist() == frame["ip_version"].tolist()
    assert_same(ours, _truth(frame, nanosecond))
    # scapy reads DLT_NULL's family in the *reader's* byte order, knows no AF_INET6 = 24 and
    # not OpenBSD's DLT_RAW (14): there the written frame is the only reference
    if linktype != 14 and (linktype != "null" or not big_endian):
        reference = scapy_packets(path)
        if linktype in ("null", "loop"):
            ours = ours[ours["ip_version"] == 4].reset_index(drop=True)
        assert_same(ours, reference)


@pytest.mark.parametrize("linktype", ["ipv4", "ipv6"])
def test_single_version_raw_link_types(tmp_path: Path, linktype: str) -> None:
    frame = traffic(ipv6=True)
    frame = frame[frame["ip_version"] == (4 if linktype == "ipv4" else 6)].reset_index(drop=True)
    path = tmp_path / "raw.pcap"
    write_pcap(path, frame, linktype=linktype)
    assert_same(read_pcap(path), frame)


@pytest.mark.parametrize("tsresol", [9, 6, 3, 0x80 | 20, 0x80 | 30])
@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_resolutions(tmp_path: Path, tsresol: int, big_endian: bool) -> None:
    frame = traffic()
    path = tmp_path / "c.pcapng"
    write_pcapng(path, frame, tsresol=tsresol, big_endian=big_endian)
    ours = read_pcap(path)
    if tsresol & 0x80:
        tolerance = int(1e9 / 2 ** (tsresol & 0x7F)) + 1
    else:
        tolerance = 0
        frame = frame.assign(ts_ns=frame["ts_ns"] // 10 ** (9 - tsresol) * 10 ** (9 - tsresol))
    assert_same(ours, frame, ts_tolerance_ns=tolerance)
    assert_same(
        ours, scapy_packets(path), ts_tolerance_ns=max(tolerance, 1000 if tsresol & 0x80 else 0)
    )


def test_pcapng_interfaces_with_different_link_types_and_sections(tmp_path: Path) -> None:
    frame = traffic(90).assign(interface=np.arange(90) % 3)
    first, second = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    write_pcapng(first, frame.iloc[:45], linktype=["ethernet", "sll2", "raw"])
    write_pcapng(second, frame.iloc[45:], linktype=["null", "sll", "ethernet"], big_endian=True)
    both = tmp_path / "both.pcapng"
    both.write_bytes(first.read_bytes() + second.read_bytes())  # two sections, two byte orders
    ours = read_pcap(both)
    assert_same(ours, frame)


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def _blocks(data: bytes) -> list[bytes]:
    blocks, off = [], 0
    while off < len(data):
        length = struct.unpack_from("<I", data, off + 4)[0]
        blocks.append(data[off : off + length])
        off += length
    return blocks


def test_pcapng_simple_packet_blocks_and_unknown_blocks(tmp_path: Path) -> None:
    frame = traffic(4, ipv6=False)
    written = tmp_path / "w.pcapng"
    write_pcapng(written, frame, linktype="raw")
    shb, idb, *epbs = _blocks(written.read_bytes())
    packet = bytes(
        IP(src="10.9.9.9", dst="10.8.8.8") / TCP(sport=1, dport=2, flags="S", seq=5) / Raw(b"xyz")
    )
    spb = _block(3, struct.pack("<I", len(packet)) + packet)
    unknown = _block(0x0BAD, b"custom block content")
    name_resolution = _block(4, b"\0\0\0\0")
    crafted = tmp_path / "crafted.pcapng"
    crafted.write_bytes(b"".join([shb, idb, unknown, *epbs[:2], name_resolution, spb, *epbs[2:]]))
    ours = read_pcap(crafted)
    assert len(ours) == 5
    spb_row = ours.iloc[2]
    assert (spb_row["src"], spb_row["dport"], spb_row["flags"]) == ("10.9.9.9", 2, 2)
    assert (spb_row["seq"], spb_row["payload_len"]) == (5, 3)
    assert spb_row["ts_ns"] == frame["ts_ns"].iloc[1]  # no time of its own: the previous one's
    assert_same(ours.drop(index=2).reset_index(drop=True), frame)


def test_headers_scapy_built(tmp_path: Path) -> None:
    """VLAN tags, IPv4 options, IPv6 extension headers, fragments, non-TCP: as another tool wrote them."""
    t = TCP(sport=40000, dport=80, flags="PA", seq=100, ack=200)
    packets = [
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / t / Raw(b"a" * 10),
        Ether() / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / t / Raw(b"b" * 11),
        Ether()
        / Dot1AD(vlan=7)
        / Dot1Q(vlan=5)
        / IP(src="10.0.0.3", dst="10.0.0.2")
        / t
        / Raw(b"c"),
        Ether()
        / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00")
        / t
        / Raw(b"d" * 3),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", frag=0) / t / Raw(b"e" * 8),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2", frag=3, proto=6) / Raw(b"\0" * 30),
        Ether()
        / IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / t
        / Raw(b"f" * 5),
        Ether() / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrRouting(addresses=["fd00::9"]) / t,
        Ether()
        / IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrFragment(offset=0, m=1)
        / t
        / Raw(b"g" * 16),
        Ether()
        / IPv6(src="fd00::1", dst="fd00::2")
        / IPv6ExtHdrFragment(offset=8, nh=6)
        / Raw(b"\0" * 24),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=53, dport=53) / Raw(b"q"),
        Ether() / ARP(),
        Ether()
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=1, dport=2, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]),
    ]
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000 + i / 8
    path = tmp_path / "scapy.pcap"
    wrpcap(str(path), packets)
    ours = read_pcap(path, dedupe_loopback=False)
    assert ours["payload_len"].tolist() == [10, 11, 1, 3, 8, 5, 0, 16, 0]
    assert_same(ours, scapy_packets(path))


def test_cooked_capture_written_by_scapy(tmp_path: Path) -> None:
    packets = [
        CookedLinux(pkttype=pkttype, proto=0x0800)
        / IP(src="127.0.0.1", dst="127.0.0.1")
        / TCP(sport=5, dport=6, seq=i)
        / Raw(b"x" * i)
        for i, pkttype in enumerate([0, 4, 0, 4])
    ]
    path = tmp_path / "any.pcap"
    wrpcap(str(path), packets)
    assert_same(read_pcap(path), scapy_packets(path))


def test_snaplen_truncation_keeps_payload_lengths_from_ip(tmp_path: Path) -> None:
    frame = traffic()
    path = tmp_path / "short.pcap"
    write_pcap(path, frame, snaplen=68)  # enough for Ethernet+IPv4+TCP, cuts IPv6 TCP headers
    ours = read_pcap(path)
    v4 = frame[frame["ip_version"] == 4].reset_index(drop=True)
    assert_same(ours, v4)  # IPv6 rows lost their TCP header to the snaplen: dropped, not invented


def test_loopback_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    frame = traffic(40, ipv6=False)
    copies = frame.assign(ts_ns=frame["ts_ns"] + 20_000)  # the incoming copy, 20 µs later
    retransmission = frame.iloc[[3]].assign(ts_ns=frame["ts_ns"].iloc[3] + 200_000_000)
    doubled = pd.concat([frame, copies, retransmission]).sort_values("ts_ns", kind="stable")
    path = tmp_path / "lo.pcap"
    write_pcap(path, doubled, linktype="sll")
    ours = read_pcap(path)
    assert ours.attrs["duplicates_dropped"] == 40
    expected = (
        pd.concat([frame, retransmission])
        .sort_values("ts_ns", kind="stable")
        .reset_index(drop=True)
    )
    assert_same(ours, expected)
    assert len(read_pcap(path, dedupe_loopback=False)) == 81
    assert read_pcap(path, dedupe_loopback=False).attrs["duplicates_dropped"] == 0


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    write_pcap(path, traffic().iloc[:0])
    ours = read_pcap(path)
    assert len(ours) == 0
    check_frame(ours, PACKETS, "test")
    nothing = tmp_path / "nothing.pcap"
    nothing.write_bytes(b"")
    with pytest.raises(TraceError, match="byte 0"):
        read_pcap(nothing)


@pytest.mark.parametrize("pcapng", [False, True])
def test_truncated_capture_keeps_the_packets_before_the_damage(
    tmp_path: Path, pcapng: bool
) -> None:
    frame = traffic(30, ipv6=False).assign(payload_len=10)
    whole = tmp_path / "whole.pcap"
    (write_pcapng if pcapng else write_pcap)(whole, frame)
    data = whole.read_bytes()
    record = (32 + 14 + 40 + 10) if pcapng else (16 + 14 + 40 + 10)
    header = len(data) - 30 * record
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: header + 12 * record + 7])
    with pytest.raises(TraceError) as raised:
        read_pcap(cut)
    error = raised.value
    assert f"byte {header + 12 * record}" in str(error)
    assert "kept 12 packets" in str(error)
    assert isinstance(error.kept, pd.DataFrame)
    assert_same(error.kept, frame.iloc[:12])
    kept = read_pcap(cut, on_damage="keep")
    assert_same(kept, frame.iloc[:12])
    assert f"byte {header + 12 * record}" in kept.attrs["damage"]


def test_corrupt_length_field_is_damage_at_its_record(tmp_path: Path) -> None:
    frame = traffic(10, ipv6=False).assign(payload_len=0)
    path = tmp_path / "c.pcap"
    write_pcap(path, frame)
    data = bytearray(path.read_bytes())
    record = 16 + 14 + 40
    struct.pack_into("<I", data, 24 + 4 * record + 8, 10_000_000)  # caplen of the 5th record
    path.write_bytes(bytes(data))
    kept = read_pcap(path, on_damage="keep")
    assert_same(kept, frame.iloc[:4])
    assert f"byte {24 + 4 * record}" in kept.attrs["damage"]


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"GET / HTTP/1.1\r\n\r\n" * 3)
    with pytest.raises(TraceError, match="byte 0"):
        read_pcap(path)


def test_capture_name_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "node-1.pcap"
    write_pcap(path, traffic())
    assert set(read_pcap(path)["capture"]) == {"node-1"}
    ours = read_pcap(path, capture="other")
    assert set(ours["capture"]) == {"other"}
    for column in ("ts_ns", "sport", "dport", "flags", "seq", "ack", "payload_len", "ip_version"):
        assert ours[column].dtype == np.int64


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("cut-inside-header", "bytes left"),
        ("cut-inside-data", "inconsistent lengths"),
        ("trailer", "inconsistent lengths"),
        ("interface", "undeclared interface"),
        ("length-zero", "block length 0"),
    ],
)
def test_pcapng_damage_is_located(tmp_path: Path, damage: str, message: str) -> None:
    frame = traffic(6, ipv6=False)
    written = tmp_path / "w.pcapng"
    write_pcapng(written, frame)
    shb, idb, *epbs = _blocks(written.read_bytes())
    bad = bytearray(epbs[3])
    tail: list[bytes] = epbs[4:]
    if damage == "cut-inside-header":
        bad, tail = bad[:10], []
    elif damage == "cut-inside-data":
        bad, tail = bad[:40], []
    elif damage == "trailer":
        struct.pack_into("<I", bad, len(bad) - 4, len(bad) + 4)
    elif damage == "interface":
        struct.pack_into("<I", bad, 8, 3)
    elif damage == "length-zero":
        struct.pack_into("<I", bad, 4, 0)
    offset = sum(map(len, [shb, idb, *epbs[:3]]))
    path = tmp_path / "bad.pcapng"
    path.write_bytes(b"".join([shb, idb, *epbs[:3], bytes(bad), *tail]))
    with pytest.raises(TraceError) as raised:
        read_pcap(path)
    assert f"byte {offset}" in str(raised.value)
    assert message in str(raised.value)
    assert "kept 3 packets" in str(raised.value)
    assert_same(raised.value.kept, frame.iloc[:3])


def test_pcapng_timestamp_offset_option(tmp_path: Path) -> None:
    frame = traffic(3, ipv6=False)
    written = tmp_path / "w.pcapng"
    write_pcapng(written, frame, linktype="raw", tsresol=6)
    shb, _idb, *epbs = _blocks(written.read_bytes())
    options = struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HHq", 14, 8, 100) + b"\0" * 4
    idb = _block(1, struct.pack("<HHI", 101, 0, 0) + options)
    path = tmp_path / "offset.pcapng"
    path.write_bytes(b"".join([shb, idb, *epbs]))
    shifted = frame.assign(ts_ns=frame["ts_ns"] // 1000 * 1000 + 100 * 1_000_000_000)
    assert_same(read_pcap(path), shifted)
