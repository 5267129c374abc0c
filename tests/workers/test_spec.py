import dataclasses

import pytest

from workers.spec import DataSpec, LrSchedule, RunSpec, Shape, SinkSpec, SpecError


def _spec(**overrides) -> RunSpec:
    base = dict(
        shape=Shape(n_layer=2, d_model=32, n_head=2), tokens=10_240, global_batch=32, micro_batch=4
    )
    return RunSpec(**{**base, **overrides})


def test_equal_specs_have_equal_run_ids():
    assert _spec().run_id == _spec().run_id
    assert len(_spec().run_id) == 16
    assert int(_spec().run_id, 16) >= 0


def test_run_id_survives_json_round_trip():
    spec = _spec(zero_stage=2, world_size=2, micro_batch=8)
    again = RunSpec.from_json(spec.to_json())
    assert again == spec
    assert again.run_id == spec.run_id


# One changed value per field, nested dataclasses included.
_CHANGES = {
    "shape": Shape(n_layer=3, d_model=32, n_head=2),
    "tokens": 20_480,
    "global_batch": 64,
    "micro_batch": 8,
    "schedule": LrSchedule(kind="wsd"),
    "weight_decay": 0.0,
    "grad_clip": 0.5,
    "seed": 1,
    "data": DataSpec(root="/some/corpus"),
    "zero_stage": 3,
    "offload_optimizer": True,
    "precision": "bf16",
    "world_size": 4,
    "eval_every_steps": 50,
    "eval_batches": 4,
    "checkpoint_every_steps": 100,
    "log_every_steps": 1,
    "flops_per_token": 1e6,
    "activation_checkpointing": True,
    "keep_checkpoints": True,
    "branch_from": "0123456789abcdef",
    "branch_step": 3,
    "sinks": (SinkSpec(kind="tensorboard"),),
}
# Fields that are only valid together with others: each is changed from a base that has them.
_BRANCH = {"schedule": LrSchedule(kind="wsd"), "branch_from": "fedcba9876543210", "branch_step": 2}
_BASES = {"branch_from": _BRANCH, "branch_step": _BRANCH}


def test_every_field_is_covered_by_the_identity_test():
    assert set(_CHANGES) == {f.name for f in dataclasses.fields(RunSpec)}


@pytest.mark.parametrize("field", sorted(_CHANGES))
def test_run_id_changes_exactly_when_an_identity_field_changes(field):
    base = _spec(**_BASES.get(field, {}))
    changed = dataclasses.replace(base, **{field: _CHANGES[field]})
    if field in RunSpec.NOT_IDENTITY:
        assert changed.run_id == base.run_id
    else:
        assert changed.run_id != base.run_id


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_layer", 3),
        ("d_model", 64),
        ("n_head", 4),
        ("vocab", 512),
        ("seq_len", 32),
        ("ffw", 96),
        ("pos", "learned"),
        ("tied", False),
    ],
)
def test_run_id_changes_with_each_shape_field(field, value):
    shape = dataclasses.replace(Shape(n_layer=2, d_model=32, n_head=2), **{field: value})
    assert _spec(shape=shape).run_id != _spec().run_id


def test_not_identity_is_the_short_bookkeeping_list():
    assert RunSpec.NOT_IDENTITY == {
        "checkpoint_every_steps",
        "log_every_steps",
        "flops_per_token",
        "keep_checkpoints",
        "sinks",  # where rank 0 also sends its rows (TensorBoard, MLflow, W&B)
    }


_SYN, _TOK, _WSD = (
    DataSpec(source="synthetic"),
    DataSpec(source="tokens", root="/c"),
    LrSchedule(kind="wsd"),
)


@pytest.mark.parametrize(
    "base,changed",
    [
        ({"data": _SYN}, {"data": dataclasses.replace(_SYN, markov_alpha=0.1)}),
        ({"data": _SYN}, {"data": dataclasses.replace(_SYN, markov_seed=1)}),
        ({"data": _TOK}, {"data": dataclasses.replace(_TOK, token_dtype="uint32")}),
        ({"data": _TOK}, {"data": dataclasses.replace(_TOK, column="ids")}),
        ({"data": _TOK}, {"data": dataclasses.replace(_TOK, content_hash="ab" * 32)}),
        ({"schedule": _WSD}, {"schedule": dataclasses.replace(_WSD, decay_shape="1-sqrt")}),
    ],
)
def test_run_id_changes_with_each_added_nested_field(base, changed):
    assert _spec(**changed).run_id != _spec(**base).run_id


