"""`orch export`: an experiment's runs and curves as two clean tables, for notebooks.

The store keeps one Parquet part per flush and attempt, so a retried run logs some steps
twice and reading the parts by hand shows both (`Store.metrics` keeps the last attempt's
row per step). This writes what a notebook wants instead: `runs` (one row per run: N, D,
C, loss, shape, state) and `curves` (one row per run and step, deduplicated across
attempts), as Parquet or CSV.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.command import command
from orchestrator.cli.output import console

EPILOG = """examples:
  orch export experiments/local --out /tmp/local        # runs.parquet, curves.parquet
  orch export s3://bucket/exp/chinchilla --out out --format csv
"""

# Columns of the runs table: name, and where it comes from (see `runs_table`).
RUN_COLUMNS = (
    "run_id", "state", "N", "N_total", "D", "C", "C_6nd", "loss", "final_loss", "eval_loss",
    "n_layer", "d_model", "n_head", "world_size", "zero_stage", "branch_from", "attempts",
    "gpu_hours",
)  # fmt: skip


def add_parser(sub) -> None:
    p = command(
        sub,
        "export",
        run,
        help="write an experiment's runs and curves as Parquet or CSV tables",
        description="Write two tables: runs (one row per run: N, D, C, loss, shape, state)\n"
        "and curves (one row per run and step, deduplicated across retried attempts).",
        epilog=EPILOG,
    )
    p.add_argument("experiment", help="experiment directory or URI")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")


def runs_table(status):
    """One row per run (`RUN_COLUMNS`): N is non-embedding parameters, D tokens trained
    (planned, for a run that has not ended), C training FLOPs as the plan counts them,
    loss the eval loss where there is one, else the final train loss (as fits read it)."""
    import pyarrow as pa

    rows = []
    for r in status.runs:
        summary, spec = r.summary or {}, r.spec
        shape = spec.shape if spec is not None else None
        eval_loss, final = summary.get("eval_loss"), summary.get("final_loss")
        rows.append(
            {
                "run_id": r.run_id,
                "state": str(r.state),
                "N": r.n_params,
                "N_total": summary.get("n_params_total"),
                "D": summary.get("tokens") or r.tokens_planned or None,
                "C": summary.get("flops") or r.flops_planned or None,
                "C_6nd": summary.get("flops_6nd"),
                "loss": eval_loss if eval_loss is not None else final,
                "final_loss": final,
                "eval_loss": eval_loss,
                "n_layer": shape.n_layer if shape else None,
                "d_model": shape.d_model if shape else None,
                "n_head": shape.n_head if shape else None,
                "world_size": spec.world_size if spec is not None else None,
                "zero_stage": spec.zero_stage if spec is not None else None,
                "branch_from": (spec.branch_from or None) if spec is not None else None,
                "attempts": r.attempts,
                "gpu_hours": r.gpu_hours,
            }
        )
    schema = pa.schema(
        [
            ("run_id", pa.string()), ("state", pa.string()), ("N", pa.int64()),
            ("N_total", pa.int64()), ("D", pa.int64()), ("C", pa.float64()),
            ("C_6nd", pa.float64()), ("loss", pa.float64()), ("final_loss", pa.float64()),
            ("eval_loss", pa.float64()), ("n_layer", pa.int32()), ("d_model", pa.int32()),
            ("n_head", pa.int32()), ("world_size", pa.int32()), ("zero_stage", pa.int32()),
            ("branch_from", pa.string()), ("attempts", pa.int32()), ("gpu_hours", pa.float64()),
        ]
    )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)


def run(args: argparse.Namespace) -> int:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from orchestrator.report.status import read_status
    from storage.store import Store

    store = Store.existing(args.experiment)
    status = read_status(store, with_fit=False)
    runs = runs_table(status)
    curves = store.metrics([r.run_id for r in status.runs])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, tab in (("runs", runs), ("curves", curves)):
        path = out / f"{name}.{args.format}"
        if args.format == "csv":
            pa_csv.write_csv(tab, path)
        else:
            pq.write_table(tab, path)
        console.print(f"{name}: {tab.num_rows} rows -> {path}", highlight=False)
    return 0
