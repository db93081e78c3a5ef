"""Authorization as upstream's RBAC authorizer does it: a request's attributes (upstream's
RequestInfo: verb, API group, resource, subresource, namespace, name, or a non-resource path)
are allowed when a rule of a Role or ClusterRole bound to the user, one of their groups or their
ServiceAccount matches them (k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac).

Members of ``system:masters`` are allowed everything without looking at rules, as upstream's
privileged-groups authorizer does. Every authenticated user may read discovery, /version and
the OpenAPI documents and create SelfSubjectAccessReviews: upstream grants this through its
bootstrap ClusterRoles ``system:discovery``, ``system:basic-user`` and
``system:public-info-viewer`` bound to ``system:authenticated``; the server creates the same
objects at start (``bootstrap_policy``), so the grant is implicit and visible with
``kubectl get clusterrolebindings``.

Not emulated: the escalation check on writes of Roles and bindings (upstream refuses to let a
user grant rules they do not hold, unless they have ``escalate``/``bind``), aggregated
ClusterRoles, and impersonation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from localcluster.apiclient import ApiError, JsonObject
from localcluster.apiserver import errors
from localcluster.apiserver.auth import AUTHENTICATED_GROUP, MASTERS_GROUP, UserInfo
from localcluster.apiserver.resources import RBAC_GROUP
from localcluster.apiserver.store import Store

_API_PREFIXES = ("api", "apis")
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                 "PATCH": "patch", "DELETE": "delete"}  # fmt: skip
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do, in the terms rules are written in."""

    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def _name_from_field_selector(selector: str) -> str:
    """``metadata.name=X`` in a list/watch's field selector names the object (upstream lets
    ``resourceNames`` rules allow a watch of one object this way)."""
    for term in selector.split(","):
        field, _, value = term.replace("==", "=").partition("=")
        if field.strip() == "metadata.name" and value and "!" not in field:
            return value.strip()
    return ""


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """Upstream's RequestInfoFactory.NewRequestInfo, for the paths this server serves."""
    parts = [part for part in path.split("/") if part]
    non_resource = Attributes(method.lower(), path, False)
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    parts = parts[1:]  # the version
    verb = _METHOD_VERBS.get(method.upper(), "")
    if parts[0] == "watch" and len(parts) > 1:
        verb, parts = "watch", parts[1:]
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "") in _TRUE else "list"
        name = _name_from_field_selector(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, path, True, group, namespace, resource, subresource, name)


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _resource_matches(resources: list[str], attributes: Attributes) -> bool:
    combined = attributes.resource
    if attributes.subresource:
        combined += "/" + attributes.subresource
    for resource in resources:
        if resource in ("*", combined):
            return True
        if attributes.subresource and resource == "*/" + attributes.subresource:
            return True
    return False


def _url_matches(urls: list[str], path: str) -> bool:
    return any(
        url in ("*", path) or (url.endswith("*") and path.startswith(url[:-1])) for url in urls
    )


def rule_allows(rule: JsonObject, attributes: Attributes) -> bool:
    """rbac/v1 helpers' RuleAllows: verb, then group/resource/name or the non-resource URL."""
    if not _matches(list(rule.get("verbs") or []), attributes.verb):
        return False
    if not attributes.resource_request:
        return _url_matches(list(rule.get("nonResourceURLs") or []), attributes.path)
    names = list(rule.get("resourceNames") or [])
    return (
        _matches(list(rule.get("apiGroups") or []), attributes.api_group)
        and _resource_matches(list(rule.get("resources") or []), attributes)
        and (not names or attributes.name in names)
    )


def _applies_to(subject: JsonObject, user: UserInfo, binding_namespace: str) -> bool:
    """appliesToUser: a ServiceAccount subject without a namespace means the binding's own."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.name == f"system:serviceaccount:{namespace}:{name}"
    return False


@dataclass(frozen=True)
class Grant:
    """A binding whose subjects include the user, and the rules of the role it refers to."""

    binding_kind: str
    binding: str
    role_kind: str
    role: str
    rules: tuple[JsonObject, ...]


class Authorizer:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _role_rules(self, role_ref: JsonObject, namespace: str) -> tuple[JsonObject, ...]:
        kind, name = role_ref.get("kind"), str(role_ref.get("name", ""))
        resource = "clusterroles" if kind == "ClusterRole" else "roles"
        try:
            role = self.store.get(resource, None if kind == "ClusterRole" else namespace, name)
        except ApiError:
            return ()  # a binding to a missing role grants nothing, as upstream
        return tuple(role.get("rules") or [])

    def grants(self, user: UserInfo, namespace: str) -> Iterator[Grant]:
        """VisitRulesFor: ClusterRoleBindings everywhere, then RoleBindings of the namespace."""
        bindings = [("ClusterRoleBinding", "", b) for b in self._all("clusterrolebindings")]
        if namespace:
            bindings += [
                ("RoleBinding", namespace, b) for b in self._all("rolebindings", namespace)
            ]
        for binding_kind, binding_namespace, binding in bindings:
            subjects = binding.get("subjects") or []
            if not any(_applies_to(s, user, binding_namespace) for s in subjects):
                continue
            role_ref = binding.get("roleRef") or {}
            yield Grant(
                binding_kind,
                binding["metadata"]["name"],
                str(role_ref.get("kind", "")),
                str(role_ref.get("name", "")),
                self._role_rules(role_ref, binding_namespace),
            )

    def _all(self, resource: str, namespace: str | None = None) -> list[JsonObject]:
        return self.store.list(resource, namespace, lambda _: True).items

    def decide(self, user: UserInfo, attributes: Attributes) -> tuple[bool, str]:
        """Allowed or not, and upstream's reason for an allowed request."""
        if user.is_master:
            return True, f'allowed: member of group "{MASTERS_GROUP}"'
        for grant in self.grants(user, attributes.namespace):
            if any(rule_allows(rule, attributes) for rule in grant.rules):
                return True, (
                    f'RBAC: allowed by {grant.binding_kind} "{grant.binding}" of '
                    f'{grant.role_kind} "{grant.role}" to User "{user.name}"'
                )
        return False, ""

    def check(self, user: UserInfo, attributes: Attributes) -> None:
        """Raises upstream's 403 Forbidden Status when no rule allows the request."""
        allowed, _ = self.decide(user, attributes)
        if not allowed:
            raise forbidden(user, attributes)


