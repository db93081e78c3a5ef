"""The canonical tables and enums: the one contract between capture, analysis and report.

Every table that crosses a stage boundary (a reader's output, a join's output, what is written to
``analysis/tables/*.parquet``) is described here once, column by column, with its unit and the
clock its times come from. ``check_frame`` enforces a schema at the boundary so that a mistake
surfaces where it is made, not three stages later as a wrong cause. ``docs/trace-format.md``
documents the same columns for people; ``tests/analyzer/test_schema_docs.py`` keeps both in step.

Conventions (docs/trace-format.md): times are integer nanoseconds since the Unix epoch (``*_ns``),
durations are in milliseconds as floats (``*_ms``), missing values are pandas NA (nullable
dtypes), enum-valued columns hold the enum's string value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas loads where a frame is built: the enums stay a cheap import
    import pandas as pd
    import pyarrow as pa

SCHEMA_VERSION = "1.0"
#: The hop name of the local cluster's L7 load balancer: its access log is hops/lb.log.
L7_LB_HOP = "lb"


class Cause(StrEnum):
    """Why a request failed (docs/causes.md). Stable: reports, budgets and CI gates name these."""

    NOT_READY = "not-ready"
    ENDPOINT_LAG = "endpoint-lag"
    INFLIGHT_CUT = "inflight-cut"  # the app exited (after SIGTERM) without draining
    CONTAINER_RESTART = "container-restart"  # exited or restarted without Pod deletion
    KILLED_AT_GRACE = "killed-at-grace"  # SIGKILL at the end of the grace period
    KEEPALIVE_RACE = "keepalive-race"
    # an L7 hop (ingress proxy, L7 load balancer) sent to a Pod its own endpoint list still held
    PROXY_ENDPOINT_LAG = "proxy-endpoint-lag"
    # an L7 hop reused a pooled backend connection that the app had closed when idle
    BACKEND_KEEPALIVE_RACE = "backend-keepalive-race"
    LB_LAG = "lb-lag"
    NO_ENDPOINTS = "no-endpoints"
    OVERLOAD = "overload"
    UNEXPLAINED = "unexplained"


class ErrorKind(StrEnum):
    """A request's normalized outcome as the client saw it (docs/trace-format.md)."""

    OK = "ok"
    REFUSED = "refused"  # connect() got RST
    CONNECT_TIMEOUT = "connect-timeout"  # SYN never answered within the timeout
    RESET = "reset"  # ECONNRESET after the connection was established
    EOF = "eof"  # server closed before a complete response
    READ_TIMEOUT = "read-timeout"  # connected, sent, no complete response in time
    HTTP_5XX = "http-5xx"
    HTTP_4XX = "http-4xx"
    UNREACHABLE = "unreachable"  # EHOSTUNREACH / ENETUNREACH / ICMP errors
    OTHER = "other"

    @property
    def failed(self) -> bool:
        return self is not ErrorKind.OK


class ConnectionOutcome(StrEnum):
    """How a TCP connection ended, as seen in packets."""

    REFUSED = "refused"  # SYN answered by RST
    SYN_TIMEOUT = "syn-timeout"  # SYN (and retransmissions) never answered
    RESET_BY_SERVER = "reset-by-server"
    RESET_BY_CLIENT = "reset-by-client"
    CLOSED_BY_SERVER = "closed-by-server"  # server sent FIN first
    CLOSED_BY_CLIENT = "closed-by-client"
    OPEN_AT_END = "open-at-end"


class RunStatus(StrEnum):
    COMPLETE = "complete"  # every phase ran and every capture closed cleanly
    PARTIAL = "partial"  # stopped early (Ctrl-C, deadline) or a capture is missing; analyzable
    #: every phase ran, but something was not recorded or not delivered (a capture or a load
    #: worker died, the disk filled, the load fell short of its rate): analyzable, counts are
    #: lower bounds
    DEGRADED = "degraded"
    FAILED = "failed"  # the experiment itself failed; traces may be unusable


class PodMatch(StrEnum):
    """How a request was tied to a Pod (the ``pod_method`` column)."""

    HEADER = "header"  # the response named the Pod (X-Pod-Name)
    NODE_CAPTURE = "node-capture"  # the backend IP seen on a node-side capture
    INFERRED = "inferred"  # from which Pods were in which state at that moment
    HOP_LOG = "hop-log"  # the upstream address an L7 hop's access log gave its failed attempt
    NONE = "none"


