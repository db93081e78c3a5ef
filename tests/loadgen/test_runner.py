"""Locust runs for real (its own process) against loopback; the file must satisfy the analyzer's
requests schema, which is the contract loadgen cannot import but must honour."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from analyzer.schema import REQUESTS, check_frame
from loadgen.runner import LoadError, LoadPlan, LoadRunner
from tests.loadgen.conftest import MisbehavingServer


def _run(tmp_path: Path, plan: LoadPlan) -> pd.DataFrame:
    output = tmp_path / "requests.parquet"
    runner = LoadRunner(plan, output, tmp_path / "logs")
    runner.start()
    runner.wait_until_sending()
    sending_ns = time.time_ns()
    rows = runner.wait()
    frame = pd.read_parquet(output, dtype_backend="numpy_nullable")
    assert len(frame) == rows
    # once it returns the users are spawning (all within a second, --spawn-rate = users) and
    # each sends within its first interval: Locust's seconds of start-up are behind the caller
    first_request_within_s = 1.0 + plan.users / plan.rate
    assert frame["start_ns"].min() <= sending_ns + first_request_within_s * 1e9
    return check_frame(frame, REQUESTS, "loadgen")


def test_a_load_that_exits_before_sending_is_an_error(tmp_path: Path) -> None:
    # a progress file left by an earlier run in the directory must not pass for this one's
    (tmp_path / "requests.progress.json").write_text('{"requests": 5}')
    plan = LoadPlan(host="http://127.0.0.1:1", exec_prefix=["false"])  # exits 1 at once
    runner = LoadRunner(plan, tmp_path / "requests.parquet", tmp_path / "logs")
    runner.start()
    with pytest.raises(LoadError, match="exited before sending"):
        runner.wait_until_sending(timeout_s=30)


def test_mixed_users_at_constant_rate(tmp_path: Path, server: MisbehavingServer) -> None:
    plan = LoadPlan(
        host=f"http://127.0.0.1:{server.port}", rate=60, duration_s=4, users=4, path="/ok"
    )
    frame = _run(tmp_path, plan)
    # the rate holds while the users send; Locust's --run-time also counts their start, which
    # took 1.4 to 3 s on a loaded 2-core machine, so the window is measured, not assumed
    sending_s = (frame["start_ns"].max() - frame["start_ns"].min()) / 1e9
    assert 0.8 * plan.rate * sending_s <= len(frame) <= 1.2 * plan.rate * sending_s + plan.users
    assert (frame["error_kind"] == "ok").all()
    assert frame["request_id"].is_unique
    assert (frame["local_port"] > 0).all()
    assert set(frame["user_kind"]) == {"keepalive", "new-connection"}
    fresh = frame[frame["user_kind"] == "new-connection"]
    assert fresh["conn_new"].all() and (fresh["conn_seq"] == 1).all()
    assert fresh["conn_id"].is_unique
    reused = frame[frame["user_kind"] == "keepalive"]
    assert reused["conn_seq"].max() > 10  # one persistent connection per keep-alive user
    assert reused["conn_id"].nunique() == reused["conn_new"].sum()
    # constant arrival rate: each connection of a keep-alive user is fed on a fixed schedule
    per_conn = reused.sort_values("scheduled_ns").groupby("conn_id")["scheduled_ns"].diff().dropna()
    assert per_conn.std() < 1e6  # ns: the schedule does not drift with response times
    assert (frame["pod"] == "pod-a").all()


def test_refused_requests_are_recorded_with_their_port(tmp_path: Path, closed_port: int) -> None:
    plan = LoadPlan(host=f"http://127.0.0.1:{closed_port}", rate=20, duration_s=2, users=2)
    frame = _run(tmp_path, plan)
    assert len(frame) > 10
    assert (frame["error_kind"] == "refused").all()
    assert frame["local_port"].notna().all() and (frame["local_port"] > 0).all()
    assert frame["connect_ns"].isna().all()


def test_server_errors_are_classified(tmp_path: Path, server: MisbehavingServer) -> None:
    plan = LoadPlan(
        host=f"http://127.0.0.1:{server.port}", rate=20, duration_s=2, users=2, path="/503"
    )
    frame = _run(tmp_path, plan)
    assert (frame["error_kind"] == "http-5xx").all()
    assert (frame["status_code"] == 503).all()


@pytest.mark.slow
def test_distributed_two_workers_merge_into_one_file(
    tmp_path: Path, server: MisbehavingServer
) -> None:
    plan = LoadPlan(
        host=f"http://127.0.0.1:{server.port}",
        rate=40,
        duration_s=4,
        users=4,
        path="/ok",
        workers=2,
    )
    frame = _run(tmp_path, plan)
    assert len(frame) > 60
    assert frame["request_id"].is_unique and frame["conn_id"].nunique() > 2
    assert len(list(tmp_path.glob("requests.worker-*.parquet"))) == 2
    assert frame["start_ns"].is_monotonic_increasing


def test_a_gated_start_sends_nothing_until_its_gate_opens(
    tmp_path: Path, server: MisbehavingServer
) -> None:
    """Locust's start-up is paid before the gate; the first request comes only after it, and
    then as soon as a started Locust sends (within its users' first interval)."""
    plan = LoadPlan(host=f"http://127.0.0.1:{server.port}", rate=20, duration_s=2, users=2)
    output = tmp_path / "requests.parquet"
    runner = LoadRunner(plan, output, tmp_path / "logs")
    runner.start(gated=True)
    time.sleep(3)  # Locust's start-up (1-3 s on a loaded 2-core machine) is over by now
    assert runner.running() and server.served == 0 and runner.progress() == {}
    opened_ns = time.time_ns()
    runner.open_gate()
    runner.wait_until_sending(timeout_s=10)
    sending_s = (time.time_ns() - opened_ns) / 1e9
    runner.wait()
    frame = pd.read_parquet(output)
    assert frame["start_ns"].min() > opened_ns and len(frame) > 10
    assert sending_s < 1.0  # the users start at once: nothing of Locust's start is left
    assert not (tmp_path / "logs" / "locust.start-gate").exists()


def test_a_gated_start_that_is_never_opened_stops_with_nothing_kept(tmp_path: Path) -> None:
    plan = LoadPlan(host="http://127.0.0.1:1", rate=20, duration_s=2, users=2)
    runner = LoadRunner(plan, tmp_path / "requests.parquet", tmp_path / "logs")
    runner.start(gated=True)
    assert runner.stop() == 0
    assert not runner.running() and not (tmp_path / "requests.parquet").exists()
