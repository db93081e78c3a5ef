"""Fuzz read_pcap: 10,000 mutated captures, damaged every way a file gets damaged.

Bit flips, truncations, inserted and deleted junk, and length fields overwritten with hostile
values, applied to small valid captures of every container flavour. The reader may only ever
return a valid packets table or raise ``TraceError`` naming a byte offset: never another
exception, never a hang.
"""

from __future__ import annotations

import re
import struct
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer import read_pcap
from analyzer.errors import TraceError
from analyzer.pcap_writer import write_pcap, write_pcapng
from analyzer.schema import PACKETS, check_frame
from tests.analyzer.test_pcap import traffic

EXAMPLES = 10_000
BYTE_OFFSET = re.compile(r"byte \d+")


@cache
def base_captures() -> tuple[bytes, ...]:
    """Small valid captures: both byte orders, µs/ns, pcapng with two interfaces, IPv4/IPv6."""
    frame = traffic(4).assign(payload_len=[0, 3, 1, 0])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base"
        captures = []
        for linktype, big_endian, nanosecond in [
            ("ethernet", False, False),
            ("sll", True, True),
            ("sll2", False, True),
            ("null", True, False),
            ("raw", False, True),
        ]:
            write_pcap(path, frame, linktype=linktype, big_endian=big_endian, nanosecond=nanosecond)
            captures.append(path.read_bytes())
        for big_endian, tsresol in [(False, 9), (True, 0x80 | 20)]:
            two_interfaces = frame.assign(interface=[0, 1, 0, 1])
            write_pcapng(
                path,
                two_interfaces,
                linktype=["ethernet", "sll2"],
                big_endian=big_endian,
                tsresol=tsresol,
            )
            captures.append(path.read_bytes())
    return tuple(captures)


@dataclass(frozen=True)
class Mutation:
    kind: str
    position: int
    value: int
    junk: bytes

    def apply(self, data: bytearray) -> bytearray:
        if not data:
            return bytearray(self.junk)
        pos = self.position % len(data)
        if self.kind == "flip":
            data[pos] ^= 1 << (self.value % 8)
        elif self.kind == "truncate":
            del data[pos:]
        elif self.kind == "insert":
            data[pos:pos] = self.junk
        elif self.kind == "delete":
            del data[pos : pos + 1 + self.value % 64]
        elif self.kind in ("u32le", "u32be"):
            order = "<" if self.kind == "u32le" else ">"
            data[pos : pos + 4] = struct.pack(order + "I", self.value)
        return data


HOSTILE_LENGTHS = st.sampled_from([0, 1, 3, 4, 8, 11, 12, 16, 20, 28, 32, 0x7FFFFFFF, 0xFFFFFFFF])
mutations = st.builds(
    Mutation,
    kind=st.sampled_from(["flip", "truncate", "insert", "delete", "u32le", "u32be"]),
    position=st.integers(0, 2_000),
    value=st.one_of(HOSTILE_LENGTHS, st.integers(0, 2**32 - 1)),
    junk=st.binary(min_size=1, max_size=24),
)


def _check_outcome(path: Path, keep: bool) -> None:
    try:
        packets = read_pcap(path, on_damage="keep" if keep else "raise")
    except TraceError as error:
        assert not keep, "on_damage='keep' must not raise for damage it located"
        assert BYTE_OFFSET.search(str(error)), str(error)
        assert isinstance(error.kept, pd.DataFrame)
        check_frame(error.kept, PACKETS, "fuzz")
        return
    check_frame(packets, PACKETS, "fuzz")
    damage = packets.attrs.get("damage")
    if damage is not None:
        assert keep
        assert BYTE_OFFSET.search(damage), damage


@pytest.mark.slow
@pytest.mark.timeout(600)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    base=st.integers(0, 6),
    changes=st.lists(mutations, min_size=1, max_size=4),
    keep=st.booleans(),
)
def test_mutated_captures_never_crash(
    tmp_path: Path, base: int, changes: list[Mutation], keep: bool
) -> None:
    data = bytearray(base_captures()[base])
    for change in changes:
        data = change.apply(data)
    path = tmp_path / "fuzz.pcap"
    path.write_bytes(bytes(data))
    _check_outcome(path, keep)


def test_unmutated_bases_are_valid(tmp_path: Path) -> None:
    """The fuzz corpus starts from captures the reader fully accepts (else it fuzzes nothing)."""
    for index, data in enumerate(base_captures()):
        path = tmp_path / f"base{index}.pcap"
        path.write_bytes(data)
        packets = read_pcap(path)
        assert len(packets) == 4
        assert "damage" not in packets.attrs
