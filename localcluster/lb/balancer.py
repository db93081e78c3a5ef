"""The cloud load balancer and its controller: for every ``type: LoadBalancer`` Service it
allocates an external IP, DNATs it to the active targets, health-checks them and publishes the
IP in ``status.loadBalancer.ingress`` once the forwarding is in place.

Targets are nodes (NodePort; the check hits the healthCheckNodePort under ``Local`` policy and
connects to the NodePort under ``Cluster``) or Pods (IP mode: ready endpoints, registered and
deregistered ``registration_delay_s`` after the controller sees the change). A target that
turns unhealthy stops getting new connections, but its established ones persist (conntrack),
as on GCE and NLB by default; a deregistered target's connections are cut at once without
draining, or after ``deregistration_delay_s`` with draining. With no healthy target the LB fails
open to all registered ones, as GCE, NLB and ALB do.

How the active targets are reached is the mode's forwarder: ``l4.NftForwarder`` (DNAT rules,
the default) or ``l7.NginxForwarder`` (an ALB-like HTTP proxy on real nginx, which health-checks
``GET hc_path`` on each target's traffic port). Everything else here is shared by both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from kubewire import slice_endpoints
from kubewire.listwatch import object_key
from localcluster.apiclient import ApiClient, ApiError
from localcluster.config import ClusterConfig
from localcluster.dataplane import nft
from localcluster.dataplane.addressing import AddressPlan
from localcluster.informer import ObjectCache
from localcluster.lb.health import HealthState, probe_http, probe_tcp
from localcluster.lb.l4 import NftForwarder
from localcluster.lb.l7 import L7Settings, NginxForwarder, l7_paths
from localcluster.lb.rules import Frontend
from localcluster.truth import TruthWriter

log = logging.getLogger(__name__)
ServiceKey = tuple[str, str]
RETRY_S = 1.0


@dataclass(frozen=True)
class Target:
    name: str  # node or Pod name
    ip: str
    ports: tuple[tuple[int, int], ...]  # (service port, target port)
    check: tuple[str, int]  # ("http" | "tcp", port)
    check_path: str = "/"  # the path of an "http" check


class Forwarder(Protocol):
    """How the LB sends to its active targets (l4: DNAT rules; l7: an HTTP proxy)."""

    async def forward(self, frontends: Sequence[Frontend]) -> None: ...

    async def cut(self, address: str, ports: Iterable[int]) -> None:
        """Close the connections the LB still forwards to a deregistered target."""

    async def close(self) -> None: ...


def l7_checked(target: Target, path: str) -> Target:
    """An ALB checks ``GET path`` on the port it sends traffic to, whatever the target type."""
    return replace(target, check=("http", target.ports[0][1]), check_path=path)


def node_targets(svc: dict[str, Any], plan: AddressPlan) -> list[Target]:
    spec = svc.get("spec") or {}
    ports = tuple(
        (int(p["port"]), int(p["nodePort"])) for p in spec.get("ports") or [] if p.get("nodePort")
    )
    if not ports:
        return []
    if spec.get("externalTrafficPolicy") == "Local" and spec.get("healthCheckNodePort"):
        check = ("http", int(spec["healthCheckNodePort"]))
    else:
        check = ("tcp", ports[0][1])
    return [Target(node.name, node.fabric_ip, ports, check) for node in plan.nodes]


def pod_targets(svc: dict[str, Any], slices: list[dict[str, Any]]) -> list[Target]:
    """Ready endpoints only: an IP-mode controller deregisters a Pod once it is not ready."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    found: dict[str, Target] = {}
    for sl in slices:
        sl_meta = sl.get("metadata") or {}
        if sl_meta.get("namespace") != meta.get("namespace"):
            continue
        if (sl_meta.get("labels") or {}).get("kubernetes.io/service-name") != meta.get("name"):
            continue
        by_name = {
            (p.get("name") or ""): int(p["port"]) for p in sl.get("ports") or [] if p.get("port")
        }
        ports = tuple(
            (int(p["port"]), by_name[p.get("name") or ""])
            for p in spec.get("ports") or []
            if (p.get("name") or "") in by_name
        )
        if not ports:
            continue
        for address, state in slice_endpoints(sl).items():  # kubewire's nil/duplicate rules
            if state.ready:
                found[address] = Target(state.pod or address, address, ports, ("tcp", ports[0][1]))
    return sorted(found.values(), key=lambda t: t.ip)


