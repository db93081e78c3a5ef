"""kube-proxy's ``healthCheckNodePort`` servers: one HTTP listener per Local-policy Service,
answering 200 while the node has a ready local endpoint and 503 otherwise, with kube-proxy's
JSON body. The count changes only when rules are programmed (kube-proxy updates it in its sync
loop), so the LB's view lags the same way it does on a real node."""

from __future__ import annotations

import json

from aiohttp import web

from localcluster.truth import TruthWriter

HealthState = tuple[str, str, int]  # namespace, service, ready local endpoints


def health_answer(state: HealthState) -> tuple[int, str]:
    namespace, name, local_endpoints = state
    body = {
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": True,
    }
    return (200 if local_endpoints > 0 else 503), json.dumps(body)


class HealthCheckServers:
    def __init__(self, node: str, truth: TruthWriter, host: str = "0.0.0.0") -> None:
        self._node = node
        self._truth = truth
        self._host = host
        self._states: dict[int, HealthState] = {}
        self._runners: dict[int, web.AppRunner] = {}

    async def _start(self, port: int) -> web.AppRunner:
        async def handle(_request: web.Request) -> web.Response:
            status, body = health_answer(self._states[port])
            return web.Response(status=status, text=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self._host, port, reuse_address=True).start()
        return runner

    async def sync(self, wanted: dict[int, HealthState]) -> None:
        for port in [p for p in self._runners if p not in wanted]:
            await self._runners.pop(port).cleanup()
            del self._states[port]
        for port, state in wanted.items():
            previous = self._states.get(port)
            self._states[port] = state
            if port not in self._runners:
                self._runners[port] = await self._start(port)
            if previous is None or (previous[2] > 0) != (state[2] > 0):
                self._truth.record(
                    "healthcheck-changed",
                    node=self._node,
                    service=f"{state[0]}/{state[1]}",
                    port=port,
                    healthy=state[2] > 0,
                    local_endpoints=state[2],
                )

    async def close(self) -> None:
        await self.sync({})
