"""Server-side printing: ``meta.k8s.io/v1`` Tables with the columns upstream's printers produce
(pkg/printers/internalversion), so ``kubectl get`` shows READY/STATUS/RESTARTS, UP-TO-DATE, ...
Columns with priority 1 appear only with ``-o wide``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubewire import parse_time
from localcluster.apiclient import JsonObject

Column = tuple[str, str, int]  # name, type, priority
Row = list[Any]


def human_age(timestamp: str | None, now: datetime | None = None) -> str:
    """apimachinery's duration.HumanDuration, as kubectl prints AGE."""
    then = parse_time(timestamp)
    if then is None:
        return "<unknown>"
    seconds = int((now or datetime.now(UTC)).timestamp() - then)
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _age(obj: JsonObject) -> str:
    return human_age(obj.get("metadata", {}).get("creationTimestamp"))


def _name(obj: JsonObject) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _containers(template_spec: JsonObject) -> tuple[str, str]:
    containers = template_spec.get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(
        c.get("image", "") for c in containers
    )


def _selector(spec: JsonObject) -> str:
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def pod_status_reason(pod: JsonObject) -> str:
    """The STATUS column: Terminating, a container's waiting/terminated reason, or the phase."""
    status = pod.get("status", {})
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _pod_row(pod: JsonObject) -> Row:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [
        _name(pod),
        f"{ready}/{total}",
        pod_status_reason(pod),
        restarts,
        _age(pod),
        pod.get("status", {}).get("podIP") or "<none>",
        pod.get("spec", {}).get("nodeName") or "<none>",
        pod.get("status", {}).get("nominatedNodeName") or "<none>",
        "<none>",
    ]


def _deployment_row(obj: JsonObject) -> Row:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    names, images = _containers(spec.get("template", {}).get("spec", {}))
    return [
        _name(obj),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
        names,
        images,
        _selector(spec),
    ]


def _replicaset_row(obj: JsonObject) -> Row:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    names, images = _containers(spec.get("template", {}).get("spec", {}))
    return [
        _name(obj),
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(obj),
        names,
        images,
        _selector(spec),
    ]


def _endpointslice_row(obj: JsonObject) -> Row:
    ports = ",".join(str(p.get("port", "")) for p in obj.get("ports") or []) or "<unset>"
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addresses[:3]) + (
        f" + {len(addresses) - 3} more..." if len(addresses) > 3 else ""
    )
    return [_name(obj), obj.get("addressType", ""), ports, shown or "<unset>", _age(obj)]


def _service_row(obj: JsonObject) -> Row:
    spec = obj.get("spec", {})
    ingress = obj.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)
    if not external:
        external = "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    ports = ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    selector = (
        ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    )
    return [
        _name(obj),
        spec.get("type", ""),
        spec.get("clusterIP", ""),
        external,
        ports or "<none>",
        _age(obj),
        selector,
    ]


def _ingress_row(obj: JsonObject) -> Row:
    """printIngress: hosts ("*" for none, three then "+ N more..."), the LB address, 80 or
    80, 443 with TLS."""
    spec = obj.get("spec", {})
    hosts = [str(r["host"]) for r in spec.get("rules") or [] if r.get("host")]
    shown = ",".join(hosts[:3]) + (f" + {len(hosts) - 3} more..." if len(hosts) > 3 else "")
    ingress = obj.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    address = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)
    return [
        _name(obj),
        spec.get("ingressClassName") or "<none>",
        shown or "*",
        address,
        "80, 443" if spec.get("tls") else "80",
        _age(obj),
    ]


def _ingressclass_row(obj: JsonObject) -> Row:
    spec = obj.get("spec", {})
    parameters = spec.get("parameters")
    shown = "<none>"
    if parameters:
        group = f".{parameters['apiGroup']}" if parameters.get("apiGroup") else ""
        shown = f"{parameters.get('kind', '')}{group}/{parameters.get('name', '')}"
    return [_name(obj), spec.get("controller", ""), shown, _age(obj)]


def _node_row(obj: JsonObject) -> Row:
    conditions = obj.get("status", {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if obj.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    addresses = obj.get("status", {}).get("addresses") or []
    internal = next(
        (a.get("address") for a in addresses if a.get("type") == "InternalIP"), "<none>"
    )
    version = obj.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return [_name(obj), status, "<none>", _age(obj), version, internal]


def _namespace_row(obj: JsonObject) -> Row:
    return [_name(obj), obj.get("status", {}).get("phase", ""), _age(obj)]


def _event_row(obj: JsonObject) -> Row:
    involved = obj.get("involvedObject", {})
    return [
        human_age(obj.get("lastTimestamp") or obj.get("metadata", {}).get("creationTimestamp")),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
    ]


def _default_row(obj: JsonObject) -> Row:
    return [_name(obj), _age(obj)]


_NAME_COL: Column = ("Name", "string", 0)
_AGE_COL: Column = ("Age", "string", 0)
PRINTERS: dict[str, tuple[list[Column], Callable[[JsonObject], Row]]] = {
    "pods": (
        [
            _NAME_COL,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            _AGE_COL,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        _pod_row,
    ),
    "deployments": (
        [
            _NAME_COL,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            _AGE_COL,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _deployment_row,
    ),
    "replicasets": (
        [
            _NAME_COL,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            _AGE_COL,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _replicaset_row,
    ),
    "endpointslices": (
        [
            _NAME_COL,
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            _AGE_COL,
        ],
        _endpointslice_row,
    ),
    "services": (
        [
            _NAME_COL,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            _AGE_COL,
            ("Selector", "string", 1),
        ],
        _service_row,
    ),
    "nodes": (
        [
            _NAME_COL,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            _AGE_COL,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
        ],
        _node_row,
    ),
    "ingresses": (
        [
            _NAME_COL,
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            _AGE_COL,
        ],
        _ingress_row,
    ),
    "ingressclasses": (
        [_NAME_COL, ("Controller", "string", 0), ("Parameters", "string", 0), _AGE_COL],
        _ingressclass_row,
    ),
    "namespaces": ([_NAME_COL, ("Status", "string", 0), _AGE_COL], _namespace_row),
    "events": (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _event_row,
    ),
}


def to_table(
    resource: str, objects: list[JsonObject], list_meta: JsonObject, include_object: str
) -> JsonObject:
    """``include_object``: "None", "Metadata" (PartialObjectMetadata, the default) or "Object"."""
    columns, row_of = PRINTERS.get(resource, ([_NAME_COL, _AGE_COL], _default_row))
    rows = []
    for obj in objects:
        row: JsonObject = {"cells": row_of(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [
            {
                "name": name,
                "type": type_,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, type_, priority in columns
        ],
        "rows": rows,
    }
