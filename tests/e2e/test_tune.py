"""`rolltrace tune` end to end on the local cluster: a real preStop tune of
`scenarios/prestop-too-short.yaml`, judged by the runs' own measurements.

The recommended preStop must cover the endpoint propagation the trials measured (the proxies
still sent new connections to a deleted Pod that long) and exceed it by less than the margin
below; the verification runs must have no failure; the three outputs must agree; and the same
command, run again, must resume from the cache without running anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rolltrace.cli import app
from tests.conftest import require

# The bound for a good recommendation: at most 3 s above the measured propagation (one
# grid step of 1 s above the next whole second, plus a run-to-run spread of the proxies' delay).
MARGIN_S = 3.0


def measured_propagation_s(tune_dir: Path) -> float:
    """The longest endpoint propagation any trial or verification run measured."""
    longest = [
        json.loads(summary.read_text())["timings"]["propagation"]["max_ms"]
        for summary in tune_dir.glob("trials/*/*/*/analysis/summary.json")
    ]
    found = [float(ms) for ms in longest if ms is not None]
    assert found, f"no run under {tune_dir}/trials measured a propagation"
    return max(found) / 1000


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(600)
def test_a_prestop_tune_recommends_the_measured_propagation_and_resumes(tmp_path: Path) -> None:
    require("ip", "nft", "nsenter", root=True)
    # Proxies 2.5 s late, not the scenario's 3 s: with 3 s the answer is exactly on a grid
    # value, which holds or fails by a few milliseconds from run to run (see docs/tuning.md);
    # here the smallest safe whole second has half a second to spare, as a real answer does.
    argv = ["tune", "scenarios/prestop-too-short.yaml", "--vary", "pod.pre_stop.sleep_s=0..8",
            "--repetitions", "1", "-o", str(tmp_path), "--set", "cluster.proxy_delay.value_s=2.5",
            "--set", "load.before_s=2", "--set", "load.after_s=2"]  # fmt: skip
    first = CliRunner().invoke(app, argv)
    assert first.exit_code == 0, first.output
    document = json.loads((tmp_path / "tune.json").read_text())
    recommended = document["recommended"]
    propagation_s = measured_propagation_s(tmp_path)
    assert propagation_s <= recommended <= propagation_s + MARGIN_S, (propagation_s, document)
    verified = document["verified"]
    assert verified["runs"] == 1 and verified["requests"] > 0 and verified["failed"] == 0
    # the three outputs agree on the recommendation
    patch = yaml.safe_load((tmp_path / "patch.yaml").read_text())
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == recommended
    html = (tmp_path / "tune.html").read_text()
    lead = html.split('<div class="lead">', 1)[1].split("</div>", 1)[0]
    assert f"recommended: preStop {recommended} s" in lead
    assert f"{verified['requests']:,} requests" in lead
    assert f"recommended: preStop {recommended} s" in first.stdout
    runs = sorted(tmp_path.glob("trials/*/*/*/run.json"))
    assert len(runs) >= sum(t["runs"] for t in document["trials"]) + verified["runs"]

    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 0, again.output
    assert sorted(tmp_path.glob("trials/*/*/*/run.json")) == runs, "the resumed tune ran again"
    evaluated = ("trial ", "verify:")  # each was run the first time, each is read now
    evaluations = [line for line in first.stderr.splitlines() if line.startswith(evaluated)]
    assert again.stderr.count("cached:") == len(evaluations)
    assert json.loads((tmp_path / "tune.json").read_text())["recommended"] == recommended
