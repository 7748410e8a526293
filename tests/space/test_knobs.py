"""Knob types: membership, grids, unit mapping, JSON and validation errors."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from autoscout_plugin.space import Bool, Categorical, Condition, Float, Int, knob_from_json

# ------------------------------------------------------------------------------------------ Int


def test_int_range_contains_bounds_and_rejects_outside() -> None:
    k = Int(name="num_workers", low=0, high=8)
    assert k.contains(0) and k.contains(8) and k.contains(3)
    assert not k.contains(-1) and not k.contains(9)


def test_int_contains_rejects_non_integers_bools_and_strings() -> None:
    k = Int(name="num_workers", low=0, high=8)
    assert k.contains(4.0)  # an integral float is the same number; `canonical` makes it an int
    assert not k.contains(4.5)
    assert not k.contains(True)
    assert not k.contains("4")
    assert not k.contains(None)


def test_int_contains_numpy_numbers() -> None:
    k = Int(name="num_workers", low=0, high=8, step=2)
    assert k.contains(np.int64(4)) and k.contains(np.float32(4.0))
    assert not k.contains(np.int64(3)) and not k.contains(np.float32(4.5)) and not k.contains(np.bool_(True))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_int_contains_non_finite_is_false_not_an_exception(value: float) -> None:
    assert not Int(name="num_workers", low=0, high=8).contains(value)


def test_int_step_contains_only_the_lattice() -> None:
    k = Int(name="num_threads", low=2, high=14, step=4)
    assert [v for v in range(0, 20) if k.contains(v)] == [2, 6, 10, 14]


def test_int_linear_grid_is_the_whole_range_when_small() -> None:
    assert Int(name="num_workers", low=0, high=5).grid() == [0, 1, 2, 3, 4, 5]
    assert Int(name="num_threads", low=1, high=9, step=2).grid() == [1, 3, 5, 7, 9]


def test_int_linear_grid_is_thinned_to_max_points_with_both_ends() -> None:
    k = Int(name="num_workers", low=0, high=100)
    grid = k.grid(max_points=5)
    assert grid == [0, 25, 50, 75, 100]
    assert all(k.contains(v) for v in k.grid())


def test_int_log_grid_is_powers_of_two_plus_the_ends() -> None:
    assert Int(name="micro_batch_size", low=3, high=40, log=True).grid() == [3, 4, 8, 16, 32, 40]
    assert Int(name="micro_batch_size", low=1, high=16, log=True).grid() == [1, 2, 4, 8, 16]


def test_int_choices_are_sorted_deduplicated_and_set_the_range() -> None:
    k = Int(name="micro_batch_size", choices=(16, 4, 8, 4))
    assert k.choices == (4, 8, 16)
    assert (k.low, k.high) == (4, 16)
    assert k.grid() == [4, 8, 16]
    assert k.contains(8) and not k.contains(12)


def test_int_accepts_numpy_integers_as_bounds_and_choices() -> None:
    k = Int(name="micro_batch_size", choices=(np.int64(2), np.int32(4)))
    assert k.choices == (2, 4) and all(type(c) is int for c in k.choices)
    r = Int(name="num_workers", low=np.int64(0), high=np.int64(3))
    assert type(r.low) is int and r.grid() == [0, 1, 2, 3]


def test_int_unit_round_trip_linear() -> None:
    k = Int(name="num_workers", low=2, high=12)
    assert k.to_unit(2) == 0.0 and k.to_unit(12) == 1.0
    assert k.to_unit(7) == pytest.approx(0.5)
    for v in range(2, 13):
        assert k.from_unit(k.to_unit(v)) == v


def test_int_unit_round_trip_log_scale() -> None:
    k = Int(name="micro_batch_size", low=1, high=1024, log=True)
    assert k.to_unit(32) == pytest.approx(0.5)  # log2(32) / log2(1024)
    for v in range(1, 1025):
        assert k.from_unit(k.to_unit(v)) == v


def test_int_unit_round_trip_choices_log() -> None:
    k = Int(name="micro_batch_size", choices=(1, 2, 4, 8, 64), log=True)
    for v in k.choices:
        assert k.from_unit(k.to_unit(v)) == v


def test_int_from_unit_snaps_to_step_and_clamps() -> None:
    k = Int(name="num_threads", low=0, high=12, step=4)
    assert k.from_unit(0.4) == 4  # 4.8 -> nearest lattice point 4
    assert k.from_unit(0.45) == 4  # 5.4 -> 4
    assert k.from_unit(0.55) == 8  # 6.6 -> 8
    assert k.from_unit(-3.0) == 0
    assert k.from_unit(7.0) == 12


def test_int_from_unit_stays_on_the_lattice_when_high_is_off_it() -> None:
    k = Int(name="num_threads", low=0, high=11, step=4)  # lattice 0, 4, 8
    assert k.grid() == [0, 4, 8]
    for i in range(101):
        assert k.contains(k.from_unit(i / 100)), i / 100
    assert k.from_unit(1.0) == 8


def test_int_from_unit_snaps_to_nearest_choice_on_log_scale() -> None:
    k = Int(name="micro_batch_size", choices=(1, 16, 256), log=True)
    assert k.from_unit(0.5) == 16
    assert k.from_unit(0.3) == 16  # log-distance: 0.3 is nearer 0.5 than 0
    assert k.from_unit(0.2) == 1


def test_int_from_unit_rejects_nan() -> None:
    with pytest.raises(ValueError, match="micro_batch_size.*NaN"):
        Int(name="micro_batch_size", low=1, high=8).from_unit(float("nan"))


def test_int_single_value_range() -> None:
    k = Int(name="num_nodes", low=1, high=1)
    assert k.to_unit(1) == 0.0 and k.from_unit(0.7) == 1 and k.grid() == [1]


def test_int_kind() -> None:
    assert Int(name="tp", low=1, high=2).kind == "int"


# ---------------------------------------------------------------------------------------- Float


def test_float_contains() -> None:
    k = Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True)
    assert k.contains(1.0) and k.contains(256.0) and k.contains(25) and k.contains(np.float64(3.5))
    assert not k.contains(0.5) and not k.contains(300.0)
    assert not k.contains(True) and not k.contains("25") and not k.contains(float("nan"))
    assert k.contains(np.float32(2.5))
    assert not k.contains(np.bool_(True)) and not k.contains(np.float64("inf"))


def test_float_bounds_are_floats() -> None:
    k = Float(name="ddp_bucket_cap_mb", low=1, high=4)
    assert type(k.low) is float and type(k.high) is float


def test_float_grid_has_both_ends_and_is_log_spaced() -> None:
    k = Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True)
    grid = k.grid(max_points=9)
    assert grid == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    assert len(k.grid()) == 8 and k.grid()[0] == 1.0 and k.grid()[-1] == 256.0


def test_float_linear_unit_mapping() -> None:
    k = Float(name="lr_scale", low=-1.0, high=3.0)
    assert k.to_unit(1.0) == pytest.approx(0.5)
    assert k.from_unit(0.25) == 0.0
    assert k.from_unit(2.0) == 3.0 and k.from_unit(-2.0) == -1.0


def test_float_unit_round_trip_is_exact_on_the_grid() -> None:
    for k in (Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True),
              Float(name="x", low=0.1, high=0.7),
              Float(name="y", low=1e-4, high=3.0, log=True)):
        for v in k.grid(max_points=13):
            assert k.from_unit(k.to_unit(v)) == v, (k.name, v)


def test_float_unit_round_trip_is_close_for_random_values() -> None:
    k = Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True)
    rng = random.Random(0)
    for _ in range(200):
        v = math.exp(rng.uniform(0.0, math.log(256.0)))
        assert k.from_unit(k.to_unit(v)) == pytest.approx(v, rel=1e-11)


def test_float_choices() -> None:
    k = Float(name="ddp_bucket_cap_mb", choices=(25, 5.0, 100.0))
    assert k.choices == (5.0, 25.0, 100.0) and (k.low, k.high) == (5.0, 100.0)
    assert k.contains(25.0) and k.contains(25.0 + 1e-12) and not k.contains(26.0)
    assert k.grid() == [5.0, 25.0, 100.0]
    for v in k.choices:
        assert k.from_unit(k.to_unit(v)) == v


def test_float_kind() -> None:
    assert Float(name="x", low=0.0, high=1.0).kind == "float"


# ---------------------------------------------------------------------------- Categorical, Bool


def test_categorical_contains_and_grid_keep_order() -> None:
    k = Categorical(name="precision", choices=("bf16-mixed", "32-true"))
    assert k.grid() == ["bf16-mixed", "32-true"]
    assert k.contains("32-true") and not k.contains("16-mixed")
    assert k.kind == "categorical"


def test_categorical_accepts_a_list_and_stores_a_tuple() -> None:
    k = Categorical(name="precision", choices=["32-true", "bf16-mixed"])  # type: ignore[arg-type]
    assert k.choices == ("32-true", "bf16-mixed")
    hash(k)


def test_bool_kind_and_values() -> None:
    k = Bool("pin_memory")
    assert k.kind == "bool"
    assert k.choices == (False, True)
    assert isinstance(k, Categorical)


def test_bool_distinguishes_true_from_one() -> None:
    k = Bool("pin_memory")
    assert k.contains(True) and k.contains(False)
    assert not k.contains(1) and not k.contains(0) and not k.contains(1.0)


def test_numeric_categorical_distinguishes_one_from_true() -> None:
    k = Categorical(name="zero_stage", choices=(0, 1, 2))
    assert k.kind == "categorical"
    assert k.contains(1) and not k.contains(True) and not k.contains(False)


def test_categorical_keeps_true_and_one_apart_as_choices() -> None:
    k = Categorical(name="mixed", choices=(1, True))
    assert k.contains(1) and k.contains(True) and k.kind == "categorical"


def test_single_bool_choice_is_still_a_bool_knob() -> None:
    assert Categorical(name="pin_memory", choices=(True,)).kind == "bool"


def test_bool_passes_options_through() -> None:
    cond = Condition("strategy", ("fsdp",))
    k = Bool("cpu_offload", structural=True, when=(cond,), default=True)
    assert k.structural and k.when == (cond,) and k.default is True


# ---------------------------------------------------------------------------------- Conditions


def test_condition_holds_only_for_listed_values_of_a_present_parent() -> None:
    c = Condition("strategy", ("fsdp", "deepspeed"))
    assert c.holds({"strategy": "fsdp"})
    assert c.holds({"strategy": "deepspeed"})
    assert not c.holds({"strategy": "ddp"})
    assert not c.holds({})


def test_condition_keeps_bools_and_numbers_apart() -> None:
    assert not Condition("flag", (True,)).holds({"flag": 1})
    assert not Condition("pp", (1,)).holds({"pp": True})
    assert Condition("pp", (2,)).holds({"pp": 2.0})


def test_condition_values_given_as_list_become_a_tuple() -> None:
    c = Condition("strategy", ["fsdp"])  # type: ignore[arg-type]
    assert c.values == ("fsdp",)
    hash(c)


def test_knob_is_active_needs_every_condition() -> None:
    k = Int(name="powersgd_rank", low=1, high=4,
            when=(Condition("strategy", ("ddp",)), Condition("ddp_comm_hook", ("powersgd",))))
    assert k.is_active({"strategy": "ddp", "ddp_comm_hook": "powersgd"})
    assert not k.is_active({"strategy": "ddp", "ddp_comm_hook": "none"})
    assert not k.is_active({"ddp_comm_hook": "powersgd"})
    assert Int(name="tp", low=1, high=2).is_active({})


def test_condition_json_and_str() -> None:
    c = Condition("strategy", ("fsdp",))
    assert Condition.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert str(c) == "strategy in ['fsdp']"


# -------------------------------------------------------------------------------------- JSON

_COND = (Condition("strategy", ("ddp", "fsdp")),)
ALL_KINDS = [
    Int(name="num_workers", low=0, high=8),
    Int(name="num_threads", low=1, high=13, step=4, default=5),
    Int(name="micro_batch_size", low=1, high=64, log=True, structural=False, when=_COND),
    Int(name="micro_batch_size", choices=(2, 4, 8), log=True, default=4),
    Int(name="tp", choices=(1, 3), step=2),
    Float(name="ddp_bucket_cap_mb", low=1.0, high=256.0, log=True, default=25.0, when=_COND),
    Float(name="x", low=-1.0, high=1.0),
    Float(name="ddp_bucket_cap_mb", choices=(5.0, 25.0), log=True),
    Categorical(name="strategy", choices=("single", "ddp"), structural=True, default="ddp"),
    Categorical(name="zero_stage", choices=(0, 1, 2, 3)),
    Bool("cpu_offload", structural=True, when=_COND, default=True),
    Categorical(name="pin_memory", choices=(True,)),
]


@pytest.mark.parametrize("knob", ALL_KINDS, ids=lambda k: f"{k.kind}-{k.name}")
def test_knob_json_round_trip(knob: Int | Float | Categorical) -> None:
    data = knob.to_json()
    assert knob_from_json(data) == knob
    back = knob_from_json(json.loads(json.dumps(data)))
    assert back == knob
    assert back.kind == knob.kind
    assert type(back) is type(knob)


def test_bool_json_round_trip_keeps_bools_not_ints() -> None:
    back = knob_from_json(json.loads(json.dumps(Bool("pin_memory").to_json())))
    assert all(type(c) is bool for c in back.choices)


def test_knob_from_json_unknown_type_names_knob_and_type() -> None:
    with pytest.raises(ValueError, match=r"'num_workers'.*'integer'"):
        knob_from_json({"name": "num_workers", "type": "integer", "low": 0, "high": 1})


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: Int(name="micro_batch_size", choices=()), r"'micro_batch_size'.*empty"),
        (lambda: Float(name="ddp_bucket_cap_mb", choices=()), r"'ddp_bucket_cap_mb'.*empty"),
        (lambda: Categorical(name="precision", choices=()), r"'precision'.*empty"),
        (lambda: Int(name="num_workers", low=5, high=2), r"'num_workers'.*low=5.*high=2"),
        (lambda: Float(name="x", low=2.0, high=1.0), r"'x'.*\[2\.0, 1\.0\]"),
        (lambda: Float(name="x", low=0.0, high=float("inf")), r"'x'.*inf"),
        (lambda: Int(name="micro_batch_size", low=0, high=8, log=True), r"'micro_batch_size'.*low=0"),
        (lambda: Int(name="micro_batch_size", choices=(0, 4), log=True), r"'micro_batch_size'.*low=0"),
        (lambda: Float(name="bucket_mb", low=0.0, high=8.0, log=True), r"'bucket_mb'.*low=0"),
        (lambda: Float(name="bucket_mb", low=-1.0, high=8.0, log=True), r"'bucket_mb'.*low=-1"),
        (lambda: Int(name="num_threads", low=1, high=8, step=0), r"'num_threads'.*step=0"),
        (lambda: Int(name="num_threads", low=1, high=8, step=-2), r"'num_threads'.*step=-2"),
        (lambda: Int(name="num_threads", low=1, high=8, step=1.5), r"'num_threads'.*step=1\.5"),
        (lambda: Int(name="mbs", low=1, high=64, log=True, step=2), r"'mbs'.*step=2"),
        (lambda: Int(name="num_workers"), r"'num_workers'.*low.*high"),
        (lambda: Int(name="num_workers", low=0.5, high=4), r"'num_workers'.*low=0\.5"),
        (lambda: Int(name="micro_batch_size", choices=(4, 8.5)), r"'micro_batch_size'.*8\.5"),
        (lambda: Int(name="micro_batch_size", choices=(True, 4)), r"'micro_batch_size'.*True"),
        (lambda: Float(name="x", choices=(1.0, "fast")), r"'x'.*'fast'"),
        (lambda: Float(name="x", low="a", high=1.0), r"'x'.*low='a'"),
        (lambda: Categorical(name="precision", choices=("bf16", "bf16")), r"'precision'.*duplicate.*'bf16'"),
        (lambda: Int(name="", low=0, high=1), r"name"),
        (lambda: Int(name="tp", low=1, high=2, when=("strategy",)), r"'tp'.*'strategy'"),
    ],
)
def test_knob_errors_name_the_knob_and_the_value(make, pattern: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=pattern):
        make()