# Written by the first release (before the added fields), with the run_ids it computed.
_OLD_JSON = (
    '{"checkpoint_every_steps":0,"data":{"eval_frac":0.05,"root":"stdlib","source":"bytes"},'
    '"eval_batches":8,"eval_every_steps":0,"flops_per_token":0.0,"global_batch":32,'
    '"grad_clip":1.0,"log_every_steps":10,"micro_batch":4,"offload_optimizer":false,'
    '"precision":"fp32","schedule":{"cooldown_frac":0.2,"kind":"cosine","min_lr_frac":0.1,'
    '"peak_lr":0.003,"warmup_frac":0.05},"seed":0,"shape":{"d_model":32,"ffw":0,"n_head":2,'
    '"n_layer":2,"pos":"rope","seq_len":64,"tied":true,"vocab":256},"tokens":10240,'
    '"weight_decay":0.1,"world_size":1,"zero_stage":0}'
)


def test_json_and_run_ids_from_before_the_added_fields_still_hold():
    old = RunSpec.from_json(_OLD_JSON)
    assert old == _spec()
    assert old.run_id == _spec().run_id == "7dd44913e40d79aa"
    wide = _spec(
        shape=Shape(n_layer=4, d_model=64, n_head=4, pos="learned", tied=False),
        tokens=10**6,
        global_batch=16,
        micro_batch=8,
        schedule=LrSchedule(kind="wsd"),
        data=DataSpec(root="/x", eval_frac=0.1),
        zero_stage=3,
        world_size=2,
        precision="bf16",
    )
    assert wide.run_id == "cf04d74b4e75a0a7"


@pytest.mark.parametrize(
    "data",
    [
        dict(source="tokens", root="/c", content_hash="AB" * 32),
        dict(source="tokens", root="/c", content_hash="ab" * 31),
        dict(source="bytes", content_hash="ab" * 32),
    ],
)
def test_a_content_hash_is_64_hex_digits_of_a_tokens_source(data):
    with pytest.raises(SpecError, match="content_hash must be 64 lowercase hex"):
        DataSpec(**data).validate()


def test_default_data_spec_hashes_as_before():
    assert _spec(data=DataSpec(source="bytes", root="stdlib")).run_id == "7dd44913e40d79aa"


def test_wsd_branch_follows_the_parent_until_its_own_decay():
    from workers.schedule import lr_multiplier

    parent = _spec(
        tokens=2048 * 100,
        schedule=LrSchedule(kind="wsd", warmup_frac=0.05, cooldown_frac=0.2),
        checkpoint_every_steps=10,
        keep_checkpoints=True,
    )
    branch = parent.wsd_branch(at_step=40, decay_steps=10)
    assert branch.steps == 50 and branch.tokens == 50 * parent.tokens_per_step
    assert (branch.branch_from, branch.branch_step) == (parent.run_id, 40)
    for step in range(40):
        assert lr_multiplier(branch.schedule, step, 50) == lr_multiplier(parent.schedule, step, 100)
    assert lr_multiplier(branch.schedule, 39, 50) == 1.0 > lr_multiplier(branch.schedule, 40, 50)
    assert lr_multiplier(branch.schedule, 49, 50) == pytest.approx(0.1)
    assert RunSpec.from_json(branch.to_json()) == branch


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"at_step": 85, "decay_steps": 10}, "stable phase"),
        ({"at_step": 40, "decay_steps": 0}, "stable phase"),
        ({"at_step": 45, "decay_steps": 10}, "keeps no checkpoint"),
    ],
)
def test_wsd_branch_refuses_points_without_a_stable_kept_checkpoint(kwargs, match):
    parent = _spec(
        tokens=2048 * 100,
        schedule=LrSchedule(kind="wsd"),
        checkpoint_every_steps=10,
        keep_checkpoints=True,
    )
    with pytest.raises(SpecError, match=match):
        parent.wsd_branch(**kwargs)


def test_only_wsd_runs_branch():
    with pytest.raises(SpecError, match="only wsd"):
        _spec(branch_from="0123456789abcdef", branch_step=2)
    with pytest.raises(SpecError, match="both branch_from"):
        _spec(schedule=LrSchedule(kind="wsd"), branch_step=2)


def test_byte_data_needs_a_byte_vocab():
    with pytest.raises(SpecError, match="vocab >= 256"):
        _spec(shape=Shape(n_layer=2, d_model=32, n_head=2, vocab=100))


def test_batch_that_does_not_divide_is_rejected():
    with pytest.raises(SpecError, match="multiple of micro_batch"):
        _spec(global_batch=16, micro_batch=6)


def test_steps_cover_the_token_budget():
    spec = _spec(tokens=10_000)  # 32 x 64 = 2048 tokens per step
    assert spec.steps == 5
    assert spec.steps * spec.tokens_per_step >= spec.tokens
