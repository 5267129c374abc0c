"""A real corpus end to end: `orch prepare` text made here into BPE shards, then `orch submit`
plans/local-bpe.yaml, shrunk, on them: runs on the embedded Ray that know their corpus's
content hash, eval in bits per byte beside nats per token, and a fit in bits per byte."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from orchestrator.adaptive.submit import losses_for_fit
from orchestrator.cli import main
from orchestrator.laws.fit_report import fit_observations, observations_from_summary
from orchestrator.planning import load_plan
from orchestrator.planning.axis import compute_axis
from orchestrator.planning.expand import expand_plan
from storage.store import Store
from workers.manifest import read_manifest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

# plans/local-bpe.yaml's grid, two orders of magnitude down in compute: 5 runs of 100 to
# 400 steps (a tiny BPE's 320-token vocab keeps the output layer cheap).
_TINY_GRID = """grid:
  compute_flops: [2e9, 6e9]
  sizes:
    - {n_layer: 1, d_model: 16, n_head: 2}
    - {n_layer: 2, d_model: 16, n_head: 2}
    - {n_layer: 2, d_model: 24, n_head: 2, levels: [6e9]}

"""


def _documents(n: int) -> list[str]:
    """Short documents from a small grammar: structure a tiny model can learn."""
    rng = np.random.default_rng(0)
    nouns = "cat dog bird fish horse mouse owl fox".split()
    verbs = "sees chases finds follows watches hears".split()
    adjectives = "small quick lazy brown old young".split()
    docs = []
    for _ in range(n):
        sentences = [
            f"the {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} "
            f"the {rng.choice(nouns)}."
            for _ in range(rng.integers(3, 8))
        ]
        docs.append(" ".join(sentences).capitalize())
    return docs


def _tiny_plan(tmp_path: Path, corpus: Path, vocab: int) -> Path:
    text = (ROOT / "plans" / "local-bpe.yaml").read_text()
    text = re.sub(r"(?m)^  root: .*$", f"  root: {corpus}", text)
    text = re.sub(r"(?m)^store: \S+", f"store: {tmp_path / 'experiments'}", text)
    text = re.sub(r"(?m)^  vocab: \d+", f"  vocab: {vocab}", text)
    text = re.sub(r"(?ms)^grid:.*?(?=^train:)", _TINY_GRID, text)
    path = tmp_path / "tiny-bpe.yaml"
    path.write_text(text)
    return path


def test_prepared_text_trains_a_study_that_fits_in_bits_per_byte(tmp_path, ray_local, capsys):
    src, corpus = tmp_path / "text", tmp_path / "corpus"
    src.mkdir()
    lines = (json.dumps({"text": d}) + "\n" for d in _documents(400))
    (src / "docs.jsonl").write_text("".join(lines))
    argv = ["prepare", str(src), "--out", str(corpus), "--train-bpe", "320", "--val-frac", "0.1"]
    assert main([*argv, "--workers", "1", "--quiet"]) == 0
    manifest = read_manifest(corpus)
    bytes_per_token = manifest.split("val").bytes_per_token

    plan = load_plan(_tiny_plan(tmp_path, corpus, manifest.vocab_size))
    specs = expand_plan(plan).specs
    assert len(specs) == 5 and plan.fit_loss == "bits_per_byte"
    assert {s.data.content_hash for s in specs} == {manifest.content_hash}
    capsys.readouterr()
    assert main(["submit", str(tmp_path / "tiny-bpe.yaml")]) == 0
    assert "losses in bits per byte of the held-out text" in capsys.readouterr().out

    store = Store(plan.experiment_uri)
    summary = store.summary()
    assert sorted(summary["run_id"].to_pylist()) == sorted(s.run_id for s in specs)
    for row in summary.to_pylist():
        assert row["status"] == "finished"
        assert row["eval_loss"] < math.log(manifest.vocab_size)  # learned something
        assert row["eval_bpb"] == pytest.approx(row["eval_loss"] / math.log(2) / bytes_per_token)
    # The fit the study stored is the one made on bits per byte, not on nats per token.
    observations = observations_from_summary(
        losses_for_fit(summary, "bits_per_byte"), Path(plan.experiment_uri)
    ).on_axis(compute_axis(plan))
    fit = fit_observations(observations, target_flops=plan.report_flops)
    assert (Path(plan.experiment_uri) / "fits" / f"{fit.record.fit_id}.json").is_file()
