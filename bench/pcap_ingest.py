"""pcap ingest benchmark: our reader against scapy, dpkt and tshark on the same capture.

Generates (with ``analyzer.pcap_writer``) a capture of HTTP/1.1 traffic shaped like a rollout's
client capture — keep-alive connections carrying many requests, short Connection: close
connections, connections reset by the server, SYNs retransmitted — then measures packets/s of
each reader extracting the same fields (time, addresses, ports, flags, seq, ack, payload length).
Slow readers read a prefix of the same file. Our reader runs in a child process so that its peak
RSS is its own; reading with payload prefixes (``read_pcap_payloads``) is measured there too, on
a row of its own and not compared. Prints a table of ratios, each against its goal from issue 13,
and records it in docs/performance.md (## pcap ingest). Exits 2 when the capture does not hold
the packets it names or a reader read another count than its own.

    .venv/bin/python bench/pcap_ingest.py [--packets 1000000] [--keep FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.pcap_writer import write_pcap

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
SECTION = "## pcap ingest"
GOALS = {"scapy": 400.0, "tshark": 40.0, "dpkt": 30.0}  # issue 13: ours ÷ theirs, per CPU second
STARTUP_PACKETS = 1_000  # the small capture read to measure a fresh process's start
PREFIX_BYTES = 128  # payload bytes kept per segment, as the requests-from-packets reader asks


@dataclass(frozen=True)
class Template:
    """One connection's packets relative to its start: who sends, flags, bytes, time offset."""

    from_client: np.ndarray
    flags: np.ndarray
    payload: np.ndarray
    offset_ns: np.ndarray

    def seq_ack(self) -> tuple[np.ndarray, np.ndarray]:
        """Sequence/ack numbers relative to each side's ISN, as TCP would number them."""
        sent = {True: 0, False: 0}  # bytes (SYN and FIN count one) each side has sent
        counted: set[tuple[bool, int]] = set()  # a retransmitted SYN/FIN reuses its number
        seq, ack = [], []
        for client, flags, size in zip(self.from_client, self.flags, self.payload, strict=True):
            side = bool(client)
            control = (side, int(flags) & 0x03)
            if control in counted:
                sent[side] -= 1
            seq.append(sent[side])
            ack.append(sent[not side] if flags & 0x10 else 0)
            sent[side] += int(size) + (1 if flags & 0x03 else 0)
            if flags & 0x03:
                counted.add(control)
        return np.array(seq, dtype=np.int64), np.array(ack, dtype=np.int64)


SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
REQUEST, RESPONSE = 140, 620


def _template(events: list[tuple[bool, int, int, float]]) -> Template:
    c, f, p, t = zip(*events, strict=True)
    return Template(
        np.array(c, dtype=bool),
        np.array(f, dtype=np.int64),
        np.array(p, dtype=np.int64),
        (np.array(t) * 1e6).astype(np.int64),  # ms → ns
    )


def _handshake(syn_retransmits: int = 0) -> list[tuple[bool, int, int, float]]:
    syns = [(True, SYN, 0, 1000.0 * i) for i in range(syn_retransmits + 1)]
    start = 1000.0 * syn_retransmits
    return [*syns, (False, SYN | ACK, 0, start + 0.05), (True, ACK, 0, start + 0.1)]


def _exchange(at: float) -> list[tuple[bool, int, int, float]]:
    return [
        (True, PSH | ACK, REQUEST, at),
        (False, ACK, 0, at + 0.05),
        (False, PSH | ACK, RESPONSE, at + 2.0),
        (True, ACK, 0, at + 2.05),
    ]


