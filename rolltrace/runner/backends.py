"""Where an experiment runs: the embedded local cluster or a real cluster named by the user.

``LocalBackend`` starts a private local cluster per run, configured with the scenario's timing
(proxy delays, endpoint batching, LB health checks), named ``rtrun`` with its state under the
system state root (short paths for its unix socket); load and client
capture run inside its client namespace, node captures inside each node namespace, and the
agents' ground truth and the cluster log are moved into the run directory when it stops.
The run holds the cluster's lock (``RunClusterLock``) from before it looks at the name until
the cluster is gone: a second run waits and says so; a cluster left by a run that died (its
lock is free) is torn down in one line and the run goes on. The cluster dies with the run.

``KubeBackend`` uses only the kubeconfig context and namespace the scenario names. Packet capture
runs on this machine when it may (root / CAP_NET_RAW); otherwise the run goes on without packets
and run.json says so.
"""

from __future__ import annotations

import heapq
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import config as k8s_config

from analyzer.rundir import RunPaths
from localcluster.config import (
    ClusterConfig,
    ProxyConfig,
)
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.ip import netns_exec
from localcluster.lifeline import identity, identity_alive
from localcluster.state import LOG_FILE, ClusterState, process_alive, read_state, state_dir
from rolltrace.runner.experiment import Backend, Session
from rolltrace.runner.faults import Component, ComponentHandle
from rolltrace.runner.kube import KubeError
from rolltrace.runner.localrun import (
    ClusterBusy,
    RunClusterLock,
    agent_processes,
    api_answers,
    recover_stale,
    start_cluster,
    stop_process,
)
from rolltrace.runner.manifests import INGRESS_HOP
from rolltrace.scenario import KubeCluster, LocalCluster, Scenario

LOCAL_NAMESPACE = "rolltrace"
RUN_CLUSTER_NAME = "rtrun"  # distinct from `rolltrace cluster up`'s default, so both can coexist
CLUSTER_START_TIMEOUT_S = 120.0
#: How long a run waits for another run on the same cluster: longer than any one run's phases
#: (rollout deadlines are minutes), short enough that a forgotten CI job fails the same day.
WAIT_FOR_OTHER_RUN_S = 1800.0


def api_client_from(kubeconfig: Path | None = None, context: str | None = None) -> Any:
    """The official client for a kubeconfig file or context (its loader is untyped)."""
    return k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        str(kubeconfig) if kubeconfig else None, context=context
    )


def cluster_config(cluster: LocalCluster, name: str = RUN_CLUSTER_NAME) -> ClusterConfig:
    return ClusterConfig(
        name=name,
        nodes=cluster.nodes,
        endpoint_batch_delay_s=cluster.endpoint_batch_delay_s,
        proxy=ProxyConfig(
            delay=cluster.proxy_delay,
            per_node_delay=dict(cluster.per_node_proxy_delay),
            terminating_fallback=cluster.terminating_fallback,
        ),
        lb=cluster.lb,
    )


class LocalBackend:
    def __init__(
        self,
        on_progress: Callable[[str], None] = lambda _: None,
        wait_for_other_run_s: float = WAIT_FOR_OTHER_RUN_S,
    ) -> None:
        self.on_progress = on_progress
        self.wait_for_other_run_s = wait_for_other_run_s

    def open(self, scenario: Scenario, run: RunPaths) -> Session:
        if not isinstance(scenario.cluster, LocalCluster):
            raise TypeError("LocalBackend runs scenarios with cluster.kind: local")
        config = cluster_config(scenario.cluster)
        # The state dir holds the API server's unix socket, whose path must stay short
        # (AF_UNIX allows 108 bytes), so it lives under the system state root, not the run.
        directory = state_dir(config.name)
        lock = RunClusterLock(directory)
        lock.acquire(self.wait_for_other_run_s, self.on_progress)
        try:
            return self._start(scenario.cluster, config, directory, run, lock)
        except BaseException:
            lock.release()
            raise

    def _start(
        self,
        cluster: LocalCluster,
        config: ClusterConfig,
        directory: Path,
        run: RunPaths,
        lock: RunClusterLock,
    ) -> Session:
        """With the lock held: recover what a dead run left, start the cluster for this run."""
        _refuse_cluster_up(config.name, directory)
        recovered = recover_stale(config.name, directory)
        if recovered:
            self.on_progress(recovered)
        process, state = start_cluster(
            config,
            directory,
            directory / "kubeconfig",
            CLUSTER_START_TIMEOUT_S,
            self.on_progress,
            owner=identity(os.getpid()),
        )
        plan = AddressPlan(config)

        def close() -> None:
            try:
                stop_process(state.pid, directory, timeout_s=30)
                _reap(process)
                truth = directory / "truth.jsonl"
                if truth.exists():
                    shutil.move(truth, run.truth)
                collect_hops(directory, run)
                log = directory / LOG_FILE
                if log.exists():
                    run.logs.mkdir(exist_ok=True)
                    shutil.move(log, run.logs / "cluster.log")
                shutil.rmtree(directory, ignore_errors=True)
            finally:  # only now may a waiting run use the name (and the directory)
                lock.release()

        return Session(
            backend="local",
            api_client=api_client_from(directory / "kubeconfig"),
            namespace=LOCAL_NAMESPACE,
            client_exec_prefix=netns_exec(plan.client_netns),
            node_exec_prefixes={node.name: netns_exec(node.netns) for node in plan.nodes},
            truth_path=run.truth,
            create_namespace=True,  # a private cluster: nothing else made the namespace
            lb_targets=cluster.lb.targets,
            hop_kubeconfig=state.kubeconfig_in_network,
            components=cluster_components(state),
            close=close,
        )


