"""Faults without a cluster: the fault hook's syntax, the watchdog, the status a loss gives,
the load generator's own shortfall, children that die with their parent, the run cluster's lock,
stale state, a watch broken until the end, a pcap cut after its last whole record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kubernetes import config as k8s_config

from analyzer.readers.pcap import read_pcap
from analyzer.schema import RunStatus
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from localcluster.lifeline import identity, identity_alive
from localcluster.state import ClusterState, write_state
from rolltrace.runner.capture import CaptureResult, trim_to_whole_records
from rolltrace.runner.faults import (
    COMPONENT_NAMES,
    Component,
    ComponentFailed,
    ComponentHandle,
    Fault,
    FaultPlan,
    Watchdog,
)
from rolltrace.runner.localrun import ClusterBusy, RunClusterLock, recover_stale
from rolltrace.runner.losses import (
    DELIVERED_MIN_FRACTION,
    LoadDelivery,
    disk_need_bytes,
    disk_warning,
    generator_lag_s,
    settle_status,
)
from rolltrace.runner.watch import ClusterWatcher, _list_function

S = 1_000_000_000


def test_the_fault_hook_names_a_component_and_a_time() -> None:
    plan = FaultPlan.from_env({"ROLLTRACE_FAULT": "node-agent:2.5"})
    assert plan is not None and plan.component is Component.NODE_AGENT and plan.after_s == 2.5
    assert FaultPlan.from_env({}) is None
    with pytest.raises(ValueError) as bad:
        FaultPlan.from_env({"ROLLTRACE_FAULT": "kubelet:2"})
    assert all(name in str(bad.value) for name in COMPONENT_NAMES)


def test_the_hook_kills_the_first_handle_of_its_component_after_its_delay() -> None:
    killed: list[str] = []
    handles = [_handle(Component.CAPTURE, "packets/client.pcap", killed)]
    notes: list[str] = []
    FaultPlan(Component.CAPTURE, 0.05, "capture:0.05").arm(lambda: handles, notes).join(2)
    assert killed == ["packets/client.pcap"]
    assert notes == ["ROLLTRACE_FAULT=capture:0.05: killed packets/client.pcap"]
    FaultPlan(Component.LB, 0.0, "lb:0").arm(lambda: handles, notes).join(2)
    assert notes[-1] == "ROLLTRACE_FAULT=lb:0: this run has no lb"


def test_the_watchdog_keeps_the_first_death_of_each_component_with_its_time() -> None:
    alive = {"node-1": True, "worker": True}
    stopped: list[str] = []
    watchdog = Watchdog()
    watchdog.watch([
        ComponentHandle(Component.NODE_AGENT, "node-1", lambda: alive["node-1"], lambda: "",
                        cause=lambda: "process 7 exited"),
        ComponentHandle(Component.LOCUST_WORKER, "worker", lambda: alive["worker"], lambda: "",
                        on_death=lambda: stopped.append("worker")),
    ])  # fmt: skip
    watchdog.raise_if_fatal()  # all alive: nothing to say
    before = time.time_ns()
    alive["worker"] = False
    assert [f.name for f in watchdog.check()] == ["worker"]
    watchdog.raise_if_fatal()  # a worker is not fatal
    alive["node-1"] = False
    with pytest.raises(ComponentFailed) as failed:
        watchdog.raise_if_fatal()
    watchdog.check()
    watchdog.stop()
    assert failed.value.fault.detail == "process 7 exited" and failed.value.fault.fatal
    assert [f.name for f in watchdog.faults] == ["worker", "node-1"]  # each once
    assert stopped == ["worker"] and all(f.at_ns >= before for f in watchdog.faults)
    line = failed.value.fault.describe(before - 2 * S)
    assert line.startswith("node-agent node-1 failed at ") and "after the load started" in line


def test_a_run_that_lost_something_is_degraded_and_a_stopped_one_stays_partial() -> None:
    worker = Fault(Component.LOCUST_WORKER, "locust-worker-0", 1, "exited")
    lb = Fault(Component.LB, "lb", 1, "exited")
    full = CaptureResult(Path("c.pcap"), 10, 0, "the disk filled up", disk_full=True)
    clean = CaptureResult(Path("c.pcap"), 10, 0)
    short = LoadDelivery(100, 50, 500, 10, generator_lag_s=10)
    complete = RunStatus.COMPLETE
    assert settle_status(complete, [], [clean], [], None) is complete
    assert settle_status(complete, [worker], [clean], [], None) is RunStatus.DEGRADED
    assert settle_status(complete, [], [full], [], None) is RunStatus.DEGRADED
    assert (
        settle_status(complete, [], [], ["requests.worker-1.parquet"], None) is RunStatus.DEGRADED
    )
    assert settle_status(complete, [], [], [], short) is RunStatus.DEGRADED
    assert settle_status(RunStatus.PARTIAL, [lb, worker], [full], [], short) is RunStatus.PARTIAL


def test_only_the_load_generators_own_lag_makes_the_load_short() -> None:
    """A generator that manages half the rate falls ever further behind its schedule; keep-alive
    users the server holds up send less too, but each request that only waited for its slot
    starts on time: the first is short, the second is the disruption being measured."""
    behind = _requests(kind="new-connection", count=100, interval_s=0.2, lateness=lambda i: i * 0.1)
    held = _requests(kind="keepalive", count=100, interval_s=0.2, lateness=lambda i: 0.0,
                     response_s=lambda i: 3.0 if 40 <= i < 60 else 0.01)  # fmt: skip
    for frame, short in ((behind, True), (held, False)):
        seconds = (frame["start_ns"].max() - frame["start_ns"].min()) / S
        lag = generator_lag_s(frame, int(frame["start_ns"].max()), seconds)
        # half the rate delivered either way: only the lag tells whose shortfall it is
        delivered = LoadDelivery(5.0, 2.5, len(frame), seconds, lag)
        assert delivered.delivered_rate < DELIVERED_MIN_FRACTION * delivered.asked_rate
        assert delivered.short is short, (lag, seconds)
    assert "load.workers" in LoadDelivery(5.0, 2.0, 10, 5.0, 3.0).reason(workers=0)


def test_a_child_dies_with_its_parent_even_a_sigkilled_one(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "from localcluster.lifeline import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert identity(child)
    parent.kill()
    parent.wait()
    _wait_for(lambda: not identity(child), 5)


def test_an_identity_outlives_no_process_and_names_no_other() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    who = identity(sleeper.pid)
    assert identity_alive(who)
    assert not identity_alive(f"{sleeper.pid}:1")  # same pid, another start: another process
    sleeper.kill()
    sleeper.wait()
    assert not identity_alive(who) and not identity_alive("")


def test_a_second_run_waits_visibly_and_goes_on_once_the_first_is_gone(tmp_path: Path) -> None:
    directory = tmp_path / "rtrun"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    said: list[str] = []
    with pytest.raises(ClusterBusy) as busy:
        RunClusterLock(directory).acquire(0.3, said.append)
    assert said == [
        f"the run cluster 'rtrun' is in use by another `rolltrace run` (pid {holder.pid}); "
        "waiting for it to finish (Ctrl-C to give up)"
    ]
    assert f"kill {holder.pid}" in str(busy.value)
    holder.kill()  # a killed run: the kernel drops its lock
    holder.wait()
    lock = RunClusterLock(directory)
    lock.acquire(5, said.append)
    assert len(said) == 1  # free at once: nothing more to say
    lock.release()


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from rolltrace.runner.localrun import RunClusterLock
RunClusterLock(Path(sys.argv[1])).acquire(5, print)
print("held", flush=True)
time.sleep(60)
"""