def templates(requests_per_keepalive: int) -> dict[str, Template]:
    keepalive = _handshake()
    for i in range(requests_per_keepalive):
        keepalive += _exchange(1.0 + 10.0 * i)
    end = 10.0 * requests_per_keepalive + 5
    keepalive += [
        (True, FIN | ACK, 0, end),
        (False, FIN | ACK, 0, end + 0.1),
        (True, ACK, 0, end + 0.2),
    ]
    close = [*_handshake(), *_exchange(1.0)]
    close += [(False, FIN | ACK, 0, 3.5), (True, FIN | ACK, 0, 3.6), (False, ACK, 0, 3.7)]
    reset = [*_handshake(), (True, PSH | ACK, REQUEST, 1.0), (False, RST | ACK, 0, 1.5)]
    retransmitted = [*_handshake(syn_retransmits=2), *_exchange(2001.0)]
    retransmitted += [
        (False, FIN | ACK, 0, 2004.0),
        (True, FIN | ACK, 0, 2004.1),
        (False, ACK, 0, 2004.2),
    ]
    refused = [(True, SYN, 0, 0.0), (False, RST | ACK, 0, 0.05)]
    return {
        "keepalive": _template(keepalive),
        "close": _template(close),
        "reset": _template(reset),
        "syn-retransmit": _template(retransmitted),
        "refused": _template(refused),
    }


def http_traffic(packets: int, seed: int = 1) -> pd.DataFrame:
    """About ``packets`` packets of HTTP/1.1 traffic: a packets table, sorted by time."""
    rng = np.random.default_rng(seed)
    shapes = templates(requests_per_keepalive=50)
    # share of connections by kind; keep-alive ones carry most packets
    mix = {"keepalive": 0.05, "close": 0.80, "reset": 0.05, "syn-retransmit": 0.03, "refused": 0.07}
    per_connection = sum(share * len(shapes[k].flags) for k, share in mix.items())
    connections = int(packets / per_connection * 1.1) + 10  # a margin, then cut to size
    kinds = rng.choice(list(mix), size=connections, p=list(mix.values()))
    start = np.sort(rng.integers(0, 60 * 10**9, connections)) + 1_790_000_000 * 10**9
    addresses = np.array(
        [f"10.{i // 62_500 % 250}.{i // 250 % 250}.{i % 250 + 1}" for i in range(connections)]
    )
    frames = []
    for kind, shape in shapes.items():
        conns = np.flatnonzero(kinds == kind)
        if not len(conns):
            continue
        n = len(shape.flags)
        conn = np.repeat(conns, n)
        step = np.tile(np.arange(n), len(conns))
        seq_rel, ack_rel = shape.seq_ack()
        client_isn = rng.integers(0, 2**32, connections)[conn]
        server_isn = rng.integers(0, 2**32, connections)[conn]
        client = shape.from_client[step]
        client_ip = addresses[conn]
        client_port = 10_000 + conn % 50_000
        jitter = rng.integers(0, 20_000, len(conn))
        frames.append(
            pd.DataFrame(
                {
                    "ts_ns": start[conn] + shape.offset_ns[step] + jitter,
                    "src": np.where(client, client_ip, "10.96.0.10"),
                    "dst": np.where(client, "10.96.0.10", client_ip),
                    "sport": np.where(client, client_port, 80),
                    "dport": np.where(client, 80, client_port),
                    "flags": shape.flags[step],
                    "seq": (np.where(client, client_isn, server_isn) + seq_rel[step]) % 2**32,
                    "ack": np.where(
                        shape.flags[step] & ACK,
                        (np.where(client, server_isn, client_isn) + ack_rel[step]) % 2**32,
                        0,
                    ),
                    "payload_len": shape.payload[step],
                    "ip_version": 4,
                }
            )
        )
    traffic = pd.concat(frames, ignore_index=True).sort_values("ts_ns", kind="stable")
    return traffic.iloc[:packets].reset_index(drop=True)


