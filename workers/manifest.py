"""The manifest of a prepared corpus (`orch prepare`): what its shards hold and its identity.

`DIR/manifest.json` sits beside the shards it describes (headerless `train_<k>.bin` and
`val_<k>.bin` arrays of `dtype` token ids, every document followed by `eod_id`) and the
tokenizer that made them. It is written last, so a directory with a manifest is complete.

Identity: `content_hash` is sha256 over the tokenizer file's sha256 and every shard's
(name, sha256), in name order. It changes when any token of any shard changes, or the
tokenizer does, and not when the corpus is moved or re-prepared to the same bytes. Run ids
will include it, so a changed corpus never reuses runs trained on the old one.

Pure Python (no torch): the planner and the worker both read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import pyarrow.fs as pafs

from storage.errors import OrchError
from storage.fsio import write_bytes_atomic
from workers.spec import TokenDtype

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1  # bump when a field changes meaning; readers refuse newer versions
Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")


class ManifestError(OrchError, ValueError):
    """A corpus manifest is missing, unreadable, or disagrees with itself or its shards."""


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One shard file of the corpus."""

    name: str  # file name inside the corpus directory, e.g. "train_00003.bin"
    split: Split
    documents: int  # documents in the shard, each ended by the end-of-document id
    tokens: int  # token ids in the file, end-of-document ids included
    source_bytes: int  # UTF-8 bytes of the documents' text before tokenizing
    sha256: str  # of the file's bytes


