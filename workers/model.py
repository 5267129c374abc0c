"""A decoder-only GPT, small enough to read in one sitting.

Architecture (the parameter counts in orchestrator/planning/flops.py follow it exactly):
- token embedding (vocab x d_model); learned positions (seq_len x d_model) or RoPE (no params)
- n_layer pre-norm blocks: LayerNorm -> causal self-attention (fused QKV d_model x 3 d_model,
  output d_model x d_model) -> residual; LayerNorm -> MLP (d_model x ffw, GELU,
  ffw x d_model) -> residual
- final LayerNorm, then the output head (tied to the token embedding, or its own matrix)
No biases anywhere and LayerNorms carry a weight only: fewer parameters that scaling
studies must account for, and no measurable loss in quality at these scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from workers.spec import Shape


def _rope_tables(seq_len: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Rotary embeddings (Su et al. 2021, eq. 34), base 10000 as in the paper.
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Rotated in fp32, the tables' dtype (DeepSpeed's bf16 cast leaves these buffers fp32),
    # then cast back: attention needs q, k and v in one dtype.
    xf = x.float()
    x1, x2 = xf[..., 0::2], xf[..., 1::2]  # (B, h, T, hd/2) each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.n_head = shape.n_head
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model, bias=False)
        self.proj = nn.Linear(shape.d_model, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            cos, sin = rope[0][:T], rope[1][:T]
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, T, hd)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.fc = nn.Linear(shape.d_model, shape.ffw_width, bias=False)
        self.proj = nn.Linear(shape.ffw_width, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, shape: Shape):
        super().__init__()
        self.ln1 = nn.LayerNorm(shape.d_model, bias=False)
        self.attn = CausalSelfAttention(shape)
        self.ln2 = nn.LayerNorm(shape.d_model, bias=False)
        self.mlp = MLP(shape)

    def forward(self, x, rope):
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """The model of `shape`. With `activation_checkpointing`, each block's activations are
    recomputed in the backward pass instead of stored (training memory for one more forward
    per block); the result is the same."""

    def __init__(self, shape: Shape, *, activation_checkpointing: bool = False):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = activation_checkpointing
        self.tok_emb = nn.Embedding(shape.vocab, shape.d_model)
        self.pos_emb = (
            nn.Embedding(shape.seq_len, shape.d_model) if shape.pos == "learned" else None
        )
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.d_model, bias=False)
        self.head = nn.Linear(shape.d_model, shape.vocab, bias=False)
        if shape.pos == "rope":
            cos, sin = _rope_tables(shape.seq_len, shape.d_model // shape.n_head)
            # Buffers, not parameters: not trained, not counted, rebuilt from the shape.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        if shape.tied:
            # One Parameter in two modules (as nanoGPT does): each module's forward sees it,
            # which ZeRO-3's per-module gathering needs.
            self.head.weight = self.tok_emb.weight
        # GPT-2's scaled init of residual projections: keeps the residual stream's variance
        # from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * shape.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, *, non_embedding: bool = True) -> int:
        """Parameter count. Non-embedding leaves out the token and position embeddings and
        an untied output head (Kaplan et al. 2020's N)."""
        total = sum(p.numel() for p in self.parameters())
        if not non_embedding:
            return total
        total -= self.tok_emb.weight.numel()
        if self.pos_emb is not None:
            total -= self.pos_emb.weight.numel()
        if not self.shape.tied:
            total -= self.head.weight.numel()
        return total

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, vocab), and the mean cross-entropy in nats if targets are given."""
        B, T = idx.shape
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        rope = (self.rope_cos, self.rope_sin) if self.shape.pos == "rope" else None
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        x = self.ln_f(x)
        logits = self.head(x)  # (B, T, vocab)
        if targets is None:
            return logits, None
        # In fp32 even for bf16 runs: a bf16 log-softmax over a large vocab loses digits.
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
