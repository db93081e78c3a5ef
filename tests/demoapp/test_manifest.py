"""The real-cluster manifest and image stay consistent with the app's own flags and endpoints."""

from __future__ import annotations

from pathlib import Path

import yaml

from demoapp.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_manifest_probes_the_app_endpoints_and_its_env_parses() -> None:
    deployment, service = yaml.safe_load_all(
        (ROOT / "scenarios/manifests/demoapp.yaml").read_text()
    )
    assert (deployment["kind"], service["kind"], service["spec"]["type"]) == (
        "Deployment",
        "Service",
        "LoadBalancer",
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "rolltrace/demoapp:0.1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    prestop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = parse_config([], env)  # every DEMOAPP_* value is one the app accepts
    assert config.port == container["ports"][0]["containerPort"]
    assert pod["terminationGracePeriodSeconds"] > prestop_s + config.drain_timeout_s
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_dockerfile_runs_the_package() -> None:
    dockerfile = (ROOT / "demoapp/Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "demoapp"]' in dockerfile
    assert "DEMOAPP_HOST=0.0.0.0" in dockerfile
