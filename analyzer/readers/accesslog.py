"""L7 hop access logs → the hop tables (``analyzer.schema.HOP_REQUESTS`` and ``HOP_ATTEMPTS``).

A request that passes an ingress proxy or an L7 load balancer is decided there as much as at
the Pod: the hop chooses the upstream, may retry on another one (nginx's
``proxy_next_upstream``), and answers 502 / 504 itself when every attempt failed. Its access
log is the only record of those attempts. Two formats are read (docs/trace-format.md, "Hop
access logs"), detected from the file's first lines:

- ``rolltrace``: the local ingress's nginx, one JSON object per line (``log_format ...
  escape=json``, ``ROLLTRACE_LOG_FORMAT``): the log time ``$msec`` and ``$request_time`` with
  millisecond resolution, the client's address and port, and per attempt the upstream address,
  status and connect / header / response times.
- ``ingress-nginx``: ingress-nginx's default ``upstreaminfo`` format (its documentation,
  user-guide/nginx-configuration/log-format): ``$time_local`` with one-second resolution, no
  client port, no connect or header time.

nginx semantics (ngx_http_upstream_module, "Embedded Variables"): with retries, the
``$upstream_*`` variables hold one value per attempt separated by commas, and the attempts of
the server groups of an internal redirect are separated by colons; ``-`` stands for a value an
attempt does not have. ``$msec`` is when the log line was written (the request's end), and
``$request_time`` the time since the first bytes were read from the client, so a request
started at ``msec − request_time``.

Every damaged line is a ``Problem`` naming the file, the line (from 1) and the field; it is left
out and the rest is read. Bytes that are not UTF-8 (nginx copies a hostile request line's bytes
as they came) are replaced, not refused: the request happened.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.errors import TraceError
from analyzer.events import _encodable
from analyzer.readers.loadtools import MAX_DURATION_MS
from analyzer.rundir import Problem
from analyzer.schema import (
    FAILED_ATTEMPT_OUTCOMES,
    HOP_ATTEMPTS,
    HOP_REQUESTS,
    AttemptOutcome,
    check_frame,
)

#: The local ingress's nginx log format, exactly as its nginx.conf declares it.
ROLLTRACE_LOG_FORMAT = (
    'log_format rolltrace escape=json \'{"msec":$msec,"remote_addr":"$remote_addr",'
    '"remote_port":"$remote_port","request":"$request","status":$status,'
    '"request_time":$request_time,"upstream_addr":"$upstream_addr",'
    '"upstream_status":"$upstream_status","upstream_connect_time":"$upstream_connect_time",'
    '"upstream_header_time":"$upstream_header_time",'
    '"upstream_response_time":"$upstream_response_time","connection":$connection,'
    '"connection_requests":$connection_requests,"request_id":"$request_id","host":"$host"}\';'
)

#: ingress-nginx's default log format, as its documentation gives it
#: (kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/log-format/).
INGRESS_NGINX_UPSTREAMINFO = (
    'log_format upstreaminfo \'$remote_addr - $remote_user [$time_local] "$request" '
    '$status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length '
    "$request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr "
    "$upstream_response_length $upstream_response_time $upstream_status $req_id';"
)

#: run.json key under which the importer records each hop log's format and time resolution
#: (``HopLog.times``); ``coarse`` there means its times cannot order it against watch events.
HOP_TIMES_KEY = "hop_times"


class AccessLogFormat(StrEnum):
    """The access-log formats ``read_access_log`` understands."""

    ROLLTRACE = "rolltrace"  # the local ingress's nginx, JSON lines
    INGRESS_NGINX = "ingress-nginx"  # ingress-nginx's default upstreaminfo


#: Resolution of each format's log time, in ms: ``$msec`` has milliseconds, ``$time_local``
#: whole seconds.
TIME_RESOLUTION_MS = {AccessLogFormat.ROLLTRACE: 1.0, AccessLogFormat.INGRESS_NGINX: 1000.0}

# ingress-nginx's documented upstreaminfo format; nginx's default escaping writes `"` and `\`
# inside quoted values as \x22 and \x5C, so a quoted value never holds a bare quote
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_UPSTREAMINFO = re.compile(
    r"^(?P<remote_addr>\S+) - (?P<remote_user>.*?) "
    r"\[(?P<time_local>\d{2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "
    rf"{_QUOTED.replace('(', '(?P<request>', 1)} (?P<status>\d{{3}}) (?P<body_bytes_sent>\d+|-) "
    rf"{_QUOTED.replace('(', '(?P<referer>', 1)} {_QUOTED.replace('(', '(?P<user_agent>', 1)} "
    r"(?P<request_length>\d+|-) (?P<request_time>\S+) "
    r"\[(?P<upstream>[^\]]*)\] \[(?P<alternative_upstream>[^\]]*)\] (?P<tail>.*)$"
)
# the fields after the upstream names; their lists are comma (and colon) separated with spaces
_UPSTREAMINFO_TAIL = (
    "upstream_addr",
    "upstream_response_length",
    "upstream_response_time",
    "upstream_status",
    "req_id",
)
_GROUP_MARK = "\x00"  # a colon between redirect groups, once normalized (nginx escapes NUL)
_REQUEST_LINE = r"^(?P<method>[A-Z]+) (?P<path>\S+)(?: HTTP/[0-9.]+)?$"
_ADDRESS = r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>\d{1,3}(?:\.\d{1,3}){3})):(?P<port>\d{1,5})$"
_EPOCH = pd.Timestamp(0, tz="UTC").as_unit("s")
_LIST_FIELDS = ("addr", "ustatus", "connect", "header", "response")
_LATEST_S = (2**63 - 1) / 1e9 - 2 * MAX_DURATION_MS / 1000  # int64 ns with room for a duration


@dataclass
class HopLog:
    """One hop's access log read into the hop tables, and what could not be read."""

    hop: str
    format: AccessLogFormat
    requests: pd.DataFrame
    attempts: pd.DataFrame
    lines: int  # non-blank lines in the file
    problems: list[Problem] = field(default_factory=list)

    def times(self) -> dict[str, Any]:
        """The run.json entry (under ``HOP_TIMES_KEY``, by hop) saying how precise its times are."""
        resolution = TIME_RESOLUTION_MS[self.format]
        return {
            "format": self.format.value,
            "coarse": is_coarse(resolution),
            "time_resolution_ms": resolution,
            "lines": self.lines,
            "requests": len(self.requests),
            "bad_lines": len(self.problems),
        }


