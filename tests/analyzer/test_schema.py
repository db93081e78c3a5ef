import pandas as pd
import pytest

from analyzer.schema import ALL_TABLES, CONNECTIONS, Cause, SchemaError, check_frame


def test_every_schema_accepts_its_own_empty_frame() -> None:
    for schema in ALL_TABLES.values():
        check_frame(schema.empty(), schema, "test")


def test_missing_column_and_bad_enum_are_named() -> None:
    frame = CONNECTIONS.empty().drop(columns=["syn_ns"])
    with pytest.raises(SchemaError, match="missing column 'syn_ns'"):
        check_frame(frame, CONNECTIONS, "reader")
    frame = CONNECTIONS.empty()
    frame.loc[0, "outcome"] = "exploded"
    with pytest.raises(SchemaError, match="outcome"):
        check_frame(frame.astype({"outcome": "string"}), CONNECTIONS, "reader")


def test_non_nullable_column_with_na_is_rejected() -> None:
    schema = ALL_TABLES["failures"]
    frame = schema.empty()
    frame["request_id"] = pd.Series([pd.NA], dtype="Int64")
    with pytest.raises(SchemaError, match="request_id"):
        check_frame(frame, schema, "attribution")


def test_cause_values_are_the_design_taxonomy() -> None:
    assert {c.value for c in Cause} == {
        "not-ready",
        "endpoint-lag",
        "inflight-cut",
        "container-restart",
        "killed-at-grace",
        "keepalive-race",
        "proxy-endpoint-lag",
        "backend-keepalive-race",
        "lb-lag",
        "no-endpoints",
        "overload",
        "unexplained",
    }