class Clock(StrEnum):
    REALTIME = "realtime"  # CLOCK_REALTIME of the capturing host, ns since epoch
    API = "api"  # Kubernetes object timestamps (1 s resolution): bounds only


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # pandas dtype name as pandas reports it, e.g. "int64", "Int64", "string", "bool"
    doc: str
    unit: str = ""
    clock: Clock | None = None
    nullable: bool = False
    enum: type[StrEnum] | None = None


@dataclass(frozen=True)
class TableSchema:
    name: str
    doc: str
    columns: tuple[Column, ...]
    extra_columns_allowed: bool = True

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def empty(self) -> pd.DataFrame:
        """An empty frame with every column at its declared dtype (readers return it, not None)."""
        import pandas as pd  # not at the top: see the TYPE_CHECKING import

        return pd.DataFrame({c.name: pd.Series([], dtype=c.dtype) for c in self.columns})


class SchemaError(ValueError):
    """A frame broke its table contract; names the table, the stage and every offending column,
    because a silently wrong dtype or a missing column turns into a wrong cause much later."""


_DTYPE_FAMILIES = {
    # numpy and pandas-nullable spellings of the same kind are interchangeable at a boundary
    "int64": {
        "int64",
        "Int64",
        "int32",
        "Int32",
        "int16",
        "Int16",
        "int8",
        "Int8",
        "uint8",
        "UInt8",
        "uint16",
        "UInt16",
        "uint32",
        "UInt32",
    },
    "float64": {"float64", "Float64", "float32"},
    "bool": {"bool", "boolean"},
    "string": {"string", "object", "category", "str"},
}


def _family(dtype: str) -> str:
    for family, members in _DTYPE_FAMILIES.items():
        if dtype in members:
            return family
    return dtype


def check_frame(df: pd.DataFrame, schema: TableSchema, stage: str) -> pd.DataFrame:
    """Check ``df`` against ``schema`` at a stage boundary; return it unchanged when it conforms."""
    import numpy as np  # loaded with the frame already; the module itself stays a cheap import

    problems: list[str] = []
    # the dtypes in one call, and a column taken out only when its values must be read: taking
    # a column builds a Series, which on the small frames of imports and fuzzing was most of
    # the check's cost
    dtypes = df.dtypes
    for col in schema.columns:
        if col.name not in dtypes.index:
            problems.append(f"missing column {col.name!r}")
            continue
        dtype = dtypes[col.name]
        categories = getattr(dtype, "categories", None)  # held as categories: their type
        got = str(dtype if categories is None else categories.dtype)
        if _family(got) != _family(col.dtype):
            problems.append(f"column {col.name!r} has dtype {got}, expected {col.dtype}")
            continue
        if not len(df):
            continue
        # a numpy integer or bool column cannot hold a missing value: no scan needed
        can_be_missing = not isinstance(dtype, np.dtype) or dtype.kind not in "biu"
        if not col.nullable and can_be_missing and bool(df[col.name].isna().any()):
            problems.append(f"column {col.name!r} has missing values but is not nullable")
        if col.enum is not None:
            allowed = {e.value for e in col.enum}
            bad = set(df[col.name].dropna().astype(str).unique()) - allowed
            if bad:
                problems.append(
                    f"column {col.name!r} has values outside {col.enum.__name__}: {sorted(bad)[:5]}"
                )
    if not schema.extra_columns_allowed:
        extra = set(df.columns) - set(schema.names)
        if extra:
            problems.append(f"unexpected columns {sorted(extra)}")
    if problems:
        raise SchemaError(f"{schema.name} table at {stage}: " + "; ".join(problems))
    return df


def read_back_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """The key-value metadata (pandas' and Arrow's schemas) that makes a Parquet file read back
    with ``schema``'s types and dtypes, whatever Arrow types it was written from: tables are
    written from dictionaries (codes) for speed, and read back as the text their schema says."""
    import base64  # beside the writers that need it: the module itself stays a cheap import

    assert schema.metadata is not None  # from_pandas always describes the frame
    arrow_schema = base64.b64encode(schema.serialize().to_pybytes())
    return {b"pandas": schema.metadata[b"pandas"], b"ARROW:schema": arrow_schema}


