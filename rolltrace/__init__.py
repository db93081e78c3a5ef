"""rolltrace: measure request disruption during Kubernetes rolling updates."""

__version__ = "0.1.0"


def version_line() -> str:
    """What `rolltrace version` prints: this release and the trace-format version it reads and
    writes. Shared by the typer command and the console script's fast path."""
    from analyzer.schema import SCHEMA_VERSION  # on use: `import rolltrace` stays free

    return f"rolltrace {__version__} (trace format {SCHEMA_VERSION})"
