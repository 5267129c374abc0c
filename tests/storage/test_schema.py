"""Every stored table has a versioned schema; readers accept older versions."""

import logging

import pyarrow as pa
import pytest

from storage import schema

ALL = [schema.METRICS, schema.EVENTS, schema.SUMMARY, schema.SPECS, schema.LEDGER, schema.FITS]


@pytest.mark.parametrize("s", ALL, ids=lambda s: schema.kind(s))
def test_every_schema_carries_its_kind_and_version(s):
    assert schema.kind(s) in {"metrics", "events", "summary", "specs", "ledger", "fits"}
    assert schema.schema_version(s) >= 1


def test_ledger_has_the_budget_columns_per_stage():
    assert schema.LEDGER.names == [
        "stage",
        "planned_flops",
        "committed_flops",
        "spent_flops",
        "planned_gpu_hours",
        "committed_gpu_hours",
        "spent_gpu_hours",
        "time_unix_s",
    ]
    assert all(f.type == pa.float64() for f in schema.LEDGER if f.name != "stage")


def test_an_unversioned_older_table_gains_nulls_and_loses_dropped_columns():
    old = pa.table({"run_id": ["a"], "status": ["finished"], "retired_column": [1]})
    assert schema.schema_version(old.schema) == 0
    table = schema.conform(old, schema.SUMMARY)
    assert table.schema.equals(schema.SUMMARY)
    assert table.to_pylist()[0]["status"] == "finished"
    assert table.to_pylist()[0]["n_params"] is None


def test_a_table_from_a_newer_version_is_read_with_a_warning(caplog):
    newer = pa.table({"stage": ["s"], "planned_flops": [1.0], "carbon_kg": [2.0]})
    newer = newer.replace_schema_metadata({"orch.kind": "ledger", "orch.schema_version": "99"})
    with caplog.at_level(logging.WARNING, logger="storage"):
        table = schema.conform(newer, schema.LEDGER, source="x/ledger.parquet")
    assert table.column("planned_flops").to_pylist() == [1.0]
    assert "x/ledger.parquet" in caplog.text and "version 99" in caplog.text
