"""Just enough OpenAPI v3 for kubectl: the PATCH operation of each kind, tagged with its
group/version/kind and the ``fieldValidation`` query parameter.

kubectl apply/create validate manifests client-side from the OpenAPI schema unless the server
advertises server-side field validation; it decides that by finding ``fieldValidation`` among
the PATCH parameters of the kind in ``/openapi/v3`` (cli-runtime's queryParamVerifierV3). With
that advertised, kubectl needs no schemas: it computes strategic merge patches from its built-in
Go types. (Unknown fields are then accepted silently: this server does not validate schemas.)
"""

from __future__ import annotations

from localcluster.apiclient import JsonObject
from localcluster.apiserver.resources import GROUP_VERSIONS


def _path_prefix(group_version: str) -> str:
    return f"api/{group_version}" if "/" not in group_version else f"apis/{group_version}"


def openapi_root() -> JsonObject:
    return {
        "paths": {
            _path_prefix(gv): {"serverRelativeURL": f"/openapi/v3/{_path_prefix(gv)}"}
            for gv in GROUP_VERSIONS
        }
    }


def openapi_group_version(group_version: str) -> JsonObject | None:
    types = GROUP_VERSIONS.get(group_version)
    if types is None:
        return None
    paths: JsonObject = {}
    for rtype in types:
        if rtype.virtual:  # created only, never patched
            continue
        scope = "/namespaces/{namespace}" if rtype.namespaced else ""
        path = f"/{_path_prefix(group_version)}{scope}/{rtype.plural}/{{name}}"
        paths[path] = {
            "patch": {
                "operationId": f"patch{rtype.kind}",
                "x-kubernetes-group-version-kind": {
                    "group": rtype.group,
                    "version": rtype.version,
                    "kind": rtype.kind,
                },
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }
