"""Damaged or partial inputs are never reported as complete: the summary, the report's headline
and the terminal say the analysis is degraded and why."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from analyzer.pipeline import analyze
from analyzer.report import render_report
from analyzer.tracebuilder.build import build_run
from rolltrace.cli import app


def test_a_clean_run_is_complete(tmp_path: Path) -> None:
    built = build_run(tmp_path / "run", "endpoint-lag", seed=2, rate=40, duration_s=15)
    summary = analyze(built.paths).summary
    assert summary["analysis_status"] == "complete"
    assert summary["degraded_because"] == []


def test_a_torn_capture_and_a_garbled_watch_line_degrade_the_analysis(tmp_path: Path) -> None:
    built = build_run(tmp_path / "run", "endpoint-lag", seed=2, rate=40, duration_s=15)
    capture = built.paths.packets_dir / "client.pcap"
    data = capture.read_bytes()
    capture.write_bytes(data[: len(data) // 2] + b"\xff" * 5)
    with built.paths.events.open("ab") as events:
        events.write(b'{"type": "MODIFIED", "recv_ns": "soon"}\n')
    analysis = analyze(built.paths)
    summary = analysis.summary
    assert summary["analysis_status"] == "degraded"
    reasons = summary["degraded_because"]
    assert any(r.startswith("packets/client.pcap: byte ") for r in reasons), reasons
    assert any(r.startswith("events.jsonl: line ") for r in reasons), reasons
    report = render_report(analysis, built.paths)
    first_lines = report.markdown.read_text().splitlines()[:8]
    assert any(line.startswith("Analysis degraded: packets/client.pcap") for line in first_lines)
    assert "lower bounds" in report.html.read_text()


def test_kernel_drops_degrade_the_analysis_and_the_terminal_says_so(tmp_path: Path) -> None:
    built = build_run(tmp_path / "run", "endpoint-lag", seed=2, rate=40, duration_s=15)
    meta = json.loads(built.paths.run_json.read_text())
    client = next(c for c in meta["captures"] if c["point"] == "client")
    client["kernel_drops"] = 1234
    built.paths.run_json.write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["analyze", str(built.path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"analysis degraded: {client['file']}: the kernel dropped 1234 packets" in result.output
    summary = json.loads((built.paths.analysis / "summary.json").read_text())
    assert summary["analysis_status"] == "degraded"


def test_the_report_states_how_failures_were_tied_to_pods(tmp_path: Path) -> None:
    built = build_run(tmp_path / "run", "endpoint-lag", seed=2, rate=40, duration_s=15)
    analysis = analyze(built.paths)
    summary = analysis.summary
    markdown = render_report(analysis, built.paths).markdown.read_text()
    header = markdown.split("## Timeline")[0]  # headline, what to change, then run facts
    match = summary["pod_match"]
    direct = match["header"] + match["node-capture"]
    assert summary["requests_failed"] > 0
    assert (
        f"Pod identity: {direct} of {summary['requests_failed']} failed requests tied to their "
        f"Pod directly (response header or node capture), {match['inferred']} inferred"
    ) in header
