"""What `orch submit` fits: the plan's `fit.loss`, nats per token or bits per byte."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from orchestrator.adaptive.submit import losses_for_fit
from orchestrator.laws.fit_report import observations_from_summary
from storage import schema


def _summary() -> pa.Table:
    rows = [
        {"run_id": "a", "n_params": 1000, "tokens": 10**6, "final_loss": 3.1, "eval_loss": 3.0},
        {"run_id": "b", "n_params": 2000, "tokens": 10**6, "final_loss": 2.9, "eval_loss": 2.8},
        {"run_id": "c", "n_params": 4000, "tokens": 10**6, "final_loss": 2.7, "eval_loss": None},
    ]
    for row in rows:
        row["status"], row["flops"] = "finished", 6.0 * row["n_params"] * row["tokens"]
        row["eval_bpb"] = row["eval_loss"] and row["eval_loss"] / math.log(2) / 4.0
    return pa.Table.from_pylist(rows, schema=schema.SUMMARY)


def test_nats_per_token_fits_the_eval_loss_falling_back_to_the_train_loss():
    obs = observations_from_summary(losses_for_fit(_summary(), "nats_per_token"), "x")
    assert obs.run_ids == ("a", "b", "c") and list(obs.loss) == [3.0, 2.8, 2.7]


def test_bits_per_byte_fits_eval_bpb_and_leaves_out_runs_without_it():
    obs = observations_from_summary(losses_for_fit(_summary(), "bits_per_byte"), "x")
    assert obs.run_ids == ("a", "b")  # c's train loss is in nats per token: not mixed in
    assert list(obs.loss) == pytest.approx([3.0 / math.log(2) / 4, 2.8 / math.log(2) / 4])
