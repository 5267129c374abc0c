"""The store's conformance suite: each test runs on local disk and on S3 (moto)."""

import json
import logging

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from storage import parts, schema
from storage.errors import StoreError
from storage.store import Store, experiment_uri


def _row(step: int, loss: float) -> dict:
    return {"step": step, "tokens": step * 1024, "loss": loss}


def _write(store, run, attempt, steps, *, loss=1.0, flush_rows=1024):
    with store.metrics_writer(run, attempt=attempt, flush_rows=flush_rows, flush_s=1e9) as w:
        for step in steps:
            w.write(_row(step, loss))


def _files(store, run):
    selector = pafs.FileSelector(f"{store.metrics_dir}/run_id={run}", allow_not_found=True)
    return sorted(i.path for i in store.fs.get_file_info(selector) if i.is_file)


def _put(store, path, data: bytes):
    store.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with store.fs.open_output_stream(path) as out:
        out.write(data)


def _get(store, path) -> bytes:
    with store.fs.open_input_stream(path) as f:
        return f.read()


def _rows_in(store, path) -> int:
    with store.fs.open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def test_writer_buffers_rows_into_whole_part_files(store_uri):
    store = Store(store_uri)
    _write(store, "r1", 0, range(10), flush_rows=4)
    files = _files(store, "r1")
    names = [p.rsplit("/", 1)[1] for p in files]
    assert [n[: len("part-000-000000")] for n in names] == [
        "part-000-000000",
        "part-000-000001",
        "part-000-000002",
    ]
    assert [_rows_in(store, p) for p in files] == [4, 4, 2]
    assert store.metrics(["r1"]).column("step").to_pylist() == list(range(10))


def test_retried_attempt_replaces_overlapping_steps(store_uri):
    store = Store(store_uri)
    _write(store, "r1", 1, range(0, 60), loss=3.0, flush_rows=16)  # killed after step 59
    _write(store, "r1", 2, range(40, 100), loss=2.0, flush_rows=16)  # resumed at step 40
    table = store.metrics(["r1"], columns=["step", "attempt", "loss"])
    assert table.column_names == ["step", "attempt", "loss"]
    assert table.column("step").to_pylist() == list(range(100))
    assert table.column("attempt").to_pylist() == [1] * 40 + [2] * 60
    assert table.column("loss").to_pylist() == [3.0] * 40 + [2.0] * 60


def test_higher_attempt_wins_even_when_written_first(store_uri):
    store = Store(store_uri)
    _write(store, "r1", 2, range(5, 10), loss=2.0)
    _write(store, "r1", 1, range(0, 10), loss=3.0)  # a straggler of attempt 1, late
    table = store.metrics(["r1"], columns=["step", "loss"])
    assert table.column("loss").to_pylist() == [3.0] * 5 + [2.0] * 5


def test_restarted_writer_of_same_attempt_overwrites_nothing_and_wins(store_uri):
    store = Store(store_uri)
    _write(store, "r1", 1, range(0, 10), loss=3.0, flush_rows=5)
    _write(store, "r1", 1, range(5, 15), loss=2.0, flush_rows=5)
    assert len(_files(store, "r1")) == 4
    table = store.metrics(["r1"], columns=["step", "loss"])
    assert table.column("step").to_pylist() == list(range(15))
    assert table.column("loss").to_pylist() == [3.0] * 5 + [2.0] * 10


def test_reader_skips_truncated_and_garbage_parts_and_warns(store_uri, caplog):
    store = Store(store_uri)
    _write(store, "r1", 0, range(30), flush_rows=10)
    good = _files(store, "r1")
    truncated = good[0].replace("part-000-000000", "part-000-000007")
    _put(store, truncated, _get(store, good[0])[:-20])
    garbage = good[0].replace("part-000-000000", "part-000-000008")
    _put(store, garbage, b"PAR1 this is not parquet PAR1")
    with caplog.at_level(logging.WARNING, logger="storage"):
        table = store.metrics(["r1"])
    assert table.column("step").to_pylist() == list(range(30))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert truncated in warned and garbage in warned


