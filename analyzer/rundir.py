"""The run directory (docs/trace-format.md): where each file lives and what run.json says.

Every stage names run-directory files through ``RunPaths`` so that a path is spelled once; a
renamed file then breaks loudly in one place instead of silently producing an empty table.
``RunMeta`` is run.json as a typed model: unknown keys are kept (a newer writer may add fields
an older analyzer should carry along, not drop), but a known key with the wrong type is a
``TraceError`` naming the file and the field, because a phase time that is a string would
otherwise surface much later as a wrong disruption window.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analyzer.errors import TraceError
from analyzer.schema import SCHEMA_VERSION, RunStatus

PHASES = ("load_start", "rollout_trigger", "rollout_complete", "load_stop")
"""The phases every complete run has, in the order they happen (analysis reads these)."""
RUNNER_PHASES = (
    "cluster_ready",
    "manifests_applied",
    "available",
    "captures_started",
    "load_start",
    "rollout_trigger",
    "rollout_complete",
    "old_pods_gone",
    "load_stop",
    "captures_stopped",
)
"""Every phase ``rolltrace run`` records (a superset of ``PHASES``), in the order they happen."""

Backend = Literal["local", "kube", "synthetic", "imported"]
CapturePoint = Literal["client", "node"]


@dataclass(frozen=True)
class RunPaths:
    """Where each file of a run directory lives (the layout of docs/trace-format.md)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def requests(self) -> Path:
        return self.root / "requests.parquet"

    @property
    def packets_dir(self) -> Path:
        return self.root / "packets"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def truth(self) -> Path:
        return self.root / "truth.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def hops_dir(self) -> Path:
        return self.root / "hops"

    def hop_log(self, hop: str) -> Path:
        """``hops/<hop>.log``: the access log of the L7 hop named ``hop``."""
        return self.hops_dir / f"{hop}.log"

    def hop_logs(self) -> list[Path]:
        """Access logs of L7 hops present in ``hops/`` (``*.log``), sorted by name."""
        if not self.hops_dir.is_dir():
            return []
        return sorted(p for p in self.hops_dir.iterdir() if p.is_file() and p.suffix == ".log")

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def tables(self) -> Path:
        return self.analysis / "tables"

    @property
    def figures(self) -> Path:
        return self.analysis / "figures"

    @property
    def summary(self) -> Path:
        return self.analysis / "summary.json"

    @property
    def report_html(self) -> Path:
        return self.analysis / "report.html"

    @property
    def report_md(self) -> Path:
        return self.analysis / "report.md"

    def table(self, name: str) -> Path:
        """``analysis/tables/<name>.parquet`` for a table of ``analyzer.schema.ALL_TABLES``."""
        return self.tables / f"{name}.parquet"

    def captures(self) -> list[Path]:
        """Capture files present in ``packets/`` (``*.pcap`` and ``*.pcapng``), sorted by name."""
        if not self.packets_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.packets_dir.iterdir()
            if p.is_file() and p.suffix in {".pcap", ".pcapng"}
        )


class Capture(BaseModel):
    """One packet capture listed in run.json."""

    model_config = ConfigDict(extra="allow")

    file: str  # relative to the run directory, e.g. "packets/client.pcap"
    point: CapturePoint
    node: str | None = None
    kernel_drops: int | None = None  # packets the kernel dropped (pcap stats); None = unknown
    packets: int | None = None  # packets written to the file (capture stats); None = unknown


class ComponentFault(BaseModel):
    """A component that died during the run (run.json ``faults``): which, when, what was seen.
    ``fatal``: the run stopped early because of it (API server, node agent, LB)."""

    model_config = ConfigDict(extra="allow")

    component: str  # apiserver | node-agent | lb | capture | locust-worker
    name: str
    at_ns: int
    detail: str = ""
    fatal: bool = False


class LoadDelivered(BaseModel):
    """The load asked for and the load sent (run.json ``load``): requests per second from the
    first request's start to the last's."""

    model_config = ConfigDict(extra="allow")

    asked_rate: float
    delivered_rate: float
    requests: int = 0
    seconds: float = 0.0
    #: how late, at the end, requests started that waited only for their slot: the load
    #: generator's own shortfall (a server that holds users up does not count)
    generator_lag_s: float | None = None


class RunMeta(BaseModel):
    """run.json. Required: ``schema_version``, ``run_id``, ``status``, ``backend``; the rest has
    empty defaults so that a partial or imported run still loads. ``phases`` values are realtime
    ns; a phase that did not happen is absent, never 0."""

    model_config = ConfigDict(extra="allow")

    schema_version: str
    run_id: str
    status: RunStatus
    status_reasons: list[str] = Field(default_factory=list)
    backend: Backend
    scenario: dict[str, Any] = Field(default_factory=dict)
    tool_versions: dict[str, str] = Field(default_factory=dict)
    clock: dict[str, Any] = Field(default_factory=dict)
    phases: dict[str, int] = Field(default_factory=dict)
    service: dict[str, Any] = Field(default_factory=dict)
    captures: list[Capture] = Field(default_factory=list)
    namespace: str = ""
    faults: list[ComponentFault] = Field(default_factory=list)
    load: LoadDelivered | None = None

    def phase(self, name: str) -> int | None:
        """A phase time in ns, or None when the run did not reach that phase."""
        return self.phases.get(name)

    def extra_fields(self) -> dict[str, Any]:
        """Keys run.json carried that this version does not know (kept on write)."""
        return dict(self.model_extra or {})


