"""`rolltrace import` (``analyzer.importer``): trace-builder runs taken apart into what a user
would have (a client capture, the watch, a load tool's log) and assembled again; the imported
run must validate and analyze to the same failures and causes as the original."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from analyzer.errors import TraceError
from analyzer.importer import Endpoint, ImportSpec, JoinedBy, import_run, rollout_window
from analyzer.pipeline import analyze
from analyzer.rundir import RunPaths
from analyzer.tracebuilder import build_run
from analyzer.validate import validate_run
from rolltrace.cli import app

GO_ERRORS = {  # what Go's net/http says for each outcome (vegeta's `error`)
    "refused": "dial tcp 203.0.113.10:80: connect: connection refused",
    "connect-timeout": "dial tcp 203.0.113.10:80: i/o timeout",
    "reset": "read tcp 10.0.0.2:40000->203.0.113.10:80: read: connection reset by peer",
    "eof": "EOF",
    "read-timeout": "context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
}


def _vegeta(requests: pd.DataFrame, shift_ns: int = 0) -> str:
    """A vegeta ``encode --to json`` file of these requests (no client port in it)."""
    lines = []
    for row in requests.to_dict("records"):
        code = 0 if pd.isna(row["status_code"]) else int(row["status_code"])
        start = pd.Timestamp(int(row["start_ns"]) + shift_ns, tz="UTC")
        lines.append(
            json.dumps(
                {
                    "attack": "",
                    "seq": int(row["request_id"]),
                    "code": code,
                    "timestamp": start.isoformat(),
                    "latency": int(row["end_ns"] - row["start_ns"]),
                    "error": "" if code else GO_ERRORS.get(str(row["error_kind"]), "EOF"),
                    "method": "GET",
                    "url": f"http://{row['remote_ip']}:{row['remote_port']}{row['path']}",
                }
            )
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("source") / "run"
    build_run(root, "endpoint-lag", seed=3, rate=100, duration_s=20)
    yield root


@pytest.fixture(scope="module")
def original(source: Path) -> dict[str, Any]:
    return dict(analyze(RunPaths(source), write_tables=False, write_summary=False).summary)


def _spec(source: Path, out: Path, **overrides: Any) -> ImportSpec:
    fields: dict[str, Any] = {
        "output": out,
        "client_pcap": source / "packets" / "client.pcap",
        "watches": [source / "events.jsonl"],
    }
    return ImportSpec(**(fields | overrides))


def _analyzed(out: Path) -> dict[str, Any]:
    errors = [p for p in validate_run(out) if p.severity == "error"]
    assert not errors, errors
    return dict(analyze(RunPaths(out)).summary)


def test_requests_rebuilt_from_packets_give_the_same_causes(
    source: Path, original: dict[str, Any], tmp_path: Path
) -> None:
    result = import_run(_spec(source, tmp_path / "run"))
    meta = result.meta
    assert meta.backend == "imported" and meta.service["external_ip"] == "203.0.113.10"
    assert meta.service["port"] == 80 and meta.service["replicas"] == 3
    summary = _analyzed(tmp_path / "run")
    assert summary["requests_total"] == original["requests_total"]
    assert summary["failed_by_cause"] == original["failed_by_cause"]
    record = meta.extra_fields()["import"]
    assert record["joined_by"] == {JoinedBy.PACKETS.value: original["requests_total"]}
    joined = pd.read_parquet(tmp_path / "run" / "requests.parquet")["joined_by"]
    assert (joined == JoinedBy.PACKETS.value).all()


@pytest.mark.parametrize("shift_ms", [0, 3])
def test_a_log_without_ports_is_joined_by_time_and_destination(
    source: Path, original: dict[str, Any], tmp_path: Path, shift_ms: int
) -> None:
    """A log clock ``shift_ms`` ahead of the capture's is found and removed before pairing."""
    requests = pd.read_parquet(source / "requests.parquet")
    log = tmp_path / "vegeta.json"
    log.write_text(_vegeta(requests, shift_ms * 1_000_000))
    result = import_run(_spec(source, tmp_path / "run", requests=log))
    record = result.meta.extra_fields()["import"]
    assert record["request_log"]["format"] == "vegeta"
    assert record["joined_by"] == {JoinedBy.TIME_DESTINATION.value: len(requests)}
    assert record["reconcile"]["status_differs"] == 0
    summary = _analyzed(tmp_path / "run")
    assert summary["failed_by_cause"] == original["failed_by_cause"]
    imported = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    assert imported["local_port"].notna().all()  # the capture's ports, for the joins


