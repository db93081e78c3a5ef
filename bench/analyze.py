"""Benchmark: ``rolltrace analyze`` on a built run of 1M requests, ≥ 9M packets, 10k events.

The run is built once with the trace builder (``builtruns.build_mixed``: the ``mixed`` recipe,
four causes at once, 100 replicas on 10 nodes; 10,000 requests/s for 100 s, 70 % of them from
keep-alive users) and cached under /tmp; the watch is then topped up to 10k lines with
Kubernetes ``Event`` objects (probe failures, pulls, kills — the bulk of what a real
namespace's watch carries). Before anything is timed the run is checked to hold the requests,
packets and events the bench names; otherwise it exits 2 naming the figures.

The analysis runs in a subprocess, exactly as CI would run it, ``--runs`` times (3), measured
for wall time, CPU time (user + system) and peak memory (``ru_maxrss`` of the children): the
medians are printed beside their goals from issue 13 as ratios, with each run's figure. Then the
analysis runs once more in-process to print CPU seconds per stage.

Usage: python bench/analyze.py [--requests N] [--rebuild] [--runs N]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from builtruns import CACHE, build_mixed, requests_problem

TARGET_EVENTS = 10_000
DURATION_S = 100.0
KEEPALIVE_SHARE = 0.7  # mostly keep-alive, as a load generator's users are
# 70 % keep-alive traffic: about 9.5 packets per request over the client and node captures
PACKETS_PER_REQUEST = 9.0
GOALS = {"cpu": 8.0, "wall": 20.0, "peak": 3.0}  # s, s, GB for 1M requests (issue 13)


def build(path: Path, requests: int) -> None:
    build_mixed(path, requests, duration_s=DURATION_S, keepalive_share=KEEPALIVE_SHARE)
    pad_events(path / "events.jsonl", TARGET_EVENTS)


def pad_events(events: Path, target: int) -> None:
    """Append Kubernetes Event objects (kind Event) until the watch has ``target`` lines."""
    lines = events.read_bytes().splitlines()
    last = json.loads(lines[-1])["recv_ns"]
    reasons = ("Unhealthy", "Pulled", "Created", "Started", "Killing", "Scheduled")
    extra = []
    for i in range(max(0, target - len(lines))):
        name = f"demo-event-{i:05d}"
        obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": f"00000000-0000-4000-8000-{i:012d}",
                "resourceVersion": str(900_000 + i),
            },
            "reason": reasons[i % len(reasons)],
            "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "demo"},
        }
        line = {"type": "ADDED", "recv_ns": last + i, "kind": "Event", "object": obj}
        extra.append(json.dumps(line, separators=(",", ":")).encode())
    events.write_bytes(b"\n".join(lines + extra) + b"\n")


@dataclass(frozen=True)
class RunSize:
    """What a built run holds, read back from its files, and why it is not what the bench names."""

    packets: int
    held: str  # a line to print
    problems: list[str]


def size_problems(run: Path, requests: int, target_events: int = TARGET_EVENTS) -> RunSize:
    """Count the run's packets, MB and watch lines against the size the bench names. Reading
    every capture once also puts the files in the page cache for the timed runs."""
    from analyzer.readers.pcap import iter_pcap

    captures = sorted((run / "packets").iterdir())
    packets = sum(len(chunk) for capture in captures for chunk in iter_pcap(capture))
    megabytes = sum(capture.stat().st_size for capture in captures) / 1e6
    events = sum(1 for _ in (run / "events.jsonl").open("rb"))
    problems = [requests_problem(run, requests)]
    if packets < PACKETS_PER_REQUEST * requests:
        problems.append(
            f"the captures hold {packets:,} packets, fewer than {PACKETS_PER_REQUEST * requests:,.0f}"
        )
    if events != target_events:
        problems.append(f"the watch holds {events:,} lines, not {target_events:,}")
    held = f"{len(captures)} captures, {packets:,} packets, {megabytes:,.0f} MB, {events:,} events"
    return RunSize(packets, held, [p for p in problems if p])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--runs", type=int, default=3, help="timed subprocess runs; their medians are reported"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    run = CACHE / f"analyze-{args.requests}"
    if args.rebuild or not (run / "run.json").exists():
        build(run, args.requests)
    size = size_problems(run, args.requests)
    print(f"run: {run} ({size.held})", flush=True)
    if size.problems:
        print(f"FAIL: {'; '.join(size.problems)}; rebuild with --rebuild", file=sys.stderr)
        return 2
    code = measure_subprocess(run, args.runs)
    if code == 0:
        print_stage_cpu(run)
    return code


@dataclass(frozen=True)
class Measured:
    """One ``rolltrace analyze`` subprocess: wall and CPU seconds, its summary."""

    wall: float
    cpu: float
    summary: dict[str, Any]


def analyze_once(run: Path) -> Measured | int:
    """``rolltrace analyze RUN --json`` in a subprocess, as CI would run it; its exit code when
    it fails. CPU is the child's user + system time, read as the difference of
    ``RUSAGE_CHILDREN`` around it."""
    rolltrace = Path(sys.executable).with_name("rolltrace")
    shutil.rmtree(run / "analysis", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        [str(rolltrace), "analyze", str(run), "--json"], capture_output=True, text=True
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Measured(wall, cpu, json.loads(result.stdout))


def measure_subprocess(run: Path, runs: int) -> int:
    """Wall, CPU and peak memory of ``rolltrace analyze RUN --json``, ``runs`` times: the
    median of each against its goal, and the spread (a shared machine moves single runs by
    ±0.5 s of CPU). Peak memory is the largest of the runs."""
    measured: list[Measured] = []
    for _ in range(runs):
        once = analyze_once(run)
        if isinstance(once, int):
            return once
        measured.append(once)
    summary = measured[-1].summary
    packets = pq.ParquetFile(run / "analysis/tables/packets.parquet").metadata.num_rows
    print(
        f"analyzed {summary['requests_total']:,} requests ({summary['requests_failed']:,} failed), "
        f"{packets:,} packets; {runs} run{'s' if runs > 1 else ''}"
    )
    per_run = {
        "cpu": sorted(m.cpu for m in measured),
        "wall": sorted(m.wall for m in measured),
    }
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    units = {"cpu": "s (user + system)", "wall": "s", "peak": "GB peak RSS"}
    for name in ("cpu", "wall", "peak"):
        goal = GOALS[name]
        value = statistics.median(per_run[name]) if name in per_run else peak
        spread = f"  runs {', '.join(f'{v:.2f}' for v in per_run[name])}" if name in per_run else ""
        print(
            f"{name:<5} {value:6.2f} {units[name]:<18} goal ≤ {goal:g}, ratio {value / goal:.2f}"
            f"{spread}"
        )
    # on a shared machine wall time includes waiting for the CPU; CPU time does not
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    return 0


@contextmanager
def thread_cpu_of(owner: Any, name: str, spent: dict[str, float], key: str) -> Iterator[None]:
    """Count the calling thread's CPU seconds in ``owner.name`` under ``key`` (other threads,
    which run meanwhile, stay out); for a generator function, the time spent in each step."""
    original: Callable[..., Any] = getattr(owner, name)

    def count(started: float) -> None:
        spent[key] = spent.get(key, 0.0) + time.thread_time() - started

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            count(started)

    def timed_steps(*args: Any, **kwargs: Any) -> Iterator[Any]:
        steps = original(*args, **kwargs)
        while True:
            started = time.thread_time()
            try:
                item = next(steps)
            except StopIteration:
                return
            finally:
                count(started)
            yield item

    setattr(owner, name, timed_steps if inspect.isgeneratorfunction(original) else timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def print_stage_cpu(run: Path) -> None:
    """CPU seconds per analysis stage, from a second, in-process analysis (the subprocess above
    is what CI runs; this one says where its time goes). The pipeline's stages count every
    thread: the packets are written to packets.parquet on a writer thread while they are read,
    so that thread's own time is taken out of the read stage and shown apart."""
    from analyzer import connections, pipeline
    from analyzer.rundir import RunPaths

    shutil.rmtree(run / "analysis", ignore_errors=True)
    inner: dict[str, float] = {}
    with (
        thread_cpu_of(pipeline, "iter_packet_chunks", inner, "read_pcap"),
        thread_cpu_of(connections.ConnectionTracker, "add", inner, "tcp_connections"),
        thread_cpu_of(connections.ConnectionTracker, "rows", inner, "tcp_connections"),
        thread_cpu_of(pipeline, "number_connections", inner, "tcp_connections"),
        thread_cpu_of(pipeline._TableStream, "_write", inner, "packets.parquet"),
    ):
        stages = pipeline.analyze(RunPaths(run)).cpu_s
    packet_stages = ("read_pcap", "tcp_connections", "packets.parquet")
    rows = {
        "read_pcap (chunks)": inner.get("read_pcap", 0.0),
        "tcp_connections": inner.get("tcp_connections", 0.0),
        "write packets.parquet": inner.get("packets.parquet", 0.0),
        "read (requests, events)": stages.get("read", 0.0)
        - sum(inner.get(stage, 0.0) for stage in packet_stages),
        "joins": stages.get("joins", 0.0),
        "attribution": stages.get("attribution", 0.0),
        "metrics": stages.get("metrics", 0.0),
        "writing (the rest)": stages.get("write", 0.0),
    }
    total = sum(rows.values())
    print(f"cpu per stage (in-process, total {total:.2f} s):")
    for stage, seconds in rows.items():
        print(f"  {stage:<24} {seconds:6.2f} s ({seconds / max(total, 1e-9):.0%})")


if __name__ == "__main__":
    sys.exit(main())
