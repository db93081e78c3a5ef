"""Benchmark: ``rolltrace analyze`` on a built run of 1M requests, ~10M packets, 10k events.

The run is built once with the trace builder (the ``mixed`` recipe: four causes at once, 100
replicas on 10 nodes so that Pods, EndpointSlices and their watch events are numerous) and
cached under /tmp; the watch is then topped up to 10k lines with Kubernetes ``Event`` objects
(probe failures, pulls, kills — the bulk of what a real namespace's watch carries). The analysis
runs in a subprocess, exactly as CI would run it, measured for wall time and peak memory
(``ru_maxrss`` of the child). Goal: ≤ 20 s and ≤ 4 GB on 2 cores.

Then the analysis runs once more in-process to print CPU seconds per stage (read, joins,
attribution, metrics, write).

Usage: python bench/analyze.py [--requests N] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

CACHE = Path("/tmp/rolltrace-bench")
TARGET_EVENTS = 10_000
GOAL_S, GOAL_GB = 20.0, 4.0


def build(path: Path, requests: int) -> None:
    from analyzer.tracebuilder.build import build_run

    duration_s = 40.0
    shutil.rmtree(path, ignore_errors=True)
    started = time.monotonic()
    build_run(
        path,
        "mixed",
        seed=7,
        rate=requests / duration_s,
        duration_s=duration_s,
        replicas=100,
        max_surge=10,
        nodes=10,
        keepalive_users=400,
        keepalive_share=0.7,
    )
    pad_events(path / "events.jsonl", TARGET_EVENTS)
    print(f"built {path} in {time.monotonic() - started:.1f} s", flush=True)


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


def describe(path: Path) -> str:
    captures = sorted((path / "packets").iterdir())
    size = sum(p.stat().st_size for p in captures)
    events = sum(1 for _ in (path / "events.jsonl").open("rb"))
    return f"{len(captures)} captures, {size / 1e6:.0f} MB of pcap, {events} watch events"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    run = CACHE / f"analyze-{args.requests}"
    if args.rebuild or not (run / "run.json").exists():
        build(run, args.requests)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    print(f"run: {run} ({describe(run)})", flush=True)

    rolltrace = Path(sys.executable).with_name("rolltrace")
    started = time.monotonic()
    result = subprocess.run(
        [str(rolltrace), "analyze", str(run), "--json"], capture_output=True, text=True
    )
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gb = usage.ru_maxrss * 1024 / 1e9
    cpu = usage.ru_utime + usage.ru_stime
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    summary = json.loads(result.stdout)
    packets = pq.ParquetFile(run / "analysis/tables/packets.parquet").metadata.num_rows
    print(
        f"analyzed {summary['requests_total']:,} requests ({summary['requests_failed']:,} failed), "
        f"{packets:,} packets"
    )
    print(f"wall time {wall:.1f} s (goal ≤ {GOAL_S:.0f} s, ratio {wall / GOAL_S:.2f})")
    # on a shared machine wall time includes waiting for the CPU; CPU time does not
    print(f"cpu time {cpu:.1f} s (user + system), load average {os.getloadavg()[0]:.1f}")
    print(f"peak memory {peak_gb:.2f} GB (goal ≤ {GOAL_GB:.0f} GB, ratio {peak_gb / GOAL_GB:.2f})")
    print(f"cpu count {os.cpu_count()}")
    print_stage_cpu(run)
    return 0


def print_stage_cpu(run: Path) -> None:
    """CPU seconds per analysis stage, from a second, in-process analysis (the subprocess above
    is what CI runs; this one says where its time goes)."""
    from analyzer.pipeline import analyze
    from analyzer.rundir import RunPaths

    shutil.rmtree(run / "analysis", ignore_errors=True)
    stages = analyze(RunPaths(run)).cpu_s
    total = sum(stages.values())
    for stage in ("read", "joins", "attribution", "metrics", "write"):
        seconds = stages.get(stage, 0.0)
        print(f"  cpu {stage:<12} {seconds:6.2f} s ({seconds / max(total, 1e-9):.0%})")


if __name__ == "__main__":
    sys.exit(main())
