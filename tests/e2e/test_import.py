"""`rolltrace import` end to end, from outside rolltrace's runner (issue 10, "Done when").

On the local cluster, with nothing of rolltrace's own between the user and the cluster:
kubectl deploys a Deployment (the demo app behind a LoadBalancer Service, no preStop, an app
that exits at once on SIGTERM, proxies that take 2 s to follow the slices), kubectl records the
watch, one stream per kind, tcpdump captures in the client namespace, hey sends the load and
`kubectl rollout restart` rolls the Deployment out. Then `rolltrace import` and `analyze` must
attribute the failures with ≥ 90 % agreement with the cluster's truth (``rolltrace.scoring``):
with k6- and vegeta-format request logs made from hey's per-request rows, and with no request
log at all, where rolltrace's failed count must match hey's within 5 %.

hey's CSV (``-o csv``) lists the requests that got a response, with offsets from hey's start;
the failed ones only appear in its error count (``-n`` requests were sent, so errors = n − rows).
The conversion anchors the offsets on the capture's first SYN to the Service: the first request
began there. Run under ``flock /tmp/rolltrace-cluster.lock``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from analyzer.connections import tcp_connections
from analyzer.readers.pcap import read_pcap
from localcluster.config import ClusterConfig
from localcluster.dataplane import ip
from localcluster.dataplane.addressing import AddressPlan
from rolltrace.cli import app
from rolltrace.scoring import score_run
from tests.conftest import require
from tests.e2e.clusters import cluster_up

CLUSTER = "rtimport"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
MIN_AGREEMENT = 0.90  # issue 10: failures attributed with ≥ 90 % agreement with truth
FAILED_TOLERANCE = 0.05  # issue 10: requests from packets find hey's failures within 5 %
REQUESTS, WORKERS, RATE_PER_WORKER = 2000, 40, 2  # 25 s of load at 80 requests/s
# hey's workers are closed loops: one waiting on an unanswered SYN sends nothing meanwhile, so
# many workers and a short timeout keep the load flowing through the rollout
HEY_TIMEOUT_S = 2
ROLLOUT_AFTER_S = 5.0  # load before the rollout, so the report has a baseline
KINDS = ("pods", "endpointslices", "services", "deployments", "replicasets")
CLUSTER_CONFIG = {"nodes": 3, "proxy": {"delay": {"kind": "fixed", "value_s": 2.0}}}
MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: web
          image: rolltrace/demoapp:0.1.0
          ports: [{name: http, containerPort: 8080}]
          env:
            - {name: DEMOAPP_PORT, value: "8080"}
            - {name: DEMOAPP_SHUTDOWN, value: "immediate"}
          readinessProbe:
            httpGet: {path: /ready, port: http}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(600)]


@dataclass
class Recording:
    """What a user would have after their rollout: a capture, watch streams, hey's rows."""

    root: Path
    pcap: Path
    watches: list[Path]
    truth: Path
    url: str
    hey_rows: pd.DataFrame  # hey -o csv, with absolute start/end ns
    hey_failed: int  # requests hey sent that got no response or a 5xx


