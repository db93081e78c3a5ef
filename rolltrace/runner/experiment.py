"""One experiment: a rollout under load, every trace recorded, then analyzed.

Phases (each timestamped into run.json): cluster ready → manifests applied → Deployment
available → captures started → load started → warm-up → rollout triggered → rollout complete
(with a deadline) → cool-down → load stopped → captures stopped → run.json → analysis.

Two steps change the cluster: ``Experiment._prepare`` (apply the manifests, wait until the
Deployment is available) and ``Experiment._disrupt`` (trigger the rollout and wait it out).
``rolltrace observe`` (``rolltrace.runner.observe``) replaces exactly these two with reads: the
user's own tooling changes the cluster, every other phase is this module's.

The runner knows clusters only through ``Session`` (``rolltrace.runner.backends``): a Kubernetes API
client, the argv prefix under which load and client capture run (the local cluster's client
namespace, or nothing on a real cluster), where node-side captures run, and where ground truth
goes. Everything else is the same code for local and real clusters.

A failure or Ctrl-C in any phase still leaves an analyzable run directory: run.json is written
with status ``partial`` (stopped early) or ``failed`` and the reasons, and what was captured so
far stays.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from analyzer.rundir import Capture, RunMeta, RunPaths, write_run_meta
from analyzer.schema import SCHEMA_VERSION, RunStatus
from kubewire import RolloutState, format_time
from loadgen.runner import LoadPlan, LoadRunner
from localcluster.lifeline import die_with_parent
from rolltrace import __version__
from rolltrace.runner import lbprobe
from rolltrace.runner.capture import CaptureProcess, CaptureResult, CaptureUnavailable
from rolltrace.runner.faults import (
    ComponentFailed,
    ComponentHandle,
    FaultPlan,
    Watchdog,
    capture_handle,
    worker_handles,
)
from rolltrace.runner.kube import Kube, KubeError, Workload
from rolltrace.runner.losses import (
    LoadDelivery,
    disk_need_bytes,
    disk_warning,
    measure_delivery,
    settle_status,
)
from rolltrace.runner.manifests import (
    INGRESS_CONTROLLER,
    hop_records,
    ingress_objects,
    rollout_patch,
    workload_objects,
)
from rolltrace.runner.watch import AccessError, ClusterWatcher, check_access
from rolltrace.scenario import Scenario

# Old Pods get terminationGracePeriodSeconds to go once the rollout is complete; this margin
# covers the kubelet's kill, its status update and the watch that reports the deletion.
TERMINATION_MARGIN_S = 10.0


def termination_wait_s(grace_period_s: float) -> float:
    """How long to wait for old Pods to be gone after a rollout completed."""
    return grace_period_s + TERMINATION_MARGIN_S


@dataclass
class Session:
    """A cluster ready for one experiment (see ``rolltrace.runner.backends``)."""

    backend: Literal["local", "kube"]
    api_client: Any  # kubernetes.client.ApiClient
    namespace: str
    client_exec_prefix: list[str] = field(default_factory=list)
    node_exec_prefixes: dict[str, list[str]] = field(default_factory=dict)
    truth_path: Path | None = None
    can_capture: bool = True
    #: create the namespace before applying (a private cluster may; on real clusters the RBAC
    #: Role cannot, by design)
    create_namespace: bool = False
    #: what the load balancer sends to ("pods" or "nodes") when the backend knows it; otherwise
    #: it is read from the Service's traits
    lb_targets: str | None = None
    notes: list[str] = field(default_factory=list)
    #: how a Pod reaches the API server (the local cluster's in-network kubeconfig), for the
    #: ingress controller of ``cluster.ingress``; empty where the backend has none
    hop_kubeconfig: str = ""
    #: the cluster's parts the run depends on (API server, node agents, LB), for the watchdog
    components: list[ComponentHandle] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


class Backend(Protocol):
    def open(self, scenario: Scenario, run: RunPaths) -> Session: ...


@dataclass(frozen=True)
class Target:
    """What the run watches and sends load to: the Deployment (None when an observation follows
    no Deployment) and the LoadBalancer Service."""

    deployment: str | None
    service: str
    workload: Workload | None


class Progress(Protocol):
    """What the runner reports while it works (the CLI renders it live; tests record it)."""

    def phase(self, name: str) -> None: ...

    def tick(self, load: dict[str, float], rollout: RolloutState | None) -> None: ...

    def note(self, message: str) -> None: ...


class _Silent:
    def phase(self, name: str) -> None:
        pass

    def tick(self, load: dict[str, float], rollout: RolloutState | None) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class RunOutcome:
    paths: RunPaths
    meta: RunMeta
    summary: dict[str, Any] | None
    #: stopped by Ctrl-C (run.json says ``partial`` and why): no further repetition should run
    interrupted: bool = False


class Experiment:
    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        backend: Backend,
        progress: Progress | None = None,
        analyze: bool = True,
        target_existing: str | None = None,
    ) -> None:
        """``target_existing``: run on the user's own Deployment of that name (no manifests are
        applied; its LoadBalancer Service is found by selector); only that object is patched."""
        self.scenario = scenario
        self.target_existing = target_existing
        self.paths = RunPaths(run_dir)
        self.backend = backend
        self.progress = progress or _Silent()
        self.analyze = analyze
        self.phases: dict[str, int] = {}
        self.reasons: list[str] = []
        self.captures: list[tuple[Capture, CaptureProcess]] = []
        self.capture_results: list[CaptureResult] = []
        self.service_info: dict[str, Any] = {}
        self.session: Session | None = None
        self.watcher: ClusterWatcher | None = None
        self.load: LoadRunner | None = None
        self.interrupted = False
        self.watchdog = Watchdog()
        self.fault_plan: FaultPlan | None = None
        self.fault_timer: threading.Timer | None = None
        self.delivery: LoadDelivery | None = None

    def _mark(self, phase: str) -> None:
        self.phases[phase] = time.time_ns()
        self.progress.phase(phase)

    def run(self) -> RunOutcome:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.logs.mkdir(exist_ok=True)
        status = self._settle(self._record())
        if not self.paths.requests.exists() and status is RunStatus.COMPLETE:
            status = RunStatus.FAILED
            self.reasons.append("the load generator wrote no requests.parquet")
        meta = self._write_meta(status, self.session)
        reasons_written = len(self.reasons)
        summary = self._analyze() if self.analyze and self.paths.requests.exists() else None
        if len(self.reasons) != reasons_written:  # analysis/report problems belong in run.json
            meta = self._write_meta(meta.status, self.session)
        return RunOutcome(self.paths, meta, summary, interrupted=self.interrupted)

    def _record(self) -> RunStatus:
        """Every phase, then stop whatever was started however the phases ended; the run's
        status: ``partial`` when stopped early (Ctrl-C, or a cluster error under load),
        ``failed`` when nothing usable was recorded."""
        try:
            self._phases()
            return RunStatus.COMPLETE
        except KeyboardInterrupt:  # Ctrl-C: keep what was recorded as a partial run
            self.interrupted = True
            self.reasons.append("interrupted by the user (Ctrl-C)")
            return RunStatus.PARTIAL
        except ComponentFailed:  # the fault itself is a reason, written by _settle
            return RunStatus.PARTIAL
        except KubeError as exc:
            self.reasons.append(str(exc))
            stopped = "load_start" in self.phases or self._component_failed()
            return RunStatus.PARTIAL if stopped else RunStatus.FAILED
        except Exception as exc:
            self.reasons.append(f"{type(exc).__name__}: {exc}")
            return RunStatus.PARTIAL if self._component_failed() else RunStatus.FAILED
        finally:
            self._stop_all()

    def _component_failed(self) -> bool:
        """Whether a component the rollout needs died: then an error is its consequence and
        the run stopped early (partial), not a failed experiment."""
        self.watchdog.check()
        return any(fault.fatal for fault in self.watchdog.faults)

    def _settle(self, status: RunStatus) -> RunStatus:
        """Name every fault, lost part and load shortfall; ``degraded`` when the run reached
        every phase with something lost (``rolltrace.runner.losses``)."""
        load_start = self.phases.get("load_start")
        self.reasons.extend(fault.describe(load_start) for fault in self.watchdog.faults)
        lost_parts = self.load.lost_parts if self.load is not None else []
        self.reasons.extend(
            f"{part}: unreadable (its worker died), its requests are lost" for part in lost_parts
        )
        self.delivery = measure_delivery(self.paths.requests, self.scenario.load.rate)
        if self.delivery is not None and self.delivery.short:
            self.reasons.append(self.delivery.reason(self.scenario.load.workers))
        return settle_status(
            status, self.watchdog.faults, self.capture_results, lost_parts, self.delivery
        )

    def _phases(self) -> None:
        self.fault_plan = FaultPlan.from_env()  # a malformed hook fails the run before it starts
        self._warn_disk()
        session = self.session = self.backend.open(self.scenario, self.paths)
        self.reasons.extend(session.notes)
        self.watchdog.watch(session.components)
        self._mark("cluster_ready")
        kube = Kube(session.api_client, session.namespace, self.target_existing)
        target = self._prepare(session, kube)
        ip, port = self._find_service(session, kube, target)
        load = self._launch_load(session, ip, port)  # sets self.load first, so cleanup stops it
        self._wait_until_served(session, ip, port)
        self._mark("available")
        self._check_watch_access(session)
        self.watcher = ClusterWatcher(session.api_client, session.namespace, self.paths.events)
        self.watcher.start()
        self._start_captures(session, ip, port)
        self.watchdog.watch([capture_handle(c.file, p) for c, p in self.captures])
        self._mark("captures_started")
        self._release_load(load)
        self._mark("load_start")
        self.watchdog.watch(worker_handles(load))
        self._disrupt(kube, target, load)
        self._wait(self.scenario.load.after_s, load)
        load.stop()
        self._mark("load_stop")

    @staticmethod
    def _check_watch_access(session: Session) -> None:
        """A Role that cannot list or watch a kind would leave that stream retrying the whole
        run and ending as a GAP: refuse before recording starts, naming the verb and resource."""
        try:
            check_access(session.api_client, session.namespace)
        except AccessError as exc:
            raise KubeError(str(exc)) from None

    def _prepare(self, session: Session, kube: Kube) -> Target:
        """Apply the manifests (or take the user's own Deployment), wait until it is available."""
        name, service_name = self._apply(session, kube)
        workload = kube.workload(name)
        self._mark("manifests_applied")
        kube.wait_rollout(name, workload.replicas, self.scenario.rollout.deadline_s)
        return Target(name, service_name, workload)

    def _disrupt(self, kube: Kube, target: Target, load: LoadRunner) -> None:
        """Warm up under load, then trigger the rollout and wait it out."""
        assert target.deployment is not None and target.workload is not None  # _prepare's
        self._wait(self.scenario.load.before_s, load)
        self._roll_out(kube, target.deployment, target.workload, load)

    def _apply(self, session: Session, kube: Kube) -> tuple[str, str]:
        """The Deployment's and the Service's names: ours, applied now, or the user's own."""
        if session.create_namespace:
            kube.ensure_namespace()
        if self.target_existing is not None:
            return self.target_existing, kube.service_for(self.target_existing)
        service_obj, deployment_obj = workload_objects(self.scenario)  # the user's, or ours
        kube.apply(service_obj)
        kube.apply(deployment_obj)
        if self.scenario.ingress() is not None and not session.hop_kubeconfig:
            raise KubeError("cluster.ingress needs a cluster whose Pods reach its API server")
        for hop_obj in ingress_objects(self.scenario, service_obj, session.hop_kubeconfig):
            kube.apply(hop_obj)
        return deployment_obj["metadata"]["name"], service_obj["metadata"]["name"]

    def _find_service(self, session: Session, kube: Kube, target: Target) -> tuple[str, int]:
        """The LB's address of the Service; what run.json's ``service`` section says of it."""
        ip, port = self._lb_address(kube, target.service)
        traits = kube.service_traits(target.service)
        self.service_info = {
            "name": target.service,
            "deployment": target.deployment,
            "external_ip": ip,
            "port": port,
            "target_port": self.scenario.workload.container_port,
            "external_traffic_policy": traits.traffic_policy,
            "replicas": target.workload.replicas if target.workload is not None else None,
            "lb_targets": session.lb_targets or traits.lb_targets,
        }
        return ip, port

    def _lb_address(self, kube: Kube, service_name: str) -> tuple[str, int]:
        """Where the load goes: the address the Service's load balancer published (the
        ingress controller's Service when an ingress hop is in front of the workload)."""
        front = INGRESS_CONTROLLER if self.scenario.ingress() is not None else service_name
        return kube.load_balancer_address(front)

    def _roll_out(self, kube: Kube, name: str, workload: Workload, load: LoadRunner) -> None:
        """Trigger the rollout, wait for it, then for the old Pods to be gone (each wait reads
        again as soon as the watch saw its kind change)."""
        watcher = self.watcher
        assert watcher is not None  # _phases started it before the load
        kube.trigger_rollout(name, rollout_patch(self.scenario, format_time()))
        self._mark("rollout_trigger")
        kube.wait_rollout(
            name,
            workload.replicas,
            self.scenario.rollout.deadline_s,
            on_poll=lambda state: self._tick(load, state),
            pause=watcher.waiter("Deployment"),
        )
        self._mark("rollout_complete")
        grace = termination_wait_s(self.scenario.pod.termination_grace_period_s)
        left = kube.wait_terminations(workload.pod_selector, grace, pause=watcher.waiter("Pod"))
        if left:
            self.reasons.append(
                f"{left} old Pod(s) still terminating {grace:g} s after the rollout"
            )
        self._mark("old_pods_gone")

    def _stop_all(self) -> None:
        """Stop load, captures, watch and session, whichever were started; a step that fails
        is a reason in run.json, never a reason to skip the next. The watchdog stops first:
        what the run stops itself is no fault."""
        if self.fault_timer is not None:
            self.fault_timer.cancel()
        self.watchdog.stop()
        if self.load is not None and "load_stop" not in self.phases:
            if self.load.released:
                _quietly(self.load.stop, self.reasons, "stopping load")
                self.phases["load_stop"] = time.time_ns()
            else:  # launched, never let start (the run stopped before its load): nothing kept
                self.load.stop()
        for _, process in self.captures:
            process.request_stop()
        for capture, process in self.captures:
            result = process.stop()
            self.capture_results.append(result)
            self.reasons.extend(f"{capture.file}: {r}" for r in result.status_reasons())
        if self.captures:
            self._mark("captures_stopped")
        if self.watcher is not None:
            stats = self.watcher.stop()
            self.reasons.extend(
                f"watch of {kind}: {s.gaps} gap(s), {s.reconnects} reconnect(s)"
                for kind, s in stats.items()
                if s.gaps
            )
        if self.session is not None:
            _quietly(self.session.close, self.reasons, "closing the cluster session")

    def _wait_until_served(self, session: Session, ip: str, port: int) -> None:
        """Wait until the Service answers through its load balancer from where the load will
        come from: an address alone does not mean the LB has healthy targets yet (IP-mode LBs
        register Pods seconds later), and failures before the rollout are not its disruption."""
        argv = [*session.client_exec_prefix, sys.executable, "-m", "rolltrace.runner.lbprobe",
                f"http://{ip}:{port}/"]  # fmt: skip
        # margin over the probe's own deadline: the interpreter's start and its last request
        timeout_s = lbprobe.DEADLINE_S + 30
        if subprocess.run(argv, capture_output=True, timeout=timeout_s).returncode != 0:
            raise KubeError(
                f"the Service at {ip}:{port} did not answer through its load balancer "
                f"within {lbprobe.DEADLINE_S:g} s"
            )

    def _start_captures(self, session: Session, ip: str, port: int) -> None:
        if not session.can_capture:
            self.reasons.append("packet capture not permitted here; run has no packets")
            return
        self.paths.packets_dir.mkdir(exist_ok=True)
        target_port = self.scenario.workload.container_port
        points: list[tuple[Capture, CaptureProcess]] = [(
            Capture(file="packets/client.pcap", point="client"),
            CaptureProcess(self.paths.packets_dir / "client.pcap",
                           f"tcp and host {ip} and port {port}", session.client_exec_prefix),
        )]  # fmt: skip
        for node, prefix in sorted(session.node_exec_prefixes.items()):
            points.append((
                Capture(file=f"packets/{node}.pcap", point="node", node=node),
                CaptureProcess(self.paths.packets_dir / f"{node}.pcap",
                               f"tcp port {target_port}", prefix),
            ))  # fmt: skip
        for capture, process in points:
            try:
                process.launch()
            except CaptureUnavailable as exc:
                self.reasons.append(f"{capture.file}: {exc}")
                continue
            self.captures.append((capture, process))  # stopped at the end, whatever follows
        # all launched before any is waited for: each tcpdump takes ~0.1 s to listen
        for capture, process in list(self.captures):
            try:
                process.wait_listening()
            except CaptureUnavailable as exc:  # it was stopped: nothing to stop or count
                self.reasons.append(f"{capture.file}: {exc}")
                self.captures.remove((capture, process))

    def _launch_load(self, session: Session, ip: str, port: int) -> LoadRunner:
        """Start Locust gated: its start-up (interpreters and imports, ~0.5 s; seconds with
        workers) runs while the LB is probed and the captures start, and no user starts
        before ``_release_load``."""
        spec = self.scenario.load
        plan = LoadPlan(
            host=f"http://{ip}:{port}",
            rate=spec.rate,
            # Locust needs a run time up front; the runner stops it earlier once the rollout
            # and cool-down are done, so this is only the upper bound.
            duration_s=self._load_budget_s() + 10,
            users=spec.users,
            keepalive_weight=spec.keepalive_weight,
            new_connection_weight=spec.new_connection_weight,
            path=spec.path,
            connect_timeout_s=spec.connect_timeout_s,
            request_timeout_s=spec.request_timeout_s,
            workers=spec.workers,
            exec_prefix=session.client_exec_prefix,
            preexec=die_with_parent(),  # Locust ends with the run, even a SIGKILLed one
        )
        runner = self.load = LoadRunner(plan, self.paths.requests, self.paths.logs)
        runner.start(gated=True)
        return runner

    @staticmethod
    def _release_load(load: LoadRunner) -> None:
        """Let the users start; load_start and the warm-up count from the first requests, not
        from the gate: the master still hands users to workers, the users connect."""
        load.open_gate()
        load.wait_until_sending()

    def _load_budget_s(self) -> float:
        """The longest the load can have to run: warm-up, the rollout's deadline, cool-down."""
        spec = self.scenario.load
        return spec.before_s + self.scenario.rollout.deadline_s + spec.after_s

    def _wait(self, seconds: float, load: LoadRunner) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._tick(load, None)
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _tick(self, load: LoadRunner, rollout: RolloutState | None) -> None:
        """Between two looks at the cluster: stop if a component the rollout needs died, or
        if the load generator did."""
        self.watchdog.raise_if_fatal()
        if not load.running():
            raise RuntimeError("the load generator exited early (see logs/locust*.log)")
        sent = load.progress()
        if self.fault_plan is not None and self.fault_timer is None and sent.get("requests"):
            # the test-only hook counts from the first requests recorded: Locust's own start-up
            # (seconds on a busy machine) is not the time the load runs
            self.fault_timer = self.fault_plan.arm(lambda: self.watchdog.handles, self.reasons)
        self.progress.tick(sent, rollout)

    def _warn_disk(self) -> None:
        """Say before the run starts when its disk may not hold what it will write."""
        need = disk_need_bytes(self.scenario.load.rate, self._load_budget_s(), captures=True)
        warning = disk_warning(self.paths.root, need)
        if warning:
            self.progress.note(f"warning: {warning}")

    def _write_meta(self, status: RunStatus, session: Session | None) -> RunMeta:
        captures = []
        for (capture, _), result in zip(self.captures, self.capture_results, strict=False):
            counts = {"kernel_drops": result.kernel_drops, "packets": result.packets}
            captures.append(capture.model_copy(update=counts))
        meta = RunMeta(
            schema_version=SCHEMA_VERSION,
            run_id=self.paths.root.name,
            status=status,
            status_reasons=list(self.reasons),
            backend=session.backend if session is not None else "local",
            scenario=self._scenario_record(),
            tool_versions=_tool_versions(),
            clock={
                "source": "CLOCK_REALTIME",
                "notes": [
                    "requests, packets and watch receive times share this host's realtime clock",
                    "Kubernetes object timestamps have 1 s resolution and are used only as bounds",
                ],
            },
            phases=self.phases,
            service=self.service_info,
            captures=captures,
            namespace=session.namespace if session is not None else "",
            faults=[fault.as_json() for fault in self.watchdog.faults],
            load=self.delivery.as_json() if self.delivery is not None else None,
            **self._meta_extra(),
        )
        write_run_meta(self.paths.run_json, meta)
        return meta

    def _scenario_record(self) -> dict[str, Any]:
        """run.json's ``scenario``: the settings the run had."""
        return self.scenario.model_dump(mode="json")

    def _meta_extra(self) -> dict[str, Any]:
        """Sections of run.json beyond RunMeta's own fields: the L7 hops in the path."""
        hops = hop_records(self.scenario)
        return {"hops": hops} if hops else {}

    def _analyze(self) -> dict[str, Any] | None:
        """Analyze the run, then report on that same analysis (nothing is read back)."""
        from analyzer.pipeline import analyze
        from analyzer.report import render_report

        try:
            analysis = analyze(self.paths)
        except Exception as exc:  # the run is kept; the analysis error is reported
            self.reasons.append(f"analysis failed: {exc}")
            return None
        try:
            render_report(analysis, self.paths)
        except Exception as exc:  # the analysis stands without its report
            self.reasons.append(f"report failed: {type(exc).__name__}: {exc}")
        return dict(analysis.summary)


def _quietly(action: Callable[[], object], reasons: list[str], what: str) -> None:
    try:
        action()
    except Exception as exc:  # clean-up must go on; the reason is kept in run.json
        reasons.append(f"{what}: {type(exc).__name__}: {exc}")


def _tool_versions() -> dict[str, str]:
    """Versions from package metadata: importing locust here would monkey-patch this process."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"rolltrace": __version__, "python": platform.python_version(),
                "kernel": platform.release()}  # fmt: skip
    for package in ("kubernetes", "locust", "pandas", "pyarrow", "scapy", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