def test_the_state_of_a_cluster_whose_owner_died_is_torn_down_in_one_line(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    directory = tmp_path / "h21stale"
    write_state(directory, ClusterState("h21stale", gone.pid, "running", owner=f"{gone.pid}:1"))
    line = recover_stale("h21stale", directory, timeout_s=1)
    assert line.startswith(f"cleaned up a stale cluster 'h21stale' (its owner pid {gone.pid}")
    assert not directory.exists()
    assert recover_stale("h21stale", directory, timeout_s=1) == ""  # nothing left: silent


def test_a_watch_still_broken_when_the_run_stops_ends_with_a_gap(tmp_path: Path) -> None:
    broken = {"now": False}

    def breaking(api: Any, kind: str) -> Callable[..., Any]:
        real = _list_function(api, kind)

        def call(namespace: str, **kwargs: Any) -> Any:
            if broken["now"]:
                raise ConnectionRefusedError("the API server is gone")
            return real(namespace, **kwargs)

        return call

    kubeconfig = tmp_path / "kubeconfig"
    events = tmp_path / "events.jsonl"
    with ServerThread(ApiServer(), kubeconfig):
        api = k8s_config.new_client_from_config(str(kubeconfig))
        watcher = ClusterWatcher(api, "default", events, kinds=("Pod",), list_function=breaking,
                                 watch_timeout_s=1)  # fmt: skip
        watcher.start()
        broken["now"] = True
        _wait_for(lambda: watcher._threads[0].stats.reconnects > 0, 10)
        stats = watcher.stop()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [line["type"] for line in lines][-1] == "GAP"
    assert "the API server is gone" in lines[-1]["reason"] and stats["Pod"].gaps == 1


def test_a_pcap_cut_by_a_full_disk_is_trimmed_to_its_last_whole_record(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    path = tmp_path / "client.pcap"
    packets = [Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / TCP(sport=1000 + i, dport=80)
               for i in range(3)]  # fmt: skip
    wrpcap(str(path), packets)
    os.truncate(path, path.stat().st_size - 5)  # the third record half written
    assert trim_to_whole_records(path) == 2
    assert len(read_pcap(path)) == 2  # on_damage="raise" by default: no damage left


def test_a_run_warns_when_its_disk_may_not_hold_what_it_writes(tmp_path: Path) -> None:
    stats = os.statvfs(tmp_path)
    free = stats.f_bavail * stats.f_frsize
    need = disk_need_bytes(rate=100, seconds=60, captures=True)
    assert need > disk_need_bytes(rate=100, seconds=60, captures=False) > 0
    assert disk_warning(tmp_path / "run", free // 2) == ""
    warning = disk_warning(tmp_path / "run", free * 2)
    assert warning.startswith("only ") and "load.rate" in warning


def test_a_dead_workers_part_is_named_and_the_others_are_merged(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from loadgen.recorder import SCHEMA
    from loadgen.runner import LoadPlan, LoadRunner

    output = tmp_path / "requests.parquet"
    pq.write_table(SCHEMA.empty_table(), tmp_path / "requests.worker-1.parquet")
    (tmp_path / "requests.worker-2.parquet").write_bytes(b"PAR1 no footer: a killed worker")
    runner = LoadRunner(LoadPlan(host="http://127.0.0.1:1", workers=2), output, tmp_path)
    assert runner.stop() == 0  # nothing was started: only the merge runs
    assert runner.lost_parts == ["requests.worker-2.parquet"] and output.exists()


def test_the_report_says_the_load_sent_and_why_the_run_is_not_complete(tmp_path: Path) -> None:
    from analyzer.pipeline import analyze
    from analyzer.report import render_report
    from analyzer.rundir import LoadDelivered, RunPaths, read_run_meta, write_run_meta
    from analyzer.tracebuilder import build_run

    build_run(tmp_path / "run", "endpoint-lag", seed=1, rate=40, duration_s=10)
    paths = RunPaths(tmp_path / "run")
    meta = read_run_meta(paths.run_json).model_copy(
        update={
            "status": RunStatus.DEGRADED,
            "status_reasons": ["capture packets/client.pcap failed at 12:00:00.000 UTC"],
            "load": LoadDelivered(asked_rate=40, delivered_rate=30, requests=300, seconds=10),
        }
    )
    write_run_meta(paths.run_json, meta)
    render_report(analyze(paths), paths)
    report = paths.report_md.read_text()
    assert "Load: 30 req/s delivered of 40 asked (75 %)." in report
    assert "Run degraded: capture packets/client.pcap failed at 12:00:00.000 UTC." in report


def _handle(component: Component, name: str, killed: list[str]) -> ComponentHandle:
    def kill() -> str:
        killed.append(name)
        return f"killed {name}"

    return ComponentHandle(component, name, alive=lambda: True, kill=kill)


def _requests(
    kind: str,
    count: int,
    interval_s: float,
    lateness: Callable[[int], float],
    response_s: Callable[[int], float] = lambda i: 0.01,
) -> pd.DataFrame:
    """One user's requests on one connection (keep-alive) or one each (new connection); a
    keep-alive request cannot start before the previous response."""
    rows, free_at = [], 0
    for i in range(count):
        scheduled = int(i * interval_s * S)
        start = max(scheduled + int(lateness(i) * S), free_at if kind == "keepalive" else 0)
        end = start + int(response_s(i) * S)
        free_at = end
        conn = 0 if kind == "keepalive" else i
        rows.append((kind, scheduled, start, end, conn, i if kind == "keepalive" else 0))
    columns = ["user_kind", "scheduled_ns", "start_ns", "end_ns", "conn_id", "conn_seq"]
    return pd.DataFrame(rows, columns=columns)


def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
