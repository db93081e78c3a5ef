"""A small HTTP/1.1 client that knows exactly what happened to each request on the wire.

Generic clients hide what rolltrace needs: the client socket's local port (to join a request to
its packets), whether the connection was new, when the handshake and the first byte happened,
and *how* a request failed (refused vs connect timeout vs reset vs EOF vs read timeout). Locust's
``FastHttpUser`` cannot tell refused from reset reliably nor expose the local port of a
connection that was refused, so this client does its own socket work:

* it opens the socket with a non-blocking ``connect`` so the kernel assigns the ephemeral port
  at once and ``getsockname`` reports it even if the SYN is answered with RST (after a refused
  connect the kernel forgets the port, so asking later returns 0);
* it waits with ``gevent.socket.wait_read/wait_write`` on the raw file descriptor, which is
  cooperative under Locust's gevent hub and needs no monkey-patching in tests.

Error kinds are the strings of ``analyzer.schema.ErrorKind`` (docs/trace-format.md); loadgen must
not import the analyzer, so ``tests/loadgen/test_runner.py`` checks both stay in step.
"""

from __future__ import annotations

import errno
import itertools
import socket
import time
from dataclasses import dataclass

from gevent.socket import wait_read, wait_write

CONNECT_ERRORS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "connect-timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ECONNRESET: "reset",
}
IO_ERRORS = {
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.ECONNABORTED: "reset",
    errno.ETIMEDOUT: "read-timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}
_MAX_HEADER_BYTES = 64 * 1024

_connection_ids = itertools.count(1)


class RequestFailed(Exception):
    """A request did not get a complete response; ``kind`` is its normalized error kind."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        # Set when the connect itself failed, so the request row still joins to its SYN.
        self.conn_id: int | None = None
        self.local_ip: str | None = None
        self.local_port: int | None = None
        super().__init__(f"{kind}: {detail}")


@dataclass
class Outcome:
    """Everything the recorder writes about one request (times are ns since the epoch)."""

    start_ns: int
    end_ns: int = 0
    connect_ns: int | None = None
    first_byte_ns: int | None = None
    local_ip: str | None = None
    local_port: int | None = None
    conn_id: int = 0
    conn_new: bool = False
    conn_seq: int = 0
    status_code: int | None = None
    error_kind: str = "ok"
    error_detail: str | None = None
    pod: str | None = None
    pod_version: str | None = None
    response_length: int = 0


class Connection:
    """One TCP connection to (host, port), reused for sequential HTTP/1.1 requests."""

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.id = next(_connection_ids)
        self.requests_sent = 0
        self.closed = False
        self.local_ip: str | None = None
        self.local_port: int | None = None
        self.connect_ns: int | None = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        try:
            self._connect(connect_timeout)
        except RequestFailed as failure:
            failure.conn_id, failure.local_ip, failure.local_port = (
                self.id,
                self.local_ip,
                self.local_port,
            )
            raise

    def _connect(self, timeout: float) -> None:
        code = self._sock.connect_ex((self.host, self.port))
        # The port is assigned by connect() itself; read it before the outcome is known.
        self.local_ip, self.local_port = self._sock.getsockname()[:2]
        if code not in (0, errno.EINPROGRESS):
            self.close()
            raise RequestFailed(
                CONNECT_ERRORS.get(code, "other"), errno.errorcode.get(code, str(code))
            )
        if code == errno.EINPROGRESS:
            try:
                wait_write(self._sock.fileno(), timeout=timeout, timeout_exc=_Timeout())
            except _Timeout:
                self.close()
                raise RequestFailed(
                    "connect-timeout", f"no answer to SYN within {timeout:g} s"
                ) from None
            code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.close()
                raise RequestFailed(
                    CONNECT_ERRORS.get(code, "other"), errno.errorcode.get(code, str(code))
                )
        self.connect_ns = time.time_ns()

    def request(
        self, method: str, path: str, host_header: str, timeout: float, outcome: Outcome
    ) -> None:
        """Send one request and read its response into ``outcome``; raises RequestFailed."""
        deadline = time.monotonic() + timeout
        self.requests_sent += 1
        outcome.conn_seq = self.requests_sent
        raw = (
            f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n"
            f"User-Agent: rolltrace-loadgen\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self._send_all(raw, deadline)
        head = self._read_head(deadline, outcome)
        status, headers = _parse_head(head)
        outcome.status_code = status
        outcome.pod = headers.get("x-pod-name")
        outcome.pod_version = headers.get("x-pod-version")
        body_length = self._read_body(headers, deadline)
        outcome.response_length = body_length
        if not persistent(head.split(b" ", 1)[0].decode("latin-1"), headers):
            self.close()

    def _send_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                self._wait(wait_write, deadline, "send")
                continue
            except OSError as exc:
                self.close()
                raise RequestFailed(IO_ERRORS.get(exc.errno or 0, "other"), str(exc)) from None
            view = view[sent:]

    def _recv(self, deadline: float, what: str) -> bytes:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                self._wait(wait_read, deadline, what)
                continue
            except OSError as exc:
                self.close()
                raise RequestFailed(IO_ERRORS.get(exc.errno or 0, "other"), str(exc)) from None
            if not chunk:
                self.close()
                raise RequestFailed("eof", f"server closed the connection during {what}")
            return chunk

    def _wait(self, waiter: object, deadline: float, what: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.close()
            raise RequestFailed("read-timeout", f"timed out during {what}")
        try:
            waiter(self._sock.fileno(), timeout=remaining, timeout_exc=_Timeout())  # type: ignore[operator]
        except _Timeout:
            self.close()
            raise RequestFailed("read-timeout", f"timed out during {what}") from None

    def _read_head(self, deadline: float, outcome: Outcome) -> bytes:
        while b"\r\n\r\n" not in self._buffer:
            chunk = self._recv(deadline, "response headers")
            if outcome.first_byte_ns is None:
                outcome.first_byte_ns = time.time_ns()
            self._buffer += chunk
            if len(self._buffer) > _MAX_HEADER_BYTES:
                self.close()
                raise RequestFailed("other", "response headers larger than 64 KiB")
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        if outcome.first_byte_ns is None:
            outcome.first_byte_ns = time.time_ns()
        return head

    def _read_body(self, headers: dict[str, str], deadline: float) -> int:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked(deadline)
        length = int(headers.get("content-length", "0") or 0)
        while len(self._buffer) < length:
            self._buffer += self._recv(deadline, "response body")
        self._buffer = self._buffer[length:]
        return length

    def _read_chunked(self, deadline: float) -> int:
        total = 0
        while True:
            while b"\r\n" not in self._buffer:
                self._buffer += self._recv(deadline, "chunk size")
            size_line, _, self._buffer = self._buffer.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            while len(self._buffer) < size + 2:
                self._buffer += self._recv(deadline, "chunk")
            self._buffer = self._buffer[size + 2 :]
            total += size
            if size == 0:
                return total

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()


class _Timeout(Exception):
    pass


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise RequestFailed("other", f"malformed status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def persistent(version: str, headers: dict[str, str]) -> bool:
    """Whether the connection stays open after this response (RFC 9112 section 9.3): not after
    ``Connection: close``; after an HTTP/1.0 response only with ``Connection: keep-alive``
    (Python's http.server answers HTTP/1.0 and closes; reusing its connection would fail)."""
    options = {option.strip().lower() for option in headers.get("connection", "").split(",")}
    if "close" in options:
        return False
    return version != "HTTP/1.0" or "keep-alive" in options


def classify_status(status: int) -> str:
    if status >= 500:
        return "http-5xx"
    if status >= 400:
        return "http-4xx"
    return "ok"
