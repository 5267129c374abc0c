"""What `orch prepare` keeps in its output directory to resume, and how it tidies it.

`.progress/arguments.json` holds the arguments of the command that claimed the directory
(a different command is refused); `.progress/<k>.json` records unit k as done, with what
its shards depend on beyond the arguments (its files' sizes and times, the tokenizer's
hash); `.progress/tokenizer.json` says which files a trained BPE was trained on. Every
file is written whole under a temporary name and renamed, so a crash leaves a record
either whole or absent (an unreadable one counts as absent).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from storage.fsio import TMP_PREFIX, write_bytes_atomic
from workers.corpus import PrepareError
from workers.manifest import MANIFEST_NAME, ShardInfo
from workers.shards import UnitDone, UnitJob

log = logging.getLogger(__name__)

TOKENIZER_NAME = "tokenizer.json"
PROGRESS_DIR = ".progress"
_SHARD = re.compile(r"^(?:train|val)_(\d+)\.bin$")
_RECORD = re.compile(r"^(\d+)\.json$")
_WIDTH = {"uint16": 2, "uint32": 4}  # bytes per token id


def claim(directory: Path, arguments: dict[str, Any], *, overwrite: bool) -> None:
    """Make `directory` this preparation's: new, empty, or prepared with `arguments`."""
    config = directory / PROGRESS_DIR / "arguments.json"
    if directory.exists() and not directory.is_dir():
        raise PrepareError(f"{directory}: not a directory", hint="--out names a directory")
    if overwrite:
        _clear(directory)
    elif directory.is_dir() and any(directory.iterdir()):
        stored = read_json(config)
        if stored is None:
            raise PrepareError(
                f"{directory}: not empty, and not a preparation to resume",
                hint="use a new or empty --out, or --overwrite (removes only prepare's files)",
            )
        if stored != arguments:
            raise PrepareError(
                f"{directory}: prepared before with other arguments "
                f"({_difference(stored, arguments)})",
                hint="the same command resumes; --overwrite starts over; or use another --out",
            )
        return
    write_json(config, arguments)


def _difference(stored: dict[str, Any], now: dict[str, Any]) -> str:
    key = next(k for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k))
    then, current = stored.get(key), now.get(key)
    if key == "inputs" and isinstance(then, list) and isinstance(current, list):
        changed = next((a, b) for a, b in zip_longest(then, current) if a != b)
        return f"inputs: {changed[0]} then, {changed[1]} now"
    return f"{key}: {then!r} then, {current!r} now"


def _clear(directory: Path) -> None:
    """Remove what this command writes in `directory`, and nothing else."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        name = path.name
        if (
            name in (MANIFEST_NAME, TOKENIZER_NAME)
            or _SHARD.match(name)
            or name.startswith(TMP_PREFIX)
        ):
            path.unlink()
    shutil.rmtree(directory / PROGRESS_DIR, ignore_errors=True)


def remove_stale(directory: Path, n_units: int) -> None:
    """Remove partial shards, and shards and records of units beyond the last (an earlier
    run's files, grouped differently)."""
    for path in directory.iterdir():
        match = _SHARD.match(path.name)
        if path.name.startswith(TMP_PREFIX) or (match and int(match.group(1)) >= n_units):
            path.unlink()
    for path in (directory / PROGRESS_DIR).iterdir():
        match = _RECORD.match(path.name)
        if match and int(match.group(1)) >= n_units:
            path.unlink()


def remove_unlisted(directory: Path, names: set[str]) -> None:
    # The worker reads every shard in DIR: one the manifest does not list must not be there.
    for path in directory.iterdir():
        if _SHARD.match(path.name) and path.name not in names:
            log.info("removing %s, a shard of an earlier run", path)
            path.unlink()


def unit_record(job: UnitJob, result: UnitDone) -> dict[str, Any]:
    """What `.progress/<k>.json` holds once unit k is done."""
    return {
        **_record_key(job),
        "shards": [asdict(s) for s in result.shards],
        "skipped": list(result.skipped),
    }


def _record_key(job: UnitJob) -> dict[str, Any]:
    """What a unit's shards depend on, beyond the command's arguments."""
    return {
        "inputs": [list(f.stat) for f in job.inputs],
        "tokenizer_sha256": job.tokenizer_sha256,
        "eod_id": job.eod_id,
        "dtype": job.dtype,
    }


def finished_unit(directory: Path, job: UnitJob) -> UnitDone | None:
    """The unit's result from an earlier run, if its record holds and its shards are there."""
    record = read_json(record_path(directory, job.index))
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in _record_key(job).items()):
        return None
    try:
        shards = tuple(ShardInfo(**s) for s in record["shards"])
        skipped = tuple(str(s) for s in record["skipped"])
    except (KeyError, TypeError):
        return None
    width = _WIDTH[job.dtype]
    for shard in shards:
        path = directory / shard.name
        if not path.is_file() or path.stat().st_size != shard.tokens * width:
            return None
    return UnitDone(index=job.index, shards=shards, skipped=skipped)


def record_path(directory: Path, index: int) -> Path:
    return directory / PROGRESS_DIR / f"{index:05d}.json"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):  # absent, or cut short by a crash: as if never written
        return None


def write_json(path: Path, data: Any) -> None:
    write_file(path, (json.dumps(data, indent=1, allow_nan=False) + "\n").encode())


def write_file(path: Path, data: bytes) -> None:
    write_bytes_atomic(pafs.LocalFileSystem(), path.as_posix(), data)