def is_coarse(resolution_ms: float) -> bool:
    """Times coarser than rolltrace's own log (milliseconds) cannot be ordered against watch
    events to the sub-second (ingress-nginx's one-second ``$time_local``)."""
    return resolution_ms > TIME_RESOLUTION_MS[AccessLogFormat.ROLLTRACE]


def read_access_log(path: str | os.PathLike[str], hop: str | None = None) -> HopLog:
    """Read one hop's access log (``hop`` None: the file's stem; the format is detected).
    Raises ``TraceError`` when the file cannot be read or its format is not known."""
    file = Path(path)
    lines = _lines(file)
    chosen = detect_format(file, lines)
    name = hop or file.stem
    parse = _parse_rolltrace if chosen is AccessLogFormat.ROLLTRACE else _parse_upstreaminfo
    raw, problems = parse(file, lines)
    raw = raw.assign(time_resolution_ms=TIME_RESOLUTION_MS[chosen])
    requests, attempts = _tables(file, name, raw, problems)
    problems.sort(key=lambda p: int(p.location.split()[1]))
    return HopLog(name, chosen, requests, attempts, len(lines), problems)


def _lines(file: Path) -> pd.Series:
    """Non-blank lines as text, indexed by their 1-based line number."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise TraceError(str(file), "file", f"cannot read: {exc.strerror or exc}") from None
    text = pd.Series(data.decode("utf-8", "replace").split("\n"), dtype="object")
    text.index = np.arange(1, len(text) + 1)
    text = text.str.rstrip("\r")
    return text[text.str.strip() != ""]


def detect_format(file: Path, lines: pd.Series) -> AccessLogFormat:
    """The format most of the first lines are in: JSON objects (rolltrace's nginx) or
    ingress-nginx's upstreaminfo. A file neither fits is a ``TraceError``."""
    head = lines.iloc[:100]
    json_like = int(head.str.lstrip().str.startswith("{").sum())
    upstreaminfo = int(head.str.match(_UPSTREAMINFO).sum())
    if json_like or upstreaminfo:
        return (
            AccessLogFormat.ROLLTRACE
            if json_like >= upstreaminfo
            else AccessLogFormat.INGRESS_NGINX
        )
    if not len(lines):
        raise TraceError(str(file), "file", "empty: no access-log line to read")
    raise TraceError(
        str(file),
        f"line {int(lines.index[0])}",
        "not an access log rolltrace reads: neither its nginx JSON lines nor ingress-nginx's "
        "default upstreaminfo format",
    )


# ---------------------------------------------------------------------------------------------
# rolltrace's nginx JSON lines


class _BadField(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _BadField(name, f"expected a number, got {value!r:.40}")
    if not low <= value <= high:
        raise _BadField(name, f"{value} is outside {low:g}..{high:g}")
    return float(value)


def _text(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadField(name, f"expected a string, got {type(value).__name__}")
    return value


def _whole(value: Any, name: str, high: int) -> int:
    number = _number(value, name, 0, high)
    if number != int(number):
        raise _BadField(name, f"expected a whole number, got {value!r:.40}")
    return int(number)


def _count(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    return None if value is None else _whole(value, name, 2**53)  # exact in a float


# the keys of ``_json_row``'s rows
_JSON_COLUMNS = [
    "line", "end_s", "request_s", "status", "client_ip", "client_port", "request", "host",
    "request_key", "connection", "connection_requests", *_LIST_FIELDS, "phase_times",
]  # fmt: skip


def _json_row(number: int, text: str) -> dict[str, Any]:
    """One JSON line's values (list fields still as text), or ``_BadField``."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _BadField("", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _BadField("", f"expected a JSON object, got {type(obj).__name__}")
    if "\\ud" in text.lower() and not _encodable(obj):
        raise _BadField("", "unpaired UTF-16 surrogate escape (not encodable text)")
    for name in ("msec", "status", "request_time"):
        if name not in obj:
            raise _BadField(name, "missing")
    return {
        "line": number,
        "end_s": _number(obj["msec"], "msec", 0, _LATEST_S),
        "request_s": _number(obj["request_time"], "request_time", 0, MAX_DURATION_MS / 1000),
        "status": _whole(obj["status"], "status", 999),
        "client_ip": _text(obj, "remote_addr"),
        "client_port": _text(obj, "remote_port"),
        "request": _text(obj, "request"),
        "host": _text(obj, "host"),
        "request_key": _text(obj, "request_id"),
        "connection": _count(obj, "connection"),
        "connection_requests": _count(obj, "connection_requests"),
        "addr": _text(obj, "upstream_addr"),
        "ustatus": _text(obj, "upstream_status"),
        "connect": _text(obj, "upstream_connect_time"),
        "header": _text(obj, "upstream_header_time"),
        "response": _text(obj, "upstream_response_time"),
        "phase_times": "upstream_header_time" in obj,
    }


def _parse_rolltrace(file: Path, lines: pd.Series) -> tuple[pd.DataFrame, list[Problem]]:
    rows, problems = [], []
    for number, text in zip(lines.index.to_numpy(dtype="int64"), lines.to_numpy(), strict=True):
        try:
            rows.append(_json_row(int(number), str(text)))
        except _BadField as bad:
            problems.append(_problem(file, int(number), bad.name or None, bad.message))
    raw = pd.DataFrame(rows, columns=_JSON_COLUMNS)  # the columns even when no line is good
    port = _blank_to_na(raw["client_port"])
    bad_port = (port.notna() & ~port.str.fullmatch(r"\d{1,5}").fillna(True)).to_numpy(dtype=bool)
    problems += _problems(file, raw["line"][bad_port], "remote_port", "not a port number")
    raw = raw[~bad_port]
    end_ms = np.round(raw["end_s"].to_numpy(dtype="float64") * 1000).astype("int64")
    request_ms = np.round(raw["request_s"].to_numpy(dtype="float64") * 1000)
    return raw.assign(
        end_ns=end_ms * 1_000_000,
        request_ms=request_ms,
        client_port=pd.to_numeric(port[~bad_port]).astype("Int64").to_numpy(),
        upstream=pd.array([pd.NA] * len(raw), dtype="string"),
    ), problems


def _blank_to_na(values: pd.Series, blanks: tuple[str, ...] = ("",)) -> pd.Series:
    """Text with the values that stand for "none" (``""``, nginx's ``-``) as NA."""
    text = values.astype("string")
    return text.mask(text.isin(blanks))


# ---------------------------------------------------------------------------------------------
# ingress-nginx's upstreaminfo


def _parse_upstreaminfo(file: Path, lines: pd.Series) -> tuple[pd.DataFrame, list[Problem]]:
    """The documented format, vectorized: one regex for the fixed part, the five upstream
    fields (whose lists hold spaces) split once their separators are normalized."""
    parts = lines.str.extract(_UPSTREAMINFO)
    matched = parts["tail"].notna()
    problems = _problems(
        file, lines.index[~matched], None, "does not match ingress-nginx's upstreaminfo format"
    )
    parts = parts[matched]
    end = pd.to_datetime(
        parts["time_local"], format="%d/%b/%Y:%H:%M:%S %z", errors="coerce", utc=True
    )
    # seconds since the epoch in the parsed time's own unit: a year far out fits no ns
    end_s = ((end.dt.as_unit("s") - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(
        dtype="float64", na_value=np.nan
    )
    request_s = pd.to_numeric(parts["request_time"], errors="coerce")
    tail = _normalize_lists(parts["tail"])
    checks = {
        "time_local": ~pd.Series(end_s, index=parts.index).between(0, _LATEST_S),
        "request_time": ~request_s.between(0, MAX_DURATION_MS / 1000),
        "upstream_addr": tail.str.count(r"\S+") != len(_UPSTREAMINFO_TAIL),
    }
    keep = ~_first_damage(file, checks, problems).to_numpy()
    parts = parts[keep]
    fields = tail[keep].str.split(expand=True)
    fields.columns = list(_UPSTREAMINFO_TAIL)[: len(fields.columns)]
    fields = fields.reindex(columns=list(_UPSTREAMINFO_TAIL))
    raw = pd.DataFrame(
        {
            "line": parts.index.to_numpy(dtype="int64"),
            "end_ns": end_s[keep].astype("int64") * 1_000_000_000,
            "request_ms": np.round(request_s[keep].to_numpy(dtype="float64") * 1000),
            "status": parts["status"].astype("int64").to_numpy(),
            "client_ip": parts["remote_addr"].to_numpy(),
            "client_port": pd.array([pd.NA] * len(parts), dtype="Int64"),
            "request": parts["request"].to_numpy(),
            "host": pd.NA,
            "request_key": _blank_to_na(fields["req_id"], ("", "-")).to_numpy(),
            "connection": pd.NA,
            "connection_requests": pd.NA,
            "upstream": _blank_to_na(parts["upstream"], ("", "-")).to_numpy(),
            "addr": fields["upstream_addr"].to_numpy(),
            "ustatus": fields["upstream_status"].to_numpy(),
            "connect": pd.NA,
            "header": pd.NA,
            "response": fields["upstream_response_time"].to_numpy(),
            "phase_times": False,
        }
    )
    return raw, problems


def _first_damage(file: Path, checks: dict[str, pd.Series], problems: list[Problem]) -> pd.Series:
    """Which lines fail a check (field → failing lines), each named once, by its first."""
    bad = pd.Series(False, index=next(iter(checks.values())).index)
    for name, failed in checks.items():
        failed = failed & ~bad
        problems += _problems(file, failed.index[failed], name, _UPSTREAMINFO_PROBLEM[name])
        bad |= failed
    return bad


_UPSTREAMINFO_PROBLEM = {
    "time_local": "not a Common Log Format time (dd/Mon/yyyy:hh:mm:ss +zzzz)",
    "request_time": f"not a duration in seconds within 0..{MAX_DURATION_MS / 1000:g}",
    "upstream_addr": "expected five upstream fields after the upstream names (address, "
    "response length, response time, status, request id)",
}


# ---------------------------------------------------------------------------------------------
# both formats: the attempts, then the tables


def _normalize_lists(values: pd.Series) -> pd.Series:
    """nginx writes ``a, b : c``: ``, `` between attempts, `` : `` between redirect groups.
    Normalized to ``a,b<GROUP_MARK>c`` so that a list holds no space."""
    text = values.astype("string").fillna("").str.strip()
    text = text.str.replace(", ", ",", regex=False)
    return text.str.replace(" : ", _GROUP_MARK, regex=False)


def _shape(lists: pd.Series) -> pd.Series:
    """A normalized list with each value replaced by ``-``: two lists of one request must have
    the same shape (nginx writes one value per attempt in every ``$upstream_*`` variable)."""
    return lists.str.replace(rf"[^,{_GROUP_MARK}]+", "-", regex=True)


def _explode(values: pd.Series) -> pd.DataFrame:
    """A list field (one string per request, indexed by the request's position) as one row
    per attempt: ``row``, ``group`` (0-based redirect group) and ``value``, in order. Most
    requests have one attempt: only the others are split."""
    several = values.str.contains(f"[,{_GROUP_MARK}]", regex=True).to_numpy(dtype=bool)
    groups = values[several].str.split(_GROUP_MARK, regex=False).explode()
    split = pd.DataFrame({"row": groups.index.to_numpy(), "value": groups.to_numpy(dtype="object")})
    split["group"] = split.groupby("row").cumcount()
    split["value"] = split["value"].str.split(",")
    single = pd.DataFrame(
        {"row": values.index[~several], "value": values[~several].to_numpy(dtype="object")}
    )
    frame = pd.concat([single.assign(group=0), split.explode("value")], ignore_index=True)
    return frame.sort_values("row", kind="stable", ignore_index=True)


def _numbers(items: pd.Series, status: bool) -> tuple[np.ndarray, np.ndarray]:
    """Item values as floats (``-`` → NaN) and which items were neither ``-`` nor a number in
    range: a status is a whole number below 1000, a time seconds within a request's longest."""
    text = items.astype("string")
    values = pd.to_numeric(text.where(text != "-"), errors="coerce")
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        wrong = ~(numbers >= 0) | (numbers > (999 if status else MAX_DURATION_MS / 1000))
        if status:
            wrong |= numbers != np.floor(numbers)
    return numbers, wrong & (text != "-").to_numpy(dtype=bool)


_FIELD_NAMES = {
    "addr": "upstream_addr",
    "ustatus": "upstream_status",
    "connect": "upstream_connect_time",
    "header": "upstream_header_time",
    "response": "upstream_response_time",
}


def _attempt_items(
    file: Path, raw: pd.DataFrame, problems: list[Problem]
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per attempt with its values (``row``, ``group``, ``value`` = the address, then
    one column per other list field), and which requests are damaged: a list of another shape
    than the addresses', an empty attempt, a value that is not a number or ``-``. ``raw`` is
    indexed by position."""
    addr = _normalize_lists(raw["addr"])
    has = ~addr.isin(["", "-"])
    shape = _shape(addr)
    bad = has & addr.str.contains(rf"(?:^|[,{_GROUP_MARK}])(?:$|[,{_GROUP_MARK}])", regex=True)
    problems += _problems(file, raw["line"][bad], "upstream_addr", "an attempt without address")
    lists = {}
    for name in _LIST_FIELDS[1:]:
        text = _normalize_lists(raw[name])
        text = text.where(text != "", shape)  # a field the line does not log: '-' per attempt
        differs = has & ~bad & (_shape(text) != shape)
        problems += _problems(
            file,
            raw["line"][differs],
            _FIELD_NAMES[name],
            "another number of attempts than upstream_addr",
        )
        bad |= differs
        lists[name] = text
    rows = has & ~bad
    items = _explode(addr[rows])
    for name, text in lists.items():
        items[name], invalid = _numbers(_explode(text[rows])["value"], name == "ustatus")
        wrong = np.unique(items["row"].to_numpy()[invalid])
        wrong = wrong[~bad.to_numpy()[wrong]]
        problems += _problems(
            file, raw["line"].to_numpy()[wrong], _FIELD_NAMES[name], "not a number or '-'"
        )
        bad.iloc[wrong] = True
    keep = ~bad.to_numpy()[items["row"].to_numpy(dtype="int64")]
    return items[keep].reset_index(drop=True), bad.to_numpy()


def _outcomes(items: pd.DataFrame, phase_times: np.ndarray, named: np.ndarray) -> np.ndarray:
    """Each attempt's ``AttemptOutcome`` from its status and which times it has (nginx sets the
    connect time once connected and the header time once a response header arrived; a 502 or
    504 without them is nginx's own). ``phase_times``: the line logs those times at all;
    ``named``: the address is a group name (no server could be selected)."""
    status = items["ustatus"].to_numpy(dtype="float64")
    connected = ~np.isnan(items["connect"].to_numpy(dtype="float64"))
    answered = ~np.isnan(items["header"].to_numpy(dtype="float64"))
    failing, timeout = status >= 500, status == 504
    outcome = np.select(
        [
            np.isnan(status),
            named & failing,
            ~failing,
            answered,
            ~phase_times,
            connected & timeout,
            connected,
            timeout,
        ],
        [
            AttemptOutcome.UNKNOWN.value,
            AttemptOutcome.NO_SERVER.value,
            AttemptOutcome.OK.value,
            AttemptOutcome.HTTP_5XX.value,
            AttemptOutcome.FAILED_5XX.value,
            AttemptOutcome.RESPONSE_TIMEOUT.value,
            AttemptOutcome.NO_RESPONSE.value,
            AttemptOutcome.CONNECT_TIMEOUT.value,
        ],
        default=AttemptOutcome.CONNECT_ERROR.value,
    )
    return outcome


def _attempts(hop: str, raw: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The hop_attempts rows of the attempts ``_attempt_items`` kept."""
    rows = items["row"].to_numpy(dtype="int64")
    address = items["value"].astype("string")
    parts = address.str.extract(_ADDRESS)
    ip = parts["v4"].fillna(parts["v6"]).astype("string")
    named = (ip.isna() & ~address.str.startswith("unix:")).to_numpy(dtype=bool)
    phase_times = raw["phase_times"].to_numpy(dtype=bool)[rows]
    ms = {name: items[name].to_numpy(dtype="float64") * 1000 for name in _LIST_FIELDS[2:]}
    attempts = pd.DataFrame(
        {
            "hop": pd.array([hop] * len(items), dtype="string"),
            "line": raw["line"].to_numpy(dtype="int64")[rows],
            "attempt": items.groupby("row").cumcount().to_numpy(dtype="int64") + 1,
            "group": items["group"].to_numpy(dtype="int64"),
            "upstream_addr": address,
            "upstream_ip": ip,
            "upstream_port": pd.to_numeric(parts["port"]).astype("Int64"),
            "status": pd.array(items["ustatus"].to_numpy(), dtype="Float64").astype("Int64"),
            "connect_ms": ms["connect"],
            "header_ms": ms["header"],
            "response_ms": ms["response"],
            "outcome": _outcomes(items, phase_times, named),
        }
    )
    return check_frame(attempts, HOP_ATTEMPTS, "analyzer.readers.accesslog")


def _tables(
    file: Path, hop: str, raw: pd.DataFrame, problems: list[Problem]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The hop_requests and hop_attempts tables of the lines read (damaged ones left out)."""
    raw = raw.reset_index(drop=True)
    items, bad = _attempt_items(file, raw, problems)
    attempts = _attempts(hop, raw, items)
    raw = raw[~bad]
    failed = attempts["outcome"].isin(FAILED_ATTEMPT_OUTCOMES)
    per_line = attempts.groupby("line").size()
    failed_per_line = failed.groupby(attempts["line"]).sum()
    request = raw["request"].astype("string").str.extract(_REQUEST_LINE)
    end_ns = raw["end_ns"].to_numpy(dtype="int64")
    requests = pd.DataFrame(
        {
            "hop": pd.array([hop] * len(raw), dtype="string"),
            "line": raw["line"].to_numpy(dtype="int64"),
            "request_key": _blank_to_na(raw["request_key"]),
            "start_ns": end_ns
            - (raw["request_ms"].to_numpy(dtype="float64") * 1e6).astype("int64"),
            "end_ns": end_ns,
            "time_resolution_ms": raw["time_resolution_ms"].to_numpy(dtype="float64"),
            "client_ip": _blank_to_na(raw["client_ip"]),
            "client_port": raw["client_port"].astype("Int64"),
            "method": request["method"].astype("string"),
            "path": request["path"].astype("string"),
            "host": _blank_to_na(raw["host"]),
            "status": raw["status"].to_numpy(dtype="int64"),
            "request_ms": raw["request_ms"].to_numpy(dtype="float64"),
            "connection": pd.array(raw["connection"].to_numpy(), dtype="Int64"),
            "connection_requests": pd.array(raw["connection_requests"].to_numpy(), dtype="Int64"),
            "upstream": raw["upstream"].astype("string"),
            "attempts": raw["line"].map(per_line).fillna(0).to_numpy(dtype="int64"),
            "failed_attempts": raw["line"].map(failed_per_line).fillna(0).to_numpy(dtype="int64"),
        }
    )
    requests = requests.reset_index(drop=True)
    return check_frame(requests, HOP_REQUESTS, "analyzer.readers.accesslog"), attempts


def _problem(file: Path, line: int, name: str | None, message: str) -> Problem:
    return Problem(str(file), f"line {line}", name, message)


def _problems(file: Path, lines: Any, name: str | None, message: str) -> list[Problem]:
    """One problem per line number in ``lines`` (any iterable of them)."""
    return [_problem(file, int(line), name, message) for line in lines]