#: Where the kubelets keep each Pod's own files (``Kubelet.pod_directory``): under the cluster's
#: logs directory, ``pods/<namespace>_<pod>_<uid>/``.
POD_DIRS = "logs/pods"
#: nginx's ``$msec`` at the start of a line of the ingress's JSON access log
_MSEC = re.compile(rb'^\{"msec":\s*([0-9.]+)')


def collect_hops(directory: Path, run: RunPaths) -> None:
    """What the L7 hops recorded, into the run before the cluster's directory goes: every
    ingress Pod's access log merged in time order into ``hops/ingress.log``, each hop log the
    cluster wrote itself (``<state>/hops/*.log``, the L7 LB's) moved to ``hops/``, and every
    Pod's own ``truth.jsonl`` (the controllers' ``ingress-synced`` lines) appended to the
    run's truth."""
    pod_dirs = sorted(p for p in (directory / POD_DIRS).glob("*") if p.is_dir())
    access_logs = [d / "access.log" for d in pod_dirs if (d / "access.log").is_file()]
    cluster_hops = sorted((directory / "hops").glob("*.log"))
    if access_logs or cluster_hops:
        run.hops_dir.mkdir(exist_ok=True)
    if access_logs:
        with open(run.hop_log(INGRESS_HOP), "wb") as merged:
            in_time = heapq.merge(*(_timed_lines(f) for f in access_logs), key=_line_time)
            merged.writelines(line for _, line in in_time)
    for log in cluster_hops:
        shutil.move(log, run.hop_log(log.stem))
    truths = [d / "truth.jsonl" for d in pod_dirs if (d / "truth.jsonl").is_file()]
    if truths:
        with open(run.truth, "ab") as truth:
            for part in truths:
                truth.write(part.read_bytes())


def _timed_lines(path: Path) -> Iterator[tuple[float, bytes]]:
    """A log's lines, each with its ``$msec`` (a line without one, damaged, keeps its place
    after the line before it, so the reader still names it)."""
    last = 0.0
    with open(path, "rb") as lines:
        for line in lines:
            found = _MSEC.match(line)
            last = float(found.group(1)) if found else last
            yield last, line if line.endswith(b"\n") else line + b"\n"


def _line_time(item: tuple[float, bytes]) -> float:
    return item[0]


def _refuse_cluster_up(name: str, directory: Path) -> None:
    """A live cluster of this name started by `rolltrace cluster up` is the user's: not ours to
    tear down or share."""
    state = read_state(directory)
    if state is not None and not state.owner and process_alive(state.pid, directory):
        raise ClusterBusy(
            f"a cluster named {name!r} was started by `rolltrace cluster up` (pid {state.pid}); "
            f"stop it with `rolltrace cluster down --name {name}`, then run again"
        )


def cluster_components(state: ClusterState) -> list[ComponentHandle]:
    """The local cluster's parts a run depends on, for the watchdog and the fault hook."""
    socket = state.api_socket
    handles = [
        ComponentHandle(
            Component.APISERVER,
            state.name,
            alive=lambda: api_answers(socket),
            kill=lambda: _signal(state.pid, signal.SIGUSR1, "stop its API server"),
            cause=lambda: f"its socket {socket} no longer accepts connections",
        )
    ]
    handles += [_agent_handle(label, who) for label, who in sorted(agent_processes(socket).items())]
    return handles


def _agent_handle(label: str, who: str) -> ComponentHandle:
    """A node agent or the LB: alive while the very process found at start runs."""
    pid = int(who.partition(":")[0])
    return ComponentHandle(
        Component.LB if label == "lb" else Component.NODE_AGENT,
        label,
        alive=lambda: identity_alive(who),
        kill=lambda: _signal(pid, signal.SIGKILL, "kill it"),
        cause=lambda: f"process {pid} exited",
    )


def _signal(pid: int, signum: signal.Signals, purpose: str) -> str:
    os.kill(pid, signum)
    return f"sent {signum.name} to pid {pid} to {purpose}"


def _reap(process: subprocess.Popen[Any]) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class KubeBackend:
    """A real cluster: only the context and namespace that the scenario names, in
    ``kubeconfig`` (None: the client's default, $KUBECONFIG or ~/.kube/config)."""

    def __init__(self, kubeconfig: Path | None = None) -> None:
        self.kubeconfig = kubeconfig

    def open(self, scenario: Scenario, run: RunPaths) -> Session:
        cluster = scenario.cluster
        if not isinstance(cluster, KubeCluster):
            raise TypeError("KubeBackend runs scenarios with cluster.kind: kube")
        try:
            api_client = api_client_from(self.kubeconfig, context=cluster.context)
        except (k8s_config.ConfigException, OSError) as exc:
            where = self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise KubeError(
                f"cannot use context {cluster.context!r} of the kubeconfig {where}: "
                f"{str(exc).rstrip('.')}; "
                "name one of its contexts in cluster.context (--set cluster.context=NAME)"
            ) from None
        can_capture = os.geteuid() == 0
        notes = [] if can_capture else [
            "not root: packet capture skipped (run as root or grant CAP_NET_RAW for packets)"
        ]  # fmt: skip
        return Session(
            backend="kube",
            api_client=api_client,
            namespace=cluster.namespace,
            can_capture=can_capture,
            notes=notes,
        )


def backend_for(scenario: Scenario, on_progress: Callable[[str], None] = lambda _: None) -> Backend:
    if isinstance(scenario.cluster, KubeCluster):
        return KubeBackend()
    return LocalBackend(on_progress)
