"""The one adapter around nftables: a ruleset text goes in through ``nft -f -`` inside a
namespace, which nft applies as a single atomic transaction (all of it or none of it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from localcluster.dataplane import ip

Applier = Callable[[str], Awaitable[None]]
"""Applies one ruleset text; the proxier and the LB take one, so tests can record instead."""


def apply_argv(netns: str | None) -> list[str]:
    base = ["nft", "-f", "-"]
    return ip.netns_exec(netns, *base) if netns else base


def replace_table_text(family: str, table: str, body: str) -> str:
    """One transaction that swaps a table: create-if-absent, delete, define anew. Readers (the
    packet path) see the old table or the new one, never a half-built one."""
    return f"add table {family} {table}\ndelete table {family} {table}\ntable {family} {table} {{\n{body}}}\n"


def delete_table_text(family: str, table: str) -> str:
    return f"add table {family} {table}\ndelete table {family} {table}\n"


def apply(netns: str | None, text: str) -> None:
    ip.run(apply_argv(netns), input_text=text)


async def apply_async(netns: str | None, text: str) -> None:
    await ip.run_async(apply_argv(netns), input_text=text)


def netns_applier(netns: str | None) -> Applier:
    async def apply(text: str) -> None:
        await apply_async(netns, text)

    return apply
