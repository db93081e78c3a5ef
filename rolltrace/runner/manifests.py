"""Kubernetes manifests for a scenario: the demo app's Deployment and its LoadBalancer Service.

The same objects go to the local cluster and to real clusters (one code path). The demo app's
behaviour is passed as ``DEMOAPP_*`` environment variables (the app reads them; see
``python -m demoapp --help``) rather than args, so a `kubectl set env` can change it too.
Labels carry ``app.kubernetes.io/managed-by: rolltrace`` so that rolltrace can tell objects it
created from the user's (it refuses to touch the latter unless told to).
"""

from __future__ import annotations

from typing import Any

from rolltrace.scenario import App, PreStop, Probe, Scenario

MANAGED_BY = {"app.kubernetes.io/managed-by": "rolltrace"}
APP_LABEL = "app.kubernetes.io/name"


def _probe(probe: Probe, port: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.path, "port": probe.port or port},
        "initialDelaySeconds": probe.initial_delay_s,
        "periodSeconds": probe.period_s,
        "timeoutSeconds": probe.timeout_s,
        "successThreshold": probe.success_threshold,
        "failureThreshold": probe.failure_threshold,
    }


def _pre_stop(pre_stop: PreStop, port: int) -> dict[str, Any]:
    if pre_stop.sleep_s is not None:
        return {"sleep": {"seconds": pre_stop.sleep_s}}  # native action, GA in 1.34 (KEP-3960)
    if pre_stop.exec is not None:
        return {"exec": {"command": pre_stop.exec}}
    return {"httpGet": {"path": pre_stop.http_get_path, "port": port}}


def _app_env(scenario: Scenario, app: App) -> list[dict[str, Any]]:
    values = {
        "DEMOAPP_PORT": scenario.workload.container_port,
        "DEMOAPP_STARTUP_DELAY": app.startup_delay_s,
        "DEMOAPP_WARMUP": app.warmup_s,
        "DEMOAPP_WARMUP_MODE": app.warmup_mode,
        "DEMOAPP_READY_LIES": str(app.ready_lies).lower(),
        "DEMOAPP_LATENCY": app.latency,
        "DEMOAPP_KEEPALIVE_TIMEOUT": app.keepalive_timeout_s,
        "DEMOAPP_SHUTDOWN": app.shutdown,
        "DEMOAPP_DRAIN_TIMEOUT": app.drain_timeout_s,
        "DEMOAPP_MAX_CONCURRENCY": app.max_concurrency,
        "DEMOAPP_IDLE_CLOSE": app.idle_close,
        "DEMOAPP_CRASH_AFTER": app.crash_after_s,
        "DEMOAPP_CRASH_AFTER_REQUESTS": app.crash_after_requests,
        "DEMOAPP_LIVENESS_FAIL_AFTER": app.liveness_fail_after_s,
        "DEMOAPP_READY_FLAP_PERIOD": app.ready_flap_period_s,
        "DEMOAPP_READY_FLAP_DOWN": app.ready_flap_down_s,
        "DEMOAPP_FLAP_MODE": app.flap_mode,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in values.items()]
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return env


def deployment(scenario: Scenario, name: str = "demoapp") -> dict[str, Any]:
    port = scenario.workload.container_port
    pod = scenario.pod
    container: dict[str, Any] = {
        "name": "app",
        "image": scenario.workload.image,
        "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
        "env": _app_env(scenario, scenario.workload.app),
    }
    if pod.readiness_probe is not None:
        container["readinessProbe"] = _probe(pod.readiness_probe, port)
    if pod.liveness_probe is not None:
        container["livenessProbe"] = _probe(pod.liveness_probe, port)
    if pod.startup_probe is not None:
        container["startupProbe"] = _probe(pod.startup_probe, port)
    if pod.pre_stop is not None:
        container["lifecycle"] = {"preStop": _pre_stop(pod.pre_stop, port)}
    strategy: dict[str, Any] = {"type": scenario.strategy.type}
    if scenario.strategy.type == "RollingUpdate":
        strategy["rollingUpdate"] = {
            "maxSurge": scenario.strategy.max_surge,
            "maxUnavailable": scenario.strategy.max_unavailable,
        }
    labels = {APP_LABEL: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, **MANAGED_BY}},
        "spec": {
            "replicas": scenario.workload.replicas,
            "selector": {"matchLabels": labels},
            "strategy": strategy,
            "minReadySeconds": scenario.strategy.min_ready_s,
            "progressDeadlineSeconds": scenario.strategy.progress_deadline_s,
            "revisionHistoryLimit": 10,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": pod.termination_grace_period_s,
                    "containers": [container],
                },
            },
        },
    }


def service(scenario: Scenario, name: str = "demoapp") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {APP_LABEL: name, **MANAGED_BY}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {APP_LABEL: name},
            "externalTrafficPolicy": scenario.service.external_traffic_policy,
            "ports": [
                {
                    "name": "http",
                    "port": scenario.service.port,
                    "targetPort": scenario.workload.container_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def rollout_patch(scenario: Scenario, now_iso: str) -> dict[str, Any]:
    """The strategic-merge patch that triggers the rollout (what `kubectl rollout restart` /
    `kubectl set image` / `kubectl set env` send). ``rollout.app`` changes the container's env
    (merged by name), so only the new revision gets it."""
    rollout = scenario.rollout
    if rollout.trigger == "patch":
        if not rollout.patch:
            raise ValueError("rollout.trigger 'patch' needs rollout.patch")
        return rollout.patch
    container: dict[str, Any] = {"name": "app"}
    if rollout.trigger == "image":
        if not rollout.image:
            raise ValueError("rollout.trigger 'image' needs rollout.image")
        container["image"] = rollout.image
    if rollout.app is not None:
        container["env"] = _app_env(scenario, scenario.new_app())
    template: dict[str, Any] = {}
    if len(container) > 1:
        template["spec"] = {"containers": [container]}
    if rollout.trigger == "restart":
        template["metadata"] = {"annotations": {"kubectl.kubernetes.io/restartedAt": now_iso}}
    return {"spec": {"template": template}}
