"""The runner's one adapter to a Kubernetes API: the same code for the local cluster and for real
clusters (the local cluster's API server speaks enough of the API for the official client).

It only ever acts in the namespace it was given, and it refuses to change a Deployment or
Service that rolltrace did not create (label ``app.kubernetes.io/managed-by: rolltrace``) unless
the caller names it as the target explicitly: rolltrace is pointed at real clusters, and a
surprise patch of someone's production Deployment is the worst bug it could have.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubewire import RolloutState
from rolltrace.runner.manifests import MANAGED_BY

#: The longest pause between two reads of a state the runner waits for.
POLL_S = 0.2


class KubeError(RuntimeError):
    """The cluster refused or did not reach the state the experiment needs; says which."""


class NotOurs(KubeError):
    """The object exists but rolltrace did not create it (and was not told to target it)."""


class Forbidden(KubeError):
    """The cluster's RBAC refused a call (403): one line naming what and where, and the fix."""


RBAC_MANIFEST = "scenarios/manifests/rbac.yaml"
# upstream's 403 message: `<resource> ["<name>"] is forbidden: User "<u>" cannot <verb> ...`
_FORBIDDEN_REASON = re.compile(r"is forbidden: (User .*)$")


def forbidden_message(exc: ApiException, namespace: str) -> str:
    """A 403 as one line: who cannot do what where (the API server's own words), and which
    manifest grants what rolltrace needs."""
    try:
        message = str(json.loads(exc.body or "{}").get("message", ""))
    except ValueError:
        message = ""
    match = _FORBIDDEN_REASON.search(message)
    refused = match.group(1) if match else (message or f"403 {exc.reason}")
    return (
        f"the cluster refused: {refused}; rolltrace needs the Role in {RBAC_MANIFEST} bound to "
        f"its identity (kubectl -n {namespace} apply -f {RBAC_MANIFEST})"
    )


class _RbacChecked:
    """An API object of the official client whose 403s become ``Forbidden`` (every other
    error passes through unchanged)."""

    def __init__(self, api: Any, namespace: str) -> None:
        self._api = api
        self._namespace = namespace

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except ApiException as exc:
                if exc.status == 403:
                    raise Forbidden(forbidden_message(exc, self._namespace)) from None
                raise

        return call


@dataclass(frozen=True)
class Workload:
    replicas: int
    pod_selector: str  # label selector string, e.g. "app.kubernetes.io/name=demoapp"


@dataclass(frozen=True)
class ServiceTraits:
    traffic_policy: str  # externalTrafficPolicy: Cluster | Local
    lb_targets: str  # nodes | pods


def _cluster_scoped(kind: str, networking: Any) -> tuple[Callable[..., Any], ...]:
    """read / create / patch of a cluster-scoped kind, with the namespaced calls' signature
    (the namespace argument is dropped): the ingress hop's IngressClass."""
    if kind != "IngressClass":
        raise KeyError(f"rolltrace does not apply objects of kind {kind}")
    return (
        lambda name, _namespace: networking.read_ingress_class(name),
        lambda _namespace, body: networking.create_ingress_class(body),
        lambda name, _namespace, body: networking.patch_ingress_class(name, body),
    )


