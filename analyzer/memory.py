"""The analysis process's memory, the one place that talks to the allocators and the kernel
about it (a thin adapter: ctypes onto glibc and ``prctl``, Arrow's pool).

- ``release_freed_memory()`` hands back what a stage freed before the next one allocates.
- ``small_pages()`` keeps the analysis off transparent huge pages while it runs.

Both do nothing where the platform has no such call (musl, macOS).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa

_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42  # linux/prctl.h, since Linux 3.15


def release_freed_memory() -> None:
    """Hand the pages the allocators kept after frees back to the system.

    Text columns live in Arrow buffers, whose allocator (mimalloc) keeps freed pages for reuse;
    glibc's malloc keeps the freed arrays below its mmap threshold (32 MiB at most) in its heap.
    What a stage dropped would otherwise stay in the process's memory beside what the next
    stage allocates: at ten million requests, gigabytes of it."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def small_pages() -> Iterator[None]:
    """No transparent huge pages for this process while the block runs (``PR_SET_THP_DISABLE``),
    then as it was.

    mimalloc and numpy ask for huge pages (``MADV_HUGEPAGE``) for their large blocks, and the
    analysis frees and takes memory all the time, handing it back between stages: each first
    touch of a huge page zeroes 2 MiB, mostly for the few kilobytes used before it goes back.
    In the 1M-request bench that zeroing was 13.6 % of all cycles. With 4 KiB pages there
    are more faults, each far cheaper: 0.3 s less CPU in all, and a lower peak."""
    prctl = _PRCTL
    if prctl is None or prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0) != 0:
        yield  # no prctl, or the process already has them off (or it cannot tell)
        return
    disabled = prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if disabled:
            prctl(_PR_SET_THP_DISABLE, 0, 0, 0, 0)


def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of glibc by name; None off Linux or where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    function: Callable[..., int] | None = getattr(ctypes.CDLL(None), name, None)
    return function


_MALLOC_TRIM = _libc_function("malloc_trim")
_PRCTL = _libc_function("prctl")
