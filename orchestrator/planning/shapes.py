"""Choose a model shape for a target non-embedding parameter count.

The rule (`ShapeRule`): a shape is allowed when
- d_model is a multiple of `width_multiple` and of the head dimension, which is `head_dim`
  below `wide_from` and `wide_head_dim` from there up (n_head = d_model / head dim);
- the aspect ratio d_model / n_layer lies in [min_aspect, max_aspect] (inclusive);
- ffw = 4 d_model (the Shape's default), so N = n_layer (12 d_model^2 + 2 d_model) + d_model.
`shape_for_params` returns the allowed shape whose N is closest to the target (ties go to
the aspect ratio nearest the band's geometric centre, then to the narrower model). Because
the allowed set does not depend on the target, the N reached never decreases as the target
grows.

Why these numbers:
- Kaplan et al. 2020 (sec. 3.1, fig. 5) found the loss depends only weakly on d_model /
  n_layer over a wide range at fixed N, so any aspect in a moderate band will do. The
  default band 64-128 holds GPT-3's models from 760M up (Brown et al. 2020, Table 2.1:
  64 to about 128) and Llama 2's (102-128); Chinchilla's Table A9 spans about 40-110.
- Widths that are multiples of 64 and head dimensions of 64 fill tensor-core tiles; heads
  widen to 128 from d_model 1280 as in Chinchilla's Table A9 (kv_size 128 from 1280 up).
- `TINY_RULE` is for CPU tests (N of 30K-300K): widths in steps of 16, heads of 16 (32 from
  d_model 128), and a lower aspect band (8-32) so tiny models still get 2-6 layers: a
  one-layer transformer cannot form the induction heads that two layers can (Olsson et al.
  2022), which would change how loss scales.

Error bound guaranteed (tests scan every gap between neighbouring allowed N; the worst
target sits midway between two neighbours a < b and misses by (b - a) / (a + b)):
- DEFAULT_RULE: |rel_error| <= 7% for targets of 1e7-1e8, <= 2.6% for 1e8-1e9,
  <= 1.6% for 1e9-1e10, <= 0.5% for 1e10-1e11 (and 20% for 1e6-1e7, where 64-wide steps
  are coarse).
- TINY_RULE: <= 20% for 3e4-3e5, <= 8% for 3e5-3e6, <= 4% for 3e6-3e7.
Targets below the rule's smallest model (one layer at the narrowest width) raise ShapeError.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from storage.errors import OrchError
from workers.spec import PosEncoding, Shape

log = logging.getLogger(__name__)


# 10T parameters: far beyond any model trained to date; above it the width search would
# only burn time on a plan that is surely mistaken.
MAX_TARGET_PARAMS = 1e13


class ShapeError(OrchError, ValueError):
    """No shape allowed by the rule comes near the target parameter count."""


@dataclass(frozen=True, kw_only=True)
class ShapeRule:
    """Which shapes are allowed; see the module docstring for the reasons behind defaults."""

    width_multiple: int = 64  # d_model is a multiple of this (tensor-core friendly)
    head_dim: int = 64  # d_model / n_head below `wide_from`
    wide_head_dim: int = 128  # d_model / n_head from `wide_from` up
    wide_from: int = 1280  # d_model at which heads widen (Chinchilla Table A9)
    min_aspect: float = 64.0  # lowest d_model / n_layer allowed
    max_aspect: float = 128.0  # highest d_model / n_layer allowed

    def __post_init__(self) -> None:
        for name in ("width_multiple", "head_dim", "wide_head_dim", "wide_from"):
            if getattr(self, name) <= 0:
                raise ShapeError(f"shape rule {name} must be positive, got {getattr(self, name)}")
        if self.head_dim % 2 or self.wide_head_dim % 2:
            raise ShapeError("shape rule head dims must be even (RoPE rotates pairs)")
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ShapeError(
                f"shape rule needs 0 < min_aspect <= max_aspect, got "
                f"{self.min_aspect} and {self.max_aspect}"
            )

    def head_dim_for(self, d_model: int) -> int:
        """Head dimension (d_model / n_head) the rule uses at width `d_model`."""
        return self.wide_head_dim if d_model >= self.wide_from else self.head_dim

    def allows_width(self, d_model: int) -> bool:
        """Whether `d_model` is an allowed width (multiple of width and head dimension)."""
        return (
            d_model > 0
            and d_model % self.width_multiple == 0
            and d_model % self.head_dim_for(d_model) == 0
        )

    def allows_aspect(self, d_model: int, n_layer: int) -> bool:
        """Whether d_model / n_layer lies in the rule's band (inclusive)."""
        return n_layer >= 1 and self.min_aspect <= d_model / n_layer <= self.max_aspect

    def layer_range(self, d_model: int) -> range:
        """Depths allowed at width `d_model`, in layers (empty if none)."""
        # Float division may put ceil/floor one off; widen by one and let the predicate decide.
        lo = max(1, math.ceil(d_model / self.max_aspect) - 1)
        hi = math.floor(d_model / self.min_aspect) + 1
        inside = [n for n in range(lo, hi + 1) if self.allows_aspect(d_model, n)]
        return range(inside[0], inside[-1] + 1) if inside else range(0)

    def smallest_params(self) -> int:
        """Non-embedding params of the smallest allowed shape (narrowest width, fewest layers)."""
        d = self.width_multiple
        while not (self.allows_width(d) and len(self.layer_range(d))):
            d += self.width_multiple
        return _non_embedding_params(d, self.layer_range(d)[0])


