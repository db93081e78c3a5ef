"""Benchmark: the highest request rate the local cluster sustains end to end, per load.workers.

Each trial is one real run of a scenario (default the library's ``high-rate-clean``: 3 nodes,
6 replicas, a rollout under load, keep-alive users; ``bench/load_rate_mixed.yaml`` is the same
with 6 of its 60 users opening a new connection per request) at one rate, recorder on, packets
captured at the client and on every node, no analysis. A rate is *sustained* when the run
delivered ≥ 95 % of it (``rolltrace.runner.losses``' threshold), every capture point reports 0
kernel drops and no request failed. For each ``load.workers`` value the bench climbs from
``--start`` by ``--step`` until a trial fails, narrows the gap ``--refine`` times, then confirms
the best rate with one long run (``--confirm-seconds`` of load before the rollout).

While a trial's load runs, a sampler reads every process's CPU time from /proc, so each trial
prints CPU µs per request for the load generator, the demo app, the captures, the LB emulator,
the nodes and the rest of the cluster, beside the machine's busy share and what other work took:
that says where the ceiling is. The users scale with the rate at the scenario's own requests/s
per user, so a keep-alive user is never asked for more than the scenario asks of it.

Bounded: at most ``--max-trials`` trials per workers value, each run bounded by the scenario's
rollout deadline; all traffic stays inside the cluster's namespaces, and each trial's cluster is
torn down by the runner. Trial directories keep run.json and requests.parquet; their pcaps are
deleted unless ``--keep-packets``. Needs root; run it alone:

    flock /tmp/rolltrace-cluster.lock .venv/bin/python bench/load_rate.py \\
        [--workers 0 2] [--start 1500] [--search-seconds 10] [--confirm-seconds 45]

It exits 2 when a trial's run did not reach every phase (a failed or partial run says nothing
about the rate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.rundir import RunMeta, RunPaths
from rolltrace.runner.backends import LocalBackend
from rolltrace.runner.experiment import Experiment
from rolltrace.runner.losses import DELIVERED_MIN_FRACTION
from rolltrace.scenario import Scenario, load_scenario

SCENARIO = Path(__file__).parents[1] / "scenarios" / "high-rate-clean.yaml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: How often the sampler reads /proc: often enough that a process living a few seconds (a
#: Locust worker's start) is seen, rare enough to cost nothing next to the load.
SAMPLE_S = 0.5
#: Rates are rounded to this many requests/s: finer than run-to-run noise on a shared machine
#: is not worth a trial.
RATE_GRAIN = 50

#: Who a process is, from its command line: the first group whose marker it contains.
GROUPS: list[tuple[str, str]] = [
    ("loadgen (Locust)", "-m locust"),
    ("demo app (6 Pods)", "-m demoapp"),
    ("capture (tcpdump)", "tcpdump"),
    ("LB emulator", "localcluster.lb"),
    ("nodes (kubelet, proxy)", "localcluster.node"),
    ("control plane, truth", "localcluster.main"),
    ("control plane, truth", "conntrack"),
]
RUNNER = "runner (this bench)"
OTHER = "other work on the machine"


def group_of(pid: int, cmdline: str) -> str:
    if pid == os.getpid():
        return RUNNER
    return next((name for name, marker in GROUPS if marker in cmdline), OTHER)


#: A process, as (pid, start time in ticks since boot): pids are reused within seconds on a
#: busy machine (pid_max is 32768), and a reused pid must not inherit another process's ticks.
ProcessKey = tuple[int, int]


def read_process_ticks() -> dict[ProcessKey, tuple[str, int]]:
    """Every process's group and CPU ticks (user + system) so far."""
    found: dict[ProcessKey, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):  # gone meanwhile, or a kernel thread's name
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        key = (int(entry), int(fields[19]))  # fields[19]: starttime
        found[key] = (group_of(int(entry), cmdline), int(fields[11]) + int(fields[12]))
    return found


