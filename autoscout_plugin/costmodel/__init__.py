"""F0: the analytical cost model (pure functions; no framework imports)."""

from __future__ import annotations

from .calibrate import Calibration, Measurement, calibrate, fit_efficiency
from .compute import fwd_flops_per_sample, param_count, train_flops_per_sample
from .hardware import Hardware, detect_cpu
from .model import CostModel, Efficiency, Estimate
from .workload import Layer, Workload

__all__ = [
    "Calibration", "CostModel", "Efficiency", "Estimate", "Hardware", "Layer", "Measurement", "Workload", "detect_cpu",
    "calibrate", "fit_efficiency", "fwd_flops_per_sample", "param_count", "train_flops_per_sample",
]
