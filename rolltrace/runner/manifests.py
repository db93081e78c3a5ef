"""Kubernetes manifests for a scenario: the demo app's Deployment and its LoadBalancer Service,
or the user's own (``manifests:`` / ``run --manifest``).

The same objects go to the local cluster and to real clusters (one code path). The demo app's
behaviour is passed as ``DEMOAPP_*`` environment variables (the app reads them; see
``python -m demoapp --help``) rather than args, so a `kubectl set env` can change it too.
Labels carry ``app.kubernetes.io/managed-by: rolltrace`` so that rolltrace can tell objects it
created from the user's (it refuses to touch the latter unless told to).

The user's own manifests are read with their locations (file, line, document, field) so that
every problem is a located message; the scenario's workload sections are then read from them
(``scenario_for``), so run.json records the probes, hook, grace period and strategy that really
ran. The local cluster runs ``local/NAME`` images as their own command; for any other image the
demo app stands in, with a warning (docs/try-your-own-app.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from analyzer.schema import L7_LB_HOP
from localcluster.kubelet.containers import DEMOAPP_IMAGE, LOCAL_IMAGE
from rolltrace.scenario import (
    App,
    Ingress,
    LocalCluster,
    PodSettings,
    PreStop,
    Probe,
    Scenario,
    ScenarioError,
    Service,
    Strategy,
    Workload,
    _line_of,
    yaml_error,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "rolltrace"}
APP_LABEL = "app.kubernetes.io/name"


def _probe(probe: Probe, port: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.path, "port": probe.port or port},
        "initialDelaySeconds": probe.initial_delay_s,
        "periodSeconds": probe.period_s,
        "timeoutSeconds": probe.timeout_s,
        "successThreshold": probe.success_threshold,
        "failureThreshold": probe.failure_threshold,
    }


def _pre_stop(pre_stop: PreStop, port: int) -> dict[str, Any]:
    if pre_stop.sleep_s is not None:
        return {"sleep": {"seconds": pre_stop.sleep_s}}  # native action, GA in 1.34 (KEP-3960)
    if pre_stop.exec is not None:
        return {"exec": {"command": pre_stop.exec}}
    return {"httpGet": {"path": pre_stop.http_get_path, "port": port}}


def _app_env(scenario: Scenario, app: App) -> list[dict[str, Any]]:
    values = {
        "DEMOAPP_PORT": scenario.workload.container_port,
        "DEMOAPP_STARTUP_DELAY": app.startup_delay_s,
        "DEMOAPP_WARMUP": app.warmup_s,
        "DEMOAPP_WARMUP_MODE": app.warmup_mode,
        "DEMOAPP_READY_LIES": str(app.ready_lies).lower(),
        "DEMOAPP_LATENCY": app.latency,
        "DEMOAPP_KEEPALIVE_TIMEOUT": app.keepalive_timeout_s,
        "DEMOAPP_SHUTDOWN": app.shutdown,
        "DEMOAPP_DRAIN_TIMEOUT": app.drain_timeout_s,
        "DEMOAPP_MAX_CONCURRENCY": app.max_concurrency,
        "DEMOAPP_IDLE_CLOSE": app.idle_close,
        "DEMOAPP_CRASH_AFTER": app.crash_after_s,
        "DEMOAPP_CRASH_AFTER_REQUESTS": app.crash_after_requests,
        "DEMOAPP_LIVENESS_FAIL_AFTER": app.liveness_fail_after_s,
        "DEMOAPP_READY_FLAP_PERIOD": app.ready_flap_period_s,
        "DEMOAPP_READY_FLAP_DOWN": app.ready_flap_down_s,
        "DEMOAPP_FLAP_MODE": app.flap_mode,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in values.items()]
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def deployment(scenario: Scenario, name: str = "demoapp") -> dict[str, Any]:
    port = scenario.workload.container_port
    pod = scenario.pod
    container: dict[str, Any] = {
        "name": "app",
        "image": scenario.workload.image,
        "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
        "env": _app_env(scenario, scenario.workload.app),
    }
    if pod.readiness_probe is not None:
        container["readinessProbe"] = _probe(pod.readiness_probe, port)
    if pod.liveness_probe is not None:
        container["livenessProbe"] = _probe(pod.liveness_probe, port)
    if pod.startup_probe is not None:
        container["startupProbe"] = _probe(pod.startup_probe, port)
    if pod.pre_stop is not None:
        container["lifecycle"] = {"preStop": _pre_stop(pod.pre_stop, port)}
    strategy: dict[str, Any] = {"type": scenario.strategy.type}
    if scenario.strategy.type == "RollingUpdate":
        strategy["rollingUpdate"] = {
            "maxSurge": scenario.strategy.max_surge,
            "maxUnavailable": scenario.strategy.max_unavailable,
        }
    labels = {APP_LABEL: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "replicas": scenario.workload.replicas,
            "selector": {"matchLabels": labels},
            "strategy": strategy,
            "minReadySeconds": scenario.strategy.min_ready_s,
            "progressDeadlineSeconds": scenario.strategy.progress_deadline_s,
            "revisionHistoryLimit": 10,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": pod.termination_grace_period_s,
                    "containers": [container],
                },
            },
        },
    }


def service(scenario: Scenario, name: str = "demoapp") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {APP_LABEL: name, **MANAGED_BY}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {APP_LABEL: name},
            "externalTrafficPolicy": scenario.service.external_traffic_policy,
            "ports": [
                {
                    "name": "http",
                    "port": scenario.service.port,
                    "targetPort": scenario.workload.container_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


# -- the ingress hop (cluster.ingress) -------------------------------------------------------
#: ingress-nginx's own object names (its Helm chart / static manifest), so a reader of the run's
#: objects recognises the hop.
INGRESS_CONTROLLER = "ingress-nginx-controller"
INGRESS_CLASS = "nginx"
INGRESS_CONTROLLER_CLASS = "k8s.io/ingress-nginx"
INGRESS_IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.12.1"
INGRESS_HTTP_PORT = 80
INGRESS_HEALTHZ_PORT = 10254  # ingress-nginx's --healthz-port
#: The ingress hop's name: its log is the run's ``hops/ingress.log``, its run.json hop entry's name.
INGRESS_HOP = "ingress"


def ingress_controller_args(ingress: Ingress, kubeconfig: str) -> list[str]:
    """The controller's command line, as ingress-nginx's manifest gives it; the ConfigMap keys
    the scenario sets are flags of the same name here (localcluster/ingress/__main__.py)."""
    args = [
        "/nginx-ingress-controller",
        f"--kubeconfig={kubeconfig}",
        f"--ingress-class={INGRESS_CLASS}",
        f"--controller-class={INGRESS_CONTROLLER_CLASS}",
        f"--http-port={INGRESS_HTTP_PORT}",
        f"--healthz-port={INGRESS_HEALTHZ_PORT}",
        f"--sync-interval={ingress.sync_interval_s:g}",
        f"--proxy-next-upstream={ingress.next_upstream}",
        f"--proxy-next-upstream-tries={ingress.next_upstream_tries}",
        f"--proxy-connect-timeout={ingress.connect_timeout_s:g}",
        f"--upstream-keepalive-timeout={ingress.upstream_keepalive_timeout_s:g}",
    ]
    if ingress.mode == "dynamic":  # the controller's default is reload: say only the change
        args.append("--sync-mode=dynamic")
    return args


def _ingress_controller(ingress: Ingress, kubeconfig: str) -> dict[str, Any]:
    labels = {APP_LABEL: INGRESS_CONTROLLER}
    container = {
        "name": "controller",
        "image": INGRESS_IMAGE,
        "args": ingress_controller_args(ingress, kubeconfig),
        "ports": [
            {"containerPort": INGRESS_HTTP_PORT, "name": "http", "protocol": "TCP"},
            {"containerPort": INGRESS_HEALTHZ_PORT, "name": "healthz", "protocol": "TCP"},
        ],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": _probe(Probe(path="/healthz"), INGRESS_HEALTHZ_PORT),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": INGRESS_CONTROLLER, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "replicas": ingress.replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def ingress_objects(
    scenario: Scenario, backend: dict[str, Any], kubeconfig: str
) -> list[dict[str, Any]]:
    """The ingress hop as ingress-nginx is deployed: the controller's Deployment and its
    LoadBalancer Service, the IngressClass ``nginx`` and an Ingress sending ``/`` to
    ``backend`` (the workload's Service). ``kubeconfig``: how the controller's Pod reaches the
    API server (the local cluster's in-network kubeconfig). Empty without ``cluster.ingress``."""
    ingress = scenario.ingress()
    if ingress is None:
        return []
    name = backend["metadata"]["name"]
    port = backend["spec"]["ports"][0]["port"]
    controller = {APP_LABEL: INGRESS_CONTROLLER}
    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": INGRESS_CONTROLLER, "labels": {**controller, **MANAGED_BY}},
        "spec": {
            "type": "LoadBalancer",
            "selector": controller,
            "externalTrafficPolicy": scenario.service.external_traffic_policy,
            "ports": [{"name": "http", "port": scenario.service.port, "targetPort": INGRESS_HTTP_PORT,
                       "protocol": "TCP"}],
        },
    }  # fmt: skip
    ingress_class = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS, "labels": dict(MANAGED_BY)},
        "spec": {"controller": INGRESS_CONTROLLER_CLASS},
    }
    path = {"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": name, "port": {"number": port}}}}  # fmt: skip
    route = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "spec": {"ingressClassName": INGRESS_CLASS, "rules": [{"http": {"paths": [path]}}]},
    }
    return [ingress_class, _ingress_controller(ingress, kubeconfig), lb, route]


