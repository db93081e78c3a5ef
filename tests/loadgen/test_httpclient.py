"""The client's error kinds and socket identity, against a real loopback server."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import pytest

from loadgen.httpclient import Connection, Outcome, RequestFailed, persistent
from tests.loadgen.conftest import MisbehavingServer


def _request(conn: Connection, path: str, timeout: float = 2.0) -> Outcome:
    outcome = Outcome(start_ns=time.time_ns())
    conn.request("GET", path, "test", timeout, outcome)
    return outcome


def test_ok_response_names_pod_and_socket(server: MisbehavingServer) -> None:
    conn = Connection("127.0.0.1", server.port, 1.0)
    outcome = _request(conn, "/ok")
    assert outcome.status_code == 200
    assert outcome.pod == "pod-a" and outcome.pod_version == "v1"
    assert conn.local_ip == "127.0.0.1" and conn.local_port and conn.local_port > 0
    assert outcome.first_byte_ns is not None and outcome.first_byte_ns >= outcome.start_ns
    second = _request(conn, "/ok")  # keep-alive reuse on the same socket
    assert second.conn_seq == 2
    conn.close()


def test_refused_connect_keeps_local_port(closed_port: int) -> None:
    with pytest.raises(RequestFailed) as info:
        Connection("127.0.0.1", closed_port, 1.0)
    assert info.value.kind == "refused"
    assert info.value.local_port and info.value.local_port > 0  # joinable to its SYN/RST


@pytest.mark.parametrize(("path", "kind"), [("/reset", "reset"), ("/eof", "eof")])
def test_server_cut_kinds(server: MisbehavingServer, path: str, kind: str) -> None:
    conn = Connection("127.0.0.1", server.port, 1.0)
    with pytest.raises(RequestFailed) as info:
        _request(conn, path)
    assert info.value.kind == kind
    assert conn.closed


def test_read_timeout(server: MisbehavingServer) -> None:
    conn = Connection("127.0.0.1", server.port, 1.0)
    started = time.monotonic()
    with pytest.raises(RequestFailed) as info:
        _request(conn, "/slow", timeout=0.3)
    assert info.value.kind == "read-timeout"
    assert time.monotonic() - started < 2


def test_reused_connection_closed_by_server_is_eof_or_reset(server: MisbehavingServer) -> None:
    conn = Connection("127.0.0.1", server.port, 1.0)
    _request(conn, "/close-after")
    time.sleep(0.1)  # the server's FIN arrives while the connection is idle
    with pytest.raises(RequestFailed) as info:
        _request(conn, "/ok")
    assert info.value.kind in {"eof", "reset"}


@pytest.mark.parametrize(
    ("version", "connection", "kept"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.0", "", False),  # Python's http.server: answers, then closes
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_persistence_follows_rfc_9112(version: str, connection: str, kept: bool) -> None:
    headers = {"connection": connection} if connection else {}
    assert persistent(version, headers) is kept


def test_an_http_1_0_answer_is_not_reused(tmp_path: Path) -> None:
    """A keep-alive user talking to an HTTP/1.0 server (Python's http.server) opens a new
    connection for its next request instead of failing on the one the server closed."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = Connection("127.0.0.1", server.server_address[1], 1.0)
        assert _request(conn, "/missing").status_code == 404
        assert conn.closed
    finally:
        server.shutdown()
        server.server_close()
