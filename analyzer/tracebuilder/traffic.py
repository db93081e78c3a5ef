"""The load: constant-arrival-rate requests from new-connection and keep-alive users, each one's
fate decided by the rollout model at the moment it happens.

New-connection requests are independent, so they are decided all at once with numpy (this is the
bulk of a million-request run). Keep-alive users are sequential by nature (a connection lives
until its Pod closes it), so each user is walked in *blocks*: all requests a connection serves
before its Pod's close are decided together, and only the boundary request (race, reconnect,
cut) is handled on its own.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt
import pandas as pd

from analyzer.schema import Cause, ErrorKind
from analyzer.tracebuilder.model import Cluster

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

SYN_RETRIES_S = np.array([1.0, 3.0, 7.0, 15.0, 31.0])  # Linux: 1 s initial RTO, doubling
EPHEMERAL_PORTS = (32768, 60999)  # Linux net.ipv4.ip_local_port_range default
# a client port comes back this long after its connection's last segment: Linux reuses a
# TIME_WAIT port for a new connection once its last timestamp is over 1 s old (tcp_tw_reuse);
# the full 60 s TIME_WAIT would cap a client at ~470 new connections/s
PORT_REUSE_GAP_S = 1.0
ERRORS: list[ErrorKind] = list(ErrorKind)
CAUSES: list[Cause] = list(Cause)
NO_CAUSE = -1


class Answer(IntEnum):
    """What answered the SYN."""

    SYNACK = 0
    RST_POD = 1  # nothing listening on the Pod
    RST_SERVICE = 2  # kube-proxy rejects: the Service has no endpoint
    NONE = 3  # dropped


class Close(IntEnum):
    """How an established connection ended."""

    CLIENT_FIN = 0
    SERVER_FIN = 1
    SERVER_RST = 2
    RACE = 3  # server FIN, the client's request crosses it, server RST
    NONE = 4  # never established
    RST_RACE = 5  # server aborts with a bare RST, the client's request crosses it, RST again


@dataclass
class Traffic:
    """Model-level tables (float seconds since load start; codes index ERRORS / CAUSES)."""

    requests: pd.DataFrame
    conns: pd.DataFrame


def _err(kind: ErrorKind) -> int:
    return ERRORS.index(kind)


def _cause(cause: Cause) -> int:
    return CAUSES.index(cause)


WARMUP_RESET_S = 0.001  # a front that accepts before its backend is up resets at once


def _run_causes(cluster: Cluster) -> tuple[I64, I64, I64]:
    """Per container run, the cause of (a failure while it starts, a refusal after it stopped
    accepting, a request cut by its exit); index -1 (no run) reads a pad."""
    starting, down, cut = [], [], []
    for run in cluster.runs:
        restart = _cause(Cause.CONTAINER_RESTART)
        starting.append(restart if run.restarted else _cause(Cause.NOT_READY))
        down.append(restart if run.restarts_after else _cause(Cause.ENDPOINT_LAG))
        final_cut = Cause.KILLED_AT_GRACE if run.killed_at_grace else Cause.INFLIGHT_CUT
        cut.append(restart if run.restarts_after else _cause(final_cut))
    pad = [NO_CAUSE]
    return (np.array(starting + pad), np.array(down + pad), np.array(cut + pad))


class _Load:
    """Shared inputs: the cluster, the recipe, per-run and per-Pod time arrays (index -1, no Pod,
    reads a pad) and the overload curve."""

    def __init__(self, cluster: Cluster, rng: np.random.Generator) -> None:
        self.c = cluster
        self.r = cluster.recipe
        self.rng = rng
        pad = np.array([np.inf])

        def per_run(attr: str) -> F64:
            return np.concatenate([cluster.run_array(attr), pad])

        self.listening = per_run("listening")
        self.app_ready = per_run("app_ready")
        self.hang = per_run("hang")
        self.stop = per_run("stop_accepting")
        self.exited = per_run("exited")
        self.idle_close = per_run("idle_close")
        self.gone = np.concatenate([cluster.pod_array("gone"), pad])
        self.starting_cause, self.down_cause, self.cut_cause = _run_causes(cluster)
        idle_rst = [
            not run.restarts_after and self.r.on_sigterm == "drain" and self.r.drain_idle == "rst"
            for run in cluster.runs
        ]
        self.idle_rst = np.array([*idle_rst, False])
        self.run_pod = np.array([run.pod for run in cluster.runs] + [-1])
        self.unable_spans = [
            (p.index, a, b, answer) for p in cluster.pods for a, b, answer in p.unable
        ]
        self.rtt = self.r.rtt_ms / 1000
        self.grid, self.extra = self._overload_curve()

    def unable(self, pod: I64, t: F64, answer: str) -> B:
        """Whether the app of ``pod`` cannot serve at ``t`` and answers ``answer`` meanwhile."""
        out = np.zeros(len(t), dtype=bool)
        for index, a, b, kind in self.unable_spans:
            if kind == answer:
                out |= (pod == index) & (t >= a) & (t < b)
        return out

    def _overload_curve(self) -> tuple[F64, F64]:
        """Queueing delay when ready capacity < offered load (fluid backlog, 50 ms steps)."""
        dt = 0.05
        grid = np.arange(0.0, self.r.duration_s + 15.0, dt)
        if not np.isfinite(self.r.pod_capacity_rps):
            return grid, np.zeros_like(grid)
        cap = np.maximum(self.c.ready_count(grid), 0.5) * self.r.pod_capacity_rps
        if self.r.slowdown is not None:  # e.g. a slow dependency: every Pod serves fewer
            a, b, divisor = self.r.slowdown
            cap = np.where((grid >= a) & (grid < b), cap / divisor, cap)
        backlog = np.zeros_like(grid)
        for i in range(1, len(grid)):
            backlog[i] = max(0.0, backlog[i - 1] + (self.r.rate - cap[i - 1]) * dt)
        return grid, backlog / cap

    def latency(self, t: F64, slow: B) -> F64:
        r = self.r
        base = np.where(slow, r.slow_latency_ms, r.latency_ms) / 1000
        # capped: a slow tail alone never reaches a timeout (that would be an unexplained cause)
        noise = np.minimum(self.rng.lognormal(0.0, r.latency_sigma, len(t)), 3.0)
        return base * noise + np.interp(t, self.grid, self.extra)

    def paths(self, n: int) -> B:
        return self.rng.random(n) < self.r.slow_share

    def cut_as_reset(self, n: int) -> B:
        return self.rng.random(n) < self.r.cut_with_rst_share


@dataclass
class _Served:
    """Requests sent on established connections: what happened to each."""

    error: I64
    cause: I64
    status: I64
    first_byte: F64
    end: F64
    close: I64  # Close for the connection when this request ends it, else -1
    close_t: F64


def _serve(load: _Load, send: F64, run: I64, lat: F64) -> _Served:
    """Requests sent at ``send`` on connections to container ``run``: a warming app answers 503
    (or resets), an app that cannot serve answers 503, a hung app never answers (its requests
    are reset when the kubelet kills it), a run that exits mid-request cuts it."""
    r = load.r
    n = len(send)
    exited = load.exited[run]
    warming = send < load.app_ready[run]
    warm_reset = warming & (r.warmup_answer == "reset")
    unable = ~warming & load.unable(load.run_pod[run], send, "503")
    answered_503 = (warming & ~warm_reset) | unable
    hung = ~warming & ~unable & (send + lat >= load.hang[run])
    lat = np.where(hung, np.inf, lat)
    budget = np.minimum(lat, r.read_timeout_s)
    cut = ~warming & ~unable & (exited > send) & (exited < send + budget)
    timeout = ~warming & ~unable & ~cut & (lat > r.read_timeout_s)
    reset = load.cut_as_reset(n) | hung  # a hung app never read the request: RST at exit
    error = np.full(n, _err(ErrorKind.OK))
    error[answered_503] = _err(ErrorKind.HTTP_5XX)
    error[warm_reset] = _err(ErrorKind.RESET)
    error[cut] = np.where(reset[cut], _err(ErrorKind.RESET), _err(ErrorKind.EOF))
    error[timeout] = _err(ErrorKind.READ_TIMEOUT)
    cause = np.full(n, NO_CAUSE)
    cause[warming] = load.starting_cause[run][warming]
    cause[unable] = _cause(Cause.NOT_READY)
    cause[cut] = load.cut_cause[run][cut]
    cause[timeout] = _cause(Cause.OVERLOAD)
    cause[(cut | timeout) & hung] = _cause(Cause.CONTAINER_RESTART)
    first_byte = np.where(answered_503, send + 0.001, send + lat)
    first_byte[cut | timeout | warm_reset] = np.nan
    end = first_byte + 0.0001
    end[cut] = exited[cut] + load.rtt / 2
    end[timeout] = send[timeout] + r.read_timeout_s
    end[warm_reset] = send[warm_reset] + WARMUP_RESET_S + load.rtt / 2
    status = np.where(answered_503, 503, 200)
    status[cut | timeout | warm_reset] = -1
    close = np.full(n, -1)
    close[cut] = np.where(reset[cut], Close.SERVER_RST, Close.SERVER_FIN)
    close[warm_reset] = Close.SERVER_RST
    close[timeout] = Close.CLIENT_FIN
    close_t = np.where(cut, exited, np.where(timeout, end, np.nan))
    close_t[warm_reset] = send[warm_reset] + WARMUP_RESET_S
    return _Served(error, cause, status, first_byte, end, close, close_t)


@dataclass
class _Connect:
    node: I64
    pod: I64
    run: I64  # the Pod's container run the SYN met
    answer: I64
    syn_count: I64
    established: F64
    error: I64  # for the request when the connect failed, else OK
    cause: I64
    end: F64  # when the client gave up (failed connects)


def _connect(load: _Load, start: F64) -> _Connect:
    r = load.r
    n = len(start)
    node, pod, any_ready = load.c.route(start, load.rng.random(n), load.rng.random(n))
    run = load.c.run_at(pod, start)
    no_route = pod < 0
    local = r.traffic_policy == "Local"
    not_listening = ~no_route & (start < load.listening[run])
    gone = ~no_route & ~not_listening & (start >= load.gone[pod])
    stopped = ~no_route & ~not_listening & ~gone & (start >= load.stop[run])
    refusing = ~no_route & ~not_listening & ~gone & ~stopped & load.unable(pod, start, "refuse")
    answer = np.full(n, Answer.SYNACK)
    # no endpoint at all: kube-proxy rejects; Local policy, endpoints only elsewhere: it drops
    answer[no_route] = np.where(local & any_ready[no_route], Answer.NONE, Answer.RST_SERVICE)
    answer[not_listening | stopped | refusing] = Answer.RST_POD
    answer[gone] = Answer.NONE
    dropped = answer == Answer.NONE
    refused = (answer == Answer.RST_POD) | (answer == Answer.RST_SERVICE)
    error = np.full(n, _err(ErrorKind.OK))
    error[dropped] = _err(ErrorKind.CONNECT_TIMEOUT)
    error[refused] = _err(ErrorKind.REFUSED)
    cause = np.full(n, NO_CAUSE)
    lb_lag = no_route & any_ready
    cause[no_route] = np.where(lb_lag[no_route], _cause(Cause.LB_LAG), _cause(Cause.NO_ENDPOINTS))
    cause[not_listening] = load.starting_cause[run][not_listening]
    cause[stopped] = load.down_cause[run][stopped]
    cause[gone] = _cause(Cause.ENDPOINT_LAG)
    cause[refusing] = _cause(Cause.NOT_READY)
    retries = (r.connect_timeout_s > SYN_RETRIES_S).sum()
    syn_count = np.where(dropped, 1 + retries, 1)
    end = np.where(dropped, start + r.connect_timeout_s, start + load.rtt)
    established = np.where(answer == Answer.SYNACK, start + load.rtt, np.nan)
    return _Connect(node, pod, run, answer, syn_count, established, error, cause, end)


class _Tables:
    """Column-wise accumulation of request and connection rows."""

    def __init__(self) -> None:
        self.req: dict[str, list[npt.NDArray[np.generic]]] = {}
        self.conn: dict[str, list[npt.NDArray[np.generic]]] = {}
        self.next_conn = 0

    @staticmethod
    def _add(store: dict[str, list[npt.NDArray[np.generic]]], **cols: object) -> None:
        n = max(np.size(v) for v in cols.values())  # type: ignore[arg-type]
        for k, v in cols.items():
            arr = np.asarray(v)
            store.setdefault(k, []).append(np.broadcast_to(arr, (n,)) if arr.ndim == 0 else arr)

    def conn_ids(self, n: int) -> I64:
        ids = np.arange(self.next_conn, self.next_conn + n)
        self.next_conn += n
        return ids

    def conns(self, **cols: object) -> None:
        self._add(self.conn, **cols)

    def requests(self, **cols: object) -> None:
        self._add(self.req, **cols)

    def frames(self) -> Traffic:
        def frame(store: dict[str, list[npt.NDArray[np.generic]]]) -> pd.DataFrame:
            return pd.DataFrame({k: np.concatenate(v) for k, v in store.items()})

        conns = frame(self.conn).sort_values("conn_id", ignore_index=True)
        return Traffic(frame(self.req), conns)


def _new_connection_users(load: _Load, tables: _Tables) -> None:
    r = load.r
    rate = r.rate * (1 - r.keepalive_share)
    n = round(rate * r.duration_s)
    if n == 0:
        return
    sched = (np.arange(n) + load.rng.random(n) * 0.5) / rate
    start = sched + load.rng.uniform(0.0001, 0.0005, n)
    slow = load.paths(n)
    con = _connect(load, start)
    ok = con.answer == Answer.SYNACK
    send = np.where(ok, con.established + 0.00005, np.nan)
    lat = load.latency(start, slow)
    idx = np.flatnonzero(ok)
    served = _serve(load, send[idx], con.run[idx], lat[idx])
    error, cause, end = con.error.copy(), con.cause.copy(), con.end.copy()
    status = np.full(n, -1)
    first_byte = np.full(n, np.nan)
    error[idx], cause[idx], end[idx] = served.error, served.cause, served.end
    status[idx], first_byte[idx] = served.status, served.first_byte
    close = np.full(n, Close.NONE)
    close_t = np.full(n, np.nan)
    close[idx] = np.where(served.close >= 0, served.close, Close.CLIENT_FIN)
    close_t[idx] = np.where(served.close >= 0, served.close_t, served.end + 0.0001)
    ids = tables.conn_ids(n)
    tables.conns(
        conn_id=ids,
        user_kind="new-connection",
        node=con.node,
        pod=con.pod,
        syn=start,
        syn_count=con.syn_count,
        answer=con.answer,
        established=con.established,
        close=close,
        close_t=close_t,
        race_t=np.nan,
    )
    tables.requests(
        user_kind="new-connection",
        scheduled=sched,
        start=start,
        connect=con.established,
        send=send,
        first_byte=first_byte,
        end=end,
        conn_id=ids,
        conn_new=True,
        conn_seq=1,
        slow=slow,
        status=status,
        error=error,
        cause=cause,
        pod=con.pod,
    )


def _relax(sched: F64, duration: F64, free_at: float) -> F64:
    """Start times of back-to-back requests of one user (a request waits for the previous)."""
    start = np.maximum(sched, free_at)
    for _ in range(len(start)):
        prev_end = np.concatenate(([free_at], (start + duration)[:-1]))
        new = np.maximum(sched, prev_end)
        if np.array_equal(new, start):
            break
        start = new
    return start


@dataclass
class _OpenConn:
    conn_id: int
    node: int
    pod: int
    run: int
    syn: float
    established: float
    seq: int = 0


class _KeepaliveUser:
    """One keep-alive user's walk over its schedule (see the module docstring)."""

    def __init__(self, load: _Load, tables: _Tables, sched: F64) -> None:
        self.load, self.tables, self.sched = load, tables, sched
        self.slow = load.paths(len(sched))
        self.lat = load.latency(sched, self.slow)
        self.free_at = -np.inf
        self.conn: _OpenConn | None = None

    def _record(
        self, i: int, start: F64, send: F64, served: _Served, connect: float, *, new: bool = False
    ) -> None:
        """Requests i.. on the current connection; ``new``: the first one opened it (``connect``
        is when the handshake completed, NaN when it never did)."""
        conn = self.conn
        assert conn is not None
        n = len(start)
        first = np.arange(n) == 0
        self.tables.requests(
            user_kind="keepalive",
            scheduled=self.sched[i : i + n],
            start=start,
            connect=np.where(first, connect, np.nan),
            send=send,
            first_byte=served.first_byte,
            end=served.end,
            conn_id=conn.conn_id,
            conn_new=first & new,
            conn_seq=conn.seq + np.arange(1, n + 1),
            slow=self.slow[i : i + n],
            status=served.status,
            error=served.error,
            cause=served.cause,
            pod=conn.pod,
        )
        conn.seq += n
        self.free_at = float(served.end[-1])

    def _close(self, kind: Close, t: float, race_t: float = np.nan) -> None:
        conn = self.conn
        assert conn is not None
        self.tables.conns(
            conn_id=conn.conn_id,
            user_kind="keepalive",
            node=conn.node,
            pod=conn.pod,
            syn=conn.syn,
            syn_count=1,
            answer=Answer.SYNACK,
            established=conn.established,
            close=kind,
            close_t=t,
            race_t=race_t,
        )
        self.conn = None

    def _fin_t(self, run: int) -> float:
        """When the server closes an idle keep-alive connection to container ``run``."""
        load = self.load
        closes_idle = load.r.drain_idle in ("fin", "rst")
        return float(load.idle_close[run] if closes_idle else load.exited[run])

    def _idle_close_kind(self, run: int) -> Close:
        return Close.SERVER_RST if self.load.idle_rst[run] else Close.SERVER_FIN

    def walk(self, load_stop: float) -> None:
        """Every request scheduled before ``load_stop`` that starts before it (a user that fell
        behind does not catch up after the load stops)."""
        r = self.load.r
        w = r.race_window_ms / 1000
        n, i = len(self.sched), 0
        budget = np.minimum(self.lat, r.read_timeout_s) + 0.0002
        while i < n:
            start = max(float(self.sched[i]), self.free_at)
            if start >= load_stop:
                break
            if self.conn is None:
                self._open(i, start)
                i += 1
                continue
            run = self.conn.run
            close_t = float(self.load.idle_close[run])  # no keep-alive from here on
            fin_t = self._fin_t(run)
            # a FIN and a request cross while either is in flight; after a RST has arrived the
            # client knows the connection is dead and does not send on it
            race_until = fin_t if self.load.idle_rst[run] else fin_t + w
            until = min(close_t - w, load_stop)
            j = int(np.searchsorted(self.sched, until, "left"))
            if j > i:
                starts = _relax(self.sched[i:j], budget[i:j], self.free_at)
                keep = int(np.searchsorted(starts, until, "left"))
                if keep > 0:
                    i = self._block(i, starts[:keep])
                    continue
            if start < fin_t - w:
                self._last_response(i, start)
                i += 1
            elif start <= race_until:
                self._race(i, start, fin_t)
                i += 1
            else:
                self._close(self._idle_close_kind(run), max(fin_t, self.free_at))
        if self.conn is not None:
            end = max(load_stop, self.free_at) + 0.05
            fin_t = self._fin_t(self.conn.run)
            if fin_t <= end:
                self._close(self._idle_close_kind(self.conn.run), max(fin_t, self.free_at))
            else:
                self._close(Close.CLIENT_FIN, end)

    def _block(self, i: int, starts: F64) -> int:
        assert self.conn is not None
        n = len(starts)
        served = _serve(self.load, starts, np.full(n, self.conn.run), self.lat[i : i + n])
        failed = np.flatnonzero(served.close >= 0)
        if len(failed):
            n = int(failed[0]) + 1
            served = _Served(*(getattr(served, k)[:n] for k in _SERVED_FIELDS))
            starts = starts[:n]
        self._record(i, starts, starts, served, connect=np.nan)
        if served.close[-1] >= 0:
            self._close(Close(int(served.close[-1])), float(served.close_t[-1]))
        return i + n

    def _last_response(self, i: int, start: float) -> None:
        """A draining server answers with ``Connection: close`` and closes after the response."""
        assert self.conn is not None
        t = np.array([start])
        served = _serve(self.load, t, np.array([self.conn.run]), self.lat[i : i + 1])
        self._record(i, t, t, served, connect=np.nan)
        if served.close[0] >= 0:
            self._close(Close(int(served.close[0])), float(served.close_t[0]))
        else:
            self._close(Close.SERVER_FIN, float(served.end[0]))

    def _race(self, i: int, start: float, close_t: float) -> None:
        """The request crosses the server's close of the idle connection: its data meets a
        closed socket, which answers RST. After a FIN the client may read EOF or the RST; after
        a bare RST (the abort arrives while the request is in flight) it reads the reset."""
        assert self.conn is not None
        rtt = self.load.rtt
        if self.load.idle_rst[self.conn.run]:
            kind, reset = Close.RST_RACE, True
            end = close_t + rtt / 10  # the abort reaches the client right after it sent
            race_t = start + 2 * self.load.r.race_window_ms / 1000  # the RST to its data
        else:
            kind, reset = Close.RACE, bool(self.load.cut_as_reset(1)[0])
            end = max(start, close_t) + rtt
            race_t = end - rtt / 2
        served = _Served(
            error=np.array([_err(ErrorKind.RESET if reset else ErrorKind.EOF)]),
            cause=np.array([_cause(Cause.KEEPALIVE_RACE)]),
            status=np.array([-1]),
            first_byte=np.array([np.nan]),
            end=np.array([end]),
            close=np.array([kind]),
            close_t=np.array([close_t]),
        )
        t = np.array([start])
        self._record(i, t, t, served, connect=np.nan)
        self._close(kind, close_t, race_t=race_t)

    def _open(self, i: int, start: float) -> None:
        t = np.array([start])
        con = _connect(self.load, t)
        conn_id = int(self.tables.conn_ids(1)[0])
        self.conn = _OpenConn(
            conn_id,
            int(con.node[0]),
            int(con.pod[0]),
            int(con.run[0]),
            start,
            float(con.established[0]),
        )
        if con.answer[0] != Answer.SYNACK:
            nothing = np.array([np.nan])
            served = _Served(
                con.error, con.cause, np.array([-1]), nothing, con.end, np.array([-1]), nothing
            )
            self._record(i, t, nothing, served, connect=np.nan, new=True)
            self.tables.conns(
                conn_id=conn_id,
                user_kind="keepalive",
                node=self.conn.node,
                pod=self.conn.pod,
                syn=start,
                syn_count=con.syn_count,
                answer=con.answer,
                established=np.nan,
                close=Close.NONE,
                close_t=np.nan,
                race_t=np.nan,
            )
            self.conn = None
            return
        send = con.established + 0.00005
        served = _serve(self.load, send, con.run, self.lat[i : i + 1])
        self._record(i, t, send, served, connect=float(con.established[0]), new=True)
        if served.close[0] >= 0:
            self._close(Close(int(served.close[0])), float(served.close_t[0]))