def behind_ingress(scenario: Scenario, service_obj: dict[str, Any]) -> dict[str, Any]:
    """The workload's Service as the run applies it: with an ingress in front, a plain
    ClusterIP Service (the hop's Service is the LoadBalancer); otherwise unchanged."""
    if scenario.ingress() is None:
        return service_obj
    plain = copy.deepcopy(service_obj)
    plain["spec"]["type"] = "ClusterIP"
    plain["spec"].pop("externalTrafficPolicy", None)
    return plain


def hop_records(scenario: Scenario) -> list[dict[str, Any]]:
    """run.json ``hops``: the L7 hops the run put in the request path, in path order (the L7
    LB, then the ingress), with the settings the analyzer and the judge read
    (docs/trace-format.md, run.json)."""
    hops = []
    lb = scenario.cluster.lb if isinstance(scenario.cluster, LocalCluster) else None
    if lb is not None and lb.mode == "l7":
        hops.append({
            "name": L7_LB_HOP, "kind": "alb", "targets": lb.targets,
            "idle_timeout_s": lb.idle_timeout_s, "connect_timeout_s": lb.connect_timeout_s,
            "draining": lb.draining, "deregistration_delay_s": lb.deregistration_delay_s,
        })  # fmt: skip
    ingress = scenario.ingress()
    if ingress is not None:
        hops.append({
            "name": INGRESS_HOP, "kind": "ingress-nginx", "service": INGRESS_CONTROLLER,
            "deployment": INGRESS_CONTROLLER, "port": INGRESS_HTTP_PORT,
            "sync_interval_s": ingress.sync_interval_s, "mode": ingress.mode,
            "next_upstream": ingress.next_upstream, "tries": ingress.next_upstream_tries,
            "connect_timeout_s": ingress.connect_timeout_s,
            "upstream_keepalive_timeout_s": ingress.upstream_keepalive_timeout_s,
            "replicas": ingress.replicas,
        })  # fmt: skip
    return hops


