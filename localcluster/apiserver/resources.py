"""The resource types this server serves, as discovery and the store see them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale"
    categories: tuple[str, ...] = ()
    singular: str = ""
    # metadata.generation is set and bumped only by the strategies of these kinds upstream
    # (workloads, and Pods since 1.33: KEP-5067).
    tracks_generation: bool = False
    # a review kind (SelfSubjectAccessReview): only ``create``, answered and never stored
    virtual: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


RBAC_GROUP = "rbac.authorization.k8s.io"
NETWORKING_GROUP = "networking.k8s.io"
INGRESS_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "ingresses", "Ingress", NETWORKING_GROUP, "v1", True, ("ing",), ("status",), (), "ingress"
    ),
    ResourceType("ingressclasses", "IngressClass", NETWORKING_GROUP, "v1", False,
                 singular="ingressclass"),
)  # fmt: skip
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("namespaces", "Namespace", "", "v1", False, ("ns",), ("status",), (), "namespace"),
    ResourceType("nodes", "Node", "", "v1", False, ("no",), ("status",), (), "node"),
    ResourceType(
        "pods", "Pod", "", "v1", True, ("po",), ("status",), ("all",), "pod", tracks_generation=True
    ),
    ResourceType("services", "Service", "", "v1", True, ("svc",), ("status",), ("all",), "service"),
    ResourceType("events", "Event", "", "v1", True, ("ev",), (), (), "event"),
    ResourceType(
        "deployments",
        "Deployment",
        "apps",
        "v1",
        True,
        ("deploy",),
        ("status", "scale"),
        ("all",),
        "deployment",
        tracks_generation=True,
    ),
    ResourceType(
        "replicasets",
        "ReplicaSet",
        "apps",
        "v1",
        True,
        ("rs",),
        ("status", "scale"),
        ("all",),
        "replicaset",
        tracks_generation=True,
    ),
    ResourceType(
        "controllerrevisions",
        "ControllerRevision",
        "apps",
        "v1",
        True,
        (),
        (),
        (),
        "controllerrevision",
    ),
    ResourceType(
        "serviceaccounts",
        "ServiceAccount",
        "",
        "v1",
        True,
        ("sa",),
        ("token",),
        (),
        "serviceaccount",
    ),
    *(
        ResourceType(plural, kind, RBAC_GROUP, "v1", namespaced, singular=kind.lower())
        for plural, kind, namespaced in (
            ("roles", "Role", True),
            ("rolebindings", "RoleBinding", True),
            ("clusterroles", "ClusterRole", False),
            ("clusterrolebindings", "ClusterRoleBinding", False),
        )
    ),
    ResourceType(
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        "authorization.k8s.io",
        "v1",
        False,
        singular="selfsubjectaccessreview",
        virtual=True,
    ),
    ResourceType(
        "endpointslices",
        "EndpointSlice",
        "discovery.k8s.io",
        "v1",
        True,
        (),
        (),
        (),
        "endpointslice",
    ),
    *INGRESS_TYPES,
)


BY_PLURAL: dict[str, ResourceType] = {r.plural: r for r in RESOURCE_TYPES}

# events.k8s.io/v1 serves the same objects as core v1 Events (read-only here): same store key.
EVENTS_V1 = ResourceType("events", "Event", "events.k8s.io", "v1", True, ("ev",), (), (), "event")

GROUP_VERSIONS: dict[str, tuple[ResourceType, ...]] = {
    "v1": tuple(r for r in RESOURCE_TYPES if r.group == ""),
    "apps/v1": tuple(r for r in RESOURCE_TYPES if r.group == "apps"),
    "discovery.k8s.io/v1": tuple(r for r in RESOURCE_TYPES if r.group == "discovery.k8s.io"),
    "events.k8s.io/v1": (EVENTS_V1,),
    f"{NETWORKING_GROUP}/v1": INGRESS_TYPES,
    f"{RBAC_GROUP}/v1": tuple(r for r in RESOURCE_TYPES if r.group == RBAC_GROUP),
    "authorization.k8s.io/v1": tuple(
        r for r in RESOURCE_TYPES if r.group == "authorization.k8s.io"
    ),
}


def lookup(plural: str) -> ResourceType:
    try:
        return BY_PLURAL[plural]
    except KeyError:
        raise KeyError(f"unknown resource {plural!r}") from None
