"""`orch prepare`: raw text (JSONL, Parquet, text files) tokenized into shards a plan can name."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from orchestrator.cli.command import command
from orchestrator.cli.output import console, errors, table

if TYPE_CHECKING:
    from workers.prepare import PrepareProgress, PrepareResult

EPILOG = """examples:
  orch prepare corpus.jsonl --out data/corpus --train-bpe 8192
  orch prepare shards/ --out data/web --tokenizer gpt2/tokenizer.json --text-key content
  orch prepare "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \\
      --out data/stdlib --train-bpe 4096

INPUT is a file or a folder (walked in sorted order): .jsonl / .ndjson (.gz too) with the
text under --text-key, .parquet with a string column --text-key, or a text file (.txt,
.md, .py, ...; one document per file). Writes DIR/train_<k>.bin and val_<k>.bin (headerless
uint16, or uint32 for a vocab over 65536; every document followed by the end-of-document
id), DIR/tokenizer.json and DIR/manifest.json (vocab, end-of-document id, tokens and bytes
per token of each split, content hash). Interrupted? Run the same command again: finished
inputs are kept, the rest is done, nothing is duplicated.
"""
_SHOWN_SKIPS = 5  # skipped files named on the terminal; the rest are counted


def add_parser(sub) -> None:
    p = command(
        sub,
        "prepare",
        run,
        help="tokenize JSONL, Parquet or text files into token shards and a manifest",
        epilog=EPILOG,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tokenizer", metavar="FILE", help="a Hugging Face tokenizer.json to use")
    which.add_argument(
        "--train-bpe",
        type=_positive_int,
        metavar="VOCAB",
        help="train a byte-level BPE of VOCAB tokens (at least 257) on the training documents",
    )
    p.add_argument(
        "--eod-token",
        metavar="TOKEN",
        help="the end-of-document token (default: the tokenizer's <|endoftext|>, </s>, ...)",
    )
    p.add_argument(
        "--text-key",
        default="text",
        metavar="KEY",
        help="JSON key or Parquet column of the text (default: text)",
    )
    p.add_argument(
        "--val-frac",
        type=float,
        default=0.005,
        metavar="F",
        help="share of documents held out for validation, chosen by a hash of each "
        "document's text (default 0.005)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="processes tokenizing in parallel (default: the number of CPUs)",
    )
    p.add_argument(
        "--pack-mib",
        type=float,
        default=8.0,
        metavar="M",
        help="small input files are packed into shards of at least M MiB of input (default 8)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a DIR prepared with other arguments (removes only prepare's files)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from workers.prepare import prepare

    if not args.verbose:  # skipped files are listed with the summary, not also as log records
        logging.getLogger("workers.prepare").setLevel(logging.ERROR)

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
        disable=args.quiet or not errors.is_terminal,  # no redraws into a log file
    )
    tasks: dict[str, int] = {}

    def on_progress(p: PrepareProgress) -> None:
        if p.phase not in tasks:
            label = "training BPE" if p.phase == "train-bpe" else "tokenizing"
            tasks[p.phase] = bar.add_task(label, total=p.bytes_total, files="")
        files = f"{p.inputs_done}/{p.inputs_total} inputs"
        bar.update(tasks[p.phase], completed=p.bytes_done, files=files)

    try:
        with bar:
            result = prepare(
                args.inputs,
                args.out,
                tokenizer=args.tokenizer,
                train_bpe_vocab=args.train_bpe,
                eod_token=args.eod_token,
                text_key=args.text_key,
                val_frac=args.val_frac,
                pack_bytes=max(1, round(args.pack_mib * 2**20)),
                workers=args.workers,
                overwrite=args.overwrite,
                on_progress=on_progress,
            )
    except KeyboardInterrupt:
        console.print("interrupted: finished inputs are kept; run the same command to resume")
        return 130
    render(result)
    return 0


def render(result: PrepareResult) -> None:
    """The splits' totals, the tokenizer, the content hash, and how a plan names the data."""
    m = result.manifest
    for reason in result.skipped[:_SHOWN_SKIPS]:
        errors.print(Text("warning: ", style="yellow") + Text(f"skipped {reason}"))
    if len(result.skipped) > _SHOWN_SKIPS:
        errors.print(f"warning: skipped {len(result.skipped) - _SHOWN_SKIPS} more files")
    reused = f", {result.units_reused} reused from an earlier run" if result.units_reused else ""
    t = table(
        f"{result.inputs} input files in {result.units} parts{reused} -> {result.directory}",
        ["split", "shards", "documents", "tokens", "source bytes", "bytes/token"],
        left=("split",),
    )
    for name in ("train", "val"):
        s = m.split(name)
        bpt = "-" if s.bytes_per_token is None else f"{s.bytes_per_token:.3f}"
        t.add_row(
            name, str(s.shards), f"{s.documents:,}", f"{s.tokens:,}", f"{s.source_bytes:,}", bpt
        )
    console.print(t)
    console.print(
        f"tokenizer: {result.directory / m.tokenizer}, vocab {m.vocab_size}, "
        f"end of document {m.eod_token} = id {m.eod_id}, shards {m.dtype}",
        highlight=False,
    )
    console.print(f"content hash: {m.content_hash}", highlight=False)
    if not m.split("val").documents:
        console.print(
            "[yellow]no validation documents[/yellow] (raise --val-frac): the worker will hold "
            "out the last data.eval_frac of every shard instead",
            highlight=False,
        )
    console.print(
        f"in a plan: data: {{source: tokens, root: {result.directory}, token_dtype: {m.dtype}}} "
        f"and shape.vocab >= {m.vocab_size}",
        highlight=False,
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value