def _t(name: str, doc: str, nullable: bool = False) -> Column:
    """A realtime-clock timestamp column."""
    return Column(
        name,
        "Int64" if nullable else "int64",
        doc,
        unit="ns",
        clock=Clock.REALTIME,
        nullable=nullable,
    )


REQUESTS = TableSchema(
    "requests",
    "One row per HTTP request the load generator attempted (requests.parquet).",
    (
        Column("request_id", "int64", "Unique per run."),
        Column("user_kind", "string", "Which load user sent it: 'keepalive' or 'new-connection'."),
        _t("scheduled_ns", "Intended start under the constant arrival rate schedule."),
        _t("start_ns", "When the client began (connect or send). start − scheduled = lateness."),
        _t(
            "connect_ns",
            "TCP handshake completed; NA when the connection was reused or never connected.",
            nullable=True,
        ),
        _t("first_byte_ns", "First response byte; NA when none arrived.", nullable=True),
        _t("end_ns", "Response complete or error raised."),
        Column("local_ip", "string", "Client socket's local address.", nullable=True),
        Column(
            "local_port", "Int64", "Client socket's local port (joins to packets).", nullable=True
        ),
        Column("remote_ip", "string", "Address the client connected to (the LB/Service IP)."),
        Column("remote_port", "int64", "Port the client connected to."),
        Column("conn_id", "int64", "Client-side connection id (unique per run)."),
        Column("conn_new", "bool", "True when this request opened its connection."),
        Column("conn_seq", "int64", "1-based position of the request on its connection."),
        Column("method", "string", "HTTP method."),
        Column("path", "string", "Request path."),
        Column("status_code", "Int64", "HTTP status; NA when no response.", nullable=True),
        Column("error_kind", "string", "Normalized outcome.", enum=ErrorKind),
        Column("error_detail", "string", "Raw error text, for people.", nullable=True),
        Column("pod", "string", "Serving Pod from the X-Pod-Name response header.", nullable=True),
        Column("pod_version", "string", "Serving Pod's version header.", nullable=True),
    ),
)

PACKETS = TableSchema(
    "packets",
    "One row per TCP segment in a capture (analysis/tables/packets.parquet).",
    (
        _t("ts_ns", "Capture timestamp."),
        Column("capture", "string", "Capture name: the pcap file's stem ('client', 'node-1')."),
        Column("src", "string", "Source IP (v4 dotted or v6 compressed)."),
        Column("dst", "string", "Destination IP."),
        Column("sport", "int64", "TCP source port."),
        Column("dport", "int64", "TCP destination port."),
        Column(
            "flags",
            "int64",
            "TCP flag bits (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128).",
        ),
        Column("seq", "int64", "Sequence number (raw, 32-bit unsigned)."),
        Column("ack", "int64", "Acknowledgement number (raw, 32-bit unsigned)."),
        Column("payload_len", "int64", "TCP payload bytes.", unit="bytes"),
        Column("ip_version", "int64", "4 or 6."),
    ),
)

CONNECTIONS = TableSchema(
    "connections",
    "One row per TCP connection (4-tuple + SYN time) seen in a capture.",
    (
        Column("conn_key", "int64", "Unique per table."),
        Column("capture", "string", "Capture it was seen in."),
        Column("client_ip", "string", "Side that sent the SYN (or the non-server side)."),
        Column("client_port", "int64", ""),
        Column("server_ip", "string", ""),
        Column("server_port", "int64", ""),
        _t("syn_ns", "First SYN; for connections already open at capture start, the first packet."),
        Column(
            "syn_count",
            "int64",
            "SYNs sent (1 + retransmissions); 0 when the SYN was not captured.",
        ),
        _t("synack_ns", "First SYN-ACK.", nullable=True),
        _t("established_ns", "Client's ACK completing the handshake.", nullable=True),
        _t("first_c2s_data_ns", "", nullable=True),
        _t("last_c2s_data_ns", "", nullable=True),
        _t("first_s2c_data_ns", "", nullable=True),
        _t("last_s2c_data_ns", "", nullable=True),
        Column("bytes_c2s", "int64", "Payload bytes client→server.", unit="bytes"),
        Column("bytes_s2c", "int64", "Payload bytes server→client.", unit="bytes"),
        _t("client_fin_ns", "", nullable=True),
        _t("server_fin_ns", "", nullable=True),
        Column("fin_first", "string", "'client', 'server' or NA.", nullable=True),
        _t("client_rst_ns", "", nullable=True),
        _t("server_rst_ns", "", nullable=True),
        Column("rst_first", "string", "'client', 'server' or NA.", nullable=True),
        _t("end_ns", "Last packet of the connection."),
        Column("outcome", "string", "How it ended.", enum=ConnectionOutcome),
    ),
)