OURS_CHILD = """
import json, sys, time
from analyzer.readers.pcap import read_pcap, read_pcap_payloads

def status_kb(field):
    # VmHWM/VmRSS belong to this process image (ru_maxrss would include the parent's peak)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def timed(read, runs):
    # (packets, best (cpu, wall), first run's cpu: loads the compiled kernels from their cache)
    best = first = None
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        rows = len(read())
        elapsed = (time.process_time() - cpu_start, time.perf_counter() - start)
        best = elapsed if best is None else min(best, elapsed)
        first = first or elapsed[0]
    return rows, best, first

path, runs, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
baseline = status_kb("VmRSS")
rows, best, first = timed(lambda: read_pcap(path), runs)
peak = status_kb("VmHWM")  # the first read's peak: later ones reuse freed memory
payload_rows, payload_best, _ = timed(lambda: read_pcap_payloads(path, prefix)[0], runs)
print(json.dumps({"packets": rows, "cpu": best[0], "wall": best[1], "first_cpu": first,
                  "payload_packets": payload_rows, "payload_cpu": payload_best[0],
                  "payload_wall": payload_best[1], "peak_rss": peak, "baseline_rss": baseline}))
"""


@dataclass
class Result:
    reader: str
    packets: int
    cpu: float  # seconds of CPU: the machine may be shared, CPU time is what the reader costs
    wall: float

    @property
    def rate(self) -> float:
        return self.packets / self.cpu


@dataclass(frozen=True)
class Ours:
    """Our reader's figures: the packet table (compared), payload parsing (measured apart)."""

    table: Result
    payloads: Result
    first_cpu: float  # the first read in a fresh process: it also loads the compiled kernels
    memory: dict[str, int]


