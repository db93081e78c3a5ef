"""The ingress hop on the real local cluster: client → cloud LB → the ingress controller's Pod
(nginx) → demo-app Pods, deployed as ingress-nginx is (a Deployment of
``registry.k8s.io/ingress-nginx/controller`` behind a LoadBalancer Service, an IngressClass, an
Ingress), all applied with kubectl; the controller watches the API server inside the network
with the token of a ServiceAccount bound to ingress-nginx's ClusterRole.

Requests from the client namespace succeed through the hop; during a rollout of the demo app
the access log's upstream addresses follow the EndpointSlice: a new Pod gets requests within
about ``sync_interval_s`` of turning ready in the slice, a deleted one gets none later than
about ``sync_interval_s`` after it stopped being ready (in dynamic mode plus up to a worker
sync, 1 s, and without any nginx reload); after ``cluster down`` no nginx process is left.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.apiserver.httpclient import HttpClient
from localcluster.config import ClusterConfig
from localcluster.dataplane.addressing import AddressPlan
from localcluster.dataplane.ip import netns_exec
from localcluster.ingress.nginxconf import LuaBalancer, SyncMode
from localcluster.state import read_state
from tests.conftest import require
from tests.e2e.clusters import cluster_up
from tests.localcluster.test_ingress_api import CONTROLLER_RBAC
from tests.localcluster.test_ingress_dynamic import require_lua_module

pytestmark = [pytest.mark.root, pytest.mark.slow]
NAME = "rting"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
SYNC_INTERVAL_S = 1.0  # the controller's default, set explicitly so the bound below reads clearly
# ingress-nginx's BACKENDS_SYNC_INTERVAL: how long a worker may keep a list after the POST
WORKER_SYNC_S = LuaBalancer("").worker_sync_s
# longer than a sync plus a worker sync: a deleted Pod keeps serving until nginx has dropped it
PRESTOP_S = 4
# The test's own watch and the controller's see one EndpointSlice update at slightly different
# moments (two streams, two processes on a loaded 2-core machine).
WATCH_SKEW_S = 0.3
REQUEST_GAP_S = 0.02  # the load's pause between requests (one new connection each)
LOAD_MAX_REQUESTS = 2000  # bounds: the load stops at its stop file, or at these
LOAD_MAX_S = 60.0
SERVED_AFTER = 10  # answers of 200 in a row that end the warm-up

LOADER = """
import http.client, os, sys, time
host, stop_file, served_file = sys.argv[1], sys.argv[2], sys.argv[3]
gap, max_n, max_s, served_after = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
began, in_a_row = time.monotonic(), 0
for _ in range(max_n):
    if os.path.exists(stop_file) or time.monotonic() - began > max_s:
        break
    try:
        conn = http.client.HTTPConnection(host, 80, timeout=5)
        conn.request("GET", "/")
        status = str(conn.getresponse().status)
        conn.close()
    except OSError as error:
        status = type(error).__name__
    if in_a_row >= served_after:  # warm-up over: every answer counts from here
        print(status, flush=True)
    else:
        in_a_row = in_a_row + 1 if status == "200" else 0
        if in_a_row == served_after:
            open(served_file, "w").close()
    time.sleep(gap)
