"""The space builder: what the machine cannot do is left out; pins and includes; clear errors."""

from __future__ import annotations

import pytest

from autoscout_plugin.space import GlobalBatch, MaxProduct, SpaceError
from autoscout_plugin.space.builder import build_space

CPU = {"kind": "cpu", "cores": 2, "mem_gb": 24, "bf16": False}
GPU = {"kind": "gpu", "cores": 32, "gpus": 8, "mem_gb": 80, "bf16": True}


def test_cpu_space_has_no_gpu_only_choices_and_keeps_the_global_batch():
    space = build_space({"global_batch": 32}, CPU, strategies=("single", "ddp", "fsdp"))
    assert "16-mixed" not in space["precision"].choices
    assert space["compile"].choices == ("off", "default")
    assert any(isinstance(c, GlobalBatch) and c.global_batch == 32 for c in space.constraints)
    assert any(isinstance(c, MaxProduct) and c.limit == 2 for c in space.constraints)
    for config in space.enumerate():
        accum = space.derived(config)["grad_accum"]
        dp = config.get("num_processes", 1)
        assert config["micro_batch_size"] * accum * dp == 32
        assert config["num_threads"] * dp <= 2


def test_conditional_knobs_follow_their_strategy():
    space = build_space({"global_batch": 16}, CPU, strategies=("single", "ddp", "fsdp"))
    for config in space.enumerate():
        assert ("ddp_bucket_cap_mb" in config) == (config["strategy"] == "ddp")
        assert ("fsdp_reshard_after_forward" in config) == (config["strategy"] == "fsdp")


def test_knob_whose_parent_is_absent_is_left_out():
    space = build_space({"global_batch": 16}, CPU, strategies=("single",))
    assert "ddp_bucket_cap_mb" not in space and "fsdp_reshard_after_forward" not in space


def test_one_core_allows_only_single_process():
    space = build_space({"global_batch": 16}, dict(CPU, cores=1), strategies=("single", "ddp"))
    assert {c["strategy"] for c in space.enumerate()} == {"single"}


def test_gpu_space_offers_more_precisions_and_compile_modes():
    space = build_space({"global_batch": 64}, GPU, strategies=("single", "ddp"))
    assert "16-mixed" in space["precision"].choices
    assert "max-autotune" in space["compile"].choices


def test_pinned_knob_has_one_value_and_include_restricts():
    space = build_space({"global_batch": 32}, CPU, include=["precision", "micro_batch_size"],
                        pin={"precision": "32-true"})
    assert space.names == ["precision", "micro_batch_size"]
    assert space["precision"].choices == ("32-true",)


@pytest.mark.parametrize("kwargs, match", [
    ({"include": ["warp_speed"]}, "warp_speed"),
    ({"pin": {"precision": "fp8"}}, "fp8"),
    ({"pin": {"nonsense": 1}}, "nonsense"),
    ({"strategies": ("megatron",)}, "megatron"),
    ({"include": ["tp", "precision"]}, r"\['tp'\] have no candidate values .* pin them to one value or drop them"),
    ({"include": ["kv_cache"]}, "kv_cache"),
])
def test_bad_requests_name_the_knob_or_value(kwargs, match):
    with pytest.raises(SpaceError, match=match):
        build_space({"global_batch": 32}, CPU, **kwargs)


@pytest.mark.parametrize("workload, match", [({"global_batch": 0}, "global_batch"),
                                             ({"global_batch": 2.5}, "global_batch")])
def test_bad_workload_values(workload, match):
    with pytest.raises(SpaceError, match=match):
        build_space(workload, CPU)


def test_impossible_global_batch_is_rejected_before_any_trial():
    # 3 samples per step cannot be split over 2 processes, and 1 process must then hold them all:
    # still satisfiable with micro-batch 1 x 3 accumulation; a pinned micro-batch of 2 is not.
    with pytest.raises(SpaceError, match="no configuration satisfies"):
        build_space({"global_batch": 3}, CPU, include=["micro_batch_size"], pin={"micro_batch_size": 2})
