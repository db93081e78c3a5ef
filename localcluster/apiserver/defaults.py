"""Upstream defaulting (SetDefaults_* in k8s.io/kubernetes/pkg/apis/*/v1) plus the fields
upstream always serializes, so that clients written against a real cluster (typed models that
require ``status.replicas``, ``nodeInfo.bootID`` ...) work unchanged here.

Two sources of always-present fields: the defaulters, and Go's JSON encoding of the v1 types,
which writes a field without ``omitempty`` (and every struct-valued field, since ``omitempty``
does not drop structs) even at its zero value: ``ReplicaSetStatus.replicas``,
``ContainerStatus.restartCount``, ``Event.reportingInstance``, ``Endpoint.conditions`` ...
Applied on every write (create, update, status update), as upstream decodes, defaults and
re-encodes every object it stores; each function only fills what is missing, so it is idempotent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from localcluster.apiclient import JsonObject

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every Namespace since 1.21
# NodeSystemInfo: every field is a plain string without omitempty.
_NODE_INFO_FIELDS = (
    "machineID",
    "systemUUID",
    "bootID",
    "kernelVersion",
    "osImage",
    "containerRuntimeVersion",
    "kubeletVersion",
    "kubeProxyVersion",
    "operatingSystem",
    "architecture",
)
# ContainerStatus fields without omitempty (state/lastState are structs: always written).
_CONTAINER_STATUS_ZEROS: JsonObject = {
    "state": {},
    "lastState": {},
    "ready": False,
    "restartCount": 0,
    "image": "",
    "imageID": "",
}
# Event fields without omitempty (source and involvedObject are structs: always written).
_EVENT_ZEROS: JsonObject = {
    "involvedObject": {},
    "source": {},
    "reportingComponent": "",
    "reportingInstance": "",
}


def _fill(obj: JsonObject, zeros: JsonObject) -> None:
    """Missing or null fields get their zero value, as Go decodes them."""
    for key, zero in zeros.items():
        if obj.get(key) is None:
            obj[key] = copy.deepcopy(zero)


def _section(obj: JsonObject, key: str) -> JsonObject:
    """``obj[key]`` as a dict, created when missing or null (Go decodes null as the zero struct)."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = obj[key] = {}
    return value


def _dicts(items: object) -> list[JsonObject]:
    """The dict entries of a list field that may be missing or null."""
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _handler_defaults(handler: object) -> None:
    """SetDefaults_HTTPGetAction, for probes and lifecycle hooks alike."""
    http_get = handler.get("httpGet") if isinstance(handler, dict) else None
    if isinstance(http_get, dict):
        http_get.setdefault("path", "/")
        http_get.setdefault("scheme", "HTTP")


def _probe_defaults(probe: JsonObject) -> None:
    _handler_defaults(probe)
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)


def _container_defaults(container: JsonObject) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    container.setdefault(
        "imagePullPolicy",
        "Always" if image.endswith(":latest") or ":" not in image else "IfNotPresent",
    )
    _section(container, "resources")
    for port in _dicts(container.get("ports")):
        port.setdefault("protocol", "TCP")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            _probe_defaults(probe)
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            _handler_defaults(lifecycle.get(hook))


def pod_spec_defaults(spec: JsonObject) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    _section(spec, "securityContext")
    spec.setdefault("enableServiceLinks", True)
    for field in ("containers", "initContainers"):
        for container in _dicts(spec.get(field)):
            _container_defaults(container)


def _template_defaults(spec: JsonObject) -> None:
    template = _section(spec, "template")
    pod_spec_defaults(_section(template, "spec"))


def _pod(obj: JsonObject) -> None:
    pod_spec_defaults(_section(obj, "spec"))
    status = _section(obj, "status")
    status.setdefault("phase", "Pending")
    for field in ("containerStatuses", "initContainerStatuses"):
        for container_status in _dicts(status.get(field)):
            _fill(container_status, _CONTAINER_STATUS_ZEROS)


def _deployment(obj: JsonObject) -> None:
    spec = _section(obj, "spec")
    spec.setdefault("replicas", 1)
    strategy = _section(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _section(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template_defaults(spec)
    _section(obj, "status")  # DeploymentStatus: every field is omitempty


def _replicaset(obj: JsonObject) -> None:
    spec = _section(obj, "spec")
    spec.setdefault("replicas", 1)
    _template_defaults(spec)
    _section(obj, "status").setdefault("replicas", 0)  # not omitempty upstream


def _service(obj: JsonObject) -> None:
    spec = _section(obj, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":  # an ExternalName Service has no IPs, hence no families
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in _dicts(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    _section(_section(obj, "status"), "loadBalancer")


def _namespace(obj: JsonObject) -> None:
    meta = _section(obj, "metadata")
    labels = meta.get("labels") or {}
    labels[NAMESPACE_NAME_LABEL] = meta.get("name", "")  # upstream overwrites a wrong value
    meta["labels"] = labels
    _section(obj, "spec").setdefault("finalizers", ["kubernetes"])
    _section(obj, "status").setdefault("phase", "Active")


def _node(obj: JsonObject) -> None:
    _section(obj, "spec")
    status = _section(obj, "status")
    if "capacity" in status:  # SetDefaults_NodeStatus
        status.setdefault("allocatable", copy.deepcopy(status["capacity"]))
    _section(_section(status, "daemonEndpoints"), "kubeletEndpoint").setdefault("Port", 0)
    _fill(_section(status, "nodeInfo"), dict.fromkeys(_NODE_INFO_FIELDS, ""))


def _event(obj: JsonObject) -> None:
    _fill(obj, _EVENT_ZEROS)


def _endpointslice(obj: JsonObject) -> None:
    for endpoint in _dicts(obj.get("endpoints")):
        _section(endpoint, "conditions")  # a struct: always written


def _controllerrevision(obj: JsonObject) -> None:
    obj.setdefault("revision", 0)  # int64 without omitempty


def _role(obj: JsonObject) -> None:
    """Role/ClusterRole ``rules`` has no omitempty: a nil slice is written as null; each
    PolicyRule's ``verbs`` likewise."""
    obj.setdefault("rules", None)
    for rule in _dicts(obj.get("rules")):
        rule.setdefault("verbs", None)


def _ingress(obj: JsonObject) -> None:
    """IngressStatus.loadBalancer is a struct: always written, like a Service's."""
    _section(_section(obj, "status"), "loadBalancer")


def _nothing_always_written(obj: JsonObject) -> None:
    """ServiceAccount, the bindings and IngressClass: every optional field is omitempty (a binding's roleRef
    is required, so validation, not defaulting, sees to it)."""


DEFAULTERS: dict[str, Callable[[JsonObject], None]] = {
    "pods": _pod,
    "deployments": _deployment,
    "replicasets": _replicaset,
    "services": _service,
    "namespaces": _namespace,
    "nodes": _node,
    "events": _event,
    "endpointslices": _endpointslice,
    "controllerrevisions": _controllerrevision,
    "serviceaccounts": _nothing_always_written,
    "roles": _role,
    "clusterroles": _role,
    "rolebindings": _nothing_always_written,
    "clusterrolebindings": _nothing_always_written,
    "ingresses": _ingress,
    "ingressclasses": _nothing_always_written,
}


def apply_defaults(resource: str, obj: JsonObject) -> None:
    defaulter = DEFAULTERS.get(resource)
    if defaulter is not None:
        defaulter(obj)
