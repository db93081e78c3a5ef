"""Scenario files: one YAML document says everything about an experiment.

The model is pydantic because scenarios are written by people: every mistake must come back as
``file:line: field.path: what is wrong`` so it can be fixed without reading code. Line numbers
come from the YAML node tree (``yaml.compose``), which pydantic never sees, so errors are mapped
back through each error's ``loc``.

``--set key.path=value`` overrides are applied to the parsed document before validation, so an
override is validated exactly like the file (and its errors name the override).

Timing presets (``cluster.preset``) bundle the reference figures of
docs/architecture.md#reference-timings so that a scenario can say ``gke-l4`` instead of spelling
out health-check intervals and proxy sync periods; explicit fields win over the preset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from analyzer.budget import parse_budget
from analyzer.errors import BudgetExpressionError
from analyzer.schema import Cause
from localcluster.config import DelayModel, LBConfig
from localcluster.ingress.nginxconf import NEXT_UPSTREAM_CONDITIONS

Percent = int | str  # an integer count or "NN%"
#: Where a broken scenario's fix lives (``analyzer.advice`` names the same places ``fix_in``).
FixedBy = Literal["setting", "cluster", "probe", "app"]


class ScenarioError(ValueError):
    """A scenario file (or override) is invalid; the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Probe(_Strict):
    path: str = Field("/ready", description="HTTP GET path the kubelet probes.")
    port: int | None = Field(
        None, description="Port the probe connects to; empty means the container port."
    )
    initial_delay_s: int = Field(
        0, ge=0, description="`initialDelaySeconds`: seconds after the container starts."
    )
    period_s: int = Field(1, ge=1, description="`periodSeconds`: seconds between probes.")
    timeout_s: int = Field(1, ge=1, description="`timeoutSeconds`: a slower answer fails.")
    success_threshold: int = Field(
        1, ge=1, description="`successThreshold`: passes in a row to count as passing."
    )
    failure_threshold: int = Field(
        1, ge=1, description="`failureThreshold`: failures in a row to count as failing."
    )


