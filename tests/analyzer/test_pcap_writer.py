"""The pcap writer: what it writes is what scapy (an independent parser) reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scapy.layers.inet import TCP
from scapy.packet import Raw
from scapy.utils import rdpcap

from analyzer import read_pcap
from analyzer.pcap_writer import write_pcap, write_pcapng
from tests.analyzer.test_pcap import assert_same, scapy_packets, traffic


def test_payload_bytes_are_written_and_cut_by_the_snaplen(tmp_path: Path) -> None:
    frame = traffic(3, ipv6=False).assign(payload_len=[5, 0, 300])
    frame["payload"] = [b"hello", None, bytes(range(256)) + b"x" * 44]
    path = tmp_path / "p.pcap"
    write_pcap(path, frame, snaplen=14 + 40 + 100)
    loads = [bytes(p[TCP].payload) if p[TCP].payload else b"" for p in rdpcap(str(path))]
    assert loads == [b"hello", b"", bytes(range(100))]
    assert isinstance(rdpcap(str(path))[0][TCP].payload, Raw)
    assert read_pcap(path)["payload_len"].tolist() == [5, 0, 300]


def test_many_chunks_round_trip(tmp_path: Path) -> None:
    """More rows than one vectorized chunk: every row lands at its own offset."""
    frame = pd.concat([traffic(1000, seed=s) for s in range(70)], ignore_index=True)
    frame = frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    path = tmp_path / "big.pcapng"
    assert write_pcapng(path, frame, linktype="sll2") == 70_000
    ours = read_pcap(path, dedupe_loopback=False)
    assert_same(ours, frame)
    assert_same(ours.iloc[:500].reset_index(drop=True), scapy_packets(path, limit=500))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"payload_len": 70_000}, "payload_len"),
        ({"src": "fd00::1"}, "ip_version"),
        ({"payload": b"abc"}, "payload"),
    ],
)
def test_invalid_rows_are_refused(tmp_path: Path, change: dict[str, object], error: str) -> None:
    frame = traffic(3, ipv6=False).assign(**change)
    with pytest.raises(ValueError, match=error):
        write_pcap(tmp_path / "x.pcap", frame)


def test_unknown_link_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linktype"):
        write_pcap(tmp_path / "x.pcap", traffic(3), linktype="token-ring")
    with pytest.raises(ValueError, match="linktype"):
        write_pcap(tmp_path / "x.pcap", traffic(3), linktype=9999)


def test_headers_are_well_formed(tmp_path: Path) -> None:
    frame = traffic(20)
    path = tmp_path / "h.pcap"
    write_pcap(path, frame)
    for packet, version, payload_len in zip(
        rdpcap(str(path)), frame["ip_version"], frame["payload_len"], strict=True
    ):
        tcp = packet[TCP]
        assert tcp.dataofs == 5
        ip = packet.payload
        if version == 4:
            assert ip.len == 40 + payload_len and ip.ihl == 5
            words = np.frombuffer(bytes(ip)[:20], dtype=">u2").sum()
            assert (words & 0xFFFF) + (words >> 16) == 0xFFFF  # a valid header checksum
        else:
            assert ip.plen == 20 + payload_len
    assert np.array_equal(scapy_packets(path)["payload_len"], frame["payload_len"])
