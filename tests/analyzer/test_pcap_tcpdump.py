"""read_pcap on captures an independent tool wrote: real loopback traffic captured by tcpdump.

A tiny HTTP server on 127.0.0.1 (random port) answers a bounded number of requests, keep-alive
and Connection: close, plus one connection to a closed port (refused: SYN answered by RST).
tcpdump captures them on ``lo`` (Ethernet framing, µs and ns) and on ``any`` (Linux cooked v1
and v2), dumpcap writes a pcapng; scapy parses each file too, and both must agree field by field.
Read in chunks of any size, each file gives the same table.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from analyzer import read_pcap
from tests.analyzer.test_pcap import assert_same, scapy_packets
from tests.analyzer.test_pcap_chunks import assert_chunked_equals_whole
from tests.conftest import require
from tests.servers import serving

REQUESTS_PER_KIND = 5
CAPTURE_READY_TIMEOUT_S = 10.0


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello " * 50
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    with serving(_Hello) as port:
        yield port


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _make_traffic(port: int, closed_port: int) -> None:
    """A bounded burst: keep-alive requests, Connection: close requests, one refused connect."""
    keepalive = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(REQUESTS_PER_KIND):
        keepalive.request("GET", "/keepalive")
        keepalive.getresponse().read()
    keepalive.close()
    for _ in range(REQUESTS_PER_KIND):
        short = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        short.request("GET", "/close", headers={"Connection": "close"})
        short.getresponse().read()
        short.close()
    _refused(closed_port)


def _refused(port: int) -> None:
    with socket.socket() as refused, pytest.raises(ConnectionRefusedError):
        refused.settimeout(5)
        refused.connect(("127.0.0.1", port))


def wait_until_capturing(path: Path, probe_port: int) -> None:
    """Knock on a closed port until the capture has written a packet: then it is surely live
    (a capture tool announces itself a little before the kernel delivers to it)."""
    deadline = time.monotonic() + CAPTURE_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        _refused(probe_port)
        time.sleep(0.1)
        if path.exists() and path.stat().st_size > 200:  # more than the file headers
            return
    raise AssertionError(f"capture {path.name} wrote no packet within {CAPTURE_READY_TIMEOUT_S} s")


def wait_until_flushed(path: Path, probe_port: int) -> None:
    """Knock on a closed port again until the file grows: the capture writes in order, so every
    packet before the knock is then in the file (a busy machine may hold them in the kernel's
    ring for a while, and a capture stopped then loses them)."""
    written = path.stat().st_size
    deadline = time.monotonic() + CAPTURE_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        _refused(probe_port)
        time.sleep(0.1)
        if path.stat().st_size > written:
            return
    raise AssertionError(f"capture {path.name} wrote nothing more in {CAPTURE_READY_TIMEOUT_S} s")


def _capture(command: list[str], path: Path, ports: tuple[int, int, int]) -> None:
    """Run a capture around one burst of traffic; stop it and wait until the file is complete."""
    server_port, closed_port, probe_port = ports
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_capturing(path, probe_port)
        _make_traffic(server_port, closed_port)
        time.sleep(0.3)  # let the last segments (FIN/ACK, RST) reach the capture
        wait_until_flushed(path, probe_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode is not None  # the capture is gone, whatever happened


# A small snapshot length keeps the kernel's capture ring from overflowing on a busy machine
# (its slots are snaplen-sized) and checks that payload lengths come from the IP header.
_TCPDUMP = ["tcpdump", "-s", "128", "-B", "8192", "--immediate-mode", "-U"]
CAPTURES = {
    "lo-ethernet-us": [*_TCPDUMP, "-i", "lo", "-w"],
    "lo-ethernet-ns": [*_TCPDUMP, "-i", "lo", "--time-stamp-precision=nano", "-w"],
    "any-sll": [*_TCPDUMP, "-i", "any", "-y", "LINUX_SLL", "-w"],
    "any-sll2": [*_TCPDUMP, "-i", "any", "-y", "LINUX_SLL2", "-w"],
    "lo-pcapng": ["dumpcap", "-q", "-s", "128", "-B", "8", "-i", "lo", "-w"],
}


def capture_real_traffic(name: str, directory: Path, server_port: int) -> tuple[Path, int]:
    """One burst of real loopback traffic (keep-alive, Connection: close, a refused connect)
    captured by ``CAPTURES[name]``: the file and the refusing port."""
    tool = CAPTURES[name][0]
    require(tool, root=True)
    closed_port, probe_port = _closed_port(), _closed_port()
    path = directory / f"{name}.{'pcapng' if tool == 'dumpcap' else 'pcap'}"
    bpf = " or ".join(f"tcp port {port}" for port in (server_port, closed_port, probe_port))
    command = [*CAPTURES[name], str(path)]
    command += ["-f", bpf] if tool == "dumpcap" else [bpf]
    _capture(command, path, (server_port, closed_port, probe_port))
    return path, closed_port


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_capture_agrees_with_scapy(tmp_path: Path, http_server: int, name: str) -> None:
    path, closed_port = capture_real_traffic(name, tmp_path, http_server)

    reference = scapy_packets(path)
    ours = read_pcap(path, dedupe_loopback=False)
    assert_same(ours, reference)
    # what the traffic must contain: 6 connections' SYNs, HTTP payload, the refusal
    syns = ours[(ours["flags"] & 0x12) == 0x02]
    assert len(syns[syns["dport"] == http_server]) == REQUESTS_PER_KIND + 1
    assert (ours[ours["sport"] == http_server]["payload_len"] > 0).sum() >= 2 * REQUESTS_PER_KIND
    refusal = ours[(ours["sport"] == closed_port) & ((ours["flags"] & 0x04) != 0)]
    assert len(refusal) >= 1
    # on Linux each segment is captured once on lo: nothing is a loopback copy
    deduped = read_pcap(path)
    assert deduped.attrs["duplicates_dropped"] == len(ours) - len(deduped) == 0
    # chunked reading: one record, sizes that split the file unevenly, the whole file
    for chunk in (1, 7, len(ours) // 3 + 1, len(ours) + 1):
        assert_chunked_equals_whole(path, chunk)