def test_reader_skips_a_part_with_a_flipped_bit_rather_than_return_wrong_numbers(store_uri, caplog):
    store = Store(store_uri)
    _write(store, "r1", 0, range(20), flush_rows=10)
    first = _files(store, "r1")[0]
    data = bytearray(_get(store, first))
    meta = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata
    tokens = meta.row_group(0).column(schema.METRICS.names.index("tokens"))
    # A bit among the last values of the tokens page: it still decodes, to a wrong number,
    # unless the page checksum is checked.
    data[tokens.data_page_offset + tokens.total_compressed_size - 3] ^= 0x01
    _put(store, first, bytes(data))
    with caplog.at_level(logging.WARNING, logger="storage"):
        table = store.metrics(["r1"], columns=["step", "tokens"])
    assert table.column("step").to_pylist() == list(range(10, 20))
    assert first in caplog.text


def test_reading_one_run_never_opens_another(store_uri, caplog):
    store = Store(store_uri)
    for run in ("a", "b"):
        _write(store, run, 0, range(3))
    _put(store, f"{store.metrics_dir}/run_id=b/part-000-000009.parquet", b"junk")
    with caplog.at_level(logging.WARNING, logger="storage"):
        table = store.metrics(["a"], columns=["run_id", "step"])
    assert table.to_pylist() == [{"run_id": "a", "step": s} for s in range(3)]
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="storage"):
        assert store.metrics().num_rows == 6  # reading everything does meet the junk
    assert "part-000-000009.parquet" in caplog.text


def test_unknown_metric_columns_are_refused(store_uri):
    store = Store(store_uri)
    with pytest.raises(StoreError, match="unknown metrics columns"):
        store.metrics(columns=["step", "los"])
    with store.metrics_writer("a", attempt=0) as w, pytest.raises(StoreError, match="los"):
        w.write({"step": 1, "los": 2.0})


def test_compaction_leaves_one_file_and_the_same_reads(store_uri):
    store = Store(store_uri)
    _write(store, "r1", 1, range(0, 60), loss=3.0, flush_rows=16)
    _write(store, "r1", 2, range(40, 100), loss=2.0, flush_rows=16)
    _write(store, "other", 0, range(5))
    before = store.metrics()
    path = store.compact_run("r1")
    assert _files(store, "r1") == [path]
    assert store.metrics().equals(before)
    # Superseded rows of attempt 1 (steps 40-59) are kept: compaction loses no history.
    assert _rows_in(store, path) == 120
    assert store.compact_run("r1") == path  # a second call changes nothing
    assert _files(store, "r1") == [path]


def test_compaction_after_a_later_attempt_keeps_both(store_uri):
    store = Store(store_uri)
    _write(store, "r1", 1, range(0, 50), loss=3.0, flush_rows=16)
    store.compact_run("r1")
    _write(store, "r1", 2, range(30, 80), loss=2.0, flush_rows=16)
    store.compact_run("r1")
    table = store.metrics(["r1"], columns=["step", "attempt"])
    assert table.column("step").to_pylist() == list(range(80))
    assert table.column("attempt").to_pylist() == [1] * 30 + [2] * 50
    assert len(_files(store, "r1")) == 1


def test_a_read_racing_a_compaction_lists_again(store_uri, monkeypatch, caplog):
    store = Store(store_uri)
    _write(store, "r1", 1, range(0, 60), loss=3.0, flush_rows=16)
    _write(store, "r1", 2, range(40, 100), loss=2.0, flush_rows=16)
    expected = store.metrics(["r1"])
    stale = parts.list_parts(store.fs, store.metrics_dir, ["r1"])
    store.compact_run("r1")  # deletes every file of the stale listing
    listings = []

    def stale_first(*args):
        listings.append(args)
        return stale if len(listings) == 1 else real(*args)

    real = parts.list_parts
    monkeypatch.setattr(parts, "list_parts", stale_first)
    with caplog.at_level(logging.WARNING, logger="storage"):
        assert store.metrics(["r1"]).equals(expected)
    assert len(listings) == 2
    assert caplog.records == []


def test_compacting_a_run_without_metrics_does_nothing(store_uri):
    assert Store(store_uri).compact_run("never") is None


