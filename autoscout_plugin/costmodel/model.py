"""The analytical step-time and memory model (fidelity F0) for data-parallel training on CPU nodes.

Time per optimizer step, per process, is a sum of terms (the "roofline" split of Williams et al.
2009, applied per phase as in Narayanan et al. 2021):

    step_s = compute_s + overhead_s + optimizer_s + comm_s

- compute_s: training FLOPs / (per-core FLOP/s x thread scaling x GEMM efficiency), with the
  matmul share sped up by the precision and the elementwise share by `torch.compile` fusion;
  activation checkpointing recomputes the forward of the checkpointed blocks only (the transformer
  layers, not an LM head: on a small-d, large-vocab decoder the head is most of the FLOPs);
- overhead_s: per-operator dispatch cost, paid per micro-batch (fewer ops after compile);
- optimizer_s: AdamW streams 28 bytes per local parameter (read p, g, m, v; write p, m, v);
- comm_s: alpha-beta collectives (Hockney 1994; ring all-reduce moves 2(p-1)/p of the bytes,
  Patarasuk & Yuan 2009); DDP all-reduces gradients once per step (`no_sync` while accumulating),
  FSDP all-gathers parameters twice and reduce-scatters gradients per micro-batch.

Unknown factors are `Efficiency` fields with priors from measurements on a 2-core AVX-512 CPU;
`calibrate.fit_efficiency` refits them from a few real trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..space.constraints import data_parallel_degree
from .catalogue import match_device
from .compute import fwd_flops_per_sample, param_count, train_flops_per_sample
from .hardware import Hardware
from .workload import Workload

MB = 1e6


def _local(config: dict[str, Any]) -> int:
    """Processes on one node (`num_processes`; `num_nodes` counts the nodes)."""
    return max(int(config.get("num_processes", 1)), 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Efficiency:
    """Machine- and workload-dependent factors; every one is refit by calibration."""

    flops_per_core: float = 40e9
    """Sustained fp32 GEMM FLOP/s of one core."""
    thread_exponent: float = 0.85
    """Speed-up from t threads is t**thread_exponent (memory-bound phases scale sub-linearly)."""
    memory_exponent: float = 0.5
    """Speed-up of memory-bound work from c active cores of a node is c**memory_exponent."""
    matmul_fraction: float = 0.7
    """Share of eager fp32 compute time spent in GEMMs/convolutions."""
    bf16_matmul_speedup: float = 1.8
    """GEMM speed-up of bf16 over fp32 with native bf16 (avx512_bf16); emulated bf16 is slower."""
    bf16_emulated_speedup: float = 0.1
    """GEMM speed-up of bf16 on CPUs without native bf16 (avx512_bf16/AMX): PyTorch then falls back to
    a reference kernel that is both slow and serial (measured ~0.05x of one fp32 thread end to end on a
    2-core EPYC without avx512_bf16, with no gain from a second thread); see `_gemm_threads`."""
    bf16_elementwise_factor: float = 1.15
    """Elementwise time multiplier under autocast (dtype casts)."""
    compile_elementwise_speedup: float = 1.25
    """Elementwise speed-up from inductor fusion (compile alone measured 0.9-1.25x end to end here)."""
    op_overhead_s: float = 15e-6
    """Eager dispatch cost per operator call."""
    ops_per_layer: float = 40.0
    """Operator calls per layer and forward pass."""
    gemm_half_rows: float = 24.0
    """GEMM rows at which efficiency is half its peak (small micro-batches run slower). An AVX-512 SGEMM
    kernel works on register tiles of 8-32 rows, so a few tiles of rows already run near peak; fits of
    GPT-2, BERT and CNN training on a 2-core EPYC put the half point at 21-29 rows."""
    mem_bytes_per_s: float = 8e9
    """Memory bandwidth seen by the optimizer step."""
    link_bytes_per_s: float = 0.3e9
    """Collective bandwidth between processes: gloo on CPU shares the cores with compute, so it is far
    below memory bandwidth (two-process DDP measured ~0.65x of one process here)."""
    inter_link_bytes_per_s: float = 1.25e9
    """Collective bandwidth between nodes (`num_nodes` > 1): 10 Gb Ethernet for CPU nodes, the catalogue's
    inter-node fabric for a known GPU; a multi-node job's own trials refit it (`calibrate`)."""
    inter_link_latency_s: float = 50e-6
    """Extra cost per collective call when it crosses nodes (a network round trip)."""
    link_latency_s: float = 1e-3
    """Cost per collective call. On a CPU node whose cores all run compute threads it is far above gloo's
    idle ~0.1 ms: the communication thread waits for a core (a scheduler slice) and every collective
    waits for the slowest rank; FSDP adds its per-unit hook work (two-process FSDP here paid ~25 ms per
    micro-batch over DDP on a 1 MB CNN and a 6 MB encoder alike, about 1-3 ms per collective)."""
    process_overhead_mb: float = 450.0
    """Resident memory of one process before the model (interpreter, torch, frameworks)."""
    compile_overhead_mb: float = 100.0
    """Extra resident memory of a process that compiles (inductor, generated code): 50-110 MB measured
    on CPU for a GPT-2, a BERT encoder and a CNN alike."""
    activation_scale: float = 1.0
    """Multiplier on the activation-memory formula."""


