"""The rolltrace locustfile: ``locust -f loadgen/locustfile.py --host http://IP:PORT``.

Works on its own (headless or with Locust's web UI) and under ``loadgen.runner``. Everything is
wired through Locust's hooks: extra command-line options via ``init_command_line_parser``, the
recorder via ``test_start``/``test_stop``/``quitting``. The mix of users is set with
``--rt-keepalive-weight`` / ``--rt-new-weight`` (Locust picks user classes by weight).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadgen.recorder import RequestRecorder
from loadgen.users import DEFAULTS, KeepAliveUser, NewConnectionUser

__all__ = ["KeepAliveUser", "NewConnectionUser"]

_state: dict[str, RequestRecorder] = {}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("rolltrace")
    group.add_argument(
        "--rt-output", default="requests.parquet", help="requests.parquet path ('' records nothing)"
    )
    group.add_argument(
        "--rt-rate",
        type=float,
        default=DEFAULTS["rt_rate"],
        help="requests/s per user (constant arrival rate)",
    )
    group.add_argument("--rt-path", default=DEFAULTS["rt_path"])
    group.add_argument("--rt-connect-timeout", type=float, default=DEFAULTS["rt_connect_timeout"])
    group.add_argument("--rt-request-timeout", type=float, default=DEFAULTS["rt_request_timeout"])
    group.add_argument(
        "--rt-max-requests",
        type=int,
        default=DEFAULTS["rt_max_requests"],
        help="per user; a safety bound",
    )
    group.add_argument(
        "--rt-max-seconds",
        type=float,
        default=DEFAULTS["rt_max_seconds"],
        help="per user; a safety bound",
    )
    group.add_argument("--rt-max-inflight", type=int, default=DEFAULTS["rt_max_inflight"])
    group.add_argument("--rt-keepalive-weight", type=int, default=1)
    group.add_argument("--rt-new-weight", type=int, default=1)
    group.add_argument(
        "--rt-start-gate",
        default="",
        help="start no user until this file exists (loadgen.runner launches Locust early)",
    )


@events.init.add_listener
def _apply_weights(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    KeepAliveUser.weight = options.rt_keepalive_weight
    NewConnectionUser.weight = options.rt_new_weight


#: How often a gated start looks for its gate file: cheap, and the users start this soon after it
GATE_POLL_S = 0.01


@events.init.add_listener
def _wait_for_start_gate(environment: Any, **_: Any) -> None:
    """Hold the process that starts the test here until its gate opens (workers start users
    only when told, so they join the master meanwhile); bounded by the users' own bound."""
    options = environment.parsed_options
    gate = options.rt_start_gate if options is not None else ""
    if not gate or isinstance(environment.runner, WorkerRunner):
        return
    deadline = time.monotonic() + options.rt_max_seconds
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the start gate {gate} did not open in {options.rt_max_seconds:g} s")
        gevent.sleep(GATE_POLL_S)


def _part_path(output: str, worker_index: int | None) -> Path:
    path = Path(output)
    if worker_index is None:
        return path
    return path.with_name(f"{path.stem}.worker-{worker_index}{path.suffix}")


@events.test_start.add_listener
def _start_recorder(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner) or "recorder" in _state:
        return  # the master runs no users; workers and local runs record
    options = environment.parsed_options
    output = options.rt_output if options is not None else "requests.parquet"
    if not output:
        return  # recording off: benchmarks measure Locust without the recorder
    # Only distributed workers write parts (merged later); a local run writes the file itself.
    index = (
        environment.runner.worker_index if isinstance(environment.runner, WorkerRunner) else None
    )
    _state["recorder"] = RequestRecorder(
        _part_path(output, index),
        environment.events,
        worker_index=(index or 0) + (index is not None),
    )


def _close_recorder(**_: Any) -> None:
    recorder = _state.pop("recorder", None)
    if recorder is not None:
        recorder.close()


events.test_stop.add_listener(_close_recorder)
events.quitting.add_listener(_close_recorder)
