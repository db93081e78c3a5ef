"""Request framing and flag/env parsing, without a server."""

from __future__ import annotations

import random

import pytest

from demoapp.config import (
    IdleClose,
    LatencyModel,
    ShutdownKind,
    ShutdownMode,
    WarmupMode,
    parse_config,
)
from demoapp.http1 import BadRequest, parse_request


def test_pipelined_requests_are_framed_one_at_a_time() -> None:
    stream = (
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /b?x=1&delay_ms=20 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /c HTT"
    )
    first, used = parse_request(stream)
    assert first is not None and (first.method, first.path) == ("POST", "/a")
    second, used2 = parse_request(stream[used:])
    assert second is not None and second.path == "/b" and second.query_value("delay_ms") == "20"
    assert parse_request(stream[used + used2 :]) == (None, 0)


def test_body_is_awaited_until_content_length_is_complete() -> None:
    assert parse_request(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") == (None, 0)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n", False),
        (b"GET / HTTP/1.0\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n", True),
    ],
)
def test_keep_alive_follows_http_version_and_connection_header(
    head: bytes, keep_alive: bool
) -> None:
    request, _ = parse_request(head + b"\r\n")
    assert request is not None and request.keep_alive is keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"NONSENSE\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ],
)
def test_unframeable_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(raw)


def test_flags_win_over_env_and_env_over_defaults() -> None:
    env = {
        "DEMOAPP_WARMUP": "2.5",
        "DEMOAPP_SHUTDOWN": "delayed:4",
        "POD_NAME": "p",
        "DEMOAPP_READY_LIES": "true",
    }
    config = parse_config(["--warmup", "1", "--warmup-mode", "reset"], env)
    assert config.warmup_s == 1.0
    assert config.warmup_mode is WarmupMode.RESET
    assert config.shutdown == ShutdownMode(ShutdownKind.DELAYED, 4.0)
    assert config.ready_lies is True
    assert config.pod_name == "p"


@pytest.mark.parametrize("text", ["fixed", "uniform:5:1", "lognormal:5", "gamma:1:2", "fixed:-1"])
def test_bad_latency_specs_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        LatencyModel.parse(text)


def test_latency_draws_follow_their_distribution() -> None:
    rng = random.Random(1)
    assert LatencyModel.parse("fixed:5").draw_s(rng) == pytest.approx(0.005)
    uniform = [LatencyModel.parse("uniform:2:4").draw_s(rng) for _ in range(500)]
    assert min(uniform) >= 0.002 and max(uniform) <= 0.004
    lognormal = sorted(LatencyModel.parse("lognormal:10:0.5").draw_s(rng) for _ in range(2001))
    assert lognormal[1000] == pytest.approx(0.010, rel=0.1)  # the median is the given figure


def test_shutdown_modes_parse_strictly() -> None:
    assert ShutdownMode.parse("graceful").kind is ShutdownKind.GRACEFUL
    for bad in ("delayed", "immediate:3", "sometimes"):
        with pytest.raises(ValueError):
            ShutdownMode.parse(bad)


def test_fault_flags_come_from_env_and_are_off_by_default() -> None:
    assert (
        parse_config([], {}).crash_after_s == 0 and parse_config([], {}).idle_close is IdleClose.FIN
    )
    env = {
        "DEMOAPP_CRASH_AFTER": "4",
        "DEMOAPP_CRASH_AFTER_REQUESTS": "100",
        "DEMOAPP_LIVENESS_FAIL_AFTER": "6",
        "DEMOAPP_READY_FLAP_PERIOD": "5",
        "DEMOAPP_READY_FLAP_DOWN": "2",
        "DEMOAPP_FLAP_MODE": "reset",
        "DEMOAPP_IDLE_CLOSE": "rst",
    }
    config = parse_config([], env)
    assert (config.crash_after_s, config.crash_after_requests) == (4.0, 100)
    assert config.liveness_fail_after_s == 6.0
    assert (config.ready_flap_period_s, config.ready_flap_down_s) == (5.0, 2.0)
    assert config.flap_mode is WarmupMode.RESET and config.idle_close is IdleClose.RST


@pytest.mark.parametrize("down", ["0", "5", "7"])
def test_flap_down_must_fit_inside_its_period(down: str) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--ready-flap-period", "5", "--ready-flap-down", down], {})
