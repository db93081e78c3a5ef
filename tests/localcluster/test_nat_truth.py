"""The NAT recorder names the Pod each connection really reached: for every served request the
Pod in its X-Pod-Name header, and for every refused one the deleted Pod whose stale rules
sent it there — judged from truth.jsonl alone, as `rolltrace score` follows connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from localcluster.config import ClusterConfig
from localcluster.dataplane.conntrack import parse_event, start_nat_recorder
from localcluster.main import _starters
from rolltrace.scoring import follow, truth_state
from tests.localcluster.test_dataplane_support import cluster_name
from tests.localcluster.test_e2e_dataplane import FullCluster, _delete_under_load, config

__all__ = ["cluster_name"]


def test_parse_event_keeps_dnat_flows_with_their_target_and_peer() -> None:
    line = (
        "[1796358704.535386]\t    [NEW] tcp      6 120 SYN_SENT src=198.18.1.2 dst=198.18.2.1 "
        "sport=40000 dport=80 [UNREPLIED] src=198.18.0.11 dst=198.18.1.2 sport=30000 dport=40000"
    )
    entry = parse_event(line)
    assert entry is not None
    assert (entry.ts_ns, entry.sport, entry.target_ip, entry.target_port) == (
        1796358704535386000, 40000, "198.18.0.11", 30000,
    )  # fmt: skip
    assert (entry.peer_ip, entry.peer_port) == ("198.18.1.2", 40000)
    undnated = line.replace("src=198.18.0.11", "src=198.18.2.1").replace("sport=30000", "sport=80")
    assert parse_event(undnated) is None
    assert parse_event("conntrack v1.4.7 (conntrack-tools): 3 flow events have been shown.") is None


@pytest.mark.parametrize(
    ("virtual", "in_network", "expected"),
    [(False, True, ["controllers", "nodes", "NAT recorder", "API endpoint in the network"]),
     (False, False, ["controllers", "nodes", "NAT recorder"]),
     (True, True, ["controllers", "nodes"])],
)  # fmt: skip
def test_the_cluster_process_starts_the_recorder_after_real_nodes_only(
    tmp_path: Path, virtual: bool, in_network: bool, expected: list[str]
) -> None:
    """Started after the nodes (they listen in the nodes' namespaces), so stopped before them."""
    server: Any = SimpleNamespace(unix_socket=tmp_path / "api.sock", token="t", client=lambda: None)
    config = ClusterConfig(virtual=virtual, api_in_network=in_network)
    starters = _starters(server, config, tmp_path)
    assert [what for what, _ in starters] == expected
    assert all(start is not None for _, start in starters)


@pytest.mark.root
async def test_nat_truth_names_the_pod_of_served_and_failed_connections(
    require_root: None, cluster_name: str, tmp_path: Path
) -> None:
    async with FullCluster(config(cluster_name, 2.0), tmp_path) as cluster:
        recorder = await start_nat_recorder(cluster.config, tmp_path)
        try:
            vip = await cluster.deploy(3, {"DEMOAPP_SHUTDOWN": "graceful"})
            victim = (await cluster.pods())[0]["metadata"]["name"]
            results, _ = await _delete_under_load(cluster, vip, victim)
            await asyncio.sleep(0.5)  # the listeners' last events
        finally:
            await recorder.stop()
    state = truth_state(tmp_path / "truth.jsonl")
    client_ip = cluster.plan.client_ip
    named = []
    for r in results:
        request = {"local_ip": client_ip, "local_port": r["port"], "remote_ip": vip,
                   "remote_port": 80}  # fmt: skip
        reached = follow(state, request, int(float(r["t"]) * 1e9))
        named.append((r["error"], r["pod"], reached.pod))
    served = [(header, pod) for error, header, pod in named if error is None]
    # refused while the Pod's address was still up, unanswered once it was gone: which of the
    # two a connection met depends on when it came, so both count
    failed = [pod for error, _, pod in named if error is not None]
    assert len(served) > 100, "too little traffic got through to judge the recorder"
    assert [s for s in served if s[0] != s[1]] == []
    assert failed, "the proxies' 2 s lag should have failed some connections"
    assert set(failed) == {victim}
