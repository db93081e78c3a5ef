"""The cloud LB's forwarding as a pure function: each external ``IP:port`` is DNATed to one of
its active targets chosen by ``numgen random`` (per new connection, like a cloud L4 LB's flow
hashing); conntrack then keeps a connection on its target. The client's address is preserved
(no masquerade), as passthrough LBs and NLB instance targets do, so ``Local`` policy sees it.
A frontend without targets drops, which a client sees as a connect timeout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Frontend:
    service: str  # "ns/name"
    ip: str
    protocol: str  # tcp | udp
    port: int
    targets: tuple[tuple[str, int], ...]  # (ip, port), in a stable order


def render_lb_body(frontends: Sequence[Frontend]) -> str:
    dispatch = []
    for fe in frontends:
        match = f"ip daddr {fe.ip} {fe.protocol} dport {fe.port}"
        if not fe.targets:
            dispatch.append(f"{match} drop")
        elif len(fe.targets) == 1:
            ip, port = fe.targets[0]
            dispatch.append(f"{match} dnat to {ip}:{port}")
        else:
            vmap = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(fe.targets))
            dispatch.append(
                f"{match} dnat ip addr . port to numgen random mod {len(fe.targets)} map {{ {vmap} }}"
            )
    lines = [
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        *(f"\t\t{rule}" for rule in dispatch),
        "\t}",
    ]
    return "\n".join(lines) + "\n"