def test_compacting_many_runs_lists_once_and_compacts_only_runs_with_metrics(
    store_uri, monkeypatch
):
    store = Store(store_uri)
    _write(store, "a", 0, range(10), flush_rows=4)  # three parts
    compacted = []
    real = Store.compact_run
    monkeypatch.setattr(Store, "compact_run", lambda self, r: compacted.append(r) or real(self, r))
    store.compact_runs(["a", *(f"none{k}" for k in range(100))])
    assert compacted == ["a"]
    assert len(_files(store, "a")) == 1
    assert store.metrics(["a"]).column("step").to_pylist() == list(range(10))


def test_summary_is_rebuilt_from_each_runs_own_row(store_uri):
    store = Store(store_uri)
    for i, run in enumerate(("b", "a")):
        store.write_spec(run, "{}")
        store.write_run_summary(
            {"run_id": run, "status": "finished", "n_params": 10 + i, "eval_loss": 2.0 - i}
        )
    store.write_spec("c", "{}")  # started, never finished: no summary row
    summary = store.rebuild_summary()
    assert summary.column("run_id").to_pylist() == ["a", "b"]
    assert summary.column("n_params").to_pylist() == [11, 10]
    assert Store(store_uri).summary().equals(summary)
    assert store.run_summary("a")["eval_loss"] == 1.0
    assert store.run_summary("c") is None


def test_a_corrupt_run_summary_counts_as_unfinished(store_uri, caplog):
    store = Store(store_uri)
    store.write_run_summary({"run_id": "a", "status": "finished"})
    store.write_spec("b", "{}")
    _put(store, f"{store.root}/runs/b/summary.parquet", b"garbage")
    with caplog.at_level(logging.WARNING, logger="storage"):
        assert store.run_summary("b") is None
        assert store.rebuild_summary().column("run_id").to_pylist() == ["a"]
    assert "runs/b/summary.parquet" in caplog.text


def test_events_append_in_order(store_uri):
    store = Store(store_uri)
    store.append_event("a", attempt=0, state="running")
    store.append_event("a", attempt=0, state="finished", detail="ok")
    assert [e["state"] for e in store.events("a").to_pylist()] == ["running", "finished"]
    assert store.last_event("a")["detail"] == "ok"
    assert store.events("never").num_rows == 0
    assert store.last_event("never") is None


def test_specs_are_written_once_and_listed(store_uri):
    store = Store(store_uri)
    store.write_spec("a", '{"seed": 1}')
    store.write_spec("a", '{"seed": 2}')  # the same run_id is the same spec: no rewrite
    store.write_spec("b", "{}")
    assert store.read_spec("a") == {"seed": 1}
    assert store.run_ids() == ["a", "b"]
    with pytest.raises(StoreError, match="no spec.json"):
        store.read_spec("c")


def test_a_batch_of_specs_is_written_once_and_checked_once_per_store(store_uri, monkeypatch):
    from storage import store as store_module

    writes, reads = [], []
    real_write, real_read = store_module.write_bytes_atomic, store_module.read_bytes
    monkeypatch.setattr(
        store_module,
        "write_bytes_atomic",
        lambda fs, p, data, **kw: writes.append(p) or real_write(fs, p, data, **kw),
    )
    monkeypatch.setattr(
        store_module, "read_bytes", lambda fs, p: reads.append(p) or real_read(fs, p)
    )
    specs = {f"r{k:02d}": json.dumps({"seed": k}) for k in range(40)}
    store = Store(store_uri)
    store.write_specs(specs)
    assert len(writes) == 40 and len(reads) == 40  # each looked for, then written
    store.write_specs(specs)  # the driver's second ask (its round, then its run)
    for run_id, text in specs.items():
        store.write_spec(run_id, text)
    assert len(writes) == 40 and len(reads) == 40  # known whole: no request at all
    _put(store, f"{store.root}/runs/r07/spec.json", b'{"seed": ')  # cut short
    again = Store(store_uri)  # a resume: each checked once, the damaged one replaced
    again.write_specs(specs)
    again.write_specs(specs)
    assert len(reads) == 80 and writes[40:] == [f"{store.root}/runs/r07/spec.json"]
    assert [again.read_spec(r)["seed"] for r in specs] == list(range(40))
    assert again.run_ids() == sorted(specs)


