"""The content hash of a tokens source: what makes a run's identity follow its data.

The planner puts it in every RunSpec of a tokens plan (`DataSpec.content_hash`), so a
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

Names below a root, never absolute paths, go into the hash: a corpus moved elsewhere
keeps its hash. Pure Python (no torch): the planner and the worker both use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from workers.manifest import MANIFEST_NAME, ManifestError, read_manifest
from workers.spec import SHARD_SUFFIXES

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
# (path, size, mtime_ns, ctime_ns, inode, device) -> sha256 hex. ctime moves on every
# write and no user tool can set it back (mtime can be), so a file written since is hashed
# again; the one blind spot is a same-size write within the clock tick (a few ms) of the
# previous one, as the kernel stamps ctime at tick granularity.
_FILE_HASHES: dict[tuple[str, int, int, int, int, int], str] = {}
_LOCK = threading.Lock()


def list_shards(root: Path) -> list[Path]:
    """The token shards a tokens source reads at `root`: the file itself, or every file
    below the folder ending in a shard suffix, in path order (empty if there are none)."""
    if root.is_file():
        return [root] if root.suffix in SHARD_SUFFIXES else []
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in SHARD_SUFFIXES and p.is_file())


def content_hash(root: str | Path, *, eval_root: str | Path = "") -> str:
    """64 hex: the hash of the token shards at `root` (and `eval_root`, if given).

    Raises:
        ManifestError: a prepared root whose manifest is unreadable or disagrees with
            the shard files there (one line naming the file).
        OSError: a shard cannot be read.
    """
    main = _root_hash(Path(root))
    if not eval_root:
        return main
    both = {"root": main, "eval_root": _root_hash(Path(eval_root))}
    return hashlib.sha256(_canonical(both)).hexdigest()


def bytes_per_token(root: str | Path) -> float | None:
    """Source UTF-8 bytes per token of a prepared root's validation split (what eval
    reads), else of all its shards; None for a root without a manifest."""
    root = Path(root)
    if not (root / MANIFEST_NAME).is_file():
        return None
    manifest = read_manifest(root, check_shards=False)
    return manifest.split("val").bytes_per_token or manifest.bytes_per_token


def _root_hash(root: Path) -> str:
    if root.is_dir() and (root / MANIFEST_NAME).is_file():
        return _manifest_hash(root)
    listing = [
        [path.relative_to(root).as_posix() if path != root else path.name, *_file_hash(path)]
        for path in list_shards(root)
    ]
    return hashlib.sha256(_canonical({"shards": listing})).hexdigest()


def _manifest_hash(root: Path) -> str:
    manifest = read_manifest(root)  # also: every listed shard is there, of its size
    listed = {s.name for s in manifest.shards}
    found = {p.relative_to(root).as_posix() for p in list_shards(root)}
    if found != listed:
        extra = sorted(found - listed)
        raise ManifestError(
            f"{root / MANIFEST_NAME}: {root} holds token shards the manifest does not list "
            f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}), which the worker "
            "would train on",
            hint="move them out of the corpus folder, or prepare the corpus again",
        )
    return manifest.content_hash


def _file_hash(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, from the process's memo when unchanged."""
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


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