def default_efficiency(hardware: Hardware) -> Efficiency:
    """Prior factors for a machine kind: a CPU core, or one GPU (calibration refines both).

    For a GPU the catalogue holds (matched by the driver's device name, `catalogue.match_device`) the
    priors come from its datasheet: fp32 GEMMs at the fp32 peak (PyTorch runs fp32 matmuls without
    TF32 unless told to) times the catalogue's GEMM efficiency, bf16/fp16 GEMMs faster by the ratio of
    the peaks (14.8x on an H100/H200, 16x on an A100), memory-bound work at 90% of the datasheet
    bandwidth (a device-to-device copy moved 4.3 of the H200's 4.8 TB/s) and the node's NVLink. Any
    other GPU gets generic figures (100 TFLOP/s, 1.8x, 1.5 TB/s)."""
    if hardware.kind == "gpu":
        acc = match_device(hardware.name, hardware.mem_gb)
        flops, bf16, mem_bw, link = 100e12, 1.8, 1.5e12, 100e9
        if acc is not None:
            flops = acc.peak("fp32") * acc.gemm_efficiency
            bf16 = acc.peak(acc.half_precision) / acc.peak("fp32")
            mem_bw, link, inter = 0.9 * acc.mem_bytes_per_s, acc.intra.bytes_per_s, acc.inter.bytes_per_s
        else:
            inter = 25e9  # 200 Gb/s InfiniBand-class
        return Efficiency(flops_per_core=flops, bf16_matmul_speedup=bf16, thread_exponent=1.0, matmul_fraction=0.8,
                          op_overhead_s=8e-6, gemm_half_rows=1024.0, mem_bytes_per_s=mem_bw, link_bytes_per_s=link,
                          inter_link_bytes_per_s=inter,
                          link_latency_s=20e-6, process_overhead_mb=1500.0, compile_overhead_mb=500.0)
    return Efficiency()


@dataclass(frozen=True, slots=True)
class Estimate:
    """F0's answer for one config."""

    samples_per_s: float
    step_s: float
    peak_mem_mb: float
    """Peak resident memory of the job: summed over processes on CPU, per device on GPU."""
    breakdown: dict[str, float] = field(default_factory=dict)
    """Seconds per optimizer step by term."""


