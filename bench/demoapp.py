"""Requests/s of the demo app on one core over loopback, keep-alive, with a bounded load.

The app runs as its own process pinned to CPU 0 (when the machine has more than one) and the
load generator, a small asyncio client, to the other CPU, so the figure is the server's. The
load is bounded by a request count AND a wall-clock limit. Baseline: the same client against
``http.server`` (ThreadingHTTPServer, HTTP/1.1), which the demo app must beat by a wide margin.

    .venv/bin/python bench/demoapp.py [--requests 40000] [--connections 16] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

BASELINE_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs stall it at ~25 req/s per connection
    def do_GET(self):
        body = b"hello\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on 127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
"""


async def _one_connection(port: int, quota: list[int], deadline: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while quota[0] > 0 and time.monotonic() < deadline:
            quota[0] -= 1
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


async def _load(port: int, requests: int, connections: int, seconds: float) -> tuple[int, float]:
    quota = [requests]
    start = time.monotonic()
    counts = await asyncio.gather(
        *(_one_connection(port, quota, start + seconds) for _ in range(connections))
    )
    return sum(counts), time.monotonic() - start


def _pinned(argv: Sequence[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if (os.cpu_count() or 1) > 1 else list(argv)


def measure(name: str, server_argv: Sequence[str], args: argparse.Namespace) -> float:
    """Requests/s of one server process against the bounded client load."""
    process = subprocess.Popen(_pinned(server_argv, 0), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        match = re.search(r":(\d+)$", process.stdout.readline().strip())
        if match is None:
            raise RuntimeError("server did not report its port")
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        done, elapsed = asyncio.run(
            _load(int(match.group(1)), args.requests, args.connections, args.seconds)
        )
        if done != args.requests:  # the wall-clock limit cut the load short: not the named size
            print(
                f"FAIL: {name} answered {done:,} of {args.requests:,} requests "
                f"within {args.seconds:g} s",
                file=sys.stderr,
            )
            raise SystemExit(2)
        return done / elapsed
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    demoapp = [sys.executable, "-m", "demoapp", "--port", "0", "--pod-name", "bench"]
    baseline = [sys.executable, "-c", BASELINE_SERVER]
    app_rps = measure("demoapp", demoapp, args)
    base_rps = measure("http.server", baseline, args)
    print(f"demoapp      {app_rps:9.0f} req/s  (1 core, {args.connections} keep-alive connections)")
    print(f"http.server  {base_rps:9.0f} req/s  (baseline)")
    print(f"ratio        {app_rps / base_rps:9.2f}x")


if __name__ == "__main__":
    main()