def read_machine_busy_ticks() -> int:
    """Ticks all CPUs spent working, from /proc/stat: user, nice, system, irq and softirq
    (not idle, iowait, or steal: time the hypervisor gave to other machines)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[i] for i in (0, 1, 2, 5, 6))


@dataclass
class Sample:
    ns: int
    processes: dict[ProcessKey, tuple[str, int]]
    machine_busy: int


class CpuSampler(threading.Thread):
    """Reads /proc every ``SAMPLE_S`` until stopped; ``usage`` cuts a window out afterwards."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(
                Sample(time.time_ns(), read_process_ticks(), read_machine_busy_ticks())
            )
            self._stop_event.wait(SAMPLE_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def usage(self, start_ns: int, end_ns: int) -> tuple[dict[str, float], float, Sample, Sample]:
        """CPU seconds per group between the first sample at or after ``start_ns`` and the
        last at or before ``end_ns`` (both returned), and the machine's busy CPU seconds. A
        process that ended inside the window counts up to its last sample."""
        window = [s for s in self.samples if start_ns <= s.ns <= end_ns]
        if len(window) < 2:
            raise ValueError("fewer than two CPU samples while the load ran")
        first = window[0].processes
        last_seen: dict[ProcessKey, tuple[str, int]] = {}
        for sample in window[1:]:
            for key, (group, ticks) in sample.processes.items():
                # a process keeps the group it was recognized as: an exiting one (a zombie
                # until reaped) has an empty command line, and the load generator, which
                # exits as the load stops, was counted as other work
                known = last_seen.get(key, (OTHER, 0))[0]
                last_seen[key] = (group if known == OTHER else known, ticks)
        seconds: dict[str, float] = {}
        for key, (group, ticks) in last_seen.items():
            before = first[key][1] if key in first else 0
            seconds[group] = seconds.get(group, 0.0) + (ticks - before) / CLOCK_TICKS
        busy = (window[-1].machine_busy - window[0].machine_busy) / CLOCK_TICKS
        return seconds, busy, window[0], window[-1]


@dataclass
class Trial:
    workers: int
    rate: float
    users: int
    status: str
    delivered_rate: float
    generator_lag_s: float | None
    load_seconds: float
    requests: int
    failed: int
    kernel_drops: dict[str, int | None]
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    machine_busy_share: float = 0.0  # of all CPUs, 0..1
    load_average: float = 0.0

    @property
    def sustained(self) -> bool:
        return (
            self.delivered_rate >= DELIVERED_MIN_FRACTION * self.rate
            and all(drops == 0 for drops in self.kernel_drops.values())
            and bool(self.kernel_drops)
            and self.failed == 0
        )

    def line(self) -> str:
        drops = sum(d or 0 for d in self.kernel_drops.values())
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in self.cpu_us_per_request.items())
        return (
            f"workers={self.workers} rate={self.rate:g} users={self.users}: "
            f"{'SUSTAINED' if self.sustained else 'not sustained'}; delivered "
            f"{self.delivered_rate:.0f} req/s over {self.load_seconds:.0f} s, lag "
            f"{self.generator_lag_s}, {self.requests} requests, {self.failed} failed, "
            f"{drops} kernel drops; machine busy {100 * self.machine_busy_share:.0f} % of "
            f"{os.cpu_count()} CPUs, load average {self.load_average:.1f}\n"
            f"    CPU µs/request: {cpu}"
        )


def count_failed(requests: Path) -> int:
    table = pq.read_table(requests, columns=["error_kind"])
    return int(pc.sum(pc.not_equal(table["error_kind"], "ok")).as_py() or 0)


def count_started(requests: Path, start_ns: int, end_ns: int) -> int:
    """Requests started in [start_ns, end_ns]: the load inside the CPU window, whose edges are
    samples, not the load's first and last requests."""
    starts = pq.read_table(requests, columns=["start_ns"])["start_ns"]
    inside = pc.and_(pc.greater_equal(starts, start_ns), pc.less_equal(starts, end_ns))
    return int(pc.sum(inside).as_py() or 0)


def trial_scenario(base: Path, rate: float, workers: int, before_s: float) -> Scenario:
    """The scenario at ``rate``, its users scaled to keep its own rate per user."""
    scenario = load_scenario(base)
    per_user = scenario.load.rate / scenario.load.users
    users = max(scenario.load.users, math.ceil(rate / per_user))
    sets = [f"load.rate={rate:g}", f"load.users={users}", f"load.workers={workers}",
            f"load.before_s={before_s:g}", "repetitions=1"]  # fmt: skip
    return load_scenario(base, sets)