def rollout_patch(scenario: Scenario, now_iso: str) -> dict[str, Any]:
    """The strategic-merge patch that triggers the rollout (what `kubectl rollout restart` /
    `kubectl set image` / `kubectl set env` send). ``rollout.app`` changes the container's env
    (merged by name), so only the new revision gets it."""
    rollout = scenario.rollout
    if rollout.trigger == "patch":
        if not rollout.patch:
            raise ValueError("rollout.trigger 'patch' needs rollout.patch")
        return rollout.patch
    container: dict[str, Any] = {"name": _container_name(scenario)}
    if rollout.trigger == "image":
        if not rollout.image:
            raise ValueError("rollout.trigger 'image' needs rollout.image")
        container["image"] = rollout.image
    if rollout.app is not None:
        container["env"] = _app_env(scenario, scenario.new_app())
    template: dict[str, Any] = {}
    if len(container) > 1:
        template["spec"] = {"containers": [container]}
    if rollout.trigger == "restart":
        template["metadata"] = {"annotations": {"kubectl.kubernetes.io/restartedAt": now_iso}}
    return {"spec": {"template": template}}


def _container_name(scenario: Scenario) -> str:
    """The container a rollout patch changes: the demo app's, or the first of the user's."""
    if not scenario.manifests.files:
        return "app"
    return str(load_user_workload(scenario).containers[0]["name"])


