"""Upstream defaulting (SetDefaults_* in k8s.io/kubernetes/pkg/apis/*/v1) for the fields that
controllers, nodes and kubectl rely on being present. Applied on every write, as upstream applies
defaults on every decode; each function only fills what is missing, so it is idempotent."""

from __future__ import annotations

from collections.abc import Callable

from localcluster.apiclient import JsonObject


def _container_defaults(container: JsonObject) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    container.setdefault(
        "imagePullPolicy",
        "Always" if image.endswith(":latest") or ":" not in image else "IfNotPresent",
    )
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)


def pod_spec_defaults(spec: JsonObject) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _container_defaults(container)


def _template_defaults(spec: JsonObject) -> None:
    template = spec.setdefault("template", {})
    pod_spec_defaults(template.setdefault("spec", {}))


def _pod(obj: JsonObject) -> None:
    pod_spec_defaults(obj.setdefault("spec", {}))
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _deployment(obj: JsonObject) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template_defaults(spec)


def _replicaset(obj: JsonObject) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _template_defaults(spec)


def _service(obj: JsonObject) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _namespace(obj: JsonObject) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


DEFAULTERS: dict[str, Callable[[JsonObject], None]] = {
    "pods": _pod,
    "deployments": _deployment,
    "replicasets": _replicaset,
    "services": _service,
    "namespaces": _namespace,
}


def apply_defaults(resource: str, obj: JsonObject) -> None:
    defaulter = DEFAULTERS.get(resource)
    if defaulter is not None:
        defaulter(obj)
