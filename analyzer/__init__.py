"""rolltrace's analyzer: turns a run directory into findings (pure: files in, files out).

Public API (docs/api.md): ``read_pcap``, ``tcp_connections``, ``load_run``, ``Run`` and the enums
in ``analyzer.schema``. Everything else is internal and may change.
"""

from analyzer.connections import tcp_connections
from analyzer.pcap import read_pcap
from analyzer.run import Run, load_run
from analyzer.schema import SCHEMA_VERSION, Cause, ConnectionOutcome, ErrorKind

__all__ = [
    "SCHEMA_VERSION",
    "Cause",
    "ConnectionOutcome",
    "ErrorKind",
    "Run",
    "load_run",
    "read_pcap",
    "tcp_connections",
]
