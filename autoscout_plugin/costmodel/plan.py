"""`autoscout plan`: rank every parallel layout of a model on a GPU cluster, or evaluate one.

Example:
    >>> result = plan("gpt3-5b", "h100-sxm", 16, global_batch=256, seq_len=2048)
    >>> best = result.ranked[0]
    >>> best.fits and best.layout.tp * best.layout.pp * best.layout.cp * best.dp == 16
    True
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import validate
from .catalogue import gpu
from .cluster import ClusterModel, Layout, LayoutError, LayoutEstimate, enumerate_layouts, rank_layouts
from .compute import param_count
from .presets import preset

MAX_GPUS = 2**20
"""`--gpus` is at most 1,048,576; the slowest count up to there (983,040: many divisors) ranks in about a
second."""
MAX_GLOBAL_BATCH = 2**24
"""`--global-batch` is at most 16,777,216 sequences."""
MAX_SEQ_LEN = 2**22
"""`--seq-len` is at most 4,194,304 tokens."""


@dataclass
class PlanResult:
    """The ranked layouts (best first) and, with `--layout`, the one asked about and its rank."""

    model: ClusterModel
    name: str
    ranked: list[LayoutEstimate]
    seconds: float
    chosen: LayoutEstimate | None = None
    chosen_rank: int | None = None
    """1-based rank of the chosen layout among the enumerated ones (None if outside the enumeration)."""

    def to_json(self) -> dict[str, Any]:
        m = self.model
        return {"model": self.name, "gpu": m.acc.name, "gpus": m.n_gpus, "global_batch": m.global_batch,
                "seq_len": m.workload.seq_len, "n_params": param_count(m.workload), "rank_seconds": self.seconds,
                "chosen": None if self.chosen is None else {**self.chosen.to_json(), "rank": self.chosen_rank},
                "layouts": [est.to_json() for est in self.ranked]}


def plan(model: str, gpu_name: str, gpus: int, *, global_batch: int, seq_len: int | None = None,
         precision: str = "bf16", layout: str | None = None, shardings: Sequence[str] = ("none", "zero1", "zero3"),
         recomputes: Sequence[str] = ("none", "selective", "full")) -> PlanResult:
    """Enumerate and rank the layouts of preset `model` on `gpus` x `gpu_name`; `layout` (the
    `tp=4,pp=4,...` syntax) is evaluated as well. Errors name the bad value.

    The bounds (`MAX_GPUS`, `MAX_GLOBAL_BATCH`, `MAX_SEQ_LEN`) keep every plan within about a second:
    the enumeration grows with the divisors of the GPU count and of the global batch."""
    validate.integer("--gpus", gpus, low=1, high=MAX_GPUS, hint="the number of GPUs in the cluster")
    validate.integer("--global-batch", global_batch, low=1, high=MAX_GLOBAL_BATCH,
                     hint="sequences per optimizer step")
    validate.integer("--seq-len", seq_len, low=1, high=MAX_SEQ_LEN, optional=True,
                     hint="tokens per sequence, or leave it out for the preset's")
    validate.non_empty_str("--model", model, hint="a preset name such as llama2-7b")
    validate.non_empty_str("--gpu", gpu_name, hint="a GPU name such as h100-sxm")
    validate.non_empty_str("--layout", layout, optional=True, hint="key=value items such as tp=4,pp=4,mbs=1")
    workload = preset(model, seq_len=seq_len, global_batch=global_batch)
    acc = gpu(gpu_name)
    acc.peak(precision)  # an fp8 plan on a GPU without fp8 fails here, before any work
    cluster = ClusterModel(workload, acc, gpus, global_batch=global_batch)
    start = time.perf_counter()
    ranked = rank_layouts(cluster, enumerate_layouts(cluster, precisions=(precision,), shardings=shardings,
                                                     recomputes=recomputes))
    seconds = time.perf_counter() - start
    chosen = rank = None
    if layout is not None:
        chosen = cluster.evaluate(Layout.parse(layout, precision=precision))
        stated = _stated_dp(layout)
        if stated is not None and stated != chosen.dp:
            lay = chosen.layout
            raise LayoutError(f"layout dp={stated} does not match the GPU count: {gpus} GPUs / (tp*pp*cp = "
                              f"{lay.tp}*{lay.pp}*{lay.cp}) give dp={chosen.dp}; drop dp= (it is derived) or fix it")
        position = next((i for i, est in enumerate(ranked) if est.layout == chosen.layout), None)
        rank = None if position is None else position + 1
    elif not ranked:
        raise LayoutError(_no_layout_message(cluster))
    return PlanResult(cluster, model, ranked, seconds, chosen, rank)


def _stated_dp(text: str) -> int | None:
    """The `dp=N` of a layout text (`Layout.parse` has checked it is a positive integer), if any."""
    for part in text.split(","):
        key, _, raw = part.partition("=")
        if key.strip().lower() == "dp":
            return int(raw)
    return None


def _no_layout_message(cluster: ClusterModel) -> str:
    w = cluster.workload
    return (f"no layout of {w.n_layer} layers and {w.n_head} heads fits {cluster.n_gpus} GPUs with a global batch "
            f"of {cluster.global_batch}: the GPU count must factor into tp (dividing the heads, at most "
            f"{cluster.acc.gpus_per_node}) x pp (dividing the layers) x cp x dp (dividing the global batch); "
            "try a GPU count such as a multiple of 8, or a global batch divisible by it")


def _row(est: LayoutEstimate, rank: int | str) -> str:
    lay, b = est.layout, est.breakdown
    share = {k: 100.0 * v / est.step_s for k, v in b.items()}
    comm = share["tp_comm_s"] + share["cp_comm_s"] + share["pp_p2p_s"] + share["dp_comm_s"]
    return (f"{rank!s:>5} {lay.tp:>3} {lay.pp:>3} {lay.cp:>3} {lay.vp:>3} {est.dp:>5} {lay.mbs:>4} "
            f"{lay.sharding:>8} {lay.recompute:>9} {est.tokens_per_s_per_gpu:>11,.0f} "
            f"{est.model_tflops_per_gpu:>7.1f} {100 * est.mfu:>5.1f} {est.peak_mem_gb:>7.1f} "
            f"{'yes' if est.fits else 'NO':>4}  {share['compute_s']:>4.0f}/{comm:>3.0f}/{share['pp_bubble_s']:>3.0f}")


HEADER = (" rank  tp  pp  cp  vp    dp  mbs sharding recompute tok/s/GPU  TFLOP/s  MFU%  mem GB fits"
          "  compute/comm/bubble %")


def format_plan(result: PlanResult, top: int = 10) -> str:
    """The plan as a table of the `top` best layouts (0: only the summary), and the given layout."""
    validate.integer("--top", top, low=0, hint="the number of layouts to print; 0 prints only the summary")
    m = result.model
    w = m.workload
    lines = [f"{result.name}: {param_count(w) / 1e9:.2f}B parameters, {w.n_layer} layers x {w.d_model}, "
             f"{w.n_head} heads, sequence {w.seq_len}, global batch {m.global_batch} "
             f"({m.global_batch * (w.seq_len or 0):,} tokens/step)",
             f"on {m.n_gpus} x {m.acc.name} ({m.acc.mem_gib:.0f} GB, {m.acc.gpus_per_node} per node): "
             f"{len(result.ranked)} layouts ranked in {result.seconds:.2f} s", HEADER]
    lines += [_row(est, i + 1) for i, est in enumerate(result.ranked[:top])]
    if result.chosen is not None:
        est = result.chosen
        lines += ["", "the given layout:", HEADER, _row(est, result.chosen_rank or "-")]
        lines.append("  time per step: " + ", ".join(f"{k[:-2]} {v:.3f} s" for k, v in est.breakdown.items())
                     + f" = {est.step_s:.3f} s")
        lines.append("  memory (GB): " + ", ".join(f"{k} {v:.1f}" for k, v in est.memory_gb.items()))
        if not est.fits:
            lines.append(f"  does not fit: {est.peak_mem_gb:.1f} GB > {m.acc.mem_gib:.0f} GB per GPU")
    elif not any(est.fits for est in result.ranked):
        lines.append("no layout fits in memory: add GPUs, or allow recomputation/sharding")
    return "\n".join(lines)


def write_plan_json(result: PlanResult, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    return out


__all__ = ["MAX_GLOBAL_BATCH", "MAX_GPUS", "MAX_SEQ_LEN", "PlanResult", "format_plan", "plan", "write_plan_json"]