_SERVED_FIELDS = ("error", "cause", "status", "first_byte", "end", "close", "close_t")


def _keepalive_users(load: _Load, tables: _Tables) -> None:
    r = load.r
    users = r.keepalive_users
    rate = r.rate * r.keepalive_share
    if rate <= 0 or users <= 0:
        return
    period = users / rate
    for u in range(users):
        offset = (u + load.rng.random() * 0.5) / users * period
        sched = np.arange(offset, r.duration_s, period)
        _KeepaliveUser(load, tables, sched).walk(r.duration_s)


def _last_segment(load: _Load, traffic: Traffic) -> F64:
    """When each connection's last segment is on the wire: the end of its close handshake, of
    its last request or of its unanswered SYNs."""
    c, q = traffic.conns, traffic.requests
    request_end: F64 = np.full(len(c), -np.inf)
    np.maximum.at(request_end, c["conn_id"].searchsorted(q["conn_id"]), q["end"].to_numpy())
    closed = np.fmax(c["close_t"].to_numpy(), c["race_t"].to_numpy())
    dropped = c["answer"].to_numpy() == Answer.NONE
    syn = c["syn"].to_numpy(np.float64)
    unanswered: F64 = np.where(dropped, syn + load.r.connect_timeout_s, syn)
    last: F64 = np.fmax(np.fmax(closed, request_end), unanswered) + load.rtt
    return last


