"""F0: the analytical cost model (pure functions; no framework imports).

- `model.CostModel`: data-parallel training on a CPU node (the live tuner's F0), with `calibrate`;
- `cluster.ClusterModel`: tensor/pipeline/context/data-parallel layouts on GPU clusters, with
  `enumerate_layouts`, `rank_layouts`, `calibrate_cluster` and `plan` (the `autoscout plan` command);
- `inference.estimate_inference`: prefill, decode, KV cache;
- the pieces: `compute` (FLOPs), `memory`, `comm`, `pipeline`, `catalogue` (GPUs, links), `presets`,
  `cpu_bench` (this CPU's measured speeds).
"""

from __future__ import annotations

from .calibrate import Calibration, Measurement, calibrate, fit_efficiency
from .catalogue import GPUS, Accelerator, gpu
from .cluster import (
    ClusterEfficiency,
    ClusterModel,
    Layout,
    LayoutError,
    LayoutEstimate,
    calibrate_cluster,
    enumerate_layouts,
    rank_layouts,
)
from .compute import fwd_flops_per_sample, param_count, train_flops_per_sample
from .cpu_bench import CpuSpeeds, cpu_fingerprint, cpu_speeds, efficiency_from_speeds, measure_cpu, measured_efficiency
from .hardware import Hardware, detect_cpu
from .inference import InferenceEstimate, estimate_inference, kv_cache_bytes
from .model import CostModel, Efficiency, Estimate
from .presets import PRESETS, preset, workload_from_hf_config
from .workload import Layer, Workload

__all__ = [
    "Calibration", "CostModel", "Efficiency", "Estimate", "Hardware", "Layer", "Measurement", "Workload", "detect_cpu",
    "calibrate", "fit_efficiency", "fwd_flops_per_sample", "param_count", "train_flops_per_sample",
    "CpuSpeeds", "cpu_fingerprint", "cpu_speeds", "efficiency_from_speeds", "measure_cpu", "measured_efficiency",
    "GPUS", "Accelerator", "gpu", "ClusterEfficiency", "ClusterModel", "Layout", "LayoutError", "LayoutEstimate",
    "calibrate_cluster", "enumerate_layouts", "rank_layouts", "InferenceEstimate", "estimate_inference",
    "kv_cache_bytes", "PRESETS", "preset", "workload_from_hf_config",
]
