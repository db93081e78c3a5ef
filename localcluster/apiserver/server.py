"""The HTTP face of the store: Kubernetes REST paths, discovery, Tables, watch streams, Status
errors and bearer-token auth, on 127.0.0.1 and optionally a unix socket.

One catch-all handler parses the path itself: Kubernetes paths are regular enough
(``/api/v1[/watch][/namespaces/NS]/RESOURCE[/NAME[/SUB]]``, likewise under
``/apis/GROUP/VERSION``) that a small parser is clearer than a routing table of dozens of
patterns, and it keeps namespace-vs-resource disambiguation in one place.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from kubewire import format_micro_time, parse_time
from localcluster.apiclient import ApiError, JsonObject
from localcluster.apiserver import errors, protobuf
from localcluster.apiserver.auth import Authenticator, UserInfo
from localcluster.apiserver.client import InProcessClient
from localcluster.apiserver.httpclient import HttpClient
from localcluster.apiserver.openapi import openapi_group_version, openapi_root
from localcluster.apiserver.rbac import (
    Authorizer,
    access_review,
    bootstrap_policy,
    request_attributes,
)
from localcluster.apiserver.resources import GROUP_VERSIONS, ResourceType
from localcluster.apiserver.selectors import SelectorError, compile_selectors
from localcluster.apiserver.store import Store
from localcluster.apiserver.tables import to_table
from localcluster.apiserver.tls import ServerCertificate, self_signed_certificate

SERVER_VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-rolltrace",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
}
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
_OPEN_PATHS = ("/healthz", "/readyz", "/livez")
_USER = web.RequestKey("user", UserInfo)  # the request's authenticated caller


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool


def _parse_path(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group_version, rest = parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    served = {r.plural: r for r in GROUP_VERSIONS.get(group_version, ())}
    watch_path = bool(rest) and rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served:
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in served or len(rest) > 3:
        return None
    return Target(
        served[rest[0]],
        namespace,
        rest[1] if len(rest) > 1 else None,
        rest[2] if len(rest) > 2 else None,
        watch_path,
    )


def events_v1(event: JsonObject) -> JsonObject:
    """A stored core/v1 Event as events.k8s.io/v1 shows it (upstream's field mapping)."""
    renamed = {
        "involvedObject": "regarding",
        "message": "note",
        "reportingComponent": "reportingController",
        "source": "deprecatedSource",
        "firstTimestamp": "deprecatedFirstTimestamp",
        "lastTimestamp": "deprecatedLastTimestamp",
        "count": "deprecatedCount",
    }
    converted = {renamed.get(key, key): value for key, value in event.items()}
    converted["apiVersion"] = "events.k8s.io/v1"
    if not converted.get("eventTime"):  # required in v1; old-style Events only have timestamps
        stamp = event.get("firstTimestamp") or event.get("metadata", {}).get("creationTimestamp")
        converted["eventTime"] = format_micro_time(parse_time(stamp) or 0.0)  # a MicroTime
    return converted


def _served_as(target: Target, obj: JsonObject) -> JsonObject:
    return events_v1(obj) if target.rtype.group == "events.k8s.io" else obj


def _status_response(error: ApiError) -> web.Response:
    body = error.status or errors.status_body(error.code, error.reason, str(error))
    return web.json_response(body, status=error.code)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _discovery_resources(types: tuple[ResourceType, ...]) -> list[JsonObject]:
    resources: list[JsonObject] = []
    for rtype in types:
        read_only = rtype.group == "events.k8s.io"
        verbs = ["create"] if rtype.virtual else ["get", "list", "watch"] if read_only else _VERBS
        resources.append(
            {
                "name": rtype.plural,
                "singularName": rtype.singular,
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": verbs,
                **({"shortNames": list(rtype.short_names)} if rtype.short_names else {}),
                **({"categories": list(rtype.categories)} if rtype.categories else {}),
            }
        )
        for sub in rtype.subresources:
            if sub == "token":  # TokenRequest (authentication.k8s.io/v1), create only
                resources.append(
                    {
                        "name": f"{rtype.plural}/token",
                        "singularName": "",
                        "namespaced": True,
                        "group": "authentication.k8s.io",
                        "version": "v1",
                        "kind": "TokenRequest",
                        "verbs": ["create"],
                    }
                )
                continue
            entry: JsonObject = {
                "name": f"{rtype.plural}/{sub}",
                "singularName": "",
                "namespaced": rtype.namespaced,
                "kind": rtype.kind if sub == "status" else "Scale",
                "verbs": ["get", "patch", "update"],
            }
            if sub == "scale":
                entry.update(group="autoscaling", version="v1")
            resources.append(entry)
    return resources


async def _request_body(request: web.Request) -> Any:
    """The request's JSON (or YAML) body, or the protobuf one of the few kinds kubectl's typed
    commands send (``protobuf``); None without a body."""
    if not request.can_read_body:
        return None
    content_type = request.headers.get("Content-Type", "")
    if "protobuf" not in content_type:
        return _body_json(await request.read())
    try:
        return protobuf.decode(await request.read())
    except protobuf.UnsupportedKind as exc:
        raise errors.api_error(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format: {content_type} ({exc} in "
            "protobuf: send JSON)",
        ) from exc
    except protobuf.ProtobufError as exc:
        raise errors.bad_request(f"the protobuf body cannot be decoded: {exc}") from exc


def _body_json(raw: bytes) -> Any:
    """Bodies are JSON; YAML (a superset) is accepted too, as upstream accepts both."""
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"the request body is not valid JSON or YAML: {exc}") from exc


class ApiServer:
    """``async with ApiServer() as server:`` serves until the block exits. ``port=0`` picks a
    free port; ``unix_socket`` additionally listens there (node agents in network
    namespaces; plain HTTP, protected by file permissions and the token); TCP is HTTPS with a
    per-start self-signed certificate, valid also for ``extra_addresses`` (where
    ``add_listener`` serves, e.g. inside an emulated network); ``bookmark_interval_s`` is how
    long a watch idles before a BOOKMARK.

    ``token`` is the admin's (``system:masters``); every other caller is a ServiceAccount with
    a token from the TokenRequest subresource, authorized by RBAC (``rbac``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        unix_socket: str | None = None,
        token: str | None = None,
        history_size: int = 10_000,
        bookmark_interval_s: float = 60.0,
        service_cidr: str = "198.18.128.0/17",
        extra_addresses: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.unix_socket = unix_socket
        self.token = token or secrets.token_hex(16)
        self.bookmark_interval_s = bookmark_interval_s
        self.extra_addresses = extra_addresses
        self.store = Store(history_size=history_size, service_cidr=service_cidr)
        for resource, obj in bootstrap_policy():  # upstream's post-start hook does the same
            self.store.create(resource, None, obj)
        self.authenticator = Authenticator(self.store, self.token)
        self.authorizer = Authorizer(self.store)
        self._runner: web.AppRunner | None = None
        self._certificate: ServerCertificate | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        if self._certificate is None:
            raise RuntimeError("the server has not started")
        return self._certificate.cert_pem

    def client(self) -> InProcessClient:
        return InProcessClient(self.store)

    def http_client(self, via_unix_socket: bool = False) -> HttpClient:
        if via_unix_socket:
            return HttpClient("http://localhost", self.token, unix_socket=self.unix_socket)
        return HttpClient(self.url, self.token, ca_pem=self.ca_pem)

    def kubeconfig(
        self, context: str = "rolltrace", server: str | None = None, token: str | None = None
    ) -> JsonObject:
        """The admin's kubeconfig, or another ``token``'s; ``server`` when the caller reaches
        the server elsewhere than ``url`` (an ``add_listener`` address)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": context,
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": context, "user": {"token": token or self.token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": "default"},
                }
            ],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | Path, context: str = "rolltrace", server: str | None = None
    ) -> Path:
        """Written 0600: it holds the bearer token."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(self.kubeconfig(context, server), handle, sort_keys=False)
        return target

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._certificate = self_signed_certificate(extra_addresses=self.extra_addresses)
        await web.SockSite(self._runner, sock, ssl_context=self._certificate.context).start()
        if self.unix_socket:
            Path(self.unix_socket).unlink(missing_ok=True)
            await web.UnixSite(self._runner, self.unix_socket).start()
            os.chmod(self.unix_socket, 0o600)

    async def add_listener(self, sock: socket.socket) -> web.SockSite:
        """Serve HTTPS on one more bound TCP socket (one made inside another network
        namespace keeps living there: the way the API is published into the emulated network);
        ``stop()`` the returned site to close it before the server stops."""
        if self._runner is None or self._certificate is None:
            raise RuntimeError("the server has not started")
        site = web.SockSite(self._runner, sock, ssl_context=self._certificate.context)
        await site.start()
        return site

    async def stop(self) -> None:
        self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.unix_socket:
            Path(self.unix_socket).unlink(missing_ok=True)

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- request handling ----------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """401 for a missing or unknown token, 403 (upstream's message) outside the caller's
        rules; health endpoints are open."""
        if request.path in _OPEN_PATHS:
            return web.Response(text="ok")
        user = self.authenticator.authenticate(request.headers.get("Authorization", ""))
        if user is None:
            return _status_response(errors.api_error(401, "Unauthorized", "Unauthorized"))
        request[_USER] = user
        try:
            attributes = request_attributes(request.method, request.path, request.query)
            self.authorizer.check(user, attributes)
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as error:
            return _status_response(error)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route one request: discovery documents first, then the resource path, then the verb
        (GET reads or watches; every other method writes)."""
        path = request.path.rstrip("/") or "/"
        discovery = self._discovery(path)
        if discovery is not None:
            return web.json_response(discovery)
        target = _parse_path(path)
        if target is None:
            raise errors.api_error(
                404, "NotFound", "the server could not find the requested resource"
            )
        if target.rtype.group == "events.k8s.io" and request.method != "GET":
            raise errors.method_not_allowed()
        if target.rtype.virtual or target.subresource == "token":
            return await self._create_only(request, target)
        if request.method == "GET":
            return await self._read(request, target)
        return await self._write(request, target)

    async def _create_only(self, request: web.Request, target: Target) -> web.StreamResponse:
        """Kinds answered, never stored: a SelfSubjectAccessReview, a ServiceAccount's
        TokenRequest (POST only, as upstream)."""
        if request.method != "POST" or (target.rtype.virtual and target.name is not None):
            raise errors.method_not_allowed()
        body = await _request_body(request)
        if target.subresource == "token":
            namespace = target.namespace or "default"
            token = self.authenticator.request_token(namespace, str(target.name), body)
            return web.json_response(token, status=201)
        if not isinstance(body, dict):
            raise errors.bad_request("expected an object")
        review = access_review(self.authorizer, request[_USER], body)
        return web.json_response(review, status=201)

    async def _read(self, request: web.Request, target: Target) -> web.StreamResponse:
        """GET: a watch (by path or ``?watch``), a list, a scale subresource or one object."""
        if target.watch_path or request.query.get("watch") in ("1", "true", "True"):
            return await self._watch(request, target)
        if target.name is None:
            return self._list(request, target)
        if target.subresource == "scale":
            return web.json_response(
                self.store.scale_of(target.rtype.plural, target.namespace, target.name)
            )
        obj = self.store.get(target.rtype.plural, target.namespace, target.name)
        return self._object_response(request, target, obj)

    async def _write(self, request: web.Request, target: Target) -> web.StreamResponse:
        """POST to a collection creates; PUT, PATCH and DELETE act on one named object. Every
        write honours ``?dryRun=All`` (validated and answered, not stored)."""
        body = await _request_body(request)
        dry_run = "All" in request.query.getall("dryRun", [])
        if request.method == "POST" and target.name is None:
            if not isinstance(body, dict):
                raise errors.bad_request("expected an object")
            created = self.store.create(target.rtype.plural, target.namespace, body, dry_run)
            return web.json_response(created, status=201)
        if target.name is None:
            raise errors.method_not_allowed()
        if request.method == "PUT":
            return self._replace(target, body, dry_run)
        if request.method == "PATCH":
            return self._patch(request, target, target.name, body, dry_run)
        if request.method == "DELETE":
            return self._delete(request, target, target.name, body, dry_run)
        raise errors.method_not_allowed()

    def _replace(self, target: Target, body: Any, dry_run: bool) -> web.StreamResponse:
        """PUT: the body must be an object named as on the URL, as the real apiserver insists."""
        if not isinstance(body, dict):
            raise errors.bad_request("expected an object")
        if body.get("metadata", {}).get("name") != target.name:
            raise errors.bad_request("the name of the object does not match the name on the URL")
        updated = self.store.update(
            target.rtype.plural, target.namespace, body, target.subresource, dry_run
        )
        return web.json_response(updated)

    def _patch(
        self, request: web.Request, target: Target, name: str, body: Any, dry_run: bool
    ) -> web.StreamResponse:
        """PATCH: the Content-Type names the patch strategy (JSON, merge, strategic merge)."""
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in _PATCH_TYPES:
            raise errors.api_error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {content_type}",
            )
        patched = self.store.patch(
            target.rtype.plural,
            target.namespace,
            name,
            body,
            _PATCH_TYPES[content_type],
            target.subresource,
            dry_run,
        )
        return web.json_response(patched)

    def _delete(
        self, request: web.Request, target: Target, name: str, body: Any, dry_run: bool
    ) -> web.StreamResponse:
        """DELETE: grace period and propagation policy from the query or a DeleteOptions body;
        the legacy ``orphanDependents: true`` means the Orphan policy."""
        options = body if isinstance(body, dict) else {}
        grace = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        policy = request.query.get("propagationPolicy", options.get("propagationPolicy"))
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        deleted = self.store.delete(
            target.rtype.plural,
            target.namespace,
            name,
            None if grace is None else int(grace),
            policy,
            dry_run,
        )
        return web.json_response(deleted)

    def _discovery(self, path: str) -> JsonObject | None:
        if path == "/version":
            return SERVER_VERSION
        if path == "/openapi/v3":
            return openapi_root()
        if path.startswith("/openapi/v3/"):
            relative = path.removeprefix("/openapi/v3/")
            return openapi_group_version(relative.split("/", 1)[1] if "/" in relative else relative)
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        if path == "/apis":
            groups = []
            for group_version in GROUP_VERSIONS:
                if "/" not in group_version:
                    continue
                group, version = group_version.split("/")
                entry = {"groupVersion": group_version, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        for group_version, types in GROUP_VERSIONS.items():
            prefix = "/api/" if "/" not in group_version else "/apis/"
            if path == prefix + group_version:
                return {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": _discovery_resources(types),
                }
        return None

    def _matcher(self, request: web.Request) -> Any:
        query = request.query
        field_selector = query.get("fieldSelector")
        try:
            return compile_selectors(query.get("labelSelector"), field_selector)
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc

    def _object_response(
        self, request: web.Request, target: Target, obj: JsonObject
    ) -> web.Response:
        if _wants_table(request):
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return web.json_response(
                to_table(
                    target.rtype.plural, [obj], meta, request.query.get("includeObject", "Metadata")
                )
            )
        return web.json_response(_served_as(target, obj))

    def _list(self, request: web.Request, target: Target) -> web.Response:
        query = request.query
        limit = int(query["limit"]) if query.get("limit") else None
        page = self.store.list(
            target.rtype.plural,
            target.namespace,
            self._matcher(request),
            limit,
            query.get("continue"),
        )
        meta: JsonObject = {"resourceVersion": page.resource_version}
        if page.continue_token:
            meta["continue"] = page.continue_token
            meta["remainingItemCount"] = page.remaining
        if _wants_table(request):
            return web.json_response(
                to_table(
                    target.rtype.plural, page.items, meta, query.get("includeObject", "Metadata")
                )
            )
        body = {
            "kind": f"{target.rtype.kind}List",
            "apiVersion": target.rtype.api_version,
            "metadata": meta,
            "items": [_served_as(target, obj) for obj in page.items],
        }
        return web.Response(
            body=json.dumps(body, separators=(",", ":")), content_type="application/json"
        )

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        matches = self._matcher(request)
        if target.name:
            name_matches, selected = matches, target.name

            def matches(obj: JsonObject) -> bool:
                return bool(obj.get("metadata", {}).get("name") == selected and name_matches(obj))

        try:
            watcher = self.store.watch(
                target.rtype.plural,
                target.namespace,
                query.get("resourceVersion"),
                matches,
                send_initial_events=query.get("sendInitialEvents") in ("true", "1"),
            )
        except ApiError as error:
            if error.code != 410:
                raise
            # Upstream answers an expired watch with 200 and one ERROR event (the watch cache).
            expired = {"type": "ERROR", "object": error.status}
            return web.Response(text=json.dumps(expired) + "\n", content_type="application/json")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        bookmarks = (
            self.bookmark_interval_s if query.get("allowWatchBookmarks") in ("true", "1") else None
        )
        as_table = _wants_table(request)
        include_object = query.get("includeObject", "Metadata")
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        await response.prepare(request)
        try:
            async for event in watcher.events(timeout_s=timeout, bookmark_interval_s=bookmarks):
                obj = event["object"]
                if as_table and event["type"] != "BOOKMARK":
                    meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                    obj = to_table(target.rtype.plural, [obj], meta, include_object)
                elif event["type"] != "BOOKMARK":
                    obj = _served_as(target, obj)
                line = (
                    json.dumps({"type": event["type"], "object": obj}, separators=(",", ":")) + "\n"
                )
                await response.write(line.encode())
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            watcher.close()
        return response
