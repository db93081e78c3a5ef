"""Hop access logs (``analyzer.readers.accesslog``): lines rendered from the documented formats
(``tests/analyzer/accesslog_render.py``), with retries, redirect groups, ``-`` values, final
502 / 504, hostile strings and damaged lines."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import TraceError
from analyzer.readers.accesslog import ROLLTRACE_LOG_FORMAT, AccessLogFormat, read_access_log
from analyzer.schema import HOP_ATTEMPTS, HOP_REQUESTS, AttemptOutcome, check_frame
from tests.analyzer.accesslog_render import rolltrace_line, upstreaminfo_line, write_log

A, B, C = "10.244.1.5:8080", "10.244.2.6:8080", "10.244.3.7:8080"
MSEC = 1764842400.25  # a log time (s), as $msec writes it with three decimals


def _read(tmp_path: Path, lines: list[str], name: str = "ingress.log"):  # type: ignore[no-untyped-def]
    log = read_access_log(write_log(tmp_path / name, lines))
    check_frame(log.requests, HOP_REQUESTS, "test")
    check_frame(log.attempts, HOP_ATTEMPTS, "test")
    return log


def _outcomes(log, line: int) -> list[str]:  # type: ignore[no-untyped-def]
    attempts = log.attempts[log.attempts["line"] == line]
    return list(attempts.sort_values("attempt")["outcome"])


def test_one_json_line_is_one_request_with_its_attempt(tmp_path: Path) -> None:
    log = _read(tmp_path, [rolltrace_line(msec=f"{MSEC:.3f}", request_time="0.004")])
    assert log.format is AccessLogFormat.ROLLTRACE
    assert log.hop == "ingress" and not log.problems
    row = log.requests.iloc[0]
    end_ns = round(MSEC * 1000) * 1_000_000
    assert row["end_ns"] == end_ns and row["start_ns"] == end_ns - 4_000_000
    assert row["time_resolution_ms"] == 1.0
    assert (row["client_ip"], row["client_port"]) == ("198.18.0.10", 40000)
    assert (row["method"], row["path"], row["status"]) == ("GET", "/", 200)
    assert (row["attempts"], row["failed_attempts"]) == (1, 0)
    attempt = log.attempts.iloc[0]
    assert (attempt["upstream_ip"], attempt["upstream_port"]) == ("10.244.1.5", 8080)
    assert attempt["connect_ms"] == 1.0 and attempt["header_ms"] == 3.0
    assert attempt["outcome"] == AttemptOutcome.OK


def test_retries_are_attempts_in_order_with_their_outcomes(tmp_path: Path) -> None:
    lines = [
        # refused, then answered: a masked failure
        rolltrace_line(
            upstream_addr=f"{A}, {B}",
            upstream_status="502, 200",
            upstream_connect_time="-, 0.001",
            upstream_header_time="-, 0.002",
            upstream_response_time="0.001, 0.002",
        ),
        # a reused connection reset before the header, then a connect timeout: the hop's 504
        rolltrace_line(
            status=504,
            upstream_addr=f"{A}, {B}",
            upstream_status="502, 504",
            upstream_connect_time="0.000, -",
            upstream_header_time="-, -",
            upstream_response_time="0.000, 1.000",
        ),
        # connected, no header in time; then the upstream answered 503 itself
        rolltrace_line(
            status=503,
            upstream_addr=f"{A}, {B}",
            upstream_status="504, 503",
            upstream_connect_time="0.001, 0.001",
            upstream_header_time="-, 0.002",
            upstream_response_time="5.000, 0.002",
        ),
    ]
    log = _read(tmp_path, lines)
    assert list(log.requests["attempts"]) == [2, 2, 2]
    assert list(log.requests["failed_attempts"]) == [1, 2, 2]
    assert _outcomes(log, 1) == ["connect-error", "ok"]
    assert _outcomes(log, 2) == ["no-response", "connect-timeout"]
    assert _outcomes(log, 3) == ["response-timeout", "http-5xx"]
    assert list(log.attempts[log.attempts["line"] == 1]["upstream_addr"]) == [A, B]


def test_internal_redirect_groups_and_a_group_without_a_server(tmp_path: Path) -> None:
    line = rolltrace_line(
        upstream_addr=f"{A}, {B} : backup-pool : [fd00::7]:8080",
        upstream_status="502, 502 : 502 : 200",
        upstream_connect_time="-, - : - : 0.001",
        upstream_header_time="-, - : - : 0.002",
        upstream_response_time="0.001, 0.001 : 0.000 : 0.002",
    )
    attempts = _read(tmp_path, [line]).attempts
    assert list(attempts["group"]) == [0, 0, 1, 2]
    assert list(attempts["attempt"]) == [1, 2, 3, 4]
    assert list(attempts["outcome"]) == ["connect-error", "connect-error", "no-server", "ok"]
    assert attempts["upstream_ip"].iloc[3] == "fd00::7"
    assert pd.isna(attempts["upstream_ip"].iloc[2])


def test_a_request_the_hop_answered_itself_has_no_attempt(tmp_path: Path) -> None:
    # nginx's escape=json writes a variable it did not find as nothing
    line = rolltrace_line(
        status=404,
        upstream_addr=None,
        upstream_status=None,
        upstream_connect_time=None,
        upstream_header_time=None,
        upstream_response_time=None,
        remote_port=None,
    )
    log = _read(tmp_path, [line])
    assert log.attempts.empty and log.requests["attempts"].iloc[0] == 0
    assert pd.isna(log.requests["client_port"].iloc[0])


def test_hostile_strings_stay_values(tmp_path: Path) -> None:
    request = 'GET /"},"upstream_addr":"6.6.6.6:1, 7.7.7.7:1\\ \x01 HTTP/1.1'
    lines = [
        rolltrace_line(request=request, host="a : b, c"),
        rolltrace_line(request="GET /caf\udcff HTTP/1.1"),  # a byte that is not UTF-8
    ]
    log = _read(tmp_path, lines)
    assert not log.problems
    assert list(log.attempts["upstream_addr"]) == [A, A]
    assert log.requests["host"].iloc[0] == "a : b, c"
    assert log.requests["path"].iloc[1] == "/caf\ufffd"


def test_upstreaminfo_is_read_with_coarse_times(tmp_path: Path) -> None:
    hostile = 'curl "x" [01/Jan/2020:00:00:00 +0000] - 1.2.3.4:80, 5.6.7.8:80 502'
    lines = [
        upstreaminfo_line(
            time_local="04/Dec/2025:11:00:00 +0100",
            request_time="0.004",
            http_user_agent=hostile,
            remote_user="al ice",
            upstream_addr=f"{A}, {B} : {C}",
            upstream_response_length="0, 0 : 12",
            upstream_response_time="0.001, 0.002 : 0.001",
            upstream_status="502, 504 : 200",
        ),
        upstreaminfo_line(
            status=502,
            upstream_addr=f"{A}, {B}",
            upstream_response_length="0, 0",
            upstream_response_time="0.000, -",
            upstream_status="502, -",
        ),
        upstreaminfo_line(
            proxy_upstream_name=None,
            upstream_addr=None,
            upstream_response_length=None,
            upstream_response_time=None,
            upstream_status=None,
            req_id=None,
        ),
    ]
    log = _read(tmp_path, lines, "edge.log")
    assert log.format is AccessLogFormat.INGRESS_NGINX and not log.problems
    requests = log.requests
    end_ns = pd.Timestamp("2025-12-04T10:00:00Z").value
    assert requests["end_ns"].iloc[0] == end_ns and requests["start_ns"].iloc[0] == end_ns - 4e6
    assert (requests["time_resolution_ms"] == 1000.0).all()
    assert requests["client_port"].isna().all() and requests["host"].isna().all()
    assert requests["upstream"].iloc[0] == "upstream-default-demo-80"
    assert pd.isna(requests["upstream"].iloc[2]) and pd.isna(requests["request_key"].iloc[2])
    assert list(requests["attempts"]) == [3, 2, 0]
    # without connect or header times a 5xx cannot be placed; "-" is no status at all
    assert _outcomes(log, 1) == ["failed-5xx", "failed-5xx", "ok"]
    assert _outcomes(log, 2) == ["failed-5xx", "unknown"]
    assert log.attempts["connect_ms"].isna().all()
    assert pd.isna(log.attempts["response_ms"].iloc[4])


def test_damaged_lines_are_named_and_left_out(tmp_path: Path) -> None:
    good = rolltrace_line()
    lines = [
        good,
        "",  # blank lines are skipped, but counted
        "{not json",
        good.replace('"msec":1764842400.250,', ""),
        good.replace('"msec":1764842400.250', '"msec":"soon"'),
        good.replace('"status":200', '"status":true'),
        good.replace('"upstream_status":"200"', '"upstream_status":"200, 200"'),
        good.replace('"upstream_response_time":"0.003"', '"upstream_response_time":"fast"'),
        good.replace('"remote_port":"40000"', '"remote_port":"http"'),
        good.replace(f'"upstream_addr":"{A}"', f'"upstream_addr":"{A}, , {B}"'),
        good.replace('"status":200', '"status":200.5'),
        good.replace('"upstream_status":"200"', '"upstream_status":"2.5"'),
        good.replace('"upstream_header_time":"0.003"', '"upstream_header_time":"inf"'),
        good,
    ]
    log = _read(tmp_path, lines)
    found = [(p.location, p.field) for p in log.problems]
    assert found == [
        ("line 3", None),
        ("line 4", "msec"),
        ("line 5", "msec"),
        ("line 6", "status"),
        ("line 7", "upstream_status"),
        ("line 8", "upstream_response_time"),
        ("line 9", "remote_port"),
        ("line 10", "upstream_addr"),
        ("line 11", "status"),
        ("line 12", "upstream_status"),
        ("line 13", "upstream_header_time"),
    ]
    assert all(p.file.endswith("ingress.log") for p in log.problems)
    assert list(log.requests["line"]) == [1, 14]
    assert list(log.attempts["line"]) == [1, 14]


def test_damaged_upstreaminfo_lines_are_named(tmp_path: Path) -> None:
    good = upstreaminfo_line()
    lines = [
        good,
        "GET / HTTP/1.1 200",
        upstreaminfo_line(time_local="31/Feb/2025:10:00:00 +0000"),
        upstreaminfo_line(request_time="soon"),
        good.rsplit(" ", 1)[0],  # the request id cut off
        upstreaminfo_line(upstream_status="502, 200"),
    ]
    log = _read(tmp_path, lines)
    assert log.format is AccessLogFormat.INGRESS_NGINX
    found = [(p.location, p.field) for p in log.problems]
    assert found == [
        ("line 2", None),
        ("line 3", "time_local"),
        ("line 4", "request_time"),
        ("line 5", "upstream_addr"),
        ("line 6", "upstream_status"),
    ]
    assert list(log.requests["line"]) == [1]


def test_the_format_is_the_one_most_first_lines_are_in(tmp_path: Path) -> None:
    log = _read(tmp_path, ["garbage", upstreaminfo_line(), upstreaminfo_line()])
    assert log.format is AccessLogFormat.INGRESS_NGINX
    assert [p.location for p in log.problems] == ["line 1"]


def test_an_unknown_format_is_a_located_error(tmp_path: Path) -> None:
    path = write_log(tmp_path / "app.log", ["", "INFO started", "INFO ready"])
    with pytest.raises(TraceError) as caught:
        read_access_log(path)
    assert caught.value.path == str(path) and caught.value.location == "line 2"
    with pytest.raises(TraceError, match="empty"):
        read_access_log(write_log(tmp_path / "quiet.log", [""]))
    with pytest.raises(TraceError, match="cannot read"):
        read_access_log(tmp_path / "missing.log")


def test_the_hop_name_may_be_given(tmp_path: Path) -> None:
    path = write_log(tmp_path / "access.log", [rolltrace_line()])
    log = read_access_log(path, hop="edge")
    assert log.hop == "edge" and set(log.requests["hop"]) == {"edge"}
    assert set(log.attempts["hop"]) == {"edge"}
    assert log.times() == {
        "format": "rolltrace",
        "coarse": False,
        "time_resolution_ms": 1.0,
        "lines": 1,
        "requests": 1,
        "bad_lines": 0,
    }


def test_the_local_ingress_writes_the_format_read_here() -> None:
    """The local ingress's nginx and this reader meet only through the log file (the rooms do
    not import each other): the format string each names must be the same text."""
    from localcluster.ingress.nginxconf import LOG_FORMAT

    assert LOG_FORMAT == ROLLTRACE_LOG_FORMAT
