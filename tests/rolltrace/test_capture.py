"""The capture subprocess records real loopback traffic to a pcap that tcpdump agrees with."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from rolltrace.capture import CaptureProcess
from tests.conftest import require


def _exchange(port: int, connections: int) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        for _ in range(connections):
            client = socket.create_connection(("127.0.0.1", port))
            server, _ = listener.accept()
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            server.recv(100)
            server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            client.recv(100)
            client.close()
            server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_capture_streams_filtered_packets_to_pcap(tmp_path: Path) -> None:
    require("tcpdump", root=True)
    port = _free_port()
    capture = CaptureProcess(tmp_path / "client.pcap", f"tcp port {port}")
    capture.start()
    _exchange(port, connections=5)
    result = capture.stop()
    assert result.error is None
    listing = subprocess.run(
        ["tcpdump", "-nn", "-r", str(result.file)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(listing) == result.packets
    syns = [line for line in listing if "Flags [S]," in line]
    assert len(syns) == 5  # one SYN per connection: nothing outside the filter, nothing lost
    assert all(f".{port}" in line for line in listing)
    assert result.kernel_drops in (0, None)