def test_a_large_round_of_specs_is_one_spec_part_read_by_every_reader(store_uri, monkeypatch):
    from storage import store as store_module

    specs = {f"r{k:03d}": json.dumps({"seed": k}) for k in range(300)}
    store = Store(store_uri)
    store.write_spec("r000", json.dumps({"seed": 0}))  # an older experiment's own file
    store.write_specs(specs)
    spec_dir = f"{store.root}/{parts.SPEC_PARTS_DIR}"
    assert len(parts.list_files(store.fs, spec_dir)) == 1  # one file, not one per run
    assert parts.list_files(store.fs, f"{store.root}/runs", recursive=True)[0].path.endswith(
        "runs/r000/spec.json"
    )
    _put(store, f"{store.root}/runs/r001/spec.json", b'{"seed": ')  # cut short: the part's
    writes = []
    for name in ("write_bytes_atomic", "write_table_atomic"):
        real = getattr(store_module, name)
        monkeypatch.setattr(
            store_module, name, lambda *a, _r=real, **kw: writes.append(a[1]) or _r(*a, **kw)
        )
    again = Store(store_uri)  # a resume: every spec is found, none written again
    again.write_specs(specs)
    for run_id, text in specs.items():
        again.write_spec(run_id, text)
    assert writes == []
    assert [again.read_spec(r)["seed"] for r in specs] == list(range(300))
    assert again.run_ids() == sorted(specs)


def test_a_corrupt_spec_part_is_skipped_with_a_warning_and_written_again(store_uri, caplog):
    specs = {f"r{k:03d}": json.dumps({"seed": k}) for k in range(300)}
    store = Store(store_uri)
    store.write_specs(specs)
    (part,) = parts.list_files(store.fs, f"{store.root}/{parts.SPEC_PARTS_DIR}")
    _put(store, part.path, b"garbage")
    with caplog.at_level(logging.WARNING, logger="storage"):
        resumed = Store(store_uri)
        assert resumed.run_ids() == []
        resumed.write_specs(specs)
    assert part.base_name in caplog.text
    assert [Store(store_uri).read_spec(r)["seed"] for r in specs] == list(range(300))


def test_ledger_round_trips_per_stage(store_uri):
    store = Store(store_uri)
    rows = [
        {"stage": "isoflop-1e15", "planned_flops": 1e15, "spent_flops": 4e14, "time_unix_s": 1.0},
        {"stage": "isoflop-1e16", "planned_flops": 1e16, "committed_flops": 2e15},
    ]
    store.write_ledger(rows)
    ledger = store.ledger()
    assert ledger.schema.equals(schema.LEDGER)
    assert ledger.column("planned_flops").to_pylist() == [1e15, 1e16]
    assert ledger.column("committed_flops").to_pylist() == [None, 2e15]
    store.write_ledger(pa.table({"stage": ["all"], "spent_gpu_hours": [3.5]}))  # replaces
    assert store.ledger().to_pylist()[0]["spent_gpu_hours"] == 3.5
    assert store.ledger().num_rows == 1
    with pytest.raises(StoreError, match="ledger"):
        store.write_ledger([{"stage": "x", "flopz": 1.0}])


def test_fits_are_json_files_with_an_index(store_uri):
    store = Store(store_uri)
    record = {"form": "chinchilla", "n_obs": 12, "run_ids": ["a", "b"], "reliable": True}
    path = store.write_fit("0123456789abcdef", record)
    assert path.endswith("fits/0123456789abcdef.json")
    assert json.loads(_get(store, path)) == record
    assert store.read_fit("0123456789abcdef") == record
    fits = store.fits()
    assert fits.column("fit_id").to_pylist() == ["0123456789abcdef"]
    assert fits.column("n_runs").to_pylist() == [2]
    assert json.loads(fits.column("record_json")[0].as_py()) == record


@pytest.mark.parametrize("name", ["../up", "a/b", "", "/abs", "x" * 200, "a b", ".hidden", "a=b"])
def test_names_that_could_escape_the_experiment_are_refused(store_uri, name):
    store = Store(store_uri)
    with pytest.raises(StoreError, match="invalid run name"):
        store.write_spec(name, "{}")
    with pytest.raises(StoreError, match="invalid run name"):
        store.metrics_writer(name, attempt=0)
    with pytest.raises(StoreError, match="invalid run name"):
        store.metrics([name])
    with pytest.raises(StoreError, match="invalid fit name"):
        store.write_fit(name, {})


