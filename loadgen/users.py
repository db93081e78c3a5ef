"""Locust users that send at a constant arrival rate through ``loadgen.httpclient``.

Why constant arrival rate: a closed-loop user waits for each response before sending the next,
so during a stall it simply stops sending and the stall's failures are never counted
(coordinated omission). Here every request has an intended start (``scheduled_ns``) on a fixed
schedule; a request that starts late is sent anyway and its lateness is recorded.

* ``NewConnectionUser`` opens a fresh TCP connection per request (``Connection: close`` is
  implied by closing after the response). Each request runs in its own greenlet, so one slow
  request does not delay the next: the load stays open-loop.
* ``KeepAliveUser`` holds one persistent connection and reuses it; HTTP/1.1 without pipelining
  cannot overlap requests on one connection, so lateness shows up in ``scheduled_ns`` instead.
  When the connection breaks or the server says ``Connection: close`` the next request opens a
  new one (``conn_new``).

Both report through Locust's ``request`` event (the documented way for custom clients), with the
wire details in ``context`` for ``loadgen.recorder``. Every user is bounded in count and time
(``--rt-max-requests``, ``--rt-max-seconds``) so that a forgotten run stops by itself.
"""

from __future__ import annotations

import random
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.pool import Pool
from locust import User, task
from locust.exception import StopUser

from loadgen.httpclient import Connection, Outcome, RequestFailed, classify_status

DEFAULTS: dict[str, Any] = {
    "rt_rate": 10.0,  # requests/s per user
    "rt_path": "/",
    "rt_connect_timeout": 2.0,
    "rt_request_timeout": 5.0,
    "rt_max_requests": 1_000_000,
    "rt_max_seconds": 3600.0,
    "rt_max_inflight": 200,
}


def _option(user: User, name: str) -> Any:
    options = getattr(user.environment, "parsed_options", None)
    value = getattr(options, name, None) if options is not None else None
    return DEFAULTS[name] if value is None else value


class _ArrivalRateUser(User):
    abstract = True
    kind = "abstract"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        target = urlsplit(self.host or "http://127.0.0.1:80")
        if target.scheme not in ("http", "") or target.hostname is None:
            raise ValueError(f"loadgen needs an http://IP:PORT host, got {self.host!r}")
        self.target_ip = target.hostname
        self.target_port = target.port or 80
        self.host_header = target.netloc
        self.rate = float(_option(self, "rt_rate"))
        self.path = str(_option(self, "rt_path"))
        self.connect_timeout = float(_option(self, "rt_connect_timeout"))
        self.request_timeout = float(_option(self, "rt_request_timeout"))
        self.max_requests = int(_option(self, "rt_max_requests"))
        stop_after = float(_option(self, "rt_max_seconds"))
        self._stop_at_ns = time.time_ns() + int(stop_after * 1e9)
        self._interval_ns = int(1e9 / self.rate)
        # A random phase spreads users over the interval instead of firing them in bursts.
        self._next_ns = time.time_ns() + random.randrange(max(1, self._interval_ns))
        self._sent = 0

    def _wait_for_slot(self) -> int:
        """Sleep until the next intended start and return it (the schedule never slips)."""
        if self._sent >= self.max_requests or self._next_ns >= self._stop_at_ns:
            raise StopUser()
        scheduled = self._next_ns
        self._next_ns += self._interval_ns
        self._sent += 1
        delay = (scheduled - time.time_ns()) / 1e9
        if delay > 0:
            gevent.sleep(delay)
        return scheduled

    def _report(self, scheduled_ns: int, outcome: Outcome, failure: RequestFailed | None) -> None:
        outcome.end_ns = outcome.end_ns or time.time_ns()
        if failure is not None:
            outcome.error_kind, outcome.error_detail = failure.kind, failure.detail
        elif outcome.status_code is not None:
            outcome.error_kind = classify_status(outcome.status_code)
        context = {
            "user_kind": self.kind,
            "scheduled_ns": scheduled_ns,
            "remote_ip": self.target_ip,
            "remote_port": self.target_port,
            "method": "GET",
            "path": self.path,
            **vars(outcome),
        }
        exception = failure
        if failure is None and outcome.error_kind != "ok":
            exception = RequestFailed(outcome.error_kind, f"HTTP {outcome.status_code}")
        self.environment.events.request.fire(
            request_type="GET",
            name=f"{self.kind} {self.path}",
            response_time=(outcome.end_ns - outcome.start_ns) / 1e6,
            response_length=outcome.response_length,
            response=None,
            context=context,
            exception=exception,
        )

    def _exchange(self, connection: Connection | None, outcome: Outcome) -> Connection:
        """Run one request on ``connection`` (or a new one); returns the connection used."""
        if connection is None or connection.closed:
            connection = Connection(self.target_ip, self.target_port, self.connect_timeout)
            outcome.conn_new = True
            outcome.connect_ns = connection.connect_ns
        outcome.conn_id = connection.id
        outcome.local_ip, outcome.local_port = connection.local_ip, connection.local_port
        connection.request("GET", self.path, self.host_header, self.request_timeout, outcome)
        outcome.end_ns = time.time_ns()
        return connection


class NewConnectionUser(_ArrivalRateUser):
    """A fresh TCP connection per request: sees what new clients see (refused, SYN timeouts)."""

    kind = "new-connection"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._pool = Pool(int(_option(self, "rt_max_inflight")))

    @task
    def send(self) -> None:
        scheduled = self._wait_for_slot()
        self._pool.spawn(self._one, scheduled)

    def _one(self, scheduled_ns: int) -> None:
        outcome = Outcome(start_ns=time.time_ns(), conn_new=True)
        connection: Connection | None = None
        failure = None
        try:
            connection = self._exchange(None, outcome)
        except RequestFailed as exc:
            failure = exc
            _fill_from_failed_connect(outcome, exc)
        finally:
            if connection is not None:
                connection.close()
        self._report(scheduled_ns, outcome, failure)

    def on_stop(self) -> None:
        self._pool.join(timeout=self.request_timeout + self.connect_timeout)


class KeepAliveUser(_ArrivalRateUser):
    """One persistent connection, reused: sees keep-alive races and in-flight cuts."""

    kind = "keepalive"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self._connection: Connection | None = None

    @task
    def send(self) -> None:
        scheduled = self._wait_for_slot()
        outcome = Outcome(start_ns=time.time_ns())
        failure = None
        try:
            self._connection = self._exchange(self._connection, outcome)
        except RequestFailed as exc:
            failure = exc
            _fill_from_failed_connect(outcome, exc)
            self._connection = None
        self._report(scheduled, outcome, failure)

    def on_stop(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _fill_from_failed_connect(outcome: Outcome, failure: RequestFailed) -> None:
    """A failed connect raised before ``_exchange`` could copy the socket's identity."""
    if failure.conn_id is not None:
        outcome.conn_new = True
        outcome.conn_id = failure.conn_id
        outcome.conn_seq = 1
        outcome.local_ip, outcome.local_port = failure.local_ip, failure.local_port