@dataclass(frozen=True, slots=True)
class CostModel:
    """F0 for a workload on a machine.

    Example:
        >>> from autoscout_plugin.costmodel import CostModel, Hardware, Workload
        >>> w = Workload(family="transformer", n_layer=2, d_model=128, n_head=2, vocab=8192, seq_len=64,
        ...              global_batch=32)
        >>> m = CostModel(w, Hardware(kind="cpu", cores=2, bf16=True))
        >>> fast = m.estimate({"precision": "bf16-mixed", "micro_batch_size": 32, "num_threads": 2})
        >>> slow = m.estimate({"precision": "32-true", "micro_batch_size": 32, "num_threads": 1})
        >>> fast.samples_per_s > slow.samples_per_s
        True
    """

    workload: Workload
    hardware: Hardware
    eff: Efficiency | None = None
    """The efficiency factors; None takes `default_efficiency(hardware)`."""

    def __post_init__(self) -> None:
        if self.eff is None:
            object.__setattr__(self, "eff", default_efficiency(self.hardware))

    def with_efficiency(self, eff: Efficiency) -> CostModel:
        return replace(self, eff=eff)

    @property
    def describes_workload(self) -> bool:
        """Whether the model knows the workload's architecture: a transformer with its shape, or a CNN/MLP
        with its layer list. Any other family (recurrent layers, custom operators) it describes only by
        generic facts (parameter count, measured FLOPs), so its knob effects there are guesses: the search
        then starts from a low trust in F0 and lets F0 earn its weight on the study's own trials."""
        w = self.workload
        return w.is_transformer or (w.family in ("cnn", "mlp") and bool(w.layers))

    # ------------------------------------------------------------------ time
    def estimate(self, config: dict[str, Any]) -> Estimate:
        step_s, breakdown = self.step_time(config)
        gb = self._global_batch(config)
        return Estimate(samples_per_s=gb / step_s if step_s > 0 else 0.0, step_s=step_s,
                        peak_mem_mb=self.peak_mem_mb(config), breakdown=breakdown)

    def samples_per_s(self, config: dict[str, Any]) -> float:
        """Throughput alone (no memory estimate): what calibration evaluates thousands of times."""
        step_s, _ = self.step_time(config)
        return self._global_batch(config) / step_s if step_s > 0 else 0.0

    def _global_batch(self, config: dict[str, Any]) -> int:
        if self.workload.global_batch:
            return self.workload.global_batch
        return int(config.get("micro_batch_size", 1)) * max(data_parallel_degree(config), 1)

    def step_time(self, config: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """Seconds per optimizer step and their breakdown by term."""
        w, e = self.workload, self.eff
        gb = self._global_batch(config)
        dp = max(data_parallel_degree(config), 1)
        mbs = int(config.get("micro_batch_size", max(gb // dp, 1)))
        accum = max(gb / (mbs * dp), 1.0)
        ckpt = bool(config.get("activation_checkpointing", False))
        compiled = config.get("compile", "off") not in ("off", False, None)
        samples_local = gb / dp

        flops_local = train_flops_per_sample(w, ckpt) * samples_local
        mm_speed, elt_factor = self._precision_factors(str(config.get("precision", "32-true")))
        if compiled:
            elt_factor /= e.compile_elementwise_speedup
        rows = mbs * (w.seq_len or 64)
        gemm_eff = rows / (rows + e.gemm_half_rows)
        f_mm = e.matmul_fraction
        gemm_s = f_mm * flops_local / (e.flops_per_core * self._gemm_threads(config) * gemm_eff * mm_speed)
        # The memory-bound share: on a CPU node every process streams through the same memory, so
        # it speeds up only with the node's active cores, sub-linearly, whatever the process split.
        sharing = self._node_processes(config)
        memory_s = (1 - f_mm) * elt_factor * flops_local * sharing / (e.flops_per_core * self._memory_speed(config))
        compute_s = gemm_s + memory_s

        n_layers = w.n_layer or max(len(w.layers), 4)
        passes = 3.0 + (1.0 if ckpt else 0.0)
        overhead_s = accum * n_layers * e.ops_per_layer * passes * e.op_overhead_s / (3.0 if compiled else 1.0)

        n_params = param_count(w)
        strategy = str(config.get("strategy", "single"))
        sharded = strategy in ("fsdp", "deepspeed") and dp > 1
        optimizer_s = 28.0 * n_params / (dp if sharded else 1) * self._node_processes(config) / e.mem_bytes_per_s
        comm_s = self._comm_s(config, strategy, dp, accum, n_params, n_layers)

        step_s = compute_s + overhead_s + optimizer_s + comm_s
        breakdown = {"compute_s": compute_s, "overhead_s": overhead_s, "optimizer_s": optimizer_s, "comm_s": comm_s}
        return step_s, breakdown

    def _precision_factors(self, precision: str) -> tuple[float, float]:
        """(GEMM speed-up, elementwise time factor) of a precision on this hardware."""
        e = self.eff
        if precision.startswith("bf16"):
            mm = e.bf16_matmul_speedup if self.hardware.bf16 else e.bf16_emulated_speedup
            return mm, (e.bf16_elementwise_factor if precision == "bf16-mixed" else 0.8)
        if precision.startswith("16"):
            # fp16 GEMMs have no fast path on CPUs; on GPUs they run like bf16.
            return (e.bf16_matmul_speedup if self.hardware.kind == "gpu" else 0.3), e.bf16_elementwise_factor
        return 1.0, 1.0

    def _node_processes(self, config: dict[str, Any]) -> int:
        """Processes that share one memory system: all of them on a CPU node, one per GPU."""
        return _local(config) if self.hardware.kind == "cpu" else 1

    def _memory_speed(self, config: dict[str, Any]) -> float:
        if self.hardware.kind == "gpu":
            return 1.0
        cores = self.hardware.cores
        world = _local(config)
        threads = int(config.get("num_threads", max(cores // world, 1)))
        return float(min(threads * world, cores)) ** self.eff.memory_exponent

    def _gemm_threads(self, config: dict[str, Any]) -> float:
        """Thread speed-up of the GEMMs: the emulated-bf16 fallback kernel runs on one thread."""
        if (self.hardware.kind == "cpu" and not self.hardware.bf16
                and str(config.get("precision", "32-true")).startswith("bf16")):
            return 1.0 / self._oversubscription(config) ** 2
        return self._thread_speed(config)

    def _oversubscription(self, config: dict[str, Any]) -> float:
        cores = self.hardware.cores
        world = _local(config)
        threads = int(config.get("num_threads", max(cores // world, 1)))
        return max(threads * world / cores, 1.0)

    def _thread_speed(self, config: dict[str, Any]) -> float:
        if self.hardware.kind == "gpu":
            return 1.0  # one device per process; host threads do not set the compute rate
        cores = self.hardware.cores
        world = _local(config)
        threads = int(config.get("num_threads", max(cores // world, 1)))
        return threads ** self.eff.thread_exponent / self._oversubscription(config) ** 2

    def _comm_s(self, config: dict[str, Any], strategy: str, dp: int, accum: float, n_params: int,
                n_layers: int) -> float:
        if dp <= 1:
            return 0.0
        e = self.eff
        if int(config.get("num_nodes", 1)) > 1:
            # A ring across nodes: every chunk costs the ranks' own work on it (`link_bytes_per_s`) and the
            # wire between nodes, one after the other; each call a network round trip more.
            e = replace(e, link_bytes_per_s=1.0 / (1.0 / e.link_bytes_per_s + 1.0 / e.inter_link_bytes_per_s),
                        link_latency_s=e.link_latency_s + e.inter_link_latency_s)
        ring = 2.0 * (dp - 1) / dp
        grad_bytes = 4.0 * n_params
        if strategy == "fsdp":
            param_bytes = (2.0 if str(config.get("precision", "")).startswith("bf16") else 4.0) * n_params
            gathers = 2 if config.get("fsdp_reshard_after_forward", True) else 1
            per_micro = (gathers * param_bytes + grad_bytes) * (dp - 1) / dp / e.link_bytes_per_s
            # Each layer is a unit, the root (embeddings, head) one more; each unit is gathered `gathers`
            # times and its gradients reduce-scattered once per micro-batch.
            collectives = (gathers + 1) * (n_layers + 1)
            return accum * (per_micro + collectives * e.link_latency_s)
        bucket_mb = float(config.get("ddp_bucket_cap_mb", 25.0))
        n_buckets = max(math.ceil(grad_bytes / (bucket_mb * MB)), 1)
        return ring * grad_bytes / e.link_bytes_per_s + n_buckets * e.link_latency_s

    # ---------------------------------------------------------------- memory
    def peak_mem_mb(self, config: dict[str, Any]) -> float:
        """Peak memory: per process `overhead + states + activations`; CPU sums the processes.

        States follow Rajbhandari et al. 2020 (ZeRO), mixed-precision Adam: fp32 params, grads and two
        moments = 16 bytes/param, divided by dp under sharding; DDP adds a 4-byte gradient bucket copy.
        Activations per transformer layer follow Korthikanti et al. 2022, eq. 1: `s b h (34 + 5 a s / h)`
        bytes with 16-bit activations (doubled for fp32); full recomputation keeps `2 s b h` per layer.
        """
        w, e = self.workload, self.eff
        dp = max(data_parallel_degree(config), 1)
        gb = w.global_batch or 1
        mbs = int(config.get("micro_batch_size", max(gb // dp, 1)))
        strategy = str(config.get("strategy", "single"))
        n_params = param_count(w)
        sharded = strategy in ("fsdp", "deepspeed") and dp > 1
        states_b = 16.0 * n_params / (dp if sharded else 1) + (4.0 * n_params if strategy == "ddp" else 0.0)
        if str(config.get("precision", "")).endswith("mixed"):
            states_b += 2.0 * n_params  # autocast's low-precision weight copies
        act_b = e.activation_scale * self._activation_bytes(config, mbs)
        per_process_mb = e.process_overhead_mb + (states_b + act_b) / MB
        if config.get("compile", "off") not in ("off", False, None):
            per_process_mb += e.compile_overhead_mb
        return per_process_mb * (_local(config) if self.hardware.kind == "cpu" else 1)

    def _activation_bytes(self, config: dict[str, Any], mbs: int) -> float:
        w = self.workload
        ckpt = bool(config.get("activation_checkpointing", False))
        width = 2.0 if str(config.get("precision", "32-true")) != "32-true" else 4.0
        if w.is_transformer:
            assert w.n_layer and w.d_model and w.seq_len
            s, h, a = w.seq_len, w.d_model, w.n_head or 1
            per_layer = s * mbs * h * (34.0 + 5.0 * a * s / h) * width / 2.0
            stored = w.n_layer * (2.0 * s * mbs * h * width / 2.0) + per_layer if ckpt else w.n_layer * per_layer
            logits = 3.0 * 4.0 * s * mbs * (w.vocab or 0) if w.arch == "decoder" else 0.0
            return stored + logits
        if w.layers:
            per_sample = sum(3.0 * layer.out_features * layer.out_hw[0] * layer.out_hw[1] for layer in w.layers)
            return per_sample * mbs * width * (0.4 if ckpt else 1.0)
        # Unknown architecture: activations scale with forward work; ~1 byte per 4 FLOPs per sample.
        return fwd_flops_per_sample(w) / 4.0 * mbs * width / 4.0 * (0.4 if ckpt else 1.0)

