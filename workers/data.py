"""Training data sources behind one interface: a deterministic stream of token windows.

Every source has `vocab`, `batch(seed=, rank=, step=, micro=, size=)` and
`eval_batches(n_batches=, size=)`, each returning (inputs, targets) pairs of int64
tensors of shape (size, seq_len), targets being inputs shifted by one token.

- `bytes`: a directory of text files read as bytes (vocab 256). The default root,
  "stdlib", is this Python's standard library source, which is on every machine (the
  installed site-packages are left out, so installing a package does not change the data).
  Held out: the files whose path hashes into `eval_frac`, the same for every run and seed.
- `synthetic`: a first-order Markov chain with a known entropy rate. A model that sees the
  previous token can at best predict the next with the chain's own transition row, so the
  irreducible loss (nats/token) is exactly the entropy rate. Held out: a separate stream.
- `tokens`: pre-tokenized shards (`.npy`, raw `.bin`, or a Parquet column of ids), memory
  mapped where the format allows. Held out: validation shards (by `eval_root` or by
  name), else the last `eval_frac` of every shard. The shards must still match the
  content hash the plan put in the spec (workers/data_hash.py).

Batches are a pure function of (seed, rank, step, micro): a run resumed from a checkpoint
at step s sees exactly the batches an uninterrupted run would have seen, and ranks never
draw the same windows.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sysconfig
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from workers.data_hash import bytes_per_token, content_hash, list_shards
from workers.errors import WorkerError
from workers.manifest import ManifestError
from workers.spec import SHARD_SUFFIXES, DataSpec

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets), each (size, seq_len) int64


class DataError(WorkerError, ValueError):
    """A data source cannot be opened or yields tokens the model cannot take."""


class Source(Protocol):
    vocab: int  # token ids are below this
    # Source text bytes per token, for bits per byte (bpb = nats/token / ln 2 / this);
    # None where tokens stand for no text (synthetic, or shards with no manifest).
    bytes_per_token: float | None

    def batch(self, *, seed: int, rank: int, step: int, micro: int, size: int) -> Batch:
        """Micro-batch `micro` of `rank` at optimizer step `step`."""
        ...

    def eval_batches(self, *, n_batches: int, size: int) -> list[Batch]:
        """The held-out batches: the same for every run, seed and rank."""
        ...


def open_source(spec: DataSpec, *, seq_len: int, vocab: int) -> Source:
    """The source `spec` names, yielding windows of `seq_len` tokens with ids < `vocab`."""
    if spec.source == "bytes":
        return ByteSource(spec, seq_len=seq_len)
    if spec.source == "synthetic":
        return MarkovSource(spec, seq_len=seq_len, vocab=vocab)
    if spec.source == "tokens":
        return TokenSource(spec, seq_len=seq_len, vocab=vocab)
    raise DataError(f"unknown data source {spec.source!r}")


def _to_batch(windows: np.ndarray) -> Batch:
    w = torch.from_numpy(windows.astype(np.int64))
    return w[:, :-1], w[:, 1:]


# -- bytes ----------------------------------------------------------------------------

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_SUFFIXES = {".py", ".txt", ".rst", ".md"}


def _root(spec: DataSpec) -> Path:
    return Path(sysconfig.get_paths()["stdlib"]) if spec.root == "stdlib" else Path(spec.root)


def _files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        found += [Path(dirpath, f) for f in sorted(filenames) if Path(f).suffix in _SUFFIXES]
    return found


def _is_held_out(relpath: str, eval_frac: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:4], "big") % 10_000
    return bucket < eval_frac * 10_000


class ByteSource:
    """Windows of `seq_len + 1` bytes from a directory of text files."""

    vocab = 256
    bytes_per_token = 1.0  # a token is a byte

    def __init__(self, spec: DataSpec, *, seq_len: int):
        root = _root(spec)
        files = _files(root)
        if not files:
            raise DataError(f"no text files under {root}", hint="data.root: a directory of text")
        parts: dict[bool, list[bytes]] = {True: [], False: []}
        for path in files:
            held_out = _is_held_out(path.relative_to(root).as_posix(), spec.eval_frac)
            parts[held_out].append(path.read_bytes())
        self.seq_len = seq_len
        self.train = np.frombuffer(b"\n".join(parts[False]), dtype=np.uint8)
        self.held_out = np.frombuffer(b"\n".join(parts[True]), dtype=np.uint8)
        for name, arr in (("training", self.train), ("held-out", self.held_out)):
            if arr.size <= seq_len + 1:
                raise DataError(f"{root}: {name} split has {arr.size} bytes, need > {seq_len + 1}")
        log.debug(
            "bytes source %s: %d train, %d held-out bytes",
            root,
            self.train.size,
            self.held_out.size,
        )

    def batch(self, *, seed: int, rank: int, step: int, micro: int, size: int) -> Batch:
        """(inputs, targets), each (size, seq_len) int64: one micro-batch of `rank` at `step`."""
        rng = np.random.default_rng([seed, rank, step, micro])
        starts = rng.integers(0, self.train.size - self.seq_len - 1, size=size)
        return self._windows(self.train, starts)

    def eval_batches(self, *, n_batches: int, size: int) -> list[Batch]:
        """Fixed, evenly spaced held-out windows: the same for every run, seed and rank."""
        starts = np.linspace(0, self.held_out.size - self.seq_len - 1, n_batches * size).astype(
            np.int64
        )
        return [self._windows(self.held_out, s) for s in starts.reshape(n_batches, size)]

    def _windows(self, arr: np.ndarray, starts: np.ndarray) -> Batch:
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        return _to_batch(arr[idx])


# -- synthetic --------------------------------------------------------------------------


class MarkovSource:
    """Sequences of a first-order Markov chain over `vocab` tokens, with a known entropy rate.

    The chain's transition rows are drawn from Dirichlet(markov_alpha) with `markov_seed`;
    every window starts from the stationary distribution, so each target position has the
    same conditional entropy: the entropy rate, which is the irreducible loss.
    """

    bytes_per_token = None  # the chain's tokens stand for no text

    def __init__(self, spec: DataSpec, *, seq_len: int, vocab: int):
        rng = np.random.default_rng([spec.markov_seed, vocab])
        self.vocab = vocab
        self.seq_len = seq_len
        self.transitions = rng.dirichlet(np.full(vocab, spec.markov_alpha), size=vocab)  # (V, V)
        self.stationary = _stationary(self.transitions)  # (V,)
        self._cumulative = np.cumsum(self.transitions, axis=1)
        # Five words, the last non-zero: no 4-word training key (seed, rank, step, micro) can
        # seed the same stream (SeedSequence pads short keys with zeros).
        self._eval_key = [0x5EED, 0xE7A1, spec.markov_seed, vocab, 1]
        with np.errstate(divide="ignore"):
            log_p = np.where(self.transitions > 0, np.log(self.transitions), 0.0)
        self._log_p = log_p

    @property
    def entropy_rate(self) -> float:
        """H = -sum_i pi_i sum_j P_ij ln P_ij in nats/token (Cover & Thomas, thm. 4.2.4):
        the lowest expected loss any model can reach on this chain."""
        return float(-(self.stationary[:, None] * self.transitions * self._log_p).sum())

    def chain_loss(self, batches: list[Batch]) -> float:
        """The chain's own mean loss on `batches`, nats/token: the floor for this sample."""
        total = sum(-self._log_p[x.numpy(), y.numpy()].sum() for x, y in batches)
        return float(total / sum(y.numel() for _, y in batches))

    def batch(self, *, seed: int, rank: int, step: int, micro: int, size: int) -> Batch:
        return self._sample(np.random.default_rng([seed, rank, step, micro]), size)

    def eval_batches(self, *, n_batches: int, size: int) -> list[Batch]:
        rng = np.random.default_rng(self._eval_key)
        return [self._sample(rng, size) for _ in range(n_batches)]

    def _sample(self, rng: np.random.Generator, size: int) -> Batch:
        out = np.empty((size, self.seq_len + 1), dtype=np.int64)
        out[:, 0] = rng.choice(self.vocab, size=size, p=self.stationary)
        u = rng.random((size, self.seq_len))
        for t in range(self.seq_len):  # inverse-CDF draw of each row's next token
            nxt = (self._cumulative[out[:, t]] < u[:, t, None]).sum(axis=1)
            out[:, t + 1] = np.minimum(nxt, self.vocab - 1)  # u beyond a cumsum of 1 - eps
        return _to_batch(out)


