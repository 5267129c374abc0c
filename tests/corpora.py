"""Tiny prepared corpora for tests: random sentences over a few words, a byte-level BPE
of 300 ids trained on them, and `orch prepare`'s shards and manifest (workers/prepare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workers.prepare import PrepareResult, prepare
from workers.tokenizer import train_bpe


def prepared_corpus(
    base: Path,
    words: str,
    *,
    docs: int,
    words_per_doc: int,
    seed: int,
    out: str,
    val_frac: float | None = None,
) -> PrepareResult:
    """`docs` documents of `words_per_doc` words drawn from `words` (seeded), written as
    base/<jsonl>, with their tokenizer, prepared into base/`out`."""
    vocabulary = words.split()
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(vocabulary, size=words_per_doc)) for _ in range(docs)]
    source = base / f"{out}.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    train_bpe(texts, vocab_size=300).save(str(base / "tok.json"))
    extra = {} if val_frac is None else {"val_frac": val_frac}
    return prepare([source], base / out, tokenizer=base / "tok.json", workers=1, **extra)