def _kubectl(kubeconfig: Path, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def _external_ip(kubeconfig: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        address = _kubectl(
            kubeconfig, "get", "svc", "web", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"
        )
        if address:
            return address
        time.sleep(0.5)
    raise AssertionError("the Service got no load-balancer address within 60 s")


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGINT) -> None:
    """Stop one process we started (tcpdump flushes its file on SIGINT)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _first_syn_ns(pcap: Path, address: str) -> int:
    connections = tcp_connections(read_pcap(pcap), {80})
    return int(connections.loc[connections["server_ip"] == address, "syn_ns"].min())


def _hey_rows(path: Path, started_ns: int) -> pd.DataFrame:
    """hey's CSV rows (seconds, offsets from its start) with absolute times in ns."""
    rows = pd.read_csv(path)
    start = started_ns + (rows["offset"] - rows["offset"].min()).mul(1e9).round().astype("int64")
    return rows.assign(
        start_ns=start, end_ns=start + rows["response-time"].mul(1e9).round().astype("int64")
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    require("ip", "nft", "nsenter", "conntrack", "tcpdump", "hey", root=True)
    root = tmp_path_factory.mktemp("import-e2e")
    config = root / "cluster.yaml"
    config.write_text(yaml.safe_dump(CLUSTER_CONFIG))
    with cluster_up(root, CLUSTER, "--config", str(config)) as kubeconfig:
        yield _record(root, kubeconfig)


def _record(root: Path, kubeconfig: Path) -> Recording:
    """Deploy, watch, capture, load, roll out: what a user does on their own cluster."""
    manifest = root / "web.yaml"
    manifest.write_text(MANIFEST)
    _kubectl(kubeconfig, "apply", "-f", str(manifest))
    _kubectl(kubeconfig, "rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    address = _external_ip(kubeconfig)
    netns = AddressPlan(ClusterConfig(name=CLUSTER)).client_netns
    watches = [root / f"{kind}.json" for kind in KINDS]
    started: list[subprocess.Popen[bytes]] = []
    pcap, hey_csv = root / "client.pcap", root / "hey.csv"
    try:
        for kind, path in zip(KINDS, watches, strict=True):
            cmd = [KUBECTL, "--kubeconfig", str(kubeconfig), "get", kind, "-w", "-o", "json",
                   "--output-watch-events", "-n", "default"]  # fmt: skip
            started.append(subprocess.Popen(cmd, stdout=path.open("wb")))
        tcpdump = ip.netns_exec(
            netns, "tcpdump", "-i", "any", "-s", "256", "-U", "-w", str(pcap), "tcp", "port", "80"
        )
        started.append(subprocess.Popen(tcpdump, stderr=subprocess.DEVNULL))
        time.sleep(2.0)  # tcpdump and the watches are listening before the first request
        hey = ip.netns_exec(
            netns,
            "hey",
            "-n",
            str(REQUESTS),
            "-c",
            str(WORKERS),
            "-q",
            str(RATE_PER_WORKER),
            "-disable-keepalive",
            "-t",
            str(HEY_TIMEOUT_S),
            "-o",
            "csv",
            f"http://{address}/",
        )
        load = subprocess.Popen(hey, stdout=hey_csv.open("wb"))
        started.append(load)
        time.sleep(ROLLOUT_AFTER_S)
        _kubectl(kubeconfig, "rollout", "restart", "deployment/web")
        _kubectl(kubeconfig, "rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
        assert load.wait(timeout=120) == 0, "hey failed"
        time.sleep(2.0)  # the last packets and watch events
    finally:
        for process in reversed(started):
            _stop(process, signal.SIGINT if process.args[0] == "nsenter" else signal.SIGTERM)
    truth = root / "truth.jsonl"
    shutil.copyfile(root / "state" / CLUSTER / "truth.jsonl", truth)
    rows = _hey_rows(hey_csv, _first_syn_ns(pcap, address))
    answered_ok = int((rows["status-code"] < 500).sum())
    return Recording(root, pcap, watches, truth, f"http://{address}/", rows, REQUESTS - answered_ok)


def _k6_lines(rows: pd.DataFrame, url: str) -> list[str]:
    """k6 --out json Points of each request (every sample stamped with its end)."""
    lines = []
    for row in rows.to_dict("records"):
        end = pd.Timestamp(row["end_ns"], tz="UTC").isoformat().replace("+00:00", "Z")
        tags = {"method": "GET", "url": url, "name": url, "status": str(row["status-code"]),
                "proto": "HTTP/1.1", "scenario": "default", "group": ""}  # fmt: skip
        connecting = row["DNS+dialup"] * 1000
        values = {
            "http_reqs": 1,
            "http_req_duration": row["response-time"] * 1000 - connecting,
            "http_req_blocked": connecting,
            "http_req_connecting": connecting,
            "http_req_tls_handshaking": 0,
            "http_req_sending": row["Request-write"] * 1000,
            "http_req_waiting": row["Response-delay"] * 1000,
            "http_req_receiving": row["Response-read"] * 1000,
        }
        for metric, value in values.items():
            point = {
                "type": "Point",
                "metric": metric,
                "data": {"time": end, "value": value, "tags": tags},
            }
            lines.append(json.dumps(point))
    return lines


def _vegeta_lines(rows: pd.DataFrame, url: str) -> list[str]:
    """vegeta encode --to json results (start timestamp, latency in ns)."""
    return [
        json.dumps(
            {
                "attack": "",
                "seq": i,
                "code": int(row["status-code"]),
                "timestamp": pd.Timestamp(row["start_ns"], tz="UTC").isoformat(),
                "latency": int(row["end_ns"] - row["start_ns"]),
                "bytes_out": 0,
                "bytes_in": 0,
                "error": "",
                "body": None,
                "method": "GET",
                "url": url,
                "headers": {},
            }
        )
        for i, row in enumerate(rows.to_dict("records"))
    ]


def _import_and_analyze(rec: Recording, name: str, extra: list[str]) -> tuple[dict, Path]:
    run = rec.root / name
    args = ["import", "-o", str(run), "--pcap", str(rec.pcap), "--service", "default/web"]
    for watch in rec.watches:
        args += ["--watch", str(watch)]
    result = CliRunner().invoke(app, args + extra)
    assert result.exit_code == 0, result.output
    shutil.copyfile(rec.truth, run / "truth.jsonl")
    validate = CliRunner().invoke(app, ["validate", str(run)])
    assert validate.exit_code == 0, validate.output
    analyzed = CliRunner().invoke(app, ["analyze", str(run), "--json"])
    assert analyzed.exit_code == 0, analyzed.output
    return json.loads(analyzed.output), run


def _assert_attributed(summary: dict, run: Path) -> None:
    assert summary["requests_failed"] > 0, "the rollout caused no failure to attribute"
    score = score_run(run)
    assert score.agreement >= MIN_AGREEMENT, (score.agreement, score.confusion)
    report = CliRunner().invoke(app, ["report", str(run)])
    assert report.exit_code == 0, report.output
    # kubectl's watch has no receive times: run.json and the report say so, and what to use
    assert json.loads((run / "run.json").read_text())["event_times"]["coarse"] is True
    assert "`rolltrace watch`" in (run / "analysis" / "report.md").read_text()


@pytest.mark.parametrize("tool", ["k6", "vegeta"])
def test_import_with_a_load_tools_request_log(recorded: Recording, tool: str) -> None:
    lines = (_k6_lines if tool == "k6" else _vegeta_lines)(recorded.hey_rows, recorded.url)
    log = recorded.root / f"{tool}.json"
    log.write_text("\n".join(lines) + "\n")
    summary, run = _import_and_analyze(recorded, f"run-{tool}", ["--requests", str(log)])
    joined = json.loads((run / "run.json").read_text())["import"]["joined_by"]
    assert joined.get("time-destination", 0) >= 0.95 * len(recorded.hey_rows), joined
    _assert_attributed(summary, run)


def test_import_without_a_request_log(recorded: Recording) -> None:
    summary, run = _import_and_analyze(recorded, "run-packets", [])
    failed = summary["requests_failed"]
    assert abs(failed - recorded.hey_failed) <= FAILED_TOLERANCE * recorded.hey_failed, (
        failed,
        recorded.hey_failed,
    )
    _assert_attributed(summary, run)
