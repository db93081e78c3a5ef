"""The analysis process's memory adapter: huge pages off while an analysis runs, then as before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from analyzer.memory import release_freed_memory, small_pages

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="prctl and /proc/self/status are Linux's"
)


def huge_pages_allowed() -> bool:
    """What the kernel says of this process (``THP_enabled`` in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1] == "1"
    raise AssertionError("this kernel reports no THP_enabled (Linux 5.0 and later do)")


def test_small_pages_turns_huge_pages_off_for_the_block_only() -> None:
    before = huge_pages_allowed()
    with small_pages():
        assert not huge_pages_allowed()
        release_freed_memory()  # handing memory back works the same inside
    assert huge_pages_allowed() == before


def test_small_pages_leaves_a_process_that_had_them_off_as_it_was() -> None:
    with small_pages():
        with small_pages():
            assert not huge_pages_allowed()
        assert not huge_pages_allowed()  # the inner block did not turn them back on