class PreStop(_Strict):
    """Exactly one of: the native ``sleep`` action, an exec command, an HTTP GET."""

    sleep_s: int | None = Field(
        None, ge=0, description="Native `sleep` action (KEP-3960): seconds to wait before SIGTERM."
    )
    exec: list[str] | None = Field(
        None, description="Command run in the container; SIGTERM follows when it exits."
    )
    http_get_path: str | None = Field(
        None, description="Path of an HTTP GET to the container port; SIGTERM follows its answer."
    )

    @model_validator(mode="after")
    def _one_action(self) -> PreStop:
        chosen = [v for v in (self.sleep_s, self.exec, self.http_get_path) if v is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of sleep_s, exec, http_get_path")
        return self


class App(_Strict):
    """The demo app's behaviour (see ``python -m demoapp --help``)."""

    startup_delay_s: float = Field(
        0.0, ge=0, description="Seconds from process start until the app listens."
    )
    warmup_s: float = Field(
        0.0, ge=0, description="Seconds after listening during which every request fails."
    )
    warmup_mode: Literal["503", "reset"] = Field(
        "503", description="How warm-up requests fail: an HTTP 503, or a TCP reset."
    )
    ready_lies: bool = Field(
        False, description="`/ready` answers 200 as soon as the app listens, warm or not."
    )
    latency: str = Field(
        "fixed:1",
        description="Service time per request in ms: `fixed:N`, `uniform:A:B` or "
        "`lognormal:MEDIAN:SIGMA`.",
    )
    keepalive_timeout_s: float = Field(
        60.0, gt=0, description="The app closes a keep-alive connection idle this long."
    )
    shutdown: str = Field(
        "graceful",
        description="On SIGTERM: `immediate` (exit at once, no drain), `graceful` (stop "
        "accepting, finish in-flight requests, close idle connections), `ignore` (keep "
        "serving until SIGKILL) or `delayed:N` (serve N s more, then drain).",
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, description="A graceful drain gives up and exits after this many seconds."
    )
    max_concurrency: int = Field(
        0, ge=0, description="Requests in service at once per Pod; more wait (0: unlimited)."
    )
    idle_close: Literal["fin", "rst"] = Field(
        "fin",
        description="How the keep-alive timeout closes a connection: FIN, or a bare RST "
        "(SO_LINGER 0).",
    )
    # Faults of a bad revision (0: off); set them under rollout.app to break only the new one.
    crash_after_s: float = Field(
        0.0,
        ge=0,
        description="Fault: exit 1 without draining this many seconds after listening, again "
        "after every restart (0: off).",
    )
    crash_after_requests: int = Field(
        0,
        ge=0,
        description="Fault: exit 1 without draining on the request after N served (0: off).",
    )
    liveness_fail_after_s: float = Field(
        0.0,
        ge=0,
        description="Fault: `/healthz` answers 500 from this many seconds after listening (0: off).",
    )
    ready_flap_period_s: float = Field(
        0.0,
        ge=0,
        description="Fault: readiness flap cycle; the last `ready_flap_down_s` of each period "
        "the app cannot serve and `/ready` fails (0: off).",
    )
    ready_flap_down_s: float = Field(
        0.0, ge=0, description="Seconds of each flap cycle the app cannot serve."
    )
    flap_mode: Literal["503", "reset"] = Field(
        "503", description="How requests fail while flapped down: an HTTP 503, or a TCP reset."
    )

    @model_validator(mode="after")
    def _flap_fits(self) -> App:
        if self.ready_flap_period_s and not 0 < self.ready_flap_down_s < self.ready_flap_period_s:
            raise ValueError("ready_flap_down_s must be > 0 and shorter than ready_flap_period_s")
        return self

    @field_validator("shutdown")
    @classmethod
    def _shutdown(cls, value: str) -> str:
        mode, _, seconds = value.partition(":")
        if mode not in {"immediate", "graceful", "ignore", "delayed"}:
            raise ValueError("must be immediate, graceful, ignore or delayed:N")
        if (mode == "delayed") != bool(seconds) or (seconds and not _is_number(seconds)):
            raise ValueError("delayed needs seconds (delayed:5); the others take none")
        return value


class Workload(_Strict):
    replicas: int = Field(3, ge=1, le=500, description="The Deployment's `replicas`.")
    image: str = Field("rolltrace/demoapp:0.1.0", description="Container image of the app.")
    container_port: int = Field(
        8080, ge=1, le=65535, description="Port the app listens on inside the Pod."
    )
    app: App = Field(App(), description="The demo app's behaviour in every Pod (`DEMOAPP_*` env).")


class PodSettings(_Strict):
    readiness_probe: Probe | None = Field(
        Probe(), description="Readiness probe; `null` means none (ready once the container runs)."
    )
    liveness_probe: Probe | None = Field(
        None, description="Liveness probe; when it fails, the kubelet restarts the container."
    )
    startup_probe: Probe | None = Field(
        None, description="Startup probe; the other probes wait until it passes."
    )
    pre_stop: PreStop | None = Field(
        None, description="preStop hook, run before SIGTERM when the Pod is deleted."
    )
    termination_grace_period_s: int = Field(
        30,
        ge=0,
        description="`terminationGracePeriodSeconds`: preStop and shutdown together get this "
        "long before SIGKILL.",
    )


class Strategy(_Strict):
    type: Literal["RollingUpdate", "Recreate"] = Field(
        "RollingUpdate", description="Deployment strategy."
    )
    max_surge: Percent = Field(
        "25%", description="`maxSurge`: Pods above `replicas` during the rollout, a count or `NN%`."
    )
    max_unavailable: Percent = Field(
        "25%", description="`maxUnavailable`: Pods below `replicas` allowed, a count or `NN%`."
    )
    min_ready_s: int = Field(
        0, ge=0, description="`minReadySeconds`: a new Pod counts as available after this long."
    )
    progress_deadline_s: int = Field(
        600, ge=1, description="`progressDeadlineSeconds` of the Deployment."
    )

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _int_or_percent(cls, value: Percent) -> Percent:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must be ≥ 0")
            return value
        if not (value.endswith("%") and value[:-1].isdigit()):
            raise ValueError("must be an integer or a percentage like '25%'")
        return value


class Service(_Strict):
    external_traffic_policy: Literal["Cluster", "Local"] = Field(
        "Cluster",
        description="`externalTrafficPolicy`: `Local` keeps LB traffic on nodes with a local "
        "endpoint and has the LB health-check each node.",
    )
    port: int = Field(80, ge=1, le=65535, description="Port of the LoadBalancer Service.")


class Ingress(_Strict):
    """An ingress-nginx hop in front of the workload (docs/local-cluster.md, "ingress"): the
    load goes to the controller's LoadBalancer Service, nginx sends it on to the Pods. Defaults
    are ingress-nginx's."""

    sync_interval_s: float = Field(
        1.0,
        gt=0,
        description="`--sync-interval`: seconds between the controller's syncs of its endpoint "
        "list into nginx.",
    )
    mode: Literal["reload", "dynamic"] = Field(
        "reload",
        description="How a sync reaches nginx: `reload` (a new configuration, `nginx -s "
        "reload`) or `dynamic` (the upstream list changed without a reload, as ingress-nginx's "
        "Lua balancer does).",
    )
    next_upstream: str = Field(
        "error timeout",
        description="`proxy-next-upstream` (ingress-nginx ConfigMap text): when nginx retries a "
        "request on the next Pod, e.g. `error timeout http_502`; `off` disables retries.",
    )
    next_upstream_tries: int = Field(
        3, ge=0, description="`proxy-next-upstream-tries`: attempts per request (0: no limit)."
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        description="`proxy-connect-timeout`: nginx gives up connecting to a Pod after this long "
        "(a `timeout` for `next_upstream`); below the load's `request_timeout_s` the client "
        "sees nginx's answer.",
    )
    upstream_keepalive_timeout_s: float = Field(
        60.0,
        gt=0,
        description="`upstream-keepalive-timeout`: nginx closes a pooled Pod connection idle "
        "this long.",
    )
    replicas: int = Field(
        1, ge=1, le=16, description="Controller Pods (its Deployment's `replicas`)."
    )

    @field_validator("next_upstream")
    @classmethod
    def _known_conditions(cls, value: str) -> str:
        words = value.split()
        if not words:
            raise ValueError("empty; use `off` to disable retries")
        unknown = [w for w in words if w not in NEXT_UPSTREAM_CONDITIONS]
        if unknown or ("off" in words and len(words) > 1):
            raise ValueError(
                f"unknown or mixed condition(s) {' '.join(unknown) or 'off'}; use `off` alone or "
                f"any of {', '.join(sorted(NEXT_UPSTREAM_CONDITIONS - {'off'}))}"
            )
        return value


class LocalCluster(_Strict):
    kind: Literal["local"] = Field(
        "local", description="The embedded local cluster (needs root on Linux)."
    )
    nodes: int = Field(3, ge=1, le=16, description="Number of nodes.")
    preset: str | None = Field(
        None, description="A bundle of reference timings (see Presets); explicit fields win."
    )
    endpoint_batch_delay_s: float = Field(
        0.0,
        ge=0,
        description="EndpointSlice controller batching (`--endpointslice-updates-batch-period`, "
        "0 upstream).",
    )
    # The local cluster's own models, so a scenario and the cluster cannot drift apart.
    proxy_delay: DelayModel = Field(
        DelayModel(kind="min-sync", min_sync_period_s=1.0),
        description="How long each node's kube-proxy takes to apply an endpoint change.",
    )
    per_node_proxy_delay: dict[str, DelayModel] = Field(
        default_factory=dict,
        description="Node name (`node-1`, ...) to its own proxy delay, replacing `proxy_delay`.",
    )
    terminating_fallback: bool = Field(
        True,
        description="KEP-1669: with no ready endpoint, proxies use serving-terminating ones.",
    )
    lb: LBConfig = Field(LBConfig(), description="The cloud load-balancer emulator.")
    ingress: Ingress | None = Field(
        None,
        description="An ingress-nginx hop between the LB and the workload (absent: none); the "
        "workload's Service is then a ClusterIP Service behind it.",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset; choose one of {', '.join(sorted(PRESETS))}")
        return value


class KubeCluster(_Strict):
    kind: Literal["kube"] = Field(description="A real cluster reached through a kubeconfig.")
    context: str = Field(description="kubeconfig context to use.")
    namespace: str = Field(description="Namespace for the Deployment and Service.")


class Load(_Strict):
    rate: float = Field(
        100.0, gt=0, le=100_000, description="Requests per second, all users together."
    )
    users: int = Field(10, ge=1, le=10_000, description="Simulated users (Locust users).")
    keepalive_weight: int = Field(
        1, ge=0, description="Share of users that reuse one keep-alive connection."
    )
    new_connection_weight: int = Field(
        1, ge=0, description="Share of users that open a new connection per request."
    )
    before_s: float = Field(5.0, ge=0, description="Seconds of load before the rollout trigger.")
    after_s: float = Field(
        5.0, ge=0, description="Seconds of load after the rollout and old Pods are gone."
    )
    request_timeout_s: float = Field(
        2.0, gt=0, description="A request without an answer after this long fails (timeout)."
    )
    connect_timeout_s: float = Field(
        1.0, gt=0, description="A connection not established after this long fails."
    )
    workers: int = Field(
        0, ge=0, le=64, description="Locust worker processes (0: one local process)."
    )
    path: str = Field("/", description="HTTP path every request asks for.")


class Rollout(_Strict):
    trigger: Literal["restart", "image", "patch"] = Field(
        "restart", description="What starts the rollout (see Rollout triggers)."
    )
    image: str | None = Field(None, description="The new image, for `trigger: image`.")
    patch: dict[str, Any] | None = Field(
        None, description="Strategic merge patch of the Deployment, for `trigger: patch`."
    )
    deadline_s: float = Field(
        180.0, gt=0, description="The run fails when the rollout has not completed by then."
    )
    # The new revision's app: the fields given here replace workload.app's in the rollout, so a
    # scenario can break (or fix) only the new Pods, e.g. {crash_after_s: 6}.
    app: App | None = Field(
        None,
        description="The new revision's app: only the fields given replace `workload.app`'s, "
        "so only the new Pods change.",
    )

    @model_validator(mode="after")
    def _app_change_needs_a_template_trigger(self) -> Rollout:
        if self.app is not None and self.trigger == "patch":
            raise ValueError("app: put the env change in rollout.patch, or use trigger restart")
        return self


class Manifests(_Strict):
    """The user's own Deployment and LoadBalancer Service, applied instead of the demo app's."""

    files: list[str] = Field(
        default_factory=list,
        description="YAML files (multi-document allowed) holding the Deployment and its "
        "LoadBalancer Service; paths are relative to the scenario file.",
    )
    deployment: str | None = Field(
        None, description="Which Deployment to use when the files hold several."
    )
    service: str | None = Field(
        None, description="Which LoadBalancer Service to use when several select the Deployment."
    )

    @model_validator(mode="before")
    @classmethod
    def _a_list_is_the_files(cls, value: Any) -> Any:
        """``manifests: [deploy.yaml, svc.yaml]`` is short for ``manifests: {files: [...]}``."""
        return {"files": value} if isinstance(value, list) else value


# The sections a user's own manifests describe instead (``manifests:`` / ``--manifest``).
WORKLOAD_SECTIONS = ("workload", "pod", "strategy", "service")


class Scenario(_Strict):
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Scenario name: lowercase letters, digits and `-`; names the run directory.",
    )
    description: str = Field("", description="What the scenario shows, for people.")
    workload: Workload = Field(Workload(), description="The Deployment and its app.")
    pod: PodSettings = Field(PodSettings(), description="Probes, preStop and grace period.")
    strategy: Strategy = Field(Strategy(), description="The Deployment's update strategy.")
    service: Service = Field(Service(), description="The `type: LoadBalancer` Service.")
    cluster: LocalCluster | KubeCluster = Field(
        LocalCluster(),
        discriminator="kind",
        description="Where the run happens: `kind: local` or `kind: kube`.",
    )
    load: Load = Field(Load(), description="The HTTP load driven through the LB.")
    rollout: Rollout = Field(Rollout(), description="How the rollout is triggered.")
    manifests: Manifests = Field(
        Manifests(),
        description="Your own Deployment and LoadBalancer Service (docs/try-your-own-app.md): "
        "this section, or just the list of files (`manifests: [deploy.yaml, svc.yaml]`); when "
        "given, workload, pod, strategy and service are read from them instead.",
    )
    repetitions: int = Field(1, ge=1, le=100, description="Runs of the same scenario.")
    # Conditions that must HOLD after the run (the opposite sense of `analyze --fail-on`, whose
    # expressions fail the gate when true); same grammar, e.g. "failed == 0".
    expect: list[str] = Field(
        default_factory=list,
        description="Conditions that must hold after each run, in `analyze --fail-on`'s "
        "grammar (e.g. `failed == 0`).",
    )
    dominant_cause: Cause | None = Field(
        None, description="The cause a broken scenario must show most often."
    )
    masked_at: Literal["ingress", "lb"] | None = Field(
        None,
        description="The L7 hop whose retries this scenario shows hiding failures: each run "
        "must count masked requests there, and the report's count must match the truth's "
        "within 5 % (tests/e2e/test_scenarios.py).",
    )
    # Declared, not read from the report: a wrong verdict of the advice must fail the e2e, not
    # silently skip the rerun that checks it.
    fixed_by: FixedBy | None = Field(
        None,
        description="Where a broken scenario's fix lives, which its report's recommendations "
        "must agree with: `setting` (a Deployment / Pod setting: the recommended changes, "
        "applied, leave no failure), `cluster` (the Service or cluster: the same, where the "
        "scenario can set it), `probe` (a readiness probe on an endpoint the app must provide) "
        "or `app` (no setting is claimed).",
    )

    def new_app(self) -> App:
        """The app of the revision the rollout creates: workload.app with rollout.app's
        explicitly given fields on top."""
        change = self.rollout.app
        if change is None:
            return self.workload.app
        return self.workload.app.model_copy(
            update={name: getattr(change, name) for name in change.model_fields_set}
        )

    def ingress(self) -> Ingress | None:
        """The ingress hop in front of the workload (local clusters only), or None."""
        return self.cluster.ingress if isinstance(self.cluster, LocalCluster) else None

    def ignored_sections(self) -> list[str]:
        """The workload sections this scenario sets that its manifests override."""
        if not self.manifests.files:
            return []
        return [name for name in WORKLOAD_SECTIONS if name in self.model_fields_set]

    @field_validator("cluster", mode="before")
    @classmethod
    def _cluster_kind_defaults_to_local(cls, value: Any) -> Any:
        """A cluster section without ``kind`` (``cluster: {nodes: 5}``, or ``--set
        cluster.nodes=5`` on a scenario that has none) is the local cluster, as the default
        section is."""
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "local", **value}
        return value

    @field_validator("expect")
    @classmethod
    def _expressions_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                parse_budget(text)
            except BudgetExpressionError as exc:
                raise ValueError(str(exc)) from None
        return value


