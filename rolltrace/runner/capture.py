"""Packet capture by tcpdump: libpcap's own ring reader and pcap writer, in its own process.

A capture runs where the packets are: in the local cluster's client namespace (what clients
see, through the LB) and in each node namespace (the Pod-facing side, after the NAT, where the
backend Pod's IP is visible). A process cannot capture in another network namespace, so each
capture is started behind an argv prefix (``nsenter --net=…``); on a real cluster the prefix is
empty and the capture runs on this machine.

Why tcpdump and not a Python sniffer: at a few thousand requests/s a Python callback per packet
falls behind the kernel ring and the kernel drops most packets (measured in
docs/performance.md); tcpdump copies from the ring to the file in C and keeps up. Options, each
for a reason:

* ``-i any``: Pod veths appear during the run; the ``any`` pseudo-interface covers them. It
  yields Linux cooked (SLL2) frames, which ``analyzer.read_pcap`` reads.
* ``-B``: a kernel ring large enough to absorb bursts while tcpdump is not scheduled.
* ``-s 256``: the headers plus the first bytes of HTTP (request and status lines).
* ``--time-stamp-precision nano``: timestamps at the resolution the analysis joins on.
* ``--immediate-mode`` and ``-U``: each packet is handed over and written as it arrives, so the
  file is complete up to the last packet when tcpdump stops. Without them libpcap hands packets
  over in blocks (up to 1 s late) and a stop discards the block still being filled.
* ``-Z root``: tcpdump otherwise drops to user ``tcpdump`` after opening the device, and that
  change of credentials clears the parent-death signal that ends the capture with the run
  (``localcluster.lifeline``); a capture outliving a killed run would write until the disk fills.

A full disk does not stop tcpdump: libpcap's writes fail silently and tcpdump still counts the
packets as captured. So the runner stops a capture whose disk is full (``disk_full``), and
``stop()`` then cuts the file after its last whole record, so the pcap stays readable, and
reports how many packets it kept.

On SIGTERM tcpdump prints "N packets captured / N packets received by filter / N packets dropped
by kernel"; ``stop()`` parses them into ``<capture>.stats.json`` next to the pcap, which the
runner copies into run.json. When tcpdump is missing the capture fails fast with
``CaptureUnavailable`` naming the Debian package, and the run goes on without packets and says
so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from localcluster.lifeline import die_with_parent

TCPDUMP = "tcpdump"
#: Kernel ring per capture, KiB. At the ~20,000 packets/s per capture point measured with hey
#: (docs/performance.md), with 256-byte snaps, it holds seconds of packets while tcpdump waits
#: for a CPU (16 MiB kept every packet at 2,900 req/s; the margin is for bursts, slower hosts).
KERNEL_BUFFER_KIB = 32768
#: Captured bytes per packet: cooked header (20) + IP and TCP headers with options (≤ 120) and
#: the rest of HTTP's first line ("GET /path HTTP/1.1", "HTTP/1.1 503 Service Unavailable").
SNAPLEN = 256
#: tcpdump writes each packet within milliseconds of its arrival (immediate mode, -U), so a file
#: that has not grown for this long means the ring is drained; longer than a scheduling stall of
#: the capture process on a loaded 2-core machine.
DRAIN_QUIET_S = 0.5
#: A capture whose filter keeps matching (other clients of a real cluster's LB) never goes
#: quiet: stop it anyway after this long.
DRAIN_LIMIT_S = 5.0
#: Free space, in filesystem blocks, under which the disk counts as full: tcpdump (as root)
#: may use the blocks reserved for root, and one block may still hold a partial record.
FULL_DISK_BLOCKS = 2
_PCAP_HEADER_BYTES = 24
_LISTENING = "listening on"
_STATS = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)$")


class CaptureUnavailable(RuntimeError):
    """Packet capture is not possible here (no tcpdump, no root / CAP_NET_RAW, bad filter)."""


@dataclass(frozen=True)
class TcpdumpStats:
    """tcpdump's exit statistics (libpcap's ``pcap_stats``)."""

    captured: int  # packets written to the file
    received_by_filter: int  # packets the kernel's filter accepted, dropped ones included
    kernel_drops: int  # packets the kernel dropped because the ring was full


@dataclass
class CaptureResult:
    file: Path
    packets: int
    kernel_drops: int | None
    error: str | None = None
    received_by_filter: int | None = None
    disk_full: bool = False

    def status_reasons(self) -> list[str]:
        """What keeps this capture from being complete, in words for run.json's reasons."""
        reasons = [self.error] if self.error else []
        if self.kernel_drops:
            seen = self.packets + self.kernel_drops
            reasons.append(
                f"the kernel dropped {self.kernel_drops} of {seen} packets "
                f"({100 * self.kernel_drops / seen:.1f} %): connections may be incomplete"
            )
        return reasons


