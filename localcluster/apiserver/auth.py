"""Who is calling: bearer tokens to users, and the TokenRequest subresource that issues
ServiceAccount tokens (what ``kubectl create token NAME`` calls).

Two kinds of token, as a kubeadm cluster has: the admin token of the kubeconfig the cluster
writes (a member of ``system:masters``, allowed everything), and ServiceAccount tokens issued by
``POST /api/v1/namespaces/NS/serviceaccounts/NAME/token``, which authenticate as
``system:serviceaccount:NS:NAME`` in the groups ``system:serviceaccounts``,
``system:serviceaccounts:NS`` and ``system:authenticated``. Issued tokens are opaque random
strings kept in memory (upstream signs JWTs; no client here reads their claims), they expire
after ``spec.expirationSeconds`` and, like upstream's bound tokens, stop working when their
ServiceAccount is deleted (or deleted and recreated: the uid is checked).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from kubewire import format_time
from localcluster.apiclient import ApiError, JsonObject
from localcluster.apiserver import errors
from localcluster.apiserver.store import Store

MASTERS_GROUP = "system:masters"
AUTHENTICATED_GROUP = "system:authenticated"
ADMIN_USER = "kubernetes-admin"  # the name kubeadm's admin.conf certificate carries
DEFAULT_TOKEN_SECONDS = 3600  # TokenRequest's default expirationSeconds
MIN_TOKEN_SECONDS = 600  # upstream rejects shorter lifetimes ("at least 10 minutes")
DEFAULT_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...]

    @property
    def is_master(self) -> bool:
        return MASTERS_GROUP in self.groups


def service_account_user(namespace: str, name: str) -> UserInfo:
    """The identity upstream gives a ServiceAccount (serviceaccount.UserInfo)."""
    return UserInfo(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED_GROUP),
    )


@dataclass(frozen=True)
class _IssuedToken:
    namespace: str
    service_account: str
    service_account_uid: str
    expires_at: float


class Authenticator:
    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self.admin_token = admin_token
        self.admin = UserInfo(ADMIN_USER, (MASTERS_GROUP, AUTHENTICATED_GROUP))
        self._issued: dict[str, _IssuedToken] = {}

    def authenticate(self, authorization: str) -> UserInfo | None:
        """The user of an ``Authorization: Bearer`` header; None means 401."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if secrets.compare_digest(token, self.admin_token):
            return self.admin
        issued = self._issued.get(token)
        if issued is None:
            return None
        if time.time() >= issued.expires_at or not self._account_alive(issued):
            del self._issued[token]
            return None
        return service_account_user(issued.namespace, issued.service_account)

    def _account_alive(self, issued: _IssuedToken) -> bool:
        try:
            account = self.store.get("serviceaccounts", issued.namespace, issued.service_account)
        except ApiError:
            return False
        return bool(account["metadata"].get("uid") == issued.service_account_uid)

    def request_token(self, namespace: str, name: str, body: object) -> JsonObject:
        """Answer a TokenRequest for ServiceAccount ``namespace/name`` (404 when it is missing)."""
        account = self.store.get("serviceaccounts", namespace, name)
        spec = (body.get("spec") if isinstance(body, dict) else None) or {}
        seconds = spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS
        if not isinstance(seconds, int) or seconds < MIN_TOKEN_SECONDS:
            raise errors.invalid(
                "TokenRequest",
                name,
                "spec.expirationSeconds: Invalid value: may not specify a duration less than "
                "10 minutes",
            )
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + seconds
        self._issued[token] = _IssuedToken(namespace, name, account["metadata"]["uid"], expires_at)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": format_time()},
            "spec": {
                "audiences": spec.get("audiences") or [DEFAULT_AUDIENCE],
                "expirationSeconds": seconds,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": token, "expirationTimestamp": format_time(expires_at)},
        }
