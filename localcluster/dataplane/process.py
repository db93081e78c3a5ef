"""The command line and lifecycle shared by the agents that run as processes inside the
cluster's namespaces (node agents, the LB): arguments, the API client over the unix socket,
and a clean exit on SIGTERM/SIGINT so tables, listeners and the truth file are closed (then
without the interpreter's teardown, which the cluster's stop would wait for). It sits beside
``start_real_nodes``, which writes the very command lines parsed here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from localcluster.config import ClusterConfig
from localcluster.lifeline import exit_without_teardown


def parse_args(description: str, needs_node: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if needs_node:
        parser.add_argument("--node", required=True)
    parser.add_argument("--api-socket", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--config", required=True, help="ClusterConfig as JSON")
    parser.add_argument("--truth", default=None, help="truth.jsonl to append to")
    if needs_node:
        parser.add_argument("--logs-dir", default=None, help="where container logs go")
    else:
        parser.add_argument("--state-dir", default=None, help="the cluster's state directory")
    return parser.parse_args()


async def _serve(
    args: argparse.Namespace, body: Callable[..., Awaitable[None]], needs_node: bool
) -> None:
    from localcluster.apiserver.httpclient import HttpClient

    config = ClusterConfig.model_validate_json(Path(args.config).read_text())
    loop = asyncio.get_running_loop()
    task: asyncio.Task[None]
    async with HttpClient("http://localhost", args.token, unix_socket=args.api_socket) as client:
        call: Any = (
            body(client, args.node, config, args.truth, args.logs_dir)
            if needs_node
            else body(client, config, args.truth, args.state_dir)
        )
        task = asyncio.ensure_future(call)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task


def agent_main(description: str, body: Callable[..., Awaitable[None]], needs_node: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(_serve(parse_args(description, needs_node), body, needs_node))
    exit_without_teardown(0)