@dataclass(frozen=True)
class Preset:
    """A named bundle of reference timings (docs/architecture.md#reference-timings): a partial
    ``cluster`` section merged under the scenario's own fields, with the public source of each
    figure so that a user can check it against the platform they study."""

    summary: str
    cluster: dict[str, Any]
    source: str


_KUBE_PROXY_DEFAULT = {"kind": "min-sync", "min_sync_period_s": 1.0, "value_s": 0.05}
_KUBE_PROXY_SOURCE = (
    "kube-proxy applies at most one sync per `minSyncPeriod`, 1 s by default (kube-proxy "
    "reference, https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/; "
    "kubernetes/kubernetes#92836); the 50 ms a sync itself takes is an assumed figure for a "
    "small cluster, measure yours with kube-proxy's `sync_proxy_rules_duration_seconds` metric"
)
_AWS_NLB_HEALTH_CHECK = {
    "hc_interval_s": 10,
    "hc_timeout_s": 10,
    "healthy_threshold": 3,
    "unhealthy_threshold": 3,
}
_AWS_NLB_SOURCE = (
    "AWS Load Balancer Controller Service annotations, defaults of "
    "`aws-load-balancer-healthcheck-interval` 10, `-timeout` 10, `-healthy-threshold` 3, "
    "`-unhealthy-threshold` 3 (https://kubernetes-sigs.github.io/aws-load-balancer-controller/"
    "latest/guide/service/annotations/)"
)

