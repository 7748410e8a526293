"""The knob catalogue: canonical names, `make_knob` and `parse_cell`."""

from __future__ import annotations

import numpy as np
import pytest

from autoscout_plugin.space import CATALOGUE, Categorical, Condition, Float, Int, Space, make_knob, parse_cell
from autoscout_plugin.space.catalogue import ORDER

DESIGN_NAMES = {
    "strategy", "num_processes", "num_nodes", "tp", "pp", "cp", "vp", "zero_stage", "fsdp_sharding",
    "cpu_offload", "precision", "activation_checkpointing", "compile", "micro_batch_size", "grad_accum",
    "num_threads", "num_workers", "pin_memory", "ddp_bucket_cap_mb", "ddp_comm_hook", "powersgd_rank",
    "ddp_static_graph", "ddp_bucket_view", "fsdp_reshard_after_forward", "batch_size", "max_batch_tokens",
    "kv_cache", "attn_implementation",
}


# ---------------------------------------------------------------------------------- catalogue


def test_catalogue_has_exactly_the_design_names() -> None:
    assert set(CATALOGUE) == DESIGN_NAMES


def test_catalogue_order_puts_parents_first_and_structural_before_dense() -> None:
    for name, spec in CATALOGUE.items():
        if spec.parent is not None:
            assert ORDER.index(spec.parent) < ORDER.index(name), name
    kinds = [CATALOGUE[n].structural for n in ORDER]
    assert kinds == sorted(kinds, reverse=True)


def test_catalogue_defaults_fit_their_kind() -> None:
    for name, spec in CATALOGUE.items():
        if spec.default is None:
            continue
        expected = {"int": int, "float": float, "bool": bool, "categorical": str}[spec.kind]
        assert type(spec.default) is expected, name


# ---------------------------------------------------------------------------------- make_knob


def test_make_knob_int_takes_scale_and_structure_from_the_catalogue() -> None:
    k = make_knob("micro_batch_size", [16, 4, 8])
    assert isinstance(k, Int) and k.kind == "int"
    assert k.choices == (4, 8, 16) and k.log and not k.structural and k.default is None
    n = make_knob("num_processes", [1, 2, 4])
    assert isinstance(n, Int) and n.structural and not n.log and n.default == 1


def test_make_knob_uses_the_catalogue_default_only_when_it_is_a_value() -> None:
    assert make_knob("num_processes", [2, 4]).default is None
    assert make_knob("num_processes", [2, 4], default=4).default == 4
    assert make_knob("grad_accum", [1, 2]).default == 1


def test_make_knob_float() -> None:
    k = make_knob("ddp_bucket_cap_mb", [100, 25])
    assert isinstance(k, Float) and k.kind == "float"
    assert k.choices == (25.0, 100.0) and k.log and k.default == 25.0 and not k.structural


def test_make_knob_bool() -> None:
    k = make_knob("pin_memory", [True, False, True])
    assert k.kind == "bool" and k.choices == (False, True) and k.default is False and not k.structural
    one = make_knob("activation_checkpointing", [True])
    assert isinstance(one, Categorical) and one.kind == "bool" and one.choices == (True,)
    assert one.structural and one.default is None  # catalogue default False is not a value here
    assert make_knob("pin_memory", [0, 1]).choices == (False, True)


def test_make_knob_categorical_keeps_order() -> None:
    k = make_knob("precision", ["bf16-mixed", "32-true", "bf16-mixed"])
    assert isinstance(k, Categorical) and k.kind == "categorical"
    assert k.choices == ("bf16-mixed", "32-true") and k.structural and k.default == "32-true"


def test_make_knob_unknown_name_is_categorical_structural_iff_non_numeric() -> None:
    s = make_knob("optimizer_impl", ["fused", "foreach"])
    assert isinstance(s, Categorical) and s.kind == "categorical" and s.structural
    assert s.choices == ("fused", "foreach")
    n = make_knob("prefetch_factor", [4, 2, 2.5])
    assert isinstance(n, Categorical) and not n.structural and n.choices == (4, 2, 2.5)
    mixed = make_knob("mystery", [1, "a"])
    assert mixed.structural
    flags = make_knob("my_flag", [False, True])
    assert flags.kind == "bool" and flags.structural  # bools are not numbers
    assert make_knob("optimizer_impl", ["fused"], structural=False).structural is False


def test_make_knob_unknown_name_keeps_one_and_true_apart() -> None:
    assert make_knob("mystery", [1, True, 1]).choices == (1, True)


def test_make_knob_passes_conditions_and_overrides() -> None:
    when = (Condition("strategy", ("fsdp", "deepspeed")),)
    k = make_knob("cpu_offload", [False, True], when=when, default=True, structural=False)
    assert k.when == when and k.default is True and not k.structural


