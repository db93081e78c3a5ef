"""Faults during a real run on the local cluster: a component dies, the runner is killed, the
disk fills. Each run is short (two nodes, a few seconds of load); each must end with the status
and the named reason docs/troubleshooting.md promises, keep an analysis of what it recorded,
and leave no namespace, nft table or process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyzer.readers.pcap import read_pcap
from analyzer.schema import RunStatus
from rolltrace.runner.backends import RUN_CLUSTER_NAME, backend_for
from rolltrace.runner.experiment import Experiment
from rolltrace.scenario import load_scenario
from tests.conftest import require
from tests.processes import of_run, read_until

SCENARIO = "scenarios/prestop-enough.yaml"
#: A short run: two nodes, two replicas, a fault a second after the first requests.
SHORT = [
    "repetitions=1", "cluster.nodes=2", "workload.replicas=2", "pod.pre_stop.sleep_s=1",
    "cluster.proxy_delay.value_s=0.5", "load.rate=30", "load.before_s=4", "load.after_s=4",
]  # fmt: skip
FAULT_AFTER_S = 1
#: After a SIGKILL of the runner, its children get SIGTERM at once and the cluster removes its
#: namespaces (agents: 5 s grace, then the namespaces); the issue's bound.
GONE_WITHIN_S = 10.0


@pytest.fixture(autouse=True)
def _nothing_left_after(tmp_path: Path) -> Iterator[None]:
    require("ip", "nft", "nsenter", "tcpdump", root=True)
    yield
    deadline = time.monotonic() + GONE_WITHIN_S
    while leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers(tmp_path)


def rolltrace_run(
    output: Path, *overrides: str, fault: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ROLLTRACE_FAULT"}
    if fault:
        env["ROLLTRACE_FAULT"] = fault
    argv = [sys.executable, "-m", "rolltrace", "run", SCENARIO, "-o", str(output), "--no-check"]
    for override in [*SHORT, *overrides]:
        argv += ["--set", override]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)


def only_run(output: Path) -> Path:
    (run_dir,) = [p for p in output.iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("component", "status", "overrides"),
    [
        ("apiserver", "partial", ()),
        ("node-agent", "partial", ()),
        ("lb", "partial", ()),
        ("capture", "degraded", ()),
        ("locust-worker", "degraded", ("load.workers=2",)),
    ],
)
def test_a_component_that_dies_is_named_and_the_run_is_kept(
    tmp_path: Path, component: str, status: str, overrides: tuple[str, ...]
) -> None:
    done = rolltrace_run(tmp_path, *overrides, fault=f"{component}:{FAULT_AFTER_S}")
    run_dir = only_run(tmp_path)
    meta = json.loads((run_dir / "run.json").read_text())
    said = done.stdout + done.stderr
    assert meta["status"] == status, said
    fault = next(f for f in meta["faults"] if f["component"] == component)
    assert fault["at_ns"] >= meta["phases"]["load_start"] + FAULT_AFTER_S * 1e9 * 0.9
    assert any(
        r.startswith(f"{component} {fault['name']} failed at") for r in meta["status_reasons"]
    )
    assert (run_dir / "analysis" / "summary.json").exists(), said  # what was recorded is analyzed
    assert f"Run {status}:" in (run_dir / "analysis" / "report.md").read_text()
    assert f"{component} {fault['name']} failed" in said  # the terminal says it too


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(400)
def test_a_killed_runner_leaves_nothing_and_the_next_run_succeeds(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "rolltrace", "run", SCENARIO, "-o", str(tmp_path / "first"),
            *[a for o in [*SHORT, "load.before_s=60"] for a in ("--set", o)]]  # fmt: skip
    runner = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    read_until(runner, "load start", 180)
    time.sleep(2)
    runner.kill()
    killed = time.monotonic()
    runner.wait()
    while time.monotonic() - killed < GONE_WITHIN_S and leftovers(tmp_path):
        time.sleep(0.2)
    assert not leftovers(tmp_path), f"still there {GONE_WITHIN_S:g} s after the kill"
    done = rolltrace_run(tmp_path / "second")
    meta = json.loads((only_run(tmp_path / "second") / "run.json").read_text())
    assert meta["status"] == "complete", done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(300)
def test_a_full_disk_stops_the_captures_and_keeps_their_files_readable(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    packets = run_dir / "packets"
    packets.mkdir(parents=True)
    # room for a second or two of packets: the captures fill it during the warm-up
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(packets)], check=True)
    try:
        scenario = load_scenario(SCENARIO, SHORT)
        outcome = Experiment(scenario, run_dir, backend_for(scenario)).run()
        client = read_pcap(packets / "client.pcap")  # no damage: it would raise
    finally:
        subprocess.run(["umount", str(packets)], check=True)
    assert outcome.meta.status is RunStatus.DEGRADED, outcome.meta.status_reasons
    assert any("the disk filled up" in r for r in outcome.meta.status_reasons)
    assert any(f.component == "capture" and f.detail == "its disk is full"
               for f in outcome.meta.faults)  # fmt: skip
    recorded = next(c for c in outcome.meta.captures if c.file == "packets/client.pcap")
    assert len(client) == recorded.packets > 0
    assert outcome.summary is not None


def leftovers(run_root: Path) -> list[str]:
    """Namespaces, host nft tables and processes of the run cluster or of runs under
    ``run_root``."""
    found = [
        f"netns {n}" for n in _lines(["ip", "netns", "list"]) if n.startswith(RUN_CLUSTER_NAME)
    ]
    found += [f"nft {t}" for t in _lines(["nft", "list", "tables"]) if RUN_CLUSTER_NAME in t]
    pids = _lines(["pgrep", "-f", "localcluster|locust|demoapp|tcpdump"])
    found += [f"pid {p}" for p in pids if of_run(int(p), run_root)]
    return found


def _lines(argv: list[str]) -> list[str]:
    output = subprocess.run(argv, capture_output=True, text=True).stdout
    return [line.split()[0] if argv[0] == "ip" else line for line in output.splitlines() if line]
