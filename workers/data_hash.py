"""The shards of a tokens source and their content hash: what makes a run's identity
follow its data.

Listing: a root is a shard file, or a folder (on S3, a key prefix) whose files ending in
a shard suffix (`SHARD_SUFFIXES`), at any depth, are its shards, in path order. A local
root is listed as it always was (the hash, and so run ids, depend on the listing); an S3
root (`s3://bucket/prefix?endpoint_override=host:port&scheme=http`, credentials from
the AWS environment, storage/fsio.py `resolve`) by the same rule over its keys, so a
corpus uploaded as it is lists, names and hashes the same as on disk.

The planner puts the hash in every RunSpec of a tokens plan (`DataSpec.content_hash`), so a
changed corpus changes every run id and never reuses runs trained on the old one; the
worker computes it again before training and refuses data that no longer matches.

- A root prepared by `orch prepare` (a directory with `manifest.json`): the manifest's
  `content_hash` (its tokenizer's and shards' sha256, computed once when prepared). Only
  the manifest is read, and each shard stat'ed: a shard missing, of the wrong size, or
  not listed in the manifest is an error, since the worker would read what the hash
  does not cover. A shard edited in place to the same size is not seen (prepare again).
- Any other root (a shard, or a folder of shards another tool wrote): sha256 over each
  shard's path below the root, size and sha256 of its bytes. This reads every byte:
  measured on a 100 MiB shard (2 shared cores of an AMD EPYC with SHA extensions),
  0.08-0.09 s from the page cache and 0.13 s after evicting it: about 1 GB/s, so some
  17 s for a 17 GB OpenWebText train.bin, or the disk's pace where it is slower.
  A process keeps each file's hash while its size, times and inode are unchanged, so a
  driver re-planning, or a pooled worker training run after run, reads a corpus once.
- With a separate `eval_root`, the hash covers both roots.
- A root on S3 hashes as the same files on disk do: a manifest is read from the
  prefix; other shards are streamed through sha256 a chunk at a time (never
  held whole in memory), once per process while each object's size and modification
  time are unchanged. The blind spot is wider than on disk: S3 stamps times to the
  second, so a same-size overwrite within a second of the first write is not seen.
  The worker checks the hash again before training: on S3 that reads every shard once
  per worker process, so a large corpus is best prepared (`orch prepare`) and uploaded
  with its manifest, which makes the check a listing.

Names below a root, never absolute paths, go into the hash: a corpus moved elsewhere
keeps its hash. Pure Python (no torch): the planner and the worker both use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs

from storage.fsio import join_uri, redact, resolve
from workers.manifest import MANIFEST_NAME, Manifest, ManifestError, read_manifest
from workers.spec import SHARD_SUFFIXES

log = logging.getLogger(__name__)

_LOCAL = pafs.LocalFileSystem()

_CHUNK_BYTES = 1 << 20
# Local: (path, size, mtime_ns, ctime_ns, inode, device) -> sha256 hex. ctime moves on every
# write and no user tool can set it back (mtime can be), so a file written since is hashed
# again; the one blind spot is a same-size write within the clock tick (a few ms) of the
# previous one, as the kernel stamps ctime at tick granularity.
# S3: (URI with its options, size, mtime_ns) -> sha256 hex (see the module docstring).
_FILE_HASHES: dict[tuple, str] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class ShardFile:
    """One token shard file, local or on S3, as listed (size and time at listing)."""

    name: str  # below the root, "/"-separated; the file's own name when the root is the file
    where: str  # for messages: the local path, or s3://bucket/key
    uri: str  # what names it for a process-wide memo: a path, or the URI with its options
    size: int  # bytes
    mtime_ns: int
    fs: pafs.FileSystem = field(compare=False)
    path: str  # inside `fs`; absolute for a local file

    @property
    def identity(self) -> tuple[str, str]:
        """The file whatever the spelling of its root (relative, or with other S3 options)."""
        return (self.fs.type_name, self.path)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def open(self) -> pa.NativeFile:
        """A random-access handle. On S3, opening is one HEAD request and each `read_at`
        one ranged GET of just the bytes asked for."""
        return self.fs.open_input_file(self.path)


def is_remote(root: str | Path) -> bool:
    """Whether `root` is a URI (s3://...) rather than a local path."""
    return "://" in str(root) and not str(root).startswith("file://")


def list_shards(root: str | Path) -> list[ShardFile]:
    """The token shards at `root`: the file itself, or every file below the folder (or S3
    prefix) ending in a shard suffix, in path order; empty if there are none.

    Raises:
        StoreError: an S3 URI that cannot be opened (bad options, unreachable endpoint).
        OSError: listing the S3 prefix failed.
    """
    if not is_remote(root):
        return _local_shards(Path(str(root).removeprefix("file://")))
    fs, path = resolve(str(root))
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        name = PurePosixPath(path).name
        return [_remote(fs, info, name, str(root))] if _is_shard_name(name) else []
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=True)
    found = [
        (i.path[len(path) + 1 :], i)
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File and _is_shard_name(i.path)
    ]
    # The order a local listing has (pathlib compares paths part by part).
    found.sort(key=lambda item: item[0].split("/"))
    return [_remote(fs, i, rel, join_uri(str(root), rel)) for rel, i in found]


def is_validation_name(name: str) -> bool:
    """Whether a shard's name marks it as validation data: nanoGPT's `val.bin`, and
    `val_003.npy`, `validation-0.parquet` and the like (any case)."""
    stem = PurePosixPath(name).stem.lower()
    return stem in ("val", "valid", "validation") or stem.startswith(
        ("val_", "val-", "valid_", "valid-", "validation_", "validation-")
    )


