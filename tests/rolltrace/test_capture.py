"""The capture process (tcpdump) records real loopback traffic to a pcap the analyzer reads,
writes its statistics, and stops cleanly on request, on Ctrl-C and when it is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from analyzer import read_pcap
from rolltrace.runner.capture import (
    CaptureProcess,
    CaptureResult,
    CaptureUnavailable,
    TcpdumpStats,
    parse_tcpdump_stats,
)
from tests.analyzer.test_pcap import assert_same, scapy_packets
from tests.conftest import require
from tests.processes import interruptible

CONNECTIONS = 5
REQUEST = b"GET /capture-check HTTP/1.1\r\nHost: test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
NANOSECOND_PCAP_MAGIC = bytes.fromhex("4d3cb2a1")  # a1b23c4d, little-endian


def _exchange(port: int, connections: int) -> None:
    """Bounded loopback traffic: one request and one response per connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        for _ in range(connections):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            server, _ = listener.accept()
            client.sendall(REQUEST)
            server.recv(len(REQUEST))
            server.sendall(RESPONSE)
            client.recv(len(RESPONSE))
            client.close()
            server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _syns_to(path: Path, port: int) -> int:
    packets = read_pcap(path, dedupe_loopback=False)
    syns = packets[((packets["flags"] & 0x12) == 0x02) & (packets["dport"] == port)]
    return len(syns)


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a capture left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.root
def test_capture_writes_a_pcap_the_analyzer_reads(tmp_path: Path) -> None:
    require("tcpdump", root=True)
    port = _free_port()
    capture = CaptureProcess(tmp_path / "client.pcap", f"tcp port {port}")
    capture.start()
    _exchange(port, CONNECTIONS)
    capture.request_stop()  # stopped right after the traffic: the ring must still be written
    result = capture.stop()

    assert result.error is None and result.kernel_drops == 0
    data = result.file.read_bytes()
    assert data[:4] == NANOSECOND_PCAP_MAGIC
    assert REQUEST.split(b"\r\n")[0] in data and RESPONSE.split(b"\r\n")[0] in data  # snaplen
    ours = read_pcap(result.file, dedupe_loopback=False)
    assert_same(ours, scapy_packets(result.file))  # the reader agrees with scapy on this file
    assert len(ours) == result.packets
    assert _syns_to(result.file, port) == CONNECTIONS  # nothing lost, nothing outside the filter
    assert ((ours["sport"] == port) | (ours["dport"] == port)).all()
    stats = json.loads(capture.stats_path.read_text())
    assert stats["packets"] == result.packets and stats["kernel_drops"] == 0
    assert stats["error"] is None
    assert not _processes_naming(str(result.file))


@pytest.mark.root
def test_ctrl_c_of_the_parent_stops_the_capture_with_its_statistics(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the runner and tcpdump (same process group) together: the
    capture exits on its own, and ``stop()`` still returns its statistics."""
    require("tcpdump", root=True)
    port = _free_port()
    output = tmp_path / "client.pcap"
    parent = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from rolltrace.runner.capture import CaptureProcess
        capture = CaptureProcess(Path({str(output)!r}), "tcp port {port}")
        capture.start()
        print("started", flush=True)
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            result = capture.stop()
            print(json.dumps({{"packets": result.packets, "drops": result.kernel_drops,
                              "error": result.error}}), flush=True)
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
        start_new_session=True, cwd=Path(__file__).parents[2], preexec_fn=interruptible,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    _exchange(port, CONNECTIONS)
    time.sleep(0.5)  # Ctrl-C comes later than the last packet of a run
    os.killpg(process.pid, signal.SIGINT)
    output_lines, _ = process.communicate(timeout=30)
    result = json.loads(output_lines.strip().splitlines()[-1])
    assert result["error"] is None and result["drops"] == 0
    assert result["packets"] == len(read_pcap(output, dedupe_loopback=False))
    assert _syns_to(output, port) == CONNECTIONS
    assert not _processes_naming(str(output))


@pytest.mark.root
def test_a_capture_killed_without_statistics_says_so(tmp_path: Path) -> None:
    """tcpdump killed (SIGKILL, here by ``timeout`` as the exec prefix): the packets written so
    far are counted from the file and the result says the drops are unknown."""
    require("tcpdump", "timeout", root=True)
    port = _free_port()
    capture = CaptureProcess(
        tmp_path / "node-1.pcap", f"tcp port {port}", ["timeout", "-s", "KILL", "1"]
    )
    capture.start()
    _exchange(port, CONNECTIONS)
    time.sleep(1.5)  # the prefix kills tcpdump
    result = capture.stop()
    assert result.kernel_drops is None
    assert result.error is not None and "without its packet statistics" in result.error
    assert result.packets == len(read_pcap(result.file, dedupe_loopback=False)) > 0
    assert any("without its packet statistics" in r for r in result.status_reasons())


@pytest.mark.root
def test_a_bad_filter_fails_fast_with_tcpdumps_message(tmp_path: Path) -> None:
    require("tcpdump", root=True)
    capture = CaptureProcess(tmp_path / "client.pcap", "tcp and port not-a-port")
    started = time.monotonic()
    with pytest.raises(CaptureUnavailable, match=r"client\.pcap"):
        capture.start()
    assert time.monotonic() - started < 10


def test_missing_tcpdump_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CaptureUnavailable, match="Debian package 'tcpdump'"):
        CaptureProcess(tmp_path / "client.pcap", "tcp").start()


def test_tcpdump_exit_statistics_are_parsed() -> None:
    stderr = (
        "tcpdump: data link type LINUX_SLL2\n"
        "tcpdump: listening on any, link-type LINUX_SLL2 (Linux cooked v2), snapshot length 256\n"
        "289986 packets captured\n"
        "1 packet received by filter\n"
        "12 packets dropped by kernel\n"
    )
    assert parse_tcpdump_stats(stderr) == TcpdumpStats(289986, 1, 12)
    assert parse_tcpdump_stats(stderr.replace("12 packets dropped by kernel\n", "")) is None
    assert parse_tcpdump_stats("tcpdump: syntax error\n") is None


def test_kernel_drops_become_a_status_reason_with_the_count() -> None:
    dropped = CaptureResult(Path("packets/node-1.pcap"), 900, 100)
    assert dropped.status_reasons() == [
        "the kernel dropped 100 of 1000 packets (10.0 %): connections may be incomplete"
    ]
    assert CaptureResult(Path("packets/client.pcap"), 900, 0).status_reasons() == []
