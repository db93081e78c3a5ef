"""RFC 3339 timestamps as the Kubernetes API writes them.

``metav1.Time`` serializes in whole seconds (``2006-01-02T15:04:05Z``); ``metav1.MicroTime``
(Events' ``eventTime``, Leases' ``renewTime``) with six fractional digits
(``2006-01-02T15:04:05.000000Z``). Both are UTC with a literal ``Z``. Readers must accept either
form and any offset, since Go's RFC 3339 parser (kubectl, client-go) does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def _moment(epoch_s: float | None) -> datetime:
    return datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)


def format_time(epoch_s: float | None = None) -> str:
    """``metav1.Time`` of ``epoch_s`` (now when None): truncated to the second, as upstream's
    marshaller does, so a reader never sees more precision than a real API server gives."""
    return _moment(epoch_s).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(epoch_s: float | None = None) -> str:
    """``metav1.MicroTime`` of ``epoch_s`` (now when None): microsecond resolution."""
    return _moment(epoch_s).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp with or without a fraction; None for a
    missing or empty one (an unset optional ``Time`` is ``null`` or absent on the wire)."""
    if not text:
        return None
    return datetime.fromisoformat(text).timestamp()  # 3.11+: "Z", any fraction length
