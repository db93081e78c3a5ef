"""The nginx child of the ingress controller: config test, start, reload, stop.

nginx runs in the foreground (``daemon off``) as the controller's child, so it shares the
container's process group (the kubelet's SIGKILL of the group takes it and its workers) and
gets SIGTERM (nginx's fast shutdown) from the kernel if the controller dies first
(``die_with_parent``). ``-e`` points even nginx's start-up error log into the Pod's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess

from localcluster.ingress.nginxconf import NginxPaths
from localcluster.lifeline import die_with_parent

NGINX = "nginx"
STOP_TIMEOUT_S = 5.0  # a graceful quit waits for requests in flight; then SIGTERM, SIGKILL


class NginxError(RuntimeError):
    """nginx refused a configuration or a signal; the message is its own output."""


class Nginx:
    def __init__(self, paths: NginxPaths) -> None:
        self.paths = paths
        self.process: asyncio.subprocess.Process | None = None

    def _argv(self, *extra: str) -> list[str]:
        paths = self.paths
        return [NGINX, "-p", str(paths.root), "-e", str(paths.error_log), *extra]

    def prepare(self) -> None:
        self.paths.temp.mkdir(parents=True, exist_ok=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def _run(self, *extra: str) -> None:
        done = await asyncio.create_subprocess_exec(
            *self._argv(*extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        output, _ = await done.communicate()
        if done.returncode != 0:
            raise NginxError(output.decode(errors="replace").strip())

    async def test(self, conf_path: str) -> None:
        """``nginx -t``: a configuration nginx would refuse is never installed."""
        await self._run("-t", "-q", "-c", conf_path)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._argv("-c", str(self.paths.conf)),
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )

    async def reload(self) -> None:
        """``nginx -s reload``: new workers with the new configuration; old ones finish the
        requests they hold, then exit."""
        await self._run("-c", str(self.paths.conf), "-s", "reload")

    async def stop(self) -> None:
        """Graceful quit (SIGQUIT), then SIGTERM and SIGKILL if it takes too long."""
        process = self.process
        if process is None:
            return
        for signum in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            if process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
