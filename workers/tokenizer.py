"""The tokenizer of `orch prepare`: a local `tokenizer.json`, or a byte-level BPE trained here.

Both are Hugging Face `tokenizers` objects, imported inside the functions so that
importing `workers` stays cheap. Nothing is downloaded: a tokenizer comes from a file.

Documents are encoded without the tokenizer's template tokens (a BOS or [CLS] the
post-processor would add) and with its special tokens treated as plain text, so a
document that quotes "<|endoftext|>" cannot end itself early; `orch prepare` appends the
end-of-document id after each document itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from workers.corpus import PrepareError
from workers.spec import TokenDtype

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

EOD_TOKEN = "<|endoftext|>"  # the trained BPE's end-of-document token (GPT-2's)
# Looked for, in this order, in a given tokenizer without --eod-token: GPT-2 and its
# kin, Llama 3, Llama 2 / Mistral / T5, and two common spellings.
KNOWN_EOD_TOKENS = (EOD_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]")
_BYTES = 256  # the byte-level alphabet every trained BPE starts from


def load_tokenizer(data: bytes, *, source: str) -> Tokenizer:
    """The tokenizer serialised in `data` (a tokenizer.json's bytes), set up to encode
    documents as `encode` expects.

    Raises:
        PrepareError: naming `source`, when `data` is not a tokenizer this version reads.
    """
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    # `tokenizers` raises a bare Exception for any file it cannot parse; nothing else
    # runs inside this try.
    except Exception as err:
        raise PrepareError(f"{source}: cannot load the tokenizer: {err}") from err
    tokenizer.encode_special_tokens = True  # see the module docstring
    return tokenizer


def train_bpe(texts: Iterable[str], *, vocab_size: int, eod_token: str = EOD_TOKEN) -> Tokenizer:
    """A byte-level BPE with at most `vocab_size` tokens (the 256 bytes, `eod_token` as id 0,
    then merges), trained on `texts`. Deterministic: the same texts give the same file.

    Raises:
        PrepareError: `vocab_size` below 257 (the bytes and the end-of-document token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_bpe_vocab(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: decoding gives back each document exactly, not with a space added.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eod_token],
        # Every byte is a token from the start, so any text (not only the training
        # text's characters) encodes without an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    log.info("trained a byte-level BPE of %d tokens", tokenizer.get_vocab_size())
    return tokenizer


def check_bpe_vocab(vocab_size: int) -> None:
    """Raise PrepareError unless a byte-level BPE can have `vocab_size` tokens."""
    if not _BYTES + 1 <= vocab_size <= 2**32:
        raise PrepareError(
            f"--train-bpe {vocab_size}: a byte-level BPE needs a vocab of at least "
            f"{_BYTES + 1} (256 bytes and the end-of-document token), and at most 2^32"
        )


def find_eod(tokenizer: Tokenizer, *, name: str | None, source: str) -> tuple[str, int]:
    """(token, id) of the end-of-document token: `name` if given, else the first of
    `KNOWN_EOD_TOKENS` among the special tokens, then among all tokens.

    Raises:
        PrepareError: naming `source`, when there is no such token.
    """
    if name is not None:
        found = tokenizer.token_to_id(name)
        if found is None:
            raise PrepareError(
                f"{source}: no token {name!r}", hint="--eod-token names a token it has"
            )
        return name, found
    added = tokenizer.get_added_tokens_decoder()
    specials = {t.content: i for i, t in added.items() if t.special}
    for token in KNOWN_EOD_TOKENS:
        if token in specials:
            return token, specials[token]
    for token in KNOWN_EOD_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return token, found
    raise PrepareError(
        f"{source}: no end-of-document token (looked for {', '.join(KNOWN_EOD_TOKENS)}; "
        f"its special tokens: {', '.join(sorted(specials)) or 'none'})",
        hint="--eod-token names the token to put after every document",
    )


def vocab_size(tokenizer: Tokenizer) -> int:
    """The highest token id + 1 (ids may leave gaps): the smallest model vocab that fits."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def token_dtype(vocab: int, *, source: str) -> TokenDtype:
    """The narrowest shard element type for ids below `vocab`.

    Raises:
        PrepareError: naming `source`, for a vocab beyond 2^32 ids.
    """
    if vocab <= 2**16:
        return "uint16"
    if vocab <= 2**32:
        return "uint32"
    raise PrepareError(
        f"{source}: a vocab of {vocab} token ids does not fit uint32 shards (at most 2^32)"
    )


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """The token ids of each text, without template or end-of-document tokens."""
    # The fast batch skips offsets, which nothing here reads.
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
