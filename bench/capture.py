"""Benchmark: does the packet capture keep up at a high request rate? (root, ip, nft, tcpdump, hey)

Starts a local cluster (``rolltrace cluster up --name rtbcap --nodes 3``, real nodes), deploys
6 demo-app replicas behind a LoadBalancer Service, and runs ``hey -n N -c C`` from the client
namespace against the LB address while rolltrace's own capture (``rolltrace.runner.capture``) records
in the client namespace and in node-1's, with the runner's filters. Prints hey's rate and, per
capture, the packets written and the kernel's drops. The cluster is torn down at the end; all
traffic stays inside its namespaces.

The run cluster's address range is shared, so run it alone:
``flock /tmp/rolltrace-cluster.lock .venv/bin/python bench/capture.py [--requests N]
[--concurrency C] [--new-connections]``
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rolltrace.runner.capture import CaptureProcess, CaptureResult
from rolltrace.runner.manifests import deployment, service
from rolltrace.scenario import load_scenario

CLUSTER = "rtbcap"
REPLICAS = 6
SCENARIO = Path(__file__).parents[1] / "scenarios" / "prestop-too-short.yaml"
ROLLTRACE = str(Path(sys.executable).with_name("rolltrace"))


def _in(namespace: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{CLUSTER}-{namespace}"]


def _kubectl(*args: str, stdin: str | None = None) -> str:
    kubeconfig = f"/run/rolltrace/{CLUSTER}/kubeconfig"
    return subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    ).stdout


def _deploy() -> tuple[str, int, int]:
    """The demo app behind its LB: (LB address, Service port, container port)."""
    scenario = load_scenario(SCENARIO, [f"workload.replicas={REPLICAS}"])
    manifests = yaml.safe_dump_all([service(scenario), deployment(scenario)])
    _kubectl("apply", "-f", "-", stdin=manifests)
    _kubectl("rollout", "status", "deploy/demoapp", "--timeout=120s")
    for _ in range(60):
        ip = _kubectl(
            "get", "svc", "demoapp", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"
        )
        if ip:
            return ip, scenario.service.port, scenario.workload.container_port
        time.sleep(1)
    raise SystemExit("the LoadBalancer Service got no address within 60 s")


def _hey(url: str, requests: int, concurrency: int, new_connections: bool) -> str:
    argv = [*_in("client"), "hey", "-n", str(requests), "-c", str(concurrency), "-t", "5"]
    argv += ["-disable-keepalive"] if new_connections else []
    return subprocess.run([*argv, url], capture_output=True, text=True, timeout=600).stdout


def responses(report: str) -> int:
    """Responses hey counted, every status code together (its "[200]\t40000 responses")."""
    return sum(int(n) for n in re.findall(r"^\s*\[\d+\]\s+(\d+) responses", report, re.M))


def _measure(args: argparse.Namespace, out: Path) -> tuple[str, list[CaptureResult]]:
    ip, port, target_port = _deploy()
    url = f"http://{ip}:{port}/"
    _hey(url, 500, 10, False)  # warm the Pods and the conntrack tables up
    captures = [
        CaptureProcess(out / "client.pcap", f"tcp and host {ip} and port {port}", _in("client")),
        CaptureProcess(out / "node-1.pcap", f"tcp port {target_port}", _in("node-1")),
    ]
    for capture in captures:
        capture.start()
    report = _hey(url, args.requests, args.concurrency, args.new_connections)
    for capture in captures:
        capture.request_stop()
    return report, [capture.stop() for capture in captures]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--new-connections", action="store_true", help="hey -disable-keepalive")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rolltrace-bench/capture"))
    args = parser.parse_args()
    missing = [tool for tool in ("hey", "tcpdump", "kubectl", "nsenter") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"bench/capture.py needs: {', '.join(missing)} (Debian packages)")
    args.out.mkdir(parents=True, exist_ok=True)
    subprocess.run([ROLLTRACE, "cluster", "up", "--name", CLUSTER, "--nodes", "3"], check=True)
    try:
        report, results = _measure(args, args.out)
    finally:
        subprocess.run([ROLLTRACE, "cluster", "down", "--name", CLUSTER], check=False)
    for line in report.splitlines():
        if re.search(r"Total:|Requests/sec|responses$|Error", line):
            print(line.strip())
    answered = responses(report)
    if answered != args.requests:
        print(
            f"FAIL: hey got {answered:,} responses, not the {args.requests:,} asked",
            file=sys.stderr,
        )
        raise SystemExit(2)
    for result in results:
        print(
            f"{result.file.name}: {result.packets} packets written, "
            f"{result.kernel_drops} dropped by the kernel"
            + (f" ({result.error})" if result.error else "")
        )


if __name__ == "__main__":
    main()