# -- the user's own manifests ----------------------------------------------------------------
class ManifestError(ScenarioError):
    """A user manifest is unusable; the message names file, line, document and field."""


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file and where it came from (for located errors)."""

    file: str
    index: int  # 1-based position in the file's document stream
    obj: dict[str, Any]
    node: yaml.Node | None

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    def where(self, *loc: str | int) -> str:
        """``file:line (document N): field.path`` of ``loc`` in this document."""
        line = _line_of(self.node, loc)
        place = f"{self.file}:{line}" if line else self.file
        path = ".".join(f"[{p}]" if isinstance(p, int) else p for p in loc).replace(".[", "[")
        return f"{place} (document {self.index})" + (f": {path}" if path else "")

    def get(self, *loc: str | int) -> Any:
        value: Any = self.obj
        for part in loc:
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and isinstance(part, int) and part < len(value):
                value = value[part]
            else:
                return None
        return value

    def require(self, loc: tuple[str | int, ...], kind: type, what: str) -> Any:
        value = self.get(*loc)
        if not isinstance(value, kind) or (isinstance(value, list | dict | str) and not value):
            raise ManifestError(f"{self.where(*loc)}: {what}")
        return value


@dataclass(frozen=True)
class UserWorkload:
    """The Deployment and LoadBalancer Service chosen from the user's manifests."""

    deployment: Document
    service: Document
    notes: list[str] = field(default_factory=list)  # documents left out, for the user

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.deployment.obj["spec"]["template"]["spec"]["containers"])


