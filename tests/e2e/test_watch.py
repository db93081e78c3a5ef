"""`rolltrace watch` and kubectl's watch streams beside a `kubectl rollout restart` on the local
cluster (issue 10, items 2 and 3).

Both record the same rollout: `rolltrace watch` with receive times, kubectl (one stream per kind)
with none, so ``analyzer.readers.kubectl`` derives its times from the objects. The recording must
be complete and readable, stop cleanly on Ctrl-C, and every object version both saw must have
its receive time inside the bounds derived from kubectl's copy. Run under
``flock /tmp/rolltrace-cluster.lock``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyzer.events import pod_lifecycle, read_events
from analyzer.readers.kubectl import read_kubectl_streams
from tests.conftest import require
from tests.e2e.clusters import cluster_up
from tests.processes import interruptible

CLUSTER = "rtwatch"
BIN = Path(sys.executable).parent
MANIFEST = Path(__file__).parents[2] / "scenarios" / "manifests" / "demoapp.yaml"
KINDS = ("pods", "endpointslices", "services", "deployments", "replicasets")
#: A watch event reaches a client this long after the write it reports, at most, on the local
#: cluster (an in-memory API server on the same host; measured tens of ms under test load).
DELIVERY_NS = 250_000_000
SECOND_NS = 1_000_000_000  # metav1.Time's resolution

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(400)]


@dataclass
class Recording:
    watch: Path  # rolltrace watch's file
    streams: list[Path]  # kubectl's, one per kind
    stdout: str
    stderr: str
    returncode: int


def _kubectl(kubeconfig: Path, *args: str, timeout: float = 130) -> str:
    done = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def _wait_for_lists(path: Path, kinds: set[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            seen = {json.loads(line)["kind"] for line in path.read_text().splitlines()}
            if kinds <= seen:
                return
        time.sleep(0.2)
    pytest.fail(f"{path}: no initial list of {sorted(kinds)} within {timeout_s} s")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    require("ip", "nft", "nsenter", root=True)
    root = tmp_path_factory.mktemp("watch-e2e")
    with cluster_up(root, CLUSTER, "--nodes", "2") as kubeconfig:
        yield _record(root, kubeconfig)


def _record(root: Path, kubeconfig: Path) -> Recording:
    _kubectl(kubeconfig, "apply", "-f", str(MANIFEST))
    _kubectl(kubeconfig, "rollout", "status", "deployment/demoapp", "--timeout=120s")
    watch, streams = root / "watch.jsonl", [root / f"{kind}.json" for kind in KINDS]
    get = [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "get"]
    kubectl = [
        subprocess.Popen([*get, kind, "-w", "-o", "json", "--output-watch-events"], stdout=out)
        for kind, out in zip(KINDS, (path.open("wb") for path in streams), strict=True)
    ]
    recorder = subprocess.Popen(
        [str(BIN / "rolltrace"), "watch", "--kubeconfig", str(kubeconfig), "-n", "default",
         "-l", "app=demoapp", "-o", str(watch), "--duration", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible,
    )  # fmt: skip
    try:
        _wait_for_lists(watch, {"Pod", "EndpointSlice", "Deployment", "ReplicaSet"})
        _kubectl(kubeconfig, "rollout", "restart", "deployment/demoapp")
        _kubectl(kubeconfig, "rollout", "status", "deployment/demoapp", "--timeout=120s")
        time.sleep(8.0)  # the old Pods' preStop (5 s) and exit: until they are deleted
        recorder.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = recorder.communicate(timeout=30)
    finally:
        recorder.kill()
        for process in kubectl:
            process.terminate()
            process.wait(timeout=10)
    return Recording(watch, streams, stdout, stderr, recorder.returncode)


def test_rolltrace_watch_records_the_rollout(recording: Recording) -> None:
    assert recording.returncode == 0, recording.stderr
    assert "interrupted" in recording.stderr and "Traceback" not in recording.stderr
    assert "Pod:" in recording.stdout and "import --watch" in recording.stdout
    events = read_events(recording.watch)  # strict: every line valid
    assert set(events["kind"]) >= {"Pod", "EndpointSlice", "Service", "Deployment", "ReplicaSet"}
    assert "GAP" not in set(events["type"])
    pods = pod_lifecycle(events)
    assert len(pods) == 6
    assert pods["deleted_ns"].notna().sum() == 3 and pods["ready_ns"].notna().all()


def test_kubectl_times_bound_the_receive_times(recording: Recording) -> None:
    """Every object version both recorded: rolltrace's receive time lies inside the bounds
    kubectl's copy was given (plus the watch's delivery delay), and old Pods' deletions agree
    within the timestamps' resolution."""
    derived = read_kubectl_streams(recording.streams, namespace="default")
    assert derived.problems == []
    received = {
        (kind, obj["metadata"]["uid"], obj["metadata"]["resourceVersion"]): recv
        for kind, obj, recv in zip(
            *(read_events(recording.watch)[c] for c in ("kind", "object", "recv_ns")),
            strict=True,
        )
        if isinstance(obj, dict)
    }
    compared = 0
    for record in derived.records:
        meta = record["object"]["metadata"]
        recv = received.get((record["kind"], meta["uid"], meta["resourceVersion"]))
        if recv is None or (record["type"] == "ADDED" and record["time_source"] == "bounded"):
            continue  # not seen by both, or listed at start (a state from before the watch)
        compared += 1
        low, high = record["earliest_ns"], record["latest_ns"]
        assert low is None or low <= recv, (record["kind"], meta["name"], record["type"])
        assert high is None or recv <= high + DELIVERY_NS, (record["kind"], meta["name"])
    assert compared >= 30
    with_receive = pod_lifecycle(read_events(recording.watch)).set_index("uid")
    kubectl_path = recording.watch.with_name("from-kubectl.jsonl")
    kubectl_path.write_text("".join(json.dumps(r) + "\n" for r in derived.records))
    from_kubectl = pod_lifecycle(read_events(kubectl_path)).set_index("uid")
    deleted = with_receive["deletion_ns"].dropna().index
    assert len(deleted) == 3
    for uid in deleted:
        gap = abs(
            int(with_receive.loc[uid, "deletion_ns"]) - int(from_kubectl.loc[uid, "deletion_ns"])
        )
        assert gap <= SECOND_NS + DELIVERY_NS, uid
