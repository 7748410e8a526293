"""Inference: prefill and decode time, KV-cache memory, batch latency and tokens/s.

Each phase takes the longer of its compute time and its memory time (the roofline, Williams et
al. 2009), as in Pope et al. 2022, "Efficiently Scaling Transformer Inference", Sec. 2:
- prefill processes `batch x prompt` tokens at once: `2 N` FLOPs per token plus attention, GEMM-bound;
- each decode step reads every weight and the whole KV cache once for `batch` new tokens, so at
  small batches it is bound by memory bandwidth, and batching raises tokens/s almost for free until
  `2 N batch / peak` overtakes `bytes / bandwidth`;
- the KV cache holds `2 x layers x kv_dim x bytes` per token (keys and values).
Tensor parallelism divides weights, cache and FLOPs by `tp` and adds two all-reduces per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import comm
from .catalogue import GIB, Accelerator
from .compute import param_count
from .workload import Workload

_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def weight_bytes(workload: Workload, precision: str = "bf16") -> float:
    """Bytes of the weights at `precision` (`fp32`, `bf16`, `fp16`, `fp8`, `int8`, `int4`)."""
    return param_count(workload) * _value_bytes(precision)


def kv_cache_bytes(workload: Workload, tokens: int, batch: int = 1, precision: str = "bf16") -> float:
    """Keys and values of `tokens` positions for `batch` sequences: `2 L d_kv bytes` per token.

    Example: Llama-2 7B (32 layers, d_kv 4096) keeps 0.5 MiB per token in 16-bit:
        >>> from autoscout_plugin.costmodel.presets import preset
        >>> kv_cache_bytes(preset("llama2-7b"), tokens=1) / 2**20
        0.5
    """
    if tokens < 0 or batch < 1:
        raise ValueError(f"tokens must be >= 0 and batch >= 1, got tokens={tokens}, batch={batch}")
    assert workload.n_layer
    return 2.0 * workload.n_layer * workload.kv_dim * _value_bytes(precision) * tokens * batch


def _value_bytes(precision: str) -> float:
    if precision not in _BYTES:
        raise ValueError(f"unknown inference precision {precision!r}; use one of {', '.join(_BYTES)}")
    return _BYTES[precision]


@dataclass(frozen=True, slots=True)
class InferenceEstimate:
    prefill_s: float
    decode_step_s: float
    """One decode step: one new token for each of the `batch` sequences."""
    latency_s: float
    """Prefill plus all decode steps of one batch (every request's end-to-end time)."""
    tokens_per_s: float
    """Generated tokens per second of the whole batch."""
    weights_gb: float
    kv_cache_gb: float
    peak_mem_gb: float
    fits: bool
    decode_bound: str
    """`memory` or `compute`: what limits a decode step."""


def estimate_inference(workload: Workload, acc: Accelerator, *, batch: int, prompt_len: int, output_len: int,
                       precision: str = "bf16", tp: int = 1, mfu: float = 0.5, bandwidth_eff: float = 0.8,
                       overhead_gib: float = 2.0) -> InferenceEstimate:
    """Predicted latency, throughput and memory of generating `output_len` tokens after `prompt_len`
    for `batch` sequences on `tp` devices.

    Example: Llama-2 7B on one H100: batching 32 requests raises throughput far more than latency.
        >>> from autoscout_plugin.costmodel.catalogue import gpu
        >>> from autoscout_plugin.costmodel.presets import preset
        >>> one = estimate_inference(preset("llama2-7b"), gpu("h100-sxm"), batch=1, prompt_len=512, output_len=128)
        >>> many = estimate_inference(preset("llama2-7b"), gpu("h100-sxm"), batch=32, prompt_len=512, output_len=128)
        >>> one.decode_bound, many.tokens_per_s / one.tokens_per_s > 10, many.latency_s / one.latency_s < 3
        ('memory', True, True)
    """
    if batch < 1 or prompt_len < 1 or output_len < 0 or tp < 1:
        raise ValueError(f"batch, prompt_len and tp must be >= 1 and output_len >= 0; got batch={batch}, "
                         f"prompt_len={prompt_len}, output_len={output_len}, tp={tp}")
    assert workload.n_layer and workload.d_model
    if workload.n_head and workload.n_head % tp:
        raise ValueError(f"tp={tp} does not divide the {workload.n_head} attention heads")
    # int8/int4 weights are dequantised to the device's 16-bit math (fp16 on a V100 or T4)
    compute_precision = precision if precision in ("fp8", "fp32", "fp16", "bf16") else acc.half_precision
    peak = acc.peak(compute_precision) * mfu
    bw = acc.mem_bytes_per_s * bandwidth_eff
    n_params = param_count(workload)
    weights = weight_bytes(workload, precision) / tp
    link = acc.intra
    value = 2.0 if precision != "fp32" else 4.0

    prefill_tokens = batch * prompt_len
    attn = 4.0 * workload.n_layer * workload.d_model * prompt_len / 2.0  # causal: half the square per token
    prefill_flops = prefill_tokens * (2.0 * n_params + attn) / tp
    tp_prefill = 2.0 * workload.n_layer * comm.all_reduce_s(prefill_tokens * workload.d_model * value, tp, link)
    prefill_s = max(prefill_flops / peak, weights / bw) + tp_prefill

    total_s = prefill_s
    decode_step = 0.0
    bound = "memory"
    context = prompt_len + output_len / 2.0  # the mean cache length over the decode steps
    if output_len:
        kv_read = kv_cache_bytes(workload, int(context), batch, "bf16" if precision != "fp32" else "fp32") / tp
        flops = batch * (2.0 * n_params + 4.0 * workload.n_layer * workload.d_model * context) / tp
        mem_s, compute_s = (weights + kv_read) / bw, flops / peak
        bound = "memory" if mem_s >= compute_s else "compute"
        tp_decode = 2.0 * workload.n_layer * comm.all_reduce_s(batch * workload.d_model * value, tp, link)
        decode_step = max(mem_s, compute_s) + tp_decode
        total_s += output_len * decode_step
    kv_full = kv_cache_bytes(workload, prompt_len + output_len, batch, "bf16" if precision != "fp32" else "fp32") / tp
    peak_mem = (weights + kv_full) / GIB + overhead_gib
    return InferenceEstimate(prefill_s=prefill_s, decode_step_s=decode_step, latency_s=total_s,
                             tokens_per_s=batch * output_len / total_s if total_s > 0 else 0.0,
                             weights_gb=weights / GIB, kv_cache_gb=kv_full / GIB, peak_mem_gb=peak_mem,
                             fits=peak_mem <= acc.mem_gib, decode_bound=bound)
