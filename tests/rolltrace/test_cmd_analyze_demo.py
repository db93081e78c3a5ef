"""``rolltrace demo --synthetic``: two built runs, analyzed and compared, said to be synthetic.
(The local-cluster demo runs the same scenarios as tests/e2e, which check them in depth.)"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rolltrace.cli import app


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
