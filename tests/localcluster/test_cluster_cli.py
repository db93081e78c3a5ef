"""`rolltrace cluster up/status/down` with virtual nodes: the background process, its state
directory, the refusal to start twice, and that `down` leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from localcluster.state import process_alive, read_state
from rolltrace.cli import app

KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "state"
    monkeypatch.setenv("ROLLTRACE_STATE_DIR", str(root))
    return root


def test_up_status_down(state_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    kubeconfig = tmp_path / "kc.yaml"
    name = "clitest"
    up = runner.invoke(
        app,
        [
            "cluster",
            "up",
            "--virtual",
            "--nodes",
            "2",
            "--name",
            name,
            "--kubeconfig",
            str(kubeconfig),
        ],
    )
    state = read_state(state_root / name)
    try:
        assert up.exit_code == 0, up.output
        assert state is not None and process_alive(state.pid, state_root / name)
        assert f"export KUBECONFIG={kubeconfig}" in up.output
        assert yaml.safe_load(kubeconfig.read_text())["current-context"] == f"rolltrace-{name}"
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"

        again = runner.invoke(app, ["cluster", "up", "--virtual", "--name", name])
        assert again.exit_code == 1 and "already up" in again.output

        status = runner.invoke(app, ["cluster", "status", "--name", name])
        assert status.exit_code == 0, status.output
        assert state.url in status.output and "node-1 Ready, node-2 Ready" in status.output

        nodes = subprocess.run(
            [
                str(KUBECTL),
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                str(tmp_path / "cache"),
                "get",
                "nodes",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert nodes.returncode == 0 and "node-2" in nodes.stdout
    finally:
        down = runner.invoke(app, ["cluster", "down", "--name", name])
    assert down.exit_code == 0 and "stopped" in down.output
    assert not process_alive(state.pid, state_root / name)
    assert not kubeconfig.exists()
    assert not (state_root / name).exists()
    second = runner.invoke(app, ["cluster", "down", "--name", name])
    assert second.exit_code == 0 and "not running" in second.output
    missing = runner.invoke(app, ["cluster", "status", "--name", name])
    assert missing.exit_code == 1 and "not running" in missing.output


def test_up_reports_a_failed_start(state_root: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "config"
    foreign.write_text("apiVersion: v1\nkind: Config\ncurrent-context: prod\n")
    result = CliRunner().invoke(
        app,
        [
            "cluster",
            "up",
            "--virtual",
            "--name",
            "failing",
            "--kubeconfig",
            str(foreign),
            "--timeout",
            "20",
        ],
    )
    assert result.exit_code == 1
    assert "not a rolltrace kubeconfig" in result.output
    assert "current-context: prod" in foreign.read_text()  # the user's file is untouched
