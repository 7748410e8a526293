"""Memory per device: model states under each precision and sharding, activations, logits.

Pure functions of sizes; bytes everywhere.

Sources:
- Model states: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion
  Parameter Models", Sec. 3.1 and Fig. 1: mixed-precision Adam keeps 2 bytes of 16-bit weights,
  2 of 16-bit gradients and K = 12 of fp32 master weights and two moments per parameter; ZeRO-1
  shards the 12, ZeRO-2 also the gradients, ZeRO-3 (= FSDP `full`) also the weights.
  Megatron-LM accumulates gradients in fp32 (4 bytes, its "main grads"), so its default is 18.
- Activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models", eqs. 1-5 and Table 2: per layer `s b h (34 + 5 a s / h)` bytes with 16-bit activations;
  tensor parallelism divides the 24 bytes inside the blocks and the attention term by t, sequence
  parallelism also the 10 outside them; selective recomputation drops the `5 a s / h` term; full
  recomputation keeps the layer input `2 s b h` (divided by t under sequence parallelism).
  Under 1F1B the first pipeline stage holds `p` micro-batches in flight (Narayanan et al. 2021),
  i.e. `L` layers' worth; the interleaved schedule multiplies that by `1 + (p - 1) / (p v)`.
"""

from __future__ import annotations

from typing import Literal

Sharding = Literal["none", "zero1", "zero2", "zero3", "fsdp_full", "fsdp_grad_op", "fsdp_hybrid"]
Recompute = Literal["none", "selective", "full"]
SHARDINGS: tuple[str, ...] = ("none", "zero1", "zero2", "zero3", "fsdp_full", "fsdp_grad_op", "fsdp_hybrid")
RECOMPUTES: tuple[str, ...] = ("none", "selective", "full")

#: Where each sharding splits (weights, gradients, optimizer states) across the data-parallel group.
_SHARDS: dict[str, tuple[bool, bool, bool]] = {
    "none": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "fsdp_grad_op": (False, True, True),
    "zero3": (True, True, True),
    "fsdp_full": (True, True, True),
    "fsdp_hybrid": (True, True, True),  # within a node; replicated across nodes
}


def state_bytes_per_param(precision: str, *, fp32_grads: bool = True) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter for Adam.

    Example:
        >>> state_bytes_per_param("bf16")
        (2.0, 4.0, 12.0)
        >>> state_bytes_per_param("fp32")
        (4.0, 4.0, 8.0)
    """
    if precision in ("fp32", "32-true", "tf32"):
        return 4.0, 4.0, 8.0
    if precision not in ("bf16", "fp16", "fp8", "bf16-mixed", "16-mixed"):
        raise ValueError(f"unknown precision {precision!r}; use fp32, tf32, bf16, fp16 or fp8")
    weights = 2.0 + (1.0 if precision == "fp8" else 0.0)  # fp8 keeps a transposed 8-bit copy
    return weights, 4.0 if fp32_grads else 2.0, 12.0


def model_state_bytes(n_params: float, precision: str, sharding: str, shard_degree: int, *,
                      cpu_offload: bool = False, fp32_grads: bool = True) -> float:
    """Bytes of weights, gradients and optimizer state on one device holding `n_params` (its tensor/
    pipeline share), sharded over `shard_degree` data-parallel ranks as `sharding` says.

    Example: 7.5B parameters, mixed precision with bf16 gradients, ZeRO-3 over 64 ranks holds
    `16 x 7.5e9 / 64` bytes (ZeRO paper, Fig. 1: 120 GB -> 1.88 GB).
        >>> model_state_bytes(7.5e9, "bf16", "zero3", 64, fp32_grads=False) / 1e9
        1.875
    """
    if sharding not in _SHARDS:
        raise ValueError(f"unknown sharding {sharding!r}; use one of {', '.join(SHARDINGS)}")
    if shard_degree < 1:
        raise ValueError(f"shard degree must be >= 1, got {shard_degree}")
    w, g, o = state_bytes_per_param(precision, fp32_grads=fp32_grads)
    sw, sg, so = _SHARDS[sharding]
    if cpu_offload:
        o = 0.0  # ZeRO-Offload / FSDP CPUOffload keep optimizer states (and the update) in host memory
    return n_params * (w / (shard_degree if sw else 1) + g / (shard_degree if sg else 1)
                       + o / (shard_degree if so else 1))


def activation_bytes_per_layer(seq: int, mbs: int, hidden: int, heads: int, *, tp: int = 1,
                               sequence_parallel: bool = True, recompute: str = "none",
                               flash_attention: bool = True, bytes_per_value: float = 2.0,
                               kv_ratio: float = 1.0, ffn_ratio: float = 4.0, gated_mlp: bool = False) -> float:
    """Activations one transformer layer keeps for backward for one micro-batch (Korthikanti et al.
    2022, Sec. 4.1 and Table 2). `seq` is the local sequence (divided by context parallelism). A
    fused/flash attention kernel stores no `a s^2` scores, like selective recomputation.

    The paper's `34 = 10 + 24` per `s b h` splits into 10 outside the tensor-parallel blocks (layer-norm
    inputs 4, the inputs of the QKV and first MLP linears 4, two dropout masks 2) and 24 inside them:
    attention `4 + 4 r` (Q; K and V at `r = kv_heads / heads`; the output projection's input) and the
    MLP `4 f / h` (GELU input and output; `6 f / h` for a fused SwiGLU as in Megatron-Core: the gate
    and up projections and the product).

    Example: the paper's eq. 1 for s=2048, b=1, h=12288, a=96 and no parallelism:
        >>> got = activation_bytes_per_layer(2048, 1, 12288, 96, flash_attention=False)
        >>> got == 2048 * 12288 * (34 + 5 * 96 * 2048 / 12288)
        True
    """
    if recompute not in RECOMPUTES:
        raise ValueError(f"unknown recompute {recompute!r}; use one of {', '.join(RECOMPUTES)}")
    scale = bytes_per_value / 2.0
    sbh = float(seq) * mbs * hidden
    if recompute == "full":
        return 2.0 * sbh / (tp if sequence_parallel else 1) * scale
    outside = 10.0 / tp if sequence_parallel else 10.0
    inside = 4.0 + 4.0 * kv_ratio + (6.0 if gated_mlp else 4.0) * ffn_ratio
    attention = 0.0 if (recompute == "selective" or flash_attention) else 5.0 * heads * seq / hidden / tp
    return sbh * (outside + inside / tp + attention) * scale


def inflight_microbatches(pp: int, vp: int, micro_batches: int) -> float:
    """Micro-batches whose activations the first stage holds at once under 1F1B (interleaved: the
    factor `1 + (p - 1) / (p v)` on `p`), never more than there are."""
    if pp <= 1:
        return 1.0
    held = pp * (1.0 + (pp - 1) / (pp * vp)) if vp > 1 else float(pp)
    return min(held, float(micro_batches))


def logits_bytes(seq: int, mbs: int, vocab: int, *, tp: int = 1) -> float:
    """The LM head's logits for the loss: fp32, kept once and once more for the softmax gradient
    (Megatron's vocab-parallel cross entropy splits them by t)."""
    return 2.0 * 4.0 * seq * mbs * vocab / tp
