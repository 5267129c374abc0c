"""Parameter and FLOP counts: exact agreement with the model, the Chinchilla appendix, 6ND."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.planning.flops import (
    chinchilla_forward_flops,
    count_params,
    flops_per_sequence,
    flops_per_token,
    tokens_for_flops,
    train_flops,
)
from workers.model import GPT
from workers.spec import Shape

# A shape small enough to count by hand: 2 layers, d_model 64, 4 heads of 16, ffw 256.
SMALL = Shape(n_layer=2, d_model=64, n_head=4, vocab=256, seq_len=64)


@pytest.mark.parametrize(
    "shape",
    [
        SMALL,
        Shape(n_layer=3, d_model=48, n_head=3, pos="learned"),
        Shape(n_layer=2, d_model=32, n_head=2, tied=False),
        Shape(n_layer=1, d_model=64, n_head=4, pos="learned", tied=False, vocab=100, seq_len=16),
        Shape(n_layer=2, d_model=32, n_head=4, ffw=80, seq_len=32),
    ],
    ids=["rope-tied", "learned-tied", "rope-untied", "learned-untied", "custom-ffw"],
)
def test_param_counts_match_gpt_model_exactly(shape):
    torch.manual_seed(0)
    model = GPT(shape)
    counts = count_params(shape)
    assert counts.non_embedding_params == model.num_params(non_embedding=True)
    assert counts.params_total == model.num_params(non_embedding=False)


def test_non_embedding_params_of_small_shape_by_hand():
    # Per block: 2 x 64 (LayerNorms) + 4 x 64^2 (QKV, out) + 2 x 64 x 256 (MLP) = 49,280;
    # two blocks + final LayerNorm 64.
    counts = count_params(SMALL)
    assert counts.non_embedding_params == 2 * 49_280 + 64 == 98_624
    assert counts.params_total == 98_624 + 256 * 64  # tied head shares the embedding
    assert counts.embedding_params == 256 * 64


def test_chinchilla_terms_of_small_shape_match_hand_count():
    # Hoffmann et al. 2022 appendix F, with seq 64, vocab 256, d_model 64, 4 heads of 16, ffw 256.
    terms = chinchilla_forward_flops(SMALL)
    assert terms.embeddings_flops == 2 * 64 * 256 * 64 == 2_097_152
    assert terms.qkv_flops == 2 * (2 * 3 * 64 * 64 * 64) == 3_145_728
    assert terms.attention_logits_flops == 2 * (2 * 64 * 64 * 64) == 1_048_576
    assert terms.softmax_flops == 2 * (3 * 4 * 64 * 64) == 98_304
    assert terms.attention_values_flops == 1_048_576
    assert terms.attention_output_flops == 2 * (2 * 64 * 64 * 64) == 1_048_576
    assert terms.mlp_flops == 2 * (2 * 64 * (64 * 256 + 64 * 256)) == 8_388_608
    assert terms.logits_flops == 2 * 64 * 64 * 256 == 2_097_152
    assert terms.total_flops == 18_972_672
    # Backward = 2 x forward, so training costs 3 x forward; per token = per sequence / 64.
    assert flops_per_sequence(SMALL, method="chinchilla") == 3 * 18_972_672
    assert flops_per_token(SMALL, method="chinchilla") == 3 * 18_972_672 / 64 == 889_344


def test_6nd_costs_six_flops_per_non_embedding_param_per_token():
    assert flops_per_token(SMALL, method="6nd") == 6 * 98_624
    assert train_flops(SMALL, 1_000, method="6nd") == 6 * 98_624 * 1_000
    assert flops_per_sequence(SMALL, method="6nd") == 6 * 98_624 * 64


def test_6nd_total_counts_the_embeddings_too():
    # SMALL ties its head: the one extra matrix is the token embedding, vocab x d_model.
    assert flops_per_token(SMALL, method="6nd_total") == 6 * (98_624 + 256 * 64)


# Hoffmann et al. 2022, Table A4: parameters as printed (and the step they are rounded to),
# n_layer, d_model, ffw, n_head, and the FLOP ratio ours / 6ND as printed (2 decimals).
# Vocab 32,000 and sequences of 2,048 tokens.
TABLE_A4 = [
    (73e6, 1e6, 10, 640, 2560, 10, 1.03),
    (305e6, 1e6, 20, 1024, 4096, 16, 1.10),
    (552e6, 1e6, 24, 1280, 5120, 10, 1.08),
    (1.1e9, 1e8, 26, 1792, 7168, 14, 1.04),
    (1.6e9, 1e8, 28, 2048, 8192, 16, 1.03),
    (6.8e9, 1e8, 40, 3584, 14336, 28, 0.99),
]


@pytest.mark.parametrize("params, step, n_layer, d_model, ffw, n_head, printed_ratio", TABLE_A4)
def test_chinchilla_table_a4_ratios_from_layer_terms(
    params, step, n_layer, d_model, ffw, n_head, printed_ratio
):
    # The printed ratios come out when embeddings and final logits are left out of the count
    # and N is the printed (total) parameter count; see the flops module docstring. Allow
    # for both roundings: the ratio's (0.005) and N's (half a step).
    shape = Shape(
        n_layer=n_layer, d_model=d_model, n_head=n_head, vocab=32_000, seq_len=2048, ffw=ffw
    )
    per_token = 3 * chinchilla_forward_flops(shape).layers_flops / shape.seq_len
    ratio = per_token / (6 * params)
    assert ratio == pytest.approx(printed_ratio, abs=0.005 + ratio * 0.5 * step / params)


def test_table_a4_shape_with_every_appendix_term_costs_more_than_printed():
    # As written, the appendix also counts embeddings and logits; for the 73M model at
    # vocab 32K these add about half again, so the "chinchilla" method budgets more.
    shape = Shape(n_layer=10, d_model=640, n_head=10, vocab=32_000, seq_len=2048, ffw=2560)
    terms = chinchilla_forward_flops(shape)
    assert terms.total_flops / terms.layers_flops == pytest.approx(1.54, abs=0.01)


def test_chinchilla_count_approaches_6nd_for_wide_models_at_fixed_seq_len():
    ratios = []
    for d_model in (256, 1024, 4096, 16384):
        shape = Shape(n_layer=4, d_model=d_model, n_head=d_model // 128, vocab=256, seq_len=64)
        ratios.append(
            flops_per_token(shape, method="chinchilla") / flops_per_token(shape, method="6nd")
        )
    assert ratios == sorted(ratios, reverse=True)  # attention and vocab terms fade
    assert ratios[0] > 1.05
    assert ratios[-1] == pytest.approx(1.0, abs=0.002)


def test_train_flops_is_per_token_cost_times_tokens():
    for method in ("chinchilla", "6nd"):
        assert train_flops(SMALL, 12_345, method=method) == pytest.approx(
            12_345 * flops_per_token(SMALL, method=method)
        )


shapes = st.builds(
    lambda n_layer, width, n_head, seq_len, vocab: Shape(
        n_layer=n_layer, d_model=width * n_head, n_head=n_head, seq_len=seq_len, vocab=vocab
    ),
    st.integers(1, 96),
    st.sampled_from([16, 32, 64, 128]),
    st.integers(1, 64),
    st.sampled_from([64, 2048, 8192]),
    st.sampled_from([256, 32_000, 50_257]),
)


@settings(max_examples=200, deadline=None)
@given(
    shape=shapes,
    budget=st.floats(0, 1e25, allow_nan=False),
    method=st.sampled_from(["chinchilla", "6nd", "6nd_total"]),
)
def test_tokens_for_flops_is_the_most_that_fits_the_budget(shape, budget, method):
    tokens = tokens_for_flops(shape, budget, method=method)
    assert tokens >= 0
    assert train_flops(shape, tokens, method=method) <= budget
    assert train_flops(shape, tokens + 1, method=method) > budget


def test_unknown_method_and_negative_budgets_are_rejected():
    with pytest.raises(ValueError, match="method"):
        flops_per_token(SMALL, method="5nd")
    with pytest.raises(ValueError, match="tokens"):
        train_flops(SMALL, -1, method="6nd")
    with pytest.raises(ValueError, match="flops"):
        tokens_for_flops(SMALL, -1.0, method="6nd")
    with pytest.raises(ValueError, match="flops"):
        tokens_for_flops(SMALL, math.inf, method="6nd")
