"""F0 formulas against hand-computed values, memory sharding arithmetic, and calibration."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autoscout_plugin.costmodel import (
    CostModel,
    Efficiency,
    Hardware,
    Layer,
    Measurement,
    Workload,
    calibrate,
    fit_efficiency,
    fwd_flops_per_sample,
    param_count,
    train_flops_per_sample,
)
from autoscout_plugin.costmodel.compute import lm_head_fwd_flops_per_token, transformer_layer_fwd_flops_per_token

GPT = Workload(family="transformer", n_layer=2, d_model=128, n_head=2, vocab=1000, seq_len=64, global_batch=16)
CPU = Hardware(kind="cpu", cores=2, mem_gb=24, bf16=True)


def test_transformer_layer_flops_by_hand():
    # d=128, d_ff=512, s=64: 8*128^2 + 4*128*512 + 4*64*128 = 131072 + 262144 + 32768
    assert transformer_layer_fwd_flops_per_token(128, 512, 64) == 425_984
    assert lm_head_fwd_flops_per_token(128, 1000) == 256_000
    assert fwd_flops_per_sample(GPT) == 64 * (2 * 425_984 + 256_000)


def test_encoder_has_no_lm_head_and_checkpointing_adds_a_forward():
    enc = replace(GPT, arch="encoder")
    assert fwd_flops_per_sample(enc) == 64 * 2 * 425_984
    assert train_flops_per_sample(enc, True) / train_flops_per_sample(enc, False) == pytest.approx(4 / 3)


def test_cnn_flops_and_params_from_layers():
    conv = Layer(type="conv2d", in_features=3, out_features=16, kernel=3, out_hw=(32, 32))
    cnn = Workload(family="cnn", layers=(conv, Layer(type="linear", in_features=16, out_features=10)))
    assert fwd_flops_per_sample(cnn) == 2 * 9 * 3 * 16 * 32 * 32 + 2 * 16 * 10
    assert param_count(cnn) == (9 * 3 * 16 + 16) + (16 * 10 + 10)


def test_unknown_family_falls_back_to_measured_flops_then_params():
    assert fwd_flops_per_sample(Workload(family="mystery", fwd_flops_per_sample=5e6)) == 5e6
    assert fwd_flops_per_sample(Workload(family="mystery", n_params=1000)) == 2000
    est = CostModel(Workload(family="mystery", n_params=10_000, global_batch=8), CPU).estimate({})
    assert est.samples_per_s > 0 and math.isfinite(est.step_s)


def test_transformer_params_by_hand():
    # per layer 4d^2 + 2 d d_ff + biases/norms; embeddings V d + s d; final norm 2d
    d, ff = 128, 512
    per_layer = 4 * d * d + 2 * d * ff + 4 * d + ff + d + 4 * d
    assert param_count(GPT) == 2 * per_layer + 1000 * d + 64 * d + 2 * d


def test_knob_directions_on_a_cpu():
    m = CostModel(GPT, CPU)
    base = {"micro_batch_size": 16, "num_threads": 2, "precision": "32-true"}
    sps = lambda **kw: m.estimate(base | kw).samples_per_s  # noqa: E731
    assert sps(num_threads=1) < sps()
    assert sps(precision="bf16-mixed") > sps()
    assert sps(activation_checkpointing=True) < sps()
    assert sps(micro_batch_size=1) < sps()
    no_bf16 = CostModel(GPT, replace(CPU, bf16=False))
    assert no_bf16.estimate(base | {"precision": "bf16-mixed"}).samples_per_s < no_bf16.estimate(base).samples_per_s


def test_oversubscribing_cores_is_slower():
    m = CostModel(GPT, CPU)
    fits = {"strategy": "ddp", "num_processes": 2, "num_threads": 1, "micro_batch_size": 8}
    assert m.estimate(fits | {"num_threads": 2}).samples_per_s < m.estimate(fits).samples_per_s


def test_memory_sharding_arithmetic():
    m = CostModel(replace(GPT, n_params=1_000_000), CPU, replace(Efficiency(), process_overhead_mb=0.0,
                                                                 activation_scale=0.0))
    single = m.peak_mem_mb({"strategy": "single"})
    ddp = m.peak_mem_mb({"strategy": "ddp", "num_processes": 2})
    fsdp = m.peak_mem_mb({"strategy": "fsdp", "num_processes": 2})
    assert single == pytest.approx(16.0)            # 16 bytes/param, 1M params
    assert ddp == pytest.approx(2 * (16.0 + 4.0))   # two full replicas + gradient buckets, summed on CPU
    assert fsdp == pytest.approx(16.0)              # sharded across the two processes


def test_ddp_communication_grows_with_parameters_and_bucket_count():
    small, big = CostModel(replace(GPT, n_params=10**6), CPU), CostModel(replace(GPT, n_params=10**8), CPU)
    cfg = {"strategy": "ddp", "num_processes": 2, "num_threads": 1}
    assert big.estimate(cfg).breakdown["comm_s"] > 50 * small.estimate(cfg).breakdown["comm_s"]
    assert small.estimate(cfg).breakdown["comm_s"] > 0 == small.estimate({"strategy": "single"}).breakdown["comm_s"]


def test_calibration_recovers_a_hidden_factor_and_shrinks_its_uncertainty():
    truth = CostModel(GPT, CPU, replace(Efficiency(), flops_per_core=15e9, bf16_matmul_speedup=1.1))
    prior = CostModel(GPT, CPU)
    configs = [{"micro_batch_size": 16, "num_threads": t, "precision": p}
               for t in (1, 2) for p in ("32-true", "bf16-mixed")]
    measured = [Measurement(c, truth.estimate(c).samples_per_s) for c in configs[:3]]
    cal = calibrate(prior, measured)
    held_out = configs[3]
    before = abs(math.log(prior.estimate(held_out).samples_per_s / truth.estimate(held_out).samples_per_s))
    after = abs(math.log(cal.model.estimate(held_out).samples_per_s / truth.estimate(held_out).samples_per_s))
    assert after < 0.5 * before
    bf16 = [{"micro_batch_size": 16, "num_threads": 2, "precision": "bf16-mixed"}]
    assert cal.log_std(bf16)[0] < calibrate(prior, []).log_std(bf16)[0]


def test_memory_calibration_fits_measured_rss():
    truth = CostModel(GPT, CPU, replace(Efficiency(), process_overhead_mb=700.0))
    configs = [{"micro_batch_size": b} for b in (2, 16)]
    fitted = fit_efficiency(CostModel(GPT, CPU), [Measurement(c, None, truth.peak_mem_mb(c)) for c in configs])
    for c in configs:
        assert fitted.peak_mem_mb(c) == pytest.approx(truth.peak_mem_mb(c), rel=0.1)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_layer": 0}, "n_layer"),
    ({"d_model": 130, "n_head": 4}, "divisible"),
    ({"global_batch": -1}, "global_batch"),
])
def test_bad_workloads_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Workload(family="transformer", **kwargs)


def test_bad_hardware_is_rejected():
    with pytest.raises(ValueError, match="cores"):
        Hardware(cores=0)
    with pytest.raises(ValueError, match="gpus"):
        Hardware(kind="gpu", gpus=0)


def test_workload_json_round_trip_with_layers():
    cnn = Workload(family="cnn", global_batch=8, layers=(Layer(type="conv2d", in_features=3, out_features=8, kernel=3,
                                                                 out_hw=(16, 16)),))
    data = cnn.to_json()
    data["layers"] = [{"type": "conv2d", "in": 3, "out": 8, "kernel": 3, "out_hw": [16, 16]}]
    assert Workload.from_json(data) == cnn


def test_a_catalogued_gpu_gets_its_datasheet_priors_and_another_gpu_generic_ones() -> None:
    from autoscout_plugin.costmodel.catalogue import gpu
    from autoscout_plugin.costmodel.model import default_efficiency

    h200 = default_efficiency(Hardware(kind="gpu", gpus=1, bf16=True, mem_gb=143.8, name="NVIDIA H200"))
    acc = gpu("h200")
    assert h200.flops_per_core == pytest.approx(67e12 * acc.gemm_efficiency)  # fp32 peak, no TF32
    assert h200.bf16_matmul_speedup == pytest.approx(989 / 67)
    assert h200.mem_bytes_per_s == pytest.approx(0.9 * 4.8e12)
    a100 = default_efficiency(Hardware(kind="gpu", gpus=8, bf16=True, mem_gb=42.4, name="NVIDIA A100-SXM4-40GB"))
    assert a100.bf16_matmul_speedup == pytest.approx(312 / 19.5)
    assert a100.mem_bytes_per_s == pytest.approx(0.9 * 1.555e12)
    # a Volta/Turing GPU has no bf16: its 16-bit speed-up is fp16's (was a KeyError-style crash risk)
    t4 = default_efficiency(Hardware(kind="gpu", gpus=1, bf16=False, mem_gb=15.8, name="Tesla T4"))
    assert t4.bf16_matmul_speedup == pytest.approx(65 / 8.1)
    other = default_efficiency(Hardware(kind="gpu", gpus=1, bf16=True, mem_gb=24, name="NVIDIA GeForce RTX 4090"))
    assert (other.flops_per_core, other.bf16_matmul_speedup) == (100e12, 1.8)
    # what the search sees first: bf16 far ahead of fp32 on an H200 for a GEMM-heavy model
    w = Workload(family="transformer", n_layer=12, d_model=768, n_head=12, vocab=50257, seq_len=1024, global_batch=16)
    model = CostModel(w, Hardware(kind="gpu", gpus=1, bf16=True, mem_gb=143.8, name="NVIDIA H200"))
    fp32 = model.estimate({"precision": "32-true", "micro_batch_size": 16}).step_s
    bf16 = model.estimate({"precision": "bf16-mixed", "micro_batch_size": 16}).step_s
    assert 2.0 < fp32 / bf16 < 14.8
