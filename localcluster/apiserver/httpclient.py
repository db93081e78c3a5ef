"""The HTTP ``ApiClient`` (aiohttp over TCP or a unix socket) for node agents, the LB and the
cluster process, which live in other processes and network namespaces. It depends on no part
of the server (store, handlers), so a component that imports it reaches the API server only
over the wire."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

from localcluster.apiclient import ApiError, JsonObject, PatchType, WatchEvent
from localcluster.apiserver.resources import lookup
from localcluster.apiserver.tls import client_context

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


def resource_path(
    resource: str, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    rtype = lookup(resource)
    base = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
    if rtype.namespaced and namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{resource}"
    if name:
        base += f"/{quote(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-delimited records of any length (aiohttp's own line iterator caps a line at its
    buffer limit, and one EndpointSlice or Table can exceed it)."""
    pending = b""
    async for chunk in stream.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _named(config: JsonObject, section: str, name: object) -> JsonObject:
    """The ``section`` entry (context, cluster, user) called ``name`` of a kubeconfig."""
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            found: JsonObject = entry.get(section.removesuffix("s")) or {}
            return found
    raise ValueError(f"kubeconfig: no {section.removesuffix('s')} named {name!r}")


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    text = await response.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    raise ApiError(
        response.status,
        str(body.get("reason", response.reason or "")),
        str(body.get("message", text[:200])),
        body if isinstance(body, dict) else {},
    )


class HttpClient:
    """Talks to the API server with a bearer token: over HTTPS (``ca_pem`` = the server's
    certificate) or, with ``unix_socket``, plain HTTP over that socket (node agents inside
    network namespaces cannot reach the host's loopback; pass ``url="http://localhost"``).
    Use as ``async with HttpClient(...) as client:`` or call ``close()``."""

    def __init__(
        self, url: str, token: str, unix_socket: str | None = None, ca_pem: bytes | None = None
    ) -> None:
        self._url = url.rstrip("/")
        self._ca_pem = ca_pem
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._unix_socket = unix_socket
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> HttpClient:
        """A client for the current context of a kubeconfig with a bearer token and an inline
        CA (what this cluster writes): how a component running in a Pod is pointed at the
        API server (ingress-nginx's ``--kubeconfig``)."""
        config = yaml.safe_load(Path(path).read_text()) or {}
        context_name = config.get("current-context")
        context = _named(config, "contexts", context_name)
        cluster = _named(config, "clusters", context.get("cluster"))
        user = _named(config, "users", context.get("user"))
        ca_data = cluster.get("certificate-authority-data")
        return cls(
            str(cluster["server"]),
            str(user.get("token", "")),
            ca_pem=base64.b64decode(ca_data) if ca_data else None,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector: aiohttp.BaseConnector
            if self._unix_socket:
                connector = aiohttp.UnixConnector(path=self._unix_socket)
            else:
                ssl_context = client_context(self._ca_pem) if self._ca_pem else True
                connector = aiohttp.TCPConnector(ssl=ssl_context)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._client().request(
            method, self._url + path, params=params, data=data, headers=headers
        ) as response:
            await _raise_for_status(response)
            result: JsonObject = await response.json(content_type=None)
            return result

    async def get(self, resource: str, name: str, namespace: str | None = None) -> JsonObject:
        return await self._request("GET", resource_path(resource, namespace, name))

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JsonObject], str]:
        params = _selector_params(label_selector, field_selector)
        body = await self._request("GET", resource_path(resource, namespace), params)
        return list(body.get("items") or []), str(
            body.get("metadata", {}).get("resourceVersion", "")
        )

    async def watch(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        params = _selector_params(label_selector, field_selector)
        params["watch"] = "true"
        if resource_version:
            params["resourceVersion"] = resource_version
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(int(timeout_seconds))
        async with self._client().get(
            self._url + resource_path(resource, namespace), params=params
        ) as response:
            await _raise_for_status(response)
            async for line in _lines(response.content):
                event = json.loads(line)
                obj = event.get("object", {})
                if event.get("type") == "ERROR":
                    raise ApiError(
                        int(obj.get("code", 500)),
                        str(obj.get("reason", "")),
                        str(obj.get("message", "")),
                        obj,
                    )
                yield {"type": event["type"], "object": obj}

    async def create(
        self, resource: str, obj: JsonObject, namespace: str | None = None
    ) -> JsonObject:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return await self._request("POST", resource_path(resource, ns), body=obj)

    async def update(
        self,
        resource: str,
        obj: JsonObject,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject:
        meta = obj.get("metadata", {})
        ns = namespace or meta.get("namespace")
        return await self._request(
            "PUT", resource_path(resource, ns, meta.get("name"), subresource), body=obj
        )

    async def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        patch_type: PatchType = "merge",
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> JsonObject:
        return await self._request(
            "PATCH",
            resource_path(resource, namespace, name, subresource),
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )

    async def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> JsonObject:
        params = (
            {}
            if grace_period_seconds is None
            else {"gracePeriodSeconds": str(grace_period_seconds)}
        )
        return await self._request("DELETE", resource_path(resource, namespace, name), params)


def _selector_params(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params