PODS = TableSchema(
    "pods",
    "Pod lifecycle from watch events: one row per Pod (by uid). Times are watch receive times "
    "(realtime clock of the watcher); a transition first seen after a GAP has its *_late flag set "
    "and its time is when it was detected, an upper bound.",
    (
        Column("pod", "string", "Pod name."),
        Column("namespace", "string", ""),
        Column("uid", "string", ""),
        Column("node", "string", "spec.nodeName once bound.", nullable=True),
        Column("ip", "string", "status.podIP once assigned.", nullable=True),
        Column(
            "host_ip",
            "string",
            "status.hostIP once assigned: the node's address, which names the node a "
            "masqueraded connection came through (NA in runs recorded without it).",
            nullable=True,
        ),
        Column("replicaset", "string", "Owning ReplicaSet.", nullable=True),
        Column(
            "revision", "Int64", "ReplicaSet's deployment.kubernetes.io/revision.", nullable=True
        ),
        _t("created_ns", "First seen (ADDED)."),
        _t("scheduled_ns", "First seen with a nodeName / PodScheduled=True.", nullable=True),
        _t("started_ns", "First seen with a running container.", nullable=True),
        _t("ready_ns", "First seen Ready=True.", nullable=True),
        _t("unready_ns", "First seen Ready=False after having been Ready.", nullable=True),
        _t("deletion_ns", "First seen with a deletionTimestamp.", nullable=True),
        Column(
            "deletion_grace_s",
            "Int64",
            "metadata.deletionGracePeriodSeconds.",
            nullable=True,
            unit="s",
        ),
        _t("terminated_ns", "First seen with every container terminated.", nullable=True),
        _t("deleted_ns", "DELETED event.", nullable=True),
        Column("ready_late", "bool", "ready_ns was first observed after a watch GAP."),
        Column("deletion_late", "bool", "deletion_ns was first observed after a watch GAP."),
        Column("deleted_late", "bool", "deleted_ns was first observed after a watch GAP."),
    ),
)


class PodState(StrEnum):
    """A Pod's state over one interval of the ``pod_states`` table (the ``state`` column)."""

    PENDING = "pending"  # created, no container has run yet
    STARTING = "starting"  # a container runs, the Pod has never been Ready
    READY = "ready"  # the Pod's Ready condition is True
    UNREADY = "unready"  # was Ready, now not, no container exit since: a readiness flip
    RESTARTING = "restarting"  # a container exited (or restarted) and the Pod is not Ready again
    TERMINATING = "terminating"  # deletion requested (deletionTimestamp), not gone yet
    GONE = "gone"  # containers all terminated for good, or the Pod was deleted


POD_STATES = TableSchema(
    "pod_states",
    "Pod state as intervals over time, from every observed Pod transition: one row per (Pod, "
    "interval) in which its state, readiness, container run state, restart count and last "
    "container exit stayed the same. Times are watch receive times; object timestamps bound "
    "only the exit time.",
    (
        Column("pod", "string", "Pod name."),
        Column("uid", "string", ""),
        Column("node", "string", "spec.nodeName once bound.", nullable=True),
        Column("ip", "string", "status.podIP once assigned.", nullable=True),
        _t("from_ns", "Watch receive time of the observation that started the interval."),
        _t("to_ns", "Start of the next interval; NA when still current at the end.", nullable=True),
        Column("state", "string", "The Pod's state over the interval.", enum=PodState),
        Column("ready", "bool", "The Ready condition (else every containerStatuses[].ready)."),
        Column("container_running", "bool", "Every container has state.running."),
        Column("restart_count", "int64", "Sum of containerStatuses[].restartCount."),
        Column(
            "last_exit_code",
            "Int64",
            "exitCode of the latest container exit (state or lastState.terminated).",
            nullable=True,
        ),
        Column(
            "last_exit_reason",
            "string",
            "reason of that exit (Error, OOMKilled, Completed, ...).",
            nullable=True,
        ),
        _t(
            "last_exit_ns",
            "Earliest time that exit can have happened: the later of the observation before "
            "it was seen and its finishedAt (1 s resolution, a bound only).",
            nullable=True,
        ),
        Column(
            "deletion_grace_s",
            "Int64",
            "metadata.deletionGracePeriodSeconds once deletion was requested.",
            nullable=True,
            unit="s",
        ),
        Column("from_late", "bool", "The start was first observed after a watch GAP."),
    ),
)

