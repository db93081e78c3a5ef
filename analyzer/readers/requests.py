"""requests.parquet: one row per request the load generator attempted (``analyzer.schema.REQUESTS``).

Parquet keeps types, but not always the pandas flavour of them: a nullable integer column written
by another tool comes back as float64 with NaN, a string column as ``object``. ``read_requests``
coerces every column to its declared dtype and refuses values that do not fit, naming the row and
field, because a request whose end precedes its start would otherwise become a negative latency
or a failure attributed to the wrong moment.

Rows are numbered from 0 (the Parquet row index), lines of JSONL files from 1.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.errors import TraceError
from analyzer.rundir import Problem, Severity, atomic_write_bytes
from analyzer.schema import REQUESTS, Column, ErrorKind, check_frame

USER_KINDS = ("keepalive", "new-connection")

# What a damaged Parquet file can make pyarrow raise; all mean "this file cannot be decoded".
_PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError)


def read_requests(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read requests.parquet as a frame conforming to ``REQUESTS``.

    Raises ``TraceError`` at the first error (lowest row); ``check_requests`` lists them all.
    """
    frame, problems = load_requests(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise errors[0].to_trace_error()
    return frame


def load_requests(
    path: str | os.PathLike[str], categorical: Collection[str] = ()
) -> tuple[pd.DataFrame, list[Problem]]:
    """Read and coerce requests.parquet, returning every problem instead of raising on the first.

    A file-level problem (unreadable file, missing or mistyped column) is raised as a
    ``TraceError``: without the column there is no row to check. The text columns named in
    ``categorical`` come back as categoricals, as ``astype("category")`` would make them: read
    as Parquet's dictionaries, their text is never made a million times over.
    """
    name = str(path)
    try:
        table = pq.read_table(path, read_dictionary=list(categorical))
    except _PARQUET_ERRORS as exc:
        raise TraceError(name, "file", f"not a readable Parquet file: {exc}") from None
    for column_name, column in zip(table.column_names, table.columns, strict=True):
        try:  # Parquet does not check string bytes on read; invalid UTF-8 breaks pandas later
            column.validate(full=True)
        except _PARQUET_ERRORS as exc:
            raise TraceError(
                name, "file", f"damaged column data: {exc}", field=column_name
            ) from None
    try:
        # each column's Arrow buffers are freed as soon as it is converted: at ten million
        # requests, holding the table beside the frame costs gigabytes
        raw = table.to_pandas(self_destruct=True, split_blocks=True)
    except _PARQUET_ERRORS as exc:
        raise TraceError(name, "file", f"not a readable Parquet file: {exc}") from None
    del table
    frame, coerce_problems = coerce_requests(raw, name, categorical)
    del raw
    return frame, coerce_problems + check_requests(frame, name)


def coerce_requests(
    raw: pd.DataFrame, path: str = "requests.parquet", categorical: Collection[str] = ()
) -> tuple[pd.DataFrame, list[Problem]]:
    """Bring every ``REQUESTS`` column to its declared dtype; extra columns are kept as they are.

    A missing nullable column is added (all NA) with a warning, so an older or foreign writer's
    file still loads; a missing required column, or a value the dtype cannot hold, is an error.
    A column named in ``categorical`` that arrives as a categorical stays one, its categories
    the declared text dtype (``_as_categorical``).
    """
    frame = raw.reset_index(drop=True)  # copy-on-write: the caller's frame is left as it was
    problems: list[Problem] = []
    for col in REQUESTS.columns:
        if col.name not in frame.columns:
            if not col.nullable:
                raise TraceError(path, "file", "required column is missing", field=col.name)
            problems.append(
                Problem(path, "file", col.name, "optional column is missing (all NA)", "warning")
            )
            frame[col.name] = pd.Series([pd.NA] * len(frame), dtype=col.dtype)
            continue
        series = frame[col.name]
        if col.name in categorical and isinstance(series.dtype, pd.CategoricalDtype):
            frame[col.name] = _as_categorical(series, col, path)
        else:
            frame[col.name] = _coerce_column(series, col, path)
    return frame, problems


def _as_categorical(series: pd.Series, col: Column, path: str) -> pd.Series:
    """A categorical text column as ``series.astype(col.dtype).astype("category")`` makes it:
    only the categories rows use, sorted, of the declared text dtype (a Parquet dictionary
    may hold unused values, in the order the writer met them). Each distinct value is
    checked once, not per row; a column whose categories are not all text is coerced as
    text, row by row, so that its error names the row."""
    categories = series.cat.categories
    if not all(isinstance(value, str) and _is_utf8(value) for value in categories):
        return _coerce_column(series, col, path)
    codes = series.cat.codes.to_numpy()
    if not col.nullable and (codes < 0).any():
        raise TraceError(path, f"row {_first_row(codes < 0)}", "missing value", field=col.name)
    used = np.flatnonzero(np.bincount(codes + 1, minlength=len(categories) + 1)[1:])
    kept = categories[used].to_numpy(dtype=object)
    order = np.argsort(kept, kind="stable")
    rank = np.full(len(categories) + 1, -1, dtype="int64")  # the last slot: code -1, NA
    rank[used[order]] = np.arange(len(order))
    dtype = pd.CategoricalDtype(pd.Index(kept[order], dtype=col.dtype))
    return pd.Series(
        pd.Categorical.from_codes(rank[codes], dtype=dtype), index=series.index, name=series.name
    )


def _first_row(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])


