"""The L7 LB's nginx.conf as a pure function of its frontends and settings; every rendered
configuration is checked by the real ``nginx -t``, which also binds the listeners: the external
IPs here are loopback addresses (on the LB they sit on its namespace's loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.config import ClusterConfig, LBConfig
from localcluster.dataplane.addressing import AddressPlan
from localcluster.lb.balancer import l7_checked, pod_targets
from localcluster.lb.l7 import L7Settings, l7_paths, render_l7_conf, upstream_name
from localcluster.lb.rules import Frontend
from localcluster.nginxcommon import LOG_FORMAT
from tests.localcluster.test_ingress_render import nginx_accepts

TWO_PODS = Frontend(
    "default/web", "127.0.0.21", "tcp", 28080, (("198.19.0.2", 8080), ("198.19.1.2", 8080))
)
NO_TARGETS = Frontend("default/empty", "127.0.0.22", "tcp", 28080, ())
UDP = Frontend("default/dns", "127.0.0.23", "udp", 53, (("198.19.0.9", 53),))


def _render(tmp_path: Path, settings: L7Settings, *frontends: Frontend) -> str:
    paths = l7_paths(tmp_path)
    text = render_l7_conf(frontends, settings, paths)
    nginx_accepts(paths, text)
    return text


def test_each_frontend_listens_on_its_external_ip_and_pools_target_connections(
    tmp_path: Path,
) -> None:
    text = _render(tmp_path, L7Settings(idle_timeout_s=60, connect_timeout_s=10), TWO_PODS)
    name = upstream_name(TWO_PODS)
    block = text[text.index(f"upstream {name} {{") :]
    block = block[: block.index("}")]
    assert "server 198.19.0.2:8080 max_fails=0;" in block  # health is the LB's, never nginx's
    assert "server 198.19.1.2:8080 max_fails=0;" in block
    assert "keepalive_timeout 60000ms;" in block  # the pool's idle timeout is the LB's
    assert "listen 127.0.0.21:28080;" in text and f"proxy_pass http://{name};" in text
    for directive in (
        "proxy_next_upstream off;",  # no retries, as ALB
        "proxy_connect_timeout 10000ms;",
        "proxy_read_timeout 60000ms;",  # a target silent for the idle timeout: 504
        "keepalive_timeout 60000ms;",  # the client side of the idle timeout
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
    ):
        assert f"    {directive}" in text, directive


def test_a_frontend_without_targets_answers_503_and_udp_is_not_proxied(tmp_path: Path) -> None:
    text = _render(tmp_path, L7Settings(), NO_TARGETS, UDP)
    assert "listen 127.0.0.22:28080;" in text and "return 503;" in text
    assert "\n    upstream " not in text  # nginx refuses an empty upstream block
    assert "127.0.0.23" not in text  # an ALB listens for HTTP only


@pytest.mark.parametrize(("draining", "delay", "expected"), [(True, 30.0, 31000), (False, 30.0, 0)])
def test_old_workers_keep_their_requests_for_the_deregistration_delay_only_with_draining(
    tmp_path: Path, draining: bool, delay: float, expected: int
) -> None:
    settings = L7Settings.from_config(
        LBConfig(mode="l7", draining=draining, deregistration_delay_s=delay)
    )
    text = _render(tmp_path, settings, TWO_PODS)
    main = text.split("http {", 1)[0]
    if expected:
        assert f"worker_shutdown_timeout {expected}ms;" in main
    else:
        assert "worker_shutdown_timeout" not in text


def test_the_access_log_is_the_hop_log_in_the_format_the_analyzer_reads(tmp_path: Path) -> None:
    """The analyzer's reader and this nginx meet only through the file: same format text."""
    from analyzer.readers.accesslog import ROLLTRACE_LOG_FORMAT

    text = _render(tmp_path, L7Settings(), TWO_PODS)
    assert LOG_FORMAT == ROLLTRACE_LOG_FORMAT and f"    {LOG_FORMAT}" in text
    assert f"access_log {tmp_path / 'hops' / 'lb.log'} rolltrace;" in text


def test_l7_targets_are_checked_with_http_on_the_traffic_port() -> None:
    """Pod targets keep their TCP check in L4; an ALB checks GET path on the traffic port."""
    service = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
    }
    endpoint_slice = {
        "metadata": {"namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["198.19.0.2"], "conditions": {"ready": True}}],
    }
    (target,) = pod_targets(service, [endpoint_slice])
    assert target.check == ("tcp", 8080)
    checked = l7_checked(target, "/ready")
    assert (checked.check, checked.check_path) == (("http", 8080), "/ready")
    assert AddressPlan(ClusterConfig(lb=LBConfig(mode="l7"))).lb_table  # the config validates
