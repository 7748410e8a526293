"""The cost model's pure formulas against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from autoscout_plugin.costmodel import comm, memory, pipeline
from autoscout_plugin.costmodel.catalogue import GPUS, LINKS, Link, gpu, with_efficiency
from autoscout_plugin.costmodel.compute import (
    fwd_flops_per_sample,
    param_count,
    transformer_layer_fwd_flops_per_token,
)
from autoscout_plugin.costmodel.inference import estimate_inference, kv_cache_bytes, weight_bytes
from autoscout_plugin.costmodel.presets import PRESETS, gpt, preset, workload_from_hf_config
from autoscout_plugin.costmodel.workload import Workload


# ------------------------------------------------------------------ compute
@pytest.mark.parametrize(("name", "official"), [
    ("llama2-7b", 6_738_415_616), ("llama2-13b", 13_015_864_320), ("llama2-70b", 68_976_648_192),
    ("llama3-8b", 8_030_261_248), ("llama3-70b", 70_553_706_496),
    ("llama3-405b", 405_853_388_800),
])
def test_llama_parameter_counts_match_the_released_checkpoints(name: str, official: int) -> None:
    assert param_count(preset(name)) == official


def test_gpt_parameter_count_is_narayanans_formula() -> None:
    # P = 12 l h^2 (1 + 13/12h + (V + s)/12lh), plus the final LayerNorm's 2h
    layers, h, vocab, seq = 96, 12288, 51200, 2048
    formula = 12 * layers * h * h * (1 + 13 / (12 * h) + (vocab + seq) / (12 * layers * h))
    assert param_count(preset("gpt3-175b")) == pytest.approx(formula + 2 * h, rel=1e-12)


def test_flops_per_iteration_is_narayanans_formula() -> None:
    # 96 B s l h^2 (1 + s/6h + V/16lh) with recomputation = 4/3 of the model FLOPs of the layers + 3 passes of the head
    b, s, layers, h, vocab = 512, 2048, 24, 2304, 51200
    w = gpt(layers, h, 24, vocab=vocab, seq_len=s)
    paper = 96 * b * s * layers * h * h * (1 + s / (6 * h) + vocab / (16 * layers * h))
    per_token_layer = transformer_layer_fwd_flops_per_token(h, 4 * h, s)
    ours = b * s * (4 * layers * per_token_layer + 3 * 2 * h * vocab)
    assert ours == pytest.approx(paper, rel=1e-12)
    assert fwd_flops_per_sample(w) == pytest.approx(s * (layers * per_token_layer + 2 * h * vocab))


def test_grouped_query_attention_and_swiglu_flops_by_hand() -> None:
    d, d_ff, kv, s = 8192, 28672, 1024, 4096
    got = transformer_layer_fwd_flops_per_token(d, d_ff, s, kv_dim=kv, gated_mlp=True)
    assert got == 4 * d * d + 4 * d * kv + 6 * d * d_ff + 4 * s * d


# ------------------------------------------------------------------ memory
def test_zero_sharding_matches_the_zero_paper_figure_1() -> None:
    # 7.5B parameters, 64 data-parallel ranks, K = 12: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB
    n = 7.5e9

    def gb(sharding: str) -> float:
        return memory.model_state_bytes(n, "bf16", sharding, 64, fp32_grads=False) / 1e9

    assert gb("none") == pytest.approx(120.0)
    assert gb("zero1") == pytest.approx(7.5 * (4 + 12 / 64))
    assert round(gb("zero1"), 1) == 31.4
    assert round(gb("zero2"), 1) == 16.6
    assert gb("zero3") == pytest.approx(1.875)
    assert gb("fsdp_full") == gb("zero3") and gb("fsdp_grad_op") == gb("zero2")


def test_megatron_keeps_fp32_gradients_and_offload_drops_optimizer_states() -> None:
    assert memory.model_state_bytes(1e9, "bf16", "none", 8) == 18e9
    assert memory.model_state_bytes(1e9, "fp32", "none", 1) == 16e9
    assert memory.model_state_bytes(1e9, "bf16", "zero1", 4, cpu_offload=True) == 6e9
    assert memory.model_state_bytes(1e9, "fp8", "none", 1, fp32_grads=False) == 17e9


@pytest.mark.parametrize(("kwargs", "per_sbh"), [
    ({"tp": 8, "sequence_parallel": False}, 10 + 24 / 8 + 5 * 96 * 2048 / 12288 / 8),  # Table 2, row 2
    ({"tp": 8}, (34 + 5 * 96 * 2048 / 12288) / 8),                                     # TP + SP
    ({"tp": 8, "sequence_parallel": False, "recompute": "selective"}, 10 + 24 / 8),    # TP + selective
    ({"tp": 8, "recompute": "selective"}, 34 / 8),                                     # TP + SP + selective
    ({"tp": 8, "recompute": "full"}, 2 / 8),                                           # full recompute
])
def test_activation_memory_is_korthikanti_table_2(kwargs: dict, per_sbh: float) -> None:
    s, b, h, a = 2048, 1, 12288, 96
    got = memory.activation_bytes_per_layer(s, b, h, a, flash_attention=False, **kwargs)
    assert got == pytest.approx(s * b * h * per_sbh)


def test_activation_memory_of_gqa_swiglu_and_flash_attention() -> None:
    s, b, h = 4096, 1, 8192
    got = memory.activation_bytes_per_layer(s, b, h, 64, kv_ratio=0.125, ffn_ratio=3.5, gated_mlp=True)
    assert got == pytest.approx(s * b * h * (10 + 4 + 0.5 + 21))
    fp32 = memory.activation_bytes_per_layer(s, b, h, 64, bytes_per_value=4.0)
    assert fp32 == pytest.approx(2 * memory.activation_bytes_per_layer(s, b, h, 64))


def test_inflight_microbatches_under_1f1b_and_interleaving() -> None:
    assert memory.inflight_microbatches(1, 1, 32) == 1
    assert memory.inflight_microbatches(8, 1, 32) == 8
    assert memory.inflight_microbatches(8, 2, 32) == pytest.approx(8 * (1 + 7 / 16))
    assert memory.inflight_microbatches(8, 1, 4) == 4


def test_memory_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="sharding 'zero4'"):
        memory.model_state_bytes(1, "bf16", "zero4", 2)
    with pytest.raises(ValueError, match="precision 'int3'"):
        memory.state_bytes_per_param("int3")
    with pytest.raises(ValueError, match="recompute 'some'"):
        memory.activation_bytes_per_layer(1, 1, 8, 1, recompute="some")


# ------------------------------------------------------------------ communication and pipeline
def test_ring_collectives_by_hand() -> None:
    link = Link("x", 100e9, 10e-6)
    assert comm.all_reduce_s(1e9, 1, link) == 0.0
    assert comm.all_reduce_s(1e9, 4, link) == pytest.approx(1.5 * 1e9 / 100e9 + 6 * 10e-6)
    assert comm.reduce_scatter_s(1e9, 4, link) == pytest.approx(0.75 * 1e9 / 100e9 + 3 * 10e-6)
    assert comm.all_gather_s is comm.reduce_scatter_s
    assert comm.p2p_s(1e6, link) == pytest.approx(10e-6 + 1e6 / 100e9)
    # 100 MB in 25 MB buckets: one bandwidth term, four latency terms
    assert comm.bucketed_all_reduce_s(100e6, 2, link, 25e6) == pytest.approx(100e6 / 100e9 + 4 * 2 * 10e-6)
    assert comm.exposed_s(1.0, 2.0, 0.25) == pytest.approx(0.5)
    assert comm.exposed_s(1.0, 2.0, 0.8) == 0.0
    assert comm.tensor_parallel_collectives("full") == 6 and comm.tensor_parallel_collectives("none") == 4


def test_pipeline_bubble_and_step_by_hand() -> None:
    assert pipeline.bubble_fraction(4, 16) == pytest.approx(3 / 16)
    assert pipeline.bubble_fraction(4, 16, vp=3) == pytest.approx(1 / 16)
    assert pipeline.pipeline_step_s([1.0, 1.0, 1.0, 1.5], 10) == pytest.approx(10 * 1.5 + 3.0)
    assert pipeline.pipeline_step_s([2.0] * 4, 8) == pytest.approx((1 + pipeline.bubble_fraction(4, 8)) * 8 * 2.0)
    with pytest.raises(ValueError, match="pp=0"):
        pipeline.bubble_fraction(0, 4)
    with pytest.raises(ValueError, match="at least one stage"):
        pipeline.pipeline_step_s([], 4)


def test_stage_layers_even_or_one_fewer_on_the_first_and_last_stages() -> None:
    assert pipeline.stage_layers(96, 8) == [12] * 8
    assert pipeline.stage_layers(96, 8, vp=3) == [12] * 8  # 4 layers in each of a device's 3 chunks
    # Llama 3 405B: 126 layers on 16 stages, the embedding and the head standing in for a layer each
    assert pipeline.stage_layers(126, 16) == [7] + [8] * 14 + [7]
    # 2 chunks per device of (126 + 2) / 32 = 4 layers: chunk 0 and chunk 31 hold 3
    assert pipeline.stage_layers(126, 16, vp=2) == [7] + [8] * 14 + [7]
    assert pipeline.stage_layers(24, 1) == [24]
    with pytest.raises(ValueError, match=r"pp\*vp = 16\*8 does not split the 126 layers"):
        pipeline.stage_layers(126, 16, vp=8)  # 128 / 128 = 1 layer per chunk: none left for the first
    with pytest.raises(ValueError, match=r"pp\*vp = 5\*1 does not split the 96 layers"):
        pipeline.stage_layers(96, 5)
    with pytest.raises(ValueError, match="n_layer=0"):
        pipeline.stage_layers(0, 2)


# ------------------------------------------------------------------ catalogue and presets
def test_catalogue_has_the_issues_gpus_with_datasheet_peaks() -> None:
    for name in ("a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "l4", "l40s", "mi300x"):
        assert name in GPUS
    assert gpu("a100").peak("bf16") == 312e12 and gpu("a100-80gb").mem_gib == 80
    assert gpu("h200").peak("fp8") == 1979e12 and gpu("h200").mem_gib == 141
    assert gpu("mi300x").mem_gib == 192
    assert gpu("h100-sxm").intra is LINKS["nvlink4"]
    with pytest.raises(ValueError, match="unknown GPU 'k80'.*a100-80gb"):
        gpu("k80")
    # beyond the issue's list: Blackwell, and the Volta/Turing/Ampere cards people still rent
    assert gpu("b200").peak("bf16") == 2250e12 and gpu("b200").intra is LINKS["nvlink5"]
    assert gpu("gb200").gpus_per_node == 72 and gpu("gb200").peak("fp8") == 5000e12
    assert gpu("v100-sxm2") is gpu("v100") and gpu("v100").peak("fp16") == 125e12
    with pytest.raises(ValueError, match="v100 has no 'bf16' math; it supports fp16, fp32"):
        gpu("v100").peak("bf16")
    assert gpu("t4").mem_gib == 16 and gpu("a10").peak("tf32") == 62.5e12
    with pytest.raises(ValueError, match="a100-80gb has no 'fp8' math"):
        gpu("a100-80gb").peak("fp8")
    assert with_efficiency(gpu("l4"), 0.5).gemm_efficiency == 0.5
    with pytest.raises(ValueError, match="gemm_efficiency"):
        with_efficiency(gpu("l4"), 1.5)


def test_presets_cover_the_issue_names_and_reject_unknown_ones() -> None:
    asked = ("gpt3-5b", "gpt3-20b", "gpt3-175b", "llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b")
    for name in asked:
        assert name in PRESETS and preset(name).is_transformer
    assert preset("gpt3-175b", seq_len=4096).seq_len == 4096
    with pytest.raises(ValueError, match="unknown model preset 'gpt5'.*llama3-8b"):
        preset("gpt5")
    with pytest.raises(ValueError, match="n_kv_head=3"):
        Workload(family="transformer", n_layer=2, d_model=64, n_head=8, n_kv_head=3)


def test_workload_from_real_hugging_face_configs() -> None:
    transformers = pytest.importorskip("transformers")
    llama = workload_from_hf_config(transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000), seq_len=4096)
    assert param_count(llama) == param_count(preset("llama2-7b"))
    gpt2 = workload_from_hf_config(transformers.GPT2Config(n_layer=2, n_embd=128, n_head=2))
    got = (gpt2.n_layer, gpt2.d_model, gpt2.gated_mlp, gpt2.tied_embeddings, gpt2.seq_len)
    assert got == (2, 128, False, True, 1024)
    bert = workload_from_hf_config(transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                                                           intermediate_size=128))
    assert bert.arch == "encoder" and bert.d_ff == 128


# ------------------------------------------------------------------ inference
def test_kv_cache_and_weights_by_hand() -> None:
    w = preset("llama2-70b")
    # 80 layers x 2 x 1024 (8 KV heads of 128) x 2 bytes = 320 KiB per token
    assert kv_cache_bytes(w, tokens=1) == 80 * 2 * 1024 * 2
    assert kv_cache_bytes(w, tokens=4096, batch=8) == 8 * 4096 * 80 * 2 * 1024 * 2
    assert weight_bytes(w, "int4") == param_count(w) / 2
    with pytest.raises(ValueError, match="precision 'int2'"):
        weight_bytes(w, "int2")


def test_decode_is_memory_bound_at_batch_one_and_tp_splits_the_model() -> None:
    w, h100 = preset("llama2-70b"), gpu("h100-sxm")
    one = estimate_inference(w, h100, batch=1, prompt_len=128, output_len=64, tp=1)
    assert not one.fits  # 140 GB of weights on one 80 GB device
    four = estimate_inference(w, h100, batch=1, prompt_len=128, output_len=64, tp=4)
    assert four.fits and four.decode_bound == "memory"
    # a memory-bound step reads the weight shard once: ~35 GB at ~2.7 TB/s, about 13 ms
    assert 0.008 < four.decode_step_s < 0.02
    big = estimate_inference(w, h100, batch=256, prompt_len=128, output_len=64, tp=4)
    assert big.tokens_per_s > 20 * four.tokens_per_s
    with pytest.raises(ValueError, match="tp=3 does not divide the 64"):
        estimate_inference(w, h100, batch=1, prompt_len=1, output_len=1, tp=3)
    with pytest.raises(ValueError, match="batch=0"):
        estimate_inference(w, h100, batch=0, prompt_len=1, output_len=1)
    assert math.isfinite(estimate_inference(w, h100, batch=1, prompt_len=8, output_len=0, tp=8).latency_s)


def test_inference_on_a_gpu_without_bf16_runs_on_fp16_math() -> None:
    w, t4 = preset("llama2-7b"), gpu("t4")
    fp16 = estimate_inference(w, t4, batch=64, prompt_len=512, output_len=1, precision="fp16")
    int8 = estimate_inference(w, t4, batch=64, prompt_len=512, output_len=1, precision="int8")
    # a compute-bound prefill of 32k tokens at half of the T4's 65 TF/s fp16
    assert fp16.prefill_s == pytest.approx(64 * 512 * (2 * param_count(w) + 4 * 32 * 4096 * 256) / (0.5 * 65e12),
                                           rel=0.05)
    assert int8.prefill_s == pytest.approx(fp16.prefill_s, rel=0.05)  # int8 weights, fp16 math
    with pytest.raises(ValueError, match="t4 has no 'bf16' math"):
        estimate_inference(w, t4, batch=1, prompt_len=8, output_len=1, precision="bf16")
