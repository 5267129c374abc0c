"""The `data:` and `fit:` sections of a plan: which tokens the runs train on, with the
content hash that makes run ids follow them, and which loss the fit uses.

Part of `parse.py`'s reading of a plan (errors name the file, line and key path).
"""

from __future__ import annotations

from orchestrator.planning.plan import FIT_LOSSES, FitLoss
from orchestrator.planning.plan_paths import beside
from orchestrator.planning.reader import Reader
from storage.errors import StoreError
from storage.fsio import redact
from workers.data_hash import bytes_per_token, content_hash, list_shards, root_manifest
from workers.manifest import Manifest, ManifestError
from workers.spec import SHARD_SUFFIXES, DataSpec

# Each data source's keys beside `source` (workers/spec.py DataSpec, workers/data.py).
_DATA_KEYS = {
    "bytes": {"root", "eval_frac"},
    "synthetic": {"markov_alpha", "markov_seed"},
    "tokens": {"root", "eval_root", "eval_frac", "token_dtype", "column", "eod_id"},
}


def parse_data(r: Reader, top: dict, path: str) -> DataSpec:
    """`data:`: bytes (text files), synthetic (a Markov chain), or tokens (shards).

    A relative tokens root is the plan's folder's, and must hold shards now, on this
    machine (a cluster's workers read the same path: a shared file system); an `s3://`
    root must be listable from here, as the workers will list it."""
    section = r.section(top, "data", set().union(*_DATA_KEYS.values(), {"source"}))
    source = r.choice(section, ("data", "source"), tuple(_DATA_KEYS), "bytes")
    r.only(section, ("data",), {"source", *_DATA_KEYS[source]})

    def where(key: str, default: str) -> str:
        value = r.get(section, ("data", key), str, default)
        if "\0" in value:
            r.fail(("data", key), "a path cannot hold a NUL character")
        if not value or value == "stdlib" or "://" in value:
            return value
        return beside(path, value)

    if source == "synthetic":
        return DataSpec(
            source="synthetic",
            markov_alpha=r.number(
                section.get("markov_alpha", 0.5), ("data", "markov_alpha"), positive=True
            ),
            markov_seed=r.get(section, ("data", "markov_seed"), int, 0, at_least=0),
        )
    eval_frac = r.fraction(section, ("data", "eval_frac"), 0.05, open_low=True)
    if source == "bytes":  # the root as written: run ids of earlier studies stay the same
        root = r.get(section, ("data", "root"), str, "stdlib")
        return DataSpec(source="bytes", root=root, eval_frac=eval_frac)
    if "root" not in section:
        r.fail(("data", "root"), "a tokens source needs a root: a shard or a folder of shards")
    root, eval_root = where("root", ""), where("eval_root", "")
    parquet = False
    for key, value in (("root", root), ("eval_root", eval_root)):
        if value and "://" in value and not value.startswith("s3://"):
            r.fail(("data", key), f"expected a path or an s3:// prefix, got {redact(value)}")
        if not value:
            continue
        found = _listed(r, key, value)
        if not found:
            r.fail(
                ("data", key),
                f"no token shards ({', '.join(SHARD_SUFFIXES)}) at {redact(value)}",
            )
        parquet |= any(f.name.endswith(".parquet") for f in found)
        _content_hash(r, key, value)  # each root alone first, so that an error names its key
    # A prepared corpus says its dtype; a plan need not repeat it, and may not contradict it.
    manifest = _manifest(r, root)
    dtype = r.choice(
        section,
        ("data", "token_dtype"),
        ("uint16", "uint32"),
        manifest.dtype if manifest else "uint16",
    )
    if manifest and dtype != manifest.dtype:
        r.fail(
            ("data", "token_dtype"),
            f"{root} was prepared as {manifest.dtype} (its manifest.json), not {dtype}",
        )
    return DataSpec(
        source="tokens",
        root=root,
        eval_root=eval_root,
        eval_frac=eval_frac,
        token_dtype=dtype,
        column=r.get(section, ("data", "column"), str, "tokens"),
        content_hash=_content_hash(r, "root", root, eval_root=eval_root),
        eod_id=_eod_id(r, section, top, parquet=parquet),
    )


def _eod_id(r: Reader, section: dict, top: dict, *, parquet: bool) -> int:
    """`data.eod_id`: the id put after each document of a Parquet token-list column; none
    (-1) unless given. Not taken from a prepared corpus's manifest: its `.bin` shards hold
    their end-of-document ids already (and it can hold no Parquet shard), so the default
    would change the run ids of every plan on a prepared corpus and not one token."""
    if "eod_id" not in section:
        return -1
    eod_id = r.get(section, ("data", "eod_id"), int, at_least=0)
    if not parquet:
        r.fail(
            ("data", "eod_id"),
            "an end-of-document id is put between the documents of Parquet token lists, "
            "and the token roots hold no .parquet shard",
        )
    vocab = (top.get("model") or {}).get("vocab", 256)  # parse.py has checked it
    if eod_id >= vocab:
        r.fail(("data", "eod_id"), f"{eod_id} is not a token id below model.vocab ({vocab})")
    return eod_id


def _listed(r: Reader, key: str, root: str) -> list:
    try:
        return list_shards(root)
    except StoreError as err:
        r.fail(("data", key), str(err))
    except OSError as err:
        r.fail(("data", key), f"cannot list {redact(root)}: {err}")


def _content_hash(r: Reader, key: str, root: str, *, eval_root: str = "") -> str:
    """The shards' content hash (workers/data_hash.py): run ids follow the data."""
    try:
        return content_hash(root, eval_root=eval_root)
    except (ManifestError, StoreError) as err:
        r.fail(("data", key), str(err))
    except OSError as err:
        r.fail(("data", key), f"cannot read {err.filename or root}: {err.strerror or err}")


def _manifest(r: Reader, root: str) -> Manifest | None:
    try:
        return root_manifest(root)
    except (ManifestError, StoreError) as err:
        r.fail(("data", "root"), str(err))
    except OSError as err:
        r.fail(("data", "root"), f"cannot read {redact(root)}: {err}")


def parse_fit_loss(r: Reader, top: dict, data: DataSpec) -> FitLoss:
    """`fit.loss`: nats_per_token, or bits_per_byte where the data says its bytes per token
    (bytes: one; a corpus `orch prepare` wrote: its manifest's)."""
    section = r.section(top, "fit", {"loss"})
    loss = r.choice(section, ("fit", "loss"), FIT_LOSSES, "nats_per_token")
    if loss == "bits_per_byte" and data.source != "bytes":
        # The worker's rule (workers/data.py): the held-out data's manifest.
        held_out = data.eval_root or data.root
        if data.source == "synthetic" or bytes_per_token(held_out) is None:
            what = "synthetic data" if data.source == "synthetic" else f"{held_out}"
            r.fail(
                ("fit", "loss"),
                f"bits_per_byte needs the text's bytes per token, and {what} has none "
                "(a tokens root prepared by `orch prepare` has them in its manifest.json)",
            )
    return loss