PRESET_CATALOG: dict[str, Preset] = {
    "kube-proxy-default": Preset(
        summary="kube-proxy's default rule sync: at most one per second, 50 ms each.",
        cluster={"proxy_delay": _KUBE_PROXY_DEFAULT},
        source=_KUBE_PROXY_SOURCE + ".",
    ),
    "large-cluster": Preset(
        summary="Propagation in a big cluster: every proxy sync takes 4-5 s, and the "
        "EndpointSlice controller batches changes for 1 s.",
        cluster={
            "proxy_delay": {"kind": "uniform", "low_s": 4.0, "high_s": 5.0},
            "endpoint_batch_delay_s": 1.0,
        },
        source="iptables-restore runs of 4-5 s each reported in large clusters "
        "(kubernetes/kubernetes#92836, the discussion of kube-proxy's minSyncPeriod); batching "
        "is kube-controller-manager's `--endpointslice-updates-batch-period` (0 upstream), set "
        "to 1 s as a managed platform may "
        "(https://kubernetes.io/docs/reference/command-line-tools-reference/"
        "kube-controller-manager/).",
    ),
    "gke-l4": Preset(
        summary="GKE / GCE external passthrough (L4) LB: node targets checked every 8 s, "
        "timeout 1 s, healthy after 1 pass, unhealthy after 3 failures.",
        cluster={
            "proxy_delay": _KUBE_PROXY_DEFAULT,
            "lb": {
                "targets": "nodes",
                "hc_interval_s": 8,
                "hc_timeout_s": 1,
                "healthy_threshold": 1,
                "unhealthy_threshold": 3,
            },
        },
        source="GCE L4 health-check constants `gceHcCheckIntervalSeconds` 8, "
        "`gceHcTimeoutSeconds` 1, `gceHcHealthyThreshold` 1, `gceHcUnhealthyThreshold` 3 in "
        "kubernetes/cloud-provider-gcp `providers/gce/gce_loadbalancer_external.go`; "
        + _KUBE_PROXY_SOURCE
        + ".",
    ),
    "aws-nlb-instance": Preset(
        summary="AWS NLB in instance mode: node targets checked every 10 s, timeout 10 s, "
        "healthy after 3 passes, unhealthy after 3 failures.",
        cluster={
            "proxy_delay": _KUBE_PROXY_DEFAULT,
            "lb": {"targets": "nodes", **_AWS_NLB_HEALTH_CHECK},
        },
        source=_AWS_NLB_SOURCE + "; " + _KUBE_PROXY_SOURCE + ".",
    ),
    "aws-nlb-ip": Preset(
        summary="AWS NLB in IP mode: Pods as targets with the NLB health check above, "
        "(de)registered 30 s after the controller sees an endpoint change, 120 s draining "
        "delay (used when `lb.draining` is on).",
        cluster={
            "proxy_delay": _KUBE_PROXY_DEFAULT,
            "lb": {
                "targets": "pods",
                **_AWS_NLB_HEALTH_CHECK,
                "registration_delay_s": 30,
                "deregistration_delay_s": 120,
            },
        },
        source=_AWS_NLB_SOURCE
        + "; the 30 s (de)registration lag is an assumed figure (AWS documents no bound on how "
        "long target registration takes) and the 120 s draining delay is shorter than the "
        "target group's `deregistration_delay.timeout_seconds` default of 300 s "
        "(https://docs.aws.amazon.com/elasticloadbalancing/latest/network/"
        "load-balancer-target-groups.html), copy your own; " + _KUBE_PROXY_SOURCE + ".",
    ),
    "aws-alb-ip": Preset(
        summary="AWS ALB in IP mode: an HTTP proxy (`lb.mode: l7`) with Pods as targets, "
        "checked with `GET /` every 30 s, timeout 5 s, healthy after 5 passes, unhealthy after "
        "2 failures; 60 s idle timeout, 10 s connect timeout, 300 s deregistration delay with "
        "draining.",
        cluster={
            "proxy_delay": _KUBE_PROXY_DEFAULT,
            "lb": {
                "mode": "l7",
                "targets": "pods",
                "hc_path": "/",
                "hc_interval_s": 30,
                "hc_timeout_s": 5,
                "healthy_threshold": 5,
                "unhealthy_threshold": 2,
                "idle_timeout_s": 60,
                "connect_timeout_s": 10,
                "draining": True,
                "deregistration_delay_s": 300,
            },
        },
        source="ALB target group health check defaults for `ip` targets: "
        "HealthCheckPath `/`, HealthCheckIntervalSeconds 30, HealthCheckTimeoutSeconds 5, "
        "HealthyThresholdCount 5, UnhealthyThresholdCount 2 "
        "(https://docs.aws.amazon.com/elasticloadbalancing/latest/application/"
        "target-group-health-checks.html); connection idle timeout 60 s "
        "(https://docs.aws.amazon.com/elasticloadbalancing/latest/application/"
        "edit-load-balancer-attributes.html); the 10 s connection timeout behind a 504 "
        "(https://docs.aws.amazon.com/elasticloadbalancing/latest/application/"
        "load-balancer-troubleshooting.html); `deregistration_delay.timeout_seconds` 300 "
        "(https://docs.aws.amazon.com/elasticloadbalancing/latest/application/"
        "load-balancer-target-groups.html). The controller's registration lag is not included "
        "(AWS documents no bound), set `lb.registration_delay_s` to yours; "
        + _KUBE_PROXY_SOURCE
        + ".",
    ),
}

