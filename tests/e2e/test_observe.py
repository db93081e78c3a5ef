"""`rolltrace observe` on the local cluster, the way a user runs it beside their own rollout.

The demo app is deployed with kubectl (no preStop, an app that exits at once on SIGTERM, proxies
that take a while to drop a Pod: a rollout that loses requests). `rolltrace observe` runs in the
cluster's client namespace (where an outside client is) with a kubeconfig whose server is a
logging relay to the API server, then the test runs `kubectl rollout restart`. The observation
must end by itself once the rollout is complete and the old Pods are gone, the run must be
analyzed with its failures attributed as truth.jsonl says, and every request rolltrace sent to
the API server must be a read (GET: get, list, watch).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from analyzer.rundir import read_run_meta
from localcluster.config import ClusterConfig
from localcluster.dataplane.addressing import AddressPlan
from localcluster.state import ClusterState, read_state, state_dir
from rolltrace.scoring import score_run
from tests.conftest import require

BIN = Path(sys.executable).parent
REPO = Path(__file__).parents[2]
CLUSTER = "rtobs"
NAMESPACE = "shop"
RELAY_PORT = 18080
# the analyzer's cause must be truth's for this share of the failures truth decides (the
# scenario library's bar, tests/e2e/test_scenarios.py)
MIN_AGREEMENT = 0.95
# each kube-proxy drops a deleted Pod this late, so new connections meet a closed port
PROXY_DELAY_S = 1.5
LOAD = {"rate": 40, "users": 8, "keepalive_weight": 0, "new_connection_weight": 1,
        "after_s": 3, "request_timeout_s": 2}  # fmt: skip


def _run(*argv: str | Path, timeout: float = 120, **kwargs: Any) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterState]:
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "nodes": 2, "proxy": {"delay": {"kind": "fixed", "value_s": PROXY_DELAY_S}},
    }))  # fmt: skip
    kubeconfig = tmp_path / "admin.kubeconfig"
    try:
        _run(BIN / "rolltrace", "cluster", "up", "--name", CLUSTER, "--config", config,
             "--kubeconfig", kubeconfig, timeout=180)  # fmt: skip
        state = read_state(state_dir(CLUSTER))
        assert state is not None
        yield state
    finally:
        _run(BIN / "rolltrace", "cluster", "down", "--name", CLUSTER)


def _kubectl(state: ClusterState, *argv: str, **kwargs: Any) -> str:
    return _run(BIN / "kubectl", "--kubeconfig", state.kubeconfig, *argv, **kwargs)


def _deploy(state: ClusterState, tmp_path: Path) -> None:
    """The demo app as a user would apply it, configured to lose requests in a rollout."""
    deployment, service = yaml.safe_load_all(
        (REPO / "scenarios/manifests/demoapp.yaml").read_text()
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["lifecycle"]
    for env in container["env"]:
        if env["name"] == "DEMOAPP_SHUTDOWN":
            env["value"] = "immediate"
    manifest = tmp_path / "demoapp.yaml"
    manifest.write_text(yaml.safe_dump_all([deployment, service]))
    _kubectl(state, "create", "namespace", NAMESPACE)
    _kubectl(state, "apply", "-n", NAMESPACE, "-f", str(manifest))
    _kubectl(state, "rollout", "status", "-n", NAMESPACE, "deployment/demoapp", "--timeout=120s")


def _relay_kubeconfig(state: ClusterState, path: Path) -> Path:
    """A kubeconfig for the relay, which the client namespace reaches on its own loopback."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "observed",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{RELAY_PORT}"}}],
        "users": [{"name": "u", "user": {"token": state.token}}],
        "contexts": [{"name": "observed", "context": {"cluster": "c", "user": "u",
                                                      "namespace": NAMESPACE}}],
    }))  # fmt: skip
    return path


def _wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while text not in log.read_text():
        assert process.poll() is None, f"observe exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} after {within_s} s:\n{log.read_text()}"
        time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(600)
def test_observe_a_kubectl_rollout_restart(cluster: ClusterState, tmp_path: Path) -> None:
    require("ip", "nft", "nsenter", "tcpdump", root=True)
    _deploy(cluster, tmp_path)
    netns = AddressPlan(ClusterConfig(name=CLUSTER)).client_netns
    in_client = ["ip", "netns", "exec", netns]
    audit = tmp_path / "audit.log"
    audit.touch()
    relay = subprocess.Popen(
        [*in_client, sys.executable, "-m", "tests.e2e.apiaudit", "--listen",
         f"127.0.0.1:{RELAY_PORT}", "--socket", cluster.api_socket, "--log", str(audit)],
        cwd=REPO,
    )  # fmt: skip
    load = tmp_path / "load.yaml"
    load.write_text(yaml.safe_dump({"name": "observe-e2e", "load": LOAD}))
    run_dir, log = tmp_path / "run", tmp_path / "observe.log"
    kubeconfig = _relay_kubeconfig(cluster, tmp_path / "observe.kubeconfig")
    try:
        with log.open("wb") as output:
            observe = subprocess.Popen(
                [BIN / "rolltrace", "cluster", "exec", "--name", CLUSTER, "--",
                 BIN / "rolltrace", "observe", "--kubeconfig", kubeconfig, "--service", "demoapp",
                 "--until-rollout", "demoapp", "--duration", "150", "--scenario", load,
                 "-o", run_dir],
                stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
            )  # fmt: skip
        try:
            _wait_for_line(log, "load start", observe, within_s=90)
            time.sleep(3)  # some steady load before the rollout
            restarted_ns = time.time_ns()
            _kubectl(cluster, "rollout", "restart", "-n", NAMESPACE, "deployment/demoapp")
            exit_code = observe.wait(timeout=240)
        finally:
            _stop(observe)
    finally:
        _stop(relay)
    output_text = log.read_text()
    assert exit_code == 0, output_text

    meta = read_run_meta(run_dir)
    assert meta.status == "complete", meta.status_reasons
    phases = meta.phases
    assert restarted_ns <= phases["rollout_trigger"] < phases["rollout_complete"]
    assert phases["rollout_complete"] <= phases["old_pods_gone"] < phases["load_stop"]
    observed = meta.extra_fields()["observe"]
    assert (observed["ended_by"], observed["rollout_phase"]) == ("rollout", "settled")
    assert meta.backend == "kube" and (run_dir / "packets" / "client.pcap").exists()
    assert (run_dir / "analysis" / "report.html").exists()

    shutil.copy(Path(cluster.api_socket).parent / "truth.jsonl", run_dir / "truth.jsonl")
    score = score_run(run_dir)
    assert score.failed > 0, "the rollout lost no request: nothing was attributed"
    assert score.agreement >= MIN_AGREEMENT, (score.confusion, score.disagreements[:5])
    assert score.undecided <= (1 - MIN_AGREEMENT) * score.failed, score.undecided_examples[:5]

    requests = audit.read_text().splitlines()
    assert any("watch=" in line for line in requests), requests[:5]
    writes = [line for line in requests if not line.startswith("GET ")]
    assert writes == [], f"rolltrace observe wrote to the cluster: {writes}"
