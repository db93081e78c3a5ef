"""The real-cluster path end to end: rolltrace pointed at a cluster through a kubeconfig, from
outside it, with nothing but the least-privilege Role of scenarios/manifests/rbac.yaml.

The local cluster stands in for the real one: `rolltrace cluster up` publishes its API server
inside the emulated network, and everything below runs in the client namespace (`rolltrace
cluster exec`), the emulated workstation, with a kubeconfig holding a ServiceAccount token bound
only to that Role. Three ways in: `rolltrace run` of a `kind: kube` scenario, `run
--target-existing` on a Deployment applied beforehand with kubectl, and `rolltrace observe`
while kubectl restarts the Deployment. Each must attribute its failures about as well as the
local backend does on the same settings (agreement with the cluster's truth within
``AGREEMENT_MARGIN``). One verb less in the Role must stop a run with one located line.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from localcluster.state import read_state, state_dir
from rolltrace.commands.run import run_scenario
from rolltrace.runner.backends import cluster_config
from rolltrace.runner.kube import RBAC_MANIFEST
from rolltrace.runner.manifests import MANAGED_BY, deployment, service
from rolltrace.scenario import ClusterKindSwitch, LocalCluster, Scenario, load_scenario
from rolltrace.scoring import Score, score_run
from tests.conftest import require

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "scenarios" / "kube-example.yaml"
RBAC_YAML = ROOT / RBAC_MANIFEST
BIN = Path(sys.executable).parent
ROLLTRACE, KUBECTL = str(BIN / "rolltrace"), str(BIN / "kubectl")
LAB = "rtlab"  # the cluster's name (not the run cluster's `rtrun`: both may exist)
# The timing both backends run with: every node's proxy takes 2 s to drop a deleted Pod, which
# with the example's app (no preStop, exits at SIGTERM) makes endpoint-lag failures to attribute.
CLUSTER_OVERRIDES = ["cluster.kind=local", "cluster.proxy_delay={kind: fixed, value_s: 2}"]
# the bar: the real-cluster path may lose at most 5 points of agreement with truth
AGREEMENT_MARGIN = 0.05
RUN_TIMEOUT_S = 600  # one run: start-up, rollout deadline, cool-down and analysis
EXAMPLE_NAMESPACE = load_scenario(EXAMPLE).cluster.namespace  # type: ignore[union-attr]


def _local_twin() -> Scenario:
    """The example on the local backend, with the lab cluster's timing."""
    with pytest.warns(ClusterKindSwitch, match="dropped cluster.context, cluster.namespace"):
        return load_scenario(EXAMPLE, CLUSTER_OVERRIDES)


@pytest.fixture(scope="module")
def local_agreement(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The local backend's agreement with truth on the same settings (run first: one cluster
    at a time on this machine)."""
    require("ip", "nft", "nsenter", "tcpdump", root=True)
    outcomes = run_scenario(
        _local_twin(), tmp_path_factory.mktemp("local"), Console(stderr=True, force_terminal=False)
    )
    (outcome,) = outcomes
    assert outcome.meta.status == "complete", outcome.meta.status_reasons
    return score_run(outcome.paths.root).agreement


@dataclass
class Lab:
    """The running lab cluster: the admin's kubeconfig on the host, the ServiceAccount's for
    the client namespace."""

    admin_kubeconfig: Path
    runner_kubeconfig: Path
    namespace: str
    truth: Path
    workdir: Path

    def admin(self, *args: str) -> str:
        done = subprocess.run([KUBECTL, "--kubeconfig", str(self.admin_kubeconfig),
                               "-n", self.namespace, *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def in_client(
        self, *argv: str, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command in the client namespace, with the runner's kubeconfig."""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.runner_kubeconfig),
               "COLUMNS": "500"}  # rich wraps at 80 columns otherwise  # fmt: skip
        command = [ROLLTRACE, "cluster", "exec", "--name", LAB, "--", *argv]
        return subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)  # fmt: skip

    def apply(self, *objects: dict[str, object]) -> None:
        path = self.workdir / "objects.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        self.admin("apply", "-f", str(path))