def test_empty_experiment_reads_as_empty_tables(store_uri):
    store = Store(store_uri)
    assert store.summary().num_rows == 0
    assert store.metrics().schema.equals(schema.METRICS)
    assert store.metrics(["a"], columns=["step"]).column_names == ["step"]
    assert store.ledger().num_rows == 0
    assert store.fits().num_rows == 0
    assert store.run_ids() == []


def test_reader_accepts_files_of_an_older_schema_version(store_uri):
    store = Store(store_uri)
    # A part as an older version wrote it: fewer columns and no version stamp.
    old = pa.table({"run_id": ["r"] * 3, "attempt": [0] * 3, "step": [1, 2, 3], "loss": [3.0] * 3})
    sink = pa.BufferOutputStream()
    pq.write_table(old, sink)
    _put(
        store, f"{store.metrics_dir}/run_id=r/part-000-000000.parquet", sink.getvalue().to_pybytes()
    )
    table = store.metrics(["r"])
    assert table.column("step").to_pylist() == [1, 2, 3]
    assert table.column("peak_mem_bytes").null_count == 3
    assert table.schema.equals(schema.METRICS)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"run_id": ["r"], "status": ["finished"]}), sink)
    _put(store, f"{store.root}/summary.parquet", sink.getvalue().to_pybytes())
    assert store.summary().to_pylist()[0]["status"] == "finished"


def test_metrics_convert_to_pandas(store_uri):
    pytest.importorskip("pandas")
    store = Store(store_uri)
    _write(store, "r1", 0, range(4))
    frame = store.metrics(["r1"], columns=["step", "loss"]).to_pandas()
    assert list(frame["step"]) == [0, 1, 2, 3]


def test_experiment_uri_keeps_s3_options(tmp_path):
    uri = experiment_uri("s3://bucket/exps?endpoint_override=127.0.0.1:9000&scheme=http", "x1")
    assert uri == "s3://bucket/exps/x1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert experiment_uri(str(tmp_path), "x1") == str(tmp_path / "x1")
    with pytest.raises(StoreError, match="invalid experiment name"):
        experiment_uri("s3://bucket/exps", "../other")


def test_store_on_s3_has_no_local_checkpoint_dir(s3_endpoint):
    store = Store(f"s3://b/x?endpoint_override={s3_endpoint}&scheme=http")
    with pytest.raises(StoreError, match="object storage"):
        store.checkpoint_dir("a")


# -- summary parts (group-committed run summaries) ---------------------------------------------
def _summary(run: str, loss: float, *, attempt: int = 0) -> dict:
    return {"run_id": run, "attempt": attempt, "status": "finished", "eval_loss": loss}


def _summary_parts(store) -> list[str]:
    return sorted(
        i.base_name for i in parts.list_files(store.fs, f"{store.root}/{parts.SUMMARY_PARTS_DIR}")
    )


def test_a_batch_written_summary_is_read_once_by_every_reader(store_uri):
    store = Store(store_uri)
    store.write_run_summary(_summary("own", 1.0))  # a real worker's own file
    store.write_run_summary(_summary("both", 2.0))
    store.write_run_summaries([_summary(f"sim{k:03d}", 3.0) for k in range(80)], durable=False)
    # A run in a part and in its own file, and a run in two parts: each reads as one row,
    # its own file's, else the newest part's.
    store.write_run_summaries([_summary("both", 9.0), _summary("twice", 4.0)])
    store.write_run_summaries([_summary("twice", 5.0, attempt=1)])
    assert len(_summary_parts(store)) == 3  # one file per batch, not one per run
    expected = {"own": 1.0, "both": 2.0, "twice": 5.0} | {f"sim{k:03d}": 3.0 for k in range(80)}

    reader = Store(store_uri)  # another process's view
    for s in (store, reader):
        table = s.run_summaries()
        assert table.column("run_id").to_pylist() == sorted(expected)
        losses = {r["run_id"]: r["eval_loss"] for r in table.to_pylist()}
        assert losses == expected
        assert {r: s.run_summary(r)["eval_loss"] for r in expected} == expected
        assert s.run_summary("never") is None
        few = s.run_summaries_of(["own", "twice", "sim007", "never"])  # read run by run
        many = s.run_summaries_of([*expected, "never"])  # one scan
        assert {r: row["eval_loss"] for r, row in few.items()} == {
            r: expected[r] for r in ("own", "twice", "sim007")
        }
        assert {r: row["eval_loss"] for r, row in many.items()} == expected
    rebuilt = reader.rebuild_summary()
    assert rebuilt.column("run_id").to_pylist() == sorted(expected)
    assert Store(store_uri).summary().equals(rebuilt)
    assert len(_summary_parts(store)) == 1  # the rebuild merged the parts into one
    assert Store(store_uri).run_summaries().equals(rebuilt)


