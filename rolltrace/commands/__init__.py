"""One module per CLI command, each exposing ``register(app)`` (listed in ``rolltrace.cli``)."""

from pathlib import Path


def not_a_directory(option: str, path: Path) -> str | None:
    """Why ``path``, named by ``option`` as a directory to write into, cannot be one (it, or a
    parent, exists as a file): checked before any work, so the user gets this line, not a
    NotADirectoryError traceback after the run. None when it can be made."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or existing.is_dir():
        return None
    return f"{option} {path}: {existing} exists and is not a directory"