def root_manifest(root: str | Path) -> Manifest | None:
    """The manifest of a root prepared by `orch prepare` (a local folder or S3 prefix with
    `manifest.json`), not yet checked against the shard files; None without one.

    Raises:
        ManifestError: the manifest is unreadable or disagrees with itself.
        StoreError, OSError: as `list_shards`.
    """
    if not is_remote(root):
        local = Path(str(root).removeprefix("file://"))
        if not (local / MANIFEST_NAME).is_file():
            return None
        return read_manifest(local, check_shards=False)
    fs, path = resolve(str(root))
    where = f"{_scheme(str(root))}://{path}/{MANIFEST_NAME}"
    try:
        with fs.open_input_stream(f"{path}/{MANIFEST_NAME}") as stream:
            data = stream.read()
    except FileNotFoundError:
        return None
    try:
        parsed = json.loads(data)
    except ValueError as err:  # not UTF-8, not JSON
        raise ManifestError(f"{where}: cannot read the manifest: {err}") from err
    return Manifest.from_dict(parsed, source=where)


def content_hash(root: str | Path, *, eval_root: str | Path = "") -> str:
    """64 hex: the hash of the token shards at `root` (and `eval_root`, if given), each a
    local path or an `s3://` prefix.

    Raises:
        ManifestError: a prepared root whose manifest is unreadable or disagrees with
            the shard files there (one line naming the file).
        OSError: a shard cannot be read, or an S3 prefix cannot be listed.
        StoreError: an S3 URI that cannot be opened.
    """
    main = _root_hash(root)
    if not eval_root:
        return main
    both = {"root": main, "eval_root": _root_hash(eval_root)}
    return hashlib.sha256(_canonical(both)).hexdigest()


def bytes_per_token(root: str | Path) -> float | None:
    """Source UTF-8 bytes per token of a prepared root's validation split (what eval
    reads), else of all its shards; None for a root without a manifest."""
    manifest = root_manifest(root)
    if manifest is None:
        return None
    return manifest.split("val").bytes_per_token or manifest.bytes_per_token


def _root_hash(root: str | Path) -> str:
    files = list_shards(root)
    manifest = root_manifest(root)
    if manifest is not None:
        return _manifest_hash(root, manifest, files)
    listing = [[f.name, *_file_hash(f)] for f in files]
    return hashlib.sha256(_canonical({"shards": listing})).hexdigest()


def _manifest_hash(root: str | Path, manifest: Manifest, files: list[ShardFile]) -> str:
    """The manifest's hash, once every shard it lists is there with the size its token
    count implies and no other shard is (one stat per shard, from the listing)."""
    where = f"{str(root).split('?', 1)[0].rstrip('/')}/{MANIFEST_NAME}"
    sizes = {f.name: f.size for f in files}
    manifest.check_shard_sizes(sizes, where=where)
    extra = sorted(set(sizes) - {s.name for s in manifest.shards})
    if extra:
        raise ManifestError(
            f"{where}: {root} holds token shards the manifest does not list "
            f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}), which the worker "
            "would train on",
            hint="move them out of the corpus folder, or prepare the corpus again",
        )
    return manifest.content_hash


def _file_hash(file: ShardFile) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a shard, from the process's memo when unchanged."""
    if not file.is_local:
        return file.size, _remote_file_hash(file)
    path = Path(file.path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    with _LOCK:
        known = _FILE_HASHES.get(key)
    if known is not None:
        return st.st_size, known
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    after = path.stat()
    if (after.st_size, after.st_ctime_ns) != (st.st_size, st.st_ctime_ns):
        raise OSError(f"{path} changed while it was being hashed")
    with _LOCK:
        _FILE_HASHES[key] = digest.hexdigest()
    log.debug("hashed %s: %d bytes", path, st.st_size)
    return st.st_size, digest.hexdigest()


def _remote_file_hash(file: ShardFile) -> str:
    """sha256 hex of an object, streamed a chunk at a time."""
    key = (file.uri, file.size, file.mtime_ns)
    with _LOCK:
        known = _FILE_HASHES.get(key)
    if known is not None:
        return known
    digest, read = hashlib.sha256(), 0
    with file.fs.open_input_stream(file.path) as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
            read += len(chunk)
    after = file.fs.get_file_info(file.path)
    if (read, after.size, after.mtime_ns) != (file.size, file.size, file.mtime_ns):
        raise OSError(f"{file.where} changed while it was being hashed")
    with _LOCK:
        _FILE_HASHES[key] = digest.hexdigest()
    log.debug("hashed %s: %d bytes", file.where, file.size)
    return digest.hexdigest()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0]


def _is_shard_name(name: str) -> bool:
    return PurePosixPath(name).suffix in SHARD_SUFFIXES


def _local_shards(root: Path) -> list[ShardFile]:
    if root.is_file():
        paths = [root] if root.suffix in SHARD_SUFFIXES else []
    elif root.is_dir():
        paths = sorted(p for p in root.rglob("*") if p.suffix in SHARD_SUFFIXES and p.is_file())
    else:
        paths = []
    out = []
    for path in paths:
        st = path.stat()
        out.append(
            ShardFile(
                name=path.relative_to(root).as_posix() if path != root else path.name,
                where=str(path),
                uri=os.path.abspath(path),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                fs=_LOCAL,
                path=os.path.abspath(path),
            )
        )
    return out


def _remote(fs: pafs.FileSystem, info: pafs.FileInfo, name: str, uri: str) -> ShardFile:
    return ShardFile(
        name=name,
        where=f"{_scheme(uri)}://{info.path}",
        uri=redact(uri),
        size=int(info.size),
        mtime_ns=int(info.mtime_ns or 0),
        fs=fs,
        path=info.path,
    )
