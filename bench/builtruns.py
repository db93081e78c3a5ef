"""The built runs the analysis benches measure, and the check that a run is the size it names.

Both benches build the ``mixed`` recipe (four causes at once) with 100 replicas on 10 nodes, so
that Pods, EndpointSlices and their watch events are numerous, and cache the run under /tmp.

Keep-alive users send one request at a time, and a third of the ``mixed`` recipe's requests go
to /slow (0.8 s): a user asked for more than about 4 requests/s falls behind its schedule and
the run holds fewer requests than named. Each user is therefore asked for 2 requests/s, and the
number of users follows from the rate. The trace builder gives every open connection its own
client port from the Linux ephemeral range, so the user count is not capped by ports.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq

CACHE = Path("/tmp/rolltrace-bench")
# a keep-alive user's mean latency in the mixed recipe is ~0.25 s: at 2 requests/s it keeps up
KEEPALIVE_RATE_PER_USER = 2.0
SIZE_TOLERANCE = 0.01  # arrival times are rounded per user: the count lands within 1 %


def build_mixed(path: Path, requests: int, *, duration_s: float, keepalive_share: float) -> None:
    """Build ``requests`` requests over ``duration_s`` into ``path`` (replacing it)."""
    from analyzer.tracebuilder.build import build_run

    shutil.rmtree(path, ignore_errors=True)
    started = time.monotonic()
    rate = requests / duration_s
    build_run(
        path,
        "mixed",
        seed=7,
        rate=rate,
        duration_s=duration_s,
        replicas=100,
        max_surge=10,
        nodes=10,
        keepalive_users=max(1, round(rate * keepalive_share / KEEPALIVE_RATE_PER_USER)),
        keepalive_share=keepalive_share,
    )
    print(f"built {path} in {time.monotonic() - started:.1f} s", flush=True)


def requests_problem(run: Path, requests: int) -> str | None:
    """Why the run does not hold the ``requests`` it names (±1 %), or None."""
    built = pq.ParquetFile(run / "requests.parquet").metadata.num_rows
    if abs(built - requests) > SIZE_TOLERANCE * requests:
        return f"the run holds {built:,} requests, not {requests:,} (±{SIZE_TOLERANCE:.0%})"
    return None
