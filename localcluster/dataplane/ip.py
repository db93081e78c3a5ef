"""The one adapter around iproute2 (``ip``): every namespace, link, address and route the data
plane creates goes through here, so tests can read the exact argv and run it for real.

Command builders are pure (they return argv lists); ``run``/``run_async`` execute them. Commands
address a namespace with ``ip -n NS`` (a plain setns in the ``ip`` process) instead of ``ip netns
exec``, which would also unshare the mount namespace and hide namespaces created inside it from
the host.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence

Argv = list[str]


class CommandError(RuntimeError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(argv)} failed ({returncode}): {stderr.strip()}")


def ip(netns: str | None, *args: str) -> Argv:
    return ["ip", *(["-n", netns] if netns else []), *args]


def netns_add(name: str) -> Argv:
    return ["ip", "netns", "add", name]


def netns_delete(name: str) -> Argv:
    return ["ip", "netns", "delete", name]


def netns_path(name: str) -> str:
    """The bind mount that names a network namespace (as ``ip netns`` makes it)."""
    return f"/run/netns/{name}"


def netns_exec(name: str, *argv: str) -> Argv:
    """A command run in a namespace with the host's mount namespace kept (see module doc)."""
    return ["nsenter", f"--net={netns_path(name)}", "--", *argv]


def sysctl(netns: str, key: str, value: str) -> Argv:
    return netns_exec(netns, "sysctl", "-q", "-w", f"{key}={value}")


def veth_pair(netns: str, name: str, peer: str, peer_netns: str) -> Argv:
    """A veth created inside ``netns`` with its peer created directly inside ``peer_netns``: no
    link ever appears in the host namespace, not even for a moment."""
    return ip(netns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_netns)


def bridge(netns: str, name: str) -> Argv:
    return ip(netns, "link", "add", name, "type", "bridge")


def enslave(netns: str, link: str, master: str) -> Argv:
    return ip(netns, "link", "set", link, "master", master, "up")


def link_up(netns: str, link: str) -> Argv:
    return ip(netns, "link", "set", link, "up")


def addr_add(netns: str, link: str, cidr: str) -> Argv:
    return ip(netns, "addr", "add", cidr, "dev", link)


def route_add(netns: str, dest: str, via: str) -> Argv:
    return ip(netns, "route", "add", dest, "via", via)


def netns_list() -> Argv:
    return ["ip", "netns", "list"]


def netns_pids(name: str) -> Argv:
    return ["ip", "netns", "pids", name]


def run(argv: Sequence[str], *, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def run_all(commands: Sequence[Sequence[str]]) -> None:
    for argv in commands:
        run(argv)


async def run_async(
    argv: Sequence[str], *, check: bool = True, input_text: str | None = None
) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(input_text.encode() if input_text is not None else None)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode or 0, err.decode())
    return out.decode()


def list_netns() -> list[str]:
    """Names only (``ip netns list`` appends ``(id: N)`` to namespaces that have one)."""
    return [line.split()[0] for line in run(netns_list()).splitlines() if line.strip()]
