from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.errors import TraceError
from analyzer.readers.requests import load_requests, read_requests, write_requests
from analyzer.schema import REQUESTS, check_frame
from tests.analyzer.handmade import T0, sample_requests


def test_round_trip_keeps_values_and_dtypes(tmp_path: Path) -> None:
    frame = sample_requests()
    path = tmp_path / "requests.parquet"
    write_requests(path, frame)
    back = read_requests(path)
    check_frame(back, REQUESTS, "test")
    assert [str(back[c.name].dtype) for c in REQUESTS.columns] == [
        str(frame[c.name].dtype) for c in REQUESTS.columns
    ]
    pd.testing.assert_frame_equal(back[REQUESTS.names], frame[REQUESTS.names])


def test_foreign_writer_dtypes_are_coerced(tmp_path: Path) -> None:
    """A file written without pandas metadata: nullable ints as float with NaN, strings as
    plain Arrow strings, an extra column."""
    frame = sample_requests()
    plain = {c: frame[c].astype(object).where(frame[c].notna(), None) for c in frame.columns}
    table = pa.table({**{c: pa.array(list(v)) for c, v in plain.items()}, "extra": [1] * 6})
    # nullable ints as float64 the way a numpy-only writer stores them (small values stay exact)
    table = table.set_column(
        table.schema.get_field_index("status_code"),
        "status_code",
        pa.array([200.0] * 5 + [None], type=pa.float64()),
    )
    path = tmp_path / "requests.parquet"
    pq.write_table(table, path)
    back = read_requests(path)
    check_frame(back, REQUESTS, "test")
    assert str(back["status_code"].dtype) == "Int64"
    assert list(back["status_code"].iloc[:5]) == [200] * 5 and pd.isna(back["status_code"].iloc[5])
    assert list(back["extra"]) == [1] * 6


def _write_raw(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "requests.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize(
    ("column", "value", "field", "message"),
    [
        ("error_kind", "exploded", "error_kind", "not one of ok"),
        ("end_ns", T0, "end_ns", "end before start"),
        ("conn_seq", 0, "conn_seq", "1-based"),
        ("remote_port", 70000, "remote_port", "TCP port"),
        ("request_id", 1, "request_id", "duplicate"),
    ],
)
def test_bad_row_is_named_by_row_and_field(
    tmp_path: Path, column: str, value: object, field: str, message: str
) -> None:
    frame = sample_requests()
    frame.loc[4, column] = value
    path = _write_raw(tmp_path, frame)
    with pytest.raises(TraceError) as info:
        read_requests(path)
    assert (info.value.location, info.value.field) == ("row 4", field)
    assert message in info.value.message and str(path) in str(info.value)


def test_every_bad_row_is_listed_in_row_order(tmp_path: Path) -> None:
    frame = sample_requests()
    frame.loc[5, "error_kind"] = "nope"
    frame.loc[2, "first_byte_ns"] = frame.loc[2, "end_ns"] + 1
    _, problems = load_requests(_write_raw(tmp_path, frame))
    errors = [(p.location, p.field) for p in problems if p.severity == "error"]
    assert errors == [("row 2", "first_byte_ns"), ("row 5", "error_kind")]


def test_inconsistent_status_is_a_warning_not_an_error(tmp_path: Path) -> None:
    frame = sample_requests()
    frame.loc[1, "status_code"] = 503  # error_kind still "ok"
    path = _write_raw(tmp_path, frame)
    read_requests(path)  # warnings do not stop the reader
    _, problems = load_requests(path)
    assert [(p.location, p.field, p.severity) for p in problems] == [
        ("row 1", "error_kind", "warning")
    ]


def test_missing_required_column_and_na_in_required_column(tmp_path: Path) -> None:
    path = _write_raw(tmp_path, sample_requests().drop(columns=["end_ns"]))
    with pytest.raises(TraceError, match="required column is missing") as info:
        read_requests(path)
    assert info.value.field == "end_ns"
    frame = sample_requests().astype({"conn_id": "Int64"})
    frame.loc[3, "conn_id"] = pd.NA
    with pytest.raises(TraceError) as na:
        read_requests(_write_raw(tmp_path, frame))
    assert (na.value.location, na.value.field) == ("row 3", "conn_id")


def test_missing_optional_column_loads_with_a_warning(tmp_path: Path) -> None:
    frame, problems = load_requests(_write_raw(tmp_path, sample_requests().drop(columns=["pod"])))
    assert frame["pod"].isna().all() and str(frame["pod"].dtype) == "string"
    assert [(p.field, p.severity) for p in problems] == [("pod", "warning")]


def test_wrong_type_in_a_column_is_named(tmp_path: Path) -> None:
    frame = sample_requests().astype({"status_code": object})
    frame.loc[2, "status_code"] = "200"
    with pytest.raises(TraceError) as info:
        read_requests(_write_raw(tmp_path, frame.astype({"status_code": str})))
    assert info.value.field == "status_code"


def test_not_parquet_and_write_refuses_bad_frames(tmp_path: Path) -> None:
    path = tmp_path / "requests.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(TraceError, match="not a readable Parquet file"):
        read_requests(path)
    frame = sample_requests()
    frame.loc[0, "end_ns"] = 0
    with pytest.raises(TraceError, match="end before start"):
        write_requests(tmp_path / "out.parquet", frame)
    assert not (tmp_path / "out.parquet").exists()
