"""The tables as written to analysis/tables: the column types their schema declares and the
values the analysis computed, whatever the analysis does on the way to hold less memory (a
table released once written and read back only when asked for, freed pages handed back)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.pipeline import TABLES, Analysis, analyze
from analyzer.schema import TableSchema, check_frame
from analyzer.tracebuilder.build import BuiltRun, build_run


def _arrow_types(schema: TableSchema) -> dict[str, pa.DataType]:
    """The Arrow type each column of ``schema`` is written as: that of its declared dtype."""
    written = pa.Schema.from_pandas(schema.empty(), preserve_index=False)
    return {field.name: field.type for field in written}


@pytest.fixture(scope="module", params=["mixed", "clean"])
def analyzed(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[BuiltRun, Analysis, Analysis]:
    """A built run (node captures; four causes, or none: no error text at all) analyzed twice:
    in memory only, where every table stays a frame, and written, where tables are released as
    they go to their files."""
    recipe = str(request.param)
    built = build_run(tmp_path_factory.mktemp(recipe) / "run", recipe, seed=2)
    in_memory = analyze(built.paths, write_tables=False, write_summary=False)
    written = analyze(built.paths)
    return built, in_memory, written


@pytest.mark.parametrize("name", [name for name, schema in TABLES.items() if schema is not None])
def test_a_canonical_table_is_written_with_its_schema_types(
    analyzed: tuple[BuiltRun, Analysis, Analysis], name: str
) -> None:
    built, _, _ = analyzed
    schema = TABLES[name]
    assert schema is not None
    path = built.paths.table(name)
    file_types = {field.name: field.type for field in pq.read_schema(path)}
    assert {c: file_types[c] for c in schema.names} == _arrow_types(schema)
    check_frame(pd.read_parquet(path), schema, f"{name}.parquet read back")


@pytest.mark.parametrize("name", list(TABLES))
def test_a_table_as_written_holds_the_values_computed_in_memory(
    analyzed: tuple[BuiltRun, Analysis, Analysis], name: str
) -> None:
    built, in_memory, written = analyzed
    computed = in_memory.tables[name].reset_index(drop=True)
    assert len(computed) or name not in {"requests", "connections", "packets"}
    pd.testing.assert_frame_equal(pd.read_parquet(built.paths.table(name)), computed)
    pd.testing.assert_frame_equal(written.tables[name].reset_index(drop=True), computed)


def test_the_summary_does_not_depend_on_what_was_written(
    analyzed: tuple[BuiltRun, Analysis, Analysis],
) -> None:
    _, in_memory, written = analyzed
    assert written.summary == in_memory.summary
    assert written.summary["requests_total"] > 0
