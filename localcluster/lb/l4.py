"""The LB emulator's L4 mode (``lb.mode: l4``, the default): the frontends become one nft table
of DNAT rules (``rules.render_lb_body``) swapped in one transaction, and a deregistered
target's connections are cut by deleting their conntrack entries (the next packet of such a
flow is no longer translated and meets a reset)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from localcluster.dataplane import ip, nft
from localcluster.lb.rules import Frontend, render_lb_body


class NftForwarder:
    def __init__(self, table: str, apply: nft.Applier) -> None:
        self._table = table
        self._apply = apply
        self._last_text: str | None = None

    async def forward(self, frontends: Sequence[Frontend]) -> None:
        text = nft.replace_table_text("ip", self._table, render_lb_body(frontends))
        if text != self._last_text:
            await self._apply(text)
            self._last_text = text

    async def cut(self, address: str, ports: Iterable[int]) -> None:
        for port in ports:
            argv = ["conntrack", "-D", "-p", "tcp", "--reply-src", address]
            argv += ["--reply-port-src", str(port)]
            await ip.run_async(argv, check=False)

    async def close(self) -> None:
        await self._apply(nft.delete_table_text("ip", self._table))
