"""What the request recorder costs: Locust's max throughput with and without it, same run.

Keep-alive users with an arrival rate far above what one Locust process can send become
closed-loop at Locust's limit, so requests/s measures Locust's maximum. The demo app serves on
loopback. Rounds alternate recorder on/off so machine noise hits both alike; the figure is the
ratio of medians. Goal: the recorder costs ≤ 10 % of Locust's max throughput.

    .venv/bin/python bench/loadgen_recorder.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from loadgen.runner import LOCUSTFILE
from loadgen.runner import _free_port as free_port


def _wait_listening(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("demo app did not start")


def _throughput(port: int, seconds: float, output: str) -> float:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--json",
        "--host", f"http://127.0.0.1:{port}", "--users", "4", "--spawn-rate", "4",
        "--run-time", f"{seconds:g}s", "--loglevel", "ERROR", "--rt-rate", "100000",
        "--rt-new-weight", "0", "--rt-output", output, "--rt-max-seconds", str(seconds + 5),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    stats = json.loads(done.stdout)
    requests = sum(entry["num_requests"] for entry in stats)
    return requests / seconds


def recorder_cost_us(requests: int = 300_000) -> float:
    """The recorder's own cost per request (µs), flushes included, without Locust around it:
    stable under machine noise, unlike the throughput ratio."""
    from loadgen.recorder import RequestRecorder

    class _Hook:
        def add_listener(self, function: object) -> None:
            pass

    class _Events:
        request = _Hook()

    context = {
        "user_kind": "keepalive", "scheduled_ns": 1, "remote_ip": "198.18.2.1",
        "remote_port": 80, "method": "GET", "path": "/", "start_ns": 1, "end_ns": 2,
        "connect_ns": None, "first_byte_ns": 2, "local_ip": "198.18.3.2", "local_port": 40000,
        "conn_id": 3, "conn_new": False, "conn_seq": 4, "status_code": 200, "error_kind": "ok",
        "error_detail": None, "pod": "demoapp-abc", "pod_version": "v1", "response_length": 5,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        recorder = RequestRecorder(f"{tmp}/r.parquet", _Events())
        started = time.perf_counter()
        for _ in range(requests):
            recorder.on_request(context=context)
        recorder.close()
        return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "demoapp", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port)
        with_recorder, without = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for index in range(args.rounds):
                without.append(_throughput(port, args.seconds, ""))
                with_recorder.append(_throughput(port, args.seconds, f"{tmp}/r{index}.parquet"))
                print(
                    f"round {index + 1}: without {without[-1]:8.0f} req/s, "
                    f"with recorder {with_recorder[-1]:8.0f} req/s"
                )
    finally:
        server.terminate()
        server.wait()
    base, rec = statistics.median(without), statistics.median(with_recorder)
    cost = 1 - rec / base
    print(f"median: without {base:.0f} req/s, with recorder {rec:.0f} req/s")
    print(
        f"recorder cost: {cost:.1%} of Locust's max throughput (goal ≤ 10%): "
        f"{'met' if cost <= 0.10 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
