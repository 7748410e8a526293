"""F0 for GPU clusters: step time, memory and MFU of a parallel layout (tp, pp, cp, vp, dp, micro-batch,
sharding, recomputation, precision), and the enumeration/ranking behind `autoscout plan`.

One optimizer step of a decoder transformer, per device (Narayanan et al. 2021, Sec. 3):

    step_s = pipeline(stage_s, m, v) + exposed data-parallel communication + optimizer update

- a stage's `stage_s` for one micro-batch: GEMMs at the device's sustained rate (shrinking for small
  local shapes), attention scores, memory-bound elementwise work at HBM bandwidth, tensor-parallel
  collectives and context-parallel exchange (`comm.py`), the point-to-point sends between stages;
  the last stage also runs the LM head and the loss;
- `pipeline(...)`: 1F1B / interleaved with their bubble (`pipeline.py`), over stages of even layer
  counts or, where `pp x vp` divides `layers + 2` only, one layer fewer on the first and last
  (`stage_layers`);
- data parallelism: the gradient all-reduce (or reduce-scatter + all-gather under ZeRO-1/2, per
  micro-batch gathers under ZeRO-3/FSDP), partly hidden behind the backward pass;
- memory (`memory.py`): model states under the sharding, activations of the micro-batches in flight
  on the first stage, logits on the last, plus a fixed framework overhead.

Ranks are placed as Megatron-LM does (tensor fastest, then context, data, pipeline): a group is on one
node when its span `stride x size` fits in a node, else it crosses the inter-node link.

The factors nobody can know in advance are `ClusterEfficiency` fields; `calibrate_cluster` refits them
from a few measured layouts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from . import comm
from .catalogue import GIB, Accelerator, Link
from .compute import (
    attention_flops_per_token,
    embedding_params,
    fwd_flops_per_sample,
    transformer_layer_dense_flops_per_token,
    transformer_layer_params,
)
from .memory import (
    RECOMPUTES,
    SHARDINGS,
    activation_bytes_per_layer,
    inflight_microbatches,
    logits_bytes,
    model_state_bytes,
)
from .pipeline import pipeline_step_s, splits, stage_layers
from .workload import Workload

PRECISIONS = ("bf16", "fp16", "fp8", "fp32", "tf32")
_PIPELINE_SHARDINGS = ("none", "zero1")  # ZeRO-2/3 and FSDP do not combine with pipeline stages


class LayoutError(ValueError):
    """A layout that does not fit the model or the cluster; the message names the knob and value."""


@dataclass(frozen=True, slots=True)
class Layout:
    """How a job is split over the cluster; `dp` follows from the GPU count.

    Example:
        >>> lay = Layout.parse("tp=4,pp=4,cp=1,vp=20,mbs=1,recompute=full")
        >>> lay.tp, lay.pp, lay.vp, lay.precision, lay.recompute
        (4, 4, 20, 'bf16', 'full')
    """

    tp: int = 1
    pp: int = 1
    cp: int = 1
    vp: int = 1
    """Model chunks per pipeline device (the interleaved schedule when > 1)."""
    mbs: int = 1
    precision: str = "bf16"
    sharding: str = "none"
    """`none` (DDP), `zero1` (Megatron's distributed optimizer), `zero2`, `zero3`, `fsdp_full`,
    `fsdp_grad_op`, `fsdp_hybrid`."""
    recompute: str = "none"
    """Activation recomputation: `none`, `selective` (attention core) or `full`."""
    sequence_parallel: bool = True
    """Megatron sequence parallelism (only meaningful with tp > 1)."""
    cpu_offload: bool = False
    compile: bool = False
    """`torch.compile` (inductor): fuses the memory-bound elementwise work."""

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "vp", "mbs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LayoutError(f"layout {name} must be an integer >= 1, got {value!r}")
        if self.precision not in PRECISIONS:
            raise LayoutError(f"layout precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if self.sharding not in SHARDINGS:
            raise LayoutError(f"layout sharding {self.sharding!r} is unknown; use one of {', '.join(SHARDINGS)}")
        if self.recompute not in RECOMPUTES:
            raise LayoutError(f"layout recompute {self.recompute!r} is unknown; use one of {', '.join(RECOMPUTES)}")
        if self.vp > 1 and self.pp == 1:
            raise LayoutError(f"layout vp={self.vp} needs pipeline stages (pp > 1)")
        if self.pp > 1 and self.sharding not in _PIPELINE_SHARDINGS:
            raise LayoutError(f"layout sharding={self.sharding} does not combine with pp={self.pp}; "
                              "use zero1 (distributed optimizer) or none")

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> Layout:
        """From `"tp=4,pp=4,cp=1,vp=20,mbs=1"` (also `precision=fp8`, `sharding=zero1`, `recompute=full`,
        `sp=0`, `offload=1`, `compile=1`); keys not given take `defaults`, then the class defaults.

        Each key once (`sp` and `sequence_parallel`, `offload` and `cpu_offload` are one key); the
        on/off keys take 1/0, true/false, yes/no or on/off; `dp=N` is read (a printed layout reads
        back) but follows from the GPU count, which `plan` checks it against.

        Example:
            >>> Layout.parse("tp=2,tp=4")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            autoscout_plugin.costmodel.cluster.LayoutError: layout key 'tp' is given twice ('tp=2' and 'tp=4'); ...
        """
        keys = "tp, pp, cp, vp, mbs, precision, sharding, recompute, sp, offload, compile"
        if not isinstance(text, str) or not text.strip(" ,"):
            raise LayoutError(f"the layout {text!r} is empty: give key=value items such as tp=4,pp=4,mbs=1 "
                              f"(keys: {keys})")
        known = {f.name for f in fields(cls)} | {"sp", "offload", "dp"}
        flags = {"sp": "sequence_parallel", "sequence_parallel": "sequence_parallel", "offload": "cpu_offload",
                 "cpu_offload": "cpu_offload", "compile": "compile"}
        switches = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                    "off": False}
        values: dict[str, Any] = dict(defaults)
        seen: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in known:
                raise LayoutError(f"cannot read layout item {part!r}; expected key=value with keys {keys}")
            name = flags.get(key, key)
            if name in seen:
                raise LayoutError(f"layout key {key!r} is given twice ({seen[name]!r} and {part!r}); give each"
                                  " key once")
            seen[name] = part
            raw = raw.strip()
            if key in flags:
                if raw.lower() not in switches:
                    raise LayoutError(f"layout {key} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")
                values[name] = switches[raw.lower()]
            elif key in ("precision", "sharding", "recompute"):
                values[key] = raw.lower()
            else:
                if not re.fullmatch(r"[0-9]+", raw) or int(raw) < 1:
                    raise LayoutError(f"layout {key} must be a positive integer, got {raw!r}")
                if key != "dp":  # derived from the GPU count; `plan` checks a stated one
                    values[key] = int(raw)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ClusterEfficiency:
    """Factors of a software stack; each is refit by `calibrate_cluster`."""

    gemm_scale: float = 1.0
    """Multiplies the accelerator's `gemm_efficiency`."""
    attention_efficiency: float = 0.6
    """Attention-score FLOPs run at this fraction of the GEMM rate (flash kernels ~0.6-0.7)."""
    gemm_half_tokens: float = 192.0
    """Local tokens at which GEMM efficiency halves (small micro-batches under-fill the device; the
    weight-gradient GEMMs reduce over the tokens). Narayanan et al. 2021 measure up to 1.3x more
    throughput per GPU from larger micro-batches (Sec. 3.4) and find micro-batch 2 best at
    (t, p) = (8, 8) (Fig. 16); 128 gave too little of that, and ranked micro-batch-1 pipelines above
    Megatron's tp=8 layouts for the 18B and 39B rows of Table 1 (192 was chosen with that table in
    view: `benchmarks/README.md`)."""
    gemm_half_width: float = 48.0
    """Local hidden width (h / tp) at which GEMM efficiency halves."""
    elementwise_bytes: float = 60.0
    """HBM bytes moved per token and hidden unit per layer per pass by norms, activations, dropout and
    residuals (about 30 reads/writes of 2 bytes)."""
    softmax_bytes: float = 16.0
    """Bytes per score element per pass of an unfused softmax/mask/dropout (flash attention: none)."""
    comm_scale: float = 1.0
    """Multiplies every link's bandwidth."""
    dp_overlap: float = 0.8
    """Fraction of the last micro-batch's backward that hides the gradient reduction (0 when the
    stack reduces after the backward, as Megatron-LM did in 2021)."""
    compile_elementwise_speedup: float = 1.5
    """Memory-bound elementwise work runs this much faster under `torch.compile` (inductor fusion;
    the GEMMs are cuBLAS either way)."""
    fp8_gemm_ratio: float = 0.65
    """fp8 GEMMs reach this fraction of the bf16 efficiency (of a doubled peak)."""
    overhead_gib: float = 3.0
    """CUDA context, NCCL buffers, cuBLAS workspaces, allocator fragmentation."""
    host_adam_params_per_s: float = 2e9
    """Parameters per second the host's Adam updates under CPU offload (DeepSpeed CPU-Adam scale)."""


@dataclass(frozen=True, slots=True)
class LayoutEstimate:
    """The model's answer for one layout."""

    layout: Layout
    dp: int
    micro_batches: int
    step_s: float
    tokens_per_s_per_gpu: float
    model_tflops_per_gpu: float
    """Model FLOPs (no recomputation) per second per GPU, in TFLOP/s."""
    hardware_tflops_per_gpu: float
    """FLOPs actually executed, recomputation included (what Narayanan et al. 2021 report)."""
    mfu: float
    peak_mem_gb: float
    """Peak memory of the most loaded device, GiB (2^30 bytes, as device memory is quoted)."""
    fits: bool
    breakdown: dict[str, float] = field(default_factory=dict)
    """Seconds per step by term (compute, tp_comm, pp_p2p, pp_bubble, dp_comm, optimizer)."""
    memory_gb: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        layout = self.layout
        return {"tp": layout.tp, "pp": layout.pp, "cp": layout.cp, "vp": layout.vp, "dp": self.dp, "mbs": layout.mbs,
                "precision": layout.precision, "sharding": layout.sharding, "recompute": layout.recompute,
                "sequence_parallel": layout.sequence_parallel, "cpu_offload": layout.cpu_offload,
                "compile": layout.compile,
                "micro_batches": self.micro_batches, "step_s": self.step_s,
                "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu, "model_tflops_per_gpu": self.model_tflops_per_gpu,
                "hardware_tflops_per_gpu": self.hardware_tflops_per_gpu, "mfu": self.mfu,
                "peak_mem_gb": self.peak_mem_gb, "fits": self.fits, "breakdown": dict(self.breakdown),
                "memory_gb": dict(self.memory_gb)}


@dataclass(frozen=True, slots=True)
class _Shapes:
    """What a layout's time does not depend on beyond (tp, cp, mbs): computed once per triple."""

    layer_s: float
    """Forward+backward of one layer for one micro-batch, tensor-parallel communication included."""
    layer_compute_s: float
    layer_tp_s: float
    layer_cp_s: float
    head_s: float
    """LM head and loss on the last stage, forward+backward."""


class ClusterModel:
    """Step time, memory and MFU of layouts of one transformer on `n_gpus` accelerators.

    The software stack's settings: `flash_attention` (fused attention, no stored scores),
    `fp32_grads` (gradients kept and reduced in fp32), `bucket_mb` (the data-parallel gradient
    bucket; `math.inf` for one all-reduce of the whole buffer, as Megatron-LM's local DDP does) and
    `efficiency.dp_overlap` (0 when the reduction waits for the end of the backward).

    Example: GPT-3 175B on 1024 A100s, the layout Narayanan et al. 2021 used:
        >>> from autoscout_plugin.costmodel.catalogue import gpu
        >>> from autoscout_plugin.costmodel.presets import preset
        >>> m = ClusterModel(preset("gpt3-175b"), gpu("a100-80gb"), 1024, global_batch=1536)
        >>> est = m.evaluate(Layout(tp=8, pp=8, vp=2, mbs=1, recompute="full"))
        >>> est.dp, est.micro_batches, est.fits, 100 < est.hardware_tflops_per_gpu < 200
        (16, 96, True, True)
    """

    def __init__(self, workload: Workload, accelerator: Accelerator, n_gpus: int, *, global_batch: int | None = None,
                 efficiency: ClusterEfficiency | None = None, flash_attention: bool = True, fp32_grads: bool = False,
                 bucket_mb: float = 40.0) -> None:
        if not workload.is_transformer or not workload.n_head:
            raise ValueError("the cluster planner needs a transformer workload (layers, width, heads, sequence)")
        if n_gpus < 1:
            raise ValueError(f"the GPU count must be >= 1, got {n_gpus}")
        if not bucket_mb > 0:
            raise ValueError(f"the gradient bucket must be > 0 MB (math.inf: one all-reduce of the whole "
                             f"gradient buffer), got {bucket_mb}")
        batch = global_batch or workload.global_batch
        if not batch or batch < 1:
            raise ValueError(f"a global batch (sequences per step) >= 1 is needed, got {batch}")
        self.workload, self.acc, self.n_gpus, self.global_batch = workload, accelerator, n_gpus, int(batch)
        self.eff = efficiency or ClusterEfficiency()
        self.flash_attention, self.fp32_grads, self.bucket_bytes = flash_attention, fp32_grads, bucket_mb * 1e6
        w = workload
        self._layer_params = float(transformer_layer_params(w))
        self._embed_params = float(embedding_params(w))
        self._dense_per_token = transformer_layer_dense_flops_per_token(w.d_model, w.d_ff or 4 * w.d_model,
                                                                        kv_dim=w.kv_dim, gated_mlp=w.gated_mlp)
        self._attn_per_token = attention_flops_per_token(w.d_model, w.seq_len)
        self._model_flops_per_step = 3.0 * fwd_flops_per_sample(w) * self.global_batch
        self._shapes: dict[tuple[int, int, int, str, str, bool, bool], _Shapes] = {}
        self._shape_ratios: dict[str, Any] = {"kv_ratio": w.kv_dim / w.d_model, "gated_mlp": w.gated_mlp,
                                              "ffn_ratio": (w.d_ff or 4 * w.d_model) / w.d_model}

    def with_efficiency(self, efficiency: ClusterEfficiency) -> ClusterModel:
        return ClusterModel(self.workload, self.acc, self.n_gpus, global_batch=self.global_batch,
                            efficiency=efficiency, flash_attention=self.flash_attention,
                            fp32_grads=self.fp32_grads, bucket_mb=self.bucket_bytes / 1e6)

    # ---------------------------------------------------------------- validity
    def check(self, layout: Layout) -> tuple[int, int]:
        """(dp, micro-batches per step) of a valid layout; a `LayoutError` naming the knob otherwise."""
        w, lay = self.workload, layout
        assert w.n_layer and w.n_head and w.seq_len
        model_par = lay.tp * lay.pp * lay.cp
        if self.n_gpus % model_par:
            raise LayoutError(f"tp*pp*cp = {lay.tp}*{lay.pp}*{lay.cp} = {model_par} does not divide the "
                              f"{self.n_gpus} GPUs")
        if w.n_head % lay.tp:
            raise LayoutError(f"tp={lay.tp} does not divide the {w.n_head} attention heads")
        kv = w.n_kv_head or w.n_head
        if kv % lay.tp and lay.tp % kv:
            raise LayoutError(f"tp={lay.tp} and the {kv} key/value heads do not divide one another")
        try:
            stage_layers(w.n_layer, lay.pp, lay.vp)
        except ValueError as exc:
            raise LayoutError(str(exc)) from None
        if lay.cp > 1 and w.seq_len % (2 * lay.cp):
            raise LayoutError(f"cp={lay.cp}: the sequence of {w.seq_len} tokens must split into 2*cp chunks")
        dp = self.n_gpus // model_par
        if self.global_batch % (dp * lay.mbs):
            raise LayoutError(f"the global batch {self.global_batch} is not a multiple of dp*mbs = {dp}*{lay.mbs}")
        micro = self.global_batch // (dp * lay.mbs)
        if lay.vp > 1 and micro % lay.pp:
            raise LayoutError(f"vp={lay.vp}: the interleaved schedule needs the {micro} micro-batches to be a "
                              f"multiple of pp={lay.pp}")
        if lay.sharding != "none" and dp == 1:
            raise LayoutError(f"sharding={lay.sharding} needs data parallelism (dp > 1), but dp = 1")
        try:
            self.acc.peak(lay.precision)
        except ValueError as exc:
            raise LayoutError(f"precision={lay.precision}: {exc}") from None
        return dp, micro

    # ---------------------------------------------------------------- links
    def _link(self, stride: int, size: int) -> Link:
        """The link of a group of `size` ranks `stride` apart: NVLink-class when every such group lies
        inside a node (its span divides the node: tp=6 on 8-GPU nodes puts ranks 6-11 in one group, across
        two nodes); otherwise the NICs, each member on a node bringing its own (rail-optimised fabrics, as
        in DGX SuperPODs), so `g` members per node reach `g` NICs' bandwidth, at most the node's link."""
        per_node = self.acc.gpus_per_node
        if per_node % (stride * size) == 0 or self.n_gpus <= per_node:
            link = self.acc.intra
        else:
            inter, intra = self.acc.inter, self.acc.intra
            span = stride * size
            if span < per_node:  # a group straddling two nodes crosses with its members on the smaller side
                members = max(math.gcd(per_node, span) // stride, 1)
            else:
                members = min(max(per_node // stride, 1), size)
            link = Link(inter.name, min(inter.bytes_per_s * members, intra.bytes_per_s), inter.latency_s)
        if self.eff.comm_scale != 1.0:
            link = Link(link.name, link.bytes_per_s * self.eff.comm_scale, link.latency_s)
        return link

    # ---------------------------------------------------------------- time
    def _gemm_rate(self, tokens: float, width: float, precision: str) -> float:
        e, acc = self.eff, self.acc
        fill = tokens / (tokens + e.gemm_half_tokens) * width / (width + e.gemm_half_width)
        eff = acc.gemm_efficiency * e.gemm_scale * fill
        if precision == "fp8":
            eff *= e.fp8_gemm_ratio
        return acc.peak(precision) * min(eff, 1.0)

    def _layer_shapes(self, lay: Layout) -> _Shapes:
        key = (lay.tp, lay.cp, lay.mbs, lay.precision, lay.recompute, lay.sequence_parallel, lay.compile)
        cached = self._shapes.get(key)
        if cached is not None:
            return cached
        w, e, acc = self.workload, self.eff, self.acc
        assert w.d_model and w.seq_len and w.n_head
        tp, cp = lay.tp, lay.cp
        tokens = lay.mbs * w.seq_len / cp
        width = w.d_model / tp
        value_bytes = 4.0 if lay.precision in ("fp32", "tf32") else 2.0
        passes = 4.0 if lay.recompute == "full" else 3.0
        attn_passes = 4.0 if lay.recompute in ("full", "selective") else 3.0
        rate = self._gemm_rate(tokens, width, lay.precision)
        # attention never runs in fp8; it runs at a fraction of the 16-bit GEMM rate
        attn_rate = self._gemm_rate(tokens, width, "bf16" if lay.precision == "fp8" else lay.precision)
        gemm_s = passes * self._dense_per_token * tokens / tp / rate
        attn_s = attn_passes * self._attn_per_token * tokens / tp / (attn_rate * e.attention_efficiency)
        sp = lay.sequence_parallel and tp > 1
        elt_width = w.d_model * (10.0 / 34.0 / (tp if sp else 1) + 24.0 / 34.0 / tp)
        elt_s = passes * e.elementwise_bytes * tokens * elt_width * value_bytes / 2.0 / acc.mem_bytes_per_s
        if not self.flash_attention:
            # unfused softmax, mask and dropout over the `a s` scores of each token
            elt_s += attn_passes * e.softmax_bytes * tokens * (w.n_head / tp) * w.seq_len / acc.mem_bytes_per_s
        if lay.compile:
            elt_s /= e.compile_elementwise_speedup
        compute_s = gemm_s + attn_s + elt_s
        tp_s = 0.0
        if tp > 1:
            volume = comm.tensor_parallel_bytes_per_layer(int(tokens), w.d_model, value_bytes)
            tp_s = comm.tensor_parallel_collectives(lay.recompute) * comm.all_reduce_s(volume, tp, self._link(1, tp))
        cp_s = 0.0
        if cp > 1:
            kv_bytes = 2.0 * tokens * w.kv_dim / tp * value_bytes
            ring = (cp - 1) * comm.p2p_s(kv_bytes, self._link(tp, cp)) * attn_passes
            cp_s = comm.exposed_s(ring, attn_s, 1.0)
        # LM head (GEMM at the vocabulary width) and the fp32 loss; never recomputed
        vocab = w.vocab or 0
        head_s = 3.0 * 2.0 * w.d_model * vocab * tokens / tp / self._gemm_rate(tokens, vocab / tp, lay.precision)
        head_s += 3.0 * 4.0 * 4.0 * tokens * vocab / tp / acc.mem_bytes_per_s
        if tp > 1:
            head_s += 2.0 * comm.all_reduce_s(tokens * w.d_model * value_bytes, tp, self._link(1, tp))
        shapes = _Shapes(compute_s + tp_s + cp_s, compute_s, tp_s, cp_s, head_s)
        self._shapes[key] = shapes
        return shapes

    def evaluate(self, layout: Layout) -> LayoutEstimate:
        """Predicted step time, throughput, MFU and peak memory of `layout`; raises `LayoutError` when
        it does not fit the model or the cluster."""
        dp, micro = self.check(layout)
        w, e, acc, lay = self.workload, self.eff, self.acc, layout
        assert w.n_layer and w.d_model and w.seq_len and w.n_head
        shapes = self._layer_shapes(lay)
        layers_per_stage = w.n_layer / lay.pp
        device_layers = stage_layers(w.n_layer, lay.pp, lay.vp)
        value_bytes = 4.0 if lay.precision in ("fp32", "tf32") else 2.0
        tokens = lay.mbs * w.seq_len / lay.cp

        # Pipeline: per micro-batch, each stage's layers, its boundary sends (forward activation and
        # backward gradient per model chunk; scatter/gather splits them by tp), the head on the last.
        p2p_one = 0.0
        if lay.pp > 1:
            msg = tokens * w.d_model * value_bytes / lay.tp
            p2p_one = 2.0 * lay.vp * comm.p2p_s(msg, self._link(lay.tp * lay.cp * dp, lay.pp))
        stage_s = [layers * shapes.layer_s + p2p_one for layers in device_layers]
        stage_s[-1] += shapes.head_s
        body = max(device_layers) * shapes.layer_s + p2p_one
        pipe_s = pipeline_step_s(stage_s, micro, lay.vp)
        ideal_s = micro * (sum(stage_s) / lay.pp)

        # Data parallelism over the device's parameter share.
        local_params = max(device_layers) * self._layer_params / lay.tp + self._embed_params / lay.tp
        grad_bytes = local_params * (4.0 if self.fp32_grads or value_bytes == 4.0 else 2.0)
        weight_bytes = local_params * value_bytes
        dp_link = self._link(lay.tp * lay.cp, dp)
        backward_window = (2.0 / 3.0) * body
        sharding = lay.sharding
        if dp == 1:
            dp_s = 0.0
        elif sharding in ("zero3", "fsdp_full", "fsdp_hybrid"):
            if sharding == "fsdp_hybrid":
                shard = max(min(dp, acc.gpus_per_node // (lay.tp * lay.cp)), 1)
                link = self._link(lay.tp * lay.cp, shard)
                replicas = dp // shard
            else:
                shard, link, replicas = dp, dp_link, 1
            per_micro = 2.0 * comm.all_gather_s(weight_bytes, shard, link) \
                + comm.reduce_scatter_s(grad_bytes, shard, link)
            dp_s = micro * comm.exposed_s(per_micro, body, e.dp_overlap)
            if replicas > 1:
                across = self._link(lay.tp * lay.cp * shard, replicas)
                dp_s += comm.exposed_s(comm.all_reduce_s(grad_bytes / shard, replicas, across), backward_window,
                                       e.dp_overlap)
        elif sharding == "none":
            dp_s = comm.exposed_s(comm.bucketed_all_reduce_s(grad_bytes, dp, dp_link, self.bucket_bytes),
                                  backward_window, e.dp_overlap)
        else:  # zero1/zero2/fsdp_grad_op: reduce-scatter gradients, all-gather updated weights
            reduce = comm.reduce_scatter_s(grad_bytes, dp, dp_link) + comm.all_gather_s(weight_bytes, dp, dp_link)
            dp_s = comm.exposed_s(reduce, backward_window, e.dp_overlap)

        # Optimizer: Adam streams weights, gradients and states once each way.
        state_shard = dp if sharding != "none" else 1
        if lay.cpu_offload:
            optimizer_s = local_params / state_shard / e.host_adam_params_per_s \
                + (grad_bytes + weight_bytes) / state_shard / 25e9
        else:
            optimizer_s = 2.0 * local_params * (value_bytes + 4.0 + 12.0) / state_shard / acc.mem_bytes_per_s

        step_s = pipe_s + dp_s + optimizer_s
        compute_total = micro * (layers_per_stage * shapes.layer_compute_s) + micro * shapes.head_s / lay.pp
        breakdown = {
            "compute_s": compute_total,
            "tp_comm_s": micro * layers_per_stage * shapes.layer_tp_s,
            "cp_comm_s": micro * layers_per_stage * shapes.layer_cp_s,
            "pp_p2p_s": micro * p2p_one,
            "pp_bubble_s": pipe_s - ideal_s + micro * shapes.head_s * (1.0 - 1.0 / lay.pp),
            "dp_comm_s": dp_s,
            "optimizer_s": optimizer_s,
        }
        memory = self.memory_gb(lay, dp, micro)
        peak = memory["peak"]
        tokens_step = self.global_batch * w.seq_len
        model_tflops = self._model_flops_per_step / step_s / self.n_gpus / 1e12
        hw_flops = self._model_flops_per_step
        if lay.recompute != "none":  # the recomputed forward of the layers (the head is not recomputed)
            per_token = self._attn_per_token + (self._dense_per_token if lay.recompute == "full" else 0.0)
            hw_flops += per_token * w.n_layer * tokens_step
        peak_flops = acc.peak("bf16" if lay.precision == "fp8" else lay.precision)
        return LayoutEstimate(
            layout=lay, dp=dp, micro_batches=micro, step_s=step_s,
            tokens_per_s_per_gpu=tokens_step / step_s / self.n_gpus, model_tflops_per_gpu=model_tflops,
            hardware_tflops_per_gpu=hw_flops / step_s / self.n_gpus / 1e12, mfu=model_tflops * 1e12 / peak_flops,
            peak_mem_gb=peak, fits=peak <= acc.mem_gib, breakdown=breakdown, memory_gb=memory)

    # ---------------------------------------------------------------- memory
    def memory_gb(self, lay: Layout, dp: int, micro: int) -> dict[str, float]:
        """GiB on the most loaded device: the first stage (embedding, micro-batches in flight) or the
        last (LM head, logits)."""
        w, e = self.workload, self.eff
        assert w.n_layer and w.d_model and w.seq_len and w.n_head
        device_layers = stage_layers(w.n_layer, lay.pp, lay.vp)
        shard = dp
        if lay.sharding == "fsdp_hybrid":
            shard = max(min(dp, self.acc.gpus_per_node // (lay.tp * lay.cp)), 1)
        value_bytes = 4.0 if lay.precision in ("fp32", "tf32") else 2.0
        seq_local = w.seq_len // lay.cp
        per_layer = activation_bytes_per_layer(seq_local, lay.mbs, w.d_model, w.n_head, tp=lay.tp,
                                               sequence_parallel=lay.sequence_parallel, recompute=lay.recompute,
                                               flash_attention=self.flash_attention, bytes_per_value=value_bytes,
                                               **self._shape_ratios)
        working = 0.0
        if lay.recompute == "full":  # one layer is rematerialised in full during its backward
            working = activation_bytes_per_layer(seq_local, lay.mbs, w.d_model, w.n_head, tp=lay.tp,
                                                 sequence_parallel=lay.sequence_parallel, recompute="selective",
                                                 flash_attention=self.flash_attention, bytes_per_value=value_bytes,
                                                 **self._shape_ratios)
        inflight = inflight_microbatches(lay.pp, lay.vp, micro)
        embed_share = self._embed_params if lay.pp == 1 else self._embed_params / (1 if w.tied_embeddings else 2)
        stages = {}
        for name, n_params, acts in (
            ("first", device_layers[0] * self._layer_params + embed_share,
             device_layers[0] * per_layer * inflight + working),
            ("last", device_layers[-1] * self._layer_params + embed_share,
             device_layers[-1] * per_layer + working + logits_bytes(seq_local, lay.mbs, w.vocab or 0, tp=lay.tp)),
        ):
            states = model_state_bytes(n_params / lay.tp, lay.precision, lay.sharding, shard,
                                       cpu_offload=lay.cpu_offload, fp32_grads=self.fp32_grads)
            if lay.sharding in ("zero3", "fsdp_full", "fsdp_hybrid"):
                states += 2.0 * self._layer_params / lay.tp * value_bytes  # two gathered layers
            stages[name] = (states, acts)
        worst = max(stages, key=lambda k: sum(stages[k]))
        states, acts = stages[worst]
        return {"states": states / GIB, "activations": acts / GIB, "overhead": e.overhead_gib,
                "peak": (states + acts) / GIB + e.overhead_gib}


# -------------------------------------------------------------------- enumeration and ranking
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def enumerate_layouts(model: ClusterModel, *, precisions: Sequence[str] = ("bf16",),
                      shardings: Sequence[str] = ("none", "zero1", "zero3"),
                      recomputes: Sequence[str] = ("none", "selective", "full"),
                      mbs_values: Sequence[int] = (1, 2, 4, 8, 16), vp_values: Sequence[int] = (1, 2, 4, 8),
                      cp_values: Sequence[int] = (1, 2, 4, 8), tp_values: Iterable[int] | None = None,
                      pp_values: Iterable[int] | None = None) -> Iterator[Layout]:
    """Every valid layout of the given knob values (tp within a node by default)."""
    n, w = model.n_gpus, model.workload
    assert w.n_layer
    tps = list(tp_values) if tp_values is not None else [t for t in _divisors(n) if t <= model.acc.gpus_per_node]
    pps = list(pp_values) if pp_values is not None else [p for p in _divisors(n) if splits(w.n_layer, p)]
    for tp in tps:
        for pp in pps:
            for cp in cp_values:
                if n % (tp * pp * cp):
                    continue
                for vp in (vp_values if pp > 1 else (1,)):
                    for mbs in mbs_values:
                        for precision in precisions:
                            for sharding in shardings:
                                if pp > 1 and sharding not in _PIPELINE_SHARDINGS:
                                    continue
                                for recompute in recomputes:
                                    layout = Layout(tp=tp, pp=pp, cp=cp, vp=vp, mbs=mbs, precision=precision,
                                                    sharding=sharding, recompute=recompute)
                                    try:
                                        model.check(layout)
                                    except LayoutError:
                                        continue
                                    yield layout


def rank_layouts(model: ClusterModel, layouts: Iterable[Layout]) -> list[LayoutEstimate]:
    """Estimates sorted best first: layouts that fit memory before those that do not, then by
    predicted tokens/s per GPU."""
    estimates = [model.evaluate(layout) for layout in layouts]
    estimates.sort(key=lambda est: (not est.fits, -est.tokens_per_s_per_gpu))
    return estimates


# -------------------------------------------------------------------- calibration
def calibrate_cluster(model: ClusterModel, measured: Sequence[tuple[Layout, float]]) -> ClusterModel:
    """Refit the GEMM efficiency (and, from three layouts on, the link bandwidths) to measured tokens/s
    per GPU of a few layouts: a least-squares fit in log space with a weak prior at the defaults.

    Example:
        >>> from autoscout_plugin.costmodel.catalogue import gpu
        >>> from autoscout_plugin.costmodel.presets import preset
        >>> m = ClusterModel(preset("gpt3-5b"), gpu("h100-sxm"), 16, global_batch=256)
        >>> lay = Layout(tp=2, mbs=2, sharding="zero1")
        >>> truth = 0.8 * m.evaluate(lay).tokens_per_s_per_gpu
        >>> fitted = calibrate_cluster(m, [(lay, truth)])
        >>> abs(fitted.evaluate(lay).tokens_per_s_per_gpu / truth - 1) < 0.03
        True
    """
    import numpy as np
    from scipy.optimize import least_squares  # lazy: scipy is slow to import

    if not measured:
        return model
    for layout, value in measured:
        if not value or value <= 0 or not math.isfinite(value):
            raise ValueError(f"a measured throughput must be a positive number, got {value!r} for {layout}")
    names = ("gemm_scale", "comm_scale") if len(measured) >= 3 else ("gemm_scale",)
    prior = np.log([getattr(model.eff, name) for name in names])
    log_y = np.log([value for _, value in measured])

    def residuals(u: np.ndarray) -> np.ndarray:
        eff = replace(model.eff, **{name: float(math.exp(x)) for name, x in zip(names, u)})
        candidate = model.with_efficiency(eff)
        pred = np.log([candidate.evaluate(layout).tokens_per_s_per_gpu for layout, _ in measured])
        return np.concatenate([(log_y - pred) / 0.05, (u - prior) / 1.0])

    fit = least_squares(residuals, prior, method="trf", max_nfev=100)
    return model.with_efficiency(replace(model.eff, **{name: float(math.exp(x)) for name, x in zip(names, fit.x)}))