# What `cluster.preset` merges under a scenario's own `cluster` section.
PRESETS: dict[str, dict[str, Any]] = {
    name: preset.cluster for name, preset in PRESET_CATALOG.items()
}


class ScenarioDeprecation(FutureWarning):
    """A field that still loads but does nothing; the message names its replacement."""


# Fields that once were accepted but never acted on: (section, field) → what to use instead.
DEPRECATED_FIELDS: dict[tuple[str, str], str] = {
    ("cluster", "pin_pods"): (
        "a Deployment's Pods have no index to pin; the local scheduler already puts one Pod "
        "per node when workload.replicas equals cluster.nodes (least-loaded placement)"
    ),
    ("workload", "existing_deployment"): (
        "pass `rolltrace run --target-existing NAME`, which keeps the scenario portable"
    ),
}


def _drop_deprecated(document: dict[str, Any], text: str, source: str) -> None:
    """Warn about, and remove, each deprecated field so that old files keep loading."""
    for (section, field), replacement in DEPRECATED_FIELDS.items():
        parent = document.get(section)
        if not isinstance(parent, dict) or field not in parent:
            continue
        del parent[field]
        line = _line_of(yaml.compose(text), (section, field))
        where = f"{source}:{line}" if line else source
        message = f"{where}: {section}.{field} is deprecated and ignored: {replacement}"
        warnings.warn(message, ScenarioDeprecation, stacklevel=3)