def read_documents(path: Path) -> list[Document]:
    """Every non-empty document of a (multi-document) YAML file, each a mapping."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        objects, nodes = list(yaml.safe_load_all(text)), list(yaml.compose_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(yaml_error(str(path), exc)) from None
    documents = []
    for index, (obj, node) in enumerate(zip(objects, nodes, strict=True), start=1):
        if obj is None:
            continue
        document = Document(str(path), index, obj if isinstance(obj, dict) else {}, node)
        if not isinstance(obj, dict):
            raise ManifestError(f"{document.where()}: a manifest is a mapping (kind:, ...)")
        document.require(("kind",), str, "missing: every manifest names its kind")
        document.require(("metadata", "name"), str, "missing: every object has a name")
        documents.append(document)
    return documents


Loc = tuple[str | int, ...]
Shape = list[tuple[Loc, type | tuple[type, ...]]]
_TIMINGS = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "successThreshold",
            "failureThreshold")  # fmt: skip
# The fields rolltrace reads, and the type each must have when present (upstream's schema)
_DEPLOYMENT_SHAPE: Shape = [
    (("metadata", "labels"), dict), (("spec", "replicas"), int), (("spec", "strategy"), dict),
    (("spec", "strategy", "type"), str), (("spec", "strategy", "rollingUpdate"), dict),
    (("spec", "strategy", "rollingUpdate", "maxSurge"), (int, str)),
    (("spec", "strategy", "rollingUpdate", "maxUnavailable"), (int, str)),
    (("spec", "minReadySeconds"), int), (("spec", "progressDeadlineSeconds"), int),
    (("spec", "template", "spec", "terminationGracePeriodSeconds"), int),
]  # fmt: skip
_HANDLER_SHAPE: Shape = [
    (("httpGet",), dict), (("httpGet", "path"), str), (("httpGet", "port"), (int, str)),
    (("tcpSocket",), dict), (("tcpSocket", "port"), (int, str)), (("exec",), dict),
    (("exec", "command"), list), (("sleep",), dict), (("sleep", "seconds"), int),
]  # fmt: skip
_CONTAINER_SHAPE: Shape = [
    (("ports",), list), (("env",), list), (("command",), list), (("args",), list),
    (("lifecycle",), dict), (("lifecycle", "preStop"), dict),
    *((("lifecycle", "preStop", *loc), kind) for loc, kind in _HANDLER_SHAPE),
    *(((probe,), dict) for probe in ("readinessProbe", "livenessProbe", "startupProbe")),
    *(((probe, *loc), kind) for probe in ("readinessProbe", "livenessProbe", "startupProbe")
      for loc, kind in [*_HANDLER_SHAPE, *(((t,), int) for t in _TIMINGS)]),
]  # fmt: skip
_SERVICE_SHAPE: Shape = [
    (("metadata", "labels"), dict), (("spec", "ports"), list),
    (("spec", "externalTrafficPolicy"), str),
]  # fmt: skip


def _check_shape(doc: Document, shape: Shape, prefix: Loc = ()) -> None:
    """A located error for the first field present with the wrong type."""
    for loc, kind in shape:
        value = doc.get(*prefix, *loc)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ManifestError(
                f"{doc.where(*prefix, *loc)}: must be {_KIND_NAMES.get(names, names)}"
            )


def _check_items(doc: Document, loc: Loc, fields: Shape) -> None:
    """Each item of the list at ``loc`` is a mapping whose ``fields`` have the right types."""
    for index in range(len(doc.get(*loc) or [])):
        doc.require((*loc, index), dict, "must be a mapping")
        _check_shape(doc, fields, (*loc, index))


_KIND_NAMES = {"dict": "a mapping", "list": "a list", "int": "an integer", "str": "a string",
               "int or str": "an integer or a name"}  # fmt: skip


def _check_deployment(doc: Document) -> dict[str, str]:
    """Checks what running the Deployment needs; returns its Pod template's labels."""
    if doc.get("apiVersion") != "apps/v1":
        raise ManifestError(f"{doc.where('apiVersion')}: expected apps/v1")
    selector = doc.require(("spec", "selector", "matchLabels"), dict,
                           "needed (rolltrace selects the Deployment's Pods by matchLabels)")  # fmt: skip
    labels = doc.require(("spec", "template", "metadata", "labels"), dict, "missing")
    if any(labels.get(k) != v for k, v in selector.items()):
        raise ManifestError(
            f"{doc.where('spec', 'template', 'metadata', 'labels')}: does not match "
            f"spec.selector.matchLabels {selector}"
        )
    _check_shape(doc, _DEPLOYMENT_SHAPE)
    containers = doc.require(("spec", "template", "spec", "containers"), list, "needs a container")
    for index in range(len(containers)):
        loc = ("spec", "template", "spec", "containers", index)
        doc.require(loc, dict, "must be a mapping")
        doc.require((*loc, "name"), str, "missing")
        doc.require((*loc, "image"), str, "missing")
        _check_shape(doc, _CONTAINER_SHAPE, loc)
        _check_items(doc, (*loc, "ports"), [(("containerPort",), int), (("name",), str)])
        _check_items(doc, (*loc, "env"), [(("name",), str)])
    return {str(k): str(v) for k, v in labels.items()}


