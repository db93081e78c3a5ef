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

Percent = int | str  # an integer count or "NN%"


class ScenarioError(ValueError):
    """A scenario file (or override) is invalid; the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Probe(_Strict):
    path: str = "/ready"
    port: int | None = None  # defaults to the container port
    initial_delay_s: int = Field(0, ge=0)
    period_s: int = Field(1, ge=1)
    timeout_s: int = Field(1, ge=1)
    success_threshold: int = Field(1, ge=1)
    failure_threshold: int = Field(1, ge=1)


class PreStop(_Strict):
    """Exactly one of: the native ``sleep`` action, an exec command, an HTTP GET."""

    sleep_s: int | None = Field(None, ge=0)
    exec: list[str] | None = None
    http_get_path: str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> PreStop:
        chosen = [v for v in (self.sleep_s, self.exec, self.http_get_path) if v is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of sleep_s, exec, http_get_path")
        return self


class App(_Strict):
    """The demo app's behaviour (see ``python -m demoapp --help``)."""

    startup_delay_s: float = Field(0.0, ge=0)
    warmup_s: float = Field(0.0, ge=0)
    warmup_mode: Literal["503", "reset"] = "503"
    ready_lies: bool = False
    latency: str = "fixed:1"  # ms: fixed:N | uniform:A:B | lognormal:MEDIAN:SIGMA
    keepalive_timeout_s: float = Field(60.0, gt=0)
    shutdown: str = "graceful"  # immediate | graceful | ignore | delayed:N
    drain_timeout_s: float = Field(10.0, ge=0)
    max_concurrency: int = Field(0, ge=0)  # requests in service at once per Pod (0: unlimited)
    idle_close: Literal["fin", "rst"] = "fin"  # how the keep-alive timeout closes: FIN or bare RST
    # Faults of a bad revision (0: off); set them under rollout.app to break only the new one.
    crash_after_s: float = Field(0.0, ge=0)  # exit 1 without draining, per container start
    crash_after_requests: int = Field(0, ge=0)
    liveness_fail_after_s: float = Field(0.0, ge=0)  # /healthz answers 500 from then on
    ready_flap_period_s: float = Field(0.0, ge=0)  # every period, the last down_s cannot serve
    ready_flap_down_s: float = Field(0.0, ge=0)
    flap_mode: Literal["503", "reset"] = "503"  # how requests fail while flapped down

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
    replicas: int = Field(3, ge=1, le=500)
    image: str = "rolltrace/demoapp:0.1.0"
    container_port: int = Field(8080, ge=1, le=65535)
    app: App = App()


class PodSettings(_Strict):
    readiness_probe: Probe | None = Probe()
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    pre_stop: PreStop | None = None
    termination_grace_period_s: int = Field(30, ge=0)


class Strategy(_Strict):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    max_surge: Percent = "25%"
    max_unavailable: Percent = "25%"
    min_ready_s: int = Field(0, ge=0)
    progress_deadline_s: int = Field(600, ge=1)

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
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    port: int = Field(80, ge=1, le=65535)


class LocalCluster(_Strict):
    kind: Literal["local"] = "local"
    nodes: int = Field(3, ge=1, le=16)
    preset: str | None = None
    endpoint_batch_delay_s: float = Field(0.0, ge=0)
    # The local cluster's own models, so a scenario and the cluster cannot drift apart.
    proxy_delay: DelayModel = DelayModel(kind="min-sync", min_sync_period_s=1.0)
    per_node_proxy_delay: dict[str, DelayModel] = Field(default_factory=dict)
    terminating_fallback: bool = True
    lb: LBConfig = LBConfig()

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset; choose one of {', '.join(sorted(PRESETS))}")
        return value


class KubeCluster(_Strict):
    kind: Literal["kube"]
    context: str
    namespace: str


class Load(_Strict):
    rate: float = Field(100.0, gt=0, le=100_000)  # requests/s, all users together
    users: int = Field(10, ge=1, le=10_000)
    keepalive_weight: int = Field(1, ge=0)
    new_connection_weight: int = Field(1, ge=0)
    before_s: float = Field(5.0, ge=0)  # warm-up before the rollout trigger
    after_s: float = Field(5.0, ge=0)  # cool-down after the rollout completes
    request_timeout_s: float = Field(2.0, gt=0)
    connect_timeout_s: float = Field(1.0, gt=0)
    workers: int = Field(0, ge=0, le=64)
    path: str = "/"


