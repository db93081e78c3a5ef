"""A deliberately misbehaving HTTP server on loopback, to provoke every client error kind."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest


class MisbehavingServer:
    """Answers by path: /ok, /503, /reset (RST, no answer), /eof (close, no answer),
    /slow (answers after 3 s), /close-after (answers, then closes the keep-alive connection
    without saying so — the next reuse finds it closed)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.port = self.listener.getsockname()[1]
        self.served = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buffer = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                self.served += 1
                if path == "/reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if path == "/eof":
                    return
                if path == "/slow":
                    time.sleep(3)
                status = b"503 Service Unavailable" if path == "/503" else b"200 OK"
                body = b"hello"
                conn.sendall(
                    b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\nX-Pod-Name: pod-a\r\n"
                    b"X-Pod-Version: v1\r\n\r\n" + body
                )
                if path == "/close-after":
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=2)


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    srv = MisbehavingServer()
    yield srv
    srv.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
