"""A local cluster started the way a user starts one (`rolltrace cluster up`), for e2e tests
that then work on it from outside rolltrace's runner (kubectl, hey, tcpdump, `rolltrace watch`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from rolltrace.cli import app


@contextmanager
def cluster_up(root: Path, name: str, *options: str) -> Iterator[Path]:
    """`rolltrace cluster up --name NAME OPTIONS...` with its state under ``root``; yields the
    kubeconfig, and takes the cluster down (and restores the state root) however the test ends."""
    previous = os.environ.get("ROLLTRACE_STATE_DIR")
    os.environ["ROLLTRACE_STATE_DIR"] = str(root / "state")
    kubeconfig = root / "kubeconfig"
    runner = CliRunner()
    up = runner.invoke(
        app, ["cluster", "up", "--name", name, "--kubeconfig", str(kubeconfig), *options]
    )
    try:
        assert up.exit_code == 0, up.output
        yield kubeconfig
    finally:
        runner.invoke(app, ["cluster", "down", "--name", name])
        if previous is None:
            os.environ.pop("ROLLTRACE_STATE_DIR", None)
        else:
            os.environ["ROLLTRACE_STATE_DIR"] = previous
