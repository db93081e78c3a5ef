"""What the two nginx-based hops of the local cluster share: the ingress controller's nginx
(``localcluster.ingress``) and the L7 load balancer (``localcluster.lb.l7``).

- ``LOG_FORMAT``: the JSON access-log format both write, the one the analyzer's hop-log reader
  parses (``analyzer.readers.accesslog.ROLLTRACE_LOG_FORMAT``; the rooms do not import each
  other, so a test checks that the two texts are the same).
- ``NginxPaths``: every file one nginx writes (conf, pid, logs, temp files) under one root.
- ``main_context``: the top of an nginx.conf (foreground, one worker, pid, logs, temp paths).
- ``Nginx``: the nginx child process: config test, start, reload, graceful stop.

nginx runs in the foreground (``daemon off``) as its controller's child, so it shares the
controller's process group (a SIGKILL of the group takes it and its workers) and gets SIGTERM
(nginx's fast shutdown) from the kernel if the controller dies first (``die_with_parent``).
``-e`` points even nginx's start-up error log under the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localcluster.lifeline import die_with_parent

NGINX = "nginx"
STOP_TIMEOUT_S = 5.0  # a graceful quit waits for requests in flight; then SIGTERM, SIGKILL
PID_FILE_WAIT_S = 5.0  # nginx writes its pid file within milliseconds of starting
RELOAD_WAIT_S = 5.0  # a reload's new workers start within milliseconds
WORKER_TITLE = b"nginx: worker process"  # the process titles nginx sets (ngx_setproctitle)
SHUTTING_DOWN = b"is shutting down"
# One worker: the local cluster runs on a couple of cores shared with every Pod (ingress-nginx
# and cloud LBs use one per core).
WORKER_PROCESSES = 1
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# The access log format: one JSON object per line; analyzer readers parse exactly these names.
LOG_FORMAT = """log_format rolltrace escape=json '{"msec":$msec,"remote_addr":"$remote_addr","remote_port":"$remote_port","request":"$request","status":$status,"request_time":$request_time,"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status","upstream_connect_time":"$upstream_connect_time","upstream_header_time":"$upstream_header_time","upstream_response_time":"$upstream_response_time","connection":$connection,"connection_requests":$connection_requests,"request_id":"$request_id","host":"$host"}';"""


def _serving_workers(master: int) -> list[int]:
    """The master's workers that still accept (not those whose title says they are shutting
    down), read from /proc (the master's own children list needs CONFIG_PROC_CHILDREN)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            title = (stat.parent / "cmdline").read_bytes() if ppid == master else b""
        except (OSError, IndexError, ValueError):
            continue
        if title.startswith(WORKER_TITLE) and SHUTTING_DOWN not in title:
            found.append(int(stat.parent.name))
    return found


class NginxError(RuntimeError):
    """nginx refused a configuration or a signal; the message is its own output."""


@dataclass(frozen=True)
class NginxPaths:
    """Where one nginx keeps its files: all under ``root``, except the access log when
    ``access_log_path`` puts it elsewhere (the L7 LB writes it where the run collects hop logs)."""

    root: Path
    access_log_path: Path | None = None

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def access_log(self) -> Path:
        return self.access_log_path or self.root / "access.log"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"


def seconds(value: float) -> str:
    """An nginx time in whole milliseconds (nginx takes no fractions of a second)."""
    return f"{int(value * 1000)}ms"


def main_context(
    paths: NginxPaths, worker_connections: int, extra: Sequence[str] = ()
) -> list[str]:
    """nginx.conf up to and including ``http {`` with the access log; ``extra`` directives go
    in the main context. ``user root``: the files live under the cluster's 0700 state
    directory, which nginx's default worker user could not enter."""
    return [
        "daemon off;",
        "user root;",
        f"worker_processes {WORKER_PROCESSES};",
        f"pid {paths.pid};",
        f"error_log {paths.error_log} notice;",
        *extra,
        f"events {{ worker_connections {worker_connections}; }}",
        "http {",
        f"    {LOG_FORMAT}",
        f"    access_log {paths.access_log} rolltrace;",
        *(f"    {kind}_temp_path {paths.temp / kind};" for kind in TEMP_KINDS),
    ]


def keepalive_directives(pool: int, idle_timeout_s: float, requests: int) -> list[str]:
    """The lines of an ``upstream`` block that keep a pool of idle connections to its servers:
    at most ``pool`` per worker, each closed after ``idle_timeout_s`` idle or ``requests``
    requests. The pool is only used with ``proxy_http_version 1.1`` and an empty
    ``Connection`` header, which the caller's ``http`` context sets."""
    return [
        f"        keepalive {pool};",
        f"        keepalive_timeout {seconds(idle_timeout_s)};",
        f"        keepalive_requests {requests};",
    ]


class Nginx:
    def __init__(self, paths: NginxPaths) -> None:
        self.paths = paths
        self.process: asyncio.subprocess.Process | None = None

    def _argv(self, *extra: str) -> list[str]:
        paths = self.paths
        return [NGINX, "-p", str(paths.root), "-e", str(paths.error_log), *extra]

    def prepare(self) -> None:
        self.paths.temp.mkdir(parents=True, exist_ok=True)
        self.paths.access_log.parent.mkdir(parents=True, exist_ok=True)

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

    def _pid_written(self) -> bool:
        """The pid file names this master (``nginx -t`` leaves an empty one behind)."""
        try:
            written = self.paths.pid.read_text().strip()
        except OSError:
            return False
        return self.process is not None and written == str(self.process.pid)

    async def wait_started(self) -> None:
        """A reload needs the master's pid file; nginx writes it once it listens."""
        deadline = time.monotonic() + PID_FILE_WAIT_S
        while not self._pid_written():
            if not self.running or time.monotonic() > deadline:
                tail = ""
                with contextlib.suppress(OSError):
                    tail = self.paths.error_log.read_text()[-2000:]
                raise NginxError(f"nginx did not start; its error log ends with: {tail}")
            await asyncio.sleep(0.01)

    async def install(self, text: str) -> None:
        """Test ``text`` as a candidate, move it into place, then start nginx (first time) or
        reload it: the one apply of both hops."""
        candidate = self.paths.conf.with_suffix(".candidate")
        candidate.write_text(text)
        await self.test(str(candidate))
        candidate.replace(self.paths.conf)
        if self.running:
            await self.reload()
            return
        await self.start()
        await self.wait_started()

    async def reload(self) -> None:
        """``nginx -s reload``: new workers with the new configuration; old ones finish the
        requests they hold, then exit. nginx answers the signal at once and switches later
        (the old worker accepts until the master tells it to quit), so this returns only once
        the old workers are shutting down: from then on, new connections get the new
        configuration."""
        assert self.process is not None
        master = self.process.pid
        before = set(_serving_workers(master))
        await self._run("-c", str(self.paths.conf), "-s", "reload")
        deadline = time.monotonic() + RELOAD_WAIT_S
        while True:
            serving = set(_serving_workers(master))
            if serving and not serving & before:
                return
            if not self.running or time.monotonic() > deadline:
                raise NginxError(f"nginx did not switch to the new configuration ({serving})")
            await asyncio.sleep(0.005)

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