def _managed(obj: Any) -> bool:
    labels = (obj.metadata.labels or {}) if obj is not None else {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


class Kube:
    def __init__(
        self, api_client: k8s.ApiClient, namespace: str, target_existing: str | None = None
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.target_existing = target_existing
        # The generated models mark every field Optional; this adapter reads fields the API
        # server always sets for these objects, so the typed surface stops here (tests cover it).
        self.core: Any = _RbacChecked(k8s.CoreV1Api(api_client), namespace)
        self.apps: Any = _RbacChecked(k8s.AppsV1Api(api_client), namespace)
        self.networking: Any = _RbacChecked(k8s.NetworkingV1Api(api_client), namespace)

    def ensure_namespace(self) -> None:
        try:
            self.core.read_namespace(self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"cannot read namespace {self.namespace}: {exc.reason}") from None
            body = {"metadata": {"name": self.namespace, "labels": dict(MANAGED_BY)}}
            self.core.create_namespace(body)

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create, or replace the spec of an object rolltrace created earlier."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        net = self.networking
        read, create, patch = {
            "Deployment": (self.apps.read_namespaced_deployment,
                           self.apps.create_namespaced_deployment,
                           self.apps.patch_namespaced_deployment),
            "Service": (self.core.read_namespaced_service, self.core.create_namespaced_service,
                        self.core.patch_namespaced_service),
            "Ingress": (net.read_namespaced_ingress, net.create_namespaced_ingress,
                        net.patch_namespaced_ingress),
        }.get(kind) or _cluster_scoped(kind, net)  # fmt: skip
        try:
            existing = read(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"cannot read {kind} {name}: {exc.reason}") from None
            create(self.namespace, manifest)
            return
        self._check_ours(kind, name, existing)
        patch(name, self.namespace, manifest)

    def _check_ours(self, kind: str, name: str, obj: Any) -> None:
        if not _managed(obj) and name != self.target_existing:
            raise NotOurs(
                f"{kind} {self.namespace}/{name} exists and was not created by rolltrace; "
                f"pass --target-existing {name} to run the experiment on it"
            )

    def rollout_state(self, name: str) -> RolloutState:
        dep = self.apps.read_namespaced_deployment(name, self.namespace)
        status = dep.status
        return RolloutState(
            generation=dep.metadata.generation or 0,
            observed_generation=status.observed_generation or 0,
            replicas=status.replicas or 0,
            updated=status.updated_replicas or 0,
            ready=status.ready_replicas or 0,
            available=status.available_replicas or 0,
        )

    def wait_rollout(
        self,
        name: str,
        desired: int,
        deadline_s: float,
        on_poll: Callable[[RolloutState], None] | None = None,
        pause: Callable[[float], None] = time.sleep,
    ) -> RolloutState:
        """Poll until the Deployment's rollout is complete; KubeError with the last state when
        the deadline passes (a stuck rollout is itself a finding, so the caller keeps the run).
        ``pause`` waits between reads (``ClusterWatcher.waiter`` ends it at a watch event)."""
        deadline = time.monotonic() + deadline_s
        while True:
            state = self.rollout_state(name)
            if on_poll is not None:
                on_poll(state)
            if state.complete(desired):
                return state
            if time.monotonic() > deadline:
                raise KubeError(f"Deployment {name} not rolled out after {deadline_s:g} s: {state}")
            pause(POLL_S)

    def wait_terminations(
        self, label_selector: str, deadline_s: float, pause: Callable[[float], None] = time.sleep
    ) -> int:
        """Wait until no Pod matching the selector is terminating; returns how many were left
        at the deadline. A rollout is "complete" (kubectl's sense) while old Pods still run
        their preStop and drain, which is exactly when endpoint-lag happens, so the
        experiment's cool-down starts only after they are gone. ``pause`` as in wait_rollout."""
        deadline = time.monotonic() + deadline_s
        while True:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=label_selector)
            terminating = [p for p in pods.items if p.metadata.deletion_timestamp is not None]
            if not terminating or time.monotonic() > deadline:
                return len(terminating)
            pause(POLL_S)

    def trigger_rollout(self, name: str, patch: dict[str, Any]) -> None:
        dep = self.apps.read_namespaced_deployment(name, self.namespace)
        self._check_ours("Deployment", name, dep)
        self.apps.patch_namespaced_deployment(name, self.namespace, patch)

    def load_balancer_address(self, service: str, deadline_s: float = 60.0) -> tuple[str, int]:
        """The Service's external address once the (cloud or emulated) LB has published it."""
        deadline = time.monotonic() + deadline_s
        while True:
            svc = self.core.read_namespaced_service(service, self.namespace)
            ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
            if ingress and (ingress[0].ip or ingress[0].hostname):
                return ingress[0].ip or ingress[0].hostname, int(svc.spec.ports[0].port)
            if time.monotonic() > deadline:
                raise KubeError(
                    f"Service {service} has no load balancer address after "
                    f"{deadline_s:g} s (is a cloud controller / the LB emulator running?)"
                )
            time.sleep(POLL_S)

    def workload(self, name: str) -> Workload:
        """The Deployment's desired size and Pod selector, in one read."""
        spec = self.apps.read_namespaced_deployment(name, self.namespace).spec
        labels = spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return Workload(replicas=int(spec.replicas or 0), pod_selector=selector)

    def service_traits(self, service: str) -> ServiceTraits:
        """What attribution needs to know about the Service, in one read. The LB targets Pods
        when the cloud LB sends straight to Pod IPs (AWS NLB IP targets), else nodes."""
        svc = self.core.read_namespaced_service(service, self.namespace)
        annotations = svc.metadata.annotations or {}
        ip_mode = annotations.get("service.beta.kubernetes.io/aws-load-balancer-nlb-target-type")
        return ServiceTraits(
            traffic_policy=str(svc.spec.external_traffic_policy or "Cluster"),
            lb_targets="pods" if ip_mode == "ip" else "nodes",
        )

    def service_for(self, deployment_name: str) -> str:
        """The LoadBalancer Service whose selector picks the Deployment's Pods (for
        --target-existing, where rolltrace did not create the Service)."""
        dep = self.apps.read_namespaced_deployment(deployment_name, self.namespace)
        labels = dep.spec.template.metadata.labels or {}
        matches = [
            svc.metadata.name
            for svc in self.core.list_namespaced_service(self.namespace).items
            if svc.spec.type == "LoadBalancer"
            and svc.spec.selector
            and all(labels.get(k) == v for k, v in svc.spec.selector.items())
        ]
        if len(matches) != 1:
            raise KubeError(
                f"Deployment {deployment_name} needs exactly one LoadBalancer Service selecting "
                f"its Pods in {self.namespace}; found {matches or 'none'}"
            )
        return str(matches[0])

    def delete_managed(self, name: str) -> None:
        """Remove what rolltrace created for an experiment (never anything else)."""
        for read, delete in (
            (self.apps.read_namespaced_deployment, self.apps.delete_namespaced_deployment),
            (self.core.read_namespaced_service, self.core.delete_namespaced_service),
        ):
            try:
                obj = read(name, self.namespace)
            except ApiException:
                continue
            if _managed(obj):
                delete(name, self.namespace)