class LoadBalancer:
    def __init__(
        self,
        client: ApiClient,
        plan: AddressPlan,
        config: ClusterConfig,
        forwarder: Forwarder,
        truth: TruthWriter,
    ) -> None:
        self._client = client
        self._plan = plan
        self._lb = config.lb
        self._forwarder = forwarder
        self._truth = truth
        self._changed = asyncio.Event()
        self._services = ObjectCache(client, "services", self._changed.set)
        self._slices = ObjectCache(client, "endpointslices", self._changed.set)
        self._vips: dict[ServiceKey, str] = {}
        self._published: dict[ServiceKey, str] = {}
        self._registered: dict[ServiceKey, dict[str, Target]] = {}
        self._pending: set[tuple[ServiceKey, str, bool]] = set()
        self._health: dict[tuple[ServiceKey, str], HealthState] = {}
        self._active: dict[ServiceKey, tuple[Target, ...]] = {}
        self._program_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._services.run())
            group.create_task(self._slices.run())
            group.create_task(self._reconcile_loop())
            group.create_task(self._health_loop())

    def _lb_services(self) -> dict[ServiceKey, dict[str, Any]]:
        return {
            object_key(s): s
            for s in self._services.values()
            if (s.get("spec") or {}).get("type") == "LoadBalancer"
        }

    def _allocate_vip(self, key: ServiceKey, svc: dict[str, Any]) -> str:
        taken = set(self._vips.values())
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        pool = self._plan.external_ips()
        candidates = [str(i.get("ip")) for i in ingress] + pool
        vip = next(c for c in candidates if c in pool and c not in taken)
        self._vips[key] = vip
        return vip

    async def _reconcile_loop(self) -> None:
        await self._services.synced.wait()
        await self._slices.synced.wait()
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.reconcile()
            except Exception:  # a cloud controller retries; the next change or tick will too
                log.exception("LB reconcile failed; retrying")
                self._changed.set()
                await asyncio.sleep(RETRY_S)

    async def reconcile(self) -> None:
        services = self._lb_services()
        for key in [k for k in self._registered if k not in services]:
            del self._registered[key]
            self._vips.pop(key, None)
            self._published.pop(key, None)
        for key, svc in services.items():
            if key not in self._vips:
                self._allocate_vip(key, svc)
            if self._lb.targets == "nodes":
                desired = {t.name: t for t in node_targets(svc, self._plan)}
                delay = 0.0  # nodes are registered when the LB is created
            else:
                desired = {t.name: t for t in pod_targets(svc, self._slices.values())}
                delay = self._lb.registration_delay_s
            if self._lb.mode == "l7":
                desired = {n: l7_checked(t, self._lb.hc_path) for n, t in desired.items()}
            registered = self._registered.setdefault(key, {})
            for name, target in desired.items():
                if registered.get(name) != target:
                    self._schedule(key, target, True, delay)
            for name, target in list(registered.items()):  # without a delay, removed here
                if name not in desired:
                    self._schedule(key, target, False, delay)
        await self.program()
        await self._publish(services)

    def _schedule(self, key: ServiceKey, target: Target, register: bool, delay: float) -> None:
        """(De)register ``target`` after ``delay``; without a delay the bookkeeping happens now,
        so the rules programmed right after already include (or exclude) it."""
        marker = (key, target.name, register)
        if marker in self._pending:
            return
        if delay <= 0:
            self._set_registered(key, target, register)
            if register:
                self._spawn(self._check(key, target))  # a new target is probed right away
            return
        self._pending.add(marker)

        async def later() -> None:
            await asyncio.sleep(delay)
            self._pending.discard(marker)
            self._set_registered(key, target, register)
            if register:
                await self._check(key, target)
            await self.program()

        self._spawn(later())

    def _set_registered(self, key: ServiceKey, target: Target, register: bool) -> None:
        registered = self._registered.get(key)
        if registered is None:
            return
        if register:
            registered[target.name] = target
            self._health.setdefault((key, target.name), HealthState())
        elif target.name in registered:
            del registered[target.name]
            self._health.pop((key, target.name), None)
            self._drain(target, self._lb.deregistration_delay_s if self._lb.draining else 0.0)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drain(self, target: Target, after_s: float) -> None:
        async def cut() -> None:
            await asyncio.sleep(after_s)
            await self._forwarder.cut(target.ip, [port for _sp, port in target.ports])

        self._spawn(cut())

    async def _check(self, key: ServiceKey, target: Target) -> None:
        kind, port = target.check
        if kind == "http":
            ok = await probe_http(target.ip, port, self._lb.hc_timeout_s, target.check_path)
        else:
            ok = await probe_tcp(target.ip, port, self._lb.hc_timeout_s)
        state = self._health.get((key, target.name))
        if state is None:
            return
        if state.observe(ok, self._lb.healthy_threshold, self._lb.unhealthy_threshold):
            self._truth.record(
                "lb-health-changed",
                service=f"{key[0]}/{key[1]}",
                target=target.name,
                address=f"{target.ip}:{port}",
                healthy=state.healthy,
            )

    async def _health_loop(self) -> None:
        while True:
            checks = [
                self._check(key, target)
                for key, registered in list(self._registered.items())
                for target in list(registered.values())
            ]
            await asyncio.gather(*checks)
            try:
                await self.program()
            except Exception:
                log.exception("LB programming failed; retrying at the next check")
            await asyncio.sleep(self._lb.hc_interval_s)

    def _active_targets(self, key: ServiceKey) -> tuple[Target, ...]:
        registered = sorted(self._registered.get(key, {}).values(), key=lambda t: t.ip)
        healthy = [t for t in registered if self._health.get((key, t.name), HealthState()).healthy]
        return tuple(healthy or registered)

    async def program(self) -> None:
        async with self._program_lock:
            active = {key: self._active_targets(key) for key in self._registered}
            frontends = []
            for key, svc in self._lb_services().items():
                if key not in self._vips:
                    continue
                for port in (svc.get("spec") or {}).get("ports") or []:
                    service_port = int(port["port"])
                    addresses = tuple(
                        (t.ip, tp)
                        for t in active.get(key, ())
                        for sp, tp in t.ports
                        if sp == service_port
                    )
                    protocol = str(port.get("protocol", "TCP")).lower()
                    frontends.append(
                        Frontend(
                            f"{key[0]}/{key[1]}", self._vips[key], protocol, service_port, addresses
                        )
                    )
            await self._forwarder.forward(frontends)
            for key, targets in active.items():
                if self._active.get(key) != targets:
                    self._truth.record(
                        "lb-targets-changed",
                        service=f"{key[0]}/{key[1]}",
                        external_ip=self._vips.get(key),
                        targets=[t.name for t in targets],
                        addresses=[f"{t.ip}:{tp}" for t in targets for _sp, tp in t.ports],
                    )
            self._active = active

    async def _publish(self, services: dict[ServiceKey, dict[str, Any]]) -> None:
        """Like a cloud controller: the external IP appears in the Service once it forwards."""
        for key, svc in services.items():
            vip = self._vips[key]
            ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if self._published.get(key) == vip and any(i.get("ip") == vip for i in ingress):
                continue
            if any(i.get("ip") == vip for i in ingress):
                self._published[key] = vip
                continue
            patch = {"status": {"loadBalancer": {"ingress": [{"ip": vip}]}}}
            try:
                await self._client.patch("services", key[1], patch, "merge", key[0], "status")
                self._published[key] = vip
            except ApiError as exc:
                log.warning("publishing %s for %s/%s failed: %s", vip, *key, exc)


def make_forwarder(config: ClusterConfig, plan: AddressPlan, state_dir: Path) -> Forwarder:
    if config.lb.mode == "l7":
        return NginxForwarder(L7Settings.from_config(config.lb), l7_paths(state_dir))
    return NftForwarder(plan.lb_table, nft.netns_applier(None))


async def run_lb(
    client: ApiClient, config: ClusterConfig, truth_path: str | None, state_dir: str | None
) -> None:
    """The LB process's body (inside the LB namespace, so rules apply to it directly; nginx,
    in L7 mode, is its child there). ``state_dir`` holds the L7 mode's files (cwd if None)."""
    plan = AddressPlan(config)
    truth = TruthWriter(truth_path, "lb")
    forwarder = make_forwarder(config, plan, Path(state_dir or "."))
    try:
        await LoadBalancer(client, plan, config, forwarder, truth).run()
    finally:
        with contextlib.suppress(Exception):
            await forwarder.close()
        truth.close()