def test_summary_parts_are_read_once_each_and_merged_after_a_few(store_uri, monkeypatch):
    writer, reader = Store(store_uri), Store(store_uri)
    reads = []
    real_read = parts.read_table
    monkeypatch.setattr(parts, "read_table", lambda fs, p: reads.append(p) or real_read(fs, p))
    writer.write_run_summaries([_summary(f"r{k:02d}", float(k)) for k in range(10)])
    writer.write_run_summaries([_summary(f"r{k:02d}", float(k)) for k in range(10, 20)])
    for k in range(20):  # run by run, as `orch status` asks
        assert reader.run_summary(f"r{k:02d}")["eval_loss"] == k
    assert len(reads) == 2  # each part once, however many questions
    assert writer.run_summary("r05")["eval_loss"] == 5 and len(reads) == 2  # wrote it: no read
    # A study of short runs writes a part per poll for hours: its writer merges them.
    for k in range(20, 60):
        writer.write_run_summaries([_summary(f"r{k:02d}", float(k))])
    assert len(_summary_parts(writer)) <= 16
    table = reader.run_summaries()
    assert table.column("run_id").to_pylist() == [f"r{k:02d}" for k in range(60)]
    assert table.column("eval_loss").to_pylist() == [float(k) for k in range(60)]


def test_a_merge_of_summary_parts_cut_short_duplicates_nothing(store_uri, monkeypatch):
    store = Store(store_uri)
    for k in range(3):
        store.write_run_summaries([_summary(f"r{k}", float(k)), _summary("same", 7.0)])
    # Killed after the merged part is written, before any absorbed part is deleted.
    monkeypatch.setattr(parts, "delete_quietly", lambda fs, p: (_ for _ in ()).throw(SystemExit))
    with pytest.raises(SystemExit):
        store.compact_summaries()
    assert len(_summary_parts(store)) == 4
    table = Store(store_uri).run_summaries()
    assert table.column("run_id").to_pylist() == ["r0", "r1", "r2", "same"]
    monkeypatch.undo()
    Store(store_uri).compact_summaries()  # the next merge finishes the job
    assert len(_summary_parts(store)) == 1
    assert Store(store_uri).run_summaries().equals(table)


def test_a_corrupt_summary_part_is_skipped_with_a_warning(store_uri, caplog):
    store = Store(store_uri)
    store.write_run_summaries([_summary("a", 1.0)])
    bad = f"{store.root}/{parts.SUMMARY_PARTS_DIR}/0000000000000000001-0badc0de.parquet"
    _put(store, bad, b"garbage")
    with caplog.at_level(logging.WARNING, logger="storage"):
        reader = Store(store_uri)
        assert reader.run_summaries().column("run_id").to_pylist() == ["a"]
        assert reader.run_summary("a")["eval_loss"] == 1.0
    assert bad.rsplit("/", 1)[1] in caplog.text
    reader.rebuild_summary()  # its runs count as unfinished; the file is kept, as evidence
    assert bad.rsplit("/", 1)[1] in _summary_parts(store)


def test_summary_rows_are_checked_before_any_is_written(store_uri):
    store = Store(store_uri)
    with pytest.raises(StoreError, match="unknown summary columns"):
        store.write_run_summaries([_summary("a", 1.0), {"run_id": "b", "loss": 2.0}])
    with pytest.raises(StoreError, match="invalid run name"):
        store.write_run_summaries([_summary("../x", 1.0)])
    assert _summary_parts(store) == [] and store.run_summaries().num_rows == 0