"""

INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""


def _manifests(controller_kubeconfig: Path, mode: SyncMode) -> list[dict[str, Any]]:
    app = {
        "name": "app",
        "image": "rolltrace/demoapp:v1",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
    }
    controller = {
        "name": "controller",
        "image": "registry.k8s.io/ingress-nginx/controller:v1.12.1",
        "args": [
            "/nginx-ingress-controller",
            f"--kubeconfig={controller_kubeconfig}",
            "--election-id=ingress-nginx-leader",  # an ingress-nginx flag: accepted, ignored
            f"--sync-interval={SYNC_INTERVAL_S}",
            f"--sync-mode={mode}",
        ],
        "ports": [{"containerPort": 80}, {"containerPort": 10254}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 10254}, "periodSeconds": 1},
    }
    return [
        _deployment("web", app, replicas=3),
        _service("web", "ClusterIP", {"app": "web"}, 80, 8080),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "nginx"},
            "spec": {"controller": "k8s.io/ingress-nginx"},
        },
        _deployment("ingress-nginx-controller", controller, replicas=1),
        _service(
            "ingress-nginx-controller", "LoadBalancer", {"app": "ingress-nginx-controller"}, 80, 80
        ),
        yaml.safe_load(INGRESS),
    ]


def _deployment(name: str, container: dict[str, Any], replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 15, "containers": [container]},
            },
        },
    }


def _service(
    name: str, kind: str, selector: dict[str, str], port: int, target: int
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": kind, "selector": selector,
                 "ports": [{"port": port, "targetPort": target}]},
    }  # fmt: skip


class SliceWatch:
    """Records, from the test's own watch of the web Service's EndpointSlices, when each
    address was first seen ready and when it was last seen ready (then not ready or gone)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.ready_since: dict[str, float] = {}
        self.unready_since: dict[str, float] = {}
        self._slices: dict[str, list[dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> SliceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _observe(self, kind: str, endpoint_slice: dict[str, Any]) -> None:
        now = time.time()
        name = endpoint_slice["metadata"]["name"]
        self._slices[name] = [] if kind == "DELETED" else endpoint_slice.get("endpoints") or []
        endpoints = [e for listed in self._slices.values() for e in listed]
        ready = {e["addresses"][0] for e in endpoints if (e.get("conditions") or {}).get("ready")}
        for address in ready:
            self.ready_since.setdefault(address, now)
        for address in set(self.ready_since) - ready:
            self.unready_since.setdefault(address, now)

    async def _run(self) -> None:
        selector = "kubernetes.io/service-name=web"
        async with HttpClient.from_kubeconfig(self.kubeconfig) as client:
            items, version = await client.list("endpointslices", "default", selector)
            for item in items:
                self._observe("ADDED", item)
            while not self._stop.is_set():
                async for event in client.watch("endpointslices", "default", version,
                                                selector, timeout_seconds=1):  # fmt: skip
                    version = event["object"]["metadata"]["resourceVersion"]
                    self._observe(event["type"], event["object"])


def _kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def _controller_kubeconfig(admin: Path, in_network: str, path: Path) -> Path:
    """The API endpoint inside the network with the token of the controller's ServiceAccount
    (ingress-nginx's ClusterRole): what a Pod's projected token would give it."""
    token = _kubectl(admin, "create", "token", "ingress-nginx").strip()
    config = yaml.safe_load(Path(in_network).read_text())
    config["users"][0]["user"]["token"] = token
    path.write_text(yaml.safe_dump(config))
    return path


def _pod_file(copied: Path, name: str) -> Path:
    (found,) = copied.glob(f"logs/pods/default_ingress-nginx-controller-*/{name}")
    return found


def _access_log(copied: Path) -> list[dict[str, Any]]:
    lines = _pod_file(copied, "access.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _truth(copied: Path, event: str) -> list[dict[str, Any]]:
    lines = _pod_file(copied, "truth.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


def _reloads(copied: Path) -> int:
    """nginx's own count: a reload is a SIGHUP it logs as "reconfiguring" (notice level)."""
    return _pod_file(copied, "error.log").read_text().count("reconfiguring")


def _upstream_uses(entries: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Pod IP → times nginx sent a request to it (every attempt, retries included)."""
    uses: dict[str, list[float]] = {}
    for entry in entries:
        for attempt in str(entry["upstream_addr"]).split(","):
            if ":" in attempt:
                uses.setdefault(attempt.strip().rsplit(":", 1)[0], []).append(entry["msec"])
    return uses


def _load(client_netns: str, address: str, workdir: Path) -> subprocess.Popen[str]:
    """Requests from the client namespace, one new connection each, until the stop file
    appears (bounded in count and time). The first ones wait for the hop to be up end to end
    (the LB and kube-proxy program the controller's Service, the controller syncs the web
    endpoints: each on its own period after the Pods are Ready); ``served`` marks the end of
    that warm-up, and only later answers are printed."""
    argv = netns_exec(client_netns, sys.executable, "-c", LOADER, address,
                      str(workdir / "stop"), str(workdir / "served"), str(REQUEST_GAP_S),
                      str(LOAD_MAX_REQUESTS), str(LOAD_MAX_S), str(SERVED_AFTER))  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + LOAD_MAX_S
    while not path.exists():
        assert process.poll() is None, "the load ended before the hop served it"
        assert time.monotonic() < deadline, "the hop never served the load"
        time.sleep(0.05)


def _sync_apply_s(copied: Path, mode: SyncMode) -> float:
    """The longest apply (render, nginx -t, reload or POST) the controller recorded."""
    syncs = _truth(copied, "ingress-synced")
    assert syncs and {s["mode"] for s in syncs} == {mode}
    return max(float(s["apply_s"]) for s in syncs)


def _deploy(tmp_path: Path, kubeconfig: Path, state: Path, mode: SyncMode) -> str:
    """The controller's RBAC, the demo app and the ingress hop, applied and rolled out; returns
    the external IP of the controller's LoadBalancer Service."""
    record = read_state(state)
    assert record is not None and record.kubeconfig_in_network
    rbac = tmp_path / "rbac.yaml"
    rbac.write_text(CONTROLLER_RBAC)
    _kubectl(kubeconfig, "apply", "-f", str(rbac))
    controller_kubeconfig = _controller_kubeconfig(
        kubeconfig, record.kubeconfig_in_network, tmp_path / "controller-kubeconfig"
    )
    manifests = tmp_path / "ingress.yaml"
    manifests.write_text(yaml.safe_dump_all(_manifests(controller_kubeconfig, mode)))
    _kubectl(kubeconfig, "apply", "-f", str(manifests))
    for deployment in ("web", "ingress-nginx-controller"):
        _kubectl(kubeconfig, "rollout", "status", f"deploy/{deployment}", "--timeout=60s")
    assert "nginx" in _kubectl(kubeconfig, "get", "ingress", "web")
    service = json.loads(
        _kubectl(kubeconfig, "get", "svc", "ingress-nginx-controller", "-o", "json")
    )
    return str(service["status"]["loadBalancer"]["ingress"][0]["ip"])


def _rollout_under_load(
    tmp_path: Path, kubeconfig: Path, address: str
) -> tuple[tuple[str, ...], float]:
    """Load through the hop while the demo app rolls out: the answers after the warm-up, and
    when the rollout began."""
    load = _load(AddressPlan(ClusterConfig(name=NAME)).client_netns, address, tmp_path)
    _wait_for(tmp_path / "served", load)
    time.sleep(1)  # requests before the rollout
    began = time.time()
    _kubectl(kubeconfig, "rollout", "restart", "deploy/web")
    _kubectl(kubeconfig, "rollout", "status", "deploy/web", "--timeout=90s")
    time.sleep(PRESTOP_S + 2 * SYNC_INTERVAL_S)  # the last old Pod's stop
    (tmp_path / "stop").touch()
    statuses, _ = load.communicate(timeout=LOAD_MAX_S)
    return tuple(statuses.split()), began


@pytest.mark.parametrize("mode", list(SyncMode))
def test_requests_through_nginx_follow_the_rollout(tmp_path: Path, mode: SyncMode) -> None:
    require("ip", "nft", "nsenter", "nginx", root=True)
    if mode is SyncMode.DYNAMIC:
        require_lua_module()
    with cluster_up(tmp_path, NAME, "--nodes", "2") as kubeconfig:
        state = tmp_path / "state" / NAME
        try:
            address = _deploy(tmp_path, kubeconfig, state, mode)
            with SliceWatch(kubeconfig) as slices:
                answered, rollout_began = _rollout_under_load(tmp_path, kubeconfig, address)
            running = subprocess.run(["pgrep", "-a", "-f", str(state)],
                                     capture_output=True, text=True)  # fmt: skip
            assert "nginx: master process" in running.stdout  # so the check below means something
        finally:  # `cluster down` removes the state directory, logs included
            shutil.copytree(state / "logs", tmp_path / "logs", dirs_exist_ok=True)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout == "", f"processes left after cluster down: {leftovers.stdout}"
    assert answered and set(answered) == {"200"}, f"not all requests succeeded: {answered}"
    lag = SYNC_INTERVAL_S + _sync_apply_s(tmp_path, mode)
    if mode is SyncMode.DYNAMIC:
        _assert_dynamic(tmp_path)
        lag += WORKER_SYNC_S
    else:
        assert _reloads(tmp_path) > 0
    _assert_follows(_access_log(tmp_path), slices, rollout_began, lag)


def _assert_dynamic(copied: Path) -> None:
    """No reload at all (nginx.conf was loaded once, at the start); every POST was picked up by
    the one worker within a worker sync (+ slack for a loaded machine's timers)."""
    assert _reloads(copied) == 0
    syncs = _truth(copied, "ingress-synced")
    assert [s["reloaded"] for s in syncs] == [True] + [False] * (len(syncs) - 1)
    switches = {s["version"]: s["ts_ns"] for s in _truth(copied, "ingress-worker-synced")}
    assert len(syncs) > 3  # the start, and the rollout's endpoint changes
    for sync in syncs[1:]:  # a later POST may supersede the previous one within a worker sync
        later = [at for version, at in switches.items() if version >= sync["version"]]
        assert later, f"no worker switched to version {sync['version']} or later"
        assert (min(later) - sync["ts_ns"]) / 1e9 <= WORKER_SYNC_S + WATCH_SKEW_S


def _assert_follows(
    entries: list[dict[str, Any]], slices: SliceWatch, rollout_began: float, lag_s: float
) -> None:
    """New Pods get requests within the hop's lag (+ skew, and the wait for nginx's round
    robin to reach them) of turning ready; old ones get none later than that after leaving."""
    uses = _upstream_uses(entries)
    new = {ip: t for ip, t in slices.ready_since.items() if t > rollout_began}
    old = {ip: t for ip, t in slices.unready_since.items() if ip not in new}
    assert len(new) == 3 and len(old) == 3, (slices.ready_since, slices.unready_since)
    servers = len(slices.ready_since)  # round robin over at most this many
    bound = lag_s + WATCH_SKEW_S + servers * REQUEST_GAP_S * 2
    for ip, ready_at in new.items():
        first = min(uses.get(ip, [float("inf")]))
        assert first - ready_at <= bound, f"{ip} first used {first - ready_at:.2f}s after ready"
    for ip, unready_at in old.items():
        last = max(uses[ip])
        assert last - unready_at <= bound, f"{ip} last used {last - unready_at:.2f}s after unready"
