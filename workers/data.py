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
- `tokens`: pre-tokenized shards (`.npy`, raw `.bin`, or a Parquet column of ids or of
  documents' id lists), in a local folder or under an `s3://` prefix, read by position:
  memory mapped locally, by ranged GETs on S3, Parquet one row group at a time
  (workers/token_readers.py). Held out: validation shards (by `eval_root` or by name),
  else the last `eval_frac` of every shard. The shards must still match the content
  hash the plan put in the spec (workers/data_hash.py).

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

from storage.errors import StoreError
from storage.fsio import redact
from workers.data_hash import (
    ShardFile,
    bytes_per_token,
    content_hash,
    is_remote,
    is_validation_name,
    list_shards,
)
from workers.manifest import ManifestError
from workers.spec import SHARD_SUFFIXES, DataSpec
from workers.token_readers import DataError, RowGroupCache, TokenShard, open_shard

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets), each (size, seq_len) int64


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
    """Windows from pre-tokenized shards, local or on S3; a window never crosses a shard
    or its held-out tail.

    Shards are opened for reads by position (workers/token_readers.py): only headers and
    Parquet footers are read up front, then only the windows drawn (a mapped page, a
    ranged GET, a Parquet row group). Shards whose content no longer matches
    `spec.content_hash` are refused before any is read.

    A window may cross a Parquet row-group boundary: a shard is numbered as one token
    stream whatever its row groups, so the windows, and the batches of a seed, are the
    same as those of the same tokens in a `.bin` shard, every token is drawn as often as
    on disk, and the pairs across a boundary are trained on. The price is a second row
    group decoded (from the cache, mostly) for the few windows that cross, against
    windows kept inside row groups, which would drop `seq_len` starts per group and tie
    the data's sampling to how the file's writer cut its groups.
    """

    def __init__(self, spec: DataSpec, *, seq_len: int, vocab: int):
        if spec.eod_id >= vocab:
            raise DataError(
                f"data.eod_id {spec.eod_id} is outside the model's vocab ({vocab})",
                hint="the end-of-document id must be a token id below shape.vocab",
            )
        files = _shards(spec.root)
        _check_content(spec)
        try:  # of the held-out data, which is what eval reports in bits per byte
            self.bytes_per_token = bytes_per_token(spec.eval_root or spec.root)
        except (ManifestError, StoreError) as err:
            raise DataError(err.message, hint=err.hint) from err
        except OSError as err:
            raise DataError(f"{redact(spec.eval_root or spec.root)}: cannot read: {err}") from err
        self.vocab = vocab
        self.seq_len = seq_len
        self._cache = RowGroupCache()
        self._eval: dict[tuple[int, int], list[Batch]] = {}

        def opened(file: ShardFile) -> TokenShard:
            return open_shard(
                file,
                token_dtype=spec.token_dtype,
                column=spec.column,
                eod_id=spec.eod_id,
                cache=self._cache,
            )

        train: list[_Span] = []
        held_out: list[_Span] = []
        eval_files = held_out_shards(spec, files)
        held = {f.identity for f in eval_files}
        for file in files:
            if file.identity in held:  # an eval_root inside the root is not trained on
                continue
            shard = opened(file)
            if eval_files:  # the held-out shards are apart: train on every token here
                train.append((shard, 0, shard.n_tokens))
                continue
            # The tail in token order: a Parquet shard's last documents, by row order.
            cut = shard.n_tokens - math.ceil(spec.eval_frac * shard.n_tokens)
            train.append((shard, 0, cut))
            held_out.append((shard, cut, shard.n_tokens))
        for file in eval_files:
            shard = opened(file)
            held_out.append((shard, 0, shard.n_tokens))
        if not train:
            raise DataError(f"{spec.root}: every shard is held out; no training tokens are left")
        self._train = _WindowIndex(train, seq_len, f"{spec.root} (training split)")
        self._held_out = _WindowIndex(held_out, seq_len, f"{spec.root} (held-out split)")
        log.debug(
            "tokens source %s: %d shards, %d train, %d held-out windows",
            redact(spec.root),
            len(files),
            self._train.n_windows,
            self._held_out.n_windows,
        )

    def batch(self, *, seed: int, rank: int, step: int, micro: int, size: int) -> Batch:
        # Each rank draws from its own stream, keyed by its rank: ranks draw distinct
        # windows (as likely to coincide as two draws of one rank: 1 / n_windows a pair),
        # and each rank reads only the windows it draws, never a whole shard.
        rng = np.random.default_rng([seed, rank, step, micro])
        return self._checked(self._train, rng.integers(0, self._train.n_windows, size))

    def eval_batches(self, *, n_batches: int, size: int) -> list[Batch]:
        # The same every time: kept, so that evaluating again reads nothing (a few windows).
        key = (n_batches, size)
        if key not in self._eval:
            n = self._held_out.n_windows
            starts = np.linspace(0, n - 1, n_batches * size).astype(np.int64)
            batches = starts.reshape(n_batches, size)
            self._eval[key] = [self._checked(self._held_out, s) for s in batches]
        return self._eval[key]

    def _checked(self, index: _WindowIndex, indices: np.ndarray) -> Batch:
        # Checked per batch (cheap next to a forward pass) rather than by scanning the
        # corpus: an id past the embedding would crash the run much less clearly.
        windows, shards = index.windows(indices)
        bad = (windows >= self.vocab) | (windows < 0)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            token = int(windows[row][bad[row]][0])
            raise DataError(
                f"token id {token} in {shards[row].where} is outside the model's vocab "
                f"({self.vocab})",
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
    except (ManifestError, StoreError) as err:
        raise DataError(err.message, hint=err.hint) from err
    except OSError as err:
        raise DataError(f"{redact(spec.root)}: cannot hash the token shards: {err}") from err
    if found != spec.content_hash:
        where = spec.root + (f" (and eval_root {spec.eval_root})" if spec.eval_root else "")
        raise DataError(
            f"token data at {redact(where)} changed since the plan was made: content hash "
            f"{found[:16]}, the run's spec says {spec.content_hash[:16]}",
            hint="submit the plan again: runs on the new data get new run ids",
        )


def held_out_shards(spec: DataSpec, files: list[ShardFile]) -> list[ShardFile]:
    """The shards kept for evaluation only, in path order: those under `spec.eval_root`;
    else, in a nanoGPT-style layout, the validation shards by name (`val.bin` beside
    `train.bin`; `val_003.npy`, `validation-0.parquet`); else none (each shard's tail is
    held out). The same rules locally and on S3."""
    if spec.eval_root:
        return _shards(spec.eval_root, what="eval_root ")
    named = [f for f in files if is_validation_name(f.name)]
    return named if named and len(named) < len(files) else []


def _shards(root: str, *, what: str = "") -> list[ShardFile]:
    try:
        found = list_shards(root)
    except StoreError as err:
        raise DataError(err.message, hint=err.hint) from err
    except OSError as err:
        raise DataError(f"cannot list token shards under {what}{redact(root)}: {err}") from err
    if found:
        return found
    if not is_remote(root) and not Path(root).exists():
        raise DataError(f"token data root {root} does not exist")
    raise DataError(
        f"no token shards under {what}{redact(root)}",
        hint=f"expected files ending {', '.join(SHARD_SUFFIXES)}",
    )


_Span = tuple[TokenShard, int, int]  # a shard's tokens [start, stop)


class _WindowIndex:
    """Start positions of windows of `seq_len + 1` tokens over spans of shards, numbered
    0..n_windows-1 so that one integer draw picks a span and an offset in it."""

    def __init__(self, spans: list[_Span], seq_len: int, what: str):
        self.spans = spans
        self.seq_len = seq_len
        counts = np.array([max(0, stop - start - seq_len) for _, start, stop in spans], np.int64)
        self.ends = np.cumsum(counts)
        self.n_windows = int(self.ends[-1]) if len(spans) else 0
        if self.n_windows == 0:
            raise DataError(f"{redact(what)}: no shard holds a window of {seq_len + 1} tokens")

    def windows(self, indices: np.ndarray) -> tuple[np.ndarray, list[TokenShard]]:
        """(windows, the shard of each): int64 (len(indices), seq_len + 1)."""
        span = np.searchsorted(self.ends, indices, side="right")
        offsets = indices - np.concatenate([[0], self.ends])[span]
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        # Read in file order, so that windows in one Parquet row group decode it once.
        for i in np.lexsort((offsets, span)):
            shard, start, _ = self.spans[span[i]]
            first = start + int(offsets[i])
            out[i] = shard.read(first, first + self.seq_len + 1)
        shards = [self.spans[s][0] for s in span]
        return out, shards