def client_ports(syn: F64, last: F64) -> I64:
    """A local port per connection, as the client's kernel hands them out: from the ephemeral
    range, never one that an open connection holds, and back in use only
    ``PORT_REUSE_GAP_S`` after its connection's last segment (the least recently freed port
    first). Raises ValueError when the range runs out, as connect() fails with EADDRNOTAVAIL."""
    lo, hi = EPHEMERAL_PORTS
    free = [(-np.inf, port) for port in range(lo, hi + 1)]  # sorted, so already a heap
    ports = np.empty(len(syn), dtype=np.int64)
    syn_list, last_list = syn.tolist(), last.tolist()
    for i in np.argsort(syn, kind="stable").tolist():
        free_at, port = free[0]
        if free_at > syn_list[i]:
            raise ValueError(
                f"the client needs more than {hi - lo + 1:,} ports (the Linux ephemeral range) "
                f"at {syn_list[i]:.3f} s: lower the rate of new connections or the users"
            )
        heapq.heapreplace(free, (last_list[i] + PORT_REUSE_GAP_S, port))
        ports[i] = port
    return ports


def generate(cluster: Cluster, rng: np.random.Generator) -> Traffic:
    load = _Load(cluster, rng)
    tables = _Tables()
    _new_connection_users(load, tables)
    _keepalive_users(load, tables)
    traffic = tables.frames()
    last = _last_segment(load, traffic)
    traffic.conns["port"] = client_ports(traffic.conns["syn"].to_numpy(), last)
    traffic.requests = traffic.requests.sort_values(["start", "conn_id"], kind="stable")
    traffic.requests = traffic.requests.reset_index(drop=True)
    return traffic