def test_make_knob_converts_numpy_values() -> None:
    k = make_knob("micro_batch_size", [np.int64(4), np.int64(8)])
    assert k.choices == (4, 8) and all(type(c) is int for c in k.choices)
    b = make_knob("pin_memory", [np.bool_(False), np.bool_(True)])
    assert b.kind == "bool" and b.choices == (False, True)
    c = make_knob("precision", [np.str_("32-true")])
    assert c.choices == ("32-true",) and type(c.choices[0]) is str


@pytest.mark.parametrize(
    ("name", "values", "pattern"),
    [
        ("micro_batch_size", [], r"'micro_batch_size'.*no values"),
        ("micro_batch_size", [4, 2.5], r"'micro_batch_size'.*2\.5"),
        ("micro_batch_size", [True, 4], r"'micro_batch_size'.*True"),
        ("micro_batch_size", ["8"], r"'micro_batch_size'.*'8'"),
        ("micro_batch_size", [0, 4], r"'micro_batch_size'.*low=0"),  # log scale
        ("ddp_bucket_cap_mb", [25.0, "big"], r"'ddp_bucket_cap_mb'.*'big'"),
        ("pin_memory", [False, 2], r"'pin_memory'.*2"),
        ("pin_memory", ["true"], r"'pin_memory'.*'true'"),
        ("precision", ["bf16-mixed"] * 0, r"'precision'.*no values"),
    ],
)
def test_make_knob_errors_name_the_knob_and_value(name: str, values: list, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        make_knob(name, values)


def test_a_space_of_catalogue_knobs() -> None:
    def when(name: str) -> tuple[Condition, ...]:
        # The catalogue lists every parent value; a space may offer fewer (no deepspeed here).
        spec = CATALOGUE[name]
        if spec.parent is None:
            return ()
        return (Condition(spec.parent, tuple(v for v in spec.parent_values if v in values[spec.parent])),)

    values = {
        "strategy": ["single", "ddp", "fsdp"], "fsdp_sharding": ["full", "shard_grad_op"],
        "cpu_offload": [False, True], "ddp_comm_hook": ["none", "powersgd"], "powersgd_rank": [1, 4],
        "micro_batch_size": [4, 8],
    }
    space = Space([make_knob(n, v, when=when(n)) for n, v in values.items()])
    # single 1; fsdp 2 x 2 = 4; ddp none 1 + powersgd 2 = 3; all x micro_batch_size 2
    assert len(space.enumerate()) == (1 + 4 + 3) * 2
    assert space.default() == {"micro_batch_size": 4, "strategy": "single"}
    assert Space.from_json(space.to_json()) == space
    with pytest.raises(ValueError, match=r"'cpu_offload'.*'deepspeed'"):
        Space([make_knob("strategy", values["strategy"]),
               make_knob("cpu_offload", [False, True], when=(Condition("strategy", ("fsdp", "deepspeed")),))])


# --------------------------------------------------------------------------------- parse_cell


@pytest.mark.parametrize(
    ("name", "cell", "expected"),
    [
        ("pin_memory", "true", True),
        ("pin_memory", " False ", False),
        ("pin_memory", "TRUE", True),
        ("pin_memory", "1", True),
        ("pin_memory", "0", False),
        ("micro_batch_size", "8", 8),
        ("micro_batch_size", " 16 ", 16),
        ("micro_batch_size", "8.0", 8),
        ("ddp_bucket_cap_mb", "25", 25.0),
        ("ddp_bucket_cap_mb", "2.5", 2.5),
        ("precision", "bf16-mixed", "bf16-mixed"),
        ("compile", "true", "true"),  # a categorical catalogue knob keeps its text
        ("some_flag", "true", True),
        ("some_flag", "False", False),
        ("some_int", "7", 7),
        ("some_float", "7.5", 7.5),
        ("some_text", "fused", "fused"),
    ],
)
def test_parse_cell(name: str, cell: str, expected: object) -> None:
    value = parse_cell(name, cell)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "cell", "pattern"),
    [
        ("pin_memory", "yes", r"'pin_memory'.*'yes'.*boolean"),
        ("pin_memory", "2", r"'pin_memory'.*'2'"),
        ("activation_checkpointing", "", r"'activation_checkpointing'.*''"),
        ("micro_batch_size", "2.5", r"'micro_batch_size'.*'2\.5'.*integer"),
        ("micro_batch_size", "true", r"'micro_batch_size'.*'true'"),
        ("micro_batch_size", "abc", r"'micro_batch_size'.*'abc'"),
        ("ddp_bucket_cap_mb", "big", r"'ddp_bucket_cap_mb'.*'big'"),
    ],
)
def test_parse_cell_errors(name: str, cell: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_cell(name, cell)
