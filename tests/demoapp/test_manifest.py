"""The real-cluster manifests and image stay consistent with the app's own flags and endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from demoapp.config import AppConfig, ShutdownKind, parse_config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "scenarios/manifests").glob("demoapp*.yaml"))


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], AppConfig]:
    deployment, service = yaml.safe_load_all(path.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return deployment, service, container, parse_config([], env)  # every value must parse


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_runs_the_image_behind_a_load_balancer(path: Path) -> None:
    deployment, service, container, config = _load(path)
    assert container["image"] == "rolltrace/demoapp:0.1.0"
    assert config.port == container["ports"][0]["containerPort"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_well_behaved_manifest_has_every_remedy() -> None:
    deployment, _, container, config = _load(ROOT / "scenarios/manifests/demoapp.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    prestop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert config.shutdown.kind is ShutdownKind.GRACEFUL
    assert pod["terminationGracePeriodSeconds"] > prestop_s + config.drain_timeout_s
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_naive_manifest_lacks_them() -> None:
    _, _, container, config = _load(ROOT / "scenarios/manifests/demoapp-naive.yaml")
    assert "readinessProbe" not in container and "lifecycle" not in container
    assert config.shutdown.kind is ShutdownKind.IMMEDIATE and config.warmup_s > 0


def test_dockerfile_runs_the_package() -> None:
    dockerfile = (ROOT / "demoapp/Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "demoapp"]' in dockerfile
    assert "DEMOAPP_HOST=0.0.0.0" in dockerfile
