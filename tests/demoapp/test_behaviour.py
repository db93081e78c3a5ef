"""Every scriptable behaviour of the demo app, for real over loopback (each test bounded in time)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.demoapp.conftest import connect, get, get_once, read_response


def test_every_response_names_the_pod_and_keep_alive_serves_many_requests(start_app: Any) -> None:
    app = start_app()
    with connect(app.port) as sock:
        # pipelined: three requests in one write, answered in order
        sock.sendall(
            b"GET /a HTTP/1.1\r\n\r\nGET /ready HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"
        )
        answers = [read_response(sock) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[0].body == b"hello from web-1 v7\n"
    assert all(
        a.headers["x-pod-name"] == "web-1" and a.headers["x-pod-version"] == "v7" for a in answers
    )
    assert app.events() == ["listening", "ready-to-serve"]
    assert all(line["source"] == "demoapp/web-1" for line in app.truth())


def test_head_response_has_no_body_so_pipelining_stays_aligned(start_app: Any) -> None:
    app = start_app()
    with connect(app.port) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        sock.settimeout(1.0)
        time.sleep(0.2)
        data = sock.recv(65536)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 20" in first  # describes the GET body it does not send
    assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"\r\n\r\nok\n")


def test_startup_delay_comes_before_listening(start_app: Any) -> None:
    app = start_app("--startup-delay", "0.5")
    assert app.listening_at - app.started_at >= 0.5
    assert get_once(app.port).status == 200


def test_warmup_503_with_honest_readiness(start_app: Any) -> None:
    app = start_app("--warmup", "0.8")
    assert get_once(app.port).status == 503
    assert get_once(app.port, "/ready").status == 503
    assert get_once(app.port, "/healthz").status == 200
    time.sleep(0.9)
    assert get_once(app.port).status == 200
    assert get_once(app.port, "/ready").status == 200
    listening, ready = app.truth()
    assert ready["event"] == "ready-to-serve"
    assert (ready["ts_ns"] - listening["ts_ns"]) / 1e9 >= 0.8


def test_warmup_reset_mode_resets_the_connection(start_app: Any) -> None:
    app = start_app("--warmup", "5", "--warmup-mode", "reset")
    with connect(app.port) as sock, pytest.raises(ConnectionResetError):
        get(sock)


def test_lying_readiness_says_ready_while_warming_up(start_app: Any) -> None:
    app = start_app("--warmup", "5", "--ready-lies")
    assert get_once(app.port, "/ready").status == 200
    assert get_once(app.port).status == 503


def test_latency_delays_requests_but_not_probes(start_app: Any) -> None:
    app = start_app("--latency", "fixed:150")
    with connect(app.port) as sock:
        began = time.monotonic()
        assert get(sock, "/ready").status == 200
        probe = time.monotonic() - began
        began = time.monotonic()
        assert get(sock).status == 200
        served = time.monotonic() - began
    assert probe < 0.1 <= 0.15 <= served < 1.0


def test_idle_keepalive_connection_gets_server_fin(start_app: Any) -> None:
    app = start_app("--keepalive-timeout", "0.3")
    with connect(app.port) as sock:
        assert get(sock).headers["connection"] == "keep-alive"
        began = time.monotonic()
        assert sock.recv(1) == b""  # orderly close (FIN), not a reset
        assert 0.25 <= time.monotonic() - began < 2.0


def _slow_request(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(b"GET /?delay_ms=800 HTTP/1.1\r\n\r\n")
    time.sleep(0.15)  # the server has read it and is working on it
    return sock


def test_immediate_shutdown_cuts_the_inflight_request(start_app: Any) -> None:
    app = start_app("--shutdown", "immediate")
    with _slow_request(app.port) as sock:
        app.sigterm()
        with pytest.raises(ConnectionError):
            read_response(sock)
    assert app.wait() == -signal.SIGTERM
    assert app.truth()[-1] | {"ts_ns": 0} == {
        "ts_ns": 0,
        "source": "demoapp/web-1",
        "event": "exited",
        "pod": "web-1",
        "exit_code": None,
        "signal": 15,
    }


def test_graceful_shutdown_answers_inflight_with_close_and_stops_accepting(start_app: Any) -> None:
    app = start_app("--shutdown", "graceful", "--drain-idle-grace", "0")
    idle = connect(app.port)
    assert get(idle).status == 200
    with _slow_request(app.port) as sock, idle:
        app.sigterm()
        assert idle.recv(1) == b""  # with no idle grace the idle connection is closed at once
        time.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):
            connect(app.port)  # listener closed
        answer = read_response(sock)
        assert (answer.status, answer.headers["connection"]) == (200, "close")
        assert sock.recv(1) == b""
    assert app.wait() == 0
    # the drain closed the idle connection: truth names it, as any idle close by the app
    events = ["listening", "ready-to-serve", "stopped-accepting", "idle-close", "exited"]
    assert app.events() == events


def test_graceful_shutdown_gives_idle_connections_one_clean_last_answer(start_app: Any) -> None:
    """A client reusing an idle keep-alive connection during the drain gets an answer with
    `Connection: close` instead of a FIN racing its request (no keepalive-race)."""
    app = start_app("--shutdown", "graceful", "--drain-idle-grace", "2")
    with connect(app.port) as reused, connect(app.port) as forgotten:
        assert get(reused).status == 200 and get(forgotten).status == 200
        app.sigterm()
        time.sleep(0.3)  # SIGTERM handled; the listener is closed, both connections idle
        answer = get(reused)
        assert (answer.status, answer.headers["connection"]) == (200, "close")
        assert reused.recv(1) == b""
        began = time.monotonic()
        assert forgotten.recv(1) == b""  # never reused: closed once the grace ran out
        assert 1.0 < time.monotonic() - began < 2.5
    assert app.wait() == 0


def test_graceful_shutdown_gives_up_after_the_drain_timeout(start_app: Any) -> None:
    app = start_app("--drain-timeout", "0.3")
    with connect(app.port) as sock:
        sock.sendall(b"GET /?delay_ms=5000 HTTP/1.1\r\n\r\n")
        time.sleep(0.1)
        began = time.monotonic()
        app.sigterm()
        assert app.wait() == 0
        assert time.monotonic() - began < 2.0
    assert app.truth()[-1]["undrained"] == 1


def test_ignore_keeps_serving_after_sigterm(start_app: Any) -> None:
    app = start_app("--shutdown", "ignore")
    app.sigterm()
    time.sleep(0.3)
    assert get_once(app.port).status == 200
    assert get_once(app.port, "/ready").status == 200
    assert app.process.poll() is None


def test_delayed_shutdown_serves_unready_then_drains(start_app: Any) -> None:
    app = start_app("--shutdown", "delayed:0.6")
    app.sigterm()
    time.sleep(0.1)
    assert get_once(app.port, "/ready").status == 503
    assert get_once(app.port).status == 200
    assert app.wait() == 0
    truth = app.truth()
    stopped = next(line for line in truth if line["event"] == "stopped-accepting")
    assert (stopped["ts_ns"] - truth[0]["ts_ns"]) / 1e9 >= 0.6
    with pytest.raises(ConnectionRefusedError):
        connect(app.port)


def test_env_configures_the_app(start_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMOAPP_WARMUP", "5")
    app = start_app()
    assert get_once(app.port).status == 503
    assert json.loads(app.truth_path.read_text().splitlines()[0])["event"] == "listening"


@pytest.mark.root
def test_immediate_shutdown_exits_even_as_pid_1_of_a_pid_namespace() -> None:
    """In a container the app is PID 1, which the kernel shields from default-action signals."""
    require("unshare", root=True)
    argv = ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "demoapp"]
    process = subprocess.Popen(
        [*argv, "--port", "0", "--shutdown", "immediate"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        (pid_1,) = [int(child) for child in children]
        os.kill(pid_1, signal.SIGTERM)
        process.wait(timeout=5)
        assert not Path(f"/proc/{pid_1}").exists()
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_max_concurrency_queues_requests_beyond_capacity(start_app: Any) -> None:
    """Capacity is what max-unavailable scenarios take away: with 2 workers at 300 ms, four
    concurrent requests take two rounds."""
    app = start_app("--latency", "fixed:300", "--max-concurrency", "2")
    sockets = [connect(app.port) for _ in range(4)]
    began = time.monotonic()
    for sock in sockets:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    finished = []
    for sock in sockets:
        assert read_response(sock).status == 200
        finished.append(time.monotonic() - began)
        sock.close()
    assert sorted(finished)[1] < 0.55 < sorted(finished)[2]  # two served, two waited a round


def test_crash_after_seconds_exits_nonzero_without_draining(start_app: Any) -> None:
    app = start_app("--crash-after", "0.5")
    # the request is still in service when the crash comes
    with _slow_request(app.port) as sock, pytest.raises(ConnectionError):
        read_response(sock)
    assert app.wait() == 1
    assert time.monotonic() - app.listening_at >= 0.45


def test_crash_after_requests_cuts_the_request_that_follows(start_app: Any) -> None:
    app = start_app("--crash-after-requests", "3")
    with connect(app.port) as sock:
        assert get(sock, "/healthz").status == 200  # probes do not count
        assert [get(sock).status for _ in range(3)] == [200, 200, 200]
        with pytest.raises(ConnectionError):
            get(sock)
    assert app.wait() == 1


def test_liveness_starts_failing_while_requests_are_still_served(start_app: Any) -> None:
    app = start_app("--liveness-fail-after", "0.5")
    assert get_once(app.port, "/healthz").status == 200
    time.sleep(0.6)
    assert get_once(app.port, "/healthz").status == 500
    assert get_once(app.port).status == 200
    assert get_once(app.port, "/ready").status == 200


def _status_or_reset(port: int, target: str) -> int | str:
    try:
        return get_once(port, target).status
    except ConnectionResetError:
        return "reset"


@pytest.mark.parametrize(("mode", "failure"), [("503", 503), ("reset", "reset")])
def test_readiness_flap_makes_the_app_unable_to_serve_while_down(
    start_app: Any, mode: str, failure: int | str
) -> None:
    """Period 0.6 s, down 0.3 s: up over [0, 0.3), down over [0.3, 0.6), up again after."""
    app = start_app("--ready-flap-period", "0.6", "--ready-flap-down", "0.3", "--flap-mode", mode)
    assert (get_once(app.port, "/ready").status, get_once(app.port).status) == (200, 200)
    time.sleep(0.45 - (time.monotonic() - app.listening_at))
    assert get_once(app.port, "/ready").status == 503
    assert _status_or_reset(app.port, "/") == failure
    assert get_once(app.port, "/healthz").status == 200  # liveness is unaffected
    time.sleep(0.75 - (time.monotonic() - app.listening_at))
    assert (get_once(app.port, "/ready").status, get_once(app.port).status) == (200, 200)


def test_idle_keepalive_connection_can_be_closed_by_a_bare_rst(start_app: Any) -> None:
    app = start_app("--keepalive-timeout", "0.3", "--idle-close", "rst")
    with connect(app.port) as sock:
        assert get(sock).headers["connection"] == "keep-alive"
        time.sleep(0.5)
        with pytest.raises(ConnectionResetError):  # no FIN came first: recv would return b""
            sock.recv(1)
