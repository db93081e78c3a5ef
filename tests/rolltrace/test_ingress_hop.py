"""The ingress hop of a scenario run: its scenario section, its manifests and run.json entry,
collecting its logs and truth at the end of a run, and the strict judge following a failed
request through it (hand-made truth and access log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as k8s_config

from analyzer.hop_paths import hop_settings
from analyzer.rundir import RunPaths
from localcluster.apiserver import ApiServer
from localcluster.apiserver.thread import ServerThread
from rolltrace.runner.backends import collect_hops
from rolltrace.runner.kube import Kube
from rolltrace.runner.manifests import (
    INGRESS_CONTROLLER,
    hop_records,
    ingress_controller_args,
    ingress_objects,
    workload_objects,
)
from rolltrace.scenario import Ingress, ScenarioError, parse_scenario
from rolltrace.scoring import (
    UNDECIDED,
    TruthState,
    hop_trail,
    masked_from_truth,
    score_verdicts,
)
from tests.rolltrace.test_scoring import (
    CLIENT,
    NODE2,
    POD_A,
    POD_B,
    POD_C,
    Truth,
    cluster,
    deleted_pod_a,
    request,
    verdicts,
)

WITH_INGRESS = "name: hop\ncluster:\n  ingress: {next_upstream: 'off', sync_interval_s: 2}\n"


# -- the scenario section ---------------------------------------------------------------------
def test_no_ingress_section_means_no_hop_and_a_loadbalancer_workload() -> None:
    scenario = parse_scenario("name: plain\n")
    assert scenario.ingress() is None
    service, _ = workload_objects(scenario)
    assert service["spec"]["type"] == "LoadBalancer"
    assert ingress_objects(scenario, service, "/kubeconfig") == []
    assert hop_records(scenario) == []


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("ingress: {next_upstream: 'error bogus'}", "cluster.ingress.next_upstream"),
        ("ingress: {next_upstream: 'off error'}", "cluster.ingress.next_upstream"),
        ("ingress: {sync_interval_s: 0}", "cluster.ingress.sync_interval_s"),
        ("ingress: {mode: lua}", "cluster.ingress.mode"),
        ("ingress: {retries: 2}", "cluster.ingress.retries"),
    ],
)
def test_a_wrong_ingress_field_is_named_with_its_line(text: str, field: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(f"name: hop\ncluster:\n  {text}\n", "s.yaml")
    assert f"s.yaml:3: {field}:" in str(error.value)


# -- manifests and run.json --------------------------------------------------------------------
def test_the_hop_is_deployed_as_ingress_nginx_with_the_scenario_settings() -> None:
    scenario = parse_scenario(WITH_INGRESS)
    service, _ = workload_objects(scenario)
    assert service["spec"]["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in service["spec"]
    objects = ingress_objects(scenario, service, "/state/kubeconfig-in-network")
    by_kind = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert by_kind == {("IngressClass", "nginx"), ("Deployment", INGRESS_CONTROLLER),
                       ("Service", INGRESS_CONTROLLER), ("Ingress", "demoapp")}  # fmt: skip
    (lb,) = [o for o in objects if o["kind"] == "Service"]
    assert lb["spec"]["type"] == "LoadBalancer"
    (route,) = [o for o in objects if o["kind"] == "Ingress"]
    backend = route["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "demoapp", "port": {"number": service["spec"]["ports"][0]["port"]}}
    (controller,) = [o for o in objects if o["kind"] == "Deployment"]
    container = controller["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("registry.k8s.io/ingress-nginx/controller:")
    args = container["args"]
    assert "--sync-interval=2" in args and "--proxy-next-upstream=off" in args
    assert "--kubeconfig=/state/kubeconfig-in-network" in args
    assert not any(a.startswith("--sync-mode") for a in args), "reload is the default: unsaid"


def test_the_hop_objects_apply_and_reapply_through_the_official_client(tmp_path: Path) -> None:
    """Create, then patch (a second apply), the namespaced Ingress and the cluster-scoped
    IngressClass beside the Deployment and Services."""
    scenario = parse_scenario(WITH_INGRESS)
    service, deployment = workload_objects(scenario)
    objects = [service, deployment, *ingress_objects(scenario, service, "/k")]
    with ServerThread(ApiServer(), tmp_path / "kubeconfig"):
        kube = Kube(k8s_config.new_client_from_config(str(tmp_path / "kubeconfig")), "rt-hop")
        kube.ensure_namespace()
        for _ in range(2):
            for obj in objects:
                kube.apply(obj)
        route = kube.networking.read_namespaced_ingress("demoapp", "rt-hop")
        assert route.spec.ingress_class_name == "nginx"
        assert kube.networking.read_ingress_class("nginx").spec.controller == (
            "k8s.io/ingress-nginx"
        )
        lb = kube.core.read_namespaced_service(INGRESS_CONTROLLER, "rt-hop")
        assert lb.spec.type == "LoadBalancer"
        assert kube.core.read_namespaced_service("demoapp", "rt-hop").spec.type == "ClusterIP"


def test_dynamic_mode_is_passed_to_the_controller() -> None:
    args = ingress_controller_args(Ingress(mode="dynamic", next_upstream_tries=5), "/k")
    assert "--sync-mode=dynamic" in args and "--proxy-next-upstream-tries=5" in args


def test_run_json_records_the_hop_the_analyzer_reads() -> None:
    (hop,) = hop_records(parse_scenario(WITH_INGRESS))
    assert hop["name"] == "ingress" and hop["kind"] == "ingress-nginx"
    assert (hop["sync_interval_s"], hop["mode"], hop["next_upstream"], hop["tries"]) == (
        2.0, "reload", "off", 3)  # fmt: skip


# -- collecting the hop's files at the end of a run ------------------------------------------
def _log_line(msec: float, status: int = 200) -> str:
    return json.dumps({"msec": msec, "status": status, "request_time": 0.001}) + "\n"


def test_access_logs_are_merged_in_time_order_and_truth_appended(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pods = state / "logs" / "pods"
    one, two = pods / "rolltrace_ingress-a_1", pods / "rolltrace_ingress-b_2"
    for pod in (one, two, pods / "rolltrace_demoapp-x_3"):
        pod.mkdir(parents=True)
    (one / "access.log").write_text(_log_line(1.0) + "not json\n" + _log_line(3.0))
    (two / "access.log").write_text(_log_line(2.0) + _log_line(4.0, 502))
    (one / "truth.jsonl").write_text('{"event":"ingress-synced","n":1}\n')
    (state / "hops").mkdir()
    (state / "hops" / "lb.log").write_text(_log_line(5.0))
    run = RunPaths(tmp_path / "run")
    run.root.mkdir()
    run.truth.write_text('{"event":"listening"}\n')
    collect_hops(state, run)
    merged = run.hop_log("ingress").read_text().splitlines()
    assert merged[0] == _log_line(1.0).strip() and merged[1] == "not json"  # kept in place
    assert [json.loads(x)["msec"] for x in merged if x.startswith("{")] == [1.0, 2.0, 3.0, 4.0]
    assert run.hop_log("lb").read_text() == _log_line(5.0)
    assert not (state / "hops" / "lb.log").exists()
    assert run.truth.read_text().splitlines()[-1] == '{"event":"ingress-synced","n":1}'


def test_a_run_without_hops_gets_no_hops_directory(tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    run.root.mkdir()
    collect_hops(tmp_path / "state", run)
    assert not run.hops_dir.exists()


# -- the judge through the hop ---------------------------------------------------------------
INGRESS_POD = "ingress-0"


def hop_line(end: float, sport: int, status: int, *attempts: tuple[str, str, str, str, str],
             took: float = 0.002) -> dict[str, Any]:  # fmt: skip
    """A line of the ingress's JSON log; attempts are (address, status, connect, header,
    response) as nginx writes them."""

    def joined(i: int) -> str:
        return ", ".join(a[i] for a in attempts)

    return {"msec": end, "remote_addr": CLIENT, "remote_port": str(sport), "status": status,
            "request": "GET / HTTP/1.1", "request_time": took, "upstream_addr": joined(0),
            "upstream_status": joined(1), "upstream_connect_time": joined(2),
            "upstream_header_time": joined(3), "upstream_response_time": joined(4)}  # fmt: skip


def with_ingress(truth: Truth, tmp_path: Path, *lines: dict[str, Any]) -> TruthState:
    """``truth`` with an ingress Pod at POD_C behind the LB, and its access log."""
    truth.kubelet(0.5, INGRESS_POD, "process-started", POD_C, restart_count=0)
    truth.lines.append(Truth.line(0.6, f"ingress/{INGRESS_POD}", "ingress-synced", upstreams={}))
    state = truth.state(tmp_path)
    log = tmp_path / "ingress.log"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    state.hops = {"ingress": hop_trail(log, "ingress")}
    return state


def test_a_refusal_by_a_deleted_pod_the_ingress_still_listed_is_proxy_endpoint_lag(
    tmp_path: Path,
) -> None:
    truth = deleted_pod_a(cluster()).nat(11.5, 40001, NODE2, POD_C)
    refused = hop_line(11.502, 40001, 502, (f"{POD_A}:8080", "502", "-", "-", "0.000"))
    state = with_ingress(truth, tmp_path, refused)
    frame = verdicts(state, request(1, "http-5xx", 11.5, 40001, end=11.503), said="endpoint-lag")
    assert list(frame["truth"]) == ["proxy-endpoint-lag"]
    assert list(frame["hop"]) == ["ingress"]
    score = score_verdicts("run", frame)
    assert score.by_hop == {"ingress": 1} and score.agreed == 0


def test_a_reused_pooled_connection_the_app_closed_idle_is_backend_keepalive_race(
    tmp_path: Path,
) -> None:
    truth = cluster().nat(20.0, 40002, NODE2, POD_C)
    truth.app(20.0005, "web-b", "idle-close", peer_ip=POD_C, peer_port=51000, how="fin",
              draining=False)  # fmt: skip
    cut = hop_line(20.002, 40002, 502, (f"{POD_B}:8080", "502", "0.000", "-", "0.001"))
    state = with_ingress(truth, tmp_path, cut)
    frame = verdicts(state, request(2, "http-5xx", 20.0, 40002, end=20.003))
    assert list(frame["truth"]) == ["backend-keepalive-race"]
    assert list(frame["hop"]) == ["ingress"]


def test_a_pooled_connection_closed_by_a_draining_pod_is_proxy_endpoint_lag(
    tmp_path: Path,
) -> None:
    truth = deleted_pod_a(cluster()).nat(11.2, 40003, NODE2, POD_C)
    truth.app(11.2005, "web-a", "idle-close", peer_ip=POD_C, peer_port=51001, how="fin",
              draining=True)  # fmt: skip
    cut = hop_line(11.202, 40003, 502, (f"{POD_A}:8080", "502", "0.000", "-", "0.001"))
    state = with_ingress(truth, tmp_path, cut)
    assert list(verdicts(state, request(3, "http-5xx", 11.2, 40003, end=11.203))["truth"]) == [
        "proxy-endpoint-lag"
    ]


def test_a_request_the_hop_logged_without_failed_attempts_is_judged_on_its_l4_path(
    tmp_path: Path,
) -> None:
    """The client's leg to the hop failed (no failed upstream attempt): no hop decides it."""
    truth = cluster().nat(30.0, 40004, NODE2, POD_C)
    fine = hop_line(30.002, 40004, 200, (f"{POD_B}:8080", "200", "0.000", "0.001", "0.001"))
    state = with_ingress(truth, tmp_path, fine)
    frame = verdicts(state, request(4, "reset", 30.0, 40004, end=30.003))
    assert list(frame["hop"]) == [""] and list(frame["truth"]) == [UNDECIDED]


