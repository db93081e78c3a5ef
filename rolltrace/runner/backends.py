"""Where an experiment runs: the embedded local cluster or a real cluster named by the user.

``LocalBackend`` starts a private local cluster per run, configured with the scenario's timing
(proxy delays, endpoint batching, LB health checks), named ``rtrun`` with its state under the
system state root (short paths for its unix socket); load and client
capture run inside its client namespace, node captures inside each node namespace, and the
agents' ground truth and the cluster log are moved into the run directory when it stops.

``KubeBackend`` uses only the kubeconfig context and namespace the scenario names. Packet capture
runs on this machine when it may (root / CAP_NET_RAW); otherwise the run goes on without packets
and run.json says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
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
from localcluster.state import LOG_FILE, process_alive, read_state, state_dir
from rolltrace.runner.experiment import Backend, Session
from rolltrace.runner.localrun import start_cluster, stop_process
from rolltrace.scenario import KubeCluster, LocalCluster, Scenario

LOCAL_NAMESPACE = "rolltrace"
RUN_CLUSTER_NAME = "rtrun"  # distinct from `rolltrace cluster up`'s default, so both can coexist
CLUSTER_START_TIMEOUT_S = 120.0


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
    def __init__(self, on_progress: Callable[[str], None] = lambda _: None) -> None:
        self.on_progress = on_progress

    def open(self, scenario: Scenario, run: RunPaths) -> Session:
        if not isinstance(scenario.cluster, LocalCluster):
            raise TypeError("LocalBackend runs scenarios with cluster.kind: local")
        config = cluster_config(scenario.cluster)
        # The state dir holds the API server's unix socket, whose path must stay short
        # (AF_UNIX allows 108 bytes), so it lives under the system state root, not the run.
        directory = state_dir(config.name)
        existing = read_state(directory)
        if existing is not None and process_alive(existing.pid, directory):
            raise RuntimeError(
                f"another `rolltrace run` is using the local cluster (pid {existing.pid}); "
                f"wait for it, or stop it with `rolltrace cluster down --name {config.name}`"
            )
        process, state = start_cluster(
            config, directory, directory / "kubeconfig", CLUSTER_START_TIMEOUT_S, self.on_progress
        )
        plan = AddressPlan(config)

        def close() -> None:
            stop_process(state.pid, directory, timeout_s=30)
            _reap(process)
            truth = directory / "truth.jsonl"
            if truth.exists():
                shutil.move(truth, run.truth)
            log = directory / LOG_FILE
            if log.exists():
                run.logs.mkdir(exist_ok=True)
                shutil.move(log, run.logs / "cluster.log")
            shutil.rmtree(directory, ignore_errors=True)

        return Session(
            backend="local",
            api_client=api_client_from(directory / "kubeconfig"),
            namespace=LOCAL_NAMESPACE,
            client_exec_prefix=netns_exec(plan.client_netns),
            node_exec_prefixes={node.name: netns_exec(node.netns) for node in plan.nodes},
            truth_path=run.truth,
            create_namespace=True,  # a private cluster: nothing else made the namespace
            lb_targets=scenario.cluster.lb.targets,
            close=close,
        )


def _reap(process: subprocess.Popen[Any]) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class KubeBackend:
    """A real cluster: only the context and namespace that the scenario names."""

    def open(self, scenario: Scenario, run: RunPaths) -> Session:
        cluster = scenario.cluster
        if not isinstance(cluster, KubeCluster):
            raise TypeError("KubeBackend runs scenarios with cluster.kind: kube")
        api_client = api_client_from(context=cluster.context)
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
