"""`rolltrace run`: the dry run, and Ctrl-C keeping a partial run with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rolltrace.cli import app
from tests.conftest import require
from tests.processes import interruptible, of_run, read_until


def test_dry_run_prints_manifests_and_plan_and_touches_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "scenarios/prestop-too-short.yaml", "--dry-run", "-o", str(tmp_path),
         "--set", "load.rate=25"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"Service", "Deployment"}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 1}}
    assert "'rate': 25.0" in result.output  # the plan shows the override
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(300)
def test_ctrl_c_keeps_a_partial_run_and_leaves_nothing_behind(tmp_path: Path) -> None:
    require("ip", "nft", "nsenter", root=True)
    argv = [sys.executable, "-m", "rolltrace", "run", "scenarios/prestop-enough.yaml",
            "-o", str(tmp_path), "--set", "repetitions=1", "--set", "load.before_s=30"]  # fmt: skip
    # its own session, like a terminal's foreground job: Ctrl-C reaches the whole group
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=interruptible)  # fmt: skip
    read_until(process, "load start", 120)
    time.sleep(3)  # some requests recorded
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "partial", output
    assert any("interrupted" in reason for reason in meta["status_reasons"])
    assert "rollout_trigger" not in meta["phases"] and "load_start" in meta["phases"]
    assert (run_dir / "requests.parquet").stat().st_size > 0
    assert (run_dir / "analysis" / "summary.json").exists()  # a partial run is still analyzed
    assert not [n for n in _netns() if n.startswith("rtrun")], "namespaces left behind"
    leftovers = subprocess.run(["pgrep", "-f", "localcluster|locust|demoapp|tcpdump"],
                               capture_output=True, text=True).stdout.split()  # fmt: skip
    assert [pid for pid in leftovers if of_run(int(pid), tmp_path)] == []


def _netns() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def test_an_unparsable_override_is_a_located_error_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "scenarios/prestop-too-short.yaml", "--dry-run", "-o", str(tmp_path),
         "--set", "load.rate=[1,"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--set 'load.rate=[1,': not a YAML value at column" in result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not an uncaught exception
