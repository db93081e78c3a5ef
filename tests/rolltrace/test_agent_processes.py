"""``localrun.agent_processes``: the watchdog must watch the agent itself, never a child it forked
for an instant (which shows the agent's command line until it execs, then ends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from localcluster.lifeline import identity
from rolltrace.runner.localrun import agent_processes

# An "agent" that forks a child which keeps the agent's command line (it never execs) and lives.
FORKING_AGENT = """
import os, sys, time
if os.fork() == 0:
    time.sleep(30)
    os._exit(0)
print("forked", flush=True)
time.sleep(30)
"""


def test_an_agent_is_told_from_a_child_it_forked(tmp_path: Path) -> None:
    socket = str(tmp_path / "api.sock")
    argv = [sys.executable, "-c", FORKING_AGENT, "-m", "localcluster.node", "--node", "node-x",
            "--api-socket", socket]  # fmt: skip
    agent = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "forked"
        time.sleep(0.1)  # the child runs (and shows the same command line)
        assert agent_processes(socket) == {"node-x": identity(agent.pid)}
    finally:
        os.killpg(agent.pid, signal.SIGKILL)  # the agent and its child: their own group
        agent.wait()