ENDPOINTS = TableSchema(
    "endpoints",
    "Endpoint membership intervals: one row per (EndpointSlice, endpoint address, condition "
    "state) interval.",
    (
        Column("service", "string", "kubernetes.io/service-name label of the slice."),
        Column("slice", "string", "EndpointSlice name."),
        Column("ip", "string", "Endpoint address."),
        Column("pod", "string", "targetRef name.", nullable=True),
        Column("node", "string", "nodeName.", nullable=True),
        Column("ready", "bool", "conditions.ready (nil counts as true, KEP-1672)."),
        Column("serving", "bool", "conditions.serving."),
        Column("terminating", "bool", "conditions.terminating."),
        _t("from_ns", "Watch receive time of the change that started the interval."),
        _t(
            "to_ns",
            "Start of the next interval or removal; NA when still current at the end.",
            nullable=True,
        ),
        Column("from_late", "bool", "The start was first observed after a watch GAP."),
    ),
)

FAILURES = TableSchema(
    "failures",
    "One row per failed request, with its cause and the evidence that decided it.",
    (
        Column("request_id", "int64", ""),
        _t("start_ns", "Request start."),
        _t("end_ns", "Request end."),
        Column("error_kind", "string", "", enum=ErrorKind),
        Column("cause", "string", "", enum=Cause),
        Column("confidence", "float64", "0..1: how strongly the evidence supports the cause."),
        Column("evidence", "string", "One sentence, for people, naming the decisive signal."),
        Column("pod", "string", "Pod the request reached or most likely reached.", nullable=True),
        Column("pod_method", "string", "How the Pod was determined.", enum=PodMatch),
        Column(
            "pod_state",
            "string",
            "The Pod's state at request start (a PodState value, or unknown).",
            nullable=True,
        ),
        Column("node", "string", "", nullable=True),
        Column(
            "ms_since_deletion",
            "float64",
            "Request start − Pod deletion.",
            unit="ms",
            nullable=True,
        ),
        Column("ms_since_ready", "float64", "Request start − Pod ready.", unit="ms", nullable=True),
        Column(
            "conn_age_ms",
            "float64",
            "Request start − connection establishment.",
            unit="ms",
            nullable=True,
        ),
        Column("conn_reused", "bool", "The request was not the first on its connection."),
        Column(
            "conn_outcome",
            "string",
            "Outcome of the matched TCP connection.",
            nullable=True,
            enum=ConnectionOutcome,
        ),
        Column(
            "hop",
            "string",
            "The L7 hop that decided the failure: it answered the client for a failed upstream "
            "attempt (NA: the Pod's answer or the client's own connection decided).",
            nullable=True,
        ),
        Column(
            "hop_join",
            "string",
            "How the request was tied to a hop's log line: 'exact' (client port, connection "
            "position, time), 'timed' (connection position, status, millisecond time: the "
            "port was rewritten) or 'coarse' (status and the log's second); NA: no hop "
            "logged it.",
            nullable=True,
        ),
        Column(
            "path",
            "string",
            "client → hop → upstream address (Pod) for a request a hop logged; NA otherwise.",
            nullable=True,
        ),
    ),
)

WINDOWS = TableSchema(
    "windows",
    "Disruption windows: failures merged when less than the merge gap apart.",
    (
        Column("window_id", "int64", ""),
        _t("start_ns", ""),
        _t("end_ns", ""),
        Column("failed", "int64", "Failed requests in the window."),
        Column("new_failed", "int64", "Of which on new connections."),
        Column("reused_failed", "int64", "Of which on reused connections."),
        Column("dominant_cause", "string", "", enum=Cause),
        Column("causes", "string", "JSON object cause → count."),
    ),
)


