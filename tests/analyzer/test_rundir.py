from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyzer.errors import TraceError
from analyzer.rundir import RunMeta, RunPaths, parse_run_meta, read_run_meta, write_run_meta
from analyzer.schema import RunStatus

MINIMAL = {"schema_version": "1.0", "run_id": "r1", "status": "partial", "backend": "kube"}


def test_paths_follow_the_documented_layout(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    relative = {
        name: str(getattr(paths, name).relative_to(tmp_path))
        for name in (
            "run_json",
            "requests",
            "packets_dir",
            "events",
            "truth",
            "logs",
            "analysis",
            "tables",
            "figures",
            "summary",
        )
    }
    assert relative == {
        "run_json": "run.json",
        "requests": "requests.parquet",
        "packets_dir": "packets",
        "events": "events.jsonl",
        "truth": "truth.jsonl",
        "logs": "logs",
        "analysis": "analysis",
        "tables": "analysis/tables",
        "figures": "analysis/figures",
        "summary": "analysis/summary.json",
    }
    assert paths.table("pods") == tmp_path / "analysis" / "tables" / "pods.parquet"


def test_captures_lists_pcap_and_pcapng_sorted(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert paths.captures() == []
    paths.packets_dir.mkdir()
    for name in ("node-2.pcapng", "client.pcap", "notes.txt"):
        (paths.packets_dir / name).write_bytes(b"")
    assert [p.name for p in paths.captures()] == ["client.pcap", "node-2.pcapng"]


def test_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    raw = {
        **MINIMAL,
        "phases": {"load_start": 10, "rollout_trigger": 20},
        "captures": [{"file": "packets/client.pcap", "point": "client", "snaplen": 96}],
        "written_by_a_newer_runner": {"x": [1, 2]},
    }
    (tmp_path / "run.json").write_text(json.dumps(raw))
    meta = read_run_meta(tmp_path)
    assert meta.status is RunStatus.PARTIAL and meta.phase("load_stop") is None
    assert meta.phase("rollout_trigger") == 20
    assert meta.extra_fields() == {"written_by_a_newer_runner": {"x": [1, 2]}}
    write_run_meta(tmp_path / "copy.json", meta)
    again = json.loads((tmp_path / "copy.json").read_text())
    assert again["written_by_a_newer_runner"] == {"x": [1, 2]}
    assert again["captures"][0]["snaplen"] == 96
    assert read_run_meta(tmp_path / "copy.json") == meta


def test_constructed_in_python_with_plain_strings(tmp_path: Path) -> None:
    meta = RunMeta(schema_version="1.0", run_id="x", status="complete", backend="local")
    write_run_meta(tmp_path, meta)
    assert read_run_meta(tmp_path / "run.json").status is RunStatus.COMPLETE
    assert not list(tmp_path.glob(".run.json.*"))  # the temporary file was renamed away


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phases": {"load_start": "10"}}, "phases.load_start"),
        ({"phases": {"load_start": 1.5}}, "phases.load_start"),
        ({"status": "exploded"}, "status"),
        ({"backend": "minikube"}, "backend"),
        ({"captures": [{"file": "a.pcap", "point": "sideways"}]}, "captures.0.point"),
        ({"status_reasons": "one"}, "status_reasons"),
        ({"schema_version": "2.0"}, "schema_version"),
    ],
)
def test_wrong_types_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(TraceError) as info:
        parse_run_meta(json.dumps({**MINIMAL, **change}), "runs/x/run.json")
    assert info.value.field == field
    assert str(info.value).startswith("runs/x/run.json: file, field")


def test_missing_required_and_not_json() -> None:
    with pytest.raises(TraceError) as info:
        parse_run_meta(json.dumps({"schema_version": "1.0", "status": "complete"}))
    assert info.value.field in {"run_id", "backend"}
    with pytest.raises(TraceError, match="not valid JSON"):
        parse_run_meta(b"{\xff")
    with pytest.raises(TraceError, match="expected a JSON object"):
        parse_run_meta("[]")


def test_unreadable_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        read_run_meta(tmp_path / "missing" / "run.json")
