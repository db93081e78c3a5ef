"""What a run lost, and the status that says so.

A run that reached every phase is still not ``complete`` when part of what it should have
recorded or sent is missing. It is ``degraded`` (analyzable; counts are lower bounds) when a
capture or a Locust worker died, a capture hit a full disk, or the load fell short of the rate
the scenario asked for; ``partial`` (stopped early) and ``failed`` outrank it.
docs/troubleshooting.md lists every reason and what to do.

The disk estimate warns before a run that its directory's filesystem may fill up; it is an
upper bound from the scenario (rate × the load's longest duration × the bytes one request leaves
in the traces), because running out midway costs the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from analyzer.schema import RunStatus
from rolltrace.runner.capture import SNAPLEN, CaptureResult
from rolltrace.runner.faults import Fault

if TYPE_CHECKING:  # pandas is imported where a run's requests are read
    import pandas as pd

#: Below this share of the asked rate the load did not do what the scenario says (issue 13's
#: threshold): users that spawn within the first second and a random phase per user cost a
#: short run a few percent, never five.
DELIVERED_MIN_FRACTION = 0.95
#: Packets one request puts on the wire at most: handshake (3), request, response and their
#: ACKs (4), and the close (4); a keep-alive request has fewer.
PACKETS_PER_REQUEST = 11
#: Copies of each packet captured: at the client and on up to two nodes (the one the LB
#: chose and the Pod's, with externalTrafficPolicy: Cluster).
CAPTURED_COPIES = 3
#: pcap record header plus the snap length: the most one captured packet takes on disk.
BYTES_PER_PACKET = 16 + SNAPLEN
#: One requests.parquet row with its share of the recorder's files and of events.jsonl
#: (measured rows compress to well under this; a bound, not an average).
BYTES_PER_REQUEST = 400


#: The generator's lag is read over the last tenth of the sending time: what it has accumulated
#: by the end, without one late request deciding.
TAIL_SHARE = 0.1


@dataclass(frozen=True)
class LoadDelivery:
    """The load the run asked for and the load it sent (run.json ``load``).

    ``delivered_rate`` counts every request sent, from the first start to the last. It also
    falls when the *server* holds keep-alive users up (a user waits for its response before
    the next request), which is the disruption being measured, not a weak load generator. So
    the run is ``short`` only when the generator itself fell behind: ``generator_lag_s`` is
    how late, at the end, requests started that waited for nothing but their slot (every
    new-connection request; a keep-alive request whose slot came after its previous response).
    A generator that managed a fraction f of the rate is (1 − f) / f × T late after T seconds.
    """

    asked_rate: float
    delivered_rate: float
    requests: int
    seconds: float
    generator_lag_s: float | None = None

    @property
    def short(self) -> bool:
        if self.generator_lag_s is None or self.delivered_rate >= (
            DELIVERED_MIN_FRACTION * self.asked_rate
        ):
            return False
        kept_up = self.seconds / (self.seconds + max(self.generator_lag_s, 0.0))
        return bool(kept_up < DELIVERED_MIN_FRACTION)

    def reason(self, workers: int) -> str:
        share = 100 * self.delivered_rate / self.asked_rate
        return (
            f"the load delivered {self.delivered_rate:.0f} req/s of the {self.asked_rate:g} "
            f"asked ({share:.0f} %, below {100 * DELIVERED_MIN_FRACTION:.0f} %) and fell "
            f"{self.generator_lag_s or 0:.1f} s behind its schedule: the load generator could "
            f"not keep up; raise `load.workers` (now {workers}) or lower `load.rate`"
        )

    def as_json(self) -> dict[str, float | int | None]:
        lag = self.generator_lag_s
        return {
            "asked_rate": self.asked_rate,
            "delivered_rate": round(self.delivered_rate, 1),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "generator_lag_s": round(lag, 3) if lag is not None else None,
        }


_DELIVERY_COLUMNS = ["user_kind", "scheduled_ns", "start_ns", "end_ns", "conn_id", "conn_seq"]


def measure_delivery(requests: Path, asked_rate: float) -> LoadDelivery | None:
    """Requests sent per second, from the first send to the last (the users' spawn is not
    counted against the generator), and the generator's lag; None without two requests."""
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(requests, columns=_DELIVERY_COLUMNS).to_pandas()
    except (OSError, ValueError):  # no file, or an unreadable one: said elsewhere
        return None
    if len(frame) < 2:
        return None
    first, last = int(frame["start_ns"].min()), int(frame["start_ns"].max())
    seconds = (last - first) / 1e9
    if seconds <= 0:
        return None
    lag = generator_lag_s(frame, last, seconds)
    return LoadDelivery(asked_rate, (len(frame) - 1) / seconds, len(frame), seconds, lag)


def generator_lag_s(frame: pd.DataFrame, last_ns: int, seconds: float) -> float | None:
    """Median lateness over the last ``TAIL_SHARE`` of the run of the requests that waited
    for nothing but their slot (see ``LoadDelivery``); None when there are none."""
    ordered = frame.sort_values(["conn_id", "conn_seq"])
    previous_end = ordered.groupby("conn_id")["end_ns"].shift()
    waited_for_slot = ordered["scheduled_ns"] >= previous_end  # NA (first on its conn): False
    unblocked = (ordered["user_kind"] == "new-connection") | waited_for_slot.fillna(False)
    tail = ordered["start_ns"] >= last_ns - TAIL_SHARE * seconds * 1e9
    lateness = (ordered["start_ns"] - ordered["scheduled_ns"])[unblocked & tail]
    return float(lateness.median()) / 1e9 if len(lateness) else None


def settle_status(
    status: RunStatus,
    faults: list[Fault],
    captures: list[CaptureResult],
    lost_parts: list[str],
    delivery: LoadDelivery | None,
) -> RunStatus:
    """``degraded`` for a run that reached every phase with something lost; other statuses
    stand (a stopped or failed run says more than a degraded one)."""
    if status is not RunStatus.COMPLETE:
        return status
    lost = (
        any(not fault.fatal for fault in faults)
        or any(result.error for result in captures)
        or bool(lost_parts)
        or (delivery is not None and delivery.short)
    )
    return RunStatus.DEGRADED if lost else status


def disk_need_bytes(rate: float, seconds: float, captures: bool) -> int:
    """An upper bound of what a run writes: request rows, and packets when it captures."""
    per_request = BYTES_PER_REQUEST
    if captures:
        per_request += PACKETS_PER_REQUEST * CAPTURED_COPIES * BYTES_PER_PACKET
    return int(rate * seconds * per_request)


def disk_warning(run_dir: Path, need_bytes: int) -> str:
    """A warning when the filesystem of ``run_dir`` has less free space than the run may
    need ("" otherwise)."""
    probe = run_dir if run_dir.exists() else run_dir.parent
    try:
        stats = os.statvfs(probe)
    except OSError:
        return ""
    free = stats.f_bavail * stats.f_frsize
    if free >= need_bytes:
        return ""
    return (
        f"only {free / 1e6:.0f} MB free under {probe}, and this run may write up to "
        f"{need_bytes / 1e6:.0f} MB: a capture that fills the disk stops and the run ends "
        "degraded; free space, lower `load.rate` or shorten the run"
    )
