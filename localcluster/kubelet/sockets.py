"""Whether a container listens, read from the kernel's socket table rather than from the app.

Ground truth must not depend on the demo app's own lines: a third-party server (Python's
http.server, nginx, gunicorn) writes none. The kernel lists a network namespace's TCP sockets in
``/proc/PID/net/tcp`` and ``tcp6`` (the namespace of process PID), listening sockets first, so the
kubelet reads only that first section and stops at the first socket in another state: cheap even
while thousands of connections sit in TIME_WAIT. Pure functions over the file's text, plus one
reader; the polling lives with the container's runner.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # TCP_LISTEN in the kernel's hexadecimal state column
WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class Listener:
    address: str
    port: int


def _address(hex_address: str) -> str:
    """The kernel prints each 32-bit word of an address in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def parse_listeners(lines: Iterable[str]) -> Iterator[Listener]:
    """The listening sockets at the head of a ``/proc/net/tcp{,6}`` text (header included)."""
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[0] == "sl":
            continue
        if fields[3] != LISTEN:
            return  # the listening section is over
        hex_address, _, hex_port = fields[1].rpartition(":")
        yield Listener(_address(hex_address), int(hex_port, 16))


def serves(listener: Listener, pod_ip: str, ports: frozenset[int], wildcard_ok: bool) -> bool:
    """A listener of this Pod: on its address (or any, in its own namespace), on one of the
    container's declared ports (any port when it declares none)."""
    on_address = listener.address == pod_ip or (wildcard_ok and listener.address in WILDCARDS)
    return on_address and (not ports or listener.port in ports)


def in_namespace(pid: int, netns_path: str | None) -> bool:
    """Whether PID already runs in the Pod's network namespace (``nsenter`` joins it just before
    exec'ing the container's command; until then the table read would be the kubelet's)."""
    if netns_path is None:
        return True
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns_path).st_ino
    except OSError:
        return False


def listening(pid: int, pod_ip: str, ports: frozenset[int], netns_path: str | None) -> bool:
    """Whether the container's process (PID) has a listener of this Pod in its namespace."""
    if not in_namespace(pid, netns_path):
        return False
    for table in ("tcp", "tcp6"):
        try:
            with Path(f"/proc/{pid}/net/{table}").open() as text:
                found = any(
                    serves(s, pod_ip, ports, netns_path is not None) for s in parse_listeners(text)
                )
        except OSError:  # the process is gone, or the family is not configured
            continue
        if found:
            return True
    return False