def bench_ours(path: Path, runs: int) -> Ours:
    out = subprocess.run(
        [sys.executable, "-c", OURS_CHILD, str(path), str(runs), str(PREFIX_BYTES)],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    return Ours(
        Result("rolltrace read_pcap", report["packets"], report["cpu"], report["wall"]),
        Result(
            f"rolltrace read_pcap_payloads ({PREFIX_BYTES} B)",
            report["payload_packets"],
            report["payload_cpu"],
            report["payload_wall"],
        ),
        report["first_cpu"],
        {"peak_rss": report["peak_rss"], "baseline_rss": report["baseline_rss"]},
    )


STARTUP_CHILD = """
import sys, time
started = time.process_time()
from analyzer.readers.pcap import read_pcap
read_pcap(sys.argv[1])
print(time.process_time() - started)
"""


def startup_cpu(path: Path, cache: Path | None) -> float:
    """CPU seconds of a fresh process that imports the reader and reads ``path`` (a small
    capture), with numba's cache in ``cache`` (an empty directory: everything is compiled)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache)) if cache else None
    out = subprocess.run(
        [sys.executable, "-c", STARTUP_CHILD, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return float(out.stdout)


def _timed(name: str, rows: Iterator[tuple[Any, ...]], limit: int) -> Result:
    """Times reading the first ``limit`` rows of ``rows`` (a generator that opens its reader)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with contextlib.closing(rows):
        read = list(itertools.islice(rows, limit))
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - start
    return Result(name, len(read), cpu, wall)


def _scapy_rows(path: Path, scapy: Any) -> Iterator[tuple[Any, ...]]:
    IP, TCP = scapy.layers.inet.IP, scapy.layers.inet.TCP
    with scapy.utils.PcapReader(str(path)) as reader:
        for packet in reader:
            ip, tcp = packet[IP], packet[TCP]
            yield (
                packet.time,
                ip.src,
                ip.dst,
                tcp.sport,
                tcp.dport,
                int(tcp.flags),
                tcp.seq,
                tcp.ack,
                ip.len - ip.ihl * 4 - tcp.dataofs * 4,
            )


def _dpkt_rows(path: Path, dpkt: Any) -> Iterator[tuple[Any, ...]]:
    with open(path, "rb") as handle:
        for ts, frame in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            tcp = ip.data
            yield (
                ts,
                socket.inet_ntoa(ip.src),
                socket.inet_ntoa(ip.dst),
                tcp.sport,
                tcp.dport,
                tcp.flags,
                tcp.seq,
                tcp.ack,
                ip.len - ip.hl * 4 - tcp.off * 4,
            )


def bench_scapy(path: Path, limit: int) -> Result:
    import scapy.layers.inet  # imported outside the timed region
    import scapy.utils

    return _timed("scapy PcapReader", _scapy_rows(path, scapy), limit)


def bench_dpkt(path: Path, limit: int) -> Result:
    import dpkt  # imported outside the timed region

    return _timed("dpkt", _dpkt_rows(path, dpkt), limit)


def bench_tshark(path: Path, limit: int) -> Result | None:
    if shutil.which("tshark") is None:
        return None
    fields = ["frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport"]
    fields += ["tcp.flags", "tcp.seq_raw", "tcp.ack_raw", "tcp.len"]
    command = ["tshark", "-n", "-r", str(path), "-c", str(limit), "-T", "fields"]
    for field in fields:
        command += ["-e", field]
    start, cpu_start = time.perf_counter(), _children_cpu()
    out = subprocess.run(command, check=True, capture_output=True)
    cpu, wall = _children_cpu() - cpu_start, time.perf_counter() - start
    return Result("tshark -T fields", out.stdout.count(b"\n"), cpu, wall)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def goal_of(reader: str) -> float | None:
    return next((goal for name, goal in GOALS.items() if name in reader), None)


def goal_lines(ours: Result, others: list[Result]) -> list[str]:
    """Each ratio against its goal, one line each."""
    lines = []
    for other in others:
        goal = goal_of(other.reader)
        if goal is not None:
            ratio = ours.rate / other.rate
            verdict = "met" if ratio >= goal else "MISSED"
            lines.append(f"{other.reader}: {ratio:,.1f}× (goal ≥ {goal:g}×) {verdict}")
    return lines


def _row(result: Result, ratio: str, goal: str) -> str:
    return (
        f"| {result.reader} | {result.packets:,} | {result.cpu:.3f} ({result.wall:.3f}) "
        f"| {result.rate:,.0f} | {ratio} | {goal} |"
    )


def _table(ours: Ours, others: list[Result], file_size: int) -> str:
    table = ours.table
    lines = [
        "| reader | packets read | CPU s (wall s) | packets/CPU-s | ours ÷ theirs | goal |",
        "|---|---:|---:|---:|---:|---:|",
        _row(table, "1", ""),
        _row(ours.payloads, "(payloads too: not compared)", ""),
    ]
    for other in others:
        goal = goal_of(other.reader)
        ratio = table.rate / other.rate
        mark = "" if goal is None else f"≥ {goal:g}× {'✓' if ratio >= goal else '✗'}"
        lines.append(_row(other, f"{ratio:,.1f}×", mark))
    peak, baseline = ours.memory["peak_rss"], ours.memory["baseline_rss"]
    lines += [
        "",
        f"Capture: {file_size / 1e6:,.1f} MB. Peak RSS of the reading process: "
        f"{peak / 1e6:,.0f} MB = {peak / file_size:.2f}× the file "
        f"({(peak - baseline) / 1e6:,.0f} MB = {(peak - baseline) / file_size:.2f}× above the "
        f"{baseline / 1e6:,.0f} MB of the interpreter with pandas loaded); goal ≤ 3×. "
        f"The first read in a fresh process took {ours.first_cpu:.3f} CPU s (it loads the "
        "compiled kernels from numba's cache).",
    ]
    return "\n".join(lines)


def _write_doc(table: str, packets: int, command: str) -> None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    # the bench keeps one core busy itself; more than the cores means other work shared them
    shared = ": other work shared the machine" if load > cores else ""
    host = (
        f"{platform.machine()}, {cores} cores (1-minute load average {load:.1f} at the "
        f"end{shared}), Python {platform.python_version()}"
    )
    section = (
        f"{SECTION}\n\n"
        f"Measured {dt.date.today().isoformat()} on {host} with a generated capture of "
        f"{packets:,} packets of HTTP/1.1 traffic (keep-alive and Connection: close "
        "connections, resets, refused connections, SYN retransmissions; Ethernet, IPv4, "
        "nanosecond pcap). Each reader extracts the same fields (time, addresses, ports, flags, "
        "seq, ack, payload length); scapy, dpkt and tshark read a prefix of the same file, "
        "ours the whole file (best of 3 runs, in a child process for its peak RSS; the "
        f"payload row also keeps each segment's first {PREFIX_BYTES} payload bytes). Rates are "
        "per CPU second (user + system, tshark's included), so that a busy machine does not "
        "skew the ratios; wall times are in parentheses.\n\n"
        "The reader's sequential part (the record walk: each record's length says where the "
        "next one starts) and the per-frame header decode (link layer, IPv4 / IPv6 with "
        "extension headers, TCP) are compiled with numba (`analyzer/readers/_kernels.py`); the "
        "rest is vectorized numpy and Arrow. The file is mapped, not read, and decoded in chunks "
        "of `CHUNK_PACKETS` records (`iter_pcap` yields them; `read_pcap` joins them), so the "
        "temporaries are per chunk.\n\n"
        f"{table}\n\nReproduce: `{command}` (exits 2 when the capture does not hold the packets "
        "it names or a reader read another count than its own).\n"
    )
    text = DOC.read_text() if DOC.exists() else "# Performance\n\n"
    if SECTION in text:
        before, _, rest = text.partition(SECTION)
        following = rest.find("\n## ")
        after = rest[following + 1 :] if following >= 0 else ""
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def read_problems(results: list[Result], expected: dict[str, int]) -> list[str]:
    """Readers that read another number of packets than the bench names for them."""
    return [
        f"{r.reader} read {r.packets:,} packets, not {expected[r.reader]:,}"
        for r in results
        if r.packets != expected[r.reader]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the generated capture at this path")
    parser.add_argument("--scapy-packets", type=int, default=20_000)
    parser.add_argument("--dpkt-packets", type=int, default=300_000)
    parser.add_argument("--tshark-packets", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of our reader (best is kept)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "http.pcap"
        start = time.perf_counter()
        written = write_pcap(path, http_traffic(args.packets))
        file_size = path.stat().st_size
        print(
            f"wrote {written:,} packets ({file_size / 1e6:,.1f} MB) in {time.perf_counter() - start:.1f} s"
        )
        if written != args.packets:
            print(
                f"FAIL: the capture holds {written:,} packets, not {args.packets:,}",
                file=sys.stderr,
            )
            return 2
        small = Path(tmp) / "small.pcap"
        write_pcap(small, http_traffic(STARTUP_PACKETS))
        cold = startup_cpu(small, Path(tmp) / "empty-numba-cache")
        warm = startup_cpu(small, None)
        ours = bench_ours(path, args.runs)
        others = [bench_scapy(path, args.scapy_packets), bench_dpkt(path, args.dpkt_packets)]
        tshark = bench_tshark(path, args.tshark_packets)
        others += [tshark] if tshark else []
    expected = {
        ours.table.reader: written,
        ours.payloads.reader: written,
        "scapy PcapReader": min(args.scapy_packets, written),
        "dpkt": min(args.dpkt_packets, written),
        "tshark -T fields": min(args.tshark_packets, written),
    }
    problems = read_problems([ours.table, ours.payloads, *others], expected)
    if problems:
        print(f"FAIL: {'; '.join(problems)}", file=sys.stderr)
        return 2
    table = _table(ours, others, file_size) + (
        f" A fresh process that imports the reader and reads {STARTUP_PACKETS:,} packets takes "
        f"{warm:.2f} CPU s with the compiled kernels cached, {cold:.2f} s with an empty cache "
        "(numba compiles them once per install, into `__pycache__`)."
    )
    print(table)
    print("\n".join(goal_lines(ours.table, others)))
    if not args.no_doc:
        command = ".venv/bin/python bench/pcap_ingest.py" + (
            f" --packets {args.packets}" if args.packets != 1_000_000 else ""
        )
        _write_doc(table, written, command)
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
