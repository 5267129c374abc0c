"""Reads an offline W&B run file (`run-<id>.wandb`) with W&B's own record definitions.

wandb >= 0.20 writes it from its Go core and no longer ships a Python reader, so this
walks the container format it documents (a LevelDB-style log: a 7-byte header, then
32 KiB blocks of chunks, each with a CRC-32, a length and a type, that join into
records) and parses every record with `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version
_CHUNK = struct.Struct("<IHB")  # crc32, length, type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    ident, magic, version = _HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1) and version in (0, 1), (ident, magic, version)
    out, pending, pos = [], b"", _HEADER.size
    while pos + _CHUNK.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK.size:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        body = data[pos + _CHUNK.size : pos + _CHUNK.size + length]
        pos += _CHUNK.size + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, "bad chunk"
        pending = body if kind in (_FULL, _FIRST) else pending + body
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(path: Path) -> list[dict]:
    """Every logged row: {key: value} with "_step"."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def run_record(path: Path) -> pb.RunRecord:
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
