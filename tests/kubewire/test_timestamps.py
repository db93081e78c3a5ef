"""RFC 3339 as Kubernetes writes metav1.Time and metav1.MicroTime, and one parser for both."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from kubewire import format_micro_time, format_time, parse_time

MOMENT = 1_700_000_123.456789  # 2023-11-14T22:15:23.456789Z


def test_time_is_whole_seconds_utc_with_a_literal_z() -> None:
    assert format_time(MOMENT) == "2023-11-14T22:15:23Z"
    assert format_time(1_700_000_123.999_999) == "2023-11-14T22:15:23Z"  # truncated, not rounded


def test_micro_time_has_six_fraction_digits() -> None:
    assert format_micro_time(MOMENT) == "2023-11-14T22:15:23.456789Z"
    assert format_micro_time(0) == "1970-01-01T00:00:00.000000Z"


def test_now_when_no_moment_is_given() -> None:
    before = time.time()
    stamp, micro = format_time(), format_micro_time()
    after = time.time()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert int(before) <= (parse_time(stamp) or 0) <= after
    assert before - 1e-6 <= (parse_time(micro) or 0) <= after + 1e-6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:15:23Z", 1_700_000_123.0),
        ("2023-11-14T22:15:23.456789Z", 1_700_000_123.456789),
        ("2023-11-14T22:15:23.456789123Z", 1_700_000_123.456789),  # RFC3339Nano: cut to µs
        ("2023-11-14T23:15:23+01:00", 1_700_000_123.0),
    ],
)
def test_parse_accepts_every_form_go_writes(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


def test_round_trips_and_unset_values() -> None:
    assert parse_time(format_time(MOMENT)) == 1_700_000_123.0
    assert parse_time(format_micro_time(MOMENT)) == pytest.approx(MOMENT, abs=1e-6)
    assert parse_time(None) is None
    assert parse_time("") is None


def test_importing_the_kit_loads_the_standard_library_only() -> None:
    probe = (
        "import sys; before = set(sys.modules); import kubewire; "
        "print(*(m for m in set(sys.modules) - before "
        "if m.split('.')[0] not in sys.stdlib_module_names))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(loaded) == [
        "kubewire",
        "kubewire.deployment",
        "kubewire.endpointslice",
        "kubewire.timestamps",
    ]
