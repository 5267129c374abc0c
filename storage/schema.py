"""Arrow schemas of everything the study stores, each stamped with its own schema version.

Units are in the field names (see STYLE.md 2.9): `flops` is total training FLOPs so
far, `wall_s` seconds since the attempt started, `tokens` training tokens so far.

Versioning: every schema carries `orch.kind` and `orch.schema_version` in its metadata,
and every file we write keeps them. A reader accepts any older version (and files from
before versioning, read as version 0): columns added since read as nulls, columns since
removed are dropped, and types are cast to today's. Change a schema only additively
(add nullable columns) and bump its version; a rename or a type that cannot be cast
needs an explicit upgrade step in `conform` before the version bump.
"""

from __future__ import annotations

import logging

import pyarrow as pa

log = logging.getLogger(__name__)

_KIND = b"orch.kind"
_VERSION = b"orch.schema_version"


def _versioned(fields: list[pa.Field], kind: str, version: int) -> pa.Schema:
    return pa.schema(fields, metadata={_KIND: kind.encode(), _VERSION: str(version).encode()})


# One row per logged optimizer step of one attempt of one run.
METRICS = _versioned(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),  # optimizer steps done
        pa.field("tokens", pa.int64()),  # training tokens seen so far
        pa.field("flops", pa.float64()),  # training FLOPs so far (the run's budgeting method)
        pa.field("wall_s", pa.float64()),  # seconds since the attempt started
        pa.field("loss", pa.float64()),  # train loss, nats/token, mean over the log interval
        pa.field("eval_loss", pa.float64()),  # held-out loss, nats/token; null between evals
        pa.field("lr", pa.float64()),
        pa.field("grad_norm", pa.float64()),  # global L2 norm before clipping
        pa.field("tokens_per_s", pa.float64()),  # over the log interval, all ranks
        pa.field("mfu", pa.float64()),  # fraction of the declared peak; null if none declared
        pa.field("peak_mem_bytes", pa.int64()),  # rank 0's peak accelerator (or RSS) memory
        # Version 2: eval_loss in bits per byte of the held-out text (eval_loss / ln 2 /
        # its bytes per token), comparable across tokenizers; null between evals and for
        # data that stands for no text (synthetic, token shards without a manifest).
        pa.field("eval_bpb", pa.float64()),
    ],
    "metrics",
    2,
)

# State transitions of a run, appended by the driver.
EVENTS = _versioned(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("state", pa.string(), nullable=False),  # a scheduler.RunState value
        pa.field("time_unix_s", pa.float64(), nullable=False),
        pa.field("detail", pa.string()),  # error text, node, reason
    ],
    "events",
    1,
)

# One row per finished run, shaped for fitting.
SUMMARY = _versioned(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int32()),
        pa.field("status", pa.string()),  # finished | diverged | stopped (early, by the loop)
        pa.field("n_params", pa.int64()),  # N, non-embedding parameters
        pa.field("n_params_total", pa.int64()),
        pa.field("tokens", pa.int64()),  # D, training tokens actually seen
        pa.field("flops", pa.float64()),  # C, training FLOPs (the plan's budgeting method)
        pa.field("flops_6nd", pa.float64()),  # 6 N D, always reported for comparison
        pa.field("final_loss", pa.float64()),  # train loss over the last log interval
        pa.field("eval_loss", pa.float64()),  # held-out loss at the end
        pa.field("steps", pa.int64()),
        pa.field("wall_s", pa.float64()),
        pa.field("gpu_hours", pa.float64()),  # accelerator-hours (CPU slots here) = ranks x wall
        pa.field("n_layer", pa.int32()),
        pa.field("d_model", pa.int32()),
        pa.field("world_size", pa.int32()),
        pa.field("zero_stage", pa.int32()),
        pa.field("eval_bpb", pa.float64()),  # version 2: eval_loss in bits per byte (METRICS)
    ],
    "summary",
    2,
)

# The specs of a large round, stored at once (storage.parts; a run's own spec.json
# otherwise): one row per run, its RunSpec as the canonical JSON spec.json would hold.
SPECS = _versioned(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("spec_json", pa.string(), nullable=False),
    ],
    "specs",
    1,
)

# The budget, one row per stage and snapshot time (the planner's ledger is the live copy).
LEDGER = _versioned(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("planned_flops", pa.float64()),  # total training FLOPs the plan assigns
        pa.field("committed_flops", pa.float64()),  # submitted runs, not yet ended
        pa.field("spent_flops", pa.float64()),  # ended runs (finished, diverged, failed)
        pa.field("planned_gpu_hours", pa.float64()),
        pa.field("committed_gpu_hours", pa.float64()),
        pa.field("spent_gpu_hours", pa.float64()),
        pa.field("time_unix_s", pa.float64()),  # when this row was written
    ],
    "ledger",
    1,
)

# An index over fits/<fit_id>.json: one row per fit, the whole record kept as JSON text.
FITS = _versioned(
    [
        pa.field("fit_id", pa.string(), nullable=False),
        pa.field("form", pa.string()),  # the law: "chinchilla", "kaplan", ...
        pa.field("created_utc", pa.string()),  # ISO 8601
        pa.field("n_obs", pa.int64()),  # observations (rows) fitted
        pa.field("n_runs", pa.int64()),  # runs whose results were fitted
        pa.field("data_hash", pa.string()),  # sha256 of the observations
        pa.field("reliable", pa.bool_()),
        pa.field("record_json", pa.string()),  # the record as stored
    ],
    "fits",
    1,
)


def schema_version(s: pa.Schema) -> int:
    """The schema version a table or file was written with; 0 if it predates versioning."""
    meta = s.metadata or {}
    try:
        return int(meta.get(_VERSION, b"0"))
    except ValueError:
        return 0


def kind(s: pa.Schema) -> str:
    """What a schema describes ("metrics", "events", ...), or "" if unstamped."""
    return (s.metadata or {}).get(_KIND, b"").decode()


def conform(table: pa.Table, schema: pa.Schema, *, source: str = "") -> pa.Table:
    """The table with `schema`'s columns in order and types: missing ones (older versions)
    as nulls, unknown ones dropped. A table from a newer version is read the same way,
    with a warning naming `source`, since its new columns are lost to this reader."""
    version, current = schema_version(table.schema), schema_version(schema)
    if version > current:
        log.warning(
            "%s: written with %s schema version %d, this reader knows %d; unknown columns "
            "are ignored",
            source or "table",
            kind(schema),
            version,
            current,
        )
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
