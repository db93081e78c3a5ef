"""``rolltrace analyze``: exit 0 pass, 1 budget exceeded, 2 unusable input or bad budget."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rolltrace.cli import app
from tests.analyzer.test_pipeline import minimal_run

runner = CliRunner()


def test_analyze_prints_a_summary_and_passes_without_budgets(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    result = runner.invoke(app, ["analyze", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "2 of 52 requests failed" in result.output
    assert "missing inputs" in result.output
    assert (run_dir / "analysis" / "summary.json").exists()


def test_budget_exceeded_exits_1_and_names_the_budget(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    result = runner.invoke(
        app, ["analyze", str(run_dir), "--fail-on", "rate>0.5", "--fail-on", "failed>1"]
    )
    assert result.exit_code == 1
    assert "budget exceeded: failed>1" in result.output
    assert "rate>0.5" not in result.output.split("budget exceeded")[-1]


def test_budgets_that_hold_exit_0(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    result = runner.invoke(
        app, ["analyze", str(run_dir), "--fail-on", "failed>2", "--fail-on", "cause:lb-lag>0"]
    )
    assert result.exit_code == 0, result.output


def test_json_output_is_the_summary(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    result = runner.invoke(app, ["analyze", str(run_dir), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["requests_failed"] == 2


def test_missing_run_json_exits_2_naming_the_file(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    (run_dir / "run.json").unlink()
    result = runner.invoke(app, ["analyze", str(run_dir)])
    assert result.exit_code == 2
    assert "run.json" in result.output


def test_damaged_requests_exit_2_naming_the_file(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    (run_dir / "requests.parquet").write_bytes(b"garbage")
    result = runner.invoke(app, ["analyze", str(run_dir)])
    assert result.exit_code == 2
    assert "requests.parquet" in result.output


def test_unknown_cause_in_budget_exits_2(tmp_path: Path) -> None:
    run_dir = minimal_run(tmp_path / "run")
    result = runner.invoke(app, ["analyze", str(run_dir), "--fail-on", "cause:gremlins>0"])
    assert result.exit_code == 2
    assert "unknown cause 'gremlins'" in result.output
