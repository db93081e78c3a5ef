"""Validation of ``networking.k8s.io/v1`` Ingress and IngressClass, in the wording of upstream's
pkg/apis/networking/validation and apimachinery's ``field.Error`` (``<path>: Invalid value:
"<value>": <detail>``), for the fields the local ingress controller reads: rules with HTTP paths
(pathType ``Exact``, ``Prefix`` or ``ImplementationSpecific``), service backends (name and port
name or number), ``defaultBackend``, ``ingressClassName``, and an IngressClass's ``controller``
(required, a domain-prefixed path, immutable). Resource backends, TLS and annotations are kept
as written."""

from __future__ import annotations

import re
from typing import Any

from localcluster.apiclient import JsonObject

SUPPORTED_PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_PORT_NAME = re.compile(rf"^{_DNS1123_LABEL}$")
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")
_DNS1035_MESSAGE = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def _value(value: Any) -> str:
    """How ``field.Error`` prints a bad value: strings quoted, numbers plain, null for none."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _invalid(path: str, value: Any, detail: str) -> str:
    return f"{path}: Invalid value: {_value(value)}: {detail}"


def _required(path: str, detail: str = "") -> str:
    return f"{path}: Required value: {detail}" if detail else f"{path}: Required value"


def _service_backend_problems(backend: JsonObject, path: str) -> list[str]:
    service = backend.get("service") or {}
    name = str(service.get("name") or "")
    problems = []
    if not name:
        problems.append(_required(f"{path}.service.name"))
    elif len(name) > 63 or not _DNS1035_LABEL.match(name):
        problems.append(_invalid(f"{path}.service.name", name, _DNS1035_MESSAGE))
    port = service.get("port") or {}
    port_name, number = port.get("name") or "", port.get("number") or 0
    if port_name and number:
        problems.append(_invalid(path, "", "cannot set both port name & port number"))
    elif port_name and (len(port_name) > 15 or not _PORT_NAME.match(str(port_name))):
        problems.append(
            _invalid(f"{path}.service.port.name", port_name, "must be an IANA_SVC_NAME")
        )
    elif number and not (isinstance(number, int) and 1 <= number <= 65535):
        problems.append(
            _invalid(
                f"{path}.service.port.number", number, "must be between 1 and 65535, inclusive"
            )
        )
    elif not port_name and not number:
        problems.append(_required(path, "port name or number is required"))
    return problems


def _backend_problems(backend: JsonObject, path: str) -> list[str]:
    """validateIngressBackend: exactly one of a service or a resource backend."""
    has_service, has_resource = bool(backend.get("service")), bool(backend.get("resource"))
    if has_service and has_resource:
        return [_invalid(path, "", "cannot set both resource and service backends")]
    if has_resource:
        return []
    if has_service:
        return _service_backend_problems(backend, path)
    return [_invalid(path, "", "resource or service backend is required")]


def _http_path_problems(http_path: JsonObject, path: str) -> list[str]:
    path_type, value = http_path.get("pathType"), http_path.get("path", "")
    problems = []
    if not path_type:
        problems.append(_required(f"{path}.pathType", "pathType must be specified"))
    elif path_type not in SUPPORTED_PATH_TYPES:
        supported = ", ".join(f'"{t}"' for t in SUPPORTED_PATH_TYPES)
        problems.append(
            f"{path}.pathType: Unsupported value: {_value(path_type)}: supported values: {supported}"
        )
    elif path_type in ("Exact", "Prefix"):
        if not str(value).startswith("/"):
            problems.append(_invalid(f"{path}.path", value, "must be an absolute path"))
        problems += [
            _invalid(f"{path}.path", value, f"must not contain '{sequence}'")
            for sequence in _INVALID_PATH_SEQUENCES
            if sequence in str(value)
        ]
        problems += [
            _invalid(f"{path}.path", value, f"cannot end with '{suffix}'")
            for suffix in _INVALID_PATH_SUFFIXES
            if str(value).endswith(suffix)
        ]
    return problems + _backend_problems(http_path.get("backend") or {}, f"{path}.backend")


def _rule_problems(rule: JsonObject, path: str) -> list[str]:
    host = str(rule.get("host") or "")
    problems = []
    if host and not DNS1123_SUBDOMAIN.match(host.removeprefix("*.")):
        problems.append(_invalid(f"{path}.host", host, _DNS1123_SUBDOMAIN_MESSAGE))
    http = rule.get("http")
    if http is None:
        return problems
    paths = http.get("paths") or []
    if not paths:
        problems.append(_required(f"{path}.http.paths"))
    for index, http_path in enumerate(paths):
        problems += _http_path_problems(http_path, f"{path}.http.paths[{index}]")
    return problems


def ingress_problems(obj: JsonObject) -> list[str]:
    """ValidateIngressSpec for the fields listed in the module docstring."""
    spec = obj.get("spec") or {}
    rules = spec.get("rules") or []
    problems = []
    if not rules and not spec.get("defaultBackend"):
        problems.append(
            _invalid("spec", None, "either `defaultBackend` or `rules` must be specified")
        )
    if spec.get("defaultBackend"):
        problems += _backend_problems(spec["defaultBackend"], "spec.defaultBackend")
    for index, rule in enumerate(rules):
        problems += _rule_problems(rule, f"spec.rules[{index}]")
    class_name = spec.get("ingressClassName")
    if class_name is not None and not DNS1123_SUBDOMAIN.match(str(class_name)):
        problems.append(_invalid("spec.ingressClassName", class_name, _DNS1123_SUBDOMAIN_MESSAGE))
    return problems


def ingress_class_problems(obj: JsonObject, previous: JsonObject | None) -> list[str]:
    """validateIngressClassSpec (IsDomainPrefixedPath) and the immutable controller."""
    controller = str((obj.get("spec") or {}).get("controller") or "")
    if not controller:
        return [_required("spec.controller")]
    domain, slash, rest = controller.partition("/")
    problems = []
    if not slash or not rest or not DNS1123_SUBDOMAIN.match(domain):
        problems.append(
            _invalid(
                "spec.controller",
                controller,
                'must be a domain-prefixed path (such as "acme.io/foo")',
            )
        )
    if previous is not None:
        before = (previous.get("spec") or {}).get("controller")
        if before != controller:
            problems.append(_invalid("spec.controller", controller, "field is immutable"))
    return problems
