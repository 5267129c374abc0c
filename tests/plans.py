"""The repository's plans as tests read them, with a cluster's corpus stood in for.

plans/chinchilla.yaml trains on the cluster's tokenized corpus at /data/corpus, and the
planner reads a tokens root when it loads a plan (run ids include its content hash), so
the plan loads only where that corpus is. `plan_text(name)` is the plan with that root
pointed at a tiny corpus made here instead; everything else is the file as shipped.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_CORPUS = "/data/corpus"  # plans/chinchilla.yaml's data.root


@functools.cache
def stand_in_corpus() -> Path:
    """A nanoGPT-style pair of uint16 shards (train.bin, val.bin), made once per process."""
    root = Path(tempfile.mkdtemp(prefix="orch-test-corpus-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    ids = np.frombuffer((ROOT / "README.md").read_bytes()[:8192], np.uint8).astype(np.uint16)
    ids.tofile(root / "train.bin")
    ids[:1024].tofile(root / "val.bin")
    return root


def plan_text(name: str) -> str:
    """plans/`name` as text, its cluster corpus replaced by `stand_in_corpus()`."""
    text = (ROOT / "plans" / name).read_text()
    line = f"root: {CLUSTER_CORPUS}"
    if line not in text:
        return text
    return text.replace(line, f"root: {stand_in_corpus()}")
