"""``rolltrace report`` and ``rolltrace compare`` on built runs, through the real CLI app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from analyzer.tracebuilder import build_run
from rolltrace.cli import app

runner = CliRunner()


def test_report_writes_html_markdown_and_figures(tmp_path: Path) -> None:
    build_run(tmp_path / "run", "endpoint-lag", seed=1, rate=40, duration_s=15)
    result = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    analysis = tmp_path / "run" / "analysis"
    assert f"report: {analysis / 'report.html'}" in result.output
    assert (analysis / "report.md").read_text().startswith("# Rollout disruption report")
    assert len(list((analysis / "figures").glob("*.png"))) == 5


def test_report_on_an_unusable_directory_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "run.json" in result.output


def test_compare_writes_the_comparison(tmp_path: Path) -> None:
    runs = []
    for recipe in ("endpoint-lag", "clean"):
        build_run(tmp_path / recipe, recipe, seed=1, rate=40, duration_s=15)
        runs.append(str(tmp_path / recipe))
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", *runs, "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "compare.html").read_text()
    assert "cannot tell" in page  # one run per side: no spread to compare against
    assert (out / "figures" / "compare-timeline.png").exists()


def test_compare_needs_two_runs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2


def test_compare_into_an_existing_file_is_a_clear_error(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    result = runner.invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(taken)]
    )
    assert result.exit_code == 2
    assert "exists and is not a directory" in result.output
    assert "Traceback" not in result.output