@dataclass(frozen=True, kw_only=True)
class SplitTotals:
    """The sums over one split's shards."""

    shards: int = 0
    documents: int = 0
    tokens: int = 0  # end-of-document ids included
    source_bytes: int = 0

    @property
    def bytes_per_token(self) -> float | None:
        """Source UTF-8 bytes per token (None without tokens): bits per byte is
        nats per token / ln 2 / bytes_per_token."""
        return self.source_bytes / self.tokens if self.tokens else None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A prepared corpus: its tokenizer, token type and shards."""

    tokenizer: str  # file name of the tokenizer.json inside the corpus directory
    tokenizer_sha256: str
    vocab_size: int  # highest token id + 1: the smallest shape.vocab that fits
    eod_token: str  # the end-of-document token's text, e.g. "<|endoftext|>"
    eod_id: int
    dtype: TokenDtype  # element type of the headerless shards
    shards: tuple[ShardInfo, ...]  # in name order
    format_version: int = FORMAT_VERSION

    def split(self, name: Split) -> SplitTotals:
        mine = [s for s in self.shards if s.split == name]
        return SplitTotals(
            shards=len(mine),
            documents=sum(s.documents for s in mine),
            tokens=sum(s.tokens for s in mine),
            source_bytes=sum(s.source_bytes for s in mine),
        )

    @property
    def bytes_per_token(self) -> float | None:
        """Source UTF-8 bytes per token over both splits (None without tokens)."""
        tokens = sum(s.tokens for s in self.shards)
        return sum(s.source_bytes for s in self.shards) / tokens if tokens else None

    @property
    def content_hash(self) -> str:
        """64 hex: sha256 over the tokenizer's sha256 and each shard's (name, sha256)."""
        shards = sorted((s.name, s.sha256) for s in self.shards)
        payload = {"tokenizer_sha256": self.tokenizer_sha256, "shards": shards}
        return hashlib.sha256(_canonical(payload)).hexdigest()

    def check_shard_sizes(self, sizes: dict[str, int], *, where: str) -> None:
        """Raises ManifestError naming `where` unless every shard is in `sizes` (file name
        -> bytes) with the size its token count implies."""
        width = _itemsize(self.dtype)
        for shard in self.shards:
            size = sizes.get(shard.name)
            if size != shard.tokens * width:
                found = "missing" if size is None else f"{size} bytes"
                raise ManifestError(
                    f"{where}: shard {shard.name} is {found}, expected {shard.tokens * width} "
                    f"bytes ({shard.tokens} {self.dtype} tokens)",
                    hint="prepare the corpus again (the same command resumes)",
                )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written: fields, then the derived totals and hash for readers
        that are not this module (they are checked against the shards on reading)."""
        out = {"format_version": self.format_version, **dataclasses.asdict(self)}
        out["shards"] = [dataclasses.asdict(s) for s in self.shards]
        out["splits"] = {
            name: {**dataclasses.asdict(t), "bytes_per_token": t.bytes_per_token}
            for name in SPLITS
            for t in [self.split(name)]
        }
        out["bytes_per_token"] = self.bytes_per_token
        out["content_hash"] = self.content_hash
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> Manifest:
        """The manifest `data` describes; ManifestError naming `source` if it is not one."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ManifestError(
                f"{source}: format_version {version!r} is not one this code reads "
                f"(1..{FORMAT_VERSION})",
                hint="prepare the corpus again, or update the code",
            )
        shards = data.get("shards")
        if not isinstance(shards, list):
            raise ManifestError(f"{source}: shards: expected a list")
        try:
            manifest = cls(
                tokenizer=_field(data, "tokenizer", str, source),
                tokenizer_sha256=_field(data, "tokenizer_sha256", str, source),
                vocab_size=_field(data, "vocab_size", int, source),
                eod_token=_field(data, "eod_token", str, source),
                eod_id=_field(data, "eod_id", int, source),
                dtype=_field(data, "dtype", str, source),  # type: ignore[arg-type]
                shards=tuple(_shard(s, f"{source}: shards[{i}]") for i, s in enumerate(shards)),
                format_version=version,
            )
        except TypeError as err:  # a field this version does not know
            raise ManifestError(f"{source}: {err}") from err
        manifest._check(data, source)
        return manifest

    def _check(self, data: dict[str, Any], source: str) -> None:
        if self.dtype not in get_args(TokenDtype):
            raise ManifestError(f"{source}: dtype must be uint16 or uint32, got {self.dtype!r}")
        if not 0 <= self.eod_id < self.vocab_size <= 2 ** (8 * _itemsize(self.dtype)):
            raise ManifestError(
                f"{source}: eod_id {self.eod_id} and vocab_size {self.vocab_size} do not fit "
                f"{self.dtype}"
            )
        names = [s.name for s in self.shards]
        if len(set(names)) != len(names):
            raise ManifestError(f"{source}: a shard is listed twice")
        written = data.get("splits")
        if written is not None and written != self.to_dict()["splits"]:
            raise ManifestError(
                f"{source}: splits: the totals disagree with the shards listed",
                hint="the manifest was edited by hand; prepare the corpus again",
            )
        stored = data.get("content_hash")
        if stored != self.content_hash:
            raise ManifestError(
                f"{source}: content_hash {stored!r} does not match its tokenizer and shards "
                f"({self.content_hash})",
                hint="the manifest was edited by hand; prepare the corpus again",
            )


def read_manifest(directory: str | Path, *, check_shards: bool = True) -> Manifest:
    """The manifest of the corpus prepared into `directory`.

    Args:
        check_shards: also check that every shard file is there with the size its token
            count implies (one stat per shard; their contents are not hashed again).

    Raises:
        ManifestError: one line naming the file: missing, not JSON, a field missing or
            of the wrong type, totals or content hash that disagree with the shards, or
            (with `check_shards`) a shard missing or of the wrong size.
    """
    path = Path(directory) / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError as err:
        raise ManifestError(
            f"{path}: no manifest", hint="prepare the corpus with `orch prepare ... --out DIR`"
        ) from err
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise ManifestError(f"{path}: cannot read the manifest: {err}") from err
    manifest = Manifest.from_dict(data, source=str(path))
    if check_shards:
        sizes = {}
        for shard in manifest.shards:
            shard_path = Path(directory) / shard.name
            if shard_path.is_file():
                sizes[shard.name] = shard_path.stat().st_size
        manifest.check_shard_sizes(sizes, where=str(path))
    return manifest


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write `directory/manifest.json` atomically; returns its path."""
    path = Path(directory).resolve() / MANIFEST_NAME
    text = json.dumps(manifest.to_dict(), indent=1, allow_nan=False) + "\n"
    write_bytes_atomic(pafs.LocalFileSystem(), path.as_posix(), text.encode())
    log.info(
        "manifest %s: %d shards, content hash %s", path, len(manifest.shards), manifest.content_hash
    )
    return path


def _itemsize(dtype: str) -> int:
    return {"uint16": 2, "uint32": 4}[dtype]


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _field(data: dict[str, Any], key: str, kind: type, source: str) -> Any:
    value = data.get(key)
    # bool is an int in Python, never a count here.
    if not isinstance(value, kind) or isinstance(value, bool):
        got = "missing" if key not in data else f"{type(value).__name__} {value!r}"
        raise ManifestError(f"{source}: {key}: expected {kind.__name__}, got {got}")
    if kind is int and value < 0:
        raise ManifestError(f"{source}: {key}: expected a count >= 0, got {value}")
    return value


def _shard(data: Any, source: str) -> ShardInfo:
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected an object")
    split = data.get("split")
    if split not in SPLITS:
        raise ManifestError(f"{source}: split must be train or val, got {split!r}")
    name = _field(data, "name", str, source)
    if "/" in name or name.startswith("."):  # a shard lives in the corpus directory itself
        raise ManifestError(f"{source}: name {name!r} is not a file name in the directory")
    return ShardInfo(
        name=name,
        split=split,
        documents=_field(data, "documents", int, source),
        tokens=_field(data, "tokens", int, source),
        source_bytes=_field(data, "source_bytes", int, source),
        sha256=_field(data, "sha256", str, source),
    )