def _stationary(transitions: np.ndarray) -> np.ndarray:
    """pi with pi P = pi, sum(pi) = 1: the left eigenvector of P for eigenvalue 1."""
    n = transitions.shape[0]
    system = np.vstack([transitions.T - np.eye(n), np.ones((1, n))])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    pi = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


# -- tokens ------------------------------------------------------------------------------


class TokenSource:
    """Windows from pre-tokenized shards; a window never crosses a shard or its held-out tail.

    `.npy` and `.bin` shards are memory mapped (only the windows drawn are read); a
    Parquet column is read into memory once (Parquet cannot be mapped). Shards whose
    content no longer matches `spec.content_hash` are refused before any is read.
    """

    def __init__(self, spec: DataSpec, *, seq_len: int, vocab: int):
        root = Path(spec.root)
        paths = _shards(root)
        if not paths:
            raise DataError(
                f"no token shards under {root}", hint=f"expected files ending {SHARD_SUFFIXES}"
            )
        _check_content(spec)
        try:  # of the held-out data, which is what eval reports in bits per byte
            self.bytes_per_token = bytes_per_token(spec.eval_root or root)
        except ManifestError as err:
            raise DataError(str(err), hint=err.hint) from err
        self.vocab = vocab
        self.seq_len = seq_len
        self._root = root
        train, held_out = [], []
        eval_paths = held_out_shards(spec, paths)
        for path in paths:
            if path in eval_paths:
                continue
            tokens = _load_shard(path, spec)
            if eval_paths:  # the held-out shards are apart: train on every token here
                train.append(tokens)
                continue
            cut = len(tokens) - math.ceil(spec.eval_frac * len(tokens))
            train.append(tokens[:cut])
            held_out.append(tokens[cut:])
        held_out += [_load_shard(path, spec) for path in sorted(eval_paths)]
        if not train:
            raise DataError(f"{root}: every shard is held out; no training tokens are left")
        self._train = _WindowIndex(train, seq_len, f"{root} (training split)")
        self._held_out = _WindowIndex(held_out, seq_len, f"{root} (held-out split)")
        log.debug(
            "tokens source %s: %d shards, %d train, %d held-out windows",
            root,
            len(paths),
            self._train.n_windows,
            self._held_out.n_windows,
        )

    def batch(self, *, seed: int, rank: int, step: int, micro: int, size: int) -> Batch:
        rng = np.random.default_rng([seed, rank, step, micro])
        return self._checked(self._train.windows(rng.integers(0, self._train.n_windows, size)))

    def eval_batches(self, *, n_batches: int, size: int) -> list[Batch]:
        starts = np.linspace(0, self._held_out.n_windows - 1, n_batches * size).astype(np.int64)
        return [self._checked(self._held_out.windows(s)) for s in starts.reshape(n_batches, size)]

    def _checked(self, windows: np.ndarray) -> Batch:
        # Checked per batch (cheap next to a forward pass) rather than by scanning the
        # corpus: an id past the embedding would crash the run much less clearly.
        top = int(windows.max())
        if top >= self.vocab:
            raise DataError(
                f"token id {top} in {self._root} is outside the model's vocab ({self.vocab})",
                hint="set shape.vocab to the tokenizer's vocabulary size",
            )
        return _to_batch(windows)