class Rollout(_Strict):
    trigger: Literal["restart", "image", "patch"] = "restart"
    image: str | None = None  # for trigger: image
    patch: dict[str, Any] | None = (
        None  # strategic merge patch of the Deployment, for trigger: patch
    )
    deadline_s: float = Field(180.0, gt=0)
    # The new revision's app: the fields given here replace workload.app's in the rollout, so a
    # scenario can break (or fix) only the new Pods, e.g. {crash_after_s: 6}.
    app: App | None = None

    @model_validator(mode="after")
    def _app_change_needs_a_template_trigger(self) -> Rollout:
        if self.app is not None and self.trigger == "patch":
            raise ValueError("app: put the env change in rollout.patch, or use trigger restart")
        return self


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    workload: Workload = Workload()
    pod: PodSettings = PodSettings()
    strategy: Strategy = Strategy()
    service: Service = Service()
    cluster: LocalCluster | KubeCluster = Field(LocalCluster(), discriminator="kind")
    load: Load = Load()
    rollout: Rollout = Rollout()
    repetitions: int = Field(1, ge=1, le=100)
    # Conditions that must HOLD after the run (the opposite sense of `analyze --fail-on`, whose
    # expressions fail the gate when true); same grammar, e.g. "failed == 0".
    expect: list[str] = Field(default_factory=list)
    dominant_cause: Cause | None = None  # the cause a broken scenario must show most

    def new_app(self) -> App:
        """The app of the revision the rollout creates: workload.app with rollout.app's
        explicitly given fields on top."""
        change = self.rollout.app
        if change is None:
            return self.workload.app
        return self.workload.app.model_copy(
            update={name: getattr(change, name) for name in change.model_fields_set}
        )

    @field_validator("expect")
    @classmethod
    def _expressions_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                parse_budget(text)
            except BudgetExpressionError as exc:
                raise ValueError(str(exc)) from None
        return value


# Reference timings (docs/architecture.md#reference-timings); each is a partial `cluster` section.
PRESETS: dict[str, dict[str, Any]] = {
    "kube-proxy-default": {
        "proxy_delay": {"kind": "min-sync", "min_sync_period_s": 1.0, "value_s": 0.05},
    },
    "large-cluster": {
        "proxy_delay": {"kind": "uniform", "low_s": 4.0, "high_s": 5.0},
        "endpoint_batch_delay_s": 1.0,
    },
    "gke-l4": {
        "proxy_delay": {"kind": "min-sync", "min_sync_period_s": 1.0, "value_s": 0.05},
        "lb": {
            "targets": "nodes",
            "hc_interval_s": 8,
            "hc_timeout_s": 1,
            "healthy_threshold": 1,
            "unhealthy_threshold": 3,
        },
    },
    "aws-nlb-instance": {
        "proxy_delay": {"kind": "min-sync", "min_sync_period_s": 1.0, "value_s": 0.05},
        "lb": {
            "targets": "nodes",
            "hc_interval_s": 10,
            "hc_timeout_s": 10,
            "healthy_threshold": 3,
            "unhealthy_threshold": 3,
        },
    },
    "aws-nlb-ip": {
        "proxy_delay": {"kind": "min-sync", "min_sync_period_s": 1.0, "value_s": 0.05},
        "lb": {
            "targets": "pods",
            "hc_interval_s": 10,
            "hc_timeout_s": 10,
            "healthy_threshold": 3,
            "unhealthy_threshold": 3,
            "registration_delay_s": 30,
            "deregistration_delay_s": 120,
        },
    },
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


def parse_scenario(
    text: str, source: str = "<scenario>", overrides: list[str] | None = None
) -> Scenario:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ScenarioError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{source}: a scenario is a YAML mapping (name:, workload:, ...)")
    for assignment in overrides or []:
        document = apply_override(document, assignment)
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
            overridden = any(a.partition("=")[0] == field for a in overrides or [])
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
    return parse_scenario(text, str(path), overrides)
