"""``rolltrace demo --synthetic``: two built runs, analyzed and compared, said to be synthetic.
(The local-cluster demo runs the same scenarios as tests/e2e, which check them in depth.)"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rolltrace.cli import app
from rolltrace.commands import demo as demo_command
from rolltrace.scenario import Scenario


def test_demo_builds_analyzes_and_compares_two_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--synthetic", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "synthetic demo" in result.output
    assert "recommended preStop: sleep" in result.output
    short = json.loads((tmp_path / "demo-prestop-0s" / "analysis" / "summary.json").read_text())
    enough = json.loads((tmp_path / "demo-prestop-5s" / "analysis" / "summary.json").read_text())
    # the remedy works: a preStop longer than propagation removes the endpoint-lag failures
    assert short["failed_by_cause"]["endpoint-lag"] > 0
    assert enough["requests_failed"] == 0
    assert short["timings"]["propagation"]["n"] > 0
    assert str(tmp_path / "demo-prestop-0s") in result.output


def test_the_local_demo_runs_the_library_scenarios_and_compares_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo`'s path without the cluster: the two library scenarios are found and loaded
    (one repetition each) and their runs compared. The runs themselves are built ones here; the
    e2e suite runs these scenarios for real."""
    built = demo_command._synthetic(tmp_path / "built", 1, Console(quiet=True))
    ran: list[tuple[str, int]] = []

    def fake_run(scenario: Scenario, output: Path, console: Console) -> list[SimpleNamespace]:
        _, path, summary = built[len(ran)]
        ran.append((scenario.name, scenario.repetitions))
        return [SimpleNamespace(summary=summary, paths=SimpleNamespace(root=path))]

    monkeypatch.setattr("localcluster.dataplane.cluster.missing_prerequisites", lambda: [])
    monkeypatch.setattr(demo_command, "run_scenario", fake_run)
    result = CliRunner().invoke(app, ["demo", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert ran == [(name, 1) for name in demo_command.DEMO_SCENARIOS]
    assert "synthetic demo" not in result.output
    assert "recommended preStop: sleep" in result.output