def run_trial(scenario: Scenario, out: Path, keep_packets: bool) -> Trial:
    """One run at the scenario's rate, with the CPU sampled while its load ran."""
    load = scenario.load
    run_dir = out / f"w{load.workers}-r{load.rate:g}-{time.strftime('%H%M%S')}"
    sampler = CpuSampler()
    sampler.start()
    try:
        outcome = Experiment(scenario, run_dir, LocalBackend(), analyze=False).run()
    finally:
        sampler.stop()
    meta = outcome.meta
    if meta.status not in ("complete", "degraded") or meta.load is None:
        print(f"FAIL: the run at {load.rate:g} req/s ended {meta.status}: "
              f"{meta.status_reasons}", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    trial = _trial_from(meta, RunPaths(run_dir), scenario)
    _add_cpu(trial, sampler, meta, RunPaths(run_dir).requests)
    if not keep_packets:
        shutil.rmtree(RunPaths(run_dir).packets_dir, ignore_errors=True)
    return trial


def _trial_from(meta: RunMeta, paths: RunPaths, scenario: Scenario) -> Trial:
    load = meta.load
    assert load is not None  # run_trial checked
    return Trial(
        workers=scenario.load.workers,
        rate=scenario.load.rate,
        users=scenario.load.users,
        status=meta.status,
        delivered_rate=load.delivered_rate,
        generator_lag_s=load.generator_lag_s,
        load_seconds=load.seconds,
        requests=load.requests,
        failed=count_failed(paths.requests),
        kernel_drops={c.file: c.kernel_drops for c in meta.captures},
    )


def _add_cpu(trial: Trial, sampler: CpuSampler, meta: RunMeta, requests: Path) -> None:
    start, stop = meta.phase("load_start"), meta.phase("load_stop")
    assert start is not None and stop is not None  # a complete or degraded run has both
    seconds, busy, first, last = sampler.usage(start, stop)
    started = count_started(requests, first.ns, last.ns)
    trial.cpu_us_per_request = {
        group: 1e6 * cpu / max(started, 1)
        for group, cpu in sorted(seconds.items(), key=lambda item: -item[1])
        if cpu > 0
    }
    trial.machine_busy_share = busy / ((last.ns - first.ns) / 1e9) / (os.cpu_count() or 1)
    trial.load_average = os.getloadavg()[0]


def next_rate(passed: float | None, failed: float | None, start: float, step: float) -> float:
    """Climb by ``step`` until a failure, then bisect between the best pass and the failure."""
    if failed is None:
        rate = start if passed is None else passed * step
    elif passed is None:
        rate = failed / step
    else:
        rate = (passed + failed) / 2
    return max(RATE_GRAIN, round(rate / RATE_GRAIN) * RATE_GRAIN)


def search(workers: int, args: argparse.Namespace, report: Callable[[Trial], None]) -> float | None:
    """The highest sustained rate found for ``workers`` within the trial budget."""
    passed: float | None = None
    failed: float | None = None
    bisections = 0
    for _ in range(args.max_trials):
        if failed is not None:
            if bisections == args.refine:
                break
            bisections += 1
        rate = next_rate(passed, failed, args.start, args.step)
        if rate in (passed, failed):  # the gap is down to the grain
            break
        scenario = trial_scenario(args.scenario, rate, workers, args.search_seconds)
        trial = run_trial(scenario, args.out, args.keep_packets)
        report(trial)
        if trial.sustained:
            passed = rate
        else:
            failed = rate
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--start", type=float, default=1500.0)
    parser.add_argument("--step", type=float, default=1.4, help="climb factor between trials")
    parser.add_argument("--refine", type=int, default=2, help="bisections after a failure")
    parser.add_argument("--max-trials", type=int, default=6, help="per workers value")
    parser.add_argument("--search-seconds", type=float, default=10.0,
                        help="load before the rollout in a search trial")  # fmt: skip
    parser.add_argument("--confirm-seconds", type=float, default=45.0,
                        help="load before the rollout in the confirming run (0: none)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("/tmp/rolltrace-bench/load-rate"))
    parser.add_argument("--keep-packets", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/load_rate.py starts the local cluster: run it as root")
    args.out.mkdir(parents=True, exist_ok=True)
    trials: list[Trial] = []

    def report(trial: Trial) -> None:
        trials.append(trial)
        print(trial.line(), flush=True)

    for workers in args.workers:
        best = search(workers, args, report)
        print(f"workers={workers}: highest sustained rate {best}", flush=True)
        if best is not None and args.confirm_seconds > 0:
            confirm = trial_scenario(args.scenario, best, workers, args.confirm_seconds)
            report(run_trial(confirm, args.out, args.keep_packets))
    (args.out / "trials.json").write_text(
        json.dumps([asdict(t) | {"sustained": t.sustained} for t in trials], indent=2)
    )


if __name__ == "__main__":
    main()
