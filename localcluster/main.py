"""The local cluster process: API server, controllers and nodes, until SIGTERM/SIGINT.

``python -m localcluster.main --config cluster.json --state-dir DIR [--kubeconfig PATH]``.
`rolltrace cluster up` starts it in the background and waits for ``state.json`` to say
``running``; `rolltrace cluster down` sends SIGTERM. Everything started here is stopped here, in
reverse order, and the state directory keeps only the log once the process has exited.
``--owner`` records the run that started the cluster for itself (``state.json``'s ``owner``), so
that a later run can tell a cluster in use from one whose run was killed.

Test-only fault hook: with ``ROLLTRACE_FAULT=apiserver:<after_s>`` in the environment, SIGUSR1
stops the API server while everything else keeps running (the runner sends it, timed from its
load's first requests; docs/troubleshooting.md#fault-injection). Without that variable SIGUSR1 is not
handled here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from localcluster.apiserver import ApiServer
from localcluster.config import ClusterConfig
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.apiendpoint import api_endpoint, listen_in_netns
from localcluster.lifeline import exit_without_teardown
from localcluster.state import (
    IN_NETWORK_KUBECONFIG_FILE,
    KUBECONFIG_FILE,
    SOCKET_FILE,
    STATE_FILE,
    ClusterState,
    is_rolltrace_kubeconfig,
    write_state,
)

log = logging.getLogger("localcluster")
FAULT_ENV = "ROLLTRACE_FAULT"


class Stoppable(Protocol):
    async def stop(self) -> Any: ...


def service_cidr(address_range: str) -> str:
    """Service ClusterIPs come from the upper half of the infrastructure half of the cluster's
    range (the data plane's address plan uses the lower /24s of that half and the whole upper
    half of the range for Pod CIDRs), so they never collide with node, LB or Pod addresses."""
    infrastructure, _pods = ipaddress.ip_network(address_range).subnets(prefixlen_diff=1)
    _used, services = infrastructure.subnets(prefixlen_diff=1)
    return str(services)


def load_config(path: Path | None) -> ClusterConfig:
    if path is None:
        return ClusterConfig()
    return ClusterConfig.model_validate(yaml.safe_load(path.read_text()) or {})


async def _start_optional(
    what: str, starter: Callable[[], Awaitable[Stoppable]] | None
) -> Stoppable | None:
    if starter is None:
        log.warning("%s: not available in this build; continuing without", what)
        return None
    return await starter()


def _optional_entry_point(module: str, function: str) -> Callable[..., Awaitable[Stoppable]] | None:
    """Components built alongside this one are imported lazily, so the API server runs (and
    its tests pass) while they are absent or broken."""
    try:
        entry_point = getattr(importlib.import_module(module), function, None)
    except ImportError:
        log.exception("importing %s failed", module)
        return None
    return entry_point if callable(entry_point) else None


def in_network_endpoint(config: ClusterConfig) -> tuple[str, int] | None:
    """Where the API is published inside the emulated network (real nodes only: virtual
    nodes have no network), or None."""
    if config.virtual or not config.api_in_network:
        return None
    return api_endpoint(AddressPlan(config))


async def _publish_in_network(
    server: ApiServer, config: ClusterConfig, state: Path, context: str
) -> Stoppable:
    """Listen in the LB namespace (built with the nodes) and write the kubeconfig for it."""
    host, port = in_network_endpoint(config) or ("", 0)
    sock = await asyncio.to_thread(listen_in_netns, AddressPlan(config).lb_netns, host, port)
    site = await server.add_listener(sock)
    server.write_kubeconfig(
        state / IN_NETWORK_KUBECONFIG_FILE, context=context, server=f"https://{host}:{port}"
    )
    return site


def _starters(
    server: ApiServer, config: ClusterConfig, state: Path
) -> list[tuple[str, Callable[[], Awaitable[Stoppable]] | None]]:
    controllers = _optional_entry_point("localcluster.controllers", "start_controllers")
    if config.virtual:
        nodes = _optional_entry_point("localcluster.virtualnode", "start_virtual_nodes")
        node_args: tuple[Any, ...] = (server.client(), config)
    else:
        nodes = _optional_entry_point("localcluster.dataplane", "start_real_nodes")
        node_args = (str(server.unix_socket), server.token, config, state)
    starters: list[tuple[str, Callable[[], Awaitable[Stoppable]] | None]] = [
        (
            "controllers",
            None if controllers is None else lambda: controllers(server.client(), config),
        ),
        ("nodes", None if nodes is None else lambda: nodes(*node_args)),
    ]
    if not config.virtual:  # after the nodes, whose namespaces it listens in; stopped first
        recorder = _optional_entry_point("localcluster.dataplane.conntrack", "start_nat_recorder")
        starters.append(
            ("NAT recorder", None if recorder is None else lambda: recorder(config, state))
        )
    if in_network_endpoint(config) is not None:  # after the nodes, which build the network
        context = f"rolltrace-{config.name}"
        starters.append(
            ("API endpoint in the network",
             lambda: _publish_in_network(server, config, state, context)),
        )  # fmt: skip
    return starters


def _arm_apiserver_fault(server: ApiServer) -> None:
    """The test-only fault hook (module docstring): SIGUSR1 stops the API server alone."""
    if not os.environ.get(FAULT_ENV, "").startswith("apiserver:"):
        return

    stopping: list[asyncio.Task[None]] = []  # a reference keeps the task from being collected

    def stop_server() -> None:
        log.warning("fault injection (%s): stopping the API server", FAULT_ENV)
        stopping.append(asyncio.ensure_future(server.stop()))

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop_server)


async def run_cluster(
    config: ClusterConfig,
    state: Path,
    kubeconfig: Path,
    stop: asyncio.Event,
    owner: str = "",
) -> None:
    context = f"rolltrace-{config.name}"
    if kubeconfig.exists() and not is_rolltrace_kubeconfig(kubeconfig):
        raise SystemExit(f"refusing to overwrite {kubeconfig}: it is not a rolltrace kubeconfig")
    in_network = in_network_endpoint(config)
    server = ApiServer(
        unix_socket=str(state / SOCKET_FILE),
        service_cidr=service_cidr(config.address_range),
        extra_addresses=(in_network[0],) if in_network else (),
    )
    record = ClusterState(
        name=config.name,
        pid=os.getpid(),
        phase="starting",
        api_socket=str(state / SOCKET_FILE),
        kubeconfig=str(kubeconfig),
        virtual=config.virtual,
        nodes=config.nodes,
        owner=owner,
    )
    if in_network is not None:  # published before the phase says running
        record.api_in_network_url = f"https://{in_network[0]}:{in_network[1]}"
        record.kubeconfig_in_network = str(state / IN_NETWORK_KUBECONFIG_FILE)
    started: list[tuple[str, Stoppable]] = []
    await server.start()
    try:
        server.write_kubeconfig(kubeconfig, context=context)
        record.url, record.token = server.url, server.token
        write_state(state, record)
        log.info("API server on %s and %s", server.url, server.unix_socket)
        for what, starter in _starters(server, config, state):
            handle = await _start_optional(what, starter)
            if handle is not None:
                started.append((what, handle))
                log.info("%s started", what)
        record.phase = "running"
        write_state(state, record)
        _arm_apiserver_fault(server)
        await stop.wait()
        log.info("stopping")
        record.phase = "stopping"
        write_state(state, record)
    except BaseException as exc:
        record.phase, record.error = "failed", f"{type(exc).__name__}: {exc}"
        write_state(state, record)
        raise
    finally:
        for what, handle in reversed(started):
            try:
                await handle.stop()
            except Exception:
                log.exception("stopping %s failed", what)
            else:
                log.info("%s stopped", what)
        await server.stop()
        if is_rolltrace_kubeconfig(kubeconfig):
            kubeconfig.unlink(missing_ok=True)
        (state / IN_NETWORK_KUBECONFIG_FILE).unlink(missing_ok=True)
        (state / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.main", description=__doc__)
    parser.add_argument("--config", type=Path, help="ClusterConfig as JSON or YAML")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--kubeconfig", type=Path, help=f"default: <state-dir>/{KUBECONFIG_FILE}")
    parser.add_argument(
        "--owner", default="", help="identity (pid:start time) of the run that owns this cluster"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_config(args.config)
    state = args.state_dir
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    kubeconfig = args.kubeconfig or state / KUBECONFIG_FILE

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_cluster(config, state, kubeconfig, stop, args.owner)

    try:
        asyncio.run(run())
    except SystemExit as exc:
        if isinstance(exc.code, str):
            log.error("%s", exc.code)
            return 1
        raise
    except Exception:
        log.exception("the cluster failed")
        return 1
    with contextlib.suppress(OSError):
        (state / SOCKET_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    exit_without_teardown(main())  # `cluster down` and every run's end wait for this exit
