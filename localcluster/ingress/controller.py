"""The controller loop: informers into a plan, the plan into nginx, at most once per sync period.

Changes are batched as ingress-nginx batches them: nothing is applied when they arrive; a
ticker every ``sync_interval_s`` applies whatever changed since the last sync (so a new or
removed endpoint reaches nginx between 0 and ``sync_interval_s`` after the controller saw it,
plus the apply). One sync = plan, render, and, when the text changed, one apply: write a
candidate, ``nginx -t`` it, move it into place, ``nginx -s reload``. In dynamic mode the text
changes only with the structure (servers, locations, upstream names), and a change of endpoints
is one POST of every backend's list to nginx's Lua balancer, after the reload if there is one
(ingress-nginx's order: ``OnUpdate``, then ``configureDynamically``); each worker switches to it
on its own timer, up to ``LuaBalancer.worker_sync_s`` later. Every applied sync is a truth line
``ingress-synced`` with the upstream servers it installed, the mode, whether nginx reloaded, and
in dynamic mode the version the workers' ``ingress-worker-synced`` lines name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from localcluster.apiclient import ApiClient
from localcluster.informer import ObjectCache
from localcluster.ingress.nginx import IngressNginx
from localcluster.ingress.nginxconf import (
    Backend,
    LuaBalancer,
    NginxSettings,
    SyncMode,
    backends_document,
    render_nginx_conf,
)
from localcluster.ingress.plan import IngressClassFilter, IngressPlan, plan_ingress
from localcluster.nginxcommon import NginxError, NginxPaths
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)
SYNC_RETRY_S = 1.0  # a sync that failed (nginx refused the config) is retried after this


@dataclass(frozen=True)
class ControllerSettings:
    sync_interval_s: float = 1.0
    healthz_port: int = 10254  # ingress-nginx's --healthz-port
    classes: IngressClassFilter = field(default_factory=IngressClassFilter)
    nginx: NginxSettings = field(default_factory=NginxSettings)
    mode: SyncMode = SyncMode.RELOAD
    status_port: int = 10246  # dynamic mode's configuration endpoint (ingress-nginx's default)


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
        self.nginx = IngressNginx(paths)
        self._truth = truth
        self._changed = asyncio.Event()
        self._caches = [
            ObjectCache(client, resource, self._changed.set)
            for resource in ("ingressclasses", "ingresses", "services", "endpointslices")
        ]
        self.balancer = (
            LuaBalancer(truth.source, settings.status_port)
            if settings.mode is SyncMode.DYNAMIC
            else None
        )
        self._applied: str | None = None
        self._posted: list[Backend] | None = None
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
        """Plan, render and, when the text changed, apply (start nginx on the first); in
        dynamic mode then POST the endpoints if they changed."""
        started = time.monotonic()
        classes, ingresses, services, slices = (cache.values() for cache in self._caches)
        plan = plan_ingress(classes, ingresses, services, slices, self.settings.classes)
        text = render_nginx_conf(plan, self.settings.nginx, self.paths, self.balancer)
        reloaded = text != self._applied
        if reloaded:
            await self.nginx.install(text)
            self._applied = text
        version = await self._post_backends(plan)
        if reloaded or version is not None:
            self._truth.record(
                "ingress-synced",
                mode=self.settings.mode.value,
                reloaded=reloaded,
                upstreams=plan.endpoints(),
                apply_s=round(time.monotonic() - started, 6),
                **({} if version is None else {"version": version}),
            )
        self.syncs += 1

    async def _post_backends(self, plan: IngressPlan) -> int | None:
        """Dynamic mode, when some endpoint changed: the version nginx gave the new lists."""
        if self.balancer is None:
            return None
        backends = backends_document(plan)
        if backends == self._posted:
            return None
        version = await self.nginx.post_backends(self.balancer.status_port, backends)
        self._posted = backends
        return version
