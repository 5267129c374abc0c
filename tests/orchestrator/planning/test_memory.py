"""ZeRO memory model and sizing: the paper's example, activations, and fit_run's choices."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.planning.flops import count_params
from orchestrator.planning.memory import (
    SizingError,
    activation_bytes,
    fit_run,
    memory_per_gpu,
    model_states,
)
from storage.errors import OrchError
from workers.spec import RunSpec, Shape

GB = 1e9  # the ZeRO paper's GB are 1e9 bytes
SMALL = Shape(n_layer=2, d_model=64, n_head=4, vocab=256, seq_len=64)
SEVEN_B = Shape(n_layer=32, d_model=4096, n_head=32, vocab=32_000, seq_len=2048)


@pytest.mark.parametrize("stage, expected_gb", [(0, 120), (1, 31.4), (2, 16.6), (3, 1.88)])
def test_zero_paper_example_7_5b_on_64_gpus(stage, expected_gb):
    # Rajbhandari et al. 2020, fig. 1: Psi = 7.5B, Nd = 64, K = 12 (mixed-precision Adam).
    states = model_states(7_500_000_000, zero_stage=stage, world_size=64)
    assert round(states.total_bytes / GB, 2 if expected_gb < 10 else 1) == expected_gb


def test_fp32_training_keeps_4_4_8_bytes_per_param():
    psi = 7_500_000_000
    totals = [
        model_states(psi, zero_stage=s, world_size=64, precision="fp32").total_bytes
        for s in range(4)
    ]
    assert totals[0] == 16 * psi
    assert totals[1] == 8 * psi + 8 * psi / 64  # Adam momentum + variance sharded
    assert totals[2] == 4 * psi + 12 * psi / 64  # + fp32 gradients sharded
    assert totals[3] == 16 * psi / 64


def test_offload_moves_the_12_optimizer_bytes_to_host():
    psi = 7_500_000_000
    states = model_states(psi, zero_stage=2, world_size=64, offload_optimizer=True)
    assert states.optimizer_bytes == 0
    assert states.total_bytes == 2 * psi + 2 * psi / 64
    assert states.offloaded_bytes == 12 * psi / 64
    with pytest.raises(ValueError, match="stage"):
        model_states(psi, zero_stage=0, world_size=1, offload_optimizer=True)


def test_activations_follow_korthikanti_eq_1_plus_output_layer():
    # s = 64, b = 8, h = 64, a = 4: a layer keeps sbh (34 + 5 a s / h) = 32,768 x 54 bytes;
    # the output layer 4 sbh, and fp32 logits 4 s b vocab = 524,288.
    per_layer = 64 * 8 * 64 * (34 + 5 * 4 * 64 / 64)
    assert per_layer == 1_769_472
    expected = 2 * per_layer + 4 * 32_768 + 524_288
    assert activation_bytes(SMALL, 8) == expected == 4_194_304
    # fp32 activations take twice the bytes; the logits are fp32 either way.
    assert activation_bytes(SMALL, 8, precision="fp32") == 2 * (2 * per_layer + 4 * 32_768) + (
        524_288
    )


def test_checkpointing_keeps_layer_inputs_plus_one_recomputed_layer():
    sbh = 64 * 8 * 64
    full_layer = sbh * (34 + 20)
    assert activation_bytes(SMALL, 8, checkpointing=True) == 2 * (2 * sbh) + full_layer + (
        4 * sbh + 524_288
    )
    deeper = Shape(n_layer=12, d_model=64, n_head=4, vocab=256, seq_len=64)
    # Each extra layer costs only its input: 2 bytes x seq x batch x d_model.
    assert (
        activation_bytes(deeper, 8, checkpointing=True)
        - activation_bytes(SMALL, 8, checkpointing=True)
        == 10 * 2 * sbh
    )


def test_activations_grow_linearly_with_micro_batch():
    one = activation_bytes(SEVEN_B, 1)
    assert activation_bytes(SEVEN_B, 16) == pytest.approx(16 * one)


def test_stage_3_adds_two_gathered_blocks_of_16_bit_weights():
    block = (count_params(SMALL).non_embedding_params - 64) // 2  # 49,280 > embedding 16,384
    n_total = count_params(SMALL).params_total
    at = dict(micro_batch=1, world_size=4)
    assert memory_per_gpu(n_total, SMALL, zero_stage=3, **at).gathered_params_bytes == 4 * block
    assert memory_per_gpu(n_total, SMALL, zero_stage=2, **at).gathered_params_bytes == 0


def test_fit_run_takes_fewest_gpus_then_lowest_stage():
    # 1.3B params: 20.8 GB of states unsharded, over an 18 GB limit. On 2 GPUs stage 0 still
    # holds everything; stage 1 needs 2.6 + 2.6 + 15.6 / 2 = 13 GB.
    sizing = fit_run(1_300_000_000, SMALL, 64, gpu_memory_bytes=20 * GB, max_gpus=8)
    assert (sizing.world_size, sizing.zero_stage, sizing.offload_optimizer) == (2, 1, False)
    assert sizing.memory.total_bytes <= sizing.limit_bytes == pytest.approx(18 * GB)
    assert (sizing.micro_batch, sizing.grad_accum) == (32, 1)


def test_fit_run_picks_largest_power_of_two_micro_batch_that_fits():
    n_total = count_params(SMALL).params_total
    states = 16 * n_total
    per_sequence = activation_bytes(SMALL, 1)
    gpu = (states + 5.5 * per_sequence) / 0.9  # room for 5 sequences, so 4 is the answer
    sizing = fit_run(n_total, SMALL, 48, gpu_memory_bytes=gpu, max_gpus=1)
    assert (sizing.world_size, sizing.zero_stage) == (1, 0)
    assert (sizing.micro_batch, sizing.grad_accum) == (4, 12)


def test_world_sizes_are_powers_of_two_dividing_the_batch_unless_any_divisor_allowed():
    # 1.3B params under a 8 GB limit: 2 GPUs are too few; 3 fit at ZeRO-3, 4 at ZeRO-2.
    kwargs = dict(gpu_memory_bytes=8 * GB / 0.9, max_gpus=8)
    pow2 = fit_run(1_300_000_000, SMALL, 12, **kwargs)
    assert (pow2.world_size, pow2.zero_stage, pow2.micro_batch, pow2.grad_accum) == (4, 2, 1, 3)
    any_divisor = fit_run(1_300_000_000, SMALL, 12, world_sizes="divisors", **kwargs)
    assert (any_divisor.world_size, any_divisor.zero_stage) == (3, 3)
    assert any_divisor.micro_batch * any_divisor.grad_accum * 3 == 12


def test_fit_run_offloads_only_when_allowed():
    kwargs = dict(gpu_memory_bytes=8 * GB, max_gpus=1)
    with pytest.raises(SizingError) as info:
        fit_run(1_300_000_000, SMALL, 16, **kwargs)
    assert "max_gpus" in info.value.hint and "offload" in info.value.hint
    sizing = fit_run(1_300_000_000, SMALL, 16, allow_offload=True, **kwargs)
    # One GPU: 2 + 2 bytes/param stay (5.2 GB), the 12 go to the host.
    assert (sizing.world_size, sizing.zero_stage, sizing.offload_optimizer) == (1, 1, True)
    assert sizing.memory.states.total_bytes == pytest.approx(5.2 * GB)


def test_run_that_fits_nowhere_names_size_best_memory_limit_and_what_could_help():
    n_total = count_params(SEVEN_B).params_total
    with pytest.raises(SizingError) as info:
        fit_run(n_total, SEVEN_B, 512, gpu_memory_bytes=32 * GB, max_gpus=8)
    err = info.value
    assert isinstance(err, OrchError) and isinstance(err, ValueError)
    assert err.limit_bytes == pytest.approx(28.8 * GB)
    # Best: 8 GPUs at ZeRO-3, micro-batch 1: ~13 GB of states + ~31 GB of activations.
    assert 40 * GB < err.best_bytes < 50 * GB
    message = str(err)
    for part in ("6.57B params", "8 GPUs", "ZeRO-3", "28.8 GB", f"{err.best_bytes / GB:.3g} GB"):
        assert part in message
    assert "activation checkpointing" in err.hint
    # ~31 GB of activations for one sequence: no GPU count helps, so none is suggested.
    assert "max_gpus" not in err.hint


def test_activation_checkpointing_lets_the_7b_model_fit_on_8_gpus():
    # 6.57B params at ZeRO-2 on 8 GPUs: 6.57 x (2 + 14 / 8) = 24.6 GB of states, and with
    # checkpointing ~1.8 GB of activations per sequence: under 28.8 GB. On 4 GPUs, no.
    n_total = count_params(SEVEN_B).params_total
    sizing = fit_run(
        n_total, SEVEN_B, 512, gpu_memory_bytes=32 * GB, max_gpus=8, activation_checkpointing=True
    )
    assert (sizing.world_size, sizing.zero_stage, sizing.activation_checkpointing) == (8, 2, True)
    assert sizing.memory.states.total_bytes == pytest.approx(n_total * (2 + 14 / 8))
    assert sizing.memory.total_bytes <= 28.8 * GB


@settings(max_examples=100, deadline=None)
@given(
    n_total=st.floats(5, 11).map(lambda exponent: int(10**exponent)),  # 100K to 100B params
    global_batch=st.integers(1, 512),
    max_gpus=st.integers(1, 64),
    gpu_gb=st.sampled_from([16, 24, 40, 80]),
    allow_offload=st.booleans(),
    world_sizes=st.sampled_from(["pow2", "divisors"]),
)
def test_sizing_fits_builds_a_run_spec_and_no_fewer_gpus_would_do(
    n_total, global_batch, max_gpus, gpu_gb, allow_offload, world_sizes
):
    shape = Shape(n_layer=4, d_model=256, n_head=4, vocab=256, seq_len=256)
    kwargs = dict(
        gpu_memory_bytes=gpu_gb * GB,
        max_gpus=max_gpus,
        allow_offload=allow_offload,
        world_sizes=world_sizes,
    )
    try:
        sizing = fit_run(n_total, shape, global_batch, **kwargs)
    except SizingError as err:
        assert err.best_bytes > err.limit_bytes
        return
    assert sizing.memory.total_bytes <= sizing.limit_bytes
    spec = RunSpec(
        shape=shape,
        tokens=10**6,
        global_batch=global_batch,
        micro_batch=sizing.micro_batch,
        world_size=sizing.world_size,
        zero_stage=sizing.zero_stage,
        offload_optimizer=sizing.offload_optimizer,
    )
    assert spec.grad_accum == sizing.grad_accum
    assert sizing.world_size <= max_gpus
    setups = [(s, False) for s in range(4)] + ([(s, True) for s in (1, 2, 3)] * allow_offload)
    for world in range(1, sizing.world_size + 1):
        if global_batch % world or (world_sizes == "pow2" and world & (world - 1)):
            continue
        for stage, offload in setups:
            if (world, stage, offload) == (
                sizing.world_size,
                sizing.zero_stage,
                sizing.offload_optimizer,
            ):
                break
            fits = memory_per_gpu(
                n_total,
                shape,
                micro_batch=1,
                zero_stage=stage,
                world_size=world,
                offload_optimizer=offload,
            )
            assert fits.total_bytes > sizing.limit_bytes
    micro = sizing.micro_batch
    per_rank = global_batch // sizing.world_size
    assert per_rank % micro == 0 and micro & (micro - 1) == 0
    if per_rank % (2 * micro) == 0:  # the next power of two up would not have fitted
        bigger = memory_per_gpu(
            n_total,
            shape,
            micro_batch=2 * micro,
            zero_stage=sizing.zero_stage,
            world_size=sizing.world_size,
            offload_optimizer=sizing.offload_optimizer,
        )
        assert bigger.total_bytes > sizing.limit_bytes