def traffic_policy(service: dict[str, Any], scenario: dict[str, Any]) -> str:
    """externalTrafficPolicy as run.json records it ("" when it does not): the runner's
    ``service`` section first, then the scenario's, nested or flat. Attribution and the report
    read it through here so that they cannot disagree about one run."""
    nested = scenario.get("service")
    return str(
        service.get("external_traffic_policy")
        or service.get("externalTrafficPolicy")
        or (nested.get("external_traffic_policy") if isinstance(nested, dict) else None)
        or scenario.get("external_traffic_policy")
        or ""
    )


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_run_meta(text: str | bytes, path: str = "run.json") -> RunMeta:
    """Parse run.json's text; every failure is a TraceError naming ``path`` and the field."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TraceError(path, "file", f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TraceError(path, "file", f"expected a JSON object, got {type(raw).__name__}")
    try:
        # JSON mode (not Python mode) so that strict=True still accepts enum values as strings.
        meta = RunMeta.model_validate_json(text, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise TraceError(
            path, "file", f"{first['msg']}{more}", field=_field_path(first["loc"])
        ) from None
    major = meta.schema_version.split(".", 1)[0]
    if major != SCHEMA_VERSION.split(".", 1)[0]:
        raise TraceError(
            path,
            "file",
            f"schema_version {meta.schema_version!r} is not readable by trace format "
            f"{SCHEMA_VERSION} (major versions differ)",
            field="schema_version",
        )
    return meta


def read_run_meta(path: str | os.PathLike[str]) -> RunMeta:
    """Read run.json (``path`` is the file itself or the run directory)."""
    file = Path(path)
    if file.is_dir():
        file = RunPaths(file).run_json
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise TraceError(str(file), "file", f"cannot read: {exc.strerror or exc}") from None
    return parse_run_meta(text, str(file))


def write_run_meta(path: str | os.PathLike[str], meta: RunMeta) -> None:
    """Write run.json atomically (``path`` is the file or the run directory): a reader never
    sees half a file, even when the runner is killed mid-write."""
    file = Path(path)
    if file.is_dir():
        file = RunPaths(file).run_json
    text = json.dumps(meta.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(file, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run directory, precise enough to open the file at the place.

    ``file`` is relative to the run directory; ``location`` is ``"file"``, ``"line N"``
    (1-based, JSONL), ``"row N"`` (0-based, Parquet) or ``"byte N"`` (pcap). Errors make a
    run invalid; warnings are facts the analysis will work around (e.g. no packet capture).
    """

    file: str
    location: str
    field: str | None
    message: str
    severity: Severity = "error"

    def to_trace_error(self) -> TraceError:
        return TraceError(self.file, self.location, self.message, field=self.field)

    def __str__(self) -> str:
        field = f", field {self.field!r}" if self.field else ""
        return f"{self.severity}: {self.file}: {self.location}{field}: {self.message}"


def _section(mapping: dict[str, Any], *path: str) -> dict[str, Any]:
    for key in path:
        value = mapping.get(key)
        mapping = value if isinstance(value, dict) else {}
    return mapping


def number_or_none(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (a bool is not a number here)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _seconds(section: dict[str, Any], key: str, default: float | None) -> float | None:
    value = number_or_none(section.get(key))
    return default if value is None else value


def _check_window_ms(
    section: dict[str, Any], interval: str, threshold: str, timeout: str, timeout_default: float
) -> float | None:
    """How long a periodic check takes to act on a failure: interval × threshold + timeout,
    in ms; None when the section does not record the interval."""
    period = _seconds(section, interval, None)
    if period is None:
        return None
    failures = _seconds(section, threshold, 1.0) or 1.0
    return (period * failures + (_seconds(section, timeout, timeout_default) or 0.0)) * 1000.0


def readiness_detection_ms(scenario: dict[str, Any]) -> float | None:
    """How long a readiness probe takes to turn a failing app NotReady: periodSeconds ×
    failureThreshold + timeoutSeconds, from run.json ``scenario.pod.readiness_probe`` (the
    ``rolltrace.scenario.Probe`` fields); None when the run does not record a probe."""
    probe = _section(scenario, "pod", "readiness_probe")
    return _check_window_ms(probe, "period_s", "failure_threshold", "timeout_s", 1.0)


def lb_unhealthy_after_ms(scenario: dict[str, Any]) -> float | None:
    """How long a load balancer keeps sending to a node whose health check started failing:
    interval × unhealthy threshold + timeout, from run.json ``scenario.cluster.lb``
    (``hc_interval_s``, ``unhealthy_threshold``, ``hc_timeout_s``); None when not recorded."""
    lb = _section(scenario, "cluster", "lb")
    return _check_window_ms(lb, "hc_interval_s", "unhealthy_threshold", "hc_timeout_s", 0.0)


def terminating_fallback(scenario: dict[str, Any]) -> bool | None:
    """Whether kube-proxy falls back to serving terminating endpoints when a node has no ready
    one (KEP-1669): run.json ``scenario.cluster.terminating_fallback`` (a rolltrace scenario) or
    ``scenario.terminating_fallback`` (a trace-builder recipe); None when not recorded."""
    for value in (
        _section(scenario, "cluster").get("terminating_fallback"),
        scenario.get("terminating_fallback"),
    ):
        if isinstance(value, bool):
            return value
    return None
