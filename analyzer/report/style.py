"""The one visual mapping of the report: every figure takes a cause's colour, hatch and marker
from here, so a cause looks the same in the timeline, the Pod lanes and the bar charts.

Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies);
each cause also has its own hatch and marker so that a black-and-white print still tells them
apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.schema import Cause


@dataclass(frozen=True)
class Look:
    colour: str
    hatch: str
    marker: str


CAUSE_LOOK: dict[str, Look] = {
    Cause.NOT_READY.value: Look("#E69F00", "//", "o"),  # orange
    Cause.ENDPOINT_LAG.value: Look("#D55E00", "\\\\", "s"),  # vermillion
    Cause.INFLIGHT_CUT.value: Look("#CC79A7", "xx", "^"),  # reddish purple
    Cause.CONTAINER_RESTART.value: Look("#882255", "||", "h"),  # wine
    Cause.KILLED_AT_GRACE.value: Look("#AA4499", "x.", "p"),  # purple
    Cause.KEEPALIVE_RACE.value: Look("#56B4E9", "..", "v"),  # sky blue
    # the L7 hops' causes: darker shades of their L4 counterparts, with their own hatch and mark
    Cause.PROXY_ENDPOINT_LAG.value: Look("#8C3A00", "/.", "d"),  # dark vermillion
    Cause.BACKEND_KEEPALIVE_RACE.value: Look("#1F6F99", "+.", "<"),  # dark sky blue
    Cause.LB_LAG.value: Look("#0072B2", "++", "D"),  # blue
    Cause.NO_ENDPOINTS.value: Look("#000000", "--", "X"),  # black
    Cause.OVERLOAD.value: Look("#F0E442", "oo", "P"),  # yellow
    Cause.UNEXPLAINED.value: Look("#999999", "**", "*"),  # grey
}

OK_COLOUR = "#009E73"  # bluish green: successful requests
P50_COLOUR = "#0072B2"
P99_COLOUR = "#D55E00"

#: Pod lane segments and endpoint membership: light fills with distinct hatches, so they sit
#: behind the failure marks and survive grey-scale printing.
LANE_LOOK: dict[str, Look] = {
    "pending": Look("#FFFFFF", "..", ""),
    "running": Look("#F0E442", "..", ""),
    "ready": Look("#009E73", "", ""),
    "terminating": Look("#E69F00", "//", ""),
    "stopped": Look("#BBBBBB", "xx", ""),
}
ENDPOINT_LOOK: dict[str, Look] = {
    "not-ready": Look("#E0E0E0", "||", ""),
    "ready": Look("#56B4E9", "", ""),
    "serving-terminating": Look("#CC79A7", "//", ""),
    "terminating": Look("#999999", "xx", ""),
}


def cause_look(cause: str) -> Look:
    """The look of a cause; a cause this version does not know is drawn as unexplained."""
    return CAUSE_LOOK.get(cause, CAUSE_LOOK[Cause.UNEXPLAINED.value])


def cause_order(causes: object) -> list[str]:
    """Causes in the enum's order (stable stacking and legends), unknown ones last."""
    present = [str(c) for c in causes]  # type: ignore[attr-defined]
    known = [c.value for c in Cause if c.value in present]
    return known + sorted(set(present) - set(known))
