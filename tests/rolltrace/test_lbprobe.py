"""``rolltrace.runner.lbprobe``: served means several answers in a row, and the probe is bounded.

Every server here listens on loopback and stops at the end of its test.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rolltrace.runner import lbprobe


@contextmanager
def loopback_server(statuses: list[int], then: int = 200) -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering ``statuses`` in order, then ``then``; yields its URL and
    the statuses it sent."""
    sent: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses[len(sent)] if len(sent) < len(statuses) else then
            sent.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sent
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lbprobe, "INTERVAL_S", 0.0)


@pytest.mark.usefixtures("fast")
def test_served_only_after_enough_answers_in_a_row() -> None:
    flaky = [200, 200, 503, 200, 503]  # answers that do not count: a failure resets the run
    with loopback_server(flaky) as (url, sent):
        assert lbprobe.wait_until_served(url)
    assert sent == flaky + [200] * lbprobe.CONSECUTIVE_OK


@pytest.mark.usefixtures("fast")
def test_a_service_that_never_answers_stops_at_the_attempt_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lbprobe, "MAX_ATTEMPTS", 7)
    with loopback_server([], then=503) as (url, sent):
        assert not lbprobe.wait_until_served(url)
    assert len(sent) == 7


def test_a_refused_address_stops_at_the_deadline() -> None:
    with loopback_server([]) as (url, _):
        pass  # closed again: its port now refuses
    started = time.monotonic()
    assert not lbprobe.wait_until_served(url, deadline_s=0.5)
    assert time.monotonic() - started < 0.5 + lbprobe.INTERVAL_S + lbprobe.REQUEST_TIMEOUT_S


def test_runs_as_a_module_with_the_standard_library_only() -> None:
    """It runs behind the client's exec prefix as its own interpreter: exit 0 once served, and
    nothing of ours or third-party beyond the module itself is imported."""
    with loopback_server([]) as (url, _):
        done = subprocess.run(
            [sys.executable, "-m", "rolltrace.runner.lbprobe", url], capture_output=True, timeout=30
        )
    assert done.returncode == 0, done.stderr
    loaded = _modules_after("import rolltrace.runner.lbprobe") - _modules_after("pass")
    ours_or_third_party = {m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names}
    assert ours_or_third_party == {"rolltrace", "rolltrace.runner", "rolltrace.runner.lbprobe"}


def _modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    listing = f"import sys\n{statement}\nprint(*sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, check=True, timeout=30
    )
    return set(done.stdout.split())


def test_usage_error_without_a_url() -> None:
    assert lbprobe.main([]) == 2
