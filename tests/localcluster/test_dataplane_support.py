"""Shared by the data-plane tests (no tests here): a unique cluster name per test and the
assertion that a test left no namespace, host link, host nft table or process behind."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require

_counter = itertools.count()


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _host_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def _host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def descendants() -> set[int]:
    """Live processes started by this test process, directly or not (read from /proc, so the
    check itself starts none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture
def cluster_name() -> Iterator[str]:
    require("ip", "nft", "nsenter", root=True)
    name = f"t{os.getpid() % 10000}{next(_counter)}"
    before = (netns_names(), _host_tables(), _host_links(), descendants())
    yield name
    from localcluster.dataplane.topology import cleanup

    leftover_ns = sorted(ns for ns in netns_names() - before[0] if ns.startswith(f"{name}-"))
    leftover_procs = descendants() - before[3]
    cleanup(name)
    assert leftover_ns == [], f"namespaces left behind: {leftover_ns}"
    assert leftover_procs == set(), f"processes left behind: {leftover_procs}"
    assert _host_tables() == before[1], "nft tables changed in the host namespace"
    assert _host_links() == before[2], "links changed in the host namespace"
