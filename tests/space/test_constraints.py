"""Constraints: arithmetic, violation messages, JSON, and their use through a Space."""

from __future__ import annotations

import json

import pytest

from autoscout_plugin.space import (
    Categorical,
    Divides,
    GlobalBatch,
    Implies,
    Int,
    MaxProduct,
    MemoryCap,
    Space,
    WorldSize,
    constraint_from_json,
    data_parallel_degree,
    world_size,
)

# ------------------------------------------------------------------------------ degree helpers


def test_world_size_and_dp_degree_default_to_one() -> None:
    assert world_size({}) == 1
    assert data_parallel_degree({}) == 1
    assert world_size({"num_processes": 4, "num_nodes": 2}) == 8
    assert data_parallel_degree({"num_processes": 8, "tp": 2, "pp": 2}) == 2
    assert data_parallel_degree({"num_processes": 6, "tp": 4}) == 0  # does not divide


# ---------------------------------------------------------------------------------- GlobalBatch


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"micro_batch_size": 8}, 8),
        ({"micro_batch_size": 64}, 1),
        ({"micro_batch_size": 8, "num_processes": 2}, 4),
        ({"micro_batch_size": 4, "num_processes": 4, "num_nodes": 2}, 2),
        ({"micro_batch_size": 8, "num_processes": 4, "tp": 2}, 4),  # dp = 2
        ({"micro_batch_size": 2, "num_processes": 8, "tp": 2, "pp": 2}, 16),  # dp = 2
        ({"micro_batch_size": 3}, None),  # 3 does not divide 64
        ({"micro_batch_size": 128}, None),
        ({"micro_batch_size": 8, "num_processes": 6, "tp": 4}, None),  # tp does not divide world
        ({}, None),
    ],
)
def test_global_batch_grad_accum(config: dict, expected: int | None) -> None:
    assert GlobalBatch(64).grad_accum(config) == expected


def test_global_batch_violation_names_knob_and_values() -> None:
    gb = GlobalBatch(64)
    assert gb.violation({"micro_batch_size": 8, "num_processes": 2}) is None
    msg = gb.violation({"micro_batch_size": 3, "num_processes": 2})
    assert msg is not None
    assert "micro_batch_size=3" in msg and "2" in msg and "global_batch=64" in msg


def test_global_batch_violation_when_model_parallel_does_not_divide_world() -> None:
    msg = GlobalBatch(64).violation({"micro_batch_size": 8, "num_processes": 6, "tp": 4})
    assert msg is not None and "tp x pp x cp = 4" in msg and "6" in msg


def test_global_batch_does_not_apply_without_micro_batch_size() -> None:
    assert GlobalBatch(64).violation({"batch_size": 3}) is None


def test_global_batch_checks_a_given_grad_accum() -> None:
    gb = GlobalBatch(64)
    assert gb.violation({"micro_batch_size": 8, "grad_accum": 8}) is None
    msg = gb.violation({"micro_batch_size": 8, "grad_accum": 2})
    assert msg is not None and "grad_accum=2" in msg and "grad_accum=8" in msg


def test_global_batch_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="global_batch.*0"):
        GlobalBatch(0)


def test_global_batch_str() -> None:
    assert "30" in str(GlobalBatch(30))


# ---------------------------------------------------------------------------------- WorldSize


def test_world_size_constraint() -> None:
    ws = WorldSize(8)
    assert ws.violation({"num_processes": 8}) is None
    assert ws.violation({"num_processes": 4, "num_nodes": 2, "tp": 2, "pp": 2}) is None
    msg = ws.violation({"num_processes": 4})
    assert msg is not None and "num_processes=4" in msg and "world_size=8" in msg
    msg = WorldSize(6).violation({"num_processes": 6, "tp": 4})
    assert msg is not None and "tp=4" in msg and "world_size=6" in msg


def test_world_size_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="world_size.*0"):
        WorldSize(0)


# ---------------------------------------------------------------------------- Divides, MaxProduct


def test_divides() -> None:
    c = Divides("tp", 12, "num_heads")
    assert c.violation({"tp": 4}) is None
    assert c.violation({}) is None  # tp absent means tp = 1
    msg = c.violation({"tp": 5})
    assert msg is not None and "tp=5" in msg and "num_heads=12" in msg
    assert c.violation({"tp": 0}) is not None
    assert Divides("num_experts_per_rank", 8, "experts").violation({}) is None  # absent, no neutral value


def test_max_product() -> None:
    c = MaxProduct(("num_threads", "num_processes"), 16, "cpu_cores")
    assert c.violation({"num_threads": 4, "num_processes": 4}) is None
    assert c.violation({"num_threads": 16}) is None  # num_processes absent = 1
    msg = c.violation({"num_threads": 8, "num_processes": 4})
    assert msg is not None and "num_threads=8" in msg and "num_processes=4" in msg and "cpu_cores=16" in msg
    assert c.violation({"num_processes": 64}) is None  # num_threads absent: does not apply


def test_max_product_knobs_list_becomes_tuple() -> None:
    c = MaxProduct(["num_threads", "num_processes"], 16, "cpu_cores")  # type: ignore[arg-type]
    assert c == MaxProduct(("num_threads", "num_processes"), 16, "cpu_cores")
    hash(c)