def _selects(service: Document, labels: dict[str, str]) -> bool:
    selector = service.get("spec", "selector")
    return (
        isinstance(selector, dict)
        and bool(selector)
        and all(labels.get(str(k)) == str(v) for k, v in selector.items())
    )


def _pick(candidates: list[Document], name: str | None, kind: str, option: str) -> Document:
    """The one candidate (of the given name): an error lists what there is otherwise."""
    chosen = [d for d in candidates if name is None or d.name == name]
    if len(chosen) == 1:
        return chosen[0]
    found = ", ".join(f"{d.name} ({d.where()})" for d in candidates) or "none"
    if not chosen:
        wanted = f"named {name!r} " if name else ""
        raise ManifestError(f"no {kind} {wanted}in the manifests; found: {found}")
    raise ManifestError(f"more than one {kind} in the manifests: {found}; name one with {option}")


def _unfit(service: Document, labels: dict[str, str]) -> str | None:
    """Why a Service cannot carry the load to the Deployment's Pods, or None."""
    kind = service.get("spec", "type") or "ClusterIP"
    if kind != "LoadBalancer":
        return f"{service.where('spec', 'type')}: type {kind}, not LoadBalancer"
    if not _selects(service, labels):
        selector = service.get("spec", "selector")
        return f"{service.where('spec', 'selector')}: selects {selector}, not these Pods"
    return None


def _pick_service(services: list[Document], name: str | None, deployment: Document) -> Document:
    labels = _check_deployment(deployment)
    if name is not None:
        picked = _pick(services, name, "Service", "manifests.service")
        unfit = _unfit(picked, labels)
        if unfit:
            raise ManifestError(unfit)
        return picked
    fit = [s for s in services if _unfit(s, labels) is None]
    if not fit:
        why = "; ".join(f"Service {s.name}: {_unfit(s, labels)}" for s in services)
        raise ManifestError(
            f"no Service of type LoadBalancer selects Deployment {deployment.name}'s Pods "
            f"({labels}) in the manifests" + (f"; {why}" if why else "")
        )
    return _pick(fit, None, "LoadBalancer Service selecting the Pods", "manifests.service")


def select_workload(
    documents: list[Document], deployment: str | None = None, service: str | None = None
) -> UserWorkload:
    """Exactly one Deployment and one LoadBalancer Service selecting its Pods."""
    chosen = _pick([d for d in documents if d.kind == "Deployment"], deployment, "Deployment",
                   "manifests.deployment (--set manifests.deployment=NAME)")  # fmt: skip
    services = [d for d in documents if d.kind == "Service"]
    picked = _pick_service(services, service, chosen)
    _check_shape(picked, _SERVICE_SHAPE)
    picked.require(("spec", "ports", 0, "port"), int, "needs a port")
    _check_items(picked, ("spec", "ports"), [(("port",), int), (("targetPort",), (int, str))])
    notes = [
        f"{d.where()}: {d.kind} {d.name} is not applied (rolltrace applies one Deployment and "
        f"its LoadBalancer Service)"
        for d in documents
        if d is not chosen and d is not picked
    ]
    return UserWorkload(chosen, picked, notes)


def load_user_workload(scenario: Scenario) -> UserWorkload:
    spec = scenario.manifests
    documents = [d for f in spec.files for d in read_documents(Path(f))]
    return select_workload(documents, spec.deployment, spec.service)


# -- what the manifests make of the scenario -------------------------------------------------
# core/v1 Probe's defaults, which a manifest may leave out (the scenario's own differ)
_PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1,
                   "successThreshold": 1, "failureThreshold": 3}  # fmt: skip


