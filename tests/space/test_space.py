"""Space: condition tree, canonical configs, enumeration, sampling, pinning, arms, encoding, JSON."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import numpy as np
import pytest

from autoscout_plugin.space import (
    Bool,
    Categorical,
    Condition,
    Float,
    GlobalBatch,
    Implies,
    Int,
    MaxProduct,
    Space,
    SpaceError,
)

DDP = (Condition("strategy", ("ddp",)),)
FSDP = (Condition("strategy", ("fsdp",)),)
POWERSGD = (Condition("ddp_comm_hook", ("powersgd",)),)


def small_space(*constraints) -> Space:  # noqa: ANN002
    """single: 2 configs; ddp: (none + powersgd x 2 ranks) x 2 = 6; fsdp: 2 x 2 = 4. Total 12."""
    return Space([
        Categorical(name="strategy", choices=("single", "ddp", "fsdp"), structural=True),
        Bool("cpu_offload", structural=True, when=FSDP),
        Categorical(name="ddp_comm_hook", choices=("none", "powersgd"), when=DDP),
        Int(name="powersgd_rank", choices=(1, 4), when=POWERSGD),
        Int(name="micro_batch_size", choices=(4, 8), log=True),
    ], constraints)


def mixed_space() -> Space:
    """Every knob kind, with conditions two levels deep.

    Dense part everywhere: micro_batch_size 5 x num_workers 3 x pin_memory 2 = 30 grid points.
    single: 30 x lr_warmup 8 = 240; fsdp: 30 x 2 = 60; ddp: 30 x bucket 8 x (none, fp16, rank 1..4) = 1440.
    """
    return Space([
        Categorical(name="strategy", choices=("single", "ddp", "fsdp"), structural=True),
        Bool("cpu_offload", structural=True, when=FSDP),
        Categorical(name="ddp_comm_hook", choices=("none", "fp16", "powersgd"), when=DDP),
        Int(name="powersgd_rank", low=1, high=4, when=POWERSGD),
        Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True, default=25.0, when=DDP),
        Int(name="micro_batch_size", low=1, high=16, log=True),
        Int(name="num_workers", low=0, high=4, step=2),
        Float(name="lr_warmup", low=0.0, high=0.3, when=(Condition("strategy", ("single",)),)),
        Bool("pin_memory"),
    ])


# ------------------------------------------------------------------------------ construction


def test_lookup_and_partition() -> None:
    space = small_space()
    assert space.names == ["strategy", "cpu_offload", "ddp_comm_hook", "powersgd_rank", "micro_batch_size"]
    assert space["powersgd_rank"].name == "powersgd_rank"
    assert "strategy" in space and "tp" not in space
    assert [k.name for k in space.structural] == ["strategy", "cpu_offload"]
    assert [k.name for k in space.dense] == ["ddp_comm_hook", "powersgd_rank", "micro_batch_size"]
    with pytest.raises(SpaceError, match="'tp'"):
        space["tp"]


def test_condition_on_undefined_parent() -> None:
    with pytest.raises(SpaceError, match=r"'cpu_offload'.*'strategy'"):
        Space([Bool("cpu_offload", when=FSDP)])


def test_condition_on_later_defined_parent() -> None:
    with pytest.raises(SpaceError, match=r"'cpu_offload'.*'strategy'.*before"):
        Space([Bool("cpu_offload", when=FSDP), Categorical(name="strategy", choices=("single", "fsdp"))])


def test_condition_values_the_parent_cannot_take() -> None:
    with pytest.raises(SpaceError, match=r"'cpu_offload'.*'strategy'.*'fsdp'"):
        Space([Categorical(name="strategy", choices=("single", "ddp")), Bool("cpu_offload", when=FSDP)])


def test_condition_value_of_the_wrong_type_for_a_bool_parent() -> None:
    with pytest.raises(SpaceError, match=r"'x'.*'flag'.*\[1\]"):
        Space([Bool("flag"), Int(name="x", low=0, high=1, when=(Condition("flag", (1,)),))])


def test_condition_without_values() -> None:
    with pytest.raises(SpaceError, match=r"'vp'.*'pp'.*no values"):
        Space([Int(name="pp", choices=(1, 2)), Int(name="vp", choices=(1, 2), when=(Condition("pp", ()),))])


def test_duplicate_knob_names() -> None:
    with pytest.raises(SpaceError, match=r"'tp'.*twice"):
        Space([Int(name="tp", low=1, high=2), Int(name="tp", low=1, high=4)])


@pytest.mark.parametrize(
    "knob",
    [
        Int(name="micro_batch_size", choices=(4, 8), default=6),
        Int(name="num_threads", low=1, high=9, step=2, default=4),
        Float(name="ddp_bucket_cap_mb", low=1.0, high=8.0, default=25.0),
        Categorical(name="precision", choices=("32-true",), default="bf16-mixed"),
        Bool("pin_memory", default=1),
    ],
    ids=lambda k: k.name,
)
def test_default_outside_the_values(knob) -> None:  # noqa: ANN001
    with pytest.raises(SpaceError, match=rf"'{knob.name}'.*default {knob.default!r}"):
        Space([knob])


def test_empty_space() -> None:
    with pytest.raises(SpaceError, match="at least one knob"):
        Space([])


# ---------------------------------------------------------------------------- condition tree


def test_child_active_only_under_parent_values() -> None:
    space = small_space()
    names = lambda cfg: [k.name for k in space.active(cfg)]  # noqa: E731
    assert names({"strategy": "single"}) == ["strategy", "micro_batch_size"]
    assert names({"strategy": "fsdp"}) == ["strategy", "cpu_offload", "micro_batch_size"]
    assert names({"strategy": "ddp", "ddp_comm_hook": "none"}) == [
        "strategy", "ddp_comm_hook", "micro_batch_size"]
    assert names({"strategy": "ddp", "ddp_comm_hook": "powersgd"}) == [
        "strategy", "ddp_comm_hook", "powersgd_rank", "micro_batch_size"]


def test_grandchild_inactive_when_its_parent_is_inactive() -> None:
    space = small_space()
    # ddp_comm_hook is inactive under fsdp, so powersgd_rank is too, even if the key is present
    config = {"strategy": "fsdp", "ddp_comm_hook": "powersgd"}
    assert "powersgd_rank" not in [k.name for k in space.active(config)]
    with pytest.raises(SpaceError, match=r"'ddp_comm_hook'='powersgd'.*inactive"):
        space.canonical({**config, "cpu_offload": False, "micro_batch_size": 4, "powersgd_rank": 1})
    out = space.canonical({**config, "cpu_offload": False, "micro_batch_size": 4, "powersgd_rank": 1},
                          allow_inactive=True)
    assert out == {"cpu_offload": False, "micro_batch_size": 4, "strategy": "fsdp"}


# --------------------------------------------------------------------------------- canonical


def test_canonical_sorts_keys_and_keeps_values() -> None:
    space = small_space()
    config = {"strategy": "ddp", "ddp_comm_hook": "powersgd", "powersgd_rank": 4, "micro_batch_size": 8}
    out = space.canonical(config)
    assert out == config
    assert list(out) == sorted(config)


def test_canonical_unknown_knob_names_knob_and_value() -> None:
    with pytest.raises(SpaceError, match=r"tp=2"):
        small_space().canonical({"strategy": "single", "micro_batch_size": 4, "tp": 2})


def test_canonical_missing_active_knob() -> None:
    with pytest.raises(SpaceError, match=r"'cpu_offload'.*missing"):
        small_space().canonical({"strategy": "fsdp", "micro_batch_size": 4})


def test_canonical_missing_grandchild() -> None:
    with pytest.raises(SpaceError, match=r"'powersgd_rank'.*missing"):
        small_space().canonical({"strategy": "ddp", "ddp_comm_hook": "powersgd", "micro_batch_size": 4})


@pytest.mark.parametrize(
    ("knob", "value"),
    [("micro_batch_size", 6), ("micro_batch_size", 4.5), ("strategy", "deepspeed"), ("micro_batch_size", "4"),
     ("micro_batch_size", True), ("micro_batch_size", float("nan"))],
)
def test_canonical_out_of_range_names_knob_and_value(knob: str, value: object) -> None:
    config = {"strategy": "single", "micro_batch_size": 4, knob: value}
    with pytest.raises(SpaceError, match=rf"'{knob}'.*{re.escape(repr(value))}"):
        small_space().canonical(config)


def test_canonical_bool_rejects_one() -> None:
    with pytest.raises(SpaceError, match=r"'cpu_offload'.*1"):
        small_space().canonical({"strategy": "fsdp", "cpu_offload": 1, "micro_batch_size": 4})


def test_canonical_inactive_value_raises_unless_allowed() -> None:
    space = small_space()
    config = {"strategy": "single", "cpu_offload": True, "micro_batch_size": 4}
    with pytest.raises(SpaceError, match=r"'cpu_offload'=True.*strategy in \['fsdp'\]"):
        space.canonical(config)
    assert space.canonical(config, allow_inactive=True) == {"micro_batch_size": 4, "strategy": "single"}


def test_canonical_converts_numpy_scalars() -> None:
    space = mixed_space()
    config = {
        "strategy": np.str_("ddp"), "ddp_comm_hook": "powersgd", "powersgd_rank": np.int64(3),
        "ddp_bucket_cap_mb": np.float64(25.0), "micro_batch_size": np.int32(8),
        "num_workers": np.float64(4.0), "pin_memory": np.bool_(True),
    }
    out = space.canonical(config)
    assert out == {"ddp_bucket_cap_mb": 25.0, "ddp_comm_hook": "powersgd", "micro_batch_size": 8,
                   "num_workers": 4, "pin_memory": True, "powersgd_rank": 3, "strategy": "ddp"}
    types = {k: type(v) for k, v in out.items()}
    assert types == {"ddp_bucket_cap_mb": float, "ddp_comm_hook": str, "micro_batch_size": int,
                     "num_workers": int, "pin_memory": bool, "powersgd_rank": int, "strategy": str}
    json.dumps(out)  # plain Python all the way down
    single = space.canonical({"strategy": "single", "micro_batch_size": np.uint8(2), "num_workers": 0,
                              "pin_memory": np.bool_(False), "lr_warmup": np.float32(0.25)})
    assert type(single["lr_warmup"]) is float and single["lr_warmup"] == 0.25
    assert type(single["pin_memory"]) is bool and single["pin_memory"] is False


def test_canonical_error_shows_plain_values() -> None:
    with pytest.raises(SpaceError, match=r"'cpu_offload'=True is inactive"):
        small_space().canonical({"strategy": "single", "micro_batch_size": 4, "cpu_offload": np.bool_(True)})
    with pytest.raises(SpaceError, match=r"'micro_batch_size': value 6 is outside"):
        small_space().canonical({"strategy": "single", "micro_batch_size": np.int64(6)})


def test_canonical_int_for_float_knob_and_float_for_int_knob() -> None:
    space = mixed_space()
    base = space.default()
    out = space.canonical({**base, "lr_warmup": 0, "micro_batch_size": 16.0})
    assert type(out["lr_warmup"]) is float and type(out["micro_batch_size"]) is int


def test_canonical_snaps_float_choices() -> None:
    space = Space([Float(name="ddp_bucket_cap_mb", choices=(0.3, 25.0))])
    assert space.canonical({"ddp_bucket_cap_mb": 0.1 + 0.2}) == {"ddp_bucket_cap_mb": 0.3}


def test_canonical_accepts_only_the_derived_grad_accum() -> None:
    space = small_space(GlobalBatch(32))
    config = {"strategy": "single", "micro_batch_size": 8}
    assert space.canonical({**config, "grad_accum": 4}) == config
    with pytest.raises(SpaceError, match=r"'grad_accum'=2.*4"):
        space.canonical({**config, "grad_accum": 2})
    with pytest.raises(SpaceError, match=r"'grad_accum'=4"):
        small_space().canonical({**config, "grad_accum": 4})  # nothing derives it


def test_key_is_stable_and_distinguishes() -> None:
    space = small_space()
    a = space.key({"micro_batch_size": 4, "strategy": "single"})
    assert a == space.key({"strategy": "single", "micro_batch_size": np.int64(4)})
    assert a != space.key({"strategy": "single", "micro_batch_size": 8})


# ------------------------------------------------------------------------------- enumeration


def test_enumerate_respects_the_condition_tree() -> None:
    configs = small_space().enumerate()
    assert len(configs) == 12  # counted by hand in `small_space`
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 12
    space = small_space()
    for c in configs:
        assert space.canonical(c) == c and list(c) == sorted(c)
    by_strategy = Counter(c["strategy"] for c in configs)
    assert by_strategy == {"single": 2, "ddp": 6, "fsdp": 4}
    assert sum("powersgd_rank" in c for c in configs) == 4


def test_enumerate_respects_the_constraints() -> None:
    space = small_space(GlobalBatch(4))
    assert len(space.enumerate()) == 6  # micro_batch_size=8 does not divide 4
    assert all(c["micro_batch_size"] == 4 for c in space.enumerate())
    assert len(space.enumerate(feasible_only=False)) == 12
    implies = small_space(Implies("strategy", ("ddp",), "ddp_comm_hook", ("none",)))
    assert len(implies.enumerate()) == 12 - 4


def test_grid_size_counts_the_condition_tree() -> None:
    assert small_space().grid_size() == 12
    assert mixed_space().grid_size() == 240 + 60 + 1440 == len(mixed_space().enumerate())
    assert small_space(GlobalBatch(4)).grid_size() == 12  # constraints are not counted


def test_enumerate_refuses_huge_spaces() -> None:
    space = Space([Int(name=f"k{i}", low=0, high=15) for i in range(3)])
    assert space.grid_size() == 16 ** 3
    with pytest.raises(SpaceError, match="4096.*sample"):
        space.enumerate(limit=1000)


def test_candidates_of_a_small_space_is_the_feasible_grid() -> None:
    space = small_space(GlobalBatch(4))
    assert space.candidates(random.Random(0)) == space.enumerate()


def test_candidates_of_a_large_space_are_feasible_samples() -> None:
    space = Space([Int(name=f"k{i}", low=0, high=15) for i in range(4)]
                  + [Int(name="micro_batch_size", choices=(4, 8))], [GlobalBatch(4)])
    configs = space.candidates(random.Random(0), n_samples=50)
    assert 40 < len(configs) <= 50
    assert all(c["micro_batch_size"] == 4 for c in configs)


# ---------------------------------------------------------------------------------- sampling


def test_sample_is_canonical_feasible_and_seeded() -> None:
    space = small_space(MaxProduct(("micro_batch_size", "powersgd_rank"), 16, "budget"))
    draws = [space.sample(random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(1)
    many = [space.sample(rng) for _ in range(300)]
    assert all(space.canonical(c) == c and space.is_feasible(c) for c in many)
    assert not any(c.get("powersgd_rank") == 4 and c["micro_batch_size"] == 8 for c in many)
    seen = {json.dumps(c, sort_keys=True) for c in many}
    assert len(seen) == 11  # every feasible config (12 minus rank 4 x mbs 8) shows up
    other = [space.sample(random.Random(2)) for _ in range(1)] + [space.sample(random.Random(3))]
    assert [space.sample(random.Random(s)) for s in (2, 3)] == other


def test_sample_of_a_mixed_space_stays_in_range() -> None:
    space = mixed_space()
    rng = random.Random(0)
    for _ in range(200):
        c = space.sample(rng)
        assert space.canonical(c) == c


def test_sample_int_range_is_uniform_including_the_ends() -> None:
    space = Space([Int(name="num_workers", low=0, high=2)])
    rng = random.Random(0)
    counts = Counter(space.sample(rng)["num_workers"] for _ in range(3000))
    assert set(counts) == {0, 1, 2}
    assert all(850 < n < 1150 for n in counts.values()), counts


def test_sample_infeasible_raises() -> None:
    with pytest.raises(SpaceError, match="no feasible config.*== 30"):
        small_space(GlobalBatch(30)).sample(random.Random(0), tries=50)


# ------------------------------------------------------------------------- check_satisfiable


def test_check_satisfiable_passes() -> None:
    small_space(GlobalBatch(8)).check_satisfiable()


def test_check_satisfiable_names_the_impossible_constraint() -> None:
    space = Space([Int(name="micro_batch_size", choices=(4, 8))], [GlobalBatch(30)])
    with pytest.raises(SpaceError, match=r"micro_batch_size x grad_accum x dp == 30.*micro_batch_size=4"):
        space.check_satisfiable()


def test_check_satisfiable_finds_a_feasible_value_between_grid_points() -> None:
    space = Space([Int(name="micro_batch_size", low=3, high=100)], [GlobalBatch(7)])
    assert 7 not in space["micro_batch_size"].grid()
    assert space.enumerate() == []
    space.check_satisfiable()  # micro_batch_size=7 works


def test_check_satisfiable_of_a_large_space_samples() -> None:
    knobs = [Int(name=f"k{i}", low=0, high=15) for i in range(5)]
    space = Space([*knobs, Int(name="micro_batch_size", choices=(4, 8))], [GlobalBatch(30)])
    assert space.grid_size() > 200_000
    with pytest.raises(SpaceError, match="== 30"):
        space.check_satisfiable()


# --------------------------------------------------------------------------------------- pin


def test_pin_fixes_values_and_prunes_dead_branches() -> None:
    pinned = small_space().pin({"strategy": "ddp"})
    assert "cpu_offload" not in pinned  # only under fsdp
    assert pinned["strategy"].choices == ("ddp",) and pinned["strategy"].default == "ddp"
    assert len(pinned.enumerate()) == 6


def test_pin_a_grandchild_branch_away() -> None:
    pinned = small_space().pin({"strategy": "ddp", "ddp_comm_hook": "none"})
    assert "powersgd_rank" not in pinned
    assert pinned.enumerate() == [
        {"ddp_comm_hook": "none", "micro_batch_size": m, "strategy": "ddp"} for m in (4, 8)]


def test_pin_narrows_multi_value_conditions() -> None:
    space = Space([
        Categorical(name="strategy", choices=("single", "fsdp", "deepspeed")),
        Bool("cpu_offload", when=(Condition("strategy", ("fsdp", "deepspeed")),)),
    ])
    pinned = space.pin({"strategy": "deepspeed"})
    assert pinned["cpu_offload"].when == (Condition("strategy", ("deepspeed",)),)
    assert len(pinned.enumerate()) == 2


def test_pin_numeric_values() -> None:
    space = mixed_space().pin({"micro_batch_size": np.int64(16), "lr_warmup": 0.1, "strategy": "single"})
    assert space["micro_batch_size"].choices == (16,) and space["micro_batch_size"].default == 16
    assert space["lr_warmup"].choices == (0.1,)
    assert space.default()["micro_batch_size"] == 16


def test_pin_keeps_constraints() -> None:
    pinned = small_space(GlobalBatch(4)).pin({"strategy": "single"})
    assert pinned.constraints == (GlobalBatch(4),)
    assert pinned.enumerate() == [{"micro_batch_size": 4, "strategy": "single"}]


def test_pin_errors() -> None:
    space = small_space()
    with pytest.raises(SpaceError, match=r"'micro_batch_size'.*6"):
        space.pin({"micro_batch_size": 6})
    with pytest.raises(SpaceError, match=r"'tp'"):
        space.pin({"tp": 2})
    with pytest.raises(SpaceError, match=r"'cpu_offload'.*True.*inactive"):
        space.pin({"strategy": "single", "cpu_offload": True})


# -------------------------------------------------------------------------------------- arms


def test_arms_are_distinct_structural_sub_configs() -> None:
    arms = small_space().arms()
    assert arms == [
        {"strategy": "single"},
        {"strategy": "ddp"},
        {"cpu_offload": False, "strategy": "fsdp"},
        {"cpu_offload": True, "strategy": "fsdp"},
    ]


def test_arms_drop_infeasible_arms() -> None:
    space = small_space(Implies("strategy", ("fsdp",), "cpu_offload", (False,)))
    assert {"cpu_offload": True, "strategy": "fsdp"} not in space.arms()
    assert len(space.arms()) == 3


def test_arms_without_structural_knobs() -> None:
    assert Space([Int(name="micro_batch_size", choices=(4, 8))]).arms() == [{}]


def test_arms_with_a_structural_knob_under_a_dense_parent() -> None:
    space = Space([
        Categorical(name="ddp_comm_hook", choices=("none", "powersgd")),
        Categorical(name="algo", choices=("a", "b"), structural=True, when=POWERSGD),
    ])
    assert space.arms() == [{}, {"algo": "a"}, {"algo": "b"}]


# ------------------------------------------------------------------------------------ default


def test_default_uses_defaults_then_first_values() -> None:
    space = mixed_space()
    assert space.default() == {"lr_warmup": 0.0, "micro_batch_size": 1, "num_workers": 0,
                               "pin_memory": False, "strategy": "single"}
    ddp = Space([Categorical(name="strategy", choices=("single", "ddp"), default="ddp"),
                 Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True, default=25, when=DDP),
                 Int(name="micro_batch_size", choices=(8, 4), default=8)])
    out = ddp.default()
    assert out == {"ddp_bucket_cap_mb": 25.0, "micro_batch_size": 8, "strategy": "ddp"}
    assert type(out["ddp_bucket_cap_mb"]) is float and list(out) == sorted(out)


# ----------------------------------------------------------------------------------- encoding


def test_encoded_dim() -> None:
    # strategy 3 + cpu_offload 1 + hook 3 + rank 1 + bucket 1 + mbs 1 + workers 1 + warmup 1 + pin 1
    assert mixed_space().encoded_dim == 13
    assert small_space().encoded_dim == 3 + 1 + 2 + 1 + 1


def test_encode_layout() -> None:
    space = small_space()
    vec = space.encode({"strategy": "ddp", "ddp_comm_hook": "powersgd", "powersgd_rank": 4,
                        "micro_batch_size": 8})
    assert vec.shape == (space.encoded_dim,)
    #                  strategy    offload  hook       rank  mbs
    assert vec.tolist() == [0, 1, 0, -1, 0, 1, 1.0, 1.0]
    vec = space.encode({"strategy": "fsdp", "cpu_offload": True, "micro_batch_size": 4})
    assert vec.tolist() == [0, 0, 1, 1.0, 0, 0, -1, 0.0]


def test_one_hot_keeps_one_and_true_apart() -> None:
    space = Space([Categorical(name="mixed", choices=(1, True, "a"))])
    assert space.encode({"mixed": True}).tolist() == [0.0, 1.0, 0.0]
    assert space.encode({"mixed": 1}).tolist() == [1.0, 0.0, 0.0]
    assert space.decode(space.encode({"mixed": True})) == {"mixed": True}


def test_inactive_knobs_encode_canonically() -> None:
    space = small_space()
    clean = {"strategy": "single", "micro_batch_size": 4}
    junk = {**clean, "cpu_offload": True, "ddp_comm_hook": "powersgd", "powersgd_rank": 4}
    assert space.encode(junk).tolist() == space.encode(clean).tolist()


def test_encode_validates() -> None:
    with pytest.raises(SpaceError, match=r"'micro_batch_size'.*6"):
        small_space().encode({"strategy": "single", "micro_batch_size": 6})


def test_decode_inverts_encode_on_every_config() -> None:
    space = mixed_space()
    configs = space.enumerate()
    assert len(configs) > 1000
    for c in configs:
        vec = space.encode(c)
        assert len(vec) == space.encoded_dim
        assert space.decode(vec) == c, c


def test_decode_inverts_encode_on_random_configs() -> None:
    space = mixed_space()
    rng = random.Random(3)
    for _ in range(300):
        c = space.sample(rng)
        back = space.decode(space.encode(c))
        assert back.keys() == c.keys()
        for k, v in c.items():
            assert back[k] == pytest.approx(v, rel=1e-11) if isinstance(v, float) else back[k] == v


def test_decode_snaps_to_the_nearest_valid_value() -> None:
    space = small_space()
    out = space.decode([0.1, 0.2, 0.9, 0.7, 0.4, 0.3, 0.9, 0.6])
    assert out == {"cpu_offload": True, "micro_batch_size": 8, "strategy": "fsdp"}


def test_decode_rejects_a_wrong_length_vector() -> None:
    space = small_space()
    with pytest.raises(SpaceError, match=r"length 7.*8"):
        space.decode([0.0] * 7)
    with pytest.raises(SpaceError, match=r"length 9.*8"):
        space.decode(np.zeros(9))


# --------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("make", [small_space, mixed_space,
                                  lambda: small_space(GlobalBatch(32), Implies("strategy", ("fsdp",),
                                                                               "cpu_offload", (True,)))])
def test_space_json_round_trip(make) -> None:  # noqa: ANN001
    space = make()
    assert Space.from_json(space.to_json()) == space
    text = json.dumps(space.to_json())
    back = Space.from_json(json.loads(text))
    assert back == space and hash(back) == hash(space)
    assert Space.from_json(text) == space
    assert back.enumerate() == space.enumerate()
    assert back.encoded_dim == space.encoded_dim


def test_space_equality_sees_differences() -> None:
    assert small_space() != small_space(GlobalBatch(4))
    assert small_space(GlobalBatch(4)) != small_space(GlobalBatch(8))
    assert small_space() != mixed_space()
    assert small_space() != "small_space"


def test_space_from_json_rejects_garbage() -> None:
    with pytest.raises(SpaceError, match="knobs"):
        Space.from_json("[1, 2]")
    with pytest.raises(SpaceError, match="knobs"):
        Space.from_json({"constraints": []})


def test_repr_names_knobs_and_constraints() -> None:
    text = repr(small_space(GlobalBatch(32)))
    assert "powersgd_rank" in text and "== 32" in text
