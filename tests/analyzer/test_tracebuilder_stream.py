"""The trace builder writes its captures window by window: the files must not depend on it.

A window of the whole run is the builder as it was before it streamed (one sort of every
segment), so "any window size gives the same bytes" is "streaming changed nothing". Tiny
windows put most connections, and many instants, across window boundaries.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analyzer.pcap_writer import open_pcap, open_pcapng, write_pcap, write_pcapng
from analyzer.tracebuilder import build_run
from analyzer.tracebuilder.model import Cluster, build_cluster
from analyzer.tracebuilder.packets import capture_chunks, capture_frames, capture_names
from analyzer.tracebuilder.recipes import get_recipe
from analyzer.tracebuilder.traffic import Traffic, generate

WHOLE_RUN = 10**12  # segments per window: far more than any run here, so one window

CASES: list[tuple[str, dict[str, Any]]] = [
    ("mixed", {"duplicate_client_packets": True}),
    ("mixed-local", {"pcapng": True, "linktype": "sll2", "nanosecond": False}),
    ("mixed-restarts", {"ipv6": True, "snaplen": 96}),
    ("keepalive-race", {}),
    ("lb-lag", {}),
]


def run_files(path: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()
    }


@pytest.mark.parametrize(("recipe", "options"), CASES, ids=[name for name, _ in CASES])
def test_window_size_changes_no_byte_of_the_run(
    tmp_path: Path, recipe: str, options: dict[str, Any]
) -> None:
    whole = build_run(tmp_path / "whole", recipe, seed=5, window_segments=WHOLE_RUN, **options)
    expected = run_files(whole.path)
    for window in (97, 5000):
        built = build_run(
            tmp_path / f"w{window}", recipe, seed=5, window_segments=window, **options
        )
        assert run_files(built.path) == expected, window
        pd.testing.assert_frame_equal(built.causes, whole.causes)


def model(recipe: str, seed: int, **overrides: Any) -> tuple[Cluster, Traffic]:
    rng = np.random.default_rng(seed)
    cluster = build_cluster(get_recipe(recipe).with_overrides(**overrides), rng)
    return cluster, generate(cluster, rng)


def test_windows_hand_out_every_capture_in_time_order() -> None:
    cluster, traffic = model("mixed", 2, rate=150.0, duration_s=30.0)
    pieces: dict[str, list[pd.DataFrame]] = {}
    for name, frame in capture_chunks(cluster, traffic, 0, window_segments=200):
        pieces.setdefault(name, []).append(frame)
    assert list(pieces) == capture_names(cluster)
    assert max(len(frames) for frames in pieces.values()) > 10  # the run took many windows
    for name, frames in pieces.items():
        ts = pd.concat(frames)["ts_ns"].to_numpy()
        assert (np.diff(ts) >= 0).all(), name
    client = pd.concat(pieces["client"])
    syns = client[(client["flags"] & 0x12) == 0x02]  # SYN without ACK: one per connection
    assert syns["sport"].nunique() <= len(traffic.conns) <= len(syns)


@pytest.mark.parametrize("pcapng", [False, True])
def test_a_file_written_in_pieces_is_the_file_written_at_once(tmp_path: Path, pcapng: bool) -> None:
    packets = capture_frames(*model("mixed", 1, duration_s=10.0), 0)["client"]
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    cuts = [0, 1, 1, 70, len(packets) // 2, len(packets)]
    if pcapng:
        write_pcapng(whole, packets, linktype="sll", tsresol=6)
        opened = open_pcapng(pieces, linktype="sll", tsresol=6)
    else:
        write_pcap(whole, packets, nanosecond=False)
        opened = open_pcap(pieces, nanosecond=False)
    with opened as writer:
        for a, b in itertools.pairwise(cuts):
            writer.write(packets.iloc[a:b])
    assert writer.written == len(packets)
    assert pieces.read_bytes() == whole.read_bytes()
