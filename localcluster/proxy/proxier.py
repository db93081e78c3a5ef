"""The node's kube-proxy loop: watch Services and EndpointSlices, and after a delay drawn from
the node's model apply the whole ruleset as one nft transaction.

Changes that arrive while a sync waits are folded into it (kube-proxy's min-sync-period
batching), so the rules a node runs always lag the API by a real, configured amount, and every
programming is recorded in truth.jsonl with the endpoint set it installed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from localcluster.apiclient import ApiClient
from localcluster.config import ClusterConfig
from localcluster.dataplane import ip, nft
from localcluster.informer import ObjectCache
from localcluster.proxy.healthcheck import HealthCheckServers, HealthState
from localcluster.proxy.rules import PortPlan, plan_ports, render_table_body
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)
SYNC_RETRY_S = 1.0


def programmed_endpoints(plans: list[PortPlan]) -> dict[str, list[dict[str, Any]]]:
    """service ("ns/name") -> the endpoints its rules send new connections to on this node."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for plan in plans:
        eps = result.setdefault(plan.service_ref, {})
        for ep in plan.cluster_endpoints:
            eps[ep.ip] = {"pod": ep.pod, "ip": ep.ip, "terminating": ep.terminating}
    return {svc: sorted(eps.values(), key=lambda e: e["ip"]) for svc, eps in result.items()}


def health_states(plans: list[PortPlan]) -> dict[int, HealthState]:
    return {
        p.health_check_node_port: (p.namespace, p.service, p.ready_local)
        for p in plans
        if p.health_check_node_port
    }


class Proxier:
    def __init__(
        self,
        client: ApiClient,
        node: str,
        config: ClusterConfig,
        pod_range: str,
        table: str,
        apply: nft.Applier,
        truth: TruthWriter,
        health: HealthCheckServers | None = None,
        conntrack_netns: str | None = None,
    ) -> None:
        self._node = node
        self._config = config
        self._pod_range = pod_range
        self._table = table
        self._apply = apply
        self._truth = truth
        self._health = health
        self._conntrack_netns = conntrack_netns
        self._rng = random.Random(f"{config.seed}/{node}")
        self._changed = asyncio.Event()
        self._services = ObjectCache(client, "services", self._changed.set)
        self._slices = ObjectCache(client, "endpointslices", self._changed.set)
        self._last_sync: float | None = None
        self._programmed: dict[str, list[dict[str, Any]]] = {}
        self._udp_endpoints: set[str] = set()
        self.syncs = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._services.run())
            group.create_task(self._slices.run())
            group.create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        await self._services.synced.wait()
        await self._slices.synced.wait()
        while True:
            await self._changed.wait()
            since = time.monotonic() - self._last_sync if self._last_sync else float("inf")
            delay = self._config.proxy.delay_for(self._node).draw(self._rng, since)
            await asyncio.sleep(delay)  # changes arriving now join this sync
            self._changed.clear()
            try:
                await self.sync_once(delay)
            except Exception:  # kube-proxy retries a failed sync; so do we
                log.exception("sync on %s failed; retrying", self._node)
                self._changed.set()
                await asyncio.sleep(SYNC_RETRY_S)

    async def sync_once(self, delay_s: float = 0.0) -> None:
        plans = plan_ports(
            self._services.values(),
            self._slices.values(),
            self._node,
            self._config.proxy.terminating_fallback,
        )
        body = render_table_body(plans, self._pod_range)
        await self._apply(nft.replace_table_text("ip", self._table, body))
        self._last_sync = time.monotonic()
        self.syncs += 1
        programmed = programmed_endpoints(plans)
        for service, endpoints in sorted(programmed.items()):
            if self._programmed.get(service) != endpoints:
                self._truth.record(
                    "rules-programmed",
                    node=self._node,
                    service=service,
                    endpoints=endpoints,
                    delay_s=round(delay_s, 6),
                )
        for service in sorted(set(self._programmed) - set(programmed)):
            self._truth.record("rules-programmed", node=self._node, service=service, endpoints=[])
        self._programmed = programmed
        await self._flush_udp(plans)
        if self._health is not None:
            await self._health.sync(health_states(plans))

    async def _flush_udp(self, plans: list[PortPlan]) -> None:
        """kube-proxy deletes conntrack entries of removed UDP endpoints (a UDP flow has no end
        that would let it move on); TCP flows are left alone and keep flowing."""
        current = {ep.ip for p in plans if p.protocol == "udp" for ep in p.cluster_endpoints}
        for gone in sorted(self._udp_endpoints - current):
            argv = ["conntrack", "-D", "-p", "udp", "--dst-nat", gone]
            if self._conntrack_netns:
                argv = ip.netns_exec(self._conntrack_netns, *argv)
            await ip.run_async(argv, check=False)
        self._udp_endpoints = current
