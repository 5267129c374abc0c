"""Filesystem access by URI, and whole-file atomic writes.

A writer never leaves a half file where a reader looks: locally we write a temporary
sibling (`.tmp-*`, which no reader lists), fsync it, rename it into place (atomic on
POSIX) and fsync the directory, so a renamed file survives a crash of the machine too;
on object stores a single PUT (or a completed multipart upload) of the whole object is
already atomic, so we write the final key directly.
"""

from __future__ import annotations

import io
import logging
import os
import re
import uuid
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import StoreError, StoreIOError

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
TMP_PREFIX = ".tmp-"
_CREDENTIALS = re.compile(r"(?:^|&)(?:secret_key|session_token|access_key)=")


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, `file://` or `s3://` URI.

    S3 options ride in the query string, as pyarrow accepts them, for example
    `s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http`; credentials come
    from the standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    or the other sources of the AWS SDK's default chain, never from the URI we log.
    """
    if not _SCHEME.match(uri):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    if _CREDENTIALS.search(urlsplit(uri).query):
        # The URI is logged and copied into the stored plan: a secret in it would leak.
        raise StoreError(
            f"store {redact(uri)} carries credentials in its query string",
            hint="set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile) instead",
        )
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise StoreError(
            f"cannot open store {redact(uri)}: {err}",
            hint="use a local path, file:///abs/path or s3://bucket/prefix[?endpoint_override=...]",
        ) from err
    path = path.rstrip("/")
    if not path:
        raise StoreError(f"store {redact(uri)} has no path", hint="name a bucket and a prefix")
    return fs, path


def join_uri(uri: str, name: str) -> str:
    """`uri` with `name` appended as one more path component, before any query string."""
    if not _SCHEME.match(uri):
        return os.path.join(uri, name)
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def redact(uri: str) -> str:
    """`uri` without secrets that may ride in its query string (safe to log)."""
    return re.sub(r"((?:secret_key|session_token|access_key)=)[^&]*", r"\1***", uri)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def write_bytes_atomic(
    fs: pafs.FileSystem, path: str, data: bytes, *, fsync: bool = True, fsync_dir: bool = True
) -> None:
    """Write `data` to `path` so that readers see either nothing or all of it.

    Args:
        fsync: locally, flush the file to disk before renaming it into place, so that
            after a power loss it is whole or absent, never empty.
        fsync_dir: also flush the directory, so the rename itself survives a power loss.
            A caller writing many files into one directory may pass False and call
            `fsync_dir` once after the last.
    """
    try:
        _write_bytes_atomic(fs, path, data, fsync=fsync, fsync_dir=fsync_dir)
    except OSError as err:  # a full or read-only disk, a lost object store: one clear line
        raise StoreIOError(
            f"cannot write {path}: {err}",
            hint="nothing stored earlier was changed; free space or fix access, then retry",
        ) from err


def _write_bytes_atomic(
    fs: pafs.FileSystem, path: str, data: bytes, *, fsync: bool, fsync_dir: bool
) -> None:
    parent, name = path.rsplit("/", 1)
    if not is_local(fs):
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    os.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}-{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if fsync and fsync_dir:
        sync_dir(fs, parent)


def sync_dir(fs: pafs.FileSystem, directory: str) -> None:
    """Flush a local directory's entries (renames into it) to disk; no-op elsewhere."""
    if not is_local(fs):
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_table_atomic(
    fs: pafs.FileSystem,
    path: str,
    table: pa.Table,
    *,
    fsync: bool = True,
    fsync_dir: bool = True,
    use_dictionary: bool | list[str] = True,
) -> int:
    """Write `table` as one Parquet file, atomically (see `write_bytes_atomic`); its size
    in bytes.

    Args:
        use_dictionary: as in `pyarrow.parquet.write_table`; dictionary-encoding columns
            of distinct floats costs CPU for nothing, so hot paths name only the few
            repetitive columns.
    """
    sink = io.BytesIO()
    # Page checksums let readers tell a damaged file from a good one (a flipped bit in a
    # data page would otherwise decode to wrong numbers, silently).
    pq.write_table(table, sink, use_dictionary=use_dictionary, write_page_checksum=True)
    data = sink.getvalue()
    write_bytes_atomic(fs, path, data, fsync=fsync, fsync_dir=fsync_dir)
    return len(data)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:  # unreadable, or an object store that keeps failing
        raise StoreIOError(f"cannot read {path}: {err}") from err


def read_table(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    """A whole Parquet file, or None when it does not exist.

    Raises:
        StoreError: the file exists but is not readable Parquet.
    """
    data = read_bytes(fs, path)
    if data is None:
        return None
    try:
        return pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"cannot read {path}: {err}", hint="the file is corrupt") from err


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(
    fs: pafs.FileSystem, directory: str, *, recursive: bool = False
) -> list[pafs.FileInfo]:
    """The files (not directories) under `directory`; none if it does not exist."""
    selector = pafs.FileSelector(directory, allow_not_found=True, recursive=recursive)
    return [i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]


def delete_quietly(fs: pafs.FileSystem, path: str) -> bool:
    """Delete a file; False if it was already gone (another process deleted it first)."""
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        return False
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
