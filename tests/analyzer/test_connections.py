"""packets → connections on hand-made packet frames: every outcome, port reuse, SYN retries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import tcp_connections
from analyzer.connections import rows_where
from analyzer.schema import CONNECTIONS, PACKETS, ConnectionOutcome, check_frame

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
CLIENT = ("10.0.0.5", 40000)
SERVER = ("10.96.0.10", 80)
MS = 1_000_000


@dataclass(frozen=True)
class Seg:
    """One segment: milliseconds since 0, direction ('c' client→server, 's' back), flags."""

    t_ms: int
    way: str
    flags: int
    payload: int = 0
    seq: int = 1000


def frame(
    segs: list[Seg], client: tuple[str, int] = CLIENT, capture: str = "client"
) -> pd.DataFrame:
    rows = []
    for s in segs:
        a, b = (client, SERVER) if s.way == "c" else (SERVER, client)
        rows.append(
            {
                "ts_ns": s.t_ms * MS,
                "capture": capture,
                "src": a[0],
                "dst": b[0],
                "sport": a[1],
                "dport": b[1],
                "flags": s.flags,
                "seq": s.seq,
                "ack": 0,
                "payload_len": s.payload,
                "ip_version": 4,
            }
        )
    df = pd.DataFrame(rows).astype({"capture": "string", "src": "string", "dst": "string"})
    return check_frame(df, PACKETS, "test")


def handshake(t: int, seq: int = 1000) -> list[Seg]:
    return [Seg(t, "c", SYN, seq=seq), Seg(t + 1, "s", SYN | ACK), Seg(t + 2, "c", ACK, seq=seq)]


def exchange(t: int) -> list[Seg]:
    return [Seg(t, "c", PSH | ACK, 120), Seg(t + 5, "s", PSH | ACK, 300)]


def one(segs: list[Seg]) -> pd.Series:
    conns = tcp_connections(frame(segs))
    assert len(conns) == 1
    return conns.iloc[0]


@pytest.mark.parametrize(
    ("segs", "outcome"),
    [
        ([Seg(0, "c", SYN), Seg(1, "s", RST | ACK)], "refused"),
        ([Seg(0, "c", SYN), Seg(1000, "c", SYN), Seg(3000, "c", SYN)], "syn-timeout"),
        ([*handshake(0), *exchange(10), Seg(20, "s", RST | ACK)], "reset-by-server"),
        ([*handshake(0), Seg(10, "c", PSH | ACK, 50), Seg(11, "c", RST)], "reset-by-client"),
        (
            [*handshake(0), *exchange(10), Seg(20, "s", FIN | ACK), Seg(21, "c", FIN | ACK)],
            "closed-by-server",
        ),
        (
            [*handshake(0), *exchange(10), Seg(20, "c", FIN | ACK), Seg(21, "s", FIN | ACK)],
            "closed-by-client",
        ),
        ([*handshake(0), *exchange(10)], "open-at-end"),
        # keep-alive race: server FIN, then the client's request is answered by RST
        (
            [
                *handshake(0),
                *exchange(10),
                Seg(50, "s", FIN | ACK),
                Seg(51, "c", PSH | ACK, 120),
                Seg(52, "s", RST),
            ],
            "reset-by-server",
        ),
    ],
)
def test_outcomes(segs: list[Seg], outcome: str) -> None:
    row = one(segs)
    assert row["outcome"] == ConnectionOutcome(outcome)
    assert (row["client_ip"], row["client_port"]) == CLIENT
    assert (row["server_ip"], row["server_port"]) == SERVER


def test_timings_bytes_and_sides() -> None:
    segs = [*handshake(0), *exchange(10), *exchange(30)]
    segs += [Seg(40, "s", FIN | ACK), Seg(41, "c", RST)]
    row = one(segs)
    assert row["syn_ns"] == 0 and row["synack_ns"] == 1 * MS and row["established_ns"] == 2 * MS
    assert row["first_c2s_data_ns"] == 10 * MS and row["last_c2s_data_ns"] == 30 * MS
    assert row["first_s2c_data_ns"] == 15 * MS and row["last_s2c_data_ns"] == 35 * MS
    assert row["bytes_c2s"] == 240 and row["bytes_s2c"] == 600
    assert row["server_fin_ns"] == 40 * MS and pd.isna(row["client_fin_ns"])
    assert row["fin_first"] == "server" and row["rst_first"] == "client"
    assert row["client_rst_ns"] == 41 * MS and row["end_ns"] == 41 * MS
    assert row["outcome"] == "reset-by-client"


def test_retransmitted_syn_is_counted_not_split() -> None:
    segs = [Seg(0, "c", SYN), Seg(1000, "c", SYN), *handshake(3000)[1:], *exchange(3010)]
    row = one(segs)
    assert row["syn_count"] == 2
    assert row["syn_ns"] == 0 and row["synack_ns"] == 3001 * MS


def test_port_reuse_yields_separate_connections() -> None:
    first = [*handshake(0, seq=1), *exchange(10), Seg(20, "c", FIN | ACK), Seg(21, "s", FIN | ACK)]
    refused = [Seg(100, "c", SYN, seq=2), Seg(101, "s", RST | ACK)]
    timed_out = [Seg(200, "c", SYN, seq=3), Seg(1200, "c", SYN, seq=3)]
    # same ISN as the timed-out one but long after it: a new connection all the same
    late = [*handshake(400_000, seq=3), *exchange(400_010)]
    conns = tcp_connections(frame(first + refused + timed_out + late))
    assert list(conns["outcome"]) == ["closed-by-client", "refused", "syn-timeout", "open-at-end"]
    assert list(conns["syn_ns"] // MS) == [0, 100, 200, 400_000]
    assert list(conns["syn_count"]) == [1, 1, 2, 1]
    assert list(conns["conn_key"]) == [0, 1, 2, 3]


def test_new_isn_without_close_starts_a_new_connection() -> None:
    conns = tcp_connections(frame([Seg(0, "c", SYN, seq=5), Seg(500, "c", SYN, seq=9)]))
    assert list(conns["syn_count"]) == [1, 1]


def test_midstream_connection_uses_server_ports_then_higher_port() -> None:
    segs = [Seg(0, "s", PSH | ACK, 10), Seg(1, "c", ACK), Seg(2, "s", FIN | ACK)]
    row = tcp_connections(frame(segs)).iloc[0]
    assert row["syn_count"] == 0 and row["syn_ns"] == 0
    assert (row["client_ip"], row["client_port"]) == CLIENT  # the higher port
    assert row["outcome"] == "closed-by-server"
    low_client = ("10.0.0.5", 53)
    guessed = tcp_connections(frame(segs, client=low_client)).iloc[0]
    assert (guessed["client_ip"], guessed["client_port"]) == SERVER  # wrong without a hint
    told = tcp_connections(frame(segs, client=low_client), server_ports={80}).iloc[0]
    assert (told["client_ip"], told["client_port"]) == low_client


def test_synack_without_syn_names_the_client() -> None:
    row = one([Seg(0, "s", SYN | ACK), Seg(1, "c", ACK), *exchange(5)])
    assert (row["client_ip"], row["client_port"]) == CLIENT
    assert row["syn_count"] == 0 and row["established_ns"] == 1 * MS


def test_captures_are_kept_apart_and_empty_input() -> None:
    segs = [*handshake(0), *exchange(10)]
    both = pd.concat([frame(segs, capture="client"), frame(segs, capture="node-1")])
    conns = tcp_connections(both)
    assert list(conns["capture"]) == ["client", "node-1"]
    empty = tcp_connections(PACKETS.empty())
    assert empty.empty and list(empty.columns) == CONNECTIONS.names


def test_rows_where_slices_one_capture_and_filters_the_rest_as_a_mask_would() -> None:
    """A capture's rows are one run of the table (it is ordered by capture first): they come
    back as a slice sharing the table's columns; rows kept here and there come back as the
    mask would give them."""
    segs = [*handshake(0), *exchange(10)]
    captures = ("client", "node-1", "node-2")
    packets = pd.concat(
        [frame(segs, client=("10.0.0.5", 40000 + i), capture=c) for c in captures for i in range(3)]
    )
    conns = tcp_connections(packets)
    one_capture = conns["capture"] == "node-1"
    sliced = rows_where(conns, one_capture)
    pd.testing.assert_frame_equal(sliced, conns[one_capture])
    assert np.shares_memory(sliced["syn_ns"].to_numpy(), conns["syn_ns"].to_numpy())
    scattered = conns["client_port"] == 40001
    pd.testing.assert_frame_equal(rows_where(conns, scattered), conns[scattered])
    assert rows_where(conns, conns["capture"] == "node-9").empty


END_KINDS = ["refused", "syn-timeout", "closed-by-client", "closed-by-server", "reset-by-server"]


def conversation(t: int, end: str, seq: int) -> list[Seg]:
    if end == "refused":
        return [Seg(t, "c", SYN, seq=seq), Seg(t + 1, "s", RST | ACK)]
    if end == "syn-timeout":
        return [Seg(t, "c", SYN, seq=seq), Seg(t + 1000, "c", SYN, seq=seq)]
    body = [*handshake(t, seq), *exchange(t + 10)]
    if end == "closed-by-client":
        return [*body, Seg(t + 20, "c", FIN | ACK), Seg(t + 21, "s", FIN | ACK)]
    if end == "closed-by-server":
        return [*body, Seg(t + 20, "s", FIN | ACK), Seg(t + 21, "c", FIN | ACK)]
    return [*body, Seg(t + 20, "s", RST)]


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.integers(40000, 40005),
        st.lists(
            st.tuples(st.sampled_from(END_KINDS), st.integers(0, 5000)), min_size=1, max_size=6
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_random_sequences_round_trip(plan: dict[int, list[tuple[str, int]]], v6: bool) -> None:
    """Well-formed connections on a few ports at once; each port reused after its previous
    connection ended, so every conversation must come back as one row with its outcome."""
    client_ip = "fd00::5" if v6 else "10.0.0.5"
    frames, expected = [], []
    for port, conversations in plan.items():
        t = port % 7  # ports interleave in time
        for i, (end, pause) in enumerate(conversations):
            t += 2000 + pause
            frames.append(frame(conversation(t, end, seq=i), client=(client_ip, port)))
            expected.append((t * MS, port, end))
    packets = pd.concat(frames, ignore_index=True).sort_values("ts_ns", kind="stable")
    if v6:
        packets["ip_version"] = 6
        packets["dst"] = packets["dst"].replace(SERVER[0], "fd00::10")
        packets["src"] = packets["src"].replace(SERVER[0], "fd00::10")
    conns = tcp_connections(packets)
    got = list(zip(conns["syn_ns"], conns["client_port"], conns["outcome"], strict=True))
    assert sorted(got) == sorted(expected)
    assert set(conns["client_ip"]) == {client_ip}


def test_many_addresses_still_key_flows_exactly() -> None:
    """Past ~32k distinct addresses the endpoint pair no longer fits one int64 key."""
    n = 40_000
    clients = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n)]
    packets = pd.DataFrame(
        {
            "ts_ns": range(n),
            "capture": "client",
            "src": clients,
            "dst": SERVER[0],
            "sport": 40000,
            "dport": SERVER[1],
            "flags": SYN,
            "seq": 1,
            "ack": 0,
            "payload_len": 0,
            "ip_version": 4,
        }
    ).astype({"capture": "string", "src": "string", "dst": "string"})
    conns = tcp_connections(packets)
    assert len(conns) == n and set(conns["client_ip"]) == set(clients)
    assert (conns["outcome"] == "syn-timeout").all()
