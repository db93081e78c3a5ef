"""Ground truth of where each connection went: every NAT decision the kernel takes.

The LB's ``numgen random`` DNAT and each node's kube-proxy DNAT choose a target per connection,
and nothing else logs the choice. One ``conntrack -E -e NEW -o timestamp`` per namespace (the
LB's and each node's) reports every new flow with its original and reply tuples; a flow whose
reply source differs from its original destination was DNATed, and the reply source is the
target (a node's NodePort under the LB, a Pod IP under a node or an IP-mode LB). Each becomes a
``nat-new`` truth line. A SYN the target refused still passes the NAT and is recorded; a SYN a
node drops (no local endpoint) is never confirmed, so only the LB's line, naming the node, shows.

The cluster process starts the recorder after the nodes (their namespaces must exist) and stops
it first; a recorder left by a killed cluster process lives in the namespaces, which
``rolltrace cluster down`` empties of processes before removing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from localcluster.config import ClusterConfig
from localcluster.dataplane import ip
from localcluster.dataplane.addressing import AddressPlan
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)

NETLINK_BUFFER_BYTES = 16 * 1024 * 1024  # room for bursts of thousands of new flows per second
STOP_GRACE_S = 2.0

_EVENT = re.compile(
    r"^\[(?P<sec>\d+)\.(?P<usec>\d{1,9})\]\s+\[NEW\]\s+tcp\s+\d+\s+\d+\s+\S+\s+"
    r"src=(?P<src>\S+) dst=(?P<dst>\S+) sport=(?P<sport>\d+) dport=(?P<dport>\d+)\s+"
    r"(?:\[UNREPLIED\]\s+)?"
    r"src=(?P<rsrc>\S+) dst=(?P<rdst>\S+) sport=(?P<rsport>\d+) dport=(?P<rdport>\d+)"
)


@dataclass(frozen=True)
class NatEntry:
    """One new DNATed flow: the client-side tuple and the target the kernel chose."""

    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    target_ip: str
    target_port: int
    peer_ip: str  # the client as the target sees it (the reply's destination: after any SNAT)
    peer_port: int


def parse_event(line: str) -> NatEntry | None:
    """A ``conntrack -E -o timestamp`` line as a NatEntry; None for other lines and for flows
    without DNAT (probes, health checks, traffic a node only forwards)."""
    match = _EVENT.match(line.strip())
    if match is None:
        return None
    g = match.groupdict()
    if (g["rsrc"], g["rsport"]) == (g["dst"], g["dport"]):
        return None
    return NatEntry(
        ts_ns=int(g["sec"]) * 1_000_000_000 + int(g["usec"].ljust(9, "0")),
        src=g["src"],
        sport=int(g["sport"]),
        dst=g["dst"],
        dport=int(g["dport"]),
        target_ip=g["rsrc"],
        target_port=int(g["rsport"]),
        peer_ip=g["rdst"],
        peer_port=int(g["rdport"]),
    )


def record_entry(truth: TruthWriter, entry: NatEntry, node: str | None) -> None:
    """One ``nat-new`` truth line; ``node`` names the node whose rules chose (None: the LB).
    ``ts_ns`` is the kernel event's time, not the write's."""
    truth.record_at(
        entry.ts_ns,
        "nat-new",
        node=node,
        src=entry.src,
        sport=entry.sport,
        dst=entry.dst,
        dport=entry.dport,
        target_ip=entry.target_ip,
        target_port=entry.target_port,
        peer_ip=entry.peer_ip,
        peer_port=entry.peer_port,
    )


def _is_chatter(line: str) -> bool:
    """conntrack's notices on stderr: the buffer size it set, the count it showed at exit."""
    return line.startswith("NOTICE") or "flow events have been shown" in line


class NatRecorder:
    """One conntrack event listener per namespace, each feeding truth.jsonl until stopped."""

    def __init__(self, truth: TruthWriter) -> None:
        self._truth = truth
        self._processes: list[asyncio.subprocess.Process] = []
        self._readers: list[asyncio.Task[None]] = []

    async def watch(self, netns: str, node: str | None) -> None:
        argv = ip.netns_exec(
            netns,
            "conntrack", "-E", "-e", "NEW", "-p", "tcp", "-o", "timestamp",
            "-b", str(NETLINK_BUFFER_BYTES),
        )  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the cluster process, which stops us
        )
        self._processes.append(process)
        self._readers.append(asyncio.get_running_loop().create_task(self._read(process, node)))

    async def _read(self, process: asyncio.subprocess.Process, node: str | None) -> None:
        assert process.stdout is not None and process.stderr is not None
        async for raw in process.stdout:
            entry = parse_event(raw.decode(errors="replace"))
            if entry is not None:
                record_entry(self._truth, entry, node)
        errors = (await process.stderr.read()).decode(errors="replace").strip()
        lost = [line for line in errors.splitlines() if not _is_chatter(line)]
        if lost:  # e.g. ENOBUFS: events were dropped, and truth must say it is incomplete
            self._truth.record("nat-recorder-error", node=node, message="; ".join(lost)[:500])

    async def stop(self) -> None:
        """Idempotent: SIGTERM each listener (it flushes and exits), read what is left."""
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, STOP_GRACE_S)
        self._processes, self._readers = [], []
        self._truth.close()


async def start_nat_recorder(config: ClusterConfig, state_dir: str | Path) -> NatRecorder:
    """Listen in the LB's namespace and every node's; truth goes where the agents' goes."""
    plan = AddressPlan(config)
    recorder = NatRecorder(TruthWriter(Path(state_dir) / "truth.jsonl", "conntrack"))
    try:
        await recorder.watch(plan.lb_netns, None)
        for node in plan.nodes:
            await recorder.watch(node.netns, node.name)
    except BaseException:
        await recorder.stop()
        raise
    return recorder