class AttemptOutcome(StrEnum):
    """How one upstream attempt of an L7 hop ended (hop_attempts ``outcome``), read from the
    hop's access log as nginx records it (ngx_http_upstream_module's variables)."""

    OK = "ok"  # the upstream answered below 500
    HTTP_5XX = "http-5xx"  # the upstream answered 5xx (its response header arrived)
    CONNECT_ERROR = "connect-error"  # no connection: refused, reset or unreachable (502)
    CONNECT_TIMEOUT = "connect-timeout"  # no connection within the connect timeout (504)
    NO_RESPONSE = "no-response"  # connected, then the connection failed before a header (502)
    RESPONSE_TIMEOUT = "response-timeout"  # connected, no header within the read timeout (504)
    NO_SERVER = "no-server"  # no server could be selected: the group's name stands for it (502)
    #: a 5xx the log cannot place: it records no connect or header time (ingress-nginx's default)
    FAILED_5XX = "failed-5xx"
    UNKNOWN = "unknown"  # no status recorded (``-``): the attempt did not end with one

    @property
    def failed(self) -> bool:
        return self not in {AttemptOutcome.OK, AttemptOutcome.UNKNOWN}


#: The ``outcome`` values of failed attempts, for ``isin`` over an attempts table.
FAILED_ATTEMPT_OUTCOMES = tuple(o.value for o in AttemptOutcome if o.failed)


HOP_REQUESTS = TableSchema(
    "hop_requests",
    "One row per request an L7 hop (an ingress proxy, an L7 load balancer) logged in its access "
    "log (hops/<hop>.log). Times are the hop's clock; its log writes the end, with the "
    "resolution time_resolution_ms gives.",
    (
        Column("hop", "string", "Hop name: the log's file stem (hops/<hop>.log) or --hop."),
        Column("line", "int64", "Line of the access log, from 1."),
        Column("request_key", "string", "The hop's id of the request.", nullable=True),
        _t("start_ns", "end_ns − the request time the hop logged."),
        _t("end_ns", "When the hop logged the request (its end), truncated to the resolution."),
        Column(
            "time_resolution_ms",
            "float64",
            "Resolution of the log's time: the true end lies in [end_ns, end_ns + this).",
            unit="ms",
        ),
        Column("client_ip", "string", "Address of the hop's client.", nullable=True),
        Column("client_port", "Int64", "Port of the hop's client (JSON format).", nullable=True),
        Column("method", "string", "From the request line.", nullable=True),
        Column("path", "string", "From the request line.", nullable=True),
        Column("host", "string", "Host the request named (JSON format).", nullable=True),
        Column("status", "int64", "Status the hop answered its client with."),
        Column("request_ms", "float64", "The request's duration at the hop.", unit="ms"),
        Column("connection", "Int64", "The hop's client connection serial (JSON).", nullable=True),
        Column(
            "connection_requests",
            "Int64",
            "Position of the request on that connection (JSON format).",
            nullable=True,
        ),
        Column("upstream", "string", "Upstream group name the hop logged.", nullable=True),
        Column("attempts", "int64", "Upstream attempts (rows of hop_attempts), 0 when none."),
        Column("failed_attempts", "int64", "Of which failed (AttemptOutcome.failed)."),
    ),
)

HOP_ATTEMPTS = TableSchema(
    "hop_attempts",
    "One row per upstream attempt of a hop request: nginx lists one value per attempt, "
    "comma-separated, and separates the groups of an internal redirect with a colon.",
    (
        Column("hop", "string", ""),
        Column("line", "int64", "The request's line (joins to hop_requests on hop, line)."),
        Column("attempt", "int64", "1-based position among the request's attempts."),
        Column("group", "int64", "0-based internal-redirect group the attempt belongs to."),
        Column(
            "upstream_addr",
            "string",
            "ADDRESS:PORT (or a socket path) tried; the group's name when none could be chosen.",
        ),
        Column("upstream_ip", "string", "Address part of upstream_addr.", nullable=True),
        Column("upstream_port", "Int64", "Port part of upstream_addr.", nullable=True),
        Column("status", "Int64", "Status of the attempt; NA for '-'.", nullable=True),
        Column("connect_ms", "float64", "Connect time; NA: none.", unit="ms", nullable=True),
        Column("header_ms", "float64", "Time to the header; NA: none.", unit="ms", nullable=True),
        Column("response_ms", "float64", "Attempt's time.", unit="ms", nullable=True),
        Column("outcome", "string", "How it ended.", enum=AttemptOutcome),
    ),
)

