"""The demo app's HTTP server and lifecycle: where every rollout failure mode is provoked on purpose.

Built on asyncio Protocols rather than ``http.server`` or streams so that one core serves
thousands of requests per second: a zero-latency request is parsed and answered inside
``data_received`` without creating a task. Requests on one connection are answered strictly in
order (pipelining-safe): while one waits out its latency, later ones stay in the buffer.

Lifecycle: [startup delay] → listening → [warm-up: requests fail] → serving → SIGTERM → one of
immediate (die by the signal, as an app without a handler does), graceful (not ready, close the
listener, finish in-flight requests with ``Connection: close``, answer each idle connection's next
request with ``Connection: close`` or close it after ``--drain-idle-grace``, exit when
drained or at the drain timeout), ignore (until SIGKILL), delayed:N (not ready, keep serving N
seconds, then graceful — the in-app equivalent of a preStop sleep).

Faults of a bad revision, each off by default: a crash (exit 1 with no drain, after some time or
some requests), a liveness endpoint that starts failing, a readiness flap during which the app
cannot serve, and an idle keep-alive close by bare RST instead of FIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import socket
import struct
import sys
from collections.abc import Coroutine
from typing import Any

from demoapp.config import AppConfig, IdleClose, ShutdownKind, WarmupMode
from demoapp.http1 import BadRequest, Request, parse_request, render_response
from demoapp.truth import TruthLog

RESET = "reset"  # answer by aborting the connection with a TCP RST
CRASH_EXIT_CODE = 1  # what an uncaught exception or a panic exits with


class DemoApp:
    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.truth = TruthLog(config.truth, config.pod_name)
        self.listening = False
        self.warm = False
        self.live = True  # /healthz passes until --liveness-fail-after
        self.flapped_down = False  # inside a readiness flap's down window: cannot serve
        self.served = 0  # requests answered (probes excluded), for --crash-after-requests
        self.terminating = False  # SIGTERM seen: honest readiness fails from here on
        self.closing = False  # listener closed: connections finish their request and close
        self.connections: set[Connection] = set()
        self.server: asyncio.base_events.Server | None = None
        self.finished = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # A Pod's capacity: at most this many requests are in service at once; the rest wait
        # their turn, so a Pod left with too much traffic slows down as a real one does.
        self.workers = (
            asyncio.Semaphore(config.max_concurrency) if config.max_concurrency > 0 else None
        )

    # -- what a request gets -------------------------------------------------------------
    @property
    def ready(self) -> bool:
        if self.config.ready_lies:
            return self.listening
        return self.listening and self.warm and not self.terminating and not self.flapped_down

    def answer(self, request: Request) -> tuple[int, bytes] | str:
        """Status and body for a request, or RESET; probes are never delayed or failed by warm-up."""
        path = request.path
        if path == "/healthz":
            return (200, b"ok\n") if self.live else (500, b"liveness failing\n")
        if path == "/ready":
            return (200, b"ready\n") if self.ready else (503, b"not ready\n")
        if not self.warm:
            return _unavailable(self.config.warmup_mode, b"warming up\n")
        if self.flapped_down:
            return _unavailable(self.config.flap_mode, b"not ready (flapping)\n")
        limit = self.config.crash_after_requests
        if limit and self.served >= limit:
            self.crash(f"after {limit} requests")
        self.served += 1
        return 200, self._hello

    def delay_s(self, request: Request) -> float:
        """Service time: ``?delay_ms=N`` overrides the configured distribution (slow in-flight
        requests on demand, for tests and scenarios)."""
        if request.path in ("/healthz", "/ready"):
            return 0.0
        override = request.query_value("delay_ms")
        if override is not None:
            with contextlib.suppress(ValueError):
                return max(0.0, float(override) / 1000.0)
        return 0.0 if self.config.latency.is_zero else self.config.latency.draw_s(self.rng)

    @functools.cached_property
    def _hello(self) -> bytes:
        return f"hello from {self.config.pod_name} {self.config.pod_version}\n".encode()

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one app per process; bounded
    def response_bytes(
        self, status: int, body: bytes, keep_alive: bool, head_only: bool = False
    ) -> bytes:
        return render_response(
            status, body, self.config.pod_name, self.config.pod_version, keep_alive, head_only
        )

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.on_sigterm)
        if self.config.startup_delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), self.config.startup_delay_s)
        if not self.finished.is_set():
            await self._listen()
        await self.finished.wait()
        return 0

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Connection(self),
            self.config.host,
            self.config.port,
            reuse_address=True,
            backlog=1024,
        )
        self.listening = True
        host, port = self.server.sockets[0].getsockname()[:2]
        self.truth.record("listening", ip=host, port=port)
        print(f"demoapp {self.config.pod_name} listening on {host}:{port}", flush=True)
        if self.config.crash_after_s > 0:
            loop.call_later(self.config.crash_after_s, self.crash, "timer")
        if self.config.liveness_fail_after_s > 0:
            loop.call_later(self.config.liveness_fail_after_s, self._liveness_fails)
        if self.config.warmup_s > 0:
            self._spawn(self._warm_up())
        else:
            self._become_warm()

    async def _warm_up(self) -> None:
        await asyncio.sleep(self.config.warmup_s)
        self._become_warm()

    def _become_warm(self) -> None:
        if self.terminating:
            return
        self.warm = True
        self.truth.record("ready-to-serve")
        if self.config.ready_flap_period_s > 0:
            self._spawn(self._flap())

    async def _flap(self) -> None:
        """Up for ``period - down`` seconds, then down for ``down``, until SIGTERM."""
        up_s = self.config.ready_flap_period_s - self.config.ready_flap_down_s
        while not self.terminating:
            await asyncio.sleep(up_s)
            self._flap_down()
            await asyncio.sleep(self.config.ready_flap_down_s)
            self._flap_up()

    def _flap_down(self) -> None:
        self.flapped_down = True
        self.truth.record("not-serving", reason="flap")

    def _flap_up(self) -> None:
        self.flapped_down = False
        self.truth.record("ready-to-serve")

    def _liveness_fails(self) -> None:
        self.live = False

    def crash(self, reason: str) -> None:
        """Exit at once with a non-zero code, as a panicking app does: no drain and no
        readiness change first; the kernel closes every socket (FIN, or RST where unread data
        remains), so the request that triggered it and any in flight are cut."""
        print(f"demoapp {self.config.pod_name} crashing: {reason}", file=sys.stderr, flush=True)
        self.truth.record("exited", exit_code=CRASH_EXIT_CODE, signal=None, reason="crash")
        sys.stdout.flush()
        os._exit(CRASH_EXIT_CODE)

    def on_sigterm(self) -> None:
        kind = self.config.shutdown.kind
        if kind is ShutdownKind.IGNORE or self.terminating:
            return
        self.terminating = True
        if kind is ShutdownKind.IMMEDIATE:
            self._die_by_sigterm()
            return
        delay = self.config.shutdown.delay_s if kind is ShutdownKind.DELAYED else 0.0
        self._spawn(self._graceful(delay))

    def _die_by_sigterm(self) -> None:
        """Exit the way a process without a SIGTERM handler does: the kernel closes every socket
        (FIN, or RST where unread data remains), cutting whatever was in flight."""
        self.truth.record("exited", exit_code=None, signal=int(signal.SIGTERM))
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        os.kill(os.getpid(), signal.SIGTERM)
        # Still here: we are PID 1 of a container, whose default-action signals the kernel
        # ignores. Exit with the code a shell would report for death by SIGTERM.
        os._exit(128 + signal.SIGTERM)

    async def _graceful(self, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self.closing = True
        if self.server is not None:
            self.server.close()
            self.truth.record("stopped-accepting")
        for connection in list(self.connections):
            connection.close_when_idle()
        self._note_connection_gone()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), self.config.drain_timeout_s)
        for connection in list(self.connections):
            connection.abort()
        self.truth.record("exited", exit_code=0, signal=None, undrained=len(self.connections))
        self.finished.set()

    def _note_connection_gone(self) -> None:
        if self.closing and not self.connections:
            self._drained.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class Connection(asyncio.Protocol):
    """One client connection: ordered request handling, idle timeout, graceful close."""

    def __init__(self, app: DemoApp) -> None:
        self.app = app
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a request is waiting out its latency
        self.close_after_response = False
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.app.connections.add(self)
        if self.app.closing:  # accepted just before the listener closed
            self.close_when_idle()
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_idle_timer()
        self.transport = None
        self.app.connections.discard(self)
        self.app._note_connection_gone()

    def data_received(self, data: bytes) -> None:
        self._cancel_idle_timer()
        self.buffer += data
        if not self.busy:
            self._process()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.buffer

    def close_when_idle(self) -> None:
        """Answer the next request with `Connection: close`; an idle connection is closed only
        after the drain-idle grace, so a client about to reuse it gets a clean last answer."""
        self.close_after_response = True
        grace = self.app.config.drain_idle_grace_s
        if grace <= 0:
            self._close_if_idle()
            return
        self._cancel_idle_timer()
        self.idle_timer = asyncio.get_running_loop().call_later(grace, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.idle and self.transport is not None:
            self.app.truth.record("idle-close", **self.peer, how="fin", draining=self.app.closing)
            self.transport.close()

    @property
    def peer(self) -> dict[str, Any]:
        """The client address as this Pod sees it (after any SNAT), for truth lines that a
        judge matches to the connection's NAT entry."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return {"peer_ip": peer[0], "peer_port": peer[1]} if peer else {}

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _process(self) -> None:
        while self.transport is not None and not self.busy:
            try:
                request, used = parse_request(self.buffer)
            except BadRequest as error:
                self._send(400, str(error).encode() + b"\n", keep_alive=False)
                return
            if request is None:
                break
            del self.buffer[:used]
            delay = self.app.delay_s(request)
            if delay > 0:
                self.busy = True
                self.app._spawn(self._answer_later(request, delay))
                return
            self._answer(request)
        if self.idle:
            self._arm_idle_timer()

    async def _answer_later(self, request: Request, delay_s: float) -> None:
        if self.app.workers is None:
            await asyncio.sleep(delay_s)
        else:
            async with self.app.workers:
                await asyncio.sleep(delay_s)
        self.busy = False
        self._answer(request)
        self._process()

    def _answer(self, request: Request) -> None:
        outcome = self.app.answer(request)
        if isinstance(outcome, str):
            self.app.truth.record("warmup-reset", **self.peer)
            self._reset()
            return
        status, body = outcome
        keep_alive = request.keep_alive and not self.close_after_response
        self._send(status, body, keep_alive, head_only=request.method == "HEAD")

    def _send(self, status: int, body: bytes, keep_alive: bool, head_only: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(self.app.response_bytes(status, body, keep_alive, head_only))
        if not keep_alive:
            self.buffer.clear()
            self.transport.close()

    def _reset(self) -> None:
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.buffer.clear()
        self.transport.abort()

    def _arm_idle_timer(self) -> None:
        timeout = self.app.config.keepalive_timeout_s
        if timeout <= 0 or self.transport is None:
            return
        self._cancel_idle_timer()
        self.idle_timer = asyncio.get_running_loop().call_later(timeout, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_expired(self) -> None:
        """The keep-alive timeout: an orderly FIN, or a bare RST (``--idle-close rst``)."""
        if self.app.config.idle_close is IdleClose.RST and self.idle and self.transport:
            self.app.truth.record("idle-close", **self.peer, how="rst", draining=False)
            self._reset()
        else:
            self._close_if_idle()


def _unavailable(mode: WarmupMode, body: bytes) -> tuple[int, bytes] | str:
    """How a request fails while the app cannot serve it: a 503 or a connection reset."""
    return RESET if mode is WarmupMode.RESET else (503, body)
