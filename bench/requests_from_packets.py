"""Benchmark: the requests table rebuilt from packets, as a cost on top of reading the capture.

A client capture is read by every analysis (``read_pcap`` + ``tcp_connections``); rebuilding the
requests from it (``read_pcap_payloads`` + ``requests_from_packets``) should cost at most 30 %
more. The run is built once with the trace builder (the ``mixed`` recipe of bench/analyze.py:
four causes at once, 100 replicas on 10 nodes) and cached under /tmp; its request and response
segments carry real HTTP/1.1 request and status lines, so the bench measures parsing them.

The run is 100 s long at 10,000 requests/s, 40 % of them from keep-alive users sending 2
requests/s each (``builtruns``). The build is checked to hold the named number of requests
(±1 %) and at least three client segments per request (request, response, ACK), and the bench
fails otherwise.

In one process, the steps take turns ``--repeat`` times and each keeps its fastest run, in CPU
seconds (user + system: a shared machine skews them less) and wall seconds:

  base  = read_pcap + tcp_connections
  extra = (read_pcap_payloads − read_pcap) + requests_from_packets

The rebuilt table is checked against the run's own requests.parquet (same requests, same
failures) so that the figure is the cost of a correct result. Prints the ratio extra ÷ base.

Usage: python bench/requests_from_packets.py [--requests N] [--rebuild] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from builtruns import CACHE, build_mixed, requests_problem

GOAL = 0.30
DURATION_S = 100.0
KEEPALIVE_SHARE = 0.4
SEGMENTS_PER_REQUEST = 3  # at least the request, its response and the client's ACK

T = TypeVar("T")


def check_size(run: Path, requests: int, packets: int) -> str | None:
    """Why the run is not the size the bench names, or None."""
    problem = requests_problem(run, requests)
    if problem is None and packets < SEGMENTS_PER_REQUEST * requests:
        return f"the client capture holds {packets:,} packets, fewer than 3 per request"
    return problem


@dataclass
class Timing:
    cpu: float = float("inf")
    wall: float = float("inf")

    def keep_fastest(self, step: Callable[..., T], *args: object) -> T:
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        result = step(*args)
        self.cpu = min(self.cpu, time.process_time() - cpu)
        self.wall = min(self.wall, time.perf_counter() - wall)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from analyzer.connections import tcp_connections
    from analyzer.readers.packet_requests import PREFIX_BYTES, requests_from_packets
    from analyzer.readers.pcap import read_pcap, read_pcap_payloads
    from analyzer.readers.requests import read_requests

    run = CACHE / f"http-requests-{args.requests}"
    if args.rebuild or not (run / "run.json").exists():
        build_mixed(run, args.requests, duration_s=DURATION_S, keepalive_share=KEEPALIVE_SHARE)
    capture = run / "packets" / "client.pcap"
    server_ports = {80}
    problem = check_size(run, args.requests, len(read_pcap(capture)))  # also warms the cache
    if problem:
        print(f"FAIL: {problem}; rebuild with --rebuild", file=sys.stderr)
        return 2

    timings = {name: Timing() for name in STEPS}
    for _ in range(args.repeat):  # the steps take turns, so that a slow spell hits them alike
        packets = timings["read_pcap"].keep_fastest(read_pcap, capture)
        connections = timings["tcp_connections"].keep_fastest(
            tcp_connections, packets, server_ports
        )
        packets, payloads = timings["read_pcap_payloads"].keep_fastest(
            read_pcap_payloads, capture, PREFIX_BYTES
        )
        rebuilt, notes = timings["requests_from_packets"].keep_fastest(
            requests_from_packets, packets, connections, payloads
        )

    log = read_requests(run / "requests.parquet")
    failed_log = int((log["error_kind"] != "ok").sum())
    failed_packets = int((rebuilt["error_kind"] != "ok").sum())
    print(
        f"run: {run}: {len(log):,} requests ({failed_log:,} failed), {len(connections):,} "
        f"connections, {capture.stat().st_size / 1e6:.0f} MB; rebuilt {len(rebuilt):,} requests "
        f"({failed_packets:,} failed, {notes.from_request_lines:,} from request lines)"
    )
    if len(rebuilt) != len(log) or failed_packets != failed_log:
        print("FAIL: the rebuilt table does not hold the run's requests", file=sys.stderr)
        return 2
    return report(timings)


STEPS = ("read_pcap", "tcp_connections", "read_pcap_payloads", "requests_from_packets")


def report(timings: dict[str, Timing]) -> int:
    for name, timing in timings.items():
        print(f"  {name:<22} cpu {timing.cpu:6.2f} s   wall {timing.wall:6.2f} s")
    ratios = {}
    for clock in ("cpu", "wall"):
        spent = {name: getattr(timing, clock) for name, timing in timings.items()}
        base = spent["read_pcap"] + spent["tcp_connections"]
        payload_cost = max(0.0, spent["read_pcap_payloads"] - spent["read_pcap"])
        extra = payload_cost + spent["requests_from_packets"]
        ratios[clock] = extra / base
        print(f"{clock}: base {base:.2f} s, extra {extra:.2f} s, ratio {extra / base:.1%}")
    print(
        f"goal: extra ≤ {GOAL:.0%} of base; cpu count {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if ratios["cpu"] > GOAL:
        print(f"OVER GOAL: {ratios['cpu']:.1%} > {GOAL:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
