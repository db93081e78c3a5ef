"""Bringing up the real (kernel) nodes of a local cluster and taking them down again.

``start_real_nodes`` builds the topology, starts one node agent per node and the LB, each as a
process inside its namespace, and returns once every node is Ready in the API. The handle's
``stop()`` ends the processes and removes every namespace, which also removes every link,
address, route and nft table inside them. ``cleanup(name)`` does the same from the name alone,
for ``rolltrace cluster down`` after the cluster process was killed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.apiclient import ApiClient, ApiError
from localcluster.config import ClusterConfig
from localcluster.dataplane import ip, topology
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.topology import Leftovers, list_leftovers
from localcluster.lifeline import die_with_parent

REQUIRED_TOOLS = ("ip", "nft", "nsenter", "conntrack")
READY_TIMEOUT_S = 30.0
#: How often the nodes are listed while the agents start: the cluster is up only once every node
#: is Ready, so a coarse look is dead time in every run; a list of a few nodes is cheap.
READY_POLL_S = 0.05
STOP_GRACE_S = 5.0


class DataplaneUnavailable(RuntimeError):
    """What the machine lacks for a kernel data plane, named exactly."""


def missing_prerequisites() -> list[str]:
    missing = []
    if sys.platform != "linux":
        missing.append("Linux (network namespaces)")
    elif os.geteuid() != 0:
        missing.append("root (uid 0, or CAP_NET_ADMIN + CAP_SYS_ADMIN) for namespaces and nftables")
    missing += [
        f"the `{tool}` executable on PATH" for tool in REQUIRED_TOOLS if not shutil.which(tool)
    ]
    return missing


def check_prerequisites() -> None:
    missing = missing_prerequisites()
    if missing:
        raise DataplaneUnavailable("the local cluster's data plane needs: " + "; ".join(missing))


def check_no_leftovers(name: str) -> None:
    found = list_leftovers(name)
    if found:
        raise DataplaneUnavailable(
            f"leftovers of an earlier cluster {name!r} exist; remove them with "
            f"`rolltrace cluster down` (or localcluster.dataplane.cleanup({name!r})):\n"
            + found.describe()
        )


@dataclass
class RealNodes:
    plan: AddressPlan
    logs_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stopped: bool = False

    async def stop(self) -> Leftovers:
        """Idempotent. SIGTERM lets agents delete their tables and close the truth file."""
        if self._stopped:
            return Leftovers()
        self._stopped = True
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.processes.values():
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return await asyncio.to_thread(topology.cleanup, self.plan.prefix)


def _agent_argv(netns: str, module: str, *args: str) -> list[str]:
    return ip.netns_exec(netns, sys.executable, "-m", module, *args)


async def _wait_ready(client: ApiClient, nodes: RealNodes, timeout_s: float) -> None:
    wanted = {n.name for n in nodes.plan.nodes}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in nodes.processes.items():
            if proc.poll() is not None:
                log = nodes.logs_dir / f"{name}.log"
                tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} during start-up; {log} ends with:\n"
                    + "\n".join(tail)
                )
        try:
            items, _ = await client.list("nodes")
        except (ApiError, OSError):
            items = []
        ready = {
            n["metadata"]["name"]
            for n in items
            for c in (n.get("status") or {}).get("conditions") or []
            if c.get("type") == "Ready" and c.get("status") == "True"
        }
        if wanted <= ready:
            return
        await asyncio.sleep(READY_POLL_S)
    raise TimeoutError(f"nodes not Ready after {timeout_s} s: {sorted(wanted)}")


async def start_real_nodes(
    api_socket_path: str | Path,
    token: str,
    config: ClusterConfig,
    state_dir: str | Path,
    truth_path: str | Path | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> RealNodes:
    """Raises DataplaneUnavailable (naming what is missing, or the leftovers to remove first)."""
    check_prerequisites()
    check_no_leftovers(config.name)
    from localcluster.apiserver.httpclient import HttpClient

    state = Path(state_dir)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    config_path = state / "dataplane.json"
    config_path.write_text(config.model_dump_json())
    truth = str(truth_path if truth_path is not None else state / "truth.jsonl")
    common = ["--api-socket", str(api_socket_path), "--token", token]
    common += ["--config", str(config_path), "--truth", truth]
    plan = AddressPlan(config)
    await asyncio.to_thread(topology.build, plan)
    nodes = RealNodes(plan, state / "logs")
    try:
        launches = [(plan.lb_netns, "lb", "localcluster.lb", [*common, "--state-dir", str(state)])]
        launches += [
            (
                n.netns,
                n.name,
                "localcluster.node",
                ["--node", n.name, "--logs-dir", str(state / "logs"), *common],
            )
            for n in plan.nodes
        ]
        for netns, label, module, args in launches:
            with open(state / "logs" / f"{label}.log", "ab") as log:
                nodes.processes[label] = subprocess.Popen(
                    _agent_argv(netns, module, *args),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches the cluster process, which stops us
                    # and a killed cluster process stops us too (we then remove our tables)
                    preexec_fn=die_with_parent(),
                )
        async with HttpClient(
            "http://localhost", token, unix_socket=str(api_socket_path)
        ) as client:
            await _wait_ready(client, nodes, ready_timeout_s)
    except BaseException:
        await nodes.stop()
        raise
    return nodes


def cleanup(name: str) -> Leftovers:
    """Remove everything of cluster ``name`` (processes, namespaces and all inside them)."""
    return topology.cleanup(name)
