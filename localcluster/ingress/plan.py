"""What nginx should do, as a pure function of (IngressClasses, Ingresses, Services,
EndpointSlices): servers by host, locations by path, and one upstream per backend Service port
with its ready endpoints.

Which Ingresses are ours, as ingress-nginx decides: ``spec.ingressClassName`` names an
IngressClass whose ``spec.controller`` is our controller class; or the Ingress has no class and
one of our IngressClasses is annotated ``ingressclass.kubernetes.io/is-default-class: "true"``;
or the deprecated ``kubernetes.io/ingress.class`` annotation names our ingress class.

Endpoints: only those whose EndpointSlice ``ready`` condition holds (nil counts as ready) become
upstream servers, as ingress-nginx's ``getEndpointsFromSlices``
(internal/ingress/controller/endpointslices.go) keeps only ready endpoints. Serving-but-
terminating endpoints are dropped, with no KEP-1669-style fallback as kube-proxy has: ``ready``
is never true for a terminating Pod, so a Pod leaves nginx's upstream at the first sync after its
deletion starts, whatever its preStop hook does (users see 502s from Pods still in nginx's list
after they stopped accepting: kubernetes/ingress-nginx#7097). A backend without ready endpoints
(or whose Service is missing) is answered 503 by nginx itself, as ingress-nginx does.

Paths: ``Exact`` matches the path only; ``Prefix`` matches by path element (``/foo`` matches
``/foo`` and ``/foo/bar``, not ``/foobar``), as the Ingress API defines; ``ImplementationSpecific``
is a plain nginx prefix, as ingress-nginx treats it without its regex annotation. Two Ingresses
claiming the same host and path: the oldest wins, as in ingress-nginx.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from kubewire import SERVICE_NAME_LABEL, port_endpoints

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CATCH_ALL_HOST = "_"  # nginx's name for "any other host"

Object = dict[str, Any]
Match = Literal["exact", "prefix"]


@dataclass(frozen=True)
class IngressClassFilter:
    """Which Ingresses this controller serves (ingress-nginx's ``--controller-class`` and
    ``--ingress-class``)."""

    controller_class: str = "k8s.io/ingress-nginx"
    ingress_class: str = "nginx"


@dataclass(frozen=True)
class Upstream:
    name: str  # "<namespace>-<service>-<port>", ingress-nginx's upstream naming
    servers: tuple[str, ...]  # "ip:port" of the ready endpoints, sorted


@dataclass(frozen=True)
class Location:
    path: str
    match: Match
    upstream: str | None  # None: no such Service or port; answered 503


@dataclass(frozen=True)
class Server:
    host: str  # CATCH_ALL_HOST for rules without a host
    locations: tuple[Location, ...]


@dataclass(frozen=True)
class IngressPlan:
    servers: tuple[Server, ...]
    upstreams: tuple[Upstream, ...]

    def endpoints(self) -> dict[str, list[str]]:
        """Upstream name → its servers: what a sync installs (for logs and truth)."""
        return {u.name: list(u.servers) for u in self.upstreams}


def _our_classes(classes: Iterable[Object], wanted: IngressClassFilter) -> tuple[set[str], bool]:
    """Names of our IngressClasses, and whether one of them is the cluster's default."""
    ours = [
        c for c in classes if (c.get("spec") or {}).get("controller") == wanted.controller_class
    ]
    names = {str(c["metadata"]["name"]) for c in ours}
    default = any(
        (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
        for c in ours
    )
    return names, default


def selected_ingresses(
    ingresses: Iterable[Object], classes: Iterable[Object], wanted: IngressClassFilter
) -> list[Object]:
    """Our Ingresses (module docstring), oldest first: the order conflicts are settled in."""
    names, default = _our_classes(classes, wanted)
    chosen = []
    for ingress in ingresses:
        class_name = (ingress.get("spec") or {}).get("ingressClassName")
        legacy = (ingress["metadata"].get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
        if class_name is not None:
            ok = class_name in names
        elif legacy is not None:
            ok = legacy == wanted.ingress_class
        else:
            ok = default
        if ok:
            chosen.append(ingress)
    return sorted(
        chosen,
        key=lambda i: (
            str(i["metadata"].get("creationTimestamp", "")),
            str(i["metadata"].get("namespace", "")),
            str(i["metadata"]["name"]),
        ),
    )


def _service_port(service: Object, port: Object) -> Object | None:
    for candidate in (service.get("spec") or {}).get("ports") or []:
        if port.get("name") and candidate.get("name") == port["name"]:
            return dict(candidate)
        if port.get("number") and candidate.get("port") == port["number"]:
            return dict(candidate)
    return None


def _ready_servers(slices: Iterable[Object], service_port: Object) -> tuple[str, ...]:
    """Ready endpoints of one Service port, each ``ip:targetPort`` once, over all its slices."""
    by_port = port_endpoints(slices, service_port.get("name") or "")
    servers = {
        f"{address}:{number}"
        for number, states in by_port.items()
        for address, state in states.items()
        if state.ready
    }
    return tuple(sorted(servers))


@dataclass
class _Backends:
    """The Services and slices backends resolve against, and the upstreams met so far."""

    services: dict[tuple[str, str], Object]
    slices: dict[tuple[str, str], list[Object]]
    upstreams: dict[str, Upstream]

    def resolve(self, namespace: str, backend: Object) -> str | None:
        service_ref = backend.get("service") or {}
        name = str(service_ref.get("name", ""))
        service = self.services.get((namespace, name))
        port = _service_port(service, service_ref.get("port") or {}) if service else None
        if port is None:
            return None
        upstream = f"{namespace}-{name}-{port.get('port')}"
        if upstream not in self.upstreams:
            servers = _ready_servers(self.slices.get((namespace, name), []), port)
            self.upstreams[upstream] = Upstream(upstream, servers)
        return upstream


def _locations(http_path: Object) -> list[tuple[str, Match]]:
    path = str(http_path.get("path") or "/")
    kind = http_path.get("pathType")
    if kind == "Exact":
        return [(path, "exact")]
    if kind == "Prefix" and path != "/":
        trimmed = path.rstrip("/")
        return [(trimmed, "exact"), (trimmed + "/", "prefix")]
    return [(path, "prefix")]


def plan_ingress(
    classes: Iterable[Object],
    ingresses: Iterable[Object],
    services: Iterable[Object],
    slices: Iterable[Object],
    wanted: IngressClassFilter,
) -> IngressPlan:
    """The whole plan; equal inputs give equal plans (sorted everywhere)."""
    backends = _Backends(
        {(s["metadata"].get("namespace", ""), s["metadata"]["name"]): s for s in services},
        {},
        {},
    )
    for endpoint_slice in slices:
        meta = endpoint_slice["metadata"]
        service_name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service_name:
            key = (str(meta.get("namespace", "")), str(service_name))
            backends.slices.setdefault(key, []).append(endpoint_slice)
    hosts: dict[str, dict[tuple[str, Match], Location]] = {CATCH_ALL_HOST: {}}
    for ingress in selected_ingresses(ingresses, classes, wanted):
        _add_ingress(ingress, backends, hosts)
    servers = tuple(
        Server(host, tuple(sorted(locations.values(), key=lambda loc: (loc.path, loc.match))))
        for host, locations in sorted(hosts.items())
    )
    return IngressPlan(servers, tuple(sorted(backends.upstreams.values(), key=lambda u: u.name)))


def _add_ingress(
    ingress: Object, backends: _Backends, hosts: dict[str, dict[tuple[str, Match], Location]]
) -> None:
    """An older Ingress's locations stay (setdefault): the oldest claim of a path wins."""
    namespace = str(ingress["metadata"].get("namespace", "default"))
    spec = ingress.get("spec") or {}
    for rule in spec.get("rules") or []:
        locations = hosts.setdefault(str(rule.get("host") or CATCH_ALL_HOST), {})
        for http_path in (rule.get("http") or {}).get("paths") or []:
            upstream = backends.resolve(namespace, http_path.get("backend") or {})
            for path, match in _locations(http_path):
                locations.setdefault((path, match), Location(path, match, upstream))
    if spec.get("defaultBackend"):
        upstream = backends.resolve(namespace, spec["defaultBackend"])
        hosts[CATCH_ALL_HOST].setdefault(("/", "prefix"), Location("/", "prefix", upstream))
