"""Run the demo app as a real process on loopback and talk raw HTTP/1.1 to it."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def read_response(sock: socket.socket) -> Response:
    """One response from ``sock``, consuming exactly its bytes (later pipelined responses stay in
    the socket); raises ConnectionError if the server closes or resets first."""
    deadline = time.monotonic() + 5.0
    while True:
        data = sock.recv(65536, socket.MSG_PEEK)  # returns b"" only at EOF
        if not data:
            raise ConnectionAbortedError("EOF before a whole response")
        if time.monotonic() > deadline:
            raise TimeoutError(f"incomplete response {data!r}")
        head, found, rest = data.partition(b"\r\n\r\n")
        if not found:
            time.sleep(0.005)
            continue
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        if len(rest) >= length:
            sock.recv(len(head) + 4 + length)
            return Response(int(lines[0].split()[1]), headers, rest[:length])
        time.sleep(0.005)


def connect(port: int, timeout: float = 3.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def get(sock: socket.socket, target: str = "/", extra: str = "") -> Response:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
    return read_response(sock)


def get_once(port: int, target: str = "/") -> Response:
    with connect(port) as sock:
        return get(sock, target)


@dataclass
class App:
    process: subprocess.Popen[str]
    port: int
    truth_path: Path
    started_at: float
    listening_at: float = field(default=0.0)

    def truth(self) -> list[dict[str, Any]]:
        if not self.truth_path.exists():
            return []
        return [json.loads(line) for line in self.truth_path.read_text().splitlines()]

    def events(self) -> list[str]:
        return [line["event"] for line in self.truth()]

    def sigterm(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 5.0) -> int:
        return self.process.wait(timeout=timeout)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError("demo app did not start listening in time")
    return process.stdout.readline()


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Any]:
    """``start_app(*flags)`` → App, listening; every process started is killed at the end."""
    processes: list[subprocess.Popen[str]] = []

    def start(*flags: str, timeout: float = 5.0) -> App:
        truth = tmp_path / f"truth-{len(processes)}.jsonl"
        env = {**os.environ, "POD_NAME": "web-1", "POD_VERSION": "v7"}
        argv = [sys.executable, "-m", "demoapp", "--port", "0", "--truth", str(truth), *flags]
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        processes.append(process)
        line = _read_line(process, timeout)
        match = re.search(r":(\d+)$", line.strip())
        assert match, f"unexpected first line {line!r}"
        return App(process, int(match.group(1)), truth, started, time.monotonic())

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