def tcpdump_argv(output: Path, bpf_filter: str) -> list[str]:
    """The capture command (see the module docstring for why each option)."""
    return [
        TCPDUMP,
        "-i",
        "any",
        "-B",
        str(KERNEL_BUFFER_KIB),
        "-s",
        str(SNAPLEN),
        "--time-stamp-precision",
        "nano",
        "--immediate-mode",
        "-U",
        "-Z",
        "root",
        "-w",
        str(output),
        bpf_filter,
    ]


def parse_tcpdump_stats(stderr: str) -> TcpdumpStats | None:
    """The statistics tcpdump prints on exit; None when any of the three lines is missing
    (killed, crashed, or stopped before it started capturing)."""
    found: dict[str, int] = {}
    for line in stderr.splitlines():
        match = _STATS.match(line.strip())
        if match:
            found[match.group(2)] = int(match.group(1))
    try:
        return TcpdumpStats(
            found["captured"], found["received by filter"], found["dropped by kernel"]
        )
    except KeyError:
        return None


def count_pcap_records(path: Path) -> int:
    """Packets in a (possibly truncated) pcap file, for when tcpdump could not say."""
    # imported here: the record walk loads numba (~0.16 s), and only these rare paths need it
    from analyzer.readers.pcap_formats import scan_pcap

    try:
        data = path.read_bytes()
    except OSError:
        return 0
    return len(scan_pcap(np.frombuffer(data, dtype=np.uint8)).data_start)


def trim_to_whole_records(path: Path) -> int:
    """Cut a pcap after its last whole record (a full disk leaves half a record at the end);
    returns the number of records kept."""
    from analyzer.readers.pcap_formats import scan_pcap

    data = path.read_bytes()
    records = scan_pcap(np.frombuffer(data, dtype=np.uint8))
    if len(records.data_start):
        end = int(records.data_start[-1] + records.caplen[-1])
    else:
        end = min(len(data), _PCAP_HEADER_BYTES)
    os.truncate(path, end)
    return len(records.data_start)


def disk_full(path: Path) -> bool:
    """Whether the filesystem holding ``path`` has no room left for another record."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bfree < FULL_DISK_BLOCKS


def wait_until_quiet(path: Path, quiet_s: float, limit_s: float) -> bool:
    """Wait until ``path`` has not been written for ``quiet_s`` (True) or ``limit_s`` passed."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            idle = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if idle >= quiet_s:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(quiet_s - idle, left))