MASKED_RETRIES = TableSchema(
    "masked_retries",
    "One row per hop request that succeeded (status below 500, not 499) only after failed "
    "upstream attempts: a failure a retry hid. Not a failure, not a cause.",
    (
        Column("hop", "string", ""),
        Column("line", "int64", "The request's line in the hop's log."),
        Column("request_key", "string", "", nullable=True),
        _t("start_ns", ""),
        _t("end_ns", ""),
        Column("status", "int64", "Final status to the hop's client."),
        Column("client_ip", "string", "", nullable=True),
        Column("client_port", "Int64", "", nullable=True),
        Column("attempts", "int64", ""),
        Column("failed_attempts", "int64", ""),
        Column(
            "failed_upstreams",
            "string",
            "The failed attempts in order: 'ADDRESS STATUS OUTCOME', comma-separated.",
        ),
        Column(
            "cost_ms",
            "float64",
            "Latency cost: the failed attempts' upstream times added up; NA when none logged one.",
            unit="ms",
            nullable=True,
        ),
    ),
)

ALL_TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        REQUESTS,
        PACKETS,
        CONNECTIONS,
        PODS,
        POD_STATES,
        ENDPOINTS,
        FAILURES,
        WINDOWS,
        HOP_REQUESTS,
        HOP_ATTEMPTS,
        MASKED_RETRIES,
    )
}


class TruthEvent(StrEnum):
    """Ground-truth event names in truth.jsonl (local cluster and trace builder only).

    Never read by attribution: tests use them to score it. Each line of truth.jsonl is a JSON
    object with at least ``ts_ns`` (realtime), ``source`` (e.g. ``kubelet/node-1``,
    ``kube-proxy/node-2``, ``lb``, ``builder``) and ``event`` (one of these), plus ``pod`` /
    ``node`` where they apply and event-specific fields (see docs/trace-format.md).
    """

    PROCESS_STARTED = "process-started"
    LISTENING = "listening"
    READY_TO_SERVE = "ready-to-serve"
    PRESTOP_START = "prestop-start"
    PRESTOP_END = "prestop-end"
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"
    STOPPED_ACCEPTING = "stopped-accepting"
    EXITED = "exited"
    RULES_PROGRAMMED = "rules-programmed"  # fields: node, service, endpoints [{pod, ip}]
    HEALTHCHECK_CHANGED = "healthcheck-changed"  # fields: node, healthy, local_endpoints
    LB_TARGETS_CHANGED = "lb-targets-changed"  # fields: targets [str]
    LB_HEALTH_CHANGED = "lb-health-changed"  # fields: target, healthy
    REQUEST_CAUSE = "request-cause"  # trace builder only: request_id, cause
    # where each connection went: a DNAT the kernel chose, from conntrack in the LB's namespace
    # (node null) or a node's; fields: src, sport, dst, dport (client side), target_ip,
    # target_port (the chosen node or Pod), peer_ip, peer_port (the client as the target sees it)
    NAT_NEW = "nat-new"
    NAT_RECORDER_ERROR = "nat-recorder-error"  # conntrack lost events: NAT truth is incomplete
    # the app closed an idle connection; fields: peer_ip, peer_port, how (fin|rst), draining
    IDLE_CLOSE = "idle-close"
    WARMUP_RESET = "warmup-reset"  # the app reset a request during warm-up: peer_ip, peer_port
    # the app stops serving while running (readiness flap: reason); ready-to-serve ends it
    NOT_SERVING = "not-serving"
    # an ingress controller applied an upstream set to its proxy; fields: upstreams
    # {"<namespace>-<service>-<port>": ["ip:port", ...]}, mode (reload|dynamic), reloaded,
    # version (dynamic: the POSTed lists' number)
    INGRESS_SYNCED = "ingress-synced"
    # dynamic mode: one nginx worker switched to the lists POSTed as version; fields: version,
    # worker_pid (traffic follows from here, up to a worker sync after the ingress-synced line)
    INGRESS_WORKER_SYNCED = "ingress-worker-synced"
