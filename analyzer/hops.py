"""Masked retries at L7 hops: requests that succeeded only because the hop retried.

A hop that retries (nginx's ``proxy_next_upstream``, an L7 load balancer's retries) turns a
failed attempt into a success for its client: the request did not fail, so it has no cause and
is not in the failures table. It still says something went wrong upstream (a Pod refused, a
pooled connection was closed under the hop) and it cost the client the time the failed attempts
took. This module counts such requests per hop and measures that cost, from the hop tables the
access-log reader makes (``analyzer.readers.accesslog``). Pure: frames in, frames out.
"""

from __future__ import annotations

from typing import TypedDict, overload

import numpy as np
import pandas as pd

from analyzer import metrics
from analyzer.schema import FAILED_ATTEMPT_OUTCOMES, MASKED_RETRIES, check_frame

#: nginx's status for a request whose client closed the connection before the answer: below
#: 500, but the client saw no response, so the request did not succeed.
CLIENT_CLOSED_STATUS = 499
_KEY = ["hop", "line"]


class HopRetries(TypedDict):
    """summary.json ``masked_retries[hop]`` (docs/api.md)."""

    requests: int  # requests the hop logged
    retried: int  # with more than one upstream attempt
    failed: int  # did not succeed for its client: a 5xx, or 499 (the client hung up)
    masked: int  # succeeded only after failed attempts
    failed_attempts: int  # the failed attempts of the masked requests
    by_upstream: dict[str, int]  # those attempts per upstream address
    by_status: dict[str, int]  # per status ('-': none)
    by_outcome: dict[str, int]  # per AttemptOutcome
    cost_ms: metrics.TimingStats  # latency cost per masked request
    cost_total_ms: float
    time_resolution_ms: float  # of the hop's log times


@overload
def succeeded(status: int) -> bool: ...
@overload
def succeeded(status: pd.Series) -> pd.Series: ...
def succeeded(status: int | pd.Series) -> bool | pd.Series:
    """The hop's client got a response that is not a server error (and did not hang up): of
    one status, or of a column of them."""
    return (status < 500) & (status != CLIENT_CLOSED_STATUS)


def _failed_attempts_of(requests: pd.DataFrame, attempts: pd.DataFrame) -> pd.DataFrame:
    """The failed attempts of the requests in ``requests``, in order."""
    failed = attempts[attempts["outcome"].isin(FAILED_ATTEMPT_OUTCOMES)]
    keys = pd.MultiIndex.from_frame(requests[_KEY])
    return failed[pd.MultiIndex.from_frame(failed[_KEY]).isin(keys)]


def masked_retries(requests: pd.DataFrame, attempts: pd.DataFrame) -> pd.DataFrame:
    """One row per masked request (``analyzer.schema.MASKED_RETRIES``): it succeeded, and at
    least one of its upstream attempts failed. Its cost is the failed attempts' upstream times
    added up: what the client waited for attempts that gave it nothing."""
    masked = requests[succeeded(requests["status"]) & (requests["failed_attempts"] > 0)]
    failed = _failed_attempts_of(masked, attempts)
    labels = (
        failed["upstream_addr"].astype(str)
        + " "
        + failed["status"].astype("string").fillna("-").astype(str)
        + " "
        + failed["outcome"].astype(str)
    )
    grouped = labels.groupby([failed["hop"], failed["line"]])
    cost = failed.groupby(_KEY)["response_ms"].sum(min_count=1)
    index = pd.MultiIndex.from_frame(masked[_KEY])
    out = masked[
        [
            "hop",
            "line",
            "request_key",
            "start_ns",
            "end_ns",
            "status",
            "client_ip",
            "client_port",
            "attempts",
            "failed_attempts",
        ]
    ].reset_index(drop=True)
    out["failed_upstreams"] = pd.array(
        grouped.agg(", ".join).reindex(index).to_numpy(), dtype="string"
    )
    out["cost_ms"] = cost.reindex(index).to_numpy(dtype="float64")
    return check_frame(out, MASKED_RETRIES, "analyzer.hops.masked_retries")


def _counts(values: pd.Series) -> dict[str, int]:
    counts = values.astype("string").fillna("-").value_counts()
    return {str(k): int(v) for k, v in counts.sort_index().items()}


def retries_summary(
    requests: pd.DataFrame, attempts: pd.DataFrame, masked: pd.DataFrame
) -> dict[str, HopRetries]:
    """Per hop: how many requests it logged, retried, failed and masked; the masked requests'
    failed attempts by upstream, status and outcome; their latency cost."""
    out: dict[str, HopRetries] = {}
    failed_of_masked = _failed_attempts_of(masked, attempts)  # once, for every hop
    for hop, logged in requests.groupby("hop", sort=True):
        mine = masked[masked["hop"] == hop]
        failed = failed_of_masked[failed_of_masked["hop"] == hop]
        resolution = logged["time_resolution_ms"].to_numpy(dtype="float64")
        out[str(hop)] = {
            "requests": len(logged),
            "retried": int((logged["attempts"] > 1).sum()),
            "failed": int((~succeeded(logged["status"])).sum()),
            "masked": len(mine),
            "failed_attempts": len(failed),
            "by_upstream": _counts(failed["upstream_addr"]),
            "by_status": _counts(failed["status"]),
            "by_outcome": _counts(failed["outcome"]),
            "cost_ms": metrics.timing_stats(mine["cost_ms"]),
            "cost_total_ms": round(float(np.nansum(mine["cost_ms"].to_numpy())), 3),
            "time_resolution_ms": float(resolution.max()),
        }
    return out
