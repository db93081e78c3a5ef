"""Fuzz the hop access-log reader: mutated logs must read into valid hop tables, every damaged
line named as a located problem (file, line), or fail with a ``TraceError`` that says where;
never another exception, never a silent overflow.

Inputs are logs rendered from both documented formats (``accesslog_render``: retries, redirect
groups, ``-`` values), mutated at the byte level (a torn or corrupted write) and, for the JSON
format, at the value level (a field of the wrong type or range). Derandomized: CI sees the same
inputs every time (marked slow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer.errors import TraceError
from analyzer.readers.accesslog import read_access_log
from analyzer.schema import HOP_ATTEMPTS, HOP_REQUESTS, check_frame
from tests.analyzer.accesslog_render import rolltrace_line, upstreaminfo_line
from tests.analyzer.test_fuzz_jsonl_parquet import _fuzz
from tests.analyzer.test_fuzz_loadtools import _apply, _byte_edit, _odd_values

EXAMPLES = 150  # per test (three): a read of a small log costs ~0.1 s of pandas set-up

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
]

_RETRIED = {
    "upstream_addr": "10.244.1.5:8080, 10.244.2.6:8080 : [fd00::1]:80",
    "upstream_status": "502, 504 : 200",
    "upstream_response_time": "0.001, 1.000 : 0.002",
}
SEEDS = {
    "rolltrace": [
        rolltrace_line(),
        rolltrace_line(
            **_RETRIED,
            upstream_connect_time="-, 0.000 : 0.001",
            upstream_header_time="-, - : 0.002",
        ),
        rolltrace_line(status=404, upstream_addr=None, upstream_status=None, request='GET /"\\'),
    ],
    "ingress-nginx": [
        upstreaminfo_line(),
        upstreaminfo_line(**_RETRIED, upstream_response_length="0, 0 : 12"),
        upstreaminfo_line(upstream_addr=None, upstream_status=None, http_user_agent='a "b" [c]'),
    ],
}
_JSON_FIELDS = list(json.loads(SEEDS["rolltrace"][0]))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-accesslog")


def _check(path: Path) -> None:
    """The contract: valid tables plus located problems, or one located TraceError."""
    try:
        log = read_access_log(path)
    except TraceError as exc:
        assert exc.path == str(path) and exc.location, exc
        return
    check_frame(log.requests, HOP_REQUESTS, "fuzz")
    check_frame(log.attempts, HOP_ATTEMPTS, "fuzz")
    assert (log.requests["start_ns"] <= log.requests["end_ns"]).all()
    assert set(log.attempts["line"]) <= set(log.requests["line"])
    problem_lines = {int(p.location.split()[1]) for p in log.problems}
    assert not problem_lines & set(log.requests["line"])
    for problem in log.problems:
        assert problem.file == str(path) and problem.location.startswith("line "), problem


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@_fuzz(EXAMPLES)
@given(edits=st.lists(_byte_edit, min_size=1, max_size=4))
def test_byte_damage_is_located(scratch: Path, fmt: str, edits: list[Any]) -> None:
    data = _apply(("\n".join(SEEDS[fmt] * 3) + "\n").encode(), edits)
    path = scratch / f"{fmt}.log"
    path.write_bytes(data)
    _check(path)


@_fuzz(EXAMPLES)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 100), _odd_values), min_size=1, max_size=4
    )
)
def test_wrong_values_are_located(scratch: Path, changes: list[Any]) -> None:
    lines = [json.loads(line) for line in SEEDS["rolltrace"]]
    for line, which, new in changes:
        lines[line % len(lines)][_JSON_FIELDS[which % len(_JSON_FIELDS)]] = new
    path = scratch / "values.log"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    _check(path)
