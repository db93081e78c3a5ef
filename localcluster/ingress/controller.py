"""The controller loop: informers into a plan, the plan into nginx, at most once per sync period.

Changes are batched as ingress-nginx batches them: nothing is applied when they arrive; a
ticker every ``sync_interval_s`` applies whatever changed since the last sync (so a new or
removed endpoint reaches nginx between 0 and ``sync_interval_s`` after the controller saw it,
plus the reload). One sync = plan, render, and, when the text changed, one apply: write a
candidate, ``nginx -t`` it, move it into place, ``nginx -s reload``. Every applied sync is a
truth line ``ingress-synced`` with the upstream servers it installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from localcluster.apiclient import ApiClient
from localcluster.informer import ObjectCache
from localcluster.ingress.nginx import Nginx, NginxError
from localcluster.ingress.nginxconf import NginxPaths, NginxSettings, render_nginx_conf
from localcluster.ingress.plan import IngressClassFilter, plan_ingress
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)
PID_FILE_WAIT_S = 5.0  # nginx writes its pid file within milliseconds of starting
SYNC_RETRY_S = 1.0  # a sync that failed (nginx refused the config) is retried after this


@dataclass(frozen=True)
class ControllerSettings:
    sync_interval_s: float = 1.0
    healthz_port: int = 10254  # ingress-nginx's --healthz-port
    classes: IngressClassFilter = field(default_factory=IngressClassFilter)
    nginx: NginxSettings = field(default_factory=NginxSettings)


class IngressController:
    def __init__(
        self,
        client: ApiClient,
        settings: ControllerSettings,
        paths: NginxPaths,
        truth: TruthWriter,
    ) -> None:
        self.settings = settings
        self.paths = paths
        self.nginx = Nginx(paths)
        self._truth = truth
        self._changed = asyncio.Event()
        self._caches = [
            ObjectCache(client, resource, self._changed.set)
            for resource in ("ingressclasses", "ingresses", "services", "endpointslices")
        ]
        self._applied: str | None = None
        self.syncs = 0
        self.health_port = settings.healthz_port

    async def run(self) -> None:
        """Until cancelled; nginx is stopped however it ends."""
        self.nginx.prepare()
        health = await self._serve_health()
        try:
            async with asyncio.TaskGroup() as group:
                for cache in self._caches:
                    group.create_task(cache.run())
                group.create_task(self._sync_loop())
        finally:
            await self.nginx.stop()
            await health.cleanup()

    @property
    def healthy(self) -> bool:
        return self.nginx.running and self.syncs > 0

    async def _serve_health(self) -> web.AppRunner:
        async def healthz(_request: web.Request) -> web.Response:
            return web.Response(status=200 if self.healthy else 503, text="ok")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "0.0.0.0", self.settings.healthz_port)
        await site.start()
        self.health_port = runner.addresses[0][1]  # the one bound (a test may ask for any)
        return runner

    async def _sync_loop(self) -> None:
        for cache in self._caches:
            await cache.synced.wait()
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            if self.syncs and not self.nginx.running:  # ingress-nginx exits when nginx dies
                raise NginxError(f"nginx exited (code {self.nginx.returncode})")
            if self._changed.is_set():
                self._changed.clear()
                try:
                    await self.sync_once()
                except NginxError as error:  # ingress-nginx logs and retries a refused config
                    log.error("nginx refused the configuration: %s", error)
                    self._changed.set()
                    await asyncio.sleep(SYNC_RETRY_S)
            next_tick = max(next_tick + self.settings.sync_interval_s, loop.time())
            await asyncio.sleep(next_tick - loop.time())

    async def sync_once(self) -> None:
        """Plan, render and, when the text changed, apply (start nginx on the first)."""
        started = time.monotonic()
        classes, ingresses, services, slices = (cache.values() for cache in self._caches)
        plan = plan_ingress(classes, ingresses, services, slices, self.settings.classes)
        text = render_nginx_conf(plan, self.settings.nginx, self.paths)
        if text != self._applied:
            await self._apply(text)
            self._applied = text
            self._truth.record(
                "ingress-synced",
                upstreams=plan.endpoints(),
                apply_s=round(time.monotonic() - started, 6),
            )
        self.syncs += 1

    async def _apply(self, text: str) -> None:
        candidate = self.paths.conf.with_suffix(".candidate")
        candidate.write_text(text)
        await self.nginx.test(str(candidate))
        candidate.replace(self.paths.conf)
        if self.nginx.running:
            await self.nginx.reload()
            return
        await self.nginx.start()
        await self._wait_for_pid_file()

    async def _wait_for_pid_file(self) -> None:
        """A reload needs the master's pid file; nginx writes it once it has started."""
        deadline = time.monotonic() + PID_FILE_WAIT_S
        while not self.paths.pid.exists():
            if not self.nginx.running or time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    log.error("nginx error log: %s", self.paths.error_log.read_text()[-2000:])
                raise NginxError("nginx did not start (see its error log)")
            await asyncio.sleep(0.01)