def _port_number(port: Any, container: dict[str, Any]) -> int | None:
    """A port given as a number or by the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = [p for p in container.get("ports") or [] if p.get("name") == port]
    return int(named[0]["containerPort"]) if named else None


def _probe_fields(probe: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """A probe as the scenario records it; ``path`` is empty for a non-HTTP probe."""
    timing = {**_PROBE_DEFAULTS, **probe}
    http = probe.get("httpGet")
    handler = http or probe.get("tcpSocket") or {}
    return {
        "path": str(http.get("path", "/")) if http else "",
        "port": _port_number(handler.get("port"), container),
        "initial_delay_s": timing["initialDelaySeconds"],
        "period_s": timing["periodSeconds"],
        "timeout_s": timing["timeoutSeconds"],
        "success_threshold": timing["successThreshold"],
        "failure_threshold": timing["failureThreshold"],
    }


def _pre_stop_fields(hook: dict[str, Any] | None) -> dict[str, Any] | None:
    if not hook:
        return None
    if "sleep" in hook:
        return {"sleep_s": hook["sleep"].get("seconds")}
    if "exec" in hook:
        return {"exec": [str(c) for c in hook["exec"].get("command") or []]}
    return {"http_get_path": str((hook.get("httpGet") or {}).get("path", "/"))}


def _target_port(user: UserWorkload) -> int:
    """The port the app listens on: the Service's targetPort (a number or a container port's
    name), its port when it has none, else the container's first port."""
    container = user.containers[0]
    ports = user.service.obj["spec"]["ports"][0]
    target = _port_number(ports.get("targetPort", ports["port"]), container)
    if target is None:
        declared = container.get("ports") or [{}]
        target = declared[0].get("containerPort")
    if not isinstance(target, int):
        raise ManifestError(
            f"{user.service.where('spec', 'ports', 0, 'targetPort')}: names no port of "
            f"container {container['name']}"
        )
    return target


def _settings(user: UserWorkload) -> dict[str, Any]:
    """The scenario's workload sections as the manifests set them (upstream defaults filled)."""
    spec, service = user.deployment.obj["spec"], user.service.obj["spec"]
    pod, container = spec["template"]["spec"], user.containers[0]
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    probes = {
        f"{kind}_probe": _probe_fields(container[f"{kind}Probe"], container)
        if container.get(f"{kind}Probe") else None
        for kind in ("readiness", "liveness", "startup")
    }  # fmt: skip
    return {
        "workload": {"replicas": spec.get("replicas", 1), "image": container["image"],
                     "container_port": _target_port(user)},
        "pod": {**probes,
                "pre_stop": _pre_stop_fields((container.get("lifecycle") or {}).get("preStop")),
                "termination_grace_period_s": pod.get("terminationGracePeriodSeconds", 30)},
        "strategy": {"type": (spec.get("strategy") or {}).get("type", "RollingUpdate"),
                     "max_surge": rolling.get("maxSurge", "25%"),
                     "max_unavailable": rolling.get("maxUnavailable", "25%"),
                     "min_ready_s": spec.get("minReadySeconds", 0),
                     "progress_deadline_s": spec.get("progressDeadlineSeconds", 600)},
        "service": {"external_traffic_policy": service.get("externalTrafficPolicy", "Cluster"),
                    "port": service["ports"][0]["port"]},
    }  # fmt: skip


_SECTION_MODELS: dict[str, type[BaseModel]] = {"workload": Workload, "pod": PodSettings, "strategy": Strategy,
                   "service": Service}  # fmt: skip