def _check_content(spec: DataSpec) -> None:
    """Refuse shards that changed since the plan hashed them: runs under one id must
    train on one corpus (specs without a hash, written before it existed, pass)."""
    if not spec.content_hash:
        return
    try:
        found = content_hash(spec.root, eval_root=spec.eval_root)
    except ManifestError as err:
        raise DataError(str(err), hint=err.hint) from err
    except OSError as err:
        raise DataError(f"{spec.root}: cannot hash the token shards: {err}") from err
    if found != spec.content_hash:
        where = spec.root + (f" (and eval_root {spec.eval_root})" if spec.eval_root else "")
        raise DataError(
            f"token data at {where} changed since the plan was made: content hash "
            f"{found[:16]}, the run's spec says {spec.content_hash[:16]}",
            hint="submit the plan again: runs on the new data get new run ids",
        )


def held_out_shards(spec: DataSpec, paths: list[Path]) -> set[Path]:
    """The shards kept for evaluation only: those under `spec.eval_root`; else, in a
    nanoGPT-style layout, the validation shards by name (`val.bin` beside `train.bin`;
    `val_003.npy`, `validation-0.parquet`); else none (each shard's tail is held out)."""
    if spec.eval_root:
        eval_root = Path(spec.eval_root)
        found = _shards(eval_root)
        if not found:
            raise DataError(f"no token shards under eval_root {eval_root}")
        return set(found)
    named = {p for p in paths if _is_validation_name(p.stem)}
    return named if named and len(named) < len(paths) else set()


