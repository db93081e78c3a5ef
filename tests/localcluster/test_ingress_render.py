"""The ingress controller's plan and nginx.conf as pure functions of the API objects; every
rendered configuration is checked by the real ``nginx -t``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from localcluster.ingress.nginxconf import (
    LOG_FORMAT,
    LuaBalancer,
    NginxSettings,
    backends_document,
    render_nginx_conf,
)
from localcluster.ingress.plan import IngressClassFilter, IngressPlan, plan_ingress
from localcluster.kubelet.containers import Launch, PodContext, resolve_launch
from localcluster.nginxcommon import Nginx, NginxPaths
from localcluster.state import POD_DIR_ENV
from tests.conftest import require
from tests.localcluster.test_ingress_dynamic import require_lua_module

OURS = {"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
THEIRS = {"metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}}


def _ingress(name: str, paths: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": spec.pop("at", "")},
        "spec": {"rules": [{"http": {"paths": paths}}], **spec},
    }


def _path(path: str, path_type: str, service: str, port: int = 80) -> dict[str, Any]:
    backend = {"service": {"name": service, "port": {"number": port}}}
    return {"path": path, "pathType": path_type, "backend": backend}


def _service(name: str, port: int = 80, port_name: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": port_name, "port": port, "targetPort": 8080}]},
    }


def _slice(
    service: str, *endpoints: tuple[str, dict[str, bool]], port: int = 8080, name: str = ""
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name or f"{service}-{port}",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": port}],
        "endpoints": [{"addresses": [ip], "conditions": cond} for ip, cond in endpoints],
    }


READY = {"ready": True, "serving": True, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}
WARMING = {"ready": False, "serving": False, "terminating": False}


def _plan(ingresses: list[Any], services: list[Any], slices: list[Any]) -> IngressPlan:
    return plan_ingress([OURS, THEIRS], ingresses, services, slices, IngressClassFilter())


def nginx_accepts(paths: NginxPaths, text: str) -> None:
    """The real ``nginx -t`` accepts ``text``: the check both hops run before installing a
    configuration (``Nginx.test``, which raises with nginx's output), with the directories
    they prepare."""
    require("nginx")
    nginx = Nginx(paths)
    nginx.prepare()
    paths.conf.write_text(text)
    asyncio.run(nginx.test(str(paths.conf)))


def test_only_ready_endpoints_become_upstream_servers() -> None:
    """Terminating (even serving) and not-yet-ready endpoints are left out: no fallback; an
    address listed twice counts by its most usable copy (kubewire's rule)."""
    slices = [
        _slice("web", ("10.0.0.1", READY), ("10.0.0.2", TERMINATING), ("10.0.0.3", WARMING)),
        _slice("web", ("10.0.0.4", {}), ("10.0.0.1", WARMING), name="web-second"),  # nil: ready
    ]
    plan = _plan(
        [_ingress("web", [_path("/", "Prefix", "web")], ingressClassName="nginx")],
        [_service("web")],
        slices,
    )
    assert plan.endpoints() == {"default-web-80": ["10.0.0.1:8080", "10.0.0.4:8080"]}


def test_only_all_terminating_means_503_not_the_serving_ones(tmp_path: Path) -> None:
    plan = _plan(
        [_ingress("web", [_path("/", "Prefix", "web")], ingressClassName="nginx")],
        [_service("web")],
        [_slice("web", ("10.0.0.2", TERMINATING))],
    )
    text = render_nginx_conf(plan, NginxSettings(), NginxPaths(tmp_path))
    assert "upstream default-web-80" not in text  # nginx refuses an empty upstream block
    assert "location / {\n            return 503;" in text
    nginx_accepts(NginxPaths(tmp_path), text)


@pytest.mark.parametrize(
    ("spec", "annotations", "served"),
    [
        ({"ingressClassName": "nginx"}, {}, True),
        ({"ingressClassName": "other"}, {}, False),
        ({}, {"kubernetes.io/ingress.class": "nginx"}, True),
        ({}, {"kubernetes.io/ingress.class": "traefik"}, False),
        ({}, {}, False),  # no class and no default IngressClass
    ],
)
def test_which_ingresses_are_ours(
    spec: dict[str, Any], annotations: dict[str, str], served: bool
) -> None:
    ingress = _ingress("web", [_path("/", "Prefix", "web")], **spec)
    ingress["metadata"]["annotations"] = annotations
    plan = _plan([ingress], [_service("web")], [_slice("web", ("10.0.0.1", READY))])
    assert bool(plan.upstreams) is served


def test_an_ingress_without_class_is_ours_when_our_class_is_the_default() -> None:
    default = {
        "metadata": {
            "name": "nginx",
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": "k8s.io/ingress-nginx"},
    }
    plan = plan_ingress(
        [default],
        [_ingress("web", [_path("/", "Prefix", "web")])],
        [_service("web")],
        [_slice("web", ("10.0.0.1", READY))],
        IngressClassFilter(),
    )
    assert plan.endpoints() == {"default-web-80": ["10.0.0.1:8080"]}


def test_paths_hosts_conflicts_and_missing_backends(tmp_path: Path) -> None:
    """Prefix matches by element, Exact only itself; the oldest Ingress keeps a contested
    path; a missing Service answers 503; a host gets its own server with a 404 default."""
    older = _ingress(
        "older",
        [_path("/api", "Prefix", "api"), _path("/exact", "Exact", "web")],
        ingressClassName="nginx",
        at="2026-01-01T00:00:00Z",
    )
    newer = _ingress(
        "newer",
        [_path("/api", "Prefix", "web"), _path("/gone", "Prefix", "missing")],
        ingressClassName="nginx",
        at="2026-01-02T00:00:00Z",
    )
    hosted = _ingress("hosted", [_path("/", "Prefix", "web")], ingressClassName="nginx")
    hosted["spec"]["rules"][0]["host"] = "shop.example.com"
    plan = _plan(
        [newer, hosted, older],
        [_service("web"), _service("api")],
        [_slice("web", ("10.0.0.1", READY)), _slice("api", ("10.0.1.1", READY))],
    )
    by_host = {s.host: {(loc.path, loc.match): loc.upstream for loc in s.locations}
               for s in plan.servers}  # fmt: skip
    assert by_host["_"] == {
        ("/api", "exact"): "default-api-80",
        ("/api/", "prefix"): "default-api-80",
        ("/exact", "exact"): "default-web-80",
        ("/gone", "exact"): None,
        ("/gone/", "prefix"): None,
    }
    assert by_host["shop.example.com"] == {("/", "prefix"): "default-web-80"}
    text = render_nginx_conf(plan, NginxSettings(), NginxPaths(tmp_path))
    assert "server_name shop.example.com;" in text
    assert "location = /gone {\n            return 503;" in text
    nginx_accepts(NginxPaths(tmp_path), text)


def test_default_backend_and_named_service_port(tmp_path: Path) -> None:
    ingress = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "ingressClassName": "nginx",
            "defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}},
        },
    }
    plan = _plan([ingress], [_service("web", 8000, "http")], [_slice("web", ("10.0.0.1", READY))])
    # the slice's port is unnamed while the Service port is named "http": no match
    assert plan.endpoints() == {"default-web-8000": []}
    named = _slice("web", ("10.0.0.1", READY))
    named["ports"] = [{"name": "http", "port": 8080}]
    plan = _plan([ingress], [_service("web", 8000, "http")], [named])
    assert plan.endpoints() == {"default-web-8000": ["10.0.0.1:8080"]}
    paths = NginxPaths(tmp_path)
    nginx_accepts(paths, render_nginx_conf(plan, NginxSettings(), paths))


def test_settings_render_as_ingress_nginx_defaults_and_overrides(tmp_path: Path) -> None:
    plan = _plan(
        [_ingress("web", [_path("/", "Prefix", "web")], ingressClassName="nginx")],
        [_service("web")],
        [_slice("web", ("10.0.0.1", READY), ("10.0.0.2", READY))],
    )
    defaults = render_nginx_conf(plan, NginxSettings(), NginxPaths(tmp_path))
    for directive in (
        "proxy_next_upstream error timeout;",
        "proxy_next_upstream_tries 3;",
        "keepalive 320;",
        "keepalive_timeout 60000ms;",
        "keepalive_requests 10000;",
        "server 10.0.0.1:8080 max_fails=0;",
        f"access_log {tmp_path / 'access.log'} rolltrace;",
        LOG_FORMAT,
    ):
        assert directive in defaults
    tuned = NginxSettings(
        proxy_next_upstream=("error", "timeout", "http_502"),
        proxy_next_upstream_tries=1,
        upstream_keepalive_timeout_s=4.5,
    )
    text = render_nginx_conf(plan, tuned, NginxPaths(tmp_path))
    assert "proxy_next_upstream error timeout http_502;" in text
    assert "proxy_next_upstream_tries 1;" in text
    assert "keepalive_timeout 4500ms;" in text
    nginx_accepts(NginxPaths(tmp_path), text)


def test_unknown_retry_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown condition"):
        NginxSettings(proxy_next_upstream=("error", "http_599"))


def test_log_format_is_documented_word_for_word() -> None:
    """The documented format, word for word (the access-log reader depends on it)."""
    docs = (Path(__file__).parents[2] / "docs" / "local-cluster.md").read_text()
    assert LOG_FORMAT in docs


def test_the_ingress_nginx_image_runs_the_local_controller() -> None:
    pod = PodContext("ing-1", "default", "uid-1", "node-1", "10.0.0.9", "10.0.0.1", "/pods/ing-1")
    container = {
        "name": "controller",
        "image": "registry.k8s.io/ingress-nginx/controller:v1.12.1@sha256:abc",
        "args": ["/nginx-ingress-controller", "--kubeconfig=/k", "--election-id=x"],
    }
    launch = resolve_launch(container, pod, inherited={})
    assert isinstance(launch, Launch)
    assert launch.argv[1:] == [
        "-m",
        "localcluster.ingress",
        "/nginx-ingress-controller",
        "--kubeconfig=/k",
        "--election-id=x",
    ]
    assert launch.env[POD_DIR_ENV] == "/pods/ing-1"


def test_dynamic_conf_depends_on_structure_only(tmp_path: Path) -> None:
    """Endpoints come and go (even all of them) without changing nginx.conf; a new path or
    backend changes it. Each text passes ``nginx -t`` with the Lua module loaded."""
    require_lua_module()
    balancer = LuaBalancer("ingress/test")
    web = _ingress("web", [_path("/", "Prefix", "web")], ingressClassName="nginx")
    services = [_service("web"), _service("api")]

    def render(ingress: dict[str, Any], *endpoints: tuple[str, dict[str, bool]]) -> str:
        plan = _plan([ingress], services, [_slice("web", *endpoints)])
        return render_nginx_conf(plan, NginxSettings(), NginxPaths(tmp_path), balancer)

    texts = {
        render(web, ("10.0.0.1", READY), ("10.0.0.2", READY)),
        render(web, ("10.0.0.2", READY), ("10.0.0.3", READY)),
        render(web, ("10.0.0.2", TERMINATING)),
        render(web),
    }
    assert len(texts) == 1
    (text,) = texts
    assert "10.0.0." not in text
    assert LOG_FORMAT in text  # the access log keeps its format in both modes
    assert 'set $proxy_upstream_name "default-web-80";' in text
    assert "listen 127.0.0.1:10246;\n        access_log off;" in text  # loopback, not logged
    nginx_accepts(NginxPaths(tmp_path), text)
    grown = _ingress("web", [_path("/", "Prefix", "web"), _path("/api", "Prefix", "api")],
                     ingressClassName="nginx")  # fmt: skip
    assert render(grown, ("10.0.0.1", READY)) != text


def test_backends_document_is_ingress_nginx_shaped() -> None:
    plan = _plan(
        [_ingress("web", [_path("/", "Prefix", "web"), _path("/api", "Prefix", "api")],
                  ingressClassName="nginx")],
        [_service("web"), _service("api")],
        [_slice("web", ("10.0.0.1", READY), ("10.0.0.2", READY))],
    )  # fmt: skip
    assert backends_document(plan) == [
        {"name": "default-api-80", "endpoints": []},
        {
            "name": "default-web-80",
            "endpoints": [
                {"address": "10.0.0.1", "port": "8080"},
                {"address": "10.0.0.2", "port": "8080"},
            ],
        },
    ]