def forbidden(user: UserInfo, attributes: Attributes) -> ApiError:
    """The message and details of upstream's ForbiddenStatusError / NewForbidden."""
    if not attributes.resource_request:
        message = f'forbidden: User "{user.name}" cannot {attributes.verb} path "{attributes.path}"'
        return errors.api_error(403, "Forbidden", message)
    resource = attributes.resource
    if attributes.subresource:
        resource += "/" + attributes.subresource
    scope = (
        f'in the namespace "{attributes.namespace}"'
        if attributes.namespace
        else "at the cluster scope"
    )
    reason = (
        f'User "{user.name}" cannot {attributes.verb} resource "{resource}" in API group '
        f'"{attributes.api_group}" {scope}'
    )
    qualified = attributes.resource
    if attributes.api_group:
        qualified += "." + attributes.api_group
    subject = f'{qualified} "{attributes.name}"' if attributes.name else qualified
    details = {"name": attributes.name, "group": attributes.api_group, "kind": attributes.resource}
    return errors.api_error(403, "Forbidden", f"{subject} is forbidden: {reason}", details)


def access_review(authorizer: Authorizer, user: UserInfo, review: JsonObject) -> JsonObject:
    """A SelfSubjectAccessReview answered for the caller (what `kubectl auth can-i` sends)."""
    spec = review.get("spec") or {}
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        attributes = Attributes(
            str(resource.get("verb", "")),
            "",
            True,
            str(resource.get("group", "")),
            str(resource.get("namespace", "")),
            str(resource.get("resource", "")),
            str(resource.get("subresource", "")),
            str(resource.get("name", "")),
        )
    else:
        non_resource = spec.get("nonResourceAttributes") or {}
        attributes = Attributes(
            str(non_resource.get("verb", "")), str(non_resource.get("path", "")), False
        )
    allowed, reason = authorizer.decide(user, attributes)
    status: JsonObject = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }


_BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                   "/openapi/*", "/readyz", "/version", "/version/"]  # fmt: skip
_PUBLIC_INFO_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def _cluster_role(name: str, rules: list[JsonObject]) -> tuple[str, JsonObject]:
    meta = {"name": name, "labels": dict(_BOOTSTRAP_LABELS)}
    return "clusterroles", {"metadata": meta, "rules": rules}


def _group_binding(name: str, groups: list[str]) -> tuple[str, JsonObject]:
    meta = {"name": name, "labels": dict(_BOOTSTRAP_LABELS)}
    subjects = [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group} for group in groups]
    role_ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name}
    return "clusterrolebindings", {"metadata": meta, "subjects": subjects, "roleRef": role_ref}


def bootstrap_policy() -> list[tuple[str, JsonObject]]:
    """Upstream's bootstrap roles that every cluster has (plugin/pkg/auth/authorizer/rbac/
    bootstrappolicy): ``cluster-admin`` for ``system:masters``, and what every authenticated
    user may do: discovery, public info, self reviews."""
    return [
        _cluster_role("cluster-admin", [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ]),
        _group_binding("cluster-admin", [MASTERS_GROUP]),
        _cluster_role("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]),
        _group_binding("system:discovery", [AUTHENTICATED_GROUP]),
        _cluster_role("system:public-info-viewer", [
            {"nonResourceURLs": _PUBLIC_INFO_URLS, "verbs": ["get"]},
        ]),
        _group_binding("system:public-info-viewer", [AUTHENTICATED_GROUP]),
        _cluster_role("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
             "verbs": ["create"]},
        ]),
        _group_binding("system:basic-user", [AUTHENTICATED_GROUP]),
    ]  # fmt: skip
