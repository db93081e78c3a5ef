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

#: answers in a row that count as "served". Until its first health checks pass, an LB fails
#: open and spreads new connections over every registered target, including a node whose proxy
#: has not programmed the Service yet and refuses. Each probe is a new connection, so with one
#: such target among k, a false "served" has the chance (1 - 1/k)^n: with 5 it was 13 % for
#: k = 3, and a run that started its load there lost its first second of requests to refusals
#: (node-lag-long in CI); with 20 it is 0.03 % for k = 3 and 2.6 % for k = 6, for 1 s of waiting
CONSECUTIVE_OK = 20
#: how long the LB may take to register healthy targets before the run gives up
DEADLINE_S = 60.0
#: pause between requests: the run waits on this probe before any load starts, so each pause
#: is dead time in every run; at 20 requests/s it stays a trickle, and what counts is the
#: answers in a row, not how long they took
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
