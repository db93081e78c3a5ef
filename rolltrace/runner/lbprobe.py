"""``python -m rolltrace.runner.lbprobe URL``: wait until a Service answers through its LB.

The runner starts this behind the client's exec prefix (the local cluster's client namespace,
or nothing on a real cluster), so it asks from where the load will come from: an address alone
does not mean the LB has healthy targets yet (IP-mode LBs register Pods seconds later), and
failures before the rollout are not its disruption. It runs in that namespace as its own
process, so it imports the standard library only.

Bounded in count and time (network safety): at most ``MAX_ATTEMPTS`` requests, none after
``DEADLINE_S``, each with a ``REQUEST_TIMEOUT_S`` timeout. Exit 0 once ``CONSECUTIVE_OK``
requests in a row succeeded, 1 otherwise.
"""

from __future__ import annotations

import sys
import time
import urllib.request

#: answers in a row that count as "served": one lucky answer may come from a target the LB is
#: still registering and about to mark unhealthy
CONSECUTIVE_OK = 5
#: how long the LB may take to register healthy targets before the run gives up
DEADLINE_S = 60.0
#: pause between requests: the run waits on this probe before any load starts, so each pause
#: is dead time in every run (5 answers in a row took 0.8 s at 0.2 s); at 20 requests/s it
#: stays a trickle, and what counts is the answers in a row, not how long they took
INTERVAL_S = 0.05
#: the most requests one probe sends (one per pause over the deadline): a bound even if time
#: stalls
MAX_ATTEMPTS = round(DEADLINE_S / INTERVAL_S)
#: one request's timeout: a healthy local answer takes milliseconds
REQUEST_TIMEOUT_S = 1.0


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            response.read()
    except Exception:  # refused, reset, timeout, HTTP error: all mean "not served yet"
        return False
    return True


def wait_until_served(url: str, deadline_s: float = DEADLINE_S) -> bool:
    """True once ``CONSECUTIVE_OK`` requests in a row to ``url`` succeeded within
    ``deadline_s`` and ``MAX_ATTEMPTS`` requests; False otherwise."""
    deadline = time.monotonic() + deadline_s
    in_a_row = 0
    for _ in range(MAX_ATTEMPTS):
        if time.monotonic() > deadline:
            return False
        in_a_row = in_a_row + 1 if _answers(url) else 0
        if in_a_row >= CONSECUTIVE_OK:
            return True
        time.sleep(INTERVAL_S)
    return False


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m rolltrace.runner.lbprobe URL", file=sys.stderr)
        return 2
    return 0 if wait_until_served(argv[0]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
