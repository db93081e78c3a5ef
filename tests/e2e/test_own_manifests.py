"""`rolltrace run --manifest`: a user's own Deployment and Service, a third-party server, judged.

Python's http.server (scenarios/manifests/examples/http-server/) has a readiness probe but no
preStop hook and dies at SIGTERM: during a restart, the nodes keep sending new connections to
Pods that no longer listen until their rules catch up. Nearly every failure must be
endpoint-lag, and the strict judge, which knows this app only from the kubelet's socket table
and the data plane's NAT records, must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rolltrace.scoring import score_run
from tests.conftest import require

EXAMPLE = Path(__file__).parents[2] / "scenarios/manifests/examples/http-server"
MIN_SHARE = 0.95  # of the rollout's failures attributed to endpoint-lag, and judge agreement
# Endpoint-lag failures grow with the rate and with the time the nodes' rules lag, while a
# request caught in flight by the SIGTERM (a real inflight-cut, about one per old Pod) does not:
# at 200 req/s with proxies that take 2 s (the default is up to 1 s), the share is measured over
# a few hundred failures, so those few cuts cannot decide it.
RATE = 200
PROXY_DELAY_S = 2


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(600)
def test_http_server_without_prestop_fails_by_endpoint_lag(tmp_path: Path) -> None:
    require("ip", "nft", "nsenter", "python3", root=True)
    argv = [sys.executable, "-m", "rolltrace", "run", "-o", str(tmp_path),
            "--manifest", str(EXAMPLE / "deployment.yaml"),
            "--manifest", str(EXAMPLE / "service.yaml"),
            "--set", "load.before_s=3", "--set", "load.after_s=3",
            "--set", f"load.rate={RATE}", "--set", "cluster.proxy_delay.kind=fixed",
            "--set", f"cluster.proxy_delay.value_s={PROXY_DELAY_S}"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "complete", meta["status_reasons"]
    # run.json records what the manifests set, which attribution reads its timings from
    assert meta["scenario"]["pod"]["pre_stop"] is None
    assert meta["scenario"]["pod"]["readiness_probe"]["period_s"] == 1
    assert meta["service"]["target_port"] == 8000
    summary = json.loads((run_dir / "analysis/summary.json").read_text())
    failed = summary["requests_failed"]
    assert failed > 0, "no preStop and an app that dies at SIGTERM must lose requests"
    share = summary["failed_by_cause"].get("endpoint-lag", 0) / failed
    assert share >= MIN_SHARE, summary["failed_by_cause"]
    score = score_run(run_dir)
    assert score.agreement >= MIN_SHARE, (score.confusion, score.disagreements[:5])
    assert score.undecided <= (1 - MIN_SHARE) * score.failed, score.undecided_examples[:5]