def test_masked_requests_are_counted_per_hop_with_what_their_first_attempt_met(
    tmp_path: Path,
) -> None:
    truth = deleted_pod_a(cluster())
    retried = hop_line(11.6, 40005, 200, (f"{POD_A}:8080", "502", "-", "-", "0.000"),
                       (f"{POD_B}:8080", "200", "0.001", "0.001", "0.001"))  # fmt: skip
    second_failed = hop_line(11.7, 40006, 200, (f"{POD_B}:8080", "200", "0.001", "0.001",
                                                "0.001"))  # fmt: skip
    given_up = hop_line(11.8, 40007, 502, (f"{POD_A}:8080", "502", "-", "-", "0.000"),
                        (f"{POD_A}:8080", "502", "-", "-", "0.000"))  # fmt: skip
    state = with_ingress(truth, tmp_path, retried, second_failed, given_up)
    assert masked_from_truth(state) == {
        "ingress": {"masked": 1, "by_cause": {"proxy-endpoint-lag": 1}}
    }


def test_a_client_connection_cut_after_the_hops_reload_is_a_keepalive_race_at_the_hop(
    tmp_path: Path,
) -> None:
    """Opened before the reload, cut after it with no line in the hop's log: the reload's old
    worker closed it. Opened after the reload, the same cut is not the reload's."""
    truth = cluster().nat(40.0, 40008, NODE2, POD_C).nat(41.0, 40009, NODE2, POD_C)
    truth.lines.append(Truth.line(40.5, f"ingress/{INGRESS_POD}", "ingress-synced",
                                  upstreams={}, reloaded=True))  # fmt: skip
    served = hop_line(40.002, 40008, 200, (f"{POD_B}:8080", "200", "0.000", "0.001", "0.001"))
    state = with_ingress(truth, tmp_path, served)
    first = request(8, "ok", 40.0, 40008, conn=8)
    cut = request(9, "eof", 40.6, 40008, conn=8)
    later = request(10, "eof", 41.2, 40009, conn=10)
    frame = verdicts(state, cut, later, extra=(first,))
    assert list(frame["truth"]) == ["keepalive-race", UNDECIDED]
    assert list(frame["hop"]) == ["ingress", ""]


def test_run_json_records_an_l7_load_balancer_before_the_ingress() -> None:
    text = WITH_INGRESS + "  lb: {mode: l7, targets: pods, idle_timeout_s: 45}\n"
    lb, ingress = hop_records(parse_scenario(text))
    assert (lb["name"], lb["kind"], lb["idle_timeout_s"], lb["targets"]) == (
        "lb",
        "alb",
        45,
        "pods",
    )
    assert ingress["name"] == "ingress"
    settings = hop_settings({"hops": [lb, ingress]}, {})
    assert settings["lb"].idle_timeout_s == 45 and settings["ingress"].sync_interval_s == 2.0
