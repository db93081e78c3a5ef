"""Request logs of load tools (k6 --out json, vegeta encode --to json, rolltrace's Parquet) read
as the requests table: times, error kinds, connection facts, detection and located damage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analyzer.errors import TraceError
from analyzer.readers.loadtools import (
    RequestFormat,
    detect_format,
    error_kind_from_text,
    read_request_log,
)
from analyzer.readers.requests import check_requests, write_requests
from analyzer.schema import REQUESTS, ErrorKind, check_frame

FIXTURES = Path(__file__).parent.parent / "fixtures" / "loadtools"
T0 = pd.Timestamp("2026-12-04T10:00:00Z").value  # the fixtures' second


def test_k6_points_become_one_row_per_request() -> None:
    log = read_request_log(FIXTURES / "k6.json")
    frame = log.frame
    check_frame(frame, REQUESTS, "k6")
    assert log.format is RequestFormat.K6 and not log.has_ports and log.problems == []
    assert list(frame["error_kind"]) == ["ok", "ok", "refused", "http-5xx"]
    assert list(frame["status_code"].astype("object").fillna(0)) == [200, 200, 0, 503]
    # k6 stamps every sample with the request's end; the start is end − duration − connecting
    first = frame.iloc[0]
    assert first["end_ns"] == T0 + 105_000_000
    assert first["start_ns"] == T0 + 105_000_000 - 3_500_000 - 800_000
    assert first["connect_ns"] == first["start_ns"] + 800_000
    assert first["first_byte_ns"] == first["end_ns"] - 400_000
    # connected → a new connection; a refused connect opened one too; the others reused one
    assert list(frame["conn_new"]) == [True, False, True, False]
    assert (frame["remote_ip"] == "10.96.0.10").all() and (frame["remote_port"] == 80).all()
    assert frame["local_port"].isna().all()
    assert not [p for p in check_requests(frame) if p.severity == "error"]


def test_vegeta_results_become_rows_with_their_error_kinds() -> None:
    log = read_request_log(FIXTURES / "vegeta.json")
    frame = log.frame
    check_frame(frame, REQUESTS, "vegeta")
    assert log.format is RequestFormat.VEGETA
    assert list(frame["error_kind"]) == ["ok", "refused", "http-5xx", "eof"]
    assert frame["start_ns"].iloc[0] == T0 + 101_500_000
    assert frame["end_ns"].iloc[0] == T0 + 105_000_000  # timestamp + latency
    assert frame["status_code"].isna().tolist() == [False, True, False, True]


def test_formats_are_detected_and_parquet_round_trips(tmp_path: Path) -> None:
    assert detect_format(FIXTURES / "k6.json") is RequestFormat.K6
    assert detect_format(FIXTURES / "vegeta.json") is RequestFormat.VEGETA
    frame = read_request_log(FIXTURES / "k6.json").frame
    write_requests(tmp_path / "requests.parquet", frame)
    assert detect_format(tmp_path / "requests.parquet") is RequestFormat.PARQUET
    again = read_request_log(tmp_path / "requests.parquet", "locust")
    pd.testing.assert_frame_equal(again.frame[frame.columns], frame)


def test_an_unknown_file_names_the_option_to_pass(tmp_path: Path) -> None:
    other = tmp_path / "results.csv"
    other.write_text("response-time,status-code\n0.1,200\n")
    with pytest.raises(TraceError, match="--requests-format") as info:
        read_request_log(other)
    assert info.value.location == "line 1"


def test_damaged_lines_are_located_and_left_out(tmp_path: Path) -> None:
    lines = (FIXTURES / "vegeta.json").read_text().splitlines()
    bad_latency = json.loads(lines[1]) | {"latency": "fast"}
    bad_time = json.loads(lines[2]) | {"timestamp": "yesterday"}
    damaged = tmp_path / "vegeta.json"
    damaged.write_text(
        "\n".join([lines[0], json.dumps(bad_latency), "{not json", json.dumps(bad_time), lines[3]])
        + "\n"
    )
    log = read_request_log(damaged, RequestFormat.VEGETA)
    assert len(log.frame) == 2
    where = sorted((p.location, p.field) for p in log.problems)
    assert where == [("line 2", "latency"), ("line 3", None), ("line 4", "timestamp")]


def test_k6_point_with_a_wrong_value_is_located(tmp_path: Path) -> None:
    lines = (FIXTURES / "k6.json").read_text().splitlines()
    number = next(
        i for i, line in enumerate(lines) if '"http_req_duration"' in line and "Point" in line
    )
    point = json.loads(lines[number])
    point["data"]["value"] = "slow"
    lines[number] = json.dumps(point)
    damaged = tmp_path / "k6.json"
    damaged.write_text("\n".join(lines) + "\n")
    log = read_request_log(damaged)
    assert [(p.location, p.field) for p in log.problems] == [(f"line {number + 1}", "data.value")]
    assert len(log.frame) == 3  # the request without its duration is left out


@pytest.mark.parametrize(
    ("text", "status", "kind"),
    [
        (
            'Get "http://10.0.0.1/": dial tcp 10.0.0.1:80: connect: connection refused',
            None,
            ErrorKind.REFUSED,
        ),
        ("dial: i/o timeout", None, ErrorKind.CONNECT_TIMEOUT),
        ('Get "http://x/": dial tcp 10.0.0.1:80: i/o timeout', None, ErrorKind.CONNECT_TIMEOUT),
        (
            "read tcp 10.0.0.2:4000->10.0.0.1:80: read: connection reset by peer",
            None,
            ErrorKind.RESET,
        ),
        ('Get "http://x/": EOF', None, ErrorKind.EOF),
        (
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            None,
            ErrorKind.READ_TIMEOUT,
        ),
        ("connect: no route to host", None, ErrorKind.UNREACHABLE),
        ("503 Service Unavailable", 503, ErrorKind.HTTP_5XX),
        ("", 404, ErrorKind.HTTP_4XX),
        ("", 200, ErrorKind.OK),
        ("something else", None, ErrorKind.OTHER),
    ],
)
def test_go_error_texts_map_to_error_kinds(text: str, status: int | None, kind: ErrorKind) -> None:
    assert error_kind_from_text(text, status) is kind


def test_a_url_host_name_is_kept_for_the_importer(tmp_path: Path) -> None:
    line = json.loads((FIXTURES / "vegeta.json").read_text().splitlines()[0])
    line["url"] = "http://web.example.com:8080/health"
    named = tmp_path / "vegeta.json"
    named.write_text(json.dumps(line) + "\n")
    row = read_request_log(named).frame.iloc[0]
    assert (row["remote_ip"], row["remote_port"], row["path"]) == (
        "web.example.com",
        8080,
        "/health",
    )
