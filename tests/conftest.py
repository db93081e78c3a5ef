"""Shared fixtures. Capabilities that a test needs are asserted, never silently skipped in CI."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_capabilities(*tools: str, root: bool = False) -> list[str]:
    """Names of what is missing for a test: 'root' and/or executables not on PATH."""
    missing = []
    if root and os.geteuid() != 0:
        missing.append("root (uid 0, for network namespaces and nftables)")
    missing += [f"executable {t!r} on PATH" for t in tools if shutil.which(t) is None]
    return missing


def require(*tools: str, root: bool = False) -> None:
    """Fail (in CI) or skip (on a laptop) with a message that names the missing capability."""
    missing = missing_capabilities(*tools, root=root)
    if not missing:
        return
    message = "missing capability: " + ", ".join(missing)
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def require_root() -> None:
    require("ip", "nft", root=True)