def scenario_for(scenario: Scenario, user: UserWorkload) -> Scenario:
    """The scenario as the manifests make it, so that run.json records the probes, hook, grace
    period, strategy and policy that really ran: attribution derives its timings from them."""
    update: dict[str, Any] = {}
    for section, values in _settings(user).items():
        try:
            update[section] = _SECTION_MODELS[section].model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            doc = user.service if section == "service" else user.deployment
            field_path = ".".join(str(p) for p in (section, *error["loc"]))
            raise ManifestError(
                f"{doc.where()}: {doc.kind} {doc.name}: {field_path}: {error['msg']}"
            ) from None
    return scenario.model_copy(update=update)


def _stand_in(container: dict[str, Any], port: int) -> str | None:
    """Puts the demo app in place of an image the local cluster cannot run; why, or None."""
    image = str(container["image"])
    if DEMOAPP_IMAGE.match(image) or LOCAL_IMAGE.match(image):
        return None
    container["image"] = Workload().image
    dropped = [key for key in ("command", "args") if container.pop(key, None) is not None]
    env = container.setdefault("env", [])
    if not any(item.get("name") == "DEMOAPP_PORT" for item in env):
        env.append({"name": "DEMOAPP_PORT", "value": str(port)})
    return (
        f"container {container['name']}: the local cluster cannot run image {image!r}; the demo "
        f"app stands in for it on port {port}"
        + (f" ({' and '.join(dropped)} dropped)" if dropped else "")
        + ": set DEMOAPP_* env to match your app's behaviour (docs/try-your-own-app.md), or "
        "use image local/NAME to run your own command"
    )


def user_objects(
    scenario: Scenario, user: UserWorkload
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The Service and Deployment to apply, and what was changed to run them here: the
    namespace is the run's, the objects are labelled as rolltrace's (so it may replace and
    remove them), and on the local cluster the demo app stands in for images it cannot run
    (a sidecar that cannot run is left out)."""
    service_obj = copy.deepcopy(user.service.obj)
    deployment_obj = copy.deepcopy(user.deployment.obj)
    notes = []
    for obj in (service_obj, deployment_obj):
        meta = obj["metadata"]
        meta.pop("namespace", None)
        meta["labels"] = {**(meta.get("labels") or {}), **MANAGED_BY}
    if scenario.cluster.kind == "local":
        pod = deployment_obj["spec"]["template"]["spec"]
        app, *sidecars = pod["containers"]
        note = _stand_in(app, scenario.workload.container_port)
        notes += [note] if note else []
        runnable = [
            c for c in sidecars if DEMOAPP_IMAGE.match(c["image"]) or LOCAL_IMAGE.match(c["image"])
        ]
        notes += [
            f"container {c['name']}: image {c['image']!r} cannot run on the local cluster; "
            f"this sidecar is left out"
            for c in sidecars if c not in runnable
        ]  # fmt: skip
        pod["containers"] = [app, *runnable]
    return service_obj, deployment_obj, notes


def workload_objects(scenario: Scenario) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Service and Deployment a run applies: the user's own, or the demo app's."""
    if not scenario.manifests.files:
        return behind_ingress(scenario, service(scenario)), deployment(scenario)
    service_obj, deployment_obj, _ = user_objects(scenario, load_user_workload(scenario))
    return behind_ingress(scenario, service_obj), deployment_obj


def prepare(scenario: Scenario) -> tuple[Scenario, list[str]]:
    """A scenario with manifests: checked, its workload sections read from them, and the
    warnings to show (sections the manifests override, documents left out, stand-ins)."""
    if not scenario.manifests.files:
        return scenario, []
    if scenario.rollout.app is not None:
        raise ManifestError(
            "rollout.app changes the demo app's env, which your manifests do not use; put the "
            "change in rollout.patch (a strategic merge patch of your Deployment)"
        )
    user = load_user_workload(scenario)
    warnings = [
        f"scenario {section}: is ignored: the manifests describe the workload"
        for section in scenario.ignored_sections()
    ]
    resolved = scenario_for(scenario, user)
    _, _, changes = user_objects(resolved, user)
    return resolved, [*warnings, *user.notes, *changes]