DEFAULT_RULE = ShapeRule()
TINY_RULE = ShapeRule(
    width_multiple=16,
    head_dim=16,
    wide_head_dim=32,
    wide_from=128,
    min_aspect=8.0,
    max_aspect=32.0,
)


@dataclass(frozen=True, kw_only=True)
class ShapeChoice:
    """A shape chosen for a target N, with the N it actually has."""

    shape: Shape
    target_params: int  # params; the non-embedding count asked for
    reached_params: int  # params; non-embedding count of `shape` (= flops.count_params)
    rel_error: float  # dimensionless; (reached_params - target_params) / target_params


def shape_for_params(
    target_params: int,
    *,
    rule: ShapeRule = DEFAULT_RULE,
    vocab: int = 256,
    seq_len: int = 64,
    pos: PosEncoding = "rope",
    tied: bool = True,
) -> ShapeChoice:
    """The allowed shape whose non-embedding parameter count is closest to `target_params`.

    Args:
        target_params: N wanted, in non-embedding params.
        rule: which shapes are allowed; `TINY_RULE` for CPU-sized models.
        vocab, seq_len, pos, tied: copied into the Shape; they do not change N.

    Returns:
        The shape, the N it reaches and the relative error; bounds in the module docstring.

    Raises:
        ShapeError: target_params is not positive or is below the rule's smallest model.
    """
    smallest = rule.smallest_params()
    if target_params <= 0 or target_params < smallest:
        raise ShapeError(
            f"target of {target_params:,.0f} non-embedding params is below the smallest model "
            f"this shape rule allows ({smallest:,})",
            hint="use shapes.TINY_RULE or a smaller width_multiple",
        )
    if target_params > MAX_TARGET_PARAMS:
        raise ShapeError(
            f"target of {target_params:.3g} non-embedding params is above the largest model "
            f"the planner sizes ({MAX_TARGET_PARAMS:.0e})",
            hint="lower the compute levels or the size spread",
        )
    centre = math.sqrt(rule.min_aspect * rule.max_aspect)
    best: tuple[int, float, int, int] | None = None  # (|miss|, aspect distance, d, L)
    d = 0
    while True:
        d += rule.width_multiple
        floor_params = _non_embedding_params(d, max(1, math.ceil(d / rule.max_aspect) - 1))
        # Every allowed shape from this width up has at least floor_params (N grows with
        # width and the fewest allowed layers never shrink), so nothing further can be closer.
        if best is not None and floor_params - target_params > best[0]:
            break
        if not rule.allows_width(d):
            continue
        layers = rule.layer_range(d)
        if not layers:
            continue
        per_layer = _non_embedding_params(d, 1) - d
        ideal = (target_params - d) / per_layer
        for n_layer in {_clip(math.floor(ideal), layers), _clip(math.ceil(ideal), layers)}:
            miss = abs(_non_embedding_params(d, n_layer) - target_params)
            key = (miss, abs(math.log(d / n_layer / centre)), d, n_layer)
            if best is None or key < best:
                best = key
    assert best is not None  # target >= smallest guarantees at least one candidate
    _, _, d_model, n_layer = best
    shape = Shape(
        n_layer=n_layer,
        d_model=d_model,
        n_head=d_model // rule.head_dim_for(d_model),
        vocab=vocab,
        seq_len=seq_len,
        pos=pos,
        tied=tied,
    )
    reached = _non_embedding_params(d_model, n_layer)
    log.debug("target %d params -> %s (%d params)", target_params, shape, reached)
    return ShapeChoice(
        shape=shape,
        target_params=target_params,
        reached_params=reached,
        rel_error=(reached - target_params) / target_params,
    )


def _non_embedding_params(d_model: int, n_layer: int) -> int:
    # Same count as flops.count_params with ffw = 4 d_model: per block 2 LayerNorm weights,
    # QKV + output (4 d^2), MLP (8 d^2); plus the final LayerNorm.
    return n_layer * (12 * d_model * d_model + 2 * d_model) + d_model


def _clip(n: int, allowed: range) -> int:
    return min(max(n, allowed[0]), allowed[-1])
