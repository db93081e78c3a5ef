"""The subset of upstream validation (pkg/apis/*/validation) that catches manifest mistakes a
real cluster would reject and that would otherwise make controllers misbehave silently: names,
workload selectors that do not select their own template, negative replicas, immutable
selectors, impossible Service ports, missing required fields (an EndpointSlice's
addressType, a ControllerRevision's data), and the Ingress fields the local ingress controller
reads (``networking``). Everything else is accepted as written."""

from __future__ import annotations

from localcluster.apiclient import JsonObject
from localcluster.apiserver import errors
from localcluster.apiserver.networking import (
    DNS1123_SUBDOMAIN,
    ingress_class_problems,
    ingress_problems,
)
from localcluster.apiserver.selectors import Requirement

_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
# RBAC objects are named by path segment (upstream's ValidatePathSegmentName): "system:discovery"
_PATH_SEGMENT_NAMED = ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
_ROLE_REF_KINDS = {"rolebindings": ("Role", "ClusterRole"), "clusterrolebindings": ("ClusterRole",)}


def label_selector_requirements(selector: JsonObject) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    requirements = [
        Requirement(key, "=", frozenset([str(value)]))
        for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        operator = _OPERATORS.get(str(expression.get("operator")))
        if operator is None:
            raise ValueError(f"unknown operator {expression.get('operator')!r}")
        values = frozenset(str(v) for v in expression.get("values") or [])
        requirements.append(Requirement(str(expression.get("key")), operator, values))
    return requirements


def _workload_problems(obj: JsonObject, previous: JsonObject | None) -> list[str]:
    spec = obj.get("spec") or {}
    problems = []
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        problems.append(
            f"spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0"
        )
    selector = spec.get("selector") or {}
    try:
        requirements = label_selector_requirements(selector)
    except ValueError as exc:
        return [*problems, f"spec.selector: Invalid value: {exc}"]
    if not requirements:
        problems.append("spec.selector: Required value")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if requirements and not all(r.matches(labels) for r in requirements):
        problems.append(
            f"spec.template.metadata.labels: Invalid value: {labels!r}: "
            "`selector` does not match template `labels`"
        )
    if previous is not None and (previous.get("spec") or {}).get("selector") != selector:
        problems.append(f"spec.selector: Invalid value: {selector!r}: field is immutable")
    return problems


def _service_problems(obj: JsonObject) -> list[str]:
    spec = obj.get("spec") or {}
    problems = []
    if spec.get("type", "ClusterIP") not in _SERVICE_TYPES:
        problems.append(f"spec.type: Unsupported value: {spec.get('type')!r}")
    for index, port in enumerate(spec.get("ports") or []):
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            problems.append(f"spec.ports[{index}].port: Invalid value: {number!r}")
    return problems


def _name_problems(resource: str, name: str) -> list[str]:
    if resource in _PATH_SEGMENT_NAMED:
        if name and name not in (".", "..") and not any(c in name for c in "/%"):
            return []
        return [f"metadata.name: Invalid value: {name!r}: may not be '.', '..' or contain '/', '%'"]
    if name and len(name) <= 253 and DNS1123_SUBDOMAIN.match(name):
        return []
    return ["metadata.name: Invalid value: a lowercase RFC 1123 subdomain is required"]


def _binding_problems(resource: str, obj: JsonObject, previous: JsonObject | None) -> list[str]:
    """roleRef is required and immutable; a ClusterRoleBinding's ServiceAccount subjects need
    a namespace (a RoleBinding's default to its own)."""
    role_ref = obj.get("roleRef") or {}
    problems = []
    if role_ref.get("kind") not in _ROLE_REF_KINDS[resource] or not role_ref.get("name"):
        kinds = " or ".join(_ROLE_REF_KINDS[resource])
        problems.append(f"roleRef: Invalid value: {role_ref!r}: a {kinds} name is required")
    if previous is not None and previous.get("roleRef") != obj.get("roleRef"):
        problems.append("roleRef: Invalid value: cannot change roleRef")
    for index, subject in enumerate(obj.get("subjects") or []):
        if subject.get("kind") not in ("User", "Group", "ServiceAccount"):
            problems.append(f"subjects[{index}].kind: Unsupported value: {subject.get('kind')!r}")
        elif (
            resource == "clusterrolebindings"
            and subject.get("kind") == "ServiceAccount"
            and not subject.get("namespace")
        ):
            problems.append(f"subjects[{index}].namespace: Required value")
    return problems


def _required_problems(resource: str, obj: JsonObject) -> list[str]:
    """Fields without which upstream rejects the object (and typed clients could not read it)."""
    if resource == "endpointslices" and not obj.get("addressType"):
        return ["addressType: Required value"]
    if resource == "controllerrevisions" and obj.get("data") is None:
        return ["data: Required value: data is mandatory"]
    return []


def validate(resource: str, kind: str, obj: JsonObject, previous: JsonObject | None = None) -> None:
    """Raises 422 Invalid listing every problem, as upstream reports a field.ErrorList."""
    name = str(obj.get("metadata", {}).get("name", ""))
    problems = _name_problems(resource, name)
    problems += _required_problems(resource, obj)
    if resource in ("deployments", "replicasets"):
        problems += _workload_problems(obj, previous)
    elif resource == "services":
        problems += _service_problems(obj)
    elif resource in _ROLE_REF_KINDS:
        problems += _binding_problems(resource, obj, previous)
    elif resource == "ingresses":
        problems += ingress_problems(obj)
    elif resource == "ingressclasses":
        problems += ingress_class_problems(obj, previous)
    if problems:
        raise errors.invalid(kind, name, ", ".join(problems), problems)