# ------------------------------------------------------------------------------------- Implies


def test_implies() -> None:
    c = Implies("strategy", ("fsdp",), "precision", ("bf16-mixed", "bf16-true"))
    assert c.violation({"strategy": "fsdp", "precision": "bf16-mixed"}) is None
    assert c.violation({"strategy": "ddp", "precision": "32-true"}) is None
    assert c.violation({"strategy": "fsdp"}) is None  # then-knob absent
    msg = c.violation({"strategy": "fsdp", "precision": "32-true"})
    assert msg is not None and "precision='32-true'" in msg and "strategy='fsdp'" in msg


def test_implies_keeps_bools_and_numbers_apart() -> None:
    c = Implies("activation_checkpointing", (True,), "micro_batch_size", (8,))
    assert c.violation({"activation_checkpointing": 1, "micro_batch_size": 4}) is None
    assert c.violation({"activation_checkpointing": True, "micro_batch_size": 4}) is not None


def test_implies_on_an_absent_neutral_knob_reports_its_value() -> None:
    msg = Implies("tp", (1,), "compile", ("off",)).violation({"compile": "default"})
    assert msg is not None and "tp=1" in msg and "compile='default'" in msg


# ----------------------------------------------------------------------------------- MemoryCap


def test_memory_cap_without_estimator_is_satisfied() -> None:
    assert MemoryCap(1000.0).violation({"micro_batch_size": 1024}) is None


def test_memory_cap_with_estimator() -> None:
    cap = MemoryCap(1000.0)

    def estimate(config: dict) -> float:
        return 100.0 * config["micro_batch_size"]

    assert cap.violation({"micro_batch_size": 8}, estimate) is None
    assert cap.violation({"micro_batch_size": 10}, estimate) is None  # equal is within
    msg = cap.violation({"micro_batch_size": 16}, estimate)
    assert msg is not None and "1600" in msg and "1000" in msg


# ---------------------------------------------------------------------------------------- JSON

ALL_CONSTRAINTS = [
    GlobalBatch(64),
    WorldSize(8),
    Divides("tp", 32, "num_heads"),
    MaxProduct(("num_threads", "num_processes"), 16, "cpu_cores"),
    Implies("strategy", ("fsdp", "deepspeed"), "precision", ("bf16-mixed",)),
    Implies("activation_checkpointing", (True,), "zero_stage", (2, 3)),
    MemoryCap(40960.0),
]


@pytest.mark.parametrize("constraint", ALL_CONSTRAINTS, ids=lambda c: c.kind)
def test_constraint_json_round_trip(constraint) -> None:  # noqa: ANN001
    assert constraint_from_json(constraint.to_json()) == constraint
    back = constraint_from_json(json.loads(json.dumps(constraint.to_json())))
    assert back == constraint and type(back) is type(constraint)
    assert str(back) == str(constraint)


def test_constraint_from_json_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'max_memory'"):
        constraint_from_json({"kind": "max_memory", "limit_mb": 10})


def test_constraint_from_json_bad_fields_names_kind() -> None:
    with pytest.raises(ValueError, match="'global_batch'.*size"):
        constraint_from_json({"kind": "global_batch", "size": 64})


# ------------------------------------------------------------------------- through the Space


def _space(*constraints) -> Space:  # noqa: ANN002
    return Space([
        Int(name="num_processes", choices=(1, 2, 4), structural=True),
        Categorical(name="strategy", choices=("ddp", "fsdp"), structural=True),
        Int(name="micro_batch_size", choices=(2, 4, 8, 16), log=True),
        Int(name="num_threads", choices=(1, 2, 4, 8)),
    ], constraints)


def test_space_violations_lists_every_message() -> None:
    space = _space(GlobalBatch(16), MaxProduct(("num_threads", "num_processes"), 8, "cpu_cores"))
    ok = {"num_processes": 2, "strategy": "ddp", "micro_batch_size": 4, "num_threads": 4}
    assert space.violations(ok) == [] and space.is_feasible(ok)
    bad = {"num_processes": 4, "strategy": "ddp", "micro_batch_size": 8, "num_threads": 4}
    msgs = space.violations(bad)
    assert len(msgs) == 2 and not space.is_feasible(bad)
    assert "micro_batch_size=8" in msgs[0] and "num_threads=4" in msgs[1]


def test_space_violations_pass_the_memory_estimator() -> None:
    space = _space(MemoryCap(100.0))
    config = {"num_processes": 1, "strategy": "ddp", "micro_batch_size": 16, "num_threads": 1}
    assert space.is_feasible(config)
    assert not space.is_feasible(config, memory_mb=lambda c: 10.0 * c["micro_batch_size"])
    assert space.is_feasible(config, memory_mb=lambda c: 5.0 * c["micro_batch_size"])


def test_space_derived_grad_accum() -> None:
    space = _space(GlobalBatch(32))
    assert space.global_batch == GlobalBatch(32)
    assert space.derived({"num_processes": 2, "micro_batch_size": 4}) == {"grad_accum": 4}
    assert space.derived({"num_processes": 4, "micro_batch_size": 16}) == {}  # 64 > 32
    assert _space().derived({"micro_batch_size": 4}) == {}
    assert _space().global_batch is None
