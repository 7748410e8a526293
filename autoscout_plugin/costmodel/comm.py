"""Collective and point-to-point communication times: the alpha-beta model per link.

Sources:
- Alpha-beta (latency-bandwidth) cost: Hockney 1994, "The communication challenge for MPP".
- Ring collectives: Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of
  workstations": an all-reduce moves `2 (p - 1) / p` of the buffer through each rank's link in
  `2 (p - 1)` steps; reduce-scatter and all-gather move `(p - 1) / p` in `p - 1` steps. NCCL reports
  exactly this normalisation as `busbw` (nccl-tests, doc/PERFORMANCE.md), which is the link
  bandwidth the catalogue stores.
- Tensor parallelism: Shoeybi et al. 2019 (Megatron-LM), Sec. 3: two all-reduces in the forward
  and two in the backward pass per layer; with sequence parallelism (Korthikanti et al. 2022) each
  becomes an all-gather plus a reduce-scatter of the same total volume.
- Context parallelism: a ring exchange of each rank's keys and values (Liu et al. 2023, "Ring
  Attention"), overlapped with the attention blocks.
"""

from __future__ import annotations

import math

from .catalogue import Link


def all_reduce_s(nbytes: float, ranks: int, link: Link) -> float:
    """Ring all-reduce of `nbytes` over `ranks`.

    Example: 1 GB over 8 ranks at 100 GB/s bus bandwidth and 10 us latency:
        >>> round(all_reduce_s(1e9, 8, Link("x", 100e9, 10e-6)), 6)
        0.01764
    """
    if ranks <= 1:
        return 0.0
    return 2.0 * (ranks - 1) / ranks * nbytes / link.bytes_per_s + 2.0 * (ranks - 1) * link.latency_s


def reduce_scatter_s(nbytes: float, ranks: int, link: Link) -> float:
    """Ring reduce-scatter (or all-gather) of a buffer of `nbytes` in total."""
    if ranks <= 1:
        return 0.0
    return (ranks - 1) / ranks * nbytes / link.bytes_per_s + (ranks - 1) * link.latency_s


all_gather_s = reduce_scatter_s


def p2p_s(nbytes: float, link: Link) -> float:
    """One point-to-point send (pipeline stage boundary)."""
    return link.latency_s + nbytes / link.bytes_per_s


def bucketed_all_reduce_s(nbytes: float, ranks: int, link: Link, bucket_bytes: float) -> float:
    """A gradient all-reduce issued in buckets (DDP): bandwidth term once, latency per bucket."""
    if ranks <= 1:
        return 0.0
    buckets = max(math.ceil(nbytes / max(bucket_bytes, 1.0)), 1)
    return 2.0 * (ranks - 1) / ranks * nbytes / link.bytes_per_s + buckets * 2.0 * (ranks - 1) * link.latency_s


def exposed_s(comm_s: float, overlappable_compute_s: float, overlap: float) -> float:
    """The part of `comm_s` not hidden behind compute: an `overlap` fraction (0-1) of the compute
    window can hide communication (Li et al. 2020, PyTorch DDP, Sec. 3.2.3 and Fig. 7)."""
    return max(comm_s - overlap * overlappable_compute_s, 0.0)


def tensor_parallel_bytes_per_layer(tokens: int, hidden: int, bytes_per_value: float = 2.0) -> float:
    """Bytes of one tensor-parallel collective of a layer: the `tokens x hidden` activation."""
    return float(tokens) * hidden * bytes_per_value


def tensor_parallel_collectives(recompute: str) -> int:
    """All-reduces (or all-gather + reduce-scatter pairs) per layer and micro-batch: 2 forward,
    2 backward, plus 2 more when the forward is recomputed in full."""
    return 6 if recompute == "full" else 4