def test_failures_the_log_lacks_are_added_from_the_capture(
    source: Path, original: dict[str, Any], tmp_path: Path
) -> None:
    """hey's CSV lists only requests that got a response: the failures come from packets."""
    requests = pd.read_parquet(source / "requests.parquet")
    answered = requests[requests["status_code"].notna()]
    log = tmp_path / "vegeta.json"
    log.write_text(_vegeta(answered))
    result = import_run(_spec(source, tmp_path / "run", requests=log))
    joined = result.meta.extra_fields()["import"]["joined_by"]
    assert joined[JoinedBy.PACKETS_ONLY.value] == len(requests) - len(answered)
    assert any("only in the capture" in note for note in result.notes)
    summary = _analyzed(tmp_path / "run")
    assert summary["requests_failed"] == original["requests_failed"]


def test_rolltrace_parquet_joins_by_client_port(source: Path, tmp_path: Path) -> None:
    result = import_run(_spec(source, tmp_path / "run", requests=source / "requests.parquet"))
    record = result.meta.extra_fields()["import"]
    assert record["request_log"] == {
        "file": str(source / "requests.parquet"),
        "format": "parquet",
        "has_ports": True,
    }
    assert set(record["joined_by"]) == {JoinedBy.LOCAL_PORT.value}


def test_log_requests_to_other_addresses_are_left_out(source: Path, tmp_path: Path) -> None:
    requests = pd.read_parquet(source / "requests.parquet")
    elsewhere = requests.head(5).assign(remote_ip="192.0.2.7")
    log = tmp_path / "vegeta.json"
    log.write_text(_vegeta(pd.concat([requests, elsewhere], ignore_index=True)))
    result = import_run(_spec(source, tmp_path / "run", requests=log))
    assert result.meta.extra_fields()["import"]["left_out"]["log_requests"] == 5
    assert any("5 requests of vegeta.json went to other addresses" in n for n in result.notes)


def test_the_lb_must_be_known(source: Path, tmp_path: Path) -> None:
    watch = tmp_path / "events.jsonl"
    lines = (source / "events.jsonl").read_text().splitlines()
    watch.write_text("\n".join(x for x in lines if '"kind":"Service"' not in x) + "\n")
    with pytest.raises(TraceError, match="--lb ADDRESS:PORT"):
        import_run(_spec(source, tmp_path / "run", watches=[watch]))
    result = import_run(
        _spec(source, tmp_path / "run", watches=[watch], lb=Endpoint.parse("203.0.113.10:80"))
    )
    assert result.meta.service == {"external_ip": "203.0.113.10", "port": 80, "replicas": 3}


def test_a_garbled_watch_line_is_located_or_left_out(source: Path, tmp_path: Path) -> None:
    watch = tmp_path / "events.jsonl"
    lines = (source / "events.jsonl").read_text().splitlines()
    watch.write_text(
        "\n".join([*lines[:3], '{"type": "ADDED", "recv_ns": "soon"', *lines[3:]]) + "\n"
    )
    with pytest.raises(TraceError) as info:
        import_run(_spec(source, tmp_path / "run", watches=[watch]))
    assert info.value.path == str(watch) and info.value.location == "line 4"
    assert not (tmp_path / "run").exists()  # nothing half-written
    result = import_run(_spec(source, tmp_path / "run", watches=[watch], keep_going=True))
    assert result.meta.status.value == "partial"
    assert "1 damaged input lines left out" in result.meta.status_reasons


def _deployment(generation: int, image: str, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": image}]}}},
        "status": status,
    }


def test_the_rollout_window_follows_the_template_and_rollout_status() -> None:
    done = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    events = [
        {"kind": "Deployment", "recv_ns": 1, "object": _deployment(1, "v1", replicas=3)},
        {"kind": "Deployment", "recv_ns": 2, "object": _deployment(1, "v1", replicas=4)},  # scale
        {"kind": "Deployment", "recv_ns": 3, "object": _deployment(2, "v2", replicas=4)},
        {
            "kind": "Deployment",
            "recv_ns": 4,
            "object": _deployment(2, "v2", **(done | {"replicas": 4})),
        },
        {"kind": "Deployment", "recv_ns": 5, "object": _deployment(2, "v2", **done)},
    ]
    assert rollout_window(events) == (3, 5)
    assert rollout_window(events[:4]) == (3, None)
    assert rollout_window(events[:2]) == (None, None)


def test_the_command_reports_bad_input_with_exit_2(source: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = [
        "import",
        "-o",
        str(tmp_path / "run"),
        "--pcap",
        str(source / "packets" / "client.pcap"),
    ]
    bad_lb = runner.invoke(app, [*base, "--watch", str(source / "events.jsonl"), "--lb", "nowhere"])
    assert bad_lb.exit_code == 2 and "'nowhere' is not ADDRESS:PORT" in bad_lb.output
    missing = runner.invoke(app, [*base, "--watch", str(tmp_path / "absent.json")])
    assert missing.exit_code == 2 and "absent.json: no such file" in missing.output
    good = runner.invoke(app, [*base, "--watch", str(source / "events.jsonl")])
    assert good.exit_code == 0, good.output
    assert f"next: rolltrace analyze {tmp_path / 'run'}" in good.output
