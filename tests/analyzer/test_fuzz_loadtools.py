"""Fuzz the load-tool request-log readers (k6 ``--out json``, vegeta ``encode --to json``):
mutated files must either read into a valid requests table, with every damaged line named as a
located problem (file, line, field), or fail with a ``TraceError`` that says where; never
another exception.

Inputs start from the fixtures (tests/fixtures/loadtools) and are mutated two ways: byte-level
(flips, cuts, inserts, truncation, repeats: a torn write) and structure-level (a JSON value
replaced by one of the wrong type or range: a buggy writer or a newer tool version).
Derandomized: CI sees the same 10,000 inputs every time (marked slow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.errors import TraceError
from analyzer.readers.loadtools import RequestFormat, read_request_log
from analyzer.readers.requests import check_requests
from analyzer.schema import REQUESTS, check_frame
from tests.analyzer.test_fuzz_jsonl_parquet import _fuzz

FIXTURES = Path(__file__).parent.parent / "fixtures" / "loadtools"
EXAMPLES = 2500  # per test; four tests: 10,000 mutated inputs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("error::RuntimeWarning"),  # e.g. a silent overflowing cast
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every example (a new one per example would cost more than a read)."""
    return tmp_path_factory.mktemp("fuzz")


_byte_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 14), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 14), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 14), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 14), st.just(0)),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 14), st.integers(1, 200)),
)
_odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "0", "200", "999", "1900-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                     "2026-12-04T10:00:00.1234567891234Z", "http://[::1", "http://h:99999/"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)  # fmt: skip


def _apply(data: bytes, edits: list[tuple[str, int, Any]]) -> bytes:
    for kind, at, arg in edits:
        at %= len(data) + 1
        if kind == "flip" and data:
            at %= len(data)
            data = data[:at] + bytes([data[at] ^ arg]) + data[at + 1 :]
        elif kind == "cut":
            data = data[:at] + data[at + arg :]
        elif kind == "insert":
            data = data[:at] + arg + data[at:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "repeat":
            data = data[:at] + data[at : at + arg] * 3 + data[at:]
    return data


def _set_path(value: Any, path: list[str], new: Any) -> None:
    """Replace ``value[path...]`` (dict keys; the last one may be new)."""
    for key in path[:-1]:
        if not isinstance(value, dict) or not isinstance(value.get(key), dict):
            return
        value = value[key]
    if isinstance(value, dict):
        value[path[-1]] = new


def _check(path: Path, fmt: RequestFormat) -> None:
    """The contract: a valid table plus located problems, or one located TraceError."""
    try:
        log = read_request_log(path, fmt)
    except TraceError as exc:
        assert exc.path == str(path) and exc.location, exc
        return
    check_frame(log.frame, REQUESTS, "fuzz")
    errors = [p for p in check_requests(log.frame) if p.severity == "error"]
    assert not errors, errors[:3]
    for problem in log.problems:
        assert problem.file == str(path) and problem.location.startswith("line "), problem


@pytest.mark.parametrize("fmt", [RequestFormat.K6, RequestFormat.VEGETA])
@_fuzz(EXAMPLES)
@given(edits=st.lists(_byte_edit, min_size=1, max_size=4))
def test_byte_damage_is_located(scratch: Path, fmt: RequestFormat, edits: list[Any]) -> None:
    data = _apply((FIXTURES / f"{fmt.value}.json").read_bytes(), edits)
    path = scratch / f"{fmt.value}.json"
    path.write_bytes(data)
    _check(path, fmt)


_K6_PATHS = [["data"], ["data", "time"], ["data", "value"], ["data", "tags"], ["metric"],
             ["type"], ["data", "tags", "status"], ["data", "tags", "url"],
             ["data", "tags", "error_code"], ["data", "tags", "error"]]  # fmt: skip
_VEGETA_PATHS = [["timestamp"], ["latency"], ["code"], ["error"], ["method"], ["url"]]


@pytest.mark.parametrize("fmt", [RequestFormat.K6, RequestFormat.VEGETA])
@_fuzz(EXAMPLES)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 100), _odd_values), min_size=1, max_size=4
    )
)
def test_wrong_values_are_located(scratch: Path, fmt: RequestFormat, changes: list[Any]) -> None:
    lines = [json.loads(x) for x in (FIXTURES / f"{fmt.value}.json").read_text().splitlines()]
    paths = _K6_PATHS if fmt is RequestFormat.K6 else _VEGETA_PATHS
    for line, which, new in changes:
        _set_path(lines[line % len(lines)], paths[which % len(paths)], new)
    path = scratch / f"{fmt.value}.json"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    _check(path, fmt)