class CaptureProcess:
    """One tcpdump process: ``start()`` returns once it is listening (``launch()`` then
    ``wait_listening()`` let several start in parallel); ``request_stop()`` lets several drain
    in parallel; ``stop()`` waits, writes the stats file and returns the result."""

    def __init__(self, output: Path, bpf_filter: str, exec_prefix: list[str] | None = None) -> None:
        self.output = output
        self.stats_path = output.with_suffix(".stats.json")
        self._argv = [*(exec_prefix or []), *tcpdump_argv(output, bpf_filter)]
        self._process: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()
        self._drain: threading.Thread | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start tcpdump and return once it is listening."""
        self.launch()
        self.wait_listening(timeout_s)

    def launch(self) -> None:
        """Start tcpdump without waiting for it to listen (``wait_listening``), so that several
        captures open their devices side by side: each takes ~0.1 s before it listens."""
        if shutil.which(TCPDUMP) is None:
            raise CaptureUnavailable(
                "tcpdump is not installed: install the Debian package 'tcpdump' "
                "(scripts/install-system-deps does)"
            )
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(),  # ends with the run, even a SIGKILLed one
        )
        assert self._process.stderr is not None
        self._reader = threading.Thread(
            target=self._read_stderr, args=(self._process.stderr,), daemon=True
        )
        self._reader.start()

    def wait_listening(self, timeout_s: float = 15.0) -> None:
        """Return once the launched tcpdump listens; CaptureUnavailable (with tcpdump's own
        words) when it does not within ``timeout_s``, after stopping it."""
        assert self._process is not None and self._reader is not None  # launch()'s
        self._listening.wait(timeout_s)
        if not any(_LISTENING in line for line in self._stderr):
            self._process.kill()
            self._process.wait()
            self._reader.join()
            said = "".join(self._stderr).strip()[-400:] or f"nothing within {timeout_s:.0f} s"
            raise CaptureUnavailable(
                f"tcpdump did not start capturing to {self.output.name}: {said}"
            )

    def _read_stderr(self, stream: IO[str]) -> None:
        """Keep all of tcpdump's stderr (its exit statistics come last); flag "listening on"."""
        for line in stream:
            self._stderr.append(line)
            if _LISTENING in line:
                self._listening.set()
        self._listening.set()  # it exited: wait_listening() need not wait for its timeout

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def disk_full(self) -> bool:
        return disk_full(self.output)

    def request_stop(self) -> None:
        """Let tcpdump write what the ring still holds, then signal it (in the background)."""
        if self._process is None or self._drain is not None:
            return
        self._drain = threading.Thread(target=self._drain_then_terminate, daemon=True)
        self._drain.start()

    def _drain_then_terminate(self) -> None:
        assert self._process is not None
        wait_until_quiet(self.output, DRAIN_QUIET_S, DRAIN_LIMIT_S)
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> CaptureResult:
        process = self._process
        if process is None:
            return CaptureResult(self.output, 0, None, "never started")
        self.request_stop()
        assert self._drain is not None and self._reader is not None
        self._drain.join()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._reader.join()
        result = self._result(process.returncode)
        if self.disk_full():
            result = self._after_full_disk(result)
        self._write_stats(result)
        return result

    def _after_full_disk(self, result: CaptureResult) -> CaptureResult:
        """The file cut after its last whole record; the packets it kept of those seen."""
        kept = trim_to_whole_records(self.output)
        return CaptureResult(
            self.output,
            kept,
            result.kernel_drops,
            f"the disk filled up: the capture was stopped and kept the first {kept} of "
            f"{result.packets} packets (free space on {self.output.parent}, then run again)",
            result.received_by_filter,
            disk_full=True,
        )

    def _result(self, returncode: int) -> CaptureResult:
        stderr = "".join(self._stderr)
        stats = parse_tcpdump_stats(stderr)
        if stats is None:
            tail = stderr.strip()[-300:] or "no output"
            return CaptureResult(
                self.output,
                count_pcap_records(self.output),
                None,
                f"tcpdump exited with status {returncode} without its packet statistics, "
                f"so kernel drops are unknown ({tail})",
            )
        return CaptureResult(
            self.output, stats.captured, stats.kernel_drops, None, stats.received_by_filter
        )

    def _write_stats(self, result: CaptureResult) -> None:
        stats = {
            "packets": result.packets,
            "kernel_drops": result.kernel_drops,
            "received_by_filter": result.received_by_filter,
            "error": result.error,
            "disk_full": result.disk_full,
        }
        try:
            self.stats_path.write_text(json.dumps(stats))
        except OSError:  # a full disk: the same numbers reach run.json through the runner
            self.stats_path.unlink(missing_ok=True)
