"""Packet capture with scapy's ``AsyncSniffer``, streamed to a pcap file, in its own process.

A capture runs where the packets are: in the local cluster's client namespace (what clients
see, through the LB) and in each node namespace (the Pod-facing side, after the NAT, where the
backend Pod's IP is visible). A process cannot sniff another network namespace, so each capture
is a small subprocess started behind an argv prefix (``ip netns exec NS``); on a real cluster
the prefix is empty and the capture runs on this machine.

Packets go to disk as they arrive (``PcapWriter``, never held in memory). libpcap's ``any``
pseudo-interface is used so that Pod veths that appear during the run are covered; it yields
Linux cooked (SLL) frames, which ``analyzer.read_pcap`` reads. On exit the capture writes a small
JSON next to the pcap with the packet count and the kernel's drop count, which the runner puts
in run.json. Without CAP_NET_RAW the capture fails fast with ``CaptureUnavailable``, and the
run goes on without packets and says so.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_READY_MARK = "capture-ready"


class CaptureUnavailable(RuntimeError):
    """Packet capture is not permitted here (no root / CAP_NET_RAW, or no libpcap)."""


@dataclass
class CaptureResult:
    file: Path
    packets: int
    kernel_drops: int | None
    error: str | None = None


class CaptureProcess:
    """One capture subprocess: ``start()`` returns once the sniffer is listening."""

    def __init__(self, output: Path, bpf_filter: str, exec_prefix: list[str] | None = None) -> None:
        self.output = output
        self.stats_path = output.with_suffix(".stats.json")
        self._argv = [
            *(exec_prefix or []),
            sys.executable,
            "-m",
            "rolltrace.capture",
            "--output",
            str(output),
            "--filter",
            bpf_filter,
        ]
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            self._argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        ready = threading.Event()
        stdout = self._process.stdout
        assert stdout is not None

        def watch_ready() -> None:
            for line in stdout:
                if line.strip() == _READY_MARK:
                    ready.set()
                    return

        threading.Thread(target=watch_ready, daemon=True).start()
        if not ready.wait(timeout_s):
            self._process.kill()
            _, err = self._process.communicate(timeout=5)
            raise CaptureUnavailable(
                f"capture to {self.output.name} did not start: {err.strip()[-400:] or 'no output'}"
            )

    def request_stop(self) -> None:
        """Signal the capture to finish (several can drain in parallel before ``stop``)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> CaptureResult:
        process = self._process
        if process is None:
            return CaptureResult(self.output, 0, None, "never started")
        self.request_stop()
        try:
            _, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        try:
            stats = json.loads(self.stats_path.read_text())
        except (OSError, json.JSONDecodeError):
            return CaptureResult(self.output, 0, None, (err or "no statistics").strip()[-400:])
        return CaptureResult(self.output, int(stats["packets"]), stats.get("kernel_drops"))


class _PcapStat(ctypes.Structure):
    _fields_ = [
        ("ps_recv", ctypes.c_uint),
        ("ps_drop", ctypes.c_uint),
        ("ps_ifdrop", ctypes.c_uint),
    ]


def _kernel_drops(sock: Any) -> int | None:
    """Packets the kernel dropped for this capture (libpcap's pcap_stats), when available."""
    try:
        libpcap = ctypes.CDLL("libpcap.so.0.8")
        stat = _PcapStat()
        handle = sock.pcap_fd.pcap
        if libpcap.pcap_stats(handle, ctypes.byref(stat)) != 0:
            return None
        return int(stat.ps_drop)
    except (OSError, AttributeError):
        return None


def _run(output: Path, bpf_filter: str, interface: str) -> int:
    from scapy.all import AsyncSniffer, PcapWriter, conf

    conf.use_pcap = True
    try:
        sock = conf.L2listen(iface=interface, filter=bpf_filter)
    except Exception as exc:  # permission or libpcap problems: say exactly which
        print(f"cannot open capture on {interface!r}: {exc}", file=sys.stderr)
        return 2
    writer = PcapWriter(str(output), sync=False, nano=True)
    count = [0]

    def write(packet: Any) -> None:
        writer.write(packet)
        count[0] += 1

    sniffer = AsyncSniffer(opened_socket=sock, prn=write, store=False)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    sniffer.start()
    time.sleep(0.2)  # the sniffer thread is inside its receive loop once this passes
    print(_READY_MARK, flush=True)
    stopping.wait()
    # libpcap hands packets over in batches; let the last batch arrive before stopping.
    time.sleep(0.5)
    drops = _kernel_drops(sock)
    sniffer.stop()
    writer.close()
    output.with_suffix(".stats.json").write_text(
        json.dumps({"packets": count[0], "kernel_drops": drops})
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rolltrace capture process (internal)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--filter", required=True)
    parser.add_argument("--interface", default="any")
    args = parser.parse_args(argv)
    return _run(args.output, args.filter, args.interface)


if __name__ == "__main__":
    sys.exit(main())