def _coerce_column(series: pd.Series, col: Column, path: str) -> pd.Series:
    """``series`` as ``col``'s dtype, or a TraceError naming the first row that cannot be: a
    foreign writer's file loads when its values fit, and is refused, not mangled, when not."""
    isna = series.isna().to_numpy(dtype=bool)
    if not col.nullable and isna.any():
        raise TraceError(path, f"row {_first_row(isna)}", "missing value", field=col.name)
    if str(series.dtype) == col.dtype:  # the usual case: written by write_requests
        return series
    family = col.dtype.lower()
    if family.startswith("int"):
        return _as_integers(series, col, path, isna)
    if family in {"bool", "boolean"}:
        return _as_booleans(series, col, path, isna)
    if family.startswith("float"):
        return _as_floats(series, col, path)
    return _as_strings(series, col, path, isna)


def _as_integers(series: pd.Series, col: Column, path: str, isna: np.ndarray) -> pd.Series:
    """Integers from any numeric column whose values are whole and fit in int64 (a writer that
    went through floats); booleans are not numbers here."""
    kind = series.dtype.kind if isinstance(series.dtype, np.dtype) else None
    if pd.api.types.is_bool_dtype(series.dtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        raise TraceError(
            path, "file", f"dtype {series.dtype} where integers are expected", field=col.name
        )
    if kind == "f" or pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~isna & (
            (values != np.floor(values)) | ~np.isfinite(values) | (np.abs(values) >= 2.0**63)
        )
        if bad.any():
            row = _first_row(bad)
            raise TraceError(
                path, f"row {row}", f"{values[row]!r} is not an integer", field=col.name
            )
    try:
        return series.astype(pd.api.types.pandas_dtype(col.dtype))
    except (OverflowError, TypeError, ValueError) as exc:
        raise TraceError(path, "file", f"cannot hold integers: {exc}", field=col.name) from None


def _as_booleans(series: pd.Series, col: Column, path: str, isna: np.ndarray) -> pd.Series:
    """Booleans only from real booleans: ``astype(bool)`` would turn any non-empty value true."""
    if not pd.api.types.is_bool_dtype(series.dtype):
        bad = [
            i
            for i, v in enumerate(series.astype(object))
            if not (isna[i] or isinstance(v, bool | np.bool_))
        ]
        if bad:
            raise TraceError(
                path,
                f"row {bad[0]}",
                f"{series.iloc[bad[0]]!r} is not a boolean",
                field=col.name,
            )
    return series.astype(pd.api.types.pandas_dtype(col.dtype))


def _as_floats(series: pd.Series, col: Column, path: str) -> pd.Series:
    """Floats from any numeric column but booleans."""
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise TraceError(
            path, "file", f"dtype {series.dtype} where numbers are expected", field=col.name
        )
    return series.astype(pd.api.types.pandas_dtype(col.dtype))


def _as_strings(series: pd.Series, col: Column, path: str, isna: np.ndarray) -> pd.Series:
    """Strings from string-like columns whose values are valid UTF-8 text: anything else in an
    object column is a writer bug, not something to str() away."""
    if not (
        pd.api.types.is_string_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype)
    ):
        raise TraceError(
            path, "file", f"dtype {series.dtype} where strings are expected", field=col.name
        )
    if isinstance(series.dtype, pd.StringDtype):  # only str or NA by construction
        return series.astype(pd.api.types.pandas_dtype(col.dtype))
    objects = series.astype(object)
    for row, value in enumerate(objects):
        if isna[row]:
            continue
        if not isinstance(value, str):
            raise TraceError(path, f"row {row}", f"{value!r} is not a string", field=col.name)
        if not value.isascii() and not _is_utf8(value):
            raise TraceError(path, f"row {row}", "not valid UTF-8 text", field=col.name)
    return objects.astype(pd.api.types.pandas_dtype(col.dtype))


def _is_utf8(text: str) -> bool:
    """Parquet does not validate string bytes; invalid ones arrive as surrogate escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Columns:
    """The frame's columns as numpy arrays: NA is a separate mask, so a comparison with a missing
    value is simply false (a rule about ``connect_ns`` does not apply when there is none)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            series = self._frame[name]
            if pd.api.types.is_bool_dtype(series.dtype):
                values = series.to_numpy(dtype=bool, na_value=False)
            else:  # integers; text columns are compared by ``isin``
                values = series.to_numpy(dtype="int64", na_value=0)
            self._cache[name] = values
        return self._cache[name]

    def isin(self, name: str, values: Collection[str]) -> np.ndarray:
        """Which rows of a text column hold one of ``values`` (NA: none), compared where the
        text is held: a column turned into Python objects costs ten times its size."""
        return self._frame[name].isin(values).to_numpy(dtype=bool, na_value=False)

    def has(self, name: str) -> np.ndarray:
        return self._frame[name].notna().to_numpy(dtype=bool)


