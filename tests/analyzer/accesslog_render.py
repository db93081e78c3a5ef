"""Access-log lines rendered from the documented ``log_format`` strings, as nginx writes them.

The fixtures of the access-log tests are not typed by hand: each line is the format string of
``analyzer.readers.accesslog`` (rolltrace's nginx JSON format, ingress-nginx's documented
``upstreaminfo``) with its ``$variables`` replaced, escaped the way nginx's
``ngx_http_log_module`` escapes them (``escape=json``: ``"`` ``\\`` and control characters as
JSON escapes, other bytes as they are, a variable without value as nothing; the default
escaping: ``"``, ``\\``, control characters and bytes above 0x7E as ``\\xXX``, a variable
without value as ``-``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from analyzer.readers.accesslog import INGRESS_NGINX_UPSTREAMINFO, ROLLTRACE_LOG_FORMAT

_VARIABLE = re.compile(r"\$([a-z_]+)")


def _template(log_format: str) -> str:
    """The pattern of a ``log_format NAME [escape=...] '...';`` directive."""
    return log_format[log_format.index("'") + 1 : log_format.rindex("'")]


def _json_escape(value: str) -> str:
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def _default_escape(value: str) -> str:
    data = value.encode("utf-8")
    return "".join(f"\\x{b:02X}" if b in b'"\\' or b < 0x20 or b > 0x7E else chr(b) for b in data)


def render(log_format: str, values: Mapping[str, object], json_escape: bool) -> str:
    """One log line: every ``$variable`` of ``log_format`` replaced by ``values[variable]``
    (absent or None: a variable nginx did not find)."""

    def substitute(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if value is None:
            return "" if json_escape else "-"
        text = str(value)
        return _json_escape(text) if json_escape else _default_escape(text)

    return _VARIABLE.sub(substitute, _template(log_format))


def rolltrace_line(**values: object) -> str:
    """A line of the local ingress's nginx log, defaults filled in for a one-attempt 200."""
    defaults: dict[str, object] = {
        "msec": "1764842400.250",
        "remote_addr": "198.18.0.10",
        "remote_port": "40000",
        "request": "GET / HTTP/1.1",
        "status": 200,
        "request_time": "0.004",
        "upstream_addr": "10.244.1.5:8080",
        "upstream_status": "200",
        "upstream_connect_time": "0.001",
        "upstream_header_time": "0.003",
        "upstream_response_time": "0.003",
        "connection": 7,
        "connection_requests": 1,
        "request_id": "5f0c3a6e2d1b4c7a9e8f0a1b2c3d4e5f",
        "host": "demo.example",
    }
    return render(ROLLTRACE_LOG_FORMAT, {**defaults, **values}, json_escape=True)


def upstreaminfo_line(**values: object) -> str:
    """A line of ingress-nginx's default format, defaults filled in for a one-attempt 200."""
    defaults: dict[str, object] = {
        "remote_addr": "198.18.0.10",
        "time_local": "04/Dec/2025:10:00:00 +0000",
        "request": "GET / HTTP/1.1",
        "status": 200,
        "body_bytes_sent": 12,
        "http_user_agent": "k6/0.50",
        "request_length": 78,
        "request_time": "0.004",
        "proxy_upstream_name": "upstream-default-demo-80",
        "upstream_addr": "10.244.1.5:8080",
        "upstream_response_length": 12,
        "upstream_response_time": "0.003",
        "upstream_status": 200,
        "req_id": "5f0c3a6e2d1b4c7a9e8f0a1b2c3d4e5f",
    }
    return render(INGRESS_NGINX_UPSTREAMINFO, {**defaults, **values}, json_escape=False)


def write_log(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    return path