def _is_validation_name(stem: str) -> bool:
    stem = stem.lower()
    return stem in ("val", "valid", "validation") or stem.startswith(
        ("val_", "val-", "valid_", "valid-", "validation_", "validation-")
    )


def _shards(root: Path) -> list[Path]:
    if not root.exists():
        raise DataError(f"token data root {root} does not exist")
    return list_shards(root)


def _load_shard(path: Path, spec: DataSpec) -> np.ndarray:
    if path.suffix == ".npy" and _has_npy_header(path):
        tokens = np.load(path, mmap_mode="r")
    elif path.suffix == ".npy":  # headerless, as OLMo writes its token memmaps
        tokens = _memmap(path, spec)
    elif path.suffix == ".bin":
        tokens = _memmap(path, spec)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            column = pq.read_table(path, columns=[spec.column]).column(spec.column)
        except (KeyError, pa.ArrowInvalid) as err:
            raise DataError(f"{path}: cannot read token column {spec.column!r}: {err}") from err
        column = column.combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = column.flatten()  # documents concatenated in order
        tokens = column.to_numpy(zero_copy_only=False)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-D array of token ids, got {tokens.dtype}")
    return tokens


def _has_npy_header(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(6) == b"\x93NUMPY"


def _memmap(path: Path, spec: DataSpec) -> np.ndarray:
    """A headerless shard of `spec.token_dtype` ids, mapped (nothing read until used)."""
    size = path.stat().st_size
    width = np.dtype(spec.token_dtype).itemsize
    if size == 0:
        raise DataError(f"{path}: empty token shard")
    if size % width:
        raise DataError(
            f"{path}: {size} bytes is not a whole number of {spec.token_dtype} tokens",
            hint="data.token_dtype: the dtype the shard was written with (uint16 or uint32)",
        )
    return np.memmap(path, dtype=spec.token_dtype, mode="r")


class _WindowIndex:
    """Start positions of windows of `seq_len + 1` tokens over several arrays, numbered
    0..n_windows-1 so that one integer draw picks a shard and an offset."""

    def __init__(self, arrays: list[np.ndarray], seq_len: int, what: str):
        self.arrays = arrays
        self.seq_len = seq_len
        counts = np.array([max(0, len(a) - seq_len) for a in arrays], dtype=np.int64)
        self.ends = np.cumsum(counts)
        self.n_windows = int(self.ends[-1]) if len(arrays) else 0
        if self.n_windows == 0:
            raise DataError(f"{what}: no shard holds a window of {seq_len + 1} tokens")

    def windows(self, indices: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self.ends, indices, side="right")
        offsets = indices - np.concatenate([[0], self.ends])[shard]
        span = self.seq_len + 1
        return np.stack([self.arrays[s][o : o + span] for s, o in zip(shard, offsets, strict=True)])
