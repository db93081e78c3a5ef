"""rolltrace's analyzer: turns a run directory into findings (pure: files in, files out).

Public API (docs/api.md): ``read_pcap``, ``iter_pcap``, ``tcp_connections``,
``tcp_connections_chunked``, ``load_run``, ``Run`` and the enums
in ``analyzer.schema``. Everything else is internal and may change.

The public names load on first use (PEP 562 module ``__getattr__``): importing the package, or a
light submodule such as ``analyzer.schema``, must not pull in the pipeline and its pandas,
pyarrow and scapy readers, so the CLI starts fast and ``analyzer.schema`` stays a cheap import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyzer.connections import tcp_connections, tcp_connections_chunked
    from analyzer.readers.pcap import iter_pcap, read_pcap
    from analyzer.run import Run, load_run
    from analyzer.schema import SCHEMA_VERSION, Cause, ConnectionOutcome, ErrorKind

# public name → the submodule that defines it
_PUBLIC: dict[str, str] = {
    "SCHEMA_VERSION": "analyzer.schema",
    "Cause": "analyzer.schema",
    "ConnectionOutcome": "analyzer.schema",
    "ErrorKind": "analyzer.schema",
    "Run": "analyzer.run",
    "load_run": "analyzer.run",
    "iter_pcap": "analyzer.readers.pcap",
    "read_pcap": "analyzer.readers.pcap",
    "tcp_connections": "analyzer.connections",
    "tcp_connections_chunked": "analyzer.connections",
}

__all__ = [
    "SCHEMA_VERSION",
    "Cause",
    "ConnectionOutcome",
    "ErrorKind",
    "Run",
    "iter_pcap",
    "load_run",
    "read_pcap",
    "tcp_connections",
    "tcp_connections_chunked",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule when the name is first read; cache it on the package."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'analyzer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
