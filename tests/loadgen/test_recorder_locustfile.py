"""The recorder attached to a user's own locustfile by one line (``import loadgen.locustfile``):
Locust runs for real against loopback, and every request of the user's ``HttpUser`` becomes a
requests.parquet row that `rolltrace import` reads (``analyzer.readers.loadtools``)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.readers.loadtools import RequestFormat, read_request_log
from loadgen.recorder import exception_kind
from tests.loadgen.conftest import MisbehavingServer

USER_LOCUSTFILE = """
import loadgen.locustfile  # noqa: F401  (the one line: rolltrace's request recorder)
from locust import HttpUser, constant_throughput, task


class Shopper(HttpUser):
    wait_time = constant_throughput(20)

    @task
    def browse(self):
        self.client.get("/ok")
        self.client.get("/503")
        self.client.get("/reset")
"""


def _run_locust(tmp_path: Path, host: str) -> Path:
    locustfile = tmp_path / "shop.py"
    locustfile.write_text(USER_LOCUSTFILE)
    output = tmp_path / "requests.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "1",
         "-r", "1", "-t", "2s", "--host", host, "--rt-output", str(output), "--only-summary"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert output.exists(), done.stderr[-2000:]
    return output


def test_a_users_own_locustfile_is_recorded(tmp_path: Path, server: MisbehavingServer) -> None:
    output = _run_locust(tmp_path, f"http://127.0.0.1:{server.port}")
    log = read_request_log(output)
    frame = log.frame
    assert log.format is RequestFormat.PARQUET and not log.problems
    by_path = {path: set(kinds) for path, kinds in frame.groupby("path")["error_kind"]}
    assert by_path == {"/ok": {"ok"}, "/503": {"http-5xx"}, "/reset": {"reset"}}
    assert (frame["remote_ip"] == "127.0.0.1").all() and (frame["remote_port"] == server.port).all()
    assert frame["conn_id"].is_unique and frame["local_port"].isna().all()
    assert (frame["end_ns"] >= frame["start_ns"]).all()
    assert set(frame.loc[frame["path"] == "/ok", "pod"]) == {"pod-a"}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "reset"),
        (TimeoutError("timed out"), "read-timeout"),
    ],
)
def test_wrapped_socket_errors_keep_their_kind(error: OSError, kind: str) -> None:
    class NewConnectionError(Exception):  # urllib3's name: the connect failed
        pass

    class RequestException(Exception):  # requests wraps urllib3's error in its args
        pass

    if kind == "refused":
        inner = NewConnectionError("Failed to establish a new connection")
        inner.__context__ = error
        wrapped = RequestException(inner)
    else:
        wrapped = RequestException(error)
    assert exception_kind(wrapped) == kind
