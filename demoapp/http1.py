"""Minimal HTTP/1.1 request framing and response rendering, kept pure so it is testable alone.

Only what a load generator and probes send is understood: a request line, headers, and a body
framed by Content-Length. Chunked request bodies are refused (a 411/400 and close) rather than
mis-framed, because mis-framing a pipelined stream would corrupt every later request.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD_BYTES = 16 * 1024


class BadRequest(Exception):
    """The byte stream is not a request we can frame; the connection must be closed."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    keep_alive: bool

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def query_value(self, name: str) -> str | None:
        for pair in self.target.partition("?")[2].split("&"):
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return None


def _header_value(lowered_head: bytes, name: bytes) -> bytes | None:
    start = lowered_head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start : end if end >= 0 else None].strip()


def parse_request(buffer: bytes | bytearray) -> tuple[Request | None, int]:
    """The first complete request in ``buffer`` and how many bytes it used, or (None, 0) when
    more bytes are needed. Raises BadRequest on anything that cannot be framed safely."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest("request head too large")
        return None, 0
    head = bytes(buffer[:head_end])
    line_end = head.find(b"\r\n")
    request_line = head if line_end < 0 else head[:line_end]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(f"bad request line {request_line[:80]!r}")
    lowered = head.lower() + b"\r\n"
    if _header_value(lowered, b"transfer-encoding") is not None:
        raise BadRequest("chunked request bodies are not supported")
    raw_length = _header_value(lowered, b"content-length")
    try:
        length = int(raw_length) if raw_length is not None else 0
    except ValueError as error:
        raise BadRequest("bad Content-Length") from error
    if length < 0:
        raise BadRequest("bad Content-Length")
    total = head_end + 4 + length
    if len(buffer) < total:
        return None, 0
    connection = _header_value(lowered, b"connection") or b""
    http10 = parts[2] == b"HTTP/1.0"
    keep_alive = b"keep-alive" in connection if http10 else b"close" not in connection
    return Request(parts[0].decode("latin-1"), parts[1].decode("latin-1"), keep_alive), total


REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def render_response(
    status: int, body: bytes, pod_name: str, pod_version: str, keep_alive: bool, head_only: bool
) -> bytes:
    """``head_only`` (a HEAD request): the headers describe the body but it is not sent, or a
    pipelining client would read it as the start of the next response."""
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Pod-Name: {pod_name}\r\n"
        f"X-Pod-Version: {pod_version}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("latin-1") + (b"" if head_only else body)