_Check = tuple[str, Severity, str, Callable[[_Columns], np.ndarray]]
_KINDS = [e.value for e in ErrorKind]

# (field, severity, message, rows-that-break-it); each is a vectorized predicate.
_ROW_CHECKS: tuple[_Check, ...] = (
    (
        "error_kind",
        "error",
        "not one of " + ", ".join(_KINDS),
        lambda c: ~c.isin("error_kind", _KINDS),
    ),
    (
        "request_id",
        "error",
        "duplicate request_id",
        lambda c: pd.Series(c["request_id"]).duplicated().to_numpy(),
    ),
    ("start_ns", "error", "negative timestamp", lambda c: c["start_ns"] < 0),
    ("scheduled_ns", "error", "negative timestamp", lambda c: c["scheduled_ns"] < 0),
    (
        "end_ns",
        "error",
        "end before start (negative duration)",
        lambda c: c["end_ns"] < c["start_ns"],
    ),
    (
        "connect_ns",
        "error",
        "connect before start",
        lambda c: c.has("connect_ns") & (c["connect_ns"] < c["start_ns"]),
    ),
    (
        "connect_ns",
        "error",
        "connect after end",
        lambda c: c.has("connect_ns") & (c["connect_ns"] > c["end_ns"]),
    ),
    (
        "first_byte_ns",
        "error",
        "first byte before start",
        lambda c: c.has("first_byte_ns") & (c["first_byte_ns"] < c["start_ns"]),
    ),
    (
        "first_byte_ns",
        "error",
        "first byte after end",
        lambda c: c.has("first_byte_ns") & (c["first_byte_ns"] > c["end_ns"]),
    ),
    ("conn_seq", "error", "must be ≥ 1 (1-based)", lambda c: c["conn_seq"] < 1),
    (
        "conn_new",
        "error",
        "conn_new is true but conn_seq is not 1",
        lambda c: c["conn_new"] & (c["conn_seq"] != 1),
    ),
    (
        "remote_port",
        "error",
        "not a TCP port (0..65535)",
        lambda c: (c["remote_port"] < 0) | (c["remote_port"] > 65535),
    ),
    (
        "local_port",
        "error",
        "not a TCP port (0..65535)",
        lambda c: c.has("local_port") & ((c["local_port"] < 0) | (c["local_port"] > 65535)),
    ),
    (
        "status_code",
        "error",
        "not an HTTP status (100..599)",
        lambda c: c.has("status_code") & ((c["status_code"] < 100) | (c["status_code"] > 599)),
    ),
    (
        "error_kind",
        "warning",
        "http-5xx without a 5xx status_code",
        lambda c: (
            c.isin("error_kind", ["http-5xx"])
            & ~(c.has("status_code") & (c["status_code"] >= 500) & (c["status_code"] <= 599))
        ),
    ),
    (
        "error_kind",
        "warning",
        "ok with an error status_code (≥ 400)",
        lambda c: c.isin("error_kind", ["ok"]) & c.has("status_code") & (c["status_code"] >= 400),
    ),
    (
        "user_kind",
        "warning",
        "not one of " + ", ".join(USER_KINDS),
        lambda c: ~c.isin("user_kind", USER_KINDS),
    ),
    (
        "connect_ns",
        "warning",
        "set on a reused connection (should be NA)",
        lambda c: ~c["conn_new"] & c.has("connect_ns"),
    ),
)


def check_requests(frame: pd.DataFrame, path: str = "requests.parquet") -> list[Problem]:
    """Row-level checks of a coerced requests frame, one ``Problem`` per offending (row, check),
    in row order so that the first error is the one a person should look at first."""
    found: list[tuple[int, int, Problem]] = []
    columns = _Columns(frame)
    for order, (field, severity, message, predicate) in enumerate(_ROW_CHECKS):
        mask = np.asarray(predicate(columns), dtype=bool)
        for row in np.flatnonzero(mask):
            found.append((int(row), order, Problem(path, f"row {row}", field, message, severity)))
    found.sort(key=lambda item: (item[0], item[1]))
    return [problem for _, _, problem in found]


def write_requests(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write requests.parquet atomically, refusing a frame the reader would refuse."""
    coerced, _ = coerce_requests(frame, str(path))
    errors = [p for p in check_requests(coerced, str(path)) if p.severity == "error"]
    if errors:
        raise errors[0].to_trace_error()
    check_frame(coerced, REQUESTS, "write_requests")
    buffer = io.BytesIO()
    coerced.to_parquet(buffer, index=False)
    atomic_write_bytes(Path(path), buffer.getvalue())