class ClusterKindSwitch(UserWarning):
    """``--set cluster.kind=…`` dropped the fields that only the other kind of cluster has."""


def _switch_cluster_kind(document: dict[str, Any], overrides: list[str]) -> None:
    """``--set cluster.kind=K`` switches the whole cluster block: the fields only the other kind
    has (a local cluster's timing, a real cluster's context) describe a cluster the run will
    not use, so they are dropped with one warning naming them, and the fields both kinds have
    are kept. Dropping, not rejecting: the point of the override is to run a scenario file
    written for one kind on the other without editing it."""
    if not any(a.partition("=")[0] == "cluster.kind" for a in overrides):
        return
    cluster = document.get("cluster")
    if not isinstance(cluster, dict):
        return
    models: dict[str, type[BaseModel]] = {"local": LocalCluster, "kube": KubeCluster}
    target = models.get(str(cluster.get("kind")))
    if target is None:
        return  # an unknown kind: validation names it
    foreign = [key for key in cluster if key not in target.model_fields]
    if not foreign:
        return
    for key in foreign:
        del cluster[key]
    fields = ", ".join(f"cluster.{key}" for key in foreign)
    message = f"--set cluster.kind={cluster['kind']}: dropped {fields} (not fields of that kind)"
    if target is KubeCluster:
        message += "; a real cluster needs --set cluster.context=CTX --set cluster.namespace=NS"
    warnings.warn(message, ClusterKindSwitch, stacklevel=3)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_override(document: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``key.path=value`` (value parsed as YAML) to a scenario document."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ScenarioError(f"--set {assignment!r}: expected key.path=value")
    keys = path.split(".")
    target = document
    for key in keys[:-1]:
        child = target.get(key)
        if child is None:
            child = target[key] = {}
        if not isinstance(child, dict):
            raise ScenarioError(f"--set {assignment!r}: {key!r} is not a section")
        target = child
    target[keys[-1]] = _override_value(assignment, raw)
    return document


def _override_value(assignment: str, raw: str) -> Any:
    """The YAML value of ``--set key=value``, or a ScenarioError naming where it stops parsing."""
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at column {mark.column + 1} of the value" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"--set {assignment!r}: not a YAML value{where}: {problem}") from None


def yaml_error(source: str, exc: yaml.YAMLError) -> str:
    """``source:line: not valid YAML: problem`` for a YAML file that does not parse."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    return f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest YAML node on ``loc`` (pydantic's error path)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                break
            node = match
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            continue  # a discriminator tag or a union branch name: not in the document
        line = node.start_mark.line + 1
    return line


def _covers(key: str, field: str) -> bool:
    """Whether ``--set key=...`` wrote ``field`` (an error deeper in, or above, the value it
    set: ``--set a.b.c=1`` makes an unknown section ``a``)."""
    return key == field or key.startswith(f"{field}.") or field.startswith(f"{key}.")


def parse_scenario(
    text: str, source: str = "<scenario>", overrides: list[str] | None = None
) -> Scenario:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(yaml_error(source, exc)) from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{source}: a scenario is a YAML mapping (name:, workload:, ...)")
    for assignment in overrides or []:
        document = apply_override(document, assignment)
    _switch_cluster_kind(document, overrides or [])
    _drop_deprecated(document, text, source)
    cluster = document.get("cluster")
    if isinstance(cluster, dict) and cluster.get("preset") in PRESETS:
        document["cluster"] = _deep_merge(PRESETS[cluster["preset"]], cluster)
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        root = yaml.compose(text)  # only for line numbers; the text parsed above, so does this
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            field = ".".join(
                str(p) for p in loc if not (isinstance(p, str) and p in {"local", "kube"})
            )
            overridden = any(_covers(a.partition("=")[0], field) for a in overrides or [])
            line = _line_of(root, loc)
            where = "--set" if overridden else (f"{source}:{line}" if line else source)
            lines.append(f"{where}: {field or '(top)'}: {error['msg']}")
        raise ScenarioError("\n".join(lines)) from None


def load_scenario(path: Path | str, overrides: list[str] | None = None) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    scenario = parse_scenario(text, str(path), overrides)
    if not scenario.manifests.files:
        return scenario
    files = [str((path.parent / f).resolve()) for f in scenario.manifests.files]
    return scenario.model_copy(update={"manifests": scenario.manifests.model_copy(
        update={"files": files})})  # fmt: skip