def _service_account_kubeconfig(lab_dir: Path, namespace: str, account: str, path: Path) -> Path:
    """What docs/real-clusters.md tells a user to do: a token for the ServiceAccount, and a
    kubeconfig with the cluster's endpoint and CA (here: the one inside the network)."""
    state = read_state(lab_dir)
    assert state is not None and state.kubeconfig_in_network, "no API endpoint in the network"
    admin = ["--kubeconfig", state.kubeconfig]
    token = subprocess.run([KUBECTL, *admin, "-n", namespace, "create", "token", account],
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip()  # fmt: skip
    cluster = yaml.safe_load(Path(state.kubeconfig_in_network).read_text())["clusters"][0]
    ca = path.with_suffix(".ca.pem")
    ca.write_bytes(base64.b64decode(cluster["cluster"]["certificate-authority-data"]))
    own = ["--kubeconfig", str(path), "config"]
    for args in (
        ["set-cluster", "lab", "--server", cluster["cluster"]["server"],
         "--certificate-authority", str(ca), "--embed-certs"],
        ["set-credentials", account, "--token", token],
        ["set-context", "rolltrace-lab", "--cluster", "lab", "--user", account,
         "--namespace", namespace],
        ["use-context", "rolltrace-lab"],
    ):  # fmt: skip
        subprocess.run([KUBECTL, *own, *args], capture_output=True, timeout=30, check=True)
    return path


def _role_without(verb: str, resource: str) -> list[dict[str, object]]:
    """rbac.yaml's objects renamed ``rolltrace-less``, with ``verb`` taken off ``resource``."""
    documents = list(yaml.safe_load_all(RBAC_YAML.read_text()))
    for document in documents:
        document["metadata"]["name"] = "rolltrace-less"
        for rule in document.get("rules", []):
            if resource in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        if document["kind"] == "RoleBinding":
            document["roleRef"]["name"] = "rolltrace-less"
            document["subjects"][0]["name"] = "rolltrace-less"
    return documents


@pytest.fixture(scope="module")
def lab(local_agreement: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """`rolltrace cluster up` with the twin's timing, rbac.yaml applied by the admin, and a
    kubeconfig for its ServiceAccount; the cluster is taken down afterwards."""
    workdir = tmp_path_factory.mktemp("lab")
    twin = _local_twin().cluster
    assert isinstance(twin, LocalCluster)
    config = workdir / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster_config(twin, LAB).model_dump(mode="json")))
    up = subprocess.run([ROLLTRACE, "cluster", "up", "--name", LAB, "--config", str(config)],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        directory = state_dir(LAB)
        state = read_state(directory)
        assert state is not None
        namespace = EXAMPLE_NAMESPACE
        lab = Lab(Path(state.kubeconfig), workdir / "runner.kubeconfig", namespace,
                  directory / "truth.jsonl", workdir)  # fmt: skip
        subprocess.run([KUBECTL, "--kubeconfig", state.kubeconfig, "create", "namespace",
                        namespace], capture_output=True, timeout=60, check=True)  # fmt: skip
        lab.admin("apply", "-f", str(RBAC_YAML))
        _service_account_kubeconfig(directory, namespace, "rolltrace", lab.runner_kubeconfig)
        yield lab
    finally:
        subprocess.run([ROLLTRACE, "cluster", "down", "--name", LAB], capture_output=True,
                       timeout=120)  # fmt: skip


def _scored(lab: Lab, output: Path) -> tuple[dict[str, object], Score]:
    """The run's summary numbers, and its agreement with the cluster's truth (copied in: the
    real-cluster path records none itself)."""
    (run_json,) = output.glob("**/run.json")
    run_dir = run_json.parent
    meta = yaml.safe_load(run_json.read_text())
    assert meta["status"] == "complete", meta["status_reasons"]
    assert meta["backend"] == "kube"
    shutil.copy(lab.truth, run_dir / "truth.jsonl")
    score = score_run(run_dir)
    assert score.failed > 0, "the example must fail some requests to attribute"
    assert score.undecided <= AGREEMENT_MARGIN * score.failed, score.undecided_examples[:5]
    return meta, score


def _assert_close(score: Score, local_agreement: float) -> None:
    assert score.agreement >= local_agreement - AGREEMENT_MARGIN, (
        f"agreement {score.agreement:.3f} vs local {local_agreement:.3f}",
        score.confusion,
        score.disagreements[:5],
    )


def _own_workload(name: str, port: int) -> list[dict[str, object]]:
    """The example's Deployment and Service as a user's own objects (not rolltrace's), the
    Service on a port of its own. The LB may give it the address an earlier case's Service had,
    and connections of that case that no Pod answered leave conntrack entries (SYN_SENT lives
    120 s) at the LB and the nodes: a new SYN that reuses such a client port and the same
    address and port follows the old NAT to the old, gone Pod, which is another Service's
    disruption, out of this case's scope."""
    scenario = load_scenario(EXAMPLE)
    scenario.service.port = port
    objects = [deployment(scenario, name), service(scenario, name)]
    for obj in objects:
        labels = obj["metadata"]["labels"]  # type: ignore[index]
        for key in MANAGED_BY:
            labels.pop(key)
    return objects


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_run_of_a_kube_scenario(lab: Lab, local_agreement: float, tmp_path: Path) -> None:
    done = lab.in_client(ROLLTRACE, "run", str(EXAMPLE), "-o", str(tmp_path), "--no-check")
    assert done.returncode == 0, done.stderr[-3000:]
    _, score = _scored(lab, tmp_path)
    _assert_close(score, local_agreement)
    lab.admin("delete", "deployment,service", "demoapp")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_run_target_existing(lab: Lab, local_agreement: float, tmp_path: Path) -> None:
    lab.apply(*_own_workload("shop", port=8081))
    lab.admin("rollout", "status", "deployment/shop", "--timeout=120s")
    done = lab.in_client(ROLLTRACE, "run", str(EXAMPLE), "-o", str(tmp_path), "--no-check",
                         "--target-existing", "shop")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    meta, score = _scored(lab, tmp_path)
    assert meta["service"]["name"] == "shop"  # type: ignore[index]
    _assert_close(score, local_agreement)


def _restart_when_loaded(lab: Lab, output: Path, deployment_name: str) -> threading.Thread:
    """`kubectl rollout restart` once observe's load has run for a few seconds."""

    def restart() -> None:
        deadline = time.monotonic() + 120
        while not (output / "requests.progress.json").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # requests before the rollout, as a run's before_s
        lab.admin("rollout", "restart", f"deployment/{deployment_name}")

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_observe_during_kubectl_rollout_restart(
    lab: Lab, local_agreement: float, tmp_path: Path
) -> None:
    # a Deployment of its own: the previous case's old Pods may still be leaving, and traffic
    # to them is not this observation's
    lab.apply(*_own_workload("cafe", port=8082))
    lab.admin("rollout", "status", "deployment/cafe", "--timeout=120s")
    output = tmp_path / "observed"
    restarter = _restart_when_loaded(lab, output, "cafe")
    done = lab.in_client(ROLLTRACE, "observe", "--service", "cafe", "--until-rollout", "cafe",
                         "--scenario", str(EXAMPLE), "--duration", "120", "-o", str(output),
                         "--no-check")  # fmt: skip
    restarter.join(10)
    assert done.returncode == 0, done.stderr[-3000:]
    _, score = _scored(lab, output)
    _assert_close(score, local_agreement)


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(900)
def test_one_verb_less_stops_the_run_with_one_line(lab: Lab, tmp_path: Path) -> None:
    lab.apply(*_role_without("patch", "deployments"))
    kubeconfig = _service_account_kubeconfig(
        state_dir(LAB), lab.namespace, "rolltrace-less", tmp_path / "less.kubeconfig"
    )
    done = lab.in_client(ROLLTRACE, "run", str(EXAMPLE), "-o", str(tmp_path / "runs"),
                         kubeconfig=kubeconfig)  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    wanted = (
        f'the cluster refused: User "system:serviceaccount:{lab.namespace}:rolltrace-less" '
        f'cannot patch resource "deployments" in API group "apps" in the namespace '
        f'"{lab.namespace}"'
    )
    lines = [line for line in done.stderr.splitlines() if wanted in line]
    assert lines and RBAC_MANIFEST in lines[0], done.stderr[-3000:]
    lab.admin("delete", "deployment,service", "demoapp", "--ignore-not-found")
