from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzer.readers.requests import read_requests
from analyzer.rundir import Problem
from analyzer.validate import MAX_PROBLEMS_PER_FILE, NotARunDirectory, validate_run
from rolltrace.cli import app
from tests.analyzer.handmade import make_run


def _where(problems: list[Problem]) -> list[tuple[str, str, str | None, str]]:
    return [(p.file, p.location, p.field, p.severity) for p in problems]


def _append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_handmade_run_is_valid(tmp_path: Path) -> None:
    assert validate_run(make_run(tmp_path / "run")) == []


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(NotARunDirectory):
        validate_run(tmp_path)
    with pytest.raises(NotARunDirectory):
        validate_run(tmp_path / "nope")


def test_events_and_truth_problems_name_line_and_field(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    _append(run / "events.jsonl", '{"type": "MODIFIED", "recv_ns": 1, "kind": "Pod"}\n')
    _append(run / "events.jsonl", '{"type": "ADDED", "recv_ns": 1, "kind": "Node",')
    _append(run / "truth.jsonl", '{"ts_ns": 5, "source": "lb", "event": "lb-health-changed"}\n')
    _append(run / "truth.jsonl", '{"ts_ns": 6, "source": "lb", "event": "coffee-break"}\n')
    problems = validate_run(run)
    assert _where(problems) == [
        ("events.jsonl", "line 5", "object", "error"),
        ("events.jsonl", "line 6", None, "error"),
        ("truth.jsonl", "line 3", "target", "error"),
        ("truth.jsonl", "line 4", "event", "warning"),
    ]
    assert "not valid JSON" in problems[1].message


def test_event_receive_time_jumping_back_is_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    line = {"type": "BOOKMARK", "recv_ns": 5, "kind": "Pod", "object": {"metadata": {}}}
    _append(run / "events.jsonl", json.dumps(line) + "\n")
    assert _where(validate_run(run)) == [("events.jsonl", "line 5", "recv_ns", "warning")]


def test_requests_rows_and_run_json_fields(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    frame = read_requests(run / "requests.parquet")
    frame.loc[3, "error_kind"] = "kaboom"
    frame.to_parquet(run / "requests.parquet", index=False)
    meta = json.loads((run / "run.json").read_text())
    meta["phases"]["load_stop"] = meta["phases"]["load_start"] - 1
    meta["captures"].append({"file": "packets/node-1.pcap", "point": "node", "node": "node-1"})
    meta["service"]["port"] = "80"
    (run / "run.json").write_text(json.dumps(meta))
    assert _where(validate_run(run)) == [
        ("run.json", "file", "phases.load_stop", "error"),
        ("run.json", "file", "service.port", "error"),
        ("run.json", "file", "captures.1.file", "error"),  # listed, but not there
        ("requests.parquet", "row 3", "error_kind", "error"),
    ]


def test_run_json_type_error_names_field(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta["captures"][0]["kernel_drops"] = "none"
    (run / "run.json").write_text(json.dumps(meta))
    assert _where(validate_run(run)) == [("run.json", "file", "captures.0.kernel_drops", "error")]


def test_truncated_capture_names_the_byte(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    capture = run / "packets" / "client.pcap"
    capture.write_bytes(capture.read_bytes()[:-20])
    problems = validate_run(run)
    assert [(p.file, p.severity) for p in problems] == [("packets/client.pcap", "error")]
    assert problems[0].location.startswith("byte ")


def test_missing_optional_files_are_warnings(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "events.jsonl").unlink()
    (run / "truth.jsonl").unlink()
    (run / "packets" / "client.pcap").unlink()
    assert _where(validate_run(run)) == [
        ("run.json", "file", "captures.0.file", "error"),  # status complete: a capture is lost
        ("events.jsonl", "file", None, "warning"),
        ("packets/", "file", None, "warning"),
    ]


def test_many_problems_are_capped_per_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    _append(run / "events.jsonl", "garbage\n" * (MAX_PROBLEMS_PER_FILE + 7))
    problems = [p for p in validate_run(run) if p.file == "events.jsonl"]
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert problems[-1].message == "… and 7 more problems not shown"


def test_cli_exit_codes_and_table(tmp_path: Path) -> None:
    runner = CliRunner()
    run = make_run(tmp_path / "run")
    ok = runner.invoke(app, ["validate", str(run)])
    assert ok.exit_code == 0, ok.output
    assert "valid (0 errors, 0 warnings)" in ok.output
    _append(run / "events.jsonl", '{"type": "ADDED", "recv_ns": -1, "kind": "Pod"}\n')
    bad = runner.invoke(app, ["validate", str(run)], env={"COLUMNS": "200"})
    assert bad.exit_code == 1
    assert "events.jsonl" in bad.output and "line 5" in bad.output and "recv_ns" in bad.output
    assert runner.invoke(app, ["validate", str(tmp_path / "empty")]).exit_code == 2


def test_cli_strict_fails_on_warnings(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "events.jsonl").unlink()
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(run)]).exit_code == 0
    assert runner.invoke(app, ["validate", "--strict", str(run)]).exit_code == 1


def test_failed_run_without_requests_is_only_warned(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta.update(status="failed", status_reasons=["cluster did not start"])
    (run / "run.json").write_text(json.dumps(meta))
    (run / "requests.parquet").unlink()
    assert _where(validate_run(run)) == [("requests.parquet", "file", None, "warning")]


def test_watch_gap_is_reported_as_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    line = {
        "type": "GAP",
        "recv_ns": 4 * 10**18,
        "kind": "Pod",
        "since_ns": 4 * 10**18 - 2500 * 10**6,
    }
    _append(run / "events.jsonl", json.dumps(line) + "\n")
    (problem,) = validate_run(run)
    assert (problem.file, problem.location, problem.severity) == (
        "events.jsonl",
        "line 5",
        "warning",
    )
    assert problem.message.startswith("Pod events may be missing for 2.5 s")


def test_file_on_another_clock_is_warned(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    hour = 3600 * 10**9
    lines = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    shifted = [{**line, "recv_ns": line["recv_ns"] - 2 * hour} for line in lines]
    (run / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in shifted))
    (problem,) = validate_run(run)
    assert (problem.file, problem.location, problem.severity) == ("events.jsonl", "file", "warning")
    assert "do not overlap requests.parquet" in problem.message


def test_requests_outside_the_load_phases_are_warned(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta["phases"]["load_stop"] = meta["phases"]["load_start"] + 1
    meta["phases"].pop("rollout_trigger")
    meta["phases"].pop("rollout_complete")
    (run / "run.json").write_text(json.dumps(meta))
    frame = read_requests(run / "requests.parquet")
    late = frame.index >= 2
    for column in ("scheduled_ns", "start_ns", "connect_ns", "first_byte_ns", "end_ns"):
        frame[column] = frame[column].where(~late, frame[column] + 10 * 10**9)
    frame.to_parquet(run / "requests.parquet", index=False)
    problems = validate_run(run)
    assert _where(problems) == [
        ("run.json", "file", "phases.rollout_trigger", "warning"),
        ("run.json", "file", "phases.rollout_complete", "warning"),
        ("requests.parquet", "row 2", "scheduled_ns", "warning"),
    ]
    assert problems[-1].message.startswith("4 requests are scheduled outside")


def test_strict_accepts_what_the_runner_itself_writes(tmp_path: Path) -> None:
    """Every phase `rolltrace run` records, its progress file and the capture stats files."""
    run = make_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    core = meta["phases"]
    start, stop = core["load_start"], core["load_stop"]
    meta["phases"] = {
        "cluster_ready": start - 4,
        "manifests_applied": start - 3,
        "available": start - 2,
        "captures_started": start - 1,
        **core,
        "old_pods_gone": stop - 1,
        "captures_stopped": stop + 1,
    }
    (run / "run.json").write_text(json.dumps(meta))
    (run / "requests.progress.json").write_text('{"ts_ns": 1, "requests": 2, "failed": 0}')
    for capture in meta["captures"]:
        stats = (run / capture["file"]).with_suffix(".stats.json")
        stats.write_text('{"packets": 10, "kernel_drops": 0}')
    result = CliRunner().invoke(app, ["validate", "--strict", str(run)])
    assert result.exit_code == 0, result.output


def test_a_runner_phase_out_of_order_is_an_error(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta["phases"]["captures_started"] = meta["phases"]["load_start"] + 1
    (run / "run.json").write_text(json.dumps(meta))
    assert ("run.json", "file", "phases.load_start", "error") in _where(validate_run(run))
