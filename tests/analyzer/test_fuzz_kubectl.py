"""Fuzz the kubectl watch stream reader: mutated streams must read into valid, time-ordered
events.jsonl records plus ``TraceError`` problems naming the file and line — never another
exception, never a hang.

Seeds are the recorded streams of tests/fixtures/kubectl (compact and pretty-printed forms),
mutated with the byte- and structure-level mutations of the JSONL fuzz tests (a torn write, a
bad disk; a value of the wrong shape anywhere in an object, a re-ordered duplicate). One stream
of each input is mutated, the others stay intact, so the cross-stream ordering and bounding
always has something to work on. Derandomized: CI sees the same 10,000 inputs every time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.events import event_problem
from analyzer.readers.kubectl import read_kubectl_streams
from tests.analyzer.test_fuzz_jsonl_parquet import (
    _byte_edit,
    _fuzz,
    _mutate_bytes,
    _mutated_lines,
)
from tests.conftest import IN_CI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # 10,000 inputs: ~1 min idle

FIXTURE = Path(__file__).parents[1] / "fixtures" / "kubectl" / "rollout-restart"
SEED_LINES = {"pods.jsonl": 8, "endpointslices.jsonl": 3, "deployments.jsonl": 3}
PRETTY_OBJECTS = 3
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The first lines of each compact stream (the rollout's start) and of the pretty-printed
    Pods: small, so that 10,000 inputs take about a minute."""
    compact = {
        name: (FIXTURE / name).read_bytes().splitlines(keepends=True)[:count]
        for name, count in SEED_LINES.items()
    }
    return {
        "dir": tmp_path_factory.mktemp("fuzz"),
        "bytes": {name: b"".join(lines) for name, lines in compact.items()}
        | {"pods-pretty.json": _first_pretty_objects(FIXTURE / "pods-pretty.json")},
        "lines": {name: [json.loads(line) for line in lines] for name, lines in compact.items()},
    }


def _first_pretty_objects(path: Path) -> bytes:
    text = path.read_bytes()
    ends = [i for i in range(len(text)) if text.startswith(b"\n}\n", i)]
    return text[: ends[PRETTY_OBJECTS - 1] + 3]


def _check(directory: Path, name: str, data: bytes, seeds: dict[str, Any]) -> None:
    """Write the mutated stream beside the intact others and read them all: every problem is
    located in one of the inputs, every record is a valid events.jsonl line, in time order,
    inside its own bounds."""
    paths = []
    for other, content in seeds["bytes"].items():
        path = directory / other
        path.write_bytes(data if other == name else content)
        paths.append(path)
    COUNTS[name] = COUNTS.get(name, 0) + 1
    result = read_kubectl_streams(paths, namespace="default")
    for problem in result.problems:
        assert problem.path in {str(p) for p in paths}
        assert problem.location == "file" or problem.location.startswith("line "), problem
    previous = -1
    for record in result.records:
        assert event_problem(record) is None, record
        assert record["recv_ns"] >= previous
        previous = record["recv_ns"]
        low, high = record["earliest_ns"], record["latest_ns"]
        assert low is None or low <= record["recv_ns"]
        assert high is None or record["recv_ns"] <= high


@_fuzz(3000)
@given(
    name=st.sampled_from([*SEED_LINES, "pods-pretty.json"]),
    edits=st.lists(_byte_edit, min_size=1, max_size=4),
)
def test_kubectl_bytes(seeds: dict[str, Any], name: str, edits: list[tuple[str, int, Any]]) -> None:
    _check(seeds["dir"], name, _mutate_bytes(seeds["bytes"][name], edits), seeds)


@_fuzz(7000)
@given(name=st.sampled_from(list(SEED_LINES)), data=st.data())
def test_kubectl_structure(seeds: dict[str, Any], name: str, data: st.DataObject) -> None:
    mutated = data.draw(_mutated_lines(seeds["lines"][name]))
    _check(seeds["dir"], name, mutated, seeds)


def test_fuzz_volume_reached() -> None:
    """Runs last in this module (pytest keeps file order): ≥ 10,000 inputs were read."""
    if not COUNTS:
        if IN_CI:
            pytest.fail("the fuzz tests above did not run in this session: nothing was counted")
        pytest.skip("run together with the fuzz tests above to count inputs")
    assert sum(COUNTS.values()) >= 10_000, COUNTS
