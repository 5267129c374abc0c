"""Parameter and FLOP counts for the GPT in workers/model.py.

Letters, as in the scaling-law literature (used only here and in laws/):
- N: non-embedding parameters (Kaplan et al. 2020, sec. 2.1): every transformer block plus
  the final LayerNorm; leaves out the token embedding, learned position embeddings and an
  untied output head.
- D: training tokens.
- C: total training compute in FLOPs (forward + backward), a multiply-add counting as 2.

Three ways to count C, so a plan can pick the one that budgets:
- "6nd": C = 6 N D (Kaplan et al. 2020, sec. 2.1): 2 N per token forward, 4 N backward.
- "6nd_total": C = 6 N_total D with N_total counting the embeddings too, as Chinchilla's
  own 6ND comparison does (Hoffmann et al. 2022, Table A4).
- "chinchilla": the op-by-op count of Hoffmann et al. 2022, appendix F: embeddings,
  attention (QKV, QK logits, softmax, softmax @ V, output projection), MLP and final logits,
  with backward = 2 x forward. It counts the full seq_len x seq_len attention matrix (no
  causal halving) and ignores LayerNorms, GELU, RoPE and biases, as the paper does.

About the paper's Table A4 (ratio of its count to 6ND): the ratios there come out only
when the embedding and final-logits terms are left out and N includes embeddings (Karpathy's
nanoGPT scaling_laws.ipynb reproduces them that way, citing correspondence with the authors).
`chinchilla_forward_flops` keeps every term separate so both readings can be computed; the
"chinchilla" method uses the appendix as written, with all terms.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

from workers.spec import Shape

log = logging.getLogger(__name__)

FlopsMethod = Literal["chinchilla", "6nd", "6nd_total"]
_METHODS = ("chinchilla", "6nd", "6nd_total")


@dataclass(frozen=True, kw_only=True)
class ParamCount:
    """Parameters of `GPT(shape)`, agreeing exactly with `GPT.num_params`."""

    non_embedding_params: int  # params; N: blocks + final LayerNorm
    params_total: int  # params; every distinct Parameter, a tied head counted once

    @property
    def embedding_params(self) -> int:
        """Token embedding + learned positions + untied head, in params."""
        return self.params_total - self.non_embedding_params


def count_params(shape: Shape) -> ParamCount:
    """Parameter counts of the GPT in workers/model.py for `shape`, in params.

    Per block: two weight-only LayerNorms (2 d_model), fused QKV (3 d_model^2), attention
    output (d_model^2), MLP in and out (2 d_model ffw); no biases anywhere.
    """
    d, ffw = shape.d_model, shape.ffw_width
    per_block = 2 * d + 4 * d * d + 2 * d * ffw
    non_embedding = shape.n_layer * per_block + d  # + final LayerNorm weight
    embedding = shape.vocab * d  # token embedding (also the head when tied)
    if shape.pos == "learned":
        embedding += shape.seq_len * d  # RoPE has no parameters
    if not shape.tied:
        embedding += shape.vocab * d  # the head is its own matrix
    return ParamCount(non_embedding_params=non_embedding, params_total=non_embedding + embedding)


@dataclass(frozen=True, kw_only=True)
class ForwardFlops:
    """Forward-pass FLOPs for one sequence of seq_len tokens, by the terms of Hoffmann et al.
    2022, appendix F. Attention and MLP terms are summed over all layers."""

    embeddings_flops: int  # FLOPs; 2 seq vocab d_model (the lookup counted as a one-hot matmul)
    qkv_flops: int  # FLOPs; 2 x 3 seq d_model (key_size n_head) per layer
    attention_logits_flops: int  # FLOPs; 2 seq^2 (key_size n_head) per layer, Q @ K^T
    softmax_flops: int  # FLOPs; 3 n_head seq^2 per layer
    attention_values_flops: int  # FLOPs; 2 seq^2 (key_size n_head) per layer, softmax @ V
    attention_output_flops: int  # FLOPs; 2 seq (key_size n_head) d_model per layer
    mlp_flops: int  # FLOPs; 2 seq (d_model ffw + ffw d_model) per layer
    logits_flops: int  # FLOPs; 2 seq d_model vocab, the output head

    @property
    def layers_flops(self) -> int:
        """FLOPs of all transformer blocks (attention + MLP), without embeddings and logits."""
        return (
            self.qkv_flops
            + self.attention_logits_flops
            + self.softmax_flops
            + self.attention_values_flops
            + self.attention_output_flops
            + self.mlp_flops
        )

    @property
    def total_flops(self) -> int:
        """FLOPs of the whole forward pass: embeddings + layers + logits."""
        return self.embeddings_flops + self.layers_flops + self.logits_flops


def chinchilla_forward_flops(shape: Shape) -> ForwardFlops:
    """Forward-pass FLOPs for one sequence, term by term (Hoffmann et al. 2022, appendix F)."""
    s, d, v, h, n = shape.seq_len, shape.d_model, shape.vocab, shape.n_head, shape.n_layer
    key_size = d // h  # key_size x n_heads = d_model for our model
    att_width = key_size * h
    return ForwardFlops(
        embeddings_flops=2 * s * v * d,
        qkv_flops=n * 2 * 3 * s * d * att_width,
        attention_logits_flops=n * 2 * s * s * att_width,
        softmax_flops=n * 3 * h * s * s,
        attention_values_flops=n * 2 * s * s * att_width,
        attention_output_flops=n * 2 * s * att_width * d,
        mlp_flops=n * 2 * s * (d * shape.ffw_width + d * shape.ffw_width),
        logits_flops=2 * s * d * v,
    )


def flops_per_sequence(shape: Shape, *, method: FlopsMethod) -> float:
    """Training FLOPs (forward + backward) for one sequence of `shape.seq_len` tokens.

    Args:
        shape: the model.
        method: "chinchilla" (appendix F count, backward = 2 x forward) or "6nd"
            (6 x non-embedding params x seq_len).
    """
    return flops_per_token(shape, method=method) * shape.seq_len


def flops_per_token(shape: Shape, *, method: FlopsMethod) -> float:
    """Training FLOPs (forward + backward) per token, averaged over a full sequence.

    Args:
        shape: the model.
        method: "chinchilla": 3 x the appendix F forward count of one sequence / seq_len
            (Hoffmann et al. 2022 take backward = 2 x forward, after Kaplan et al. 2020);
            "6nd": 6 x non-embedding params; "6nd_total": 6 x all params.

    Raises:
        ValueError: an unknown method.
    """
    _check_method(method)
    if method == "6nd":
        # Kaplan et al. 2020, sec. 2.1: forward ~ 2N per token, backward twice that.
        return 6.0 * count_params(shape).non_embedding_params
    if method == "6nd_total":
        return 6.0 * count_params(shape).params_total
    return 3.0 * chinchilla_forward_flops(shape).total_flops / shape.seq_len


def train_flops(shape: Shape, tokens: int, *, method: FlopsMethod) -> float:
    """Total training FLOPs (forward + backward) for `tokens` tokens: C for (N, D).

    "6nd": 6 x non-embedding params x tokens. "chinchilla": the per-token count of the
    Chinchilla appendix F (embeddings, QKV, scores, softmax, MLP, logits) x 3 x tokens.
    A multiply-add is 2 FLOPs.

    Raises:
        ValueError: negative tokens or an unknown method.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return flops_per_token(shape, method=method) * tokens


def tokens_for_flops(shape: Shape, flops: float, *, method: FlopsMethod) -> int:
    """Training tokens D whose cost fits a budget of `flops` FLOPs, rounded down.

    The result is the largest whole number of tokens with
    `train_flops(shape, tokens, method=method) <= flops`, so a run sized by it never
    spends more than its budget (0 when one token already costs more).

    Raises:
        ValueError: a negative or non-finite budget, or an unknown method.
    """
    if not math.isfinite(flops) or flops < 0:
        raise ValueError(f"flops must be a finite number >= 0, got {flops}")
    per_token = flops_per_token(shape, method=method)
    tokens = int(flops // per_token)
    # Floating-point division can land a token off either way; settle on the exact answer.
    while tokens > 0 and train_flops(shape, tokens, method=method) > flops:
        tokens -= 1
    while train_flops(shape, tokens + 1, method=method) <= flops:
        tokens += 1
    return tokens


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
